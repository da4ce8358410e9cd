"""The classic group protocol on the wire, by hand (wire.py), for the answers clients only show
indirectly: FindCoordinator v2, JoinGroup v5, SyncGroup v3, Heartbeat v3, LeaveGroup v3,
OffsetCommit v7, OffsetFetch v5, DescribeGroups v4 and v6, with Kafka's error codes: the
KIP-394 two-step join, generations and the rebalance barrier (a JoinGroup held until every
member rejoined, a follower's SyncGroup held for the leader's), static members (KIP-345)
rejoining and fenced, group.max.size, unknown groups, and a prompt shutdown while a JoinGroup
waits.

Every answer asserted here is Kafka 4's (checked with PROTO_TESTS_TARGET=kafka). The broker
runs with group.initial.rebalance.delay.ms=0. A fresh Kafka answers NOT_COORDINATOR or
COORDINATOR_LOAD_IN_PROGRESS for a while after it created __consumer_offsets; wait_ready()
waits that out for each group used.
"""
import socket
import time
import uuid

import pytest

import wire
from clients import create_topic
from targets import make_target, new_target  # noqa: F401  (fixture)

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
GROUP_ID_NOT_FOUND = 69
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82
COORDINATOR_WAIT = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR)


class Conn:
    """One connection; call(encode, decode, *args) sends a request and decodes its answer."""

    def __init__(self, broker):
        self.sock = wire.connect(broker, timeout=20)
        self.cid = 0

    def send(self, encode, *args, **kw):
        self.cid += 1
        self.sock.sendall(wire.frame(encode(self.cid, *args, **kw)))
        return self.cid

    def receive(self, decode, cid):
        body = wire.recv_frame(self.sock)
        assert body is not None, "broker closed the connection instead of answering"
        r = wire.Reader(body)
        assert r.i32() == cid
        out = decode(r)
        assert r.done(), f"trailing bytes in the response to {decode.__name__}"
        return out

    def call(self, encode, decode, *args, **kw):
        return self.receive(decode, self.send(encode, *args, **kw))

    def close(self):
        self.sock.close()


def wait_ready(conn, group, timeout=30):
    """Until the coordinator of `group` answers (DescribeGroups without a coordinator error)."""
    deadline = time.monotonic() + timeout
    while True:
        fc = conn.call(wire.find_coordinator_v2, wire.read_find_coordinator_v2, group)
        if fc["error"] == NONE:
            [g] = conn.call(wire.describe_groups_v4, wire.read_describe_groups_v4, [group])
            if g["error"] not in COORDINATOR_WAIT:
                return fc
        assert time.monotonic() < deadline, f"no coordinator for {group}: {fc}"
        time.sleep(0.1)


def subscription(*topics):
    """ConsumerProtocolSubscription v0: the metadata a Java or librdkafka consumer sends (Kafka
    parses it, for the group's subscribed topics)."""
    return wire.i16(0) + wire.i32(len(topics)) + b"".join(map(wire.string, topics)) + wire.i32(-1)


META = subscription("some-topic")
RANGE = (("range", META),)


def join(conn, group, member_id="", **kw):
    kw.setdefault("protocols", RANGE)
    return conn.call(wire.join_group_v5, wire.read_join_group_v5, group, member_id, **kw)


def join_new_member(conn, group, **kw):
    """The two-step join of KIP-394: MEMBER_ID_REQUIRED, then again with the given id."""
    first = join(conn, group, **kw)
    assert first["error"] == MEMBER_ID_REQUIRED and first["member_id"], first
    assert first["generation"] == -1
    return first["member_id"], join(conn, group, first["member_id"], **kw)


def heartbeat(conn, group, generation, member_id, instance_id=None):
    return conn.call(wire.heartbeat_v3, wire.read_error_only, group, generation, member_id,
                     instance_id)


def sync(conn, group, generation, member_id, assignments=(), instance_id=None):
    return conn.call(wire.sync_group_v3, wire.read_sync_group_v3, group, generation, member_id,
                     assignments, instance_id)


def commit(conn, group, generation, member_id, offsets, instance_id=None):
    return conn.call(wire.offset_commit_v7, wire.read_offset_commit_v7, group, generation,
                     member_id, offsets, instance_id)


def fetch(conn, group, topics=None):
    return conn.call(wire.offset_fetch_v5, wire.read_offset_fetch_v5, group, topics)


def describe(conn, group):
    [g] = conn.call(wire.describe_groups_v4, wire.read_describe_groups_v4, [group])
    return g


