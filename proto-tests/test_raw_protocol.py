"""Well-formed raw requests: checks the hand-written encoder in wire.py and the exact wire
behaviour clients rely on.

Covers: ApiVersions v0/v3 (advertised ranges), Metadata v0/v1, pipelined requests answered in
order (acks=0 produce sends no response), and ListOffsets v1/v7 for latest (-1), earliest
(-2), max timestamp (-3) and by timestamp.
"""
import struct

import pytest

import wire
from clients import consume_range, create_topic, produce_all

def test_api_versions_v0_and_v3(broker):
    with wire.connect(broker) as s:
        err0, v0 = wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(7), 7))
        r = wire.request(s, wire.api_versions_v3(8), 8)
        err3, v3 = wire.read_api_versions_v3(r)
        assert r.done(), "trailing bytes in the ApiVersions v3 response"
    assert err0 == err3 == 0 and v0 == v3
    # (max allowed min, min required max) per the issue: Produce advertised from v0
    # (KAFKA-18659), Fetch 4..12+, ListOffsets 1..7+, Metadata ..12+, ApiVersions 0..3+,
    # CreateTopics 2..5+, DeleteTopics 1..4+.
    need = {0: (0, 10), 1: (4, 12), 2: (1, 7), 3: (0, 12), 18: (0, 3), 19: (2, 5), 20: (1, 4)}
    for key, (max_lo, min_hi) in need.items():
        lo, hi = v3[key]
        assert lo <= max_lo and hi >= min_hi, f"api {key}: {lo}..{hi}"


def test_metadata_v0_and_v1(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)
    with wire.connect(broker) as s:
        md0 = wire.read_metadata(wire.request(s, wire.metadata_v0(1, [topic_name]), 1), 0)
        md1 = wire.read_metadata(wire.request(s, wire.metadata_v1(2), 2), 1)
        all0 = wire.read_metadata(wire.request(s, wire.metadata_v0(3), 3), 0)
    for md in (md0, md1, all0):
        assert [(b["node_id"], b["host"], b["port"]) for b in md["brokers"]] == [
            (1, "127.0.0.1", broker.port)]
    assert md1["controller_id"] == 1
    [t] = md0["topics"]
    assert (t["error"], t["name"]) == (0, topic_name)
    assert sorted((p["index"], p["leader"], p["replicas"], p["isr"]) for p in t["partitions"]) == [
        (0, 1, [1], [1]), (1, 1, [1], [1])]
    assert topic_name in {t["name"] for t in md1["topics"]}
    assert topic_name in {t["name"] for t in all0["topics"]}


def test_pipelined_requests_answered_in_order(broker, topic_name):
    create_topic(broker, topic_name)
    batch = wire.record_batch([b"p1"])
    reqs = [wire.api_versions_v0(100), wire.metadata_v1(101),
            wire.produce_v3(102, topic_name, 0, batch, acks=0),  # acks=0: no response at all
            wire.produce_v3(103, topic_name, 0, batch), wire.api_versions_v0(104)]
    with wire.connect(broker) as s:
        s.sendall(b"".join(wire.frame(r) for r in reqs))
        ids = [struct.unpack(">i", wire.recv_frame(s)[:4])[0] for _ in range(4)]
    assert ids == [100, 101, 103, 104]
    assert [m.value() for m in consume_range(broker, topic_name)] == [b"p1", b"p1"]


@pytest.mark.parametrize("version", [1, 7])
def test_list_offsets(broker, topic_name, version):
    create_topic(broker, topic_name)
    base = 1_700_000_000_000
    # One batch, timestamps out of order: the max timestamp is at offset 2 of 0..4.
    ts = [base + 10, base + 30, base + 50, base + 20, base + 40]
    produce_all(broker, topic_name, [b"x"] * 5, timestamps=ts, **{"linger.ms": 50})
    produce_all(broker, topic_name, [b"y"], timestamps=[base + 5])  # offset 5, a second batch
    encode = wire.list_offsets_v1 if version == 1 else wire.list_offsets_v7

    def query(ts_query):
        with wire.connect(broker) as s:
            return wire.read_list_offsets(wire.request(s, encode(1, topic_name, 0, ts_query), 1),
                                          version)

    assert query(-1)[::2] == (0, 6)  # latest: the log end offset
    assert query(-2)[::2] == (0, 0)  # earliest: the log start offset
    # By timestamp: the earliest offset whose timestamp is >= the target, with that timestamp.
    assert query(base + 25) == (0, base + 30, 1)
    assert query(base + 45) == (0, base + 50, 2)
    assert query(base) == (0, base + 10, 0)
    assert query(base + 51) == (0, -1, -1)
    if version >= 7:
        # KIP-734: the record with the largest timestamp, and that timestamp.
        assert query(-3) == (0, base + 50, 2)
