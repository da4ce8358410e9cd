"""Share groups (KIP-932) on a three-broker cluster: the share-partition leader (the leader of
the user partition) and the share coordinator (the leader of the `__share_group_state`
partition holding that share-partition's state) are different brokers, which talk
ReadShareGroupState / WriteShareGroupState / InitializeShareGroupState over the network.

The cluster runs with share.coordinator.state.topic.num.partitions=1 (so every share-partition's
state is in partition 0 and the test knows its coordinator), broker.session.timeout.ms=3000 and
replica.lag.time.max.ms=5000 (a killed broker leaves the ISRs quickly).

- test_share_state_rpcs: the inter-broker APIs on the wire, as another broker sends them: a
  broker that is not the coordinator answers NOT_COORDINATOR; the coordinator reads "no state"
  (start offset -1), stores a write and reads it back, fences a write or read from an older
  leader epoch (FENCED_LEADER_EPOCH) and an older state epoch (FENCED_STATE_EPOCH), answers
  ReadShareGroupStateSummary, deletes the state (DeleteShareGroupState), and refuses an unknown
  topic id (UNKNOWN_TOPIC_OR_PARTITION). ApiVersions lists the five at v0.
- test_share_consumers_through_failover[leader]: the Java KafkaShareConsumer (ShareFailoverCheck,
  2 consumers in one JVM, explicit ACCEPT + commitSync) consumes 1500 records of a partition led
  by a broker that is not the share coordinator; after a third of them are accepted, the
  partition's leader is killed with SIGKILL. The consumers go on with the new leader (the
  third broker, neither the old leader nor the coordinator), which reads the share-partition's
  state from the coordinator over the network. Every record is accepted in the end
  (nothing lost: each was delivered, and accepted with the broker's confirmation or with its
  acknowledgement in flight at the kill; the share coordinator's start offset ends at the end of
  the partition), and no record whose ACCEPT the broker confirmed is delivered again (records
  acquired but not confirmed when the leader died may be). The failover pause (the longest
  time without a confirmed ACCEPT, from the kill on) is printed as `SHARE_FAILOVER_GAP`.
- test_share_consumers_through_failover[coordinator]: the same, but the share coordinator is
  killed (it may be the controller too). The state partition gets a new leader, which replays
  it; the share-partition leader's reads and writes meanwhile fail (connection errors,
  NOT_COORDINATOR) and are retried against the newest metadata until they reach it.
"""
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from clients import LOG
from cluster import make_cluster, wait_until  # noqa: F401  (fixture)
from javatools import JVM_OPTS, _java, java_classpath
from targets import TARGET

pytestmark = pytest.mark.skipif(TARGET != "gregor", reason="a Gregor cluster (cluster.py)")

STATE_TOPIC = "__share_group_state"
INITIALIZE, READ, WRITE, DELETE, SUMMARY = 83, 84, 85, 86, 87
NOT_COORDINATOR, UNKNOWN_TOPIC_OR_PARTITION = 16, 3
FENCED_LEADER_EPOCH, FENCED_STATE_EPOCH = 74, 124

CONFIG = {
    "share.coordinator.state.topic.num.partitions": 1,
    "broker.session.timeout.ms": 3000,
    "replica.lag.time.max.ms": 5000,
    "group.initial.rebalance.delay.ms": 0,
}
RECORDS = 1500


@pytest.fixture
def cluster(make_cluster):
    return make_cluster(3, CONFIG)


def topic_id(c, topic):
    a = AdminClient({"bootstrap.servers": c.bootstrap, "logger": LOG})
    desc = a.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    tid = desc.topic_id
    hi = tid.get_most_significant_bits() & (2**64 - 1)
    lo = tid.get_least_significant_bits() & (2**64 - 1)
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


# --- the share state RPCs on the wire ----------------------------------------------------------

def _batches(batches):
    out = wire.uvarint(len(batches) + 1)
    for first, last, state, count in batches:
        out += wire.i64(first) + wire.i64(last) + wire.i8(state) + wire.i16(count) + wire.uvarint(0)
    return out


def read_state_req(cid, group, tid, leader_epoch):
    body = wire.compact_string(group) + wire.uvarint(2) + tid + wire.uvarint(2)
    body += wire.i32(0) + wire.i32(leader_epoch) + wire.uvarint(0)  # partition 0
    body += wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(READ, 0, cid) + body