def describe_v6(conn, group):
    """DescribeGroups v6 (flexible) of one group: (error, error message, group id, state)."""
    cid = conn.send(lambda c: wire.header_v2(15, 6, c) + wire.uvarint(2)
                    + wire.compact_string(group) + wire.i8(0) + wire.uvarint(0))
    body = wire.recv_frame(conn.sock)
    r = wire.Reader(body)
    assert r.i32() == cid
    r.skip_tags()
    r.i32()  # throttle_time_ms
    assert r.uvarint() == 2, "one group"
    error = r.i16()
    message, group_id, state = wire._cstring(r), wire._cstring(r), wire._cstring(r)
    return error, message, group_id, state


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker"),
                   {"group.initial.rebalance.delay.ms": 0}).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


@pytest.fixture
def broker(request, group_broker):
    request.node._gregor_brokers = [group_broker]
    return group_broker


@pytest.fixture
def conn(broker):
    c = Conn(broker)
    yield c
    c.close()


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_find_coordinator_v2(broker, conn):
    fc = wait_ready(conn, name("fc"))
    assert (fc["error"], fc["node_id"], fc["host"], fc["port"]) == (NONE, 1, "127.0.0.1", broker.port)


def test_unknown_group(broker, conn):
    group = name("nog")
    wait_ready(conn, group)
    assert heartbeat(conn, group, 1, "nobody") == UNKNOWN_MEMBER_ID
    assert sync(conn, group, 1, "nobody")["error"] == UNKNOWN_MEMBER_ID
    assert conn.call(wire.leave_group_v3, wire.read_leave_group_v3, group, [("nobody", None)]) \
        == (NONE, [("nobody", None, UNKNOWN_MEMBER_ID)])
    # DescribeGroups v4 answers Dead (v6 would say GROUP_ID_NOT_FOUND)
    g = describe(conn, group)
    assert (g["error"], g["state"], g["protocol_type"], g["protocol"], g["members"]) == \
        (NONE, "Dead", "", "", [])
    # v6 (flexible) says GROUP_ID_NOT_FOUND, with a message (KIP-1043); the CLI prints it
    assert describe_v6(conn, group) == (GROUP_ID_NOT_FOUND, f"Group {group} not found.", group, "Dead")
    # OffsetFetch: no offset (-1) for a named partition, nothing when none is named
    assert fetch(conn, group, {"some-topic": [0]}) == (NONE, {("some-topic", 0): (-1, "", NONE)})
    assert fetch(conn, group) == (NONE, {})


def test_join_sync_heartbeat_commit_leave(broker, conn, topic_name):
    create_topic(broker, topic_name, partitions=2)
    group = name("g")
    wait_ready(conn, group)

    # session timeouts outside [group.min.session.timeout.ms, group.max.session.timeout.ms]
    assert join(conn, group, session_ms=1000)["error"] == INVALID_SESSION_TIMEOUT
    assert join(conn, group, session_ms=3_600_000)["error"] == INVALID_SESSION_TIMEOUT

    # KIP-394: a new member is given an id and must join again with it
    m, j = join_new_member(conn, group)
    assert heartbeat(conn, group, -1, "unknown-" + m) == UNKNOWN_MEMBER_ID
    assert m.startswith("proto-tests-"), m  # the client id, a dash and a UUID
    assert (j["error"], j["generation"], j["protocol"], j["leader"], j["member_id"]) == \
        (NONE, 1, "range", m, m)
    assert j["members"] == [(m, None, META)]  # the leader gets every member's metadata
    assert heartbeat(conn, group, 1, m) == NONE  # waiting for the leader's SyncGroup is fine

    assert sync(conn, group, 2, m)["error"] == ILLEGAL_GENERATION
    assert sync(conn, group, 1, "unknown-" + m)["error"] == UNKNOWN_MEMBER_ID
    assert sync(conn, group, 1, m, [(m, b"assignment-of-m")]) == \
        {"error": NONE, "assignment": b"assignment-of-m"}

    assert heartbeat(conn, group, 1, m) == NONE
    assert heartbeat(conn, group, 2, m) == ILLEGAL_GENERATION
    assert heartbeat(conn, group, 1, "unknown-" + m) == UNKNOWN_MEMBER_ID

    assert commit(conn, group, 1, m, {topic_name: [(0, 5, "meta-5")]}) == {(topic_name, 0): NONE}
    assert commit(conn, group, 7, m, {topic_name: [(0, 6, None)]}) == \
        {(topic_name, 0): ILLEGAL_GENERATION}
    assert commit(conn, group, 1, "unknown-" + m, {topic_name: [(0, 6, None)]}) == \
        {(topic_name, 0): UNKNOWN_MEMBER_ID}
    # a simple (generation -1, no member) commit into a group with members
    assert commit(conn, group, -1, "", {topic_name: [(0, 6, None)]}) == \
        {(topic_name, 0): UNKNOWN_MEMBER_ID}
    assert commit(conn, group, 1, m, {topic_name + "-missing": [(0, 1, None)],
                                      topic_name: [(9, 1, None)]}) == \
        {(topic_name + "-missing", 0): UNKNOWN_TOPIC_OR_PARTITION,
         (topic_name, 9): UNKNOWN_TOPIC_OR_PARTITION}

    assert fetch(conn, group, {topic_name: [0, 1]}) == \
        (NONE, {(topic_name, 0): (5, "meta-5", NONE), (topic_name, 1): (-1, "", NONE)})
    assert fetch(conn, group) == (NONE, {(topic_name, 0): (5, "meta-5", NONE)})

    g = describe(conn, group)
    assert (g["error"], g["group"], g["state"], g["protocol_type"], g["protocol"]) == \
        (NONE, group, "Stable", "consumer", "range")
    assert g["members"] == [{"member_id": m, "instance_id": None, "client_id": "proto-tests",
                             "client_host": "/127.0.0.1", "metadata": META,
                             "assignment": b"assignment-of-m"}]

    # another protocol type, or no common protocol: refused, even before a member id
    assert join(conn, group, protocol_type="connect")["error"] == INCONSISTENT_GROUP_PROTOCOL
    assert join(conn, group, protocols=(("other", b""),))["error"] == INCONSISTENT_GROUP_PROTOCOL

    assert conn.call(wire.leave_group_v3, wire.read_leave_group_v3, group,
                     [(m, None), ("unknown-" + m, None)]) == \
        (NONE, [(m, None, NONE), ("unknown-" + m, None, UNKNOWN_MEMBER_ID)])
    assert heartbeat(conn, group, 1, m) == UNKNOWN_MEMBER_ID
    g = describe(conn, group)
    assert (g["state"], g["protocol_type"], g["protocol"], g["members"]) == \
        ("Empty", "consumer", "", [])
    # an empty group takes simple commits
    assert commit(conn, group, -1, "", {topic_name: [(1, 3, "simple")]}) == {(topic_name, 1): NONE}
    assert fetch(conn, group) == (NONE, {(topic_name, 0): (5, "meta-5", NONE),
                                         (topic_name, 1): (3, "simple", NONE)})


