"""Share groups (KIP-932) with franz-go's share consumer (kgo.ShareGroup, franz-go v1.22.3;
proto-tests/go/franzshare, built into .deps/bin/franz-share by scripts/install-test-deps.sh).

Three franz-go share consumers (one process) read one partition of 100 records: they split
them (each consumer gets some), every record is delivered, a REJECTed record (every i%10 == 3)
is never delivered again, a RELEASEd one (i%10 == 7, released at its first delivery) is
delivered again with delivery count 2 and then accepted, and the others are delivered once.
A new share group starts at the latest offset, so the program first produces warm-up records
until a consumer gets one. Runs against Kafka 4.3.1 too (PROTO_TESTS_TARGET=kafka), where share
groups are on by default. Then kafka-share-groups --list and kafka-groups --list show the
group (ListGroups lists share groups, with group type "share").
"""
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from clients import create_topic
from javatools import kafka_tool
from targets import make_target  # noqa: F401  (fixture)

FRANZ_SHARE = Path(__file__).resolve().parent.parent / ".deps" / "bin" / "franz-share"
RECORDS = 100


def test_franz_share_consumers_split_reject_release(make_target):
    if not FRANZ_SHARE.exists():
        pytest.fail(f"{FRANZ_SHARE} missing: run scripts/install-test-deps.sh")
    # one broker: the share state topic with one replica (Kafka's default of 3 cannot be met)
    b = make_target({"group.initial.rebalance.delay.ms": 0,
                     "share.coordinator.state.topic.replication.factor": 1,
                     "share.coordinator.state.topic.min.isr": 1})
    topic, group = f"franz-share-{uuid.uuid4().hex[:6]}", f"franz-share-{uuid.uuid4().hex[:6]}"
    create_topic(b, topic, 1)
    res = subprocess.run([str(FRANZ_SHARE), "-brokers", b.bootstrap, "-group", group,
                          "-topic", topic, "-n", str(RECORDS), "-timeout", "60s"],
                         capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["error"] == "", rep["error"]
    assert rep["ack_errors"] == [], rep["ack_errors"][:5]
    deliveries = rep["deliveries"]
    assert sorted(deliveries) == sorted(f"rec-{i}" for i in range(RECORDS)), \
        f"records never delivered: {set(f'rec-{i}' for i in range(RECORDS)) - set(deliveries)}"
    assert all(n > 0 for n in rep["consumers"]), f"a consumer got nothing: {rep['consumers']}"
    assert sum(rep["consumers"]) == sum(len(v) for v in deliveries.values())
    for i in range(RECORDS):
        got = deliveries[f"rec-{i}"]
        if i % 10 == 7:
            assert got == [1, 2], f"rec-{i} (released once): {got}"
        else:
            assert got == [1], f"rec-{i} ({'rejected' if i % 10 == 3 else 'accepted'}): {got}"
    print(f"franz-go share consumers: {rep['consumers']} deliveries each")

    # ListGroups lists the share group (its members left: Empty), with type "share":
    # kafka-share-groups --list (ListGroups v5, types filter "share") and kafka-groups --list.
    out = kafka_tool("org.apache.kafka.tools.consumer.group.ShareGroupCommand", b,
                     "--list", "--state").stdout
    rows = [line.split() for line in out.splitlines()]
    assert [group, "Empty"] in rows, out
    out = kafka_tool("org.apache.kafka.tools.GroupsCommand", b, "--list").stdout
    rows = [line.split() for line in out.splitlines()]
    assert [group, "Share", "share"] in rows, out