def write_state_req(cid, group, tid, state_epoch, leader_epoch, start, batches):
    body = wire.compact_string(group) + wire.uvarint(2) + tid + wire.uvarint(2)
    body += wire.i32(0) + wire.i32(state_epoch) + wire.i32(leader_epoch) + wire.i64(start)
    body += _batches(batches) + wire.uvarint(0)
    body += wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(WRITE, 0, cid) + body


def initialize_state_req(cid, group, tid, state_epoch, start):
    body = wire.compact_string(group) + wire.uvarint(2) + tid + wire.uvarint(2)
    body += wire.i32(0) + wire.i32(state_epoch) + wire.i64(start) + wire.uvarint(0)
    body += wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(INITIALIZE, 0, cid) + body


def summary_req(cid, group, tid):
    body = wire.compact_string(group) + wire.uvarint(2) + tid + wire.uvarint(2)
    body += wire.i32(0) + wire.i32(-1) + wire.uvarint(0)
    body += wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(SUMMARY, 0, cid) + body


def delete_state_req(cid, group, tid):
    body = wire.compact_string(group) + wire.uvarint(2) + tid + wire.uvarint(2)
    body += wire.i32(0) + wire.uvarint(0)
    body += wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(DELETE, 0, cid) + body


def summary_resp(r):
    def partition(r):
        p = {"partition": r.i32(), "error": r.i16()}
        r.take(max(r.uvarint() - 1, 0))
        p["state_epoch"], p["leader_epoch"], p["start"] = r.i32(), r.i32(), r.i64()
        r.skip_tags()
        return p
    return _partitions(r, partition)


def _partitions(r, partition):
    r.skip_tags()  # response header v1
    out = []

    def topic(r):
        r.take(16)
        out.extend(r.compact_array(partition))
        r.skip_tags()
    r.compact_array(topic)
    r.skip_tags()
    [p] = out
    return p


def read_state_resp(r):
    def partition(r):
        p = {"partition": r.i32(), "error": r.i16()}
        r.take(max(r.uvarint() - 1, 0))
        p["state_epoch"], p["start"] = r.i32(), r.i64()

        def batch(r):
            b = (r.i64(), r.i64(), r.i8(), r.i16())
            r.skip_tags()
            return b
        p["batches"] = r.compact_array(batch)
        r.skip_tags()
        return p
    return _partitions(r, partition)


def error_resp(r):
    def partition(r):
        p = {"partition": r.i32(), "error": r.i16()}
        r.take(max(r.uvarint() - 1, 0))
        r.skip_tags()
        return p
    return _partitions(r, partition)["error"]


def call(node, payload, reader):
    cid = int.from_bytes(payload[4:8], "big", signed=True)
    with wire.connect(node) as s:
        return reader(wire.request(s, payload, cid))


def state_leader(c):
    md = c.metadata([STATE_TOPIC])
    [t] = md["topics"]
    if t["error"] != 0 or not t["partitions"]:
        return None
    leader = t["partitions"][0]["leader"]
    return leader if leader > 0 else None


def start_state_topic(c, tid):
    """The state topic is created on first use: a ReadShareGroupState does it. Returns the
    share coordinator (the leader of its partition 0) once its replicas are all in sync."""
    call(c.node(1), read_state_req(1, "warm-up", tid, -1), read_state_resp)
    coordinator = wait_until(lambda: state_leader(c), 30, "a leader of the state partition")
    c.wait_fully_replicated([STATE_TOPIC])
    return coordinator


