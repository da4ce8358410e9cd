"""Dynamic broker configs (KIP-226) with the unchanged Kafka CLI `kafka-configs` and
confluent-kafka's AdminClient:

- `--entity-type brokers --entity-default` and `--entity-name 1` alter the cluster default and
  one broker's configs; `--describe` (and `--all`) shows them with Kafka's sources and
  synonyms (DYNAMIC_BROKER_CONFIG > DYNAMIC_DEFAULT_BROKER_CONFIG > STATIC_BROKER_CONFIG >
  DEFAULT_CONFIG), read-only flags as Kafka sets them, and Kafka's errors for keys that cannot
  change at run time and for bad values;
- the change applies without a restart to topics without overrides: a lower log.segment.bytes
  rolls smaller segments, log.retention.bytes deletes old ones, message.max.bytes refuses a
  large batch with MESSAGE_TOO_LARGE; topic describe reports the dynamic sources;
- the configs survive a restart (they are metadata records);
- on a 3-node cluster a cluster default reaches every broker, a per-broker value only its own.

PROTO_TESTS_TARGET=kafka runs the single-broker test against Apache Kafka 4.3.1 (the cluster
test is Gregor's: proto-tests/cluster.py starts Gregor nodes).
"""
import re
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from clients import TIMEOUT, admin, create_topic, producer
from cluster import make_cluster, wait_until  # noqa: F401  (fixture)
from javatools import kafka_tool
from targets import TARGET, make_target, partition_dir  # noqa: F401  (fixture)

DYNAMIC_BROKER, DYNAMIC_DEFAULT, STATIC, DEFAULT, TOPIC = 2, 3, 4, 5, 1
INVALID_REQUEST, INVALID_CONFIG = 42, 40


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


def parse(out):
    """kafka-configs --describe output -> {name: (value, full synonyms text)}."""
    got = {}
    for line in lines(out)[1:]:
        m = re.fullmatch(r"  ([^=]+)=(.*) sensitive=(true|false) synonyms=\{(.*)\}", line)
        assert m, f"unexpected kafka-configs line {line!r}"
        got[m.group(1)] = (m.group(2), m.group(4))
    return got


def configs(broker, resource):
    """{name: ConfigEntry} of a resource, through confluent-kafka's AdminClient."""
    a = admin(broker)
    return a.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)


def incremental(broker, name, ops):
    """IncrementalAlterConfigs on BROKER `name`; returns None or the KafkaError."""
    res = ConfigResource(ConfigResource.Type.BROKER, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, op, v in ops])
    a = admin(broker)
    try:
        a.incremental_alter_configs([res], request_timeout=TIMEOUT)[res].result(TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0]


def produce_error(broker, topic, size):
    """Produces one record of `size` bytes; returns the delivery error code or None."""
    p = producer(broker, **{"linger.ms": 0})
    result = []
    p.produce(topic, b"x" * size, partition=0,
              on_delivery=lambda err, msg: result.append(err))
    p.flush(TIMEOUT)
    assert result, "no delivery report"
    return result[0].code() if result[0] else None


def produce_bytes(broker, topic, count, size):
    p = producer(broker, **{"linger.ms": 0, "batch.size": size + 200})
    errors = []
    for _ in range(count):
        p.produce(topic, b"y" * size, partition=0,
                  on_delivery=lambda err, msg: err and errors.append(err))
    p.flush(TIMEOUT)
    assert not errors, errors


def low_watermark(broker, topic):
    from clients import consumer
    from confluent_kafka import TopicPartition
    c = consumer(broker)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)[0]
    finally:
        c.close()


def broker_value(broker, name):
    return configs(broker, ConfigResource(ConfigResource.Type.BROKER, "1"))[name].value


def topic_value(broker, topic, name):
    return configs(broker, ConfigResource(ConfigResource.Type.TOPIC, topic))[name].value


def segments(broker, topic):
    return sorted(p.name for p in partition_dir(broker, topic, 0).glob("*.log"))


