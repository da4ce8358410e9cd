"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat and ConsumerGroupDescribe.

- Java (kafka-clients 4.x) with group.protocol=consumer against group.protocol=classic in one
  JVM (ConsumerProtocolCheck): 4 consumers over 12 partitions, one killed (closed without
  leaving) and replaced, then a rolling restart of all 4; the paused partitions and the total
  pause time of both protocols are printed and reported as measurements.
- librdkafka (confluent-kafka) with group.protocol=consumer: two consumers split the
  partitions, read everything once and commit; the AdminClient describes the group, and
  kafka-consumer-groups.sh --describe/--list shows it beside a classic group.
- franz-go with kgo.ServerSideBalancer (proto-tests/go/franz848): two clients split the
  partitions with the server-side range assignor and read everything once.
- On the wire: a heartbeat with a stale member epoch gets FENCED_MEMBER_EPOCH, an unknown
  server assignor UNSUPPORTED_ASSIGNOR, a bad first heartbeat INVALID_REQUEST; OffsetCommit
  with another epoch STALE_MEMBER_EPOCH; ListGroups reports the group as a consumer group.
- The group survives a broker restart without a rebalance: members keep their epochs and
  their assignments (the records in __consumer_offsets).

The broker runs with group.consumer.session.timeout.ms=6000 so that a killed member's
partitions come back in the time the classic members' session.timeout.ms=6000 gives.
"""
import re
import time
import uuid

import pytest

import json
import subprocess
from pathlib import Path

import wire
from javatools import assert_section, java_main, kafka_tool
from targets import new_target

SESSION_MS = 6000


@pytest.fixture(scope="module")
def kip848_broker(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker"),
                   {"group.initial.rebalance.delay.ms": 0,
                    "group.consumer.session.timeout.ms": SESSION_MS,
                    "group.consumer.min.session.timeout.ms": SESSION_MS,
                    "group.consumer.migration.policy": "disabled",
                    "offsets.topic.num.partitions": 3}).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


# --- ConsumerGroupHeartbeat / ConsumerGroupDescribe / OffsetCommit on the wire ------------------

def cstr(s):
    return wire.uvarint(0) if s is None else wire.compact_string(s)


def heartbeat_v1(cid, group, member_id, epoch, topics=None, instance_id=None,
                 rebalance_ms=-1, assignor=None, owned=None, regex=None):
    body = (cstr(group) + cstr(member_id) + wire.i32(epoch) + cstr(instance_id) + cstr(None)
            + wire.i32(rebalance_ms))
    if topics is None:
        body += wire.uvarint(0)
    else:
        body += wire.uvarint(len(topics) + 1) + b"".join(cstr(t) for t in topics)
    body += cstr(regex) + cstr(assignor)
    if owned is None:
        body += wire.uvarint(0)
    else:
        body += wire.uvarint(len(owned) + 1)
        for topic_id, parts in owned.items():
            body += (topic_id + wire.uvarint(len(parts) + 1) + b"".join(wire.i32(p) for p in parts)
                     + wire.uvarint(0))
    return wire.header_v2(68, 1, cid) + body + wire.uvarint(0)


def read_cstr(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def read_heartbeat(r):
    r.skip_tags()  # response header v1
    r.i32()
    out = {"error": r.i16(), "message": read_cstr(r), "member_id": read_cstr(r),
           "epoch": r.i32(), "interval": r.i32(), "assignment": None}
    if r.i8() >= 0:
        def tp(r):
            t = r.take(16)
            parts = r.compact_array(lambda r: r.i32())
            r.skip_tags()
            return t, sorted(parts)
        out["assignment"] = dict(r.compact_array(tp))
        r.skip_tags()
    r.skip_tags()
    return out


def describe_v0(cid, group):
    return (wire.header_v2(69, 0, cid) + wire.uvarint(2) + cstr(group) + wire.i8(0)
            + wire.uvarint(0))


def read_describe(r):
    r.skip_tags()
    r.i32()

    def assignment(r):
        def tp(r):
            t = r.take(16)
            name = read_cstr(r)
            parts = r.compact_array(lambda r: r.i32())
            r.skip_tags()
            return name, sorted(parts)
        a = dict(r.compact_array(tp))
        r.skip_tags()
        return a

    def member(r):
        m = {"member_id": read_cstr(r), "instance_id": read_cstr(r), "rack_id": read_cstr(r),
             "epoch": r.i32(), "client_id": read_cstr(r), "client_host": read_cstr(r),
             "topics": r.compact_array(read_cstr), "regex": read_cstr(r),
             "assignment": assignment(r), "target": assignment(r)}
        r.skip_tags()
        return m

    def group(r):
        g = {"error": r.i16(), "message": read_cstr(r), "group_id": read_cstr(r),
             "state": read_cstr(r), "group_epoch": r.i32(), "assignment_epoch": r.i32(),
             "assignor": read_cstr(r), "members": r.compact_array(member)}
        r.i32()
        r.skip_tags()
        return g
    groups = r.compact_array(group)
    r.skip_tags()
    return groups[0]


def offset_commit_v9(cid, group, member_id, epoch, topic, partition, offset):
    part = wire.i32(partition) + wire.i64(offset) + wire.i32(-1) + cstr("") + wire.uvarint(0)
    topics = wire.uvarint(2) + cstr(topic) + wire.uvarint(2) + part + wire.uvarint(0)
    return (wire.header_v2(8, 9, cid) + cstr(group) + wire.i32(epoch) + cstr(member_id)
            + cstr(None) + topics + wire.uvarint(0))


def read_offset_commit(r):
    r.skip_tags()
    r.i32()

    def part(r):
        p = (r.i32(), r.i16())
        r.skip_tags()
        return p

    def topic(r):
        name = read_cstr(r)
        ps = r.compact_array(part)
        r.skip_tags()
        return name, ps
    topics = r.compact_array(topic)
    r.skip_tags()
    return [e for _, ps in topics for _, e in ps]


class Conn:
    def __init__(self, broker):
        self.sock = wire.connect(broker, timeout=20)
        self.cid = 0

    def call(self, encode, decode, *args, **kw):
        self.cid += 1
        r = wire.request(self.sock, encode(self.cid, *args, **kw), self.cid)
        out = decode(r)
        assert r.done(), f"trailing bytes in the response to {decode.__name__}"
        return out

    def hb(self, group, member_id, epoch, **kw):
        return self.call(heartbeat_v1, read_heartbeat, group, member_id, epoch, **kw)

    def close(self):
        self.sock.close()


FENCED_MEMBER_EPOCH = 110
UNKNOWN_MEMBER_ID = 25
UNSUPPORTED_ASSIGNOR = 112
INVALID_REQUEST = 42
STALE_MEMBER_EPOCH = 113
UNRELEASED_INSTANCE_ID = 111
COORDINATOR_LOAD_IN_PROGRESS = 14
NOT_COORDINATOR = 16


def join(conn, group, topics, timeout=30, **kw):
    """A first heartbeat (epoch 0), retried while the coordinator is loading."""
    member = str(uuid.uuid4())
    deadline = time.time() + timeout
    while True:
        # FindCoordinator first, as clients do (it creates __consumer_offsets).
        conn.call(wire.find_coordinator_v2, wire.read_find_coordinator_v2, group)
        r = conn.hb(group, member, 0, topics=topics, rebalance_ms=30000, owned={}, **kw)
        if r["error"] not in (COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR) or time.time() > deadline:
            return r
        time.sleep(0.2)


def create_topic(broker, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def reconcile(conn, group, members, rounds=10):
    """Heartbeats every member, acknowledging what it was given, until all are stable."""
    state = {m: (r["epoch"], r["assignment"] or {}) for m, r in members.items()}
    for _ in range(rounds):
        for m in list(state):
            epoch, owned = state[m]
            r = conn.hb(group, m, epoch, owned=owned)
            assert r["error"] == 0, r
            state[m] = (r["epoch"], r["assignment"] if r["assignment"] is not None else owned)
        d = conn.call(describe_v0, read_describe, group)
        if d["state"] == "Stable":
            return state, d
    raise AssertionError(f"group never stable: {d}")


def test_wire_errors_and_fencing(kip848_broker, topic_name):
    create_topic(kip848_broker, topic_name, 4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = Conn(kip848_broker)
    try:
        bad = c.hb(group, str(uuid.uuid4()), 0, topics=[topic_name], rebalance_ms=30000, owned={},
                   assignor="sticky")
        assert bad["error"] == UNSUPPORTED_ASSIGNOR, bad
        bad = c.hb(group, str(uuid.uuid4()), 0, topics=[topic_name], owned={})
        assert bad["error"] == INVALID_REQUEST, bad  # no rebalance timeout in a first heartbeat
        bad = c.hb(group, "", 0, topics=[topic_name], rebalance_ms=30000, owned={})
        assert bad["error"] == INVALID_REQUEST, bad  # v1: the client makes its member id

        a = join(c, group, [topic_name], assignor="range")
        assert a["error"] == 0 and a["epoch"] > 0, a
        assert a["interval"] == 5000
        assert sum(len(p) for p in a["assignment"].values()) == 4
        b = join(c, group, [topic_name])
        assert b["error"] == 0, b
        state, d = reconcile(c, group, {a["member_id"]: a, b["member_id"]: b})
        # b's subscription bumped the group epoch (Kafka 4.3 may answer b's join in the old
        # assignment epoch and compute the new target assignment a moment later).
        e = d["group_epoch"]
        assert e > a["epoch"] and d["assignment_epoch"] == e and d["assignor"] == "range", d
        # range: the first member id in order gets partitions 0-1.
        by_id = sorted(state)
        assert [m["assignment"] for m in sorted(d["members"], key=lambda m: m["member_id"])] == \
            [{topic_name: [0, 1]}, {topic_name: [2, 3]}]

        epoch_a, owned_a = state[a["member_id"]]
        _, owned_b = state[b["member_id"]]
        # The previous epoch passes only with a subset of the current assignment (the answer
        # that bumped the epoch may have been lost); with other partitions it is fenced.
        assert c.hb(group, a["member_id"], epoch_a - 1, owned=owned_a)["error"] == 0
        stale = c.hb(group, a["member_id"], epoch_a - 1, owned=owned_b)
        assert stale["error"] == FENCED_MEMBER_EPOCH, stale
        ahead = c.hb(group, by_id[1], epoch_a + 5, owned={})
        assert ahead["error"] == FENCED_MEMBER_EPOCH, ahead
        unknown = c.hb(group, str(uuid.uuid4()), 1, owned={})
        assert unknown["error"] == UNKNOWN_MEMBER_ID, unknown

        # OffsetCommit v9 checks the member epoch.
        m, (epoch, owned) = next(iter(state.items()))
        assert c.call(offset_commit_v9, read_offset_commit, group, m, epoch + 1, topic_name, 0,
                      5) == [STALE_MEMBER_EPOCH]
        assert c.call(offset_commit_v9, read_offset_commit, group, m, epoch, topic_name, 0,
                      5) == [0]

        # Leaving (epoch -1) bumps the group epoch; the other member gets everything.
        left = c.hb(group, a["member_id"], -1)
        assert left["error"] == 0 and left["epoch"] == -1, left
        rest = {b["member_id"]: {"epoch": state[b["member_id"]][0],
                                 "assignment": state[b["member_id"]][1]}}
        state, d = reconcile(c, group, rest)
        assert d["group_epoch"] > e and len(d["members"]) == 1
        e = d["group_epoch"]
        assert d["members"][0]["assignment"] == {topic_name: [0, 1, 2, 3]}

        # Partitions added to the subscribed topic bump the group epoch and get assigned.
        from confluent_kafka.admin import AdminClient, NewPartitions
        admin = AdminClient({"bootstrap.servers": kip848_broker.bootstrap})
        admin.create_partitions([NewPartitions(topic_name, 6)])[topic_name].result(30)
        rest = {m: {"epoch": ep, "assignment": o} for m, (ep, o) in state.items()}
        deadline = time.time() + 30
        while d["members"][0]["assignment"] != {topic_name: [0, 1, 2, 3, 4, 5]}:
            assert time.time() < deadline, d
            time.sleep(0.2)
            state2, d = reconcile(c, group, rest)
            rest = {m: {"epoch": ep, "assignment": o} for m, (ep, o) in state2.items()}
        assert d["group_epoch"] > e
    finally:
        c.close()


def test_static_member_leaves_and_returns(kip848_broker, topic_name):
    create_topic(kip848_broker, topic_name, 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = Conn(kip848_broker)
    try:
        a = join(c, group, [topic_name], instance_id="i-1")
        assert a["error"] == 0, a
        other = join(c, group, [topic_name], instance_id="i-1")
        assert other["error"] == UNRELEASED_INSTANCE_ID, other
        gone = c.hb(group, a["member_id"], -2, instance_id="i-1")
        assert gone["error"] == 0 and gone["epoch"] == -2, gone
        back = join(c, group, [topic_name], instance_id="i-1")
        assert back["error"] == 0 and back["epoch"] >= a["epoch"], back
        assert back["assignment"] == a["assignment"], "the instance got its partitions back"
        d = c.call(describe_v0, read_describe, group)
        assert [m["instance_id"] for m in d["members"]] == ["i-1"]
        assert d["members"][0]["assignment"] == d["members"][0]["target"]
    finally:
        c.close()


def test_group_survives_restart_without_rebalance(tmp_path, topic_name):
    b = new_target(tmp_path, {"group.consumer.session.timeout.ms": 45000,
                              "offsets.topic.num.partitions": 3}).start()
    try:
        create_topic(b, topic_name, 6)
        group = f"g-{uuid.uuid4().hex[:8]}"
        c = Conn(b)
        members = {}
        for _ in range(3):
            r = join(c, group, [topic_name])
            members[r["member_id"]] = r
        state, before = reconcile(c, group, members)
        c.close()
        b.stop()
        b.start()
        c = Conn(b)
        deadline = time.time() + 30
        while True:
            c.call(wire.find_coordinator_v2, wire.read_find_coordinator_v2, group)
            m, (epoch, owned) = next(iter(state.items()))
            r = c.hb(group, m, epoch, owned=owned)
            if r["error"] not in (COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR) or time.time() > deadline:
                break
            time.sleep(0.2)
        for m, (epoch, owned) in state.items():
            r = c.hb(group, m, epoch, owned=owned)
            assert r["error"] == 0 and r["epoch"] == epoch, (m, r)
        after = c.call(describe_v0, read_describe, group)
        assert after["state"] == "Stable"
        assert after["group_epoch"] == before["group_epoch"]
        key = lambda m: m["member_id"]
        assert [(m["member_id"], m["epoch"], m["assignment"]) for m in sorted(after["members"], key=key)] == \
            [(m["member_id"], m["epoch"], m["assignment"]) for m in sorted(before["members"], key=key)]
        c.close()
    finally:
        b.stop()


# --- librdkafka ---------------------------------------------------------------------------------

def test_librdkafka_consumer_protocol(kip848_broker, topic_name):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient
    create_topic(kip848_broker, topic_name, 4)
    group = f"rdk-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": kip848_broker.bootstrap, "group.id": group,
            "group.protocol": "consumer", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    consumers = [Consumer(conf), Consumer(conf)]
    for cons in consumers:
        cons.subscribe([topic_name])
    got = {}
    try:
        # The records go out once the two members share the partitions: nothing is committed
        # here, so a partition moving after a read would rightly be read again.
        deadline = time.time() + 60
        assigned = [[], []]
        while not all(len(a) == 2 for a in assigned):
            assert time.time() < deadline, f"assignments {assigned}"
            for cons in consumers:
                msg = cons.poll(0.2)
                assert msg is None or msg.error(), "a record before any was produced"
            assigned = [sorted(tp.partition for tp in cons.assignment()) for cons in consumers]
        p = Producer({"bootstrap.servers": kip848_broker.bootstrap})
        sent = set()
        for i in range(40):
            p.produce(topic_name, value=f"v{i}".encode(), partition=i % 4)
            sent.add(f"v{i}")
        assert p.flush(30) == 0
        deadline = time.time() + 60
        while time.time() < deadline and set(got) != sent:
            for i, cons in enumerate(consumers):
                msg = cons.poll(0.2)
                if msg is not None and not msg.error():
                    got.setdefault(msg.value().decode(), []).append(i)
            assigned = [sorted(tp.partition for tp in cons.assignment()) for cons in consumers]
        assert set(got) == sent, f"read {len(got)} of {len(sent)}"
        assert all(len(v) == 1 for v in got.values()), "a record was read twice"
        assert sorted(sum(assigned, [])) == [0, 1, 2, 3], assigned
        for cons in consumers:
            cons.commit(asynchronous=False)
        admin = AdminClient({"bootstrap.servers": kip848_broker.bootstrap})
        d = admin.describe_consumer_groups([group])[group].result(30)
        assert str(d.type).endswith("CONSUMER"), d.type
        assert len(d.members) == 2
        listed = admin.list_consumer_groups().result(30)
        assert any(g.group_id == group for g in listed.valid)

        # The CLI shows both kinds: this consumer group and a classic one.
        classic = f"classic-{uuid.uuid4().hex[:8]}"
        cc = Consumer({**conf, "group.id": classic, "group.protocol": "classic"})
        cc.subscribe([topic_name])
        try:
            deadline = time.time() + 30
            while not cc.assignment() and time.time() < deadline:
                cc.poll(0.2)
                for cons in consumers:
                    cons.poll(0)
            out = kafka_tool("kafka-consumer-groups", kip848_broker, "--describe", "--group", group,
                             "--group", classic, "--members").stdout
            rows = [line.split() for line in out.splitlines() if line.startswith((group, classic))]
            assert sorted(r[0] for r in rows if r[0] == group) == [group, group], out
            assert [r[0] for r in rows if r[0] == classic] == [classic], out
            out = kafka_tool("kafka-consumer-groups", kip848_broker, "--list", "--type").stdout
            kinds = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:] if line.strip()}
            assert kinds.get(group, "").lower() == "consumer", out
            assert kinds.get(classic, "").lower() == "classic", out
        finally:
            cc.close()
    finally:
        for cons in consumers:
            cons.close()


FRANZ_848 = Path(__file__).resolve().parent.parent / ".deps" / "bin" / "franz-848"


def test_franz_go_server_side_balancer(kip848_broker, topic_name):
    from confluent_kafka import Producer
    if not FRANZ_848.exists():
        pytest.fail(f"{FRANZ_848} missing: run scripts/install-test-deps.sh")
    create_topic(kip848_broker, topic_name, 4)
    p = Producer({"bootstrap.servers": kip848_broker.bootstrap})
    for i in range(40):
        p.produce(topic_name, value=f"v{i}".encode(), partition=i % 4)
    assert p.flush(30) == 0
    res = subprocess.run([str(FRANZ_848), "-brokers", kip848_broker.bootstrap, "-group",
                          f"franz-{uuid.uuid4().hex[:8]}", "-topic", topic_name, "-expect", "40"],
                         capture_output=True, text=True, timeout=120)
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["error"] == "", rep
    assert rep["records"] == 40 and rep["duplicates"] == 0, rep
    assert sorted(rep["assigned"]) == [[0, 1], [2, 3]], rep


# --- the Java client, rolling restarts ----------------------------------------------------------

def test_java_rolling_restart_pauses(kip848_broker, measurement):
    run = java_main("gregor.prototests.ConsumerProtocolCheck", kip848_broker.bootstrap,
                    f"kip848-{uuid.uuid4().hex[:8]}", timeout=400)
    for section in ("classic-rolling", "consumer-rolling"):
        assert_section(run, section)
    pauses = re.findall(r"^PAUSE .*$", run.stdout, re.M)
    for line in pauses:
        print(line)
        measurement("rolling restart, 4 consumers x 12 partitions: " + line)
    assert len(pauses) == 2, run.stdout
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


# --- regex subscriptions and the line between classic and consumer groups -----------------------

def test_regex_subscription_resolved_on_the_broker(kip848_broker):
    prefix = f"rx{uuid.uuid4().hex[:6]}"
    create_topic(kip848_broker, f"{prefix}-a", 2)
    create_topic(kip848_broker, f"{prefix}-b", 1)
    create_topic(kip848_broker, f"other{prefix}", 1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = Conn(kip848_broker)
    try:
        c.call(wire.find_coordinator_v2, wire.read_find_coordinator_v2, group)
        bad = c.hb(group, str(uuid.uuid4()), 0, regex="(", rebalance_ms=30000, owned={})
        assert bad["error"] == 128, bad  # INVALID_REGULAR_EXPRESSION
        a = join(c, group, None, regex=f"{prefix}-.*")
        assert a["error"] == 0, a
        state, d = reconcile(c, group, {a["member_id"]: a})
        assert d["members"][0]["assignment"] == {f"{prefix}-a": [0, 1], f"{prefix}-b": [0]}
        assert d["members"][0]["regex"] == f"{prefix}-.*"
        # A new matching topic joins the subscription: the group epoch moves (Kafka re-resolves
        # the regex asynchronously, at most every few seconds; Gregor at the next heartbeat).
        create_topic(kip848_broker, f"{prefix}-c", 1)
        epoch = d["group_epoch"]
        deadline = time.time() + 30
        while f"{prefix}-c" not in d["members"][0]["assignment"]:
            assert time.time() < deadline, d
            state, d = reconcile(c, group, {m: {"epoch": e, "assignment": o}
                                            for m, (e, o) in state.items()})
            time.sleep(0.2)
        assert d["group_epoch"] > epoch
    finally:
        c.close()


INCONSISTENT_GROUP_PROTOCOL = 23
GROUP_ID_NOT_FOUND = 69


def test_classic_and_consumer_groups_keep_apart(kip848_broker, topic_name):
    create_topic(kip848_broker, topic_name, 2)
    c = Conn(kip848_broker)
    try:
        # With group.consumer.migration.policy=disabled (Gregor converts no live group whatever
        # the policy), a classic member cannot join a live consumer group...
        group = f"g-{uuid.uuid4().hex[:8]}"
        assert join(c, group, [topic_name])["error"] == 0
        j = c.call(wire.join_group_v5, wire.read_join_group_v5, group, "")
        assert j["error"] == INCONSISTENT_GROUP_PROTOCOL and j["member_id"] == "", j
        # ...and a consumer protocol member cannot join a live classic group.
        classic = f"c-{uuid.uuid4().hex[:8]}"
        c.call(wire.find_coordinator_v2, wire.read_find_coordinator_v2, classic)
        j = c.call(wire.join_group_v5, wire.read_join_group_v5, classic, "")
        j = c.call(wire.join_group_v5, wire.read_join_group_v5, classic, j["member_id"])
        assert j["error"] == 0, j
        r = c.hb(classic, str(uuid.uuid4()), 0, topics=[topic_name], rebalance_ms=30000, owned={})
        assert r["error"] == GROUP_ID_NOT_FOUND, r
        assert r["message"] == (f"Cannot upgrade classic group {classic} to consumer group "
                                "because online upgrade is disabled."), r
    finally:
        c.close()