def test_share_state_rpcs(cluster):
    c = cluster
    c.create_topic("state-rpc", 1)
    tid = topic_id(c, "state-rpc")
    coordinator = start_state_topic(c, tid)
    other = next(n for n in c.nodes if n != coordinator)
    group = f"rpc-{uuid.uuid4().hex[:6]}"
    with wire.connect(c.node(coordinator)) as s:
        _, apis = wire.read_api_versions_v3(wire.request(s, wire.api_versions_v3(1), 1))
    for key in (83, 84, 85, 86, 87):
        assert apis.get(key) == (0, 0), f"api {key}: {apis.get(key)}"

    p = call(c.node(other), read_state_req(2, group, tid, 0), read_state_resp)
    assert p["error"] == NOT_COORDINATOR, p
    p = call(c.node(coordinator), read_state_req(3, group, tid, 3), read_state_resp)
    assert (p["error"], p["start"], p["batches"]) == (0, -1, []), p

    write = write_state_req(4, group, tid, 0, 3, 5, [(5, 6, 0, 1), (7, 7, 2, 1)])
    assert call(c.node(coordinator), write, error_resp) == 0
    p = call(c.node(coordinator), read_state_req(5, group, tid, 3), read_state_resp)
    assert (p["error"], p["state_epoch"], p["start"]) == (0, 0, 5), p
    assert p["batches"] == [(5, 6, 0, 1), (7, 7, 2, 1)], p
    # the write went through the state partition's replicas: the other brokers refuse it
    assert call(c.node(other), write, error_resp) == NOT_COORDINATOR

    # a leader of an older epoch is fenced; a newer one is recorded by its read
    stale = write_state_req(6, group, tid, 0, 2, 9, [])
    assert call(c.node(coordinator), stale, error_resp) == FENCED_LEADER_EPOCH
    p = call(c.node(coordinator), read_state_req(7, group, tid, 2), read_state_resp)
    assert p["error"] == FENCED_LEADER_EPOCH, p
    p = call(c.node(coordinator), read_state_req(8, group, tid, 4), read_state_resp)
    assert (p["error"], p["start"]) == (0, 5), p
    assert call(c.node(coordinator), write_state_req(9, group, tid, 0, 3, 9, []),
                error_resp) == FENCED_LEADER_EPOCH

    # a new state epoch (an offsets reset) fences writes of the previous one
    assert call(c.node(coordinator), initialize_state_req(10, group, tid, 1, 100), error_resp) == 0
    assert call(c.node(coordinator), write_state_req(11, group, tid, 0, 4, 9, []),
                error_resp) == FENCED_STATE_EPOCH
    p = call(c.node(coordinator), read_state_req(12, group, tid, 4), read_state_resp)
    assert (p["error"], p["state_epoch"], p["start"], p["batches"]) == (0, 1, 100, []), p

    p = call(c.node(coordinator), summary_req(13, group, tid), summary_resp)
    assert (p["error"], p["state_epoch"], p["leader_epoch"], p["start"]) == (0, 1, 4, 100), p
    assert call(c.node(coordinator), delete_state_req(14, group, tid), error_resp) == 0
    p = call(c.node(coordinator), read_state_req(15, group, tid, 4), read_state_resp)
    assert (p["error"], p["start"]) == (0, -1), p
    assert call(c.node(other), delete_state_req(16, group, tid), error_resp) == NOT_COORDINATOR

    unknown = uuid.uuid4().bytes
    p = call(c.node(coordinator), read_state_req(17, group, unknown, 0), read_state_resp)
    assert p["error"] == UNKNOWN_TOPIC_OR_PARTITION, p


# --- the Java share consumer through a leader failover ---------------------------------------

class JavaEvents(threading.Thread):
    """Reads ShareFailoverCheck's event lines as they come, with their arrival times."""

    def __init__(self, proc):
        super().__init__(daemon=True)
        self.proc = proc
        self.events = []  # (t, fields)
        self.accepted = set()
        self.lock = threading.Lock()

    def run(self):
        for line in self.proc.stdout:
            fields = line.split()
            if not fields:
                continue
            with self.lock:
                self.events.append((time.monotonic(), fields))
                if fields[0] == "A":
                    self.accepted.add(int(fields[1]))