def test_rebalance_barrier(broker, conn, topic_name):
    """A second member's JoinGroup waits until the first rejoins; meanwhile the first one's
    Heartbeat and OffsetCommit say REBALANCE_IN_PROGRESS. A follower's SyncGroup waits for the
    leader's assignments."""
    create_topic(broker, topic_name)
    group = name("barrier")
    wait_ready(conn, group)
    m1, j = join_new_member(conn, group)
    assert (j["error"], j["generation"], j["leader"]) == (NONE, 1, m1)
    assert sync(conn, group, 1, m1, [(m1, b"m1-gen1")])["assignment"] == b"m1-gen1"

    other = Conn(broker)
    try:
        first = join(other, group)
        assert first["error"] == MEMBER_ID_REQUIRED
        m2 = first["member_id"]
        pending = other.send(wire.join_group_v5, group, m2, protocols=RANGE)  # held for m1

        deadline = time.monotonic() + 10
        while (err := heartbeat(conn, group, 1, m1)) == NONE:
            assert time.monotonic() < deadline, "no rebalance after a second member joined"
            time.sleep(0.1)
        assert err == REBALANCE_IN_PROGRESS
        # while the rebalance waits for members, they may still commit in the old generation
        # (what a consumer does before giving its partitions up)
        assert commit(conn, group, 1, m1, {topic_name: [(0, 1, None)]}) == {(topic_name, 0): NONE}
        other.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):  # still waiting for m1
            wire.recv_frame(other.sock)
        other.sock.settimeout(20)

        j1 = join(conn, group, m1)
        j2 = other.receive(wire.read_join_group_v5, pending)
        assert (j1["error"], j1["generation"], j1["leader"], j1["member_id"]) == (NONE, 2, m1, m1)
        assert sorted(mid for mid, _, _ in j1["members"]) == sorted([m1, m2])
        assert (j2["error"], j2["generation"], j2["leader"], j2["member_id"], j2["members"]) == \
            (NONE, 2, m1, m2, [])
        assert heartbeat(conn, group, 1, m1) == ILLEGAL_GENERATION
        # generation 2 is not complete before the leader's SyncGroup
        assert commit(conn, group, 2, m1, {topic_name: [(0, 2, None)]}) == \
            {(topic_name, 0): REBALANCE_IN_PROGRESS}
        assert commit(conn, group, 1, m1, {topic_name: [(0, 2, None)]}) == \
            {(topic_name, 0): ILLEGAL_GENERATION}

        pending = other.send(wire.sync_group_v3, group, 2, m2, ())  # held for the leader
        other.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            wire.recv_frame(other.sock)
        other.sock.settimeout(20)
        assert sync(conn, group, 2, m1, [(m1, b"m1-gen2"), (m2, b"m2-gen2")]) == \
            {"error": NONE, "assignment": b"m1-gen2"}
        assert other.receive(wire.read_sync_group_v3, pending) == \
            {"error": NONE, "assignment": b"m2-gen2"}
        assert heartbeat(conn, group, 2, m1) == NONE and heartbeat(other, group, 2, m2) == NONE
        assert describe(conn, group)["state"] == "Stable"
        assert commit(other, group, 2, m2, {topic_name: [(0, 3, None)]}) == {(topic_name, 0): NONE}
        assert fetch(conn, group, {topic_name: [0]}) == (NONE, {(topic_name, 0): (3, "", NONE)})
    finally:
        other.close()


