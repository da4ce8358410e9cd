"""KIP-392 follower fetching and KIP-951 leader hints on a three-node cluster, each node in its
own rack (`broker.rack`), with `replica.selector.class` set to Kafka's RackAwareReplicaSelector.

Raw Fetch v17: the leader names the in-sync follower in the consumer's rack as the preferred
read replica (and answers a consumer in its own rack itself); the follower serves the records up
to its high watermark; a broker that holds no replica answers NOT_LEADER_OR_FOLLOWER with the
current leader and, at the top level, the leader's endpoint, and so does a raw Produce v11/v12 to it. Real clients: franz-go and the Java
4.x console consumer with a rack read everything, from the follower (its per-topic bytes out
grows, and a follower serves no other reads of the topic). Followers replicate with Fetch v17
(replica id in the replica state) throughout.
"""
import json
import re
import subprocess
import urllib.request
import uuid

import pytest

import wire
from clients import produce_all
from cluster import make_cluster, wait_until  # noqa: F401  (fixture)
from fetch_wire import fetch, topic_id
from javatools import kafka_tool

NOT_LEADER = 6
SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
FRANZ_FETCH = ".deps/bin/franz-fetch"
RECORDS = 20


def bytes_out(node, topic):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=5) as r:
        m = re.search(r'^gregor_topic_bytes_out_total\{topic="%s"\} (\d+)$' % re.escape(topic),
                      r.read().decode(), re.M)
    return int(m.group(1)) if m else 0


def fetch_versions(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=5) as r:
        return {int(v) for v in re.findall(r'^gregor_fetch_requests_total\{version="(\d+)"\}',
                                           r.read().decode(), re.M)}


@pytest.fixture
def racks(make_cluster):
    c = make_cluster(kafka_config={"replica.selector.class": SELECTOR}, start=False)
    for i, n in c.nodes.items():
        n.kafka_config = {"broker.rack": f"rack-{i}"}
    return c.start()


def test_rack_aware_consumers_read_from_the_follower_in_their_rack(racks, topic_name):
    c = racks
    assert {b["node_id"]: b.get("rack") for b in c.metadata()["brokers"]} == {
        i: f"rack-{i}" for i in c.nodes}
    c.create_topic(topic_name, 1, rf=3)
    leader = c.leaders(topic_name)[0]
    follower = min(i for i in c.nodes if i != leader)
    produce_all(c, topic_name, [b"r%d" % i for i in range(RECORDS)])
    t = topic_id(c, topic_name)
    with wire.connect(c.node(leader)) as s:
        r = fetch(s, 1, 17, [(t, [(0, 0)])], rack=f"rack-{follower}")["topics"][t][0]
        assert (r["error"], r["preferred"], r["count"], r["hw"]) == (0, follower, 0, RECORDS)
        for cid, rack in ((2, f"rack-{leader}"), (3, "")):
            r = fetch(s, cid, 17, [(t, [(0, 0)])], rack=rack)["topics"][t][0]
            assert (r["preferred"], r["count"]) == (-1, RECORDS), rack
    with wire.connect(c.node(follower)) as s:
        # The follower learns the high watermark on its next fetch from the leader.
        def read():
            return fetch(s, 4, 17, [(t, [(0, 0)])], rack=f"rack-{follower}")["topics"][t][0]
        wait_until(lambda: read()["count"] == RECORDS, 10, "the follower serving every record")
        r = read()
        assert (r["error"], r["preferred"], r["hw"]) == (0, -1, RECORDS)
    assert bytes_out(c.node(follower), topic_name) > 0

    before = bytes_out(c.node(follower), topic_name)
    res = subprocess.run([FRANZ_FETCH, "-brokers", c.bootstrap, "-topic", topic_name,
                          "-n", str(RECORDS), "-rack", f"rack-{follower}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert (rep["consumed"], rep["in_order"], rep.get("error")) == (RECORDS, True, None), rep
    assert bytes_out(c.node(follower), topic_name) > before, "franz-go did not read the follower"

    before = bytes_out(c.node(follower), topic_name)
    out = kafka_tool("kafka-console-consumer", c, "--topic", topic_name, "--from-beginning",
                     "--max-messages", str(RECORDS), "--timeout-ms", "30000",
                     "--group", f"g-{uuid.uuid4().hex[:8]}",
                     "--consumer-property", f"client.rack=rack-{follower}").stdout
    # (stdout may also carry the tool's deprecation notice for --consumer-property)
    assert re.findall(r"^r\d+$", out, re.M) == ["r%d" % i for i in range(RECORDS)]
    assert bytes_out(c.node(follower), topic_name) > before, "Java did not read the follower"
    # Followers replicate with v17 (their fetches reach the leader), clients use v17 too.
    assert 17 in fetch_versions(c.node(leader))


def test_a_broker_without_the_partition_hints_at_its_leader(racks, topic_name):
    c = racks
    c.create_topic(topic_name, 1, rf=1)
    leader = c.leaders(topic_name)[0]
    other = min(i for i in c.nodes if i != leader)
    t = topic_id(c, topic_name)
    with wire.connect(c.node(other)) as s:
        r = fetch(s, 1, 17, [(t, [(0, 0)])])
        p = r["topics"][t][0]
        assert p["error"] == NOT_LEADER and p["leader"] == (leader, 0)
        assert r["nodes"] == {leader: ("127.0.0.1", c.node(leader).port, f"rack-{leader}")}
        # Before v16 the hint is there, the endpoints are not.
        r = fetch(s, 2, 15, [(t, [(0, 0)])])
        assert r["topics"][t][0]["leader"] == (leader, 0) and r["nodes"] == {}
        # Produce v10+ names the leader and its endpoint too (KIP-951), and appends nothing.
        batch = wire.record_batch([b"not here"])
        cid = 3
        for version in (11, 12):
            r = wire.produce(s, cid, topic_name, 0, batch, version=version)
            [p] = r["topics"][topic_name]
            assert p["error"] == NOT_LEADER and p["leader"] == (leader, 0), p
            assert r["nodes"] == {leader: ("127.0.0.1", c.node(leader).port, f"rack-{leader}")}
            cid += 1
    with wire.connect(c.node(leader)) as s:
        r = fetch(s, 9, 17, [(t, [(0, 0)])])
        assert r["topics"][t][0]["count"] == 0, "the refused produce appended nothing"
