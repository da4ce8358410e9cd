"""Kafka's own CLI tools (Kafka 4.x jars from Maven Central, run as `java -cp ... <main class>`,
the way bin/kafka-*.sh runs them): kafka-topics, kafka-configs, kafka-console-producer and
kafka-console-consumer, kafka-get-offsets, kafka-delete-records, kafka-log-dirs. Each test checks
the tool's output and, through another client (confluent-kafka), the state it left behind.
"""
import json
import re
import time

from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

from clients import TIMEOUT, admin, consume_range, create_topic, produce_all, watermarks
from javatools import kafka_tool
from targets import make_target  # noqa: F401  (fixture)


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


def describe_topic(broker, topic):
    """kafka-topics --describe: (header fields, [partition fields]) as dicts."""
    out = kafka_tool("kafka-topics", broker, "--describe", "--topic", topic).stdout

    def fields(line):
        return dict(re.findall(r"(\w+): ?([^\t]*)", line))
    ls = lines(out)
    header = [l for l in ls if not l.startswith("\t")]
    parts = [fields(l) for l in ls if l.startswith("\t")]
    assert len(header) == 1, out
    return fields(header[0]), parts


def topic_configs(broker, topic):
    """{name: (value, source)} of a topic, read with confluent-kafka's AdminClient."""
    res = ConfigResource(ResourceType.TOPIC, topic)
    a = admin(broker)  # keep the handle alive until the future resolves
    cfg = a.describe_configs([res], request_timeout=TIMEOUT)[res].result(TIMEOUT)
    return {k: (v.value, v.source) for k, v in cfg.items()}


def parse_configs(out):
    """kafka-configs --describe output -> {name: (value, sensitive, first synonym)}."""
    got = {}
    for line in lines(out)[1:]:
        m = re.fullmatch(r"  ([^=]+)=(.*) sensitive=(true|false) synonyms=\{(.*)\}", line)
        assert m, f"unexpected kafka-configs line {line!r}"
        got[m.group(1)] = (m.group(2), m.group(3), m.group(4).split(", ")[0])
    return got


def topic_names(broker):
    a = admin(broker)
    return set(a.list_topics(timeout=TIMEOUT).topics)


def test_kafka_topics_create_list_describe_alter_delete(make_target, topic_name):
    broker = make_target()
    res = kafka_tool("kafka-topics", broker, "--create", "--topic", topic_name,
                     "--partitions", 2, "--replication-factor", 1,
                     "--config", "retention.ms=3600000", "--config", "max.message.bytes=64000")
    assert f"Created topic {topic_name}." in res.stdout

    res = kafka_tool("kafka-topics", broker, "--list")
    assert topic_name in lines(res.stdout)

    header, parts = describe_topic(broker, topic_name)
    assert header["Topic"] == topic_name
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", header["TopicId"]) and \
        header["TopicId"] != "AAAAAAAAAAAAAAAAAAAAAA", header
    assert (header["PartitionCount"], header["ReplicationFactor"]) == ("2", "1")
    configs = dict(kv.split("=", 1) for kv in header["Configs"].split(",") if kv)
    assert configs.get("retention.ms") == "3600000" and configs.get("max.message.bytes") == "64000", \
        header["Configs"]
    assert [(p["Partition"], p["Leader"], p["Replicas"], p["Isr"]) for p in parts] == [
        ("0", "1", "1", "1"), ("1", "1", "1", "1")]

    res = kafka_tool("kafka-topics", broker, "--alter", "--topic", topic_name, "--partitions", 3)
    header, parts = describe_topic(broker, topic_name)
    assert header["PartitionCount"] == "3" and [p["Partition"] for p in parts] == ["0", "1", "2"]
    assert all(p["Leader"] == "1" for p in parts), parts
    a = admin(broker)
    md = a.list_topics(topic_name, timeout=TIMEOUT).topics[topic_name]
    assert sorted(md.partitions) == [0, 1, 2]

    res = kafka_tool("kafka-topics", broker, "--alter", "--topic", topic_name, "--partitions", 2,
                     check=False)
    assert res.returncode != 0 and "InvalidPartitionsException" in res.stdout + res.stderr, res

    res = kafka_tool("kafka-topics", broker, "--create", "--topic", topic_name,
                     "--partitions", 1, check=False)
    assert res.returncode != 0 and "TopicExistsException" in res.stdout + res.stderr, res

    kafka_tool("kafka-topics", broker, "--delete", "--topic", topic_name)
    deadline = time.monotonic() + 10
    while topic_name in topic_names(broker):
        assert time.monotonic() < deadline, "topic still listed 10 s after kafka-topics --delete"
        time.sleep(0.2)
    res = kafka_tool("kafka-topics", broker, "--list")
    assert topic_name not in lines(res.stdout)