def test_kafka_configs_brokers_describe_alter_apply_and_persist(make_target):
    broker = make_target({"log.retention.hours": 100, "log.retention.check.interval.ms": 300})
    # A topic without overrides, created before any dynamic change.
    create_topic(broker, "dyn")

    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-default",
                     "--alter", "--add-config",
                     "log.retention.ms=3600000,log.segment.bytes=3000000,message.max.bytes=5000")
    assert "Completed updating default config for brokers in the cluster." in res.stdout, res
    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-name", 1,
                     "--alter", "--add-config", "log.segment.bytes=2000000,log.cleaner.threads=2")
    assert "Completed updating config for broker 1." in res.stdout, res

    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-default",
                     "--describe")
    assert lines(res.stdout)[0] == "Default configs for brokers in the cluster are:", res.stdout
    got = parse(res.stdout)
    for name, value in {"log.retention.ms": "3600000", "log.segment.bytes": "3000000",
                        "message.max.bytes": "5000"}.items():
        assert got[name] == (value, f"DYNAMIC_DEFAULT_BROKER_CONFIG:{name}={value}"), got

    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-name", 1,
                     "--describe", "--all")
    assert lines(res.stdout)[0] == "All configs for broker 1 are:", res.stdout
    got = parse(res.stdout)
    # As Kafka 4.3.1 prints them for the same settings.
    for name, want in {
            "log.segment.bytes": ("2000000", "DYNAMIC_BROKER_CONFIG:log.segment.bytes=2000000, "
                                  "DYNAMIC_DEFAULT_BROKER_CONFIG:log.segment.bytes=3000000, "
                                  "DEFAULT_CONFIG:log.segment.bytes=1073741824"),
            "log.retention.ms": ("3600000", "DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000, "
                                 "STATIC_BROKER_CONFIG:log.retention.hours=100, "
                                 "DEFAULT_CONFIG:log.retention.hours=168"),
            "message.max.bytes": ("5000", "DYNAMIC_DEFAULT_BROKER_CONFIG:message.max.bytes=5000, "
                                  "DEFAULT_CONFIG:message.max.bytes=1048588"),
            "log.cleaner.threads": ("2", "DYNAMIC_BROKER_CONFIG:log.cleaner.threads=2, "
                                    "DEFAULT_CONFIG:log.cleaner.threads=1"),
            "num.partitions": ("1", "DEFAULT_CONFIG:num.partitions=1"),
            "node.id": ("1", "STATIC_BROKER_CONFIG:node.id=1"),
    }.items():
        assert got.get(name) == want, f"{name}: {got.get(name)} != {want}"

    # Sources and read-only flags, through confluent-kafka.
    entries = configs(broker, ConfigResource(ConfigResource.Type.BROKER, "1"))
    for name, (source, read_only) in {
            "log.segment.bytes": (DYNAMIC_BROKER, False),
            "message.max.bytes": (DYNAMIC_DEFAULT, False),
            "log.retention.ms": (DYNAMIC_DEFAULT, False),
            "log.retention.hours": (STATIC, True),
            "num.partitions": (DEFAULT, True),
            "log.cleaner.backoff.ms": (DEFAULT, False),
    }.items():
        e = entries[name]
        assert (e.source, e.is_read_only) == (source, read_only), (name, e)
    topic = configs(broker, ConfigResource(ConfigResource.Type.TOPIC, "dyn"))
    assert (topic["segment.bytes"].value, topic["segment.bytes"].source) == \
        ("2000000", DYNAMIC_BROKER)
    assert (topic["retention.ms"].value, topic["retention.ms"].source) == \
        ("3600000", DYNAMIC_DEFAULT)
    assert (topic["max.message.bytes"].value, topic["max.message.bytes"].source) == \
        ("5000", DYNAMIC_DEFAULT)

    # Kafka's refusals.
    S, D, A = AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND
    for ops, code, message in [
            ([("num.partitions", S, "3")], INVALID_REQUEST,
             "Cannot update these configs dynamically: [num.partitions]"),
            ([("log.retention.hours", S, "1")], INVALID_REQUEST,
             "Cannot update these configs dynamically: [log.retention.hours]"),
            ([("log.segment.bytes", S, "abc")], INVALID_REQUEST,
             "Invalid value abc for configuration log.segment.bytes: Not a number of type INT"),
            ([("log.segment.bytes", S, "100")], INVALID_REQUEST,
             "Invalid value 100 for configuration log.segment.bytes: Value must be at least 1048576"),
            ([("message.max.bytes", A, "1")], INVALID_CONFIG,
             "Config value append is not allowed for config key: message.max.bytes"),
    ]:
        err = incremental(broker, "1", ops)
        assert err is not None and (err.code(), err.str()) == (code, message), (ops, err)
    assert incremental(broker, "1", [("log.cleanup.policy", A, "compact")]) is None
    # (Kafka applies a change a moment after answering; Gregor before it answers.)
    wait_until(lambda: broker_value(broker, "log.cleanup.policy") == "delete,compact", 10,
               "APPEND to the default list")
    assert incremental(broker, "1", [("log.cleanup.policy", D, None)]) is None

    # message.max.bytes=5000 (cluster default) holds for the existing topic at once.
    assert produce_error(broker, "dyn", 10_000) == KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_error(broker, "dyn", 1_000) is None

    # Smaller segments, then size retention, for the topic created before.
    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-default",
                     "--alter", "--delete-config", "message.max.bytes",
                     "--add-config", "log.segment.bytes=1048576")
    assert "Completed updating default config for brokers in the cluster." in res.stdout, res
    assert incremental(broker, "1", [("log.segment.bytes", D, None)]) is None
    wait_until(lambda: topic_value(broker, "dyn", "segment.bytes") == "1048576", 10,
               "the new segment.bytes default")
    wait_until(lambda: produce_error(broker, "dyn", 10_000) is None, 10,
               "message.max.bytes back to its default")
    produce_bytes(broker, "dyn", 30, 100_000)
    assert len(segments(broker, "dyn")) >= 3, segments(broker, "dyn")
    assert low_watermark(broker, "dyn") == 0
    assert incremental(broker, "1", [("log.retention.bytes", S, "1048576")]) is None
    wait_until(lambda: low_watermark(broker, "dyn") > 0, 30, "size retention from the broker's")

    # They are metadata records: a restart keeps them.
    broker.restart()
    entries = configs(broker, ConfigResource(ConfigResource.Type.BROKER, "1"))
    assert (entries["log.retention.bytes"].value, entries["log.retention.bytes"].source) == \
        ("1048576", DYNAMIC_BROKER)
    assert (entries["log.segment.bytes"].value, entries["log.segment.bytes"].source) == \
        ("1048576", DYNAMIC_DEFAULT)
    assert (entries["log.cleaner.threads"].value, entries["log.cleaner.threads"].source) == \
        ("2", DYNAMIC_BROKER)
    assert (entries["message.max.bytes"].value, entries["message.max.bytes"].source) == \
        ("1048588", DEFAULT)