def test_static_member_rejoin_and_fencing(broker, conn, topic_name):
    create_topic(broker, topic_name)
    group = name("static")
    wait_ready(conn, group)
    # a static member needs no second JoinGroup; its id starts with its instance id
    j = join(conn, group, instance_id="i1")
    s1 = j["member_id"]
    assert (j["error"], j["generation"], j["leader"]) == (NONE, 1, s1) and s1.startswith("i1-")
    assert j["members"] == [(s1, "i1", META)]
    assert sync(conn, group, 1, s1, [(s1, b"a1")], instance_id="i1")["assignment"] == b"a1"

    # the same instance joins again (a restart): a new member id, the same generation and, as
    # the old leader's id is what the response names, no assignment to compute
    j = join(conn, group, instance_id="i1")
    s2 = j["member_id"]
    assert (j["error"], j["generation"], j["protocol"], j["leader"], j["members"]) == \
        (NONE, 1, "range", s1, [])
    assert s2 != s1 and s2.startswith("i1-")
    assert sync(conn, group, 1, s2, instance_id="i1") == {"error": NONE, "assignment": b"a1"}
    assert heartbeat(conn, group, 1, s2, "i1") == NONE

    # the old member id is fenced
    assert heartbeat(conn, group, 1, s1, "i1") == FENCED_INSTANCE_ID
    assert commit(conn, group, 1, s1, {topic_name: [(0, 1, None)]}, instance_id="i1") == \
        {(topic_name, 0): FENCED_INSTANCE_ID}
    assert conn.call(wire.leave_group_v3, wire.read_leave_group_v3, group, [(s1, "i1")]) == \
        (NONE, [(s1, "i1", FENCED_INSTANCE_ID)])
    g = describe(conn, group)
    assert g["state"] == "Stable"
    assert [(x["member_id"], x["instance_id"], x["assignment"]) for x in g["members"]] == \
        [(s2, "i1", b"a1")]

    # LeaveGroup by instance id alone (what an admin's removeMembersFromConsumerGroup sends)
    assert conn.call(wire.leave_group_v3, wire.read_leave_group_v3, group, [("", "i1")]) == \
        (NONE, [("", "i1", NONE)])
    assert describe(conn, group)["state"] == "Empty"


def test_group_max_size(make_target):
    broker = make_target({"group.initial.rebalance.delay.ms": 0, "group.max.size": 1})
    group = name("max")
    c1, c2 = Conn(broker), Conn(broker)
    try:
        wait_ready(c1, group)
        m1, j = join_new_member(c1, group)
        assert j["error"] == NONE
        # a full group refuses a new member at once, without giving it a member id first
        j2 = join(c2, group)
        assert (j2["error"], j2["member_id"]) == (GROUP_MAX_SIZE_REACHED, ""), j2
        assert [x["member_id"] for x in describe(c1, group)["members"]] == [m1]
    finally:
        c1.close()
        c2.close()


def test_shutdown_with_a_join_waiting(make_target):
    """SIGTERM while a JoinGroup waits for another member to rejoin (rebalance timeout 60 s):
    the broker still stops promptly, as Kafka does (in about a second)."""
    broker = make_target({"group.initial.rebalance.delay.ms": 0})
    group = name("shutdown")
    c1, c2 = Conn(broker), Conn(broker)
    try:
        wait_ready(c1, group)
        m1, j = join_new_member(c1, group, rebalance_ms=60000)
        assert sync(c1, group, 1, m1, [(m1, b"a")])["error"] == NONE
        first = join(c2, group, rebalance_ms=60000)
        c2.send(wire.join_group_v5, group, first["member_id"], protocols=RANGE,
                rebalance_ms=60000)
        deadline = time.monotonic() + 10
        while heartbeat(c1, group, 1, m1) != REBALANCE_IN_PROGRESS:
            assert time.monotonic() < deadline, "no rebalance after a second member joined"
            time.sleep(0.1)
        t0 = time.monotonic()
        broker.stop(timeout=30)
        took = time.monotonic() - t0
        assert took < 5, f"the broker took {took:.1f}s to stop with a JoinGroup waiting"
    finally:
        c1.close()
        c2.close()
