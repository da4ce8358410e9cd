"""Fetch v12-v17 on the wire (flexible versions), for the fetch session tests and
scripts/bench_fetch_sessions.py: requests with a session id and epoch, topics by id (v13+) or
name, forgotten topics, rack id and replica state (v15+); responses decoded with the fields the
tests read, leader hints and node endpoints included."""
import struct
import uuid

import wire
from wire import compact_string, i8, i32, i64, uvarint

FETCH = 1


def _compact_array(items):
    return uvarint(len(items) + 1) + b"".join(items)


def _topic(version, topic):
    return topic.bytes if version >= 13 else compact_string(topic)


def fetch_request(cid, version, topics, session_id=0, epoch=-1, forgotten=(), rack="",
                  replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=50 << 20,
                  partition_max_bytes=1 << 20, isolation=0):
    """topics: [(topic, [(partition, fetch_offset), ...])], the topic a uuid.UUID from v13, a
    name before; forgotten: [(topic, [partition, ...])]."""
    body = i32(replica_id) if version <= 14 else b""
    body += (i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(isolation)
             + i32(session_id) + i32(epoch))
    ts = []
    for topic, parts in topics:
        ps = [i32(p) + i32(-1) + i64(off) + i32(-1) + i64(-1) + i32(partition_max_bytes)
              + uvarint(0) for p, off in parts]
        ts.append(_topic(version, topic) + _compact_array(ps) + uvarint(0))
    body += _compact_array(ts)
    body += _compact_array([_topic(version, t) + _compact_array([i32(p) for p in parts])
                            + uvarint(0) for t, parts in forgotten])
    body += compact_string(rack)
    if version >= 15 and replica_id >= 0:
        state = i32(replica_id) + i64(-1) + uvarint(0)  # ReplicaState, tag 1
        body += uvarint(1) + uvarint(1) + uvarint(len(state)) + state
    else:
        body += uvarint(0)
    return wire.header_v2(FETCH, version, cid) + body


def _cstring(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def record_count(records):
    """Records in a run of v2 batches (the count field of each batch header)."""
    n, pos = 0, 0
    while pos + 61 <= len(records):
        (length,) = struct.unpack(">i", records[pos + 8:pos + 12])
        n += struct.unpack(">i", records[pos + 57:pos + 61])[0]
        pos += 12 + length
    return n


def read_fetch(r, version):
    """{error, session_id, topics: {topic: {partition: {...}}}, nodes: {id: (host, port, rack)}}"""
    r.skip_tags()  # response header v1

    def partition(r):
        p = {"index": r.i32(), "error": r.i16(), "hw": r.i64(), "lso": r.i64(),
             "log_start": r.i64()}
        r.compact_array(lambda r: (r.i64(), r.i64(), r.skip_tags()))
        p["preferred"] = r.i32()
        n = r.uvarint() - 1
        p["records"] = b"" if n < 0 else r.take(n)
        p["count"] = record_count(p["records"])
        p["leader"] = wire.read_leader_hint(r, 1)
        return p

    def topic(r):
        name = uuid.UUID(bytes=r.take(16)) if version >= 13 else _cstring(r)
        parts = r.compact_array(partition)
        r.skip_tags()
        return name, {p["index"]: p for p in parts}

    out = {"throttle": r.i32(), "error": r.i16(), "session_id": r.i32(), "topics": {},
           "nodes": {}}
    for name, parts in r.compact_array(topic):
        out["topics"].setdefault(name, {}).update(parts)
    out["nodes"] = wire.read_node_endpoints(r)
    assert r.done(), "trailing bytes in the Fetch response"
    return out


def fetch(sock, cid, version, topics, **kw):
    return read_fetch(wire.request(sock, fetch_request(cid, version, topics, **kw), cid), version)


def topic_id(broker, topic):
    """The topic's id, from the admin client (DescribeTopics via Metadata)."""
    from confluent_kafka import TopicCollection
    from clients import admin
    a = admin(broker)
    desc = a.describe_topics(TopicCollection([topic]))[topic].result(30)
    tid = desc.topic_id
    return uuid.UUID(bytes=struct.pack(">qq", tid.get_most_significant_bits(),
                                       tid.get_least_significant_bits()))