@pytest.mark.skipif(TARGET != "gregor", reason="proto-tests/cluster.py starts Gregor nodes")
def test_cluster_default_reaches_every_broker(make_cluster):
    cluster = make_cluster(3)
    cluster.create_topic("spread", 3, rf=3)

    class Bootstrap:
        bootstrap = cluster.bootstrap

    res = kafka_tool("kafka-configs", Bootstrap, "--entity-type", "brokers", "--entity-default",
                     "--alter", "--add-config", "message.max.bytes=4000")
    assert "Completed updating default config for brokers in the cluster." in res.stdout, res
    # A per-broker value goes to that broker (the admin client sends it there).
    assert incremental(Bootstrap, "2", [("log.segment.bytes", AlterConfigOpType.SET,
                                         "2000000")]) is None

    def described(node_id):
        entries = configs(Bootstrap, ConfigResource(ConfigResource.Type.BROKER, str(node_id)))
        return {k: (entries[k].value, entries[k].source)
                for k in ("message.max.bytes", "log.segment.bytes")}

    for node_id in (1, 2, 3):
        want_segment = ("2000000", DYNAMIC_BROKER) if node_id == 2 else ("1073741824", DEFAULT)
        wait_until(lambda: described(node_id) == {"message.max.bytes": ("4000", DYNAMIC_DEFAULT),
                                                  "log.segment.bytes": want_segment},
                   15, f"dynamic configs on node {node_id}")
    # Every leader refuses a batch over the default.
    p = producer(Bootstrap, **{"linger.ms": 0})
    results = []
    for partition in range(3):
        p.produce("spread", b"z" * 8000, partition=partition,
                  on_delivery=lambda err, msg: results.append(err and err.code()))
    p.flush(TIMEOUT)
    assert results == [KafkaError.MSG_SIZE_TOO_LARGE] * 3, results
