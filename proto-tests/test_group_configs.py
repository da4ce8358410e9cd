"""Group configs (ConfigResource GROUP, `kafka-configs --entity-type groups`), as franz-go's and
the Java client's share-group setups use them: `share.auto.offset.reset=earliest` lets a new
share group read records produced before it existed (the default, latest, does not), and the
group's `share.record.lock.duration.ms` overrides the broker's. `--describe` lists every group
config with its value; invalid values and unknown keys are refused as Kafka refuses them. The
same test passes against Kafka 4.3.1 (PROTO_TESTS_TARGET=kafka).
"""
import subprocess
import uuid

import pytest

from clients import create_topic, produce_all
from javatools import JAVA_LIB, JVM_OPTS, _java, kafka_tool
from targets import new_target

BROKER_CONFIG = {
    "group.initial.rebalance.delay.ms": 0,
    # A single Kafka node needs these for __share_group_state (Gregor caps them itself).
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker"), BROKER_CONFIG).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


def group_configs(broker, group, *args, check=True):
    return kafka_tool("kafka-configs", broker, "--entity-type", "groups", "--entity-name", group,
                      *args, check=check)


def described(broker, group):
    """kafka-configs --describe --all of a group: {name: value}."""
    out = group_configs(broker, group, "--describe", "--all").stdout
    got = {}
    for line in out.splitlines():
        line = line.strip()
        if "=" in line and " sensitive=" in line:
            name, rest = line.split("=", 1)
            got[name] = rest.split(" sensitive=")[0]
    return got


def share_consume(broker, topic, group, n, timeout_ms=20000):
    cmd = [_java(), *JVM_OPTS, "-cp", f"{JAVA_LIB}/*",
           "org.apache.kafka.tools.consumer.ConsoleShareConsumer",
           "--bootstrap-server", broker.bootstrap, "--topic", topic, "--group", group,
           "--max-messages", str(n), "--timeout-ms", str(timeout_ms)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    return res.stdout.split()


def test_earliest_reads_what_was_there_before_the_group(broker):
    topic = f"gc-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic, partitions=1)
    produce_all(broker, topic, [f"old-{i}".encode() for i in range(6)])
    early, late = f"early-{uuid.uuid4().hex[:6]}", f"late-{uuid.uuid4().hex[:6]}"
    group_configs(broker, early, "--alter", "--add-config",
                  "share.auto.offset.reset=earliest,share.record.lock.duration.ms=15000")
    got = described(broker, early)
    assert got["share.auto.offset.reset"] == "earliest", got
    assert got["share.record.lock.duration.ms"] == "15000", got
    assert got["share.delivery.count.limit"] == "5", got  # the broker's default
    assert sorted(share_consume(broker, topic, early, 6)) == sorted(f"old-{i}" for i in range(6))
    # A group left at latest starts at the end: the old records are not delivered to it.
    assert share_consume(broker, topic, late, 1, timeout_ms=8000) == []
    # Deleting the override reports the default again.
    group_configs(broker, early, "--alter", "--delete-config", "share.auto.offset.reset")
    assert described(broker, early)["share.auto.offset.reset"] == "latest"


@pytest.mark.parametrize("config,message", [
    ("share.auto.offset.reset=oldest", "share.auto.offset.reset"),
    ("share.record.lock.duration.ms=999", "share.record.lock.duration.ms"),
    ("share.delivery.count.limit=11", "share.delivery.count.limit"),
    ("no.such.group.config=1", "no.such.group.config"),
])
def test_invalid_values_are_refused(broker, config, message):
    group = f"bad-{uuid.uuid4().hex[:6]}"
    res = group_configs(broker, group, "--alter", "--add-config", config, check=False)
    assert res.returncode != 0 or "Error" in res.stdout + res.stderr, res.stdout + res.stderr
    assert message in res.stdout + res.stderr, res.stdout + res.stderr
    assert "share.auto.offset.reset" in described(broker, group)
