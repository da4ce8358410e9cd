"""Issue 13's protocol versions other than Fetch: Metadata v13, DescribeTopicPartitions (KIP-966
paging with a cursor, as the Java AdminClient 4.x's describeTopics uses it), ListOffsets v8-v10
(the tiered-storage timestamps answered as Kafka does without remote storage) and DescribeCluster
v2 (include_fenced_brokers). Raw requests pin the layout and Kafka's answers; the Kafka CLI
(kafka-topics --describe, kafka-get-offsets --time -4/-5) and confluent-kafka drive them as
users do. Every test passes against Kafka 4.3.1 too (PROTO_TESTS_TARGET=kafka).
"""
import re
import urllib.request
import uuid

import pytest
from confluent_kafka import TopicPartition

import wire
from clients import TIMEOUT, admin, consume_range, create_topic, produce_all
from javatools import kafka_tool
from targets import TARGET, module_target, shared_target  # noqa: F401  (fixtures)
from fetch_wire import topic_id
from wire import compact_string, i8, i32, i64, uvarint

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_ID = 100


def cnstring(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def cstring(s):
    return uvarint(0) if s is None else compact_string(s)


def carray(items):
    return uvarint(len(items) + 1) + b"".join(items)


def uuid_(r):
    return uuid.UUID(bytes=r.take(16))


@pytest.fixture(scope="module")
def topics(module_target):
    """Three topics whose names sort after everything else the module creates: a (3
    partitions), b (2) and c (1), with a few records."""
    prefix = "zz-dtp-" + uuid.uuid4().hex[:6]
    names = {f"{prefix}-a": 3, f"{prefix}-b": 2, f"{prefix}-c": 1}
    for name, n in names.items():
        create_topic(module_target, name, partitions=n)
    return names


def test_versions_advertised(shared_target):
    with wire.connect(shared_target) as s:
        err, apis = wire.read_api_versions_v3(wire.request(s, wire.api_versions_v3(1), 1))
    assert err == 0
    assert apis[3][1] >= 13, f"Metadata {apis[3]}"
    assert apis[2][1] >= 9, f"ListOffsets {apis[2]}"
    assert apis[60][1] >= 2, f"DescribeCluster {apis[60]}"
    assert apis.get(75) == (0, 0), f"DescribeTopicPartitions {apis.get(75)}"


# --- Metadata v13 ------------------------------------------------------------------------------

def metadata_v13(cid, topics):
    body = carray([bytes(16) + cstring(t) + uvarint(0) for t in topics])
    body += i8(0) + i8(0) + uvarint(0)  # no auto creation, no topic authorized operations
    return wire.header_v2(3, 13, cid) + body


def read_metadata_v13(r):
    r.skip_tags()  # response header v1
    r.i32()  # throttle_time_ms

    def broker(r):
        b = (r.i32(), cnstring(r), r.i32(), cnstring(r))
        r.skip_tags()
        return b

    def partition(r):
        p = {"error": r.i16(), "index": r.i32(), "leader": r.i32(), "epoch": r.i32(),
             "replicas": r.compact_array(lambda r: r.i32()),
             "isr": r.compact_array(lambda r: r.i32()),
             "offline": r.compact_array(lambda r: r.i32())}
        r.skip_tags()
        return p

    def topic(r):
        t = {"error": r.i16(), "name": cnstring(r), "id": uuid_(r), "internal": r.i8(),
             "partitions": r.compact_array(partition), "ops": r.i32()}
        r.skip_tags()
        return t

    out = {"brokers": r.compact_array(broker), "cluster_id": cnstring(r),
           "controller": r.i32(), "topics": r.compact_array(topic)}
    out["error"] = r.i16()  # v13: the top-level error code
    r.skip_tags()
    assert r.done(), "trailing bytes in the Metadata v13 response"
    return out


def test_metadata_v13(shared_target, topics):
    a = next(iter(topics))
    with wire.connect(shared_target) as s:
        md = read_metadata_v13(wire.request(s, metadata_v13(5, [a, "no-such-topic-v13"]), 5))
    assert md["error"] == 0
    assert [b[2] for b in md["brokers"]] == [shared_target.port]
    by_name = {t["name"]: t for t in md["topics"]}
    assert by_name[a]["error"] == 0 and by_name[a]["id"].int != 0
    assert sorted(p["index"] for p in by_name[a]["partitions"]) == [0, 1, 2]
    assert by_name["no-such-topic-v13"]["error"] == UNKNOWN_TOPIC_OR_PARTITION


# --- DescribeTopicPartitions (key 75) ----------------------------------------------------------

def dtp_request(cid, topics, limit, cursor=None):
    body = carray([compact_string(t) + uvarint(0) for t in topics]) + i32(limit)
    if cursor is None:
        body += i8(-1)
    else:
        body += i8(1) + compact_string(cursor[0]) + i32(cursor[1]) + uvarint(0)
    return wire.header_v2(75, 0, cid) + body + uvarint(0)


def read_dtp(r):
    r.skip_tags()  # response header v1
    r.i32()  # throttle_time_ms

    def partition(r):
        p = {"error": r.i16(), "index": r.i32(), "leader": r.i32(), "epoch": r.i32(),
             "replicas": r.compact_array(lambda r: r.i32()),
             "isr": r.compact_array(lambda r: r.i32()),
             "elr": r.compact_array(lambda r: r.i32()),
             "last_known_elr": r.compact_array(lambda r: r.i32()),
             "offline": r.compact_array(lambda r: r.i32())}
        r.skip_tags()
        return p

    def topic(r):
        t = {"error": r.i16(), "name": cnstring(r), "id": uuid_(r), "internal": r.i8(),
             "partitions": r.compact_array(partition), "ops": r.i32()}
        r.skip_tags()
        return t

    topics = r.compact_array(topic)
    cursor = None
    if r.i8() >= 0:
        cursor = (cnstring(r), r.i32())
        r.skip_tags()
    r.skip_tags()
    assert r.done(), "trailing bytes in the DescribeTopicPartitions response"
    return topics, cursor


def dtp(broker, topics, limit, cursor=None):
    with wire.connect(broker) as s:
        return read_dtp(wire.request(s, dtp_request(9, topics, limit, cursor), 9))


def pages(broker, topics, limit, cursor=None):
    """Follows next_cursor to the end: [(name, [partition indexes]) per answer]."""
    out = []
    for _ in range(20):
        got, cursor = dtp(broker, topics, limit, cursor)
        out.append([(t["name"], [p["index"] for p in t["partitions"]]) for t in got])
        if cursor is None:
            return out
    raise AssertionError(f"no end of paging: {out}")


def test_describe_topic_partitions_pages_named_topics(shared_target, topics):
    a, b, c = topics
    got = pages(shared_target, [c, a, b], 2)
    assert got == [[(a, [0, 1])], [(a, [2]), (b, [0])], [(b, [1]), (c, [0])]]
    # One answer holds everything under the default limit, in name order.
    [[first, *rest]] = pages(shared_target, [c, b, a], 2000)
    assert [first[0]] + [t[0] for t in rest] == [a, b, c]


def test_describe_topic_partitions_partition_fields(shared_target, topics):
    a = next(iter(topics))
    [t], cursor = dtp(shared_target, [a], 1, (a, 2))
    assert cursor is None
    assert t["error"] == 0 and t["id"].int != 0 and t["internal"] == 0
    [p] = t["partitions"]
    assert p["index"] == 2 and p["error"] == 0
    assert p["leader"] == 1 and p["replicas"] == [1] and p["isr"] == [1]
    assert p["elr"] == [] and p["last_known_elr"] == [] and p["offline"] == []
    assert t["ops"] not in (0, -2147483648), "topic authorized operations missing"


def test_describe_topic_partitions_all_topics_from_a_cursor(shared_target, topics):
    a, b, c = topics
    # All topics (an empty list) from a cursor: only names at or after the cursor's topic.
    got = pages(shared_target, [], 3, (b, 1))
    assert got == [[(b, [1]), (c, [0])]]


def test_describe_topic_partitions_errors(shared_target, topics):
    a, b, _ = topics
    [t], _ = dtp(shared_target, ["no-such-topic-dtp"], 10)
    assert (t["name"], t["error"], t["partitions"]) == ("no-such-topic-dtp",
                                                        UNKNOWN_TOPIC_OR_PARTITION, [])
    # The cursor's topic must be among the named ones, and its partition not negative.
    got, _ = dtp(shared_target, [a], 10, (b, 0))
    assert [(t["name"], t["error"]) for t in got] == [(a, INVALID_REQUEST)]
    got, _ = dtp(shared_target, [a], 10, (a, -1))
    assert [(t["name"], t["error"]) for t in got] == [(a, INVALID_REQUEST)]


def test_kafka_topics_describe_uses_describe_topic_partitions(shared_target, topics):
    """The AdminClient 4.x describes topics with DescribeTopicPartitions when the broker offers
    it (and pages with --partition-size-limit-per-response)."""
    a, b, c = topics
    out = kafka_tool("kafka-topics", shared_target, "--describe", "--topic", f"{a[:-2]}.*",
                     "--partition-size-limit-per-response", 1).stdout
    parts = re.findall(r"Topic: (\S+)\tPartition: (\d+)\tLeader: 1\tReplicas: 1\tIsr: 1", out)
    assert sorted(parts) == [(a, "0"), (a, "1"), (a, "2"), (b, "0"), (b, "1"), (c, "0")], out
    assert "Elr: \tLastKnownElr: " in out or "Elr: N/A" in out or "Elr:" in out, out


# --- ListOffsets v8-v10 ------------------------------------------------------------------------

def list_offsets(cid, version, topic, timestamps):
    parts = [i32(p) + i32(-1) + i64(ts) + uvarint(0) for p, ts in timestamps]
    body = (i32(-1) + i8(0) + carray([compact_string(topic) + carray(parts) + uvarint(0)]))
    if version >= 10:
        body += i32(30000)  # timeout_ms
    return wire.header_v2(2, version, cid) + body + uvarint(0)


def read_list_offsets(r):
    r.skip_tags()
    r.i32()

    def part(r):
        p = (r.i32(), r.i16(), r.i64(), r.i64(), r.i32())  # index, error, ts, offset, epoch
        r.skip_tags()
        return p

    def topic(r):
        t = (cnstring(r), r.compact_array(part))
        r.skip_tags()
        return t
    [(_, parts)] = r.compact_array(topic)
    r.skip_tags()
    return parts


@pytest.fixture(scope="module")
def trimmed(module_target):
    """A topic of 10 records whose first 4 were deleted: log start offset 4, end 10."""
    topic = "lo-tiered-" + uuid.uuid4().hex[:6]
    create_topic(module_target, topic)
    produce_all(module_target, topic, [b"v%d" % i for i in range(10)])
    a = admin(module_target)
    [f] = a.delete_records([TopicPartition(topic, 0, 4)]).values()
    assert f.result(TIMEOUT).low_watermark == 4
    return topic


@pytest.mark.parametrize("version", [8, 9, 10])
def test_list_offsets_tiered_timestamps(shared_target, trimmed, version):
    asks = [(0, -2), (0, -1), (0, -4)] + ([(0, -5)] if version >= 9 else [])
    # The same partition twice in one request is refused, so ask one at a time.
    got = {}
    with wire.connect(shared_target) as s:
        for cid, (p, ts) in enumerate(asks, start=1):
            [(index, error, t, offset, epoch)] = read_list_offsets(
                wire.request(s, list_offsets(cid, version, trimmed, [(p, ts)]), cid))
            assert (index, error) == (0, 0), f"timestamp {ts}: error {error}"
            got[ts] = (t, offset, epoch)
    assert got[-2][:2] == (-1, 4)
    assert got[-1][:2] == (-1, 10)
    # No tiered storage: the local log is the whole log.
    assert got[-4] == got[-2]
    if version >= 9:
        # Nothing tiered: offset -1 and leader epoch -1 (UnifiedLog.fetchOffsetByTimestamp).
        assert got[-5] == (-1, -1, -1)


def test_list_offsets_timestamps_a_version_does_not_know(shared_target, trimmed):
    """-4 needs v8, -5 v9 and -6 (earliest pending upload) v11: below, UNSUPPORTED_VERSION."""
    with wire.connect(shared_target) as s:
        for cid, (version, ts) in enumerate([(7, -4), (8, -5), (10, -6), (10, -7)], start=1):
            [(_, error, t, offset, _)] = read_list_offsets(
                wire.request(s, list_offsets(cid, version, trimmed, [(0, ts)]), cid))
            assert (error, t, offset) == (UNSUPPORTED_VERSION, -1, -1), (version, ts)


def test_kafka_get_offsets_earliest_local_and_latest_tiered(shared_target, trimmed):
    out = {}
    for t in ("-4", "-5"):
        res = kafka_tool("kafka-get-offsets", shared_target, "--topic", trimmed, "--time", t)
        out[t] = res.stdout.strip()
    assert out["-4"] == f"{trimmed}:0:4", out
    # Nothing in remote storage: the broker answers offset -1, which GetOffsetShell leaves out.
    assert out["-5"] == "", out


# --- DescribeCluster v2 ------------------------------------------------------------------------

def test_describe_cluster_v2(shared_target):
    for include_fenced in (0, 1):
        req = wire.header_v2(60, 2, 3) + i8(0) + i8(1) + i8(include_fenced) + uvarint(0)
        with wire.connect(shared_target) as s:
            r = wire.request(s, req, 3)
        r.skip_tags()
        r.i32()
        error, message, endpoint_type = r.i16(), cnstring(r), r.i8()
        cluster_id, controller = cnstring(r), r.i32()

        def b(r):
            x = (r.i32(), cnstring(r), r.i32(), cnstring(r), r.i8())
            r.skip_tags()
            return x
        brokers = r.compact_array(b)
        r.i32()
        r.skip_tags()
        assert r.done(), "trailing bytes in the DescribeCluster v2 response"
        assert (error, message, endpoint_type) == (0, None, 1)
        assert cluster_id and controller == 1
        assert [(n, p, fenced) for n, _, p, _, fenced in brokers] == [(1, shared_target.port, 0)]


# --- Produce v12 and v13 --------------------------------------------------------------------

def test_produce_v12(shared_target, topic_name):
    """v12 has v11's layout; without transactions it means what v11 means."""
    create_topic(shared_target, topic_name)
    with wire.connect(shared_target) as s:
        for cid, values in enumerate([[b"a", b"b"], [b"c"]], start=1):
            r = wire.produce(s, cid, topic_name, 0, wire.record_batch(values), version=12)
            [p] = r["topics"][topic_name]
            assert (p["index"], p["error"], p["base_offset"]) == (0, 0, 0 if cid == 1 else 2), p
    # The Java producer 4.x uses the broker's newest Produce version for plain records.
    kafka_tool("kafka-console-producer", shared_target, "--topic", topic_name,
               input="d\ne\n")
    got = [m.value() for m in consume_range(shared_target, topic_name, end=5)]
    assert got == [b"a", b"b", b"c", b"d", b"e"]


def test_produce_v13_names_topics_by_id(shared_target, topic_name):
    """v13 (KIP-516) names the topic by id, in the request and in the response; an id that
    names no topic gets UNKNOWN_TOPIC_ID and writes nothing. The Java producer 4.x sends v13."""
    create_topic(shared_target, topic_name)
    tid = topic_id(shared_target, topic_name)
    with wire.connect(shared_target) as s:
        r = wire.produce(s, 1, tid, 0, wire.record_batch([b"a", b"b"]), version=13)
        assert list(r["topics"]) == [tid]
        [p] = r["topics"][tid]
        assert (p["index"], p["error"], p["base_offset"]) == (0, 0, 0), p
        unknown = uuid.uuid4()
        r = wire.produce(s, 2, unknown, 0, wire.record_batch([b"x"]), version=13)
        [p] = r["topics"][unknown]
        assert (p["error"], p["base_offset"]) == (UNKNOWN_TOPIC_ID, -1), p
    kafka_tool("kafka-console-producer", shared_target, "--topic", topic_name, input="c\n")
    got = [m.value() for m in consume_range(shared_target, topic_name, end=3)]
    assert got == [b"a", b"b", b"c"]
    if TARGET == "gregor":
        with urllib.request.urlopen(
                f"http://127.0.0.1:{shared_target.admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert re.search(r'^gregor_produce_requests_total\{version="13"\} [1-9]', text, re.M), \
            "the Java producer did not use Produce v13"