@pytest.mark.parametrize("victim", ["leader", "coordinator"])
def test_share_consumers_through_failover(cluster, tmp_path, victim):
    c = cluster
    c.create_topic("share-warm", 1)
    coordinator = start_state_topic(c, topic_id(c, "share-warm"))
    controller = c.controller()
    # the user partition's leader: neither the share coordinator nor (if possible) the
    # controller, so that the kill moves exactly one role
    candidates = [n for n in c.nodes if n != coordinator]
    leader = next((n for n in candidates if n != controller), candidates[0])
    # replicas in order: the leader, the third broker, the coordinator. The first live ISR
    # member in replica order takes over, so the new leader too is not the coordinator.
    third = next(n for n in c.nodes if n not in (leader, coordinator))
    rest = [third, coordinator]
    topic, group = "share-failover", f"failover-{uuid.uuid4().hex[:6]}"
    a = AdminClient({"bootstrap.servers": c.bootstrap, "logger": LOG})
    a.create_topics([NewTopic(topic, 1, replica_assignment=[[leader, *rest]])],
                    operation_timeout=10)[topic].result(30)
    c.wait_fully_replicated([topic])
    assert c.leaders(topic) == {0: leader}

    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "logger": LOG,
                  "enable.idempotence": True})
    for i in range(RECORDS):
        p.produce(topic, f"r-{i}".encode(), partition=0)
        if i % 100 == 99:
            p.poll(0)
    assert p.flush(30) == 0

    cmd = [_java(), *JVM_OPTS, "-cp", java_classpath(), "gregor.prototests.ShareFailoverCheck",
           c.bootstrap, topic, group, str(RECORDS), "2", "75"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    events = JavaEvents(proc)
    events.start()
    try:
        wait_until(lambda: len(events.accepted) >= RECORDS // 3 or proc.poll() is not None, 60,
                   "a third of the records accepted before the kill")
        assert proc.poll() is None, "ShareFailoverCheck ended early: " + proc.stderr.read()[-3000:]
        killed_at = time.monotonic()
        c.kill9(leader if victim == "leader" else coordinator)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events.join(10)
    stderr = proc.stderr.read()
    evs = [f for _, f in events.events]
    (tmp_path / "events.txt").write_text(
        "".join(f"{t - killed_at:+.3f} {' '.join(f)}\n" for t, f in events.events))
    assert evs and evs[-1][0] == "DONE", f"no DONE line: {evs[-5:]}\n{stderr[-3000:]}"

    new_leader = wait_until(lambda: c.leaders(topic)[0] if c.leaders(topic)[0] > 0 else None,
                            30, "a leader")
    if victim == "leader":
        assert new_leader == third, f"new leader {new_leader}, expected {third}"
    else:
        assert new_leader == leader
        killed = coordinator
        coordinator = wait_until(lambda: state_leader(c) if state_leader(c) != killed else None,
                                 30, "a new share coordinator")

    # Nothing lost: every record was delivered, and every one was accepted with the broker's
    # confirmation, or its acknowledgement was in flight when the leader died (its outcome
    # unknown to the consumer: the old leader may have stored it before it died). Either way
    # the group is done with all of them: the share-partition start offset, as the share
    # coordinator stores it, is at the end of the partition.
    delivered = {int(f[1]) for f in evs if f[0] == "D"}
    unconfirmed = {int(f[1]) for f in evs if f[0] == "E"}
    assert delivered == set(range(RECORDS)), \
        f"records never delivered: {sorted(set(range(RECORDS)) - delivered)[:10]}"
    missing = sorted(set(range(RECORDS)) - events.accepted - unconfirmed)
    assert not missing, f"{len(missing)} records never accepted, e.g. {missing[:10]}\n" \
                        f"{[e for e in evs if e[0] in ('ERR', 'E')][-10:]}\n{stderr[-3000:]}"
    tid = topic_id(c, topic)
    state = call(c.node(coordinator), read_state_req(20, group, tid, -1), read_state_resp)
    assert (state["error"], state["start"]) == (0, RECORDS), state
    # No confirmed ACCEPT is delivered again.
    accepted, again = set(), []
    for f in evs:
        if f[0] == "A":
            accepted.add(int(f[1]))
        elif f[0] == "D" and int(f[1]) in accepted:
            again.append(f)
    assert not again, f"accepted records delivered again: {again[:10]}"
    after = [t for t, f in events.events if f[0] == "A" and t > killed_at]
    assert after, "no acceptance after the kill"
    # the failover's pause: the longest time without a confirmed ACCEPT, from the kill on
    times = [killed_at] + after
    pause = max(b - a for a, b in zip(times, times[1:]))
    redelivered = sum(1 for f in evs if f[0] == "D" and int(f[2]) > 1)
    refused = len(unconfirmed)
    print(f"SHARE_FAILOVER_GAP kill {victim}: {pause:.2f}s (leader {leader} -> "
          f"{new_leader}, coordinator now {coordinator}); redelivered {redelivered}, "
          f"unconfirmed acks {refused}")
