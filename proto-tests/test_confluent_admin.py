"""confluent-kafka AdminClient and metadata against Gregor.

Covers: create_topics / list_topics / delete_topics, Kafka's error codes for bad requests
(TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS,
INVALID_REPLICATION_FACTOR, INVALID_CONFIG, UNKNOWN_TOPIC_OR_PARTITION), validate_only,
num.partitions for default-sized and auto-created topics, and cluster/topic ids surviving a
restart.
"""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import NewTopic

from clients import (TIMEOUT, admin, consumer, create_topic, produce_all, wait_for_topic,
                     watermarks)


def create(broker, topics, **kw):
    """create_topics; returns {name: None or KafkaError code}."""
    a = admin(broker)
    futs = a.create_topics(topics, request_timeout=TIMEOUT, **kw)
    out = {}
    for name, f in futs.items():
        try:
            f.result(TIMEOUT)
            out[name] = None
        except KafkaException as e:
            out[name] = e.args[0].code()
    return out


def topic_names(broker):
    c = consumer(broker)  # a consumer's Metadata never auto-creates
    try:
        return set(c.list_topics(timeout=TIMEOUT).topics)
    finally:
        c.close()


def test_create_list_delete(broker, topic_name):
    assert create(broker, [NewTopic(topic_name, 3, 1, config={"retention.ms": "60000"})]) == {
        topic_name: None}
    md = wait_for_topic(broker, topic_name, 3)
    assert md.controller_id == 1
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: ("127.0.0.1", broker.port)}
    t = md.topics[topic_name]
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert (p.leader, p.replicas, p.isrs, p.error) == (1, [1], [1], None)
    produce_all(broker, topic_name, [b"x"] * 5, partition=1)
    assert topic_name in topic_names(broker)

    a = admin(broker)
    a.delete_topics([topic_name], request_timeout=TIMEOUT)[topic_name].result(TIMEOUT)
    # Metadata and files follow the deletion shortly (in Kafka, asynchronously).
    deadline = time.monotonic() + 10
    while (topic_name in topic_names(broker) or list(broker.data_dir.rglob(f"{topic_name}-1"))) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic_name not in topic_names(broker)
    assert not list(broker.data_dir.rglob(f"{topic_name}-1")), "partition dir still there"

    # The name can be reused, and the new topic starts empty.
    assert create(broker, [NewTopic(topic_name, 2, 1)]) == {topic_name: None}
    wait_for_topic(broker, topic_name, 2)
    assert watermarks(broker, topic_name, 1) == (0, 0)


def test_create_already_exists(broker, topic_name):
    create_topic(broker, topic_name)
    assert create(broker, [NewTopic(topic_name, 1, 1)]) == {
        topic_name: KafkaError.TOPIC_ALREADY_EXISTS}
    assert create(broker, [NewTopic(topic_name, 1, 1)], validate_only=True) == {
        topic_name: KafkaError.TOPIC_ALREADY_EXISTS}


@pytest.mark.parametrize("name, partitions, rf, config, code", [
    ("bad name", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
    ("bad/name", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
    ("..", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
    (".", 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
    ("n" * 250, 1, 1, {}, KafkaError.TOPIC_EXCEPTION),
    ("zero-partitions", 0, 1, {}, KafkaError.INVALID_PARTITIONS),
    ("rf-two", 1, 2, {}, KafkaError.INVALID_REPLICATION_FACTOR),
    ("rf-zero", 1, 0, {}, KafkaError.INVALID_REPLICATION_FACTOR),
    ("bad-int", 1, 1, {"max.message.bytes": "abc"}, KafkaError.INVALID_CONFIG),
    ("bad-enum", 1, 1, {"message.timestamp.type": "Sometimes"}, KafkaError.INVALID_CONFIG),
    ("bad-policy", 1, 1, {"cleanup.policy": "bogus"}, KafkaError.INVALID_CONFIG),
    ("unknown-config", 1, 1, {"no.such.config": "1"}, KafkaError.INVALID_CONFIG),
], ids=["space", "slash", "dotdot", "dot", "250-chars", "partitions-0", "rf-2", "rf-0",
        "max.message.bytes=abc", "timestamp.type", "cleanup.policy", "unknown-config"])
@pytest.mark.parametrize("validate_only", [False, True], ids=["create", "validate_only"])
def test_create_errors(broker, name, partitions, rf, config, code, validate_only):
    result = create(broker, [NewTopic(name, partitions, rf, config=config)],
                    validate_only=validate_only)
    assert result == {name: code}
    assert name not in topic_names(broker)


def test_create_mixed_batch(broker, topic_name):
    ok, bad = topic_name, topic_name + "!"
    assert create(broker, [NewTopic(ok, 1, 1), NewTopic(bad, 1, 1)]) == {
        ok: None, bad: KafkaError.TOPIC_EXCEPTION}
    assert ok in topic_names(broker) and bad not in topic_names(broker)


def test_longest_legal_name(broker):
    name = "n" * 249
    assert create(broker, [NewTopic(name, 1, 1)]) == {name: None}
    wait_for_topic(broker, name, 1)
    assert produce_all(broker, name, [b"x"]) == [(0, b"x")]


def test_validate_only_creates_nothing(broker, topic_name):
    assert create(broker, [NewTopic(topic_name, 2, 1)], validate_only=True) == {topic_name: None}
    time.sleep(0.5)
    assert topic_name not in topic_names(broker)
    assert not list(broker.data_dir.rglob(f"{topic_name}-0"))


def test_delete_unknown_topic(broker, topic_name):
    a = admin(broker)
    with pytest.raises(KafkaException) as e:
        a.delete_topics([topic_name], request_timeout=TIMEOUT)[topic_name].result(TIMEOUT)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_num_partitions_default(make_broker, topic_name):
    b = make_broker(kafka_config={"num.partitions": 3})
    # NewTopic with num_partitions=-1 (KIP-464) takes the broker's num.partitions.
    assert create(b, [NewTopic(topic_name, -1, -1)]) == {topic_name: None}
    wait_for_topic(b, topic_name, 3)
    # A producer's Metadata request auto-creates with num.partitions.
    produce_all(b, "auto-" + topic_name, [b"x"])
    wait_for_topic(b, "auto-" + topic_name, 3)


def test_num_partitions_from_env(make_broker, topic_name):
    b = make_broker(env={"GREGOR_KAFKA_NUM_PARTITIONS": "2"})
    produce_all(b, topic_name, [b"x"])
    wait_for_topic(b, topic_name, 2)


def test_consumer_metadata_does_not_auto_create(broker, topic_name):
    c = consumer(broker)
    try:
        md = c.list_topics(topic_name, timeout=TIMEOUT)
        assert md.topics[topic_name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()
    time.sleep(0.5)
    assert topic_name not in topic_names(broker)


def test_ids_survive_restart(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)

    def ids():
        a = admin(broker)
        cluster = a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
        desc = a.describe_topics(TopicCollection([topic_name]),
                                 request_timeout=TIMEOUT)[topic_name].result(TIMEOUT)
        return cluster.cluster_id, cluster.controller.id, str(desc.topic_id), len(desc.partitions)

    before = ids()
    assert before[0] and before[1] == 1 and before[3] == 2
    assert before[2] not in ("", "AAAAAAAAAAAAAAAAAAAAAA")  # not the zero UUID
    broker.restart()
    assert ids() == before
    broker.restart(kill=True)
    assert ids() == before
