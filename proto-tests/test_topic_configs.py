"""Every topic config key of Kafka 4.3 (LogConfig.configKeys(), internal ones aside), as a
tool that copies configs between clusters (MirrorMaker 2, kafka-configs) sends them:

- CreateTopics with each key set to a valid non-default value succeeds, and DescribeConfigs
  gives every key back with that value and source DYNAMIC_TOPIC_CONFIG;
- a topic with no overrides describes every key with Kafka's default;
- invalid values get INVALID_CONFIG, and remote.storage.enable=true is refused as Kafka
  refuses it on a broker without tiered storage;
- message.timestamp.after.max.ms: a CreateTime record two hours ahead of the clock gets
  INVALID_TIMESTAMP (Kafka 4's default allows one hour), and is accepted where the topic
  allows three.

PROTO_TESTS_TARGET=kafka runs the same against Apache Kafka 4.3.1.
"""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from clients import TIMEOUT, admin, create_topic, producer
from targets import make_target  # noqa: F401  (fixture)

# key -> (Kafka 4.3.1's default as DescribeConfigs shows it, a valid other value)
KAFKA_TOPIC_CONFIGS = {
    "cleanup.policy": ("delete", "compact,delete"),
    "compression.gzip.level": ("-1", "5"),
    "compression.lz4.level": ("9", "4"),
    "compression.type": ("producer", "zstd"),
    "compression.zstd.level": ("3", "7"),
    "delete.retention.ms": ("86400000", "3600000"),
    "file.delete.delay.ms": ("60000", "30000"),
    "flush.messages": ("9223372036854775807", "1000"),
    "flush.ms": ("9223372036854775807", "5000"),
    "follower.replication.throttled.replicas": ("", "0:1"),
    "index.interval.bytes": ("4096", "8192"),
    "leader.replication.throttled.replicas": ("", "*"),
    "local.retention.bytes": ("-2", "1048576"),
    "local.retention.ms": ("-2", "3600000"),
    "max.compaction.lag.ms": ("9223372036854775807", "86400000"),
    "max.message.bytes": ("1048588", "2097152"),
    "message.timestamp.after.max.ms": ("3600000", "7200000"),
    "message.timestamp.before.max.ms": ("9223372036854775807", "86400000"),
    "message.timestamp.type": ("CreateTime", "LogAppendTime"),
    "min.cleanable.dirty.ratio": ("0.5", "0.25"),
    "min.compaction.lag.ms": ("0", "1000"),
    "min.insync.replicas": ("1", "1"),
    "preallocate": ("false", "true"),
    "remote.log.copy.disable": ("false", "true"),
    "remote.log.delete.on.disable": ("false", "true"),
    "remote.storage.enable": ("false", "false"),
    "retention.bytes": ("-1", "1073741824"),
    "retention.ms": ("604800000", "86400000"),
    "segment.bytes": ("1073741824", "16777216"),
    "segment.index.bytes": ("10485760", "1048576"),
    "segment.jitter.ms": ("0", "100"),
    "segment.ms": ("604800000", "3600000"),
    "unclean.leader.election.enable": ("false", "true"),
}
DYNAMIC_TOPIC_CONFIG = 1  # ConfigSource
INVALID_CONFIG = 40


def describe(broker, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    a = admin(broker)  # alive until the future resolves
    entries = a.describe_configs([res], request_timeout=TIMEOUT)[res].result(TIMEOUT)
    return {k: (e.value if e.value is not None else "", e.source) for k, e in entries.items()}


def create_error(broker, name, config):
    a = admin(broker)  # alive until the future resolves
    futs = a.create_topics([NewTopic(name, 1, 1, config=config)], request_timeout=TIMEOUT)
    try:
        futs[name].result(TIMEOUT)
        return None
    except KafkaException as e:
        return e.args[0]


@pytest.fixture
def target(make_target):
    return make_target()


def test_every_kafka_topic_config_round_trips(target, topic_name):
    create_topic(target, topic_name + "-all", config={k: v for k, (_, v) in KAFKA_TOPIC_CONFIGS.items()})
    got = describe(target, topic_name + "-all")
    for key, (_, value) in KAFKA_TOPIC_CONFIGS.items():
        assert key in got, f"{key} not described"
        assert got[key] == (value, DYNAMIC_TOPIC_CONFIG), f"{key}: {got[key]}"

    create_topic(target, topic_name + "-defaults")
    got = describe(target, topic_name + "-defaults")
    for key, (default, _) in KAFKA_TOPIC_CONFIGS.items():
        assert got.get(key, (None,))[0] == default, f"{key}: {got.get(key)}, Kafka's default {default}"


@pytest.mark.parametrize("key, value", [
    ("compression.gzip.level", "0"), ("compression.lz4.level", "18"),
    ("leader.replication.throttled.replicas", "0-1"), ("local.retention.ms", "-3"),
    ("message.timestamp.after.max.ms", "-1"), ("preallocate", "maybe"),
    ("remote.storage.enable", "true"), ("no.such.config", "1"),
])
def test_invalid_values_are_refused(target, topic_name, key, value):
    err = create_error(target, topic_name, {key: value})
    assert err is not None and err.code() == INVALID_CONFIG, f"{key}={value}: {err}"


def test_timestamps_too_far_ahead_are_refused(target, topic_name):
    create_topic(target, topic_name + "-1h")
    create_topic(target, topic_name + "-3h", config={"message.timestamp.after.max.ms": "10800000"})
    ahead = int(time.time() * 1000) + 2 * 3600 * 1000
    results = {}
    p = producer(target)

    def dr(err, msg):
        results[msg.topic()] = err
    for t in (topic_name + "-1h", topic_name + "-3h"):
        p.produce(t, b"from the future", timestamp=ahead, on_delivery=dr)
    assert p.flush(TIMEOUT) == 0
    err = results[topic_name + "-1h"]
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, err
    assert results[topic_name + "-3h"] is None, results