def test_kafka_configs_topic_describe_alter(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    entity = ["--entity-type", "topics", "--entity-name", topic_name]

    res = kafka_tool("kafka-configs", broker, *entity, "--describe")
    assert lines(res.stdout) == [f"Dynamic configs for topic {topic_name} are:"], res.stdout

    res = kafka_tool("kafka-configs", broker, *entity, "--alter",
                     "--add-config", "retention.ms=7200000,max.message.bytes=2000000")
    assert f"Completed updating config for topic {topic_name}." in res.stdout
    res = kafka_tool("kafka-configs", broker, *entity, "--describe")
    described = parse_configs(res.stdout)
    assert set(described) == {"max.message.bytes", "retention.ms"}, res.stdout
    # the topic's own value comes first among the synonyms; broker ones may follow
    assert described["retention.ms"] == ("7200000", "false", "DYNAMIC_TOPIC_CONFIG:retention.ms=7200000")
    assert described["max.message.bytes"] == (
        "2000000", "false", "DYNAMIC_TOPIC_CONFIG:max.message.bytes=2000000")

    res = kafka_tool("kafka-configs", broker, *entity, "--alter",
                     "--delete-config", "max.message.bytes")
    assert f"Completed updating config for topic {topic_name}." in res.stdout
    cfg = topic_configs(broker, topic_name)
    assert cfg["retention.ms"] == ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert cfg["max.message.bytes"] == ("1048588", ConfigSource.DEFAULT_CONFIG.value)

    res = kafka_tool("kafka-configs", broker, *entity, "--describe", "--all")
    assert lines(res.stdout)[0] == f"All configs for topic {topic_name} are:"
    described = parse_configs(res.stdout)
    for name, want in {
            "max.message.bytes": ("1048588", "false", "DEFAULT_CONFIG:message.max.bytes=1048588"),
            "retention.ms": ("7200000", "false", "DYNAMIC_TOPIC_CONFIG:retention.ms=7200000"),
            "segment.bytes": ("1073741824", "false",
                              "DEFAULT_CONFIG:log.segment.bytes=1073741824"),
            "cleanup.policy": ("delete", "false", "DEFAULT_CONFIG:log.cleanup.policy=delete"),
            "message.timestamp.type": ("CreateTime", "false",
                                       "DEFAULT_CONFIG:log.message.timestamp.type=CreateTime"),
    }.items():
        assert described.get(name) == want, f"{name}: {described.get(name)} != {want}"

    res = kafka_tool("kafka-configs", broker, *entity, "--alter",
                     "--add-config", "retention.ms=abc", check=False)
    assert res.returncode != 0 and "InvalidConfigurationException" in res.stdout + res.stderr, res
    assert topic_configs(broker, topic_name)["retention.ms"][0] == "7200000"


def test_kafka_configs_broker_describe(make_target):
    broker = make_target()
    res = kafka_tool("kafka-configs", broker, "--entity-type", "brokers", "--entity-name", 1,
                     "--describe", "--all")
    assert lines(res.stdout)[0] == "All configs for broker 1 are:", res.stdout
    described = parse_configs(res.stdout)
    for name, want in {
            "num.partitions": ("1", "false", "DEFAULT_CONFIG:num.partitions=1"),
            "log.retention.hours": ("168", "false", "DEFAULT_CONFIG:log.retention.hours=168"),
            "log.segment.bytes": ("1073741824", "false",
                                  "DEFAULT_CONFIG:log.segment.bytes=1073741824"),
            "node.id": ("1", "false", "STATIC_BROKER_CONFIG:node.id=1"),
    }.items():
        assert described.get(name) == want, f"{name}: {described.get(name)} != {want}"


def test_console_producer_then_consumer(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    records = [(f"k{i}", f"value {i} \u00e9") for i in range(5)]
    stdin = "".join(f"{k}:{v}\n" for k, v in records)
    kafka_tool("kafka-console-producer", broker, "--topic", topic_name,
               "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
               input=stdin)
    got = [(m.offset(), m.key().decode(), m.value().decode())
           for m in consume_range(broker, topic_name)]
    assert got == [(i, k, v) for i, (k, v) in enumerate(records)]

    res = kafka_tool("kafka-console-consumer", broker, "--topic", topic_name, "--partition", 0,
                     "--from-beginning", "--max-messages", len(records),
                     "--formatter-property", "print.key=true",
                     "--formatter-property", "print.offset=true", timeout=60)
    assert lines(res.stdout) == [f"Offset:{i}\t{k}\t{v}" for i, (k, v) in enumerate(records)]
    assert f"Processed a total of {len(records)} messages" in res.stderr


def test_get_offsets(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name, partitions=2)
    now = int(time.time() * 1000)
    ts0 = [now - 5000 + d for d in (0, 10, 20, 900, 30, 40, 50)]  # max timestamp at offset 3
    produce_all(broker, topic_name, [b"a%d" % i for i in range(7)], partition=0,
                timestamps=ts0, **{"linger.ms": 0})
    produce_all(broker, topic_name, [b"b%d" % i for i in range(3)], partition=1)

    latest = kafka_tool("kafka-get-offsets", broker, "--topic", topic_name).stdout
    assert lines(latest) == [f"{topic_name}:0:7", f"{topic_name}:1:3"], latest
    earliest = kafka_tool("kafka-get-offsets", broker, "--topic", topic_name,
                          "--time", -2).stdout
    assert lines(earliest) == [f"{topic_name}:0:0", f"{topic_name}:1:0"], earliest
    maxts = kafka_tool("kafka-get-offsets", broker, "--topic-partitions", f"{topic_name}:0",
                       "--time", -3).stdout
    assert lines(maxts) == [f"{topic_name}:0:3"], maxts


def test_delete_records_and_log_dirs(make_target, topic_name, tmp_path):
    broker = make_target()
    create_topic(broker, topic_name)
    produce_all(broker, topic_name, [b"r%d" % i for i in range(10)])
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic_name, "partition": 0, "offset": 6}]}))
    res = kafka_tool("kafka-delete-records", broker, "--offset-json-file", spec)
    assert f"partition: {topic_name}-0\tlow_watermark: 6" in res.stdout, res.stdout
    assert watermarks(broker, topic_name) == (6, 10)
    assert [m.offset() for m in consume_range(broker, topic_name, start=6)] == [6, 7, 8, 9]

    res = kafka_tool("kafka-log-dirs", broker, "--describe", "--broker-list", 1,
                     "--topic-list", topic_name)
    doc = json.loads(lines(res.stdout)[-1])
    [b] = doc["brokers"]
    assert b["broker"] == 1
    parts = [p for d in b["logDirs"] for p in d["partitions"]]
    assert [p["partition"] for p in parts] == [f"{topic_name}-0"], doc
    assert parts[0]["size"] > 0 and parts[0]["isFuture"] is False, doc
    assert all(d["error"] is None for d in b["logDirs"]), doc
