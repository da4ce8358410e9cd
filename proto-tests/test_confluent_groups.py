"""Consumer groups with confluent-kafka (librdkafka 2.x, classic group protocol).

Covers: the 4-partitions/2-consumers split in one generation (with Kafka's default
group.initial.rebalance.delay.ms of 3000 ms) and failover to the survivor after a clean close
(LeaveGroup) and after a crash (session timeout); two groups on one topic each get every
message; committed offsets and their metadata survive a broker restart and a new member resumes
there; static membership (group.instance.id): a restart within session.timeout.ms rejoins with
no rebalance, and a second instance with the same id fences the first; assign() with commit
(a group with no members); a simple commit into a group with members fails with
UNKNOWN_MEMBER_ID.

Consumers run with session.timeout.ms=6000 (the broker's default group.min.session.timeout.ms)
and heartbeat.interval.ms=500. Tests print the rebalance count of a 2-consumer join and the
failover times (pytest -s shows them).
"""
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, TopicPartition)

from clients import (TIMEOUT, GroupMember, admin, consumer, create_topic, produce_all, pump,
                     pump_for)
from targets import make_target, new_target  # noqa: F401  (fixture)

SESSION_TIMEOUT_S = 6.0
FAST = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture(scope="module")
def fast_broker(tmp_path_factory):
    """One broker for the module, with group.initial.rebalance.delay.ms=0."""
    b = new_target(tmp_path_factory.mktemp("broker"), FAST).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


@pytest.fixture
def broker(request, fast_broker):
    request.node._gregor_brokers = [fast_broker]  # its log tail goes with a failure
    return fast_broker


def group_name():
    return f"group-{uuid.uuid4().hex[:10]}"


def produce_per_partition(broker, topic, partitions, count, tag):
    """`count` records to each partition; returns {(partition, offset): value}."""
    out = {}
    for p in range(partitions):
        for offset, v in produce_all(broker, topic, [b"%s-p%d-%d" % (tag, p, i)
                                                     for i in range(count)], partition=p):
            out[(p, offset)] = v
    return out


def warm_coordinator(broker):
    """Looks up a group coordinator once: a fresh Kafka creates __consumer_offsets then, which
    should not count in the join times measured here."""
    c = consumer(broker, **{"group.id": group_name()})
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            try:
                c.committed([TopicPartition("warm-up", 0)], timeout=TIMEOUT)
                return
            except KafkaException as e:  # NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE meanwhile
                retry = e.args[0].retriable() or e.args[0].code() in (
                    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        c.close()


def received(members):
    """{(partition, offset): value} over members; fails on a record consumed twice."""
    out = {}
    for m in members:
        for _, p, o, _, v in m.records:
            assert (p, o) not in out, f"partition {p} offset {o} consumed twice"
            out[(p, o)] = v
    return out


def test_split_in_one_generation_then_failover_on_close(make_target, topic_name):
    # Kafka's default delay (the reference Kafka's harness sets 0, so say it)
    broker = make_target({"group.initial.rebalance.delay.ms": 3000})
    create_topic(broker, topic_name, partitions=4)
    expected = produce_per_partition(broker, topic_name, 4, 25, b"a")
    warm_coordinator(broker)
    group = group_name()
    t0 = time.monotonic()
    c1 = GroupMember(broker, group, [topic_name], "c1")
    c2 = GroupMember(broker, group, [topic_name], "c2")
    members = [c1, c2]
    try:
        pump(members, lambda: len(c1.records) + len(c2.records) >= len(expected),
             what="both consumers reading every partition")
        joined = max(m.events[0][2] for m in members) - t0
        # the delay holds the first generation open: both join it, one assignment each
        print(f"\n2-consumer join (group.initial.rebalance.delay.ms=3000): "
              f"{len(c1.assigns())} and {len(c2.assigns())} assignments, {joined:.1f}s")
        assert c1.assigns() and c2.assigns()
        assert [k for k, _, _ in c1.events] == ["assign"] and \
               [k for k, _, _ in c2.events] == ["assign"], (c1.events, c2.events)
        a1, a2 = c1.assigns()[0], c2.assigns()[0]
        assert len(a1) == len(a2) == 2 and sorted(a1 + a2) == [0, 1, 2, 3], (a1, a2)
        assert received(members) == expected
        for m, parts in ((c1, a1), (c2, a2)):
            assert {p for _, p, _, _, _ in m.records} == set(parts)

        # both commit what they read (the eager rebalance to come revokes c1's partitions too,
        # and every partition then restarts at its committed offset); c2 leaves (LeaveGroup on
        # close) and c1 takes over everything
        for m in members:
            committed = m.consumer.commit(asynchronous=False)
            assert sorted((tp.partition, tp.offset) for tp in committed) == \
                [(p, 25) for p in m.assignment()], committed
        t1 = time.monotonic()
        c2.close()
        pump([c1], lambda: c1.assignment() == [0, 1, 2, 3], what="c1 owning all 4 partitions")
        failover = time.monotonic() - t1
        print(f"failover after a clean close (LeaveGroup): {failover:.2f}s")
        assert failover < SESSION_TIMEOUT_S, f"failover took {failover:.1f}s"
        assert c1.events[-2][:2] == ("revoke", a1) and c1.events[-1][:2] == ("assign", [0, 1, 2, 3])

        # c1 resumes c2's partitions at c2's committed offsets: no record is read twice
        before = len(c1.records)
        more = produce_per_partition(broker, topic_name, 4, 5, b"b")
        expected.update(more)
        pump([c1], lambda: len(c1.records) - before >= len(more), what="c1 reading new records")
        pump_for([c1], 0.5)
        assert received(members) == expected
    finally:
        for m in members:
            m.close()


# A member in another process, to be SIGKILLed: it never sends LeaveGroup.
CRASH_MEMBER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest",
              "enable.auto.commit": False})
def on_assign(consumer, parts):
    print("ASSIGNED " + ",".join(str(p.partition) for p in parts), flush=True)
c.subscribe([topic], on_assign=on_assign)
while True:
    c.poll(0.1)
"""


def test_failover_after_crash(broker, topic_name, tmp_path):
    create_topic(broker, topic_name, partitions=4)
    warm_coordinator(broker)
    group = group_name()
    out = tmp_path / "crash-member.out"
    t0 = time.monotonic()
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", CRASH_MEMBER, broker.bootstrap, group,
                                 topic_name], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    a = GroupMember(broker, group, [topic_name], "a")
    try:
        def other():
            lines = [l for l in out.read_text().splitlines() if l.startswith("ASSIGNED ")]
            return [int(p) for p in lines[-1][9:].split(",") if p] if lines else None

        pump([a], lambda: len(a.assignment()) == 2 and other() is not None
             and sorted(a.assignment() + other()) == [0, 1, 2, 3],
             what="a 2+2 split with the other process")
        print(f"\n2-consumer join (delay 0, started together): {len(a.assigns())} assignment(s) "
              f"for the in-process member, {time.monotonic() - t0:.1f}s")
        pump_for([a], 1.0)
        assert len(a.assignment()) == 2 and proc.poll() is None

        t1 = time.monotonic()
        proc.kill()
        proc.wait()
        # no LeaveGroup: the coordinator notices when the member's session times out
        pump([a], lambda: a.assignment() == [0, 1, 2, 3], timeout=SESSION_TIMEOUT_S + 15,
             what="the survivor owning all 4 partitions")
        failover = time.monotonic() - t1
        print(f"failover after a crash (session.timeout.ms=6000): {failover:.2f}s")
        assert failover < SESSION_TIMEOUT_S + 5, f"failover took {failover:.1f}s"
        produce_per_partition(broker, topic_name, 4, 3, b"x")
        pump([a], lambda: {p for _, p, _, _, _ in a.records} == {0, 1, 2, 3},
             what="the survivor reading every partition")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        a.close()


def test_two_groups_each_get_every_message(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)
    expected = produce_per_partition(broker, topic_name, 2, 20, b"m")
    g1, g2 = group_name(), group_name()
    m1 = GroupMember(broker, g1, [topic_name], "g1")
    m2 = GroupMember(broker, g2, [topic_name], "g2")
    try:
        pump([m1, m2], lambda: len(m1.records) >= len(expected) and len(m2.records) >= len(expected),
             what="each group reading every message")
        assert received([m1]) == expected and received([m2]) == expected

        a = admin(broker)  # kept alive until the futures resolve
        listed = a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
        states = {g.group_id: g.state for g in listed.valid}
        assert states.get(g1) == ConsumerGroupState.STABLE and \
            states.get(g2) == ConsumerGroupState.STABLE, states
        for g, fut in a.describe_consumer_groups([g1, g2], request_timeout=TIMEOUT).items():
            d = fut.result(TIMEOUT)
            assert d.state == ConsumerGroupState.STABLE and not d.is_simple_consumer_group
            assert d.coordinator.id == 1
            # librdkafka offers [range, roundrobin]: the broker picks the first preference
            assert d.partition_assignor == "range", d.partition_assignor
            [member] = d.members
            assert sorted((tp.topic, tp.partition) for tp in member.assignment.topic_partitions) \
                == [(topic_name, 0), (topic_name, 1)]
    finally:
        m1.close()
        m2.close()


def test_commit_restart_resume(make_target, topic_name):
    broker = make_target(FAST)
    create_topic(broker, topic_name, partitions=2)
    produce_per_partition(broker, topic_name, 2, 20, b"c")
    group = group_name()
    commits = [TopicPartition(topic_name, 0, 7, metadata="meta-p0"),
               TopicPartition(topic_name, 1, 13, metadata='{"app": "p1"}')]
    m = GroupMember(broker, group, [topic_name], "first")
    try:
        pump([m], lambda: len(m.records) >= 40, what="reading every record")
        m.consumer.commit(offsets=commits, asynchronous=False)
        got = m.consumer.committed([TopicPartition(topic_name, p) for p in (0, 1)], timeout=TIMEOUT)
        assert [(tp.partition, tp.offset, tp.metadata, tp.error) for tp in got] == \
            [(0, 7, "meta-p0", None), (1, 13, '{"app": "p1"}', None)]
    finally:
        m.close()

    broker.restart()

    m = GroupMember(broker, group, [topic_name], "after-restart")
    try:
        pump([m], lambda: {p for _, p, _, _, _ in m.records} == {0, 1},
             what="reading both partitions after the restart")
        first = {}
        for _, p, o, _, _ in m.records:
            first.setdefault(p, o)
        assert first == {0: 7, 1: 13}, f"resumed at {first}, committed 7 and 13"
        got = m.consumer.committed([TopicPartition(topic_name, p) for p in (0, 1)], timeout=TIMEOUT)
        assert [(tp.offset, tp.metadata) for tp in got] == [(7, "meta-p0"), (13, '{"app": "p1"}')]
    finally:
        m.close()


def test_static_membership_restart_without_rebalance(broker, topic_name):
    create_topic(broker, topic_name, partitions=4)
    group = group_name()
    static = {"session.timeout.ms": 10000}  # time enough to restart
    s1 = GroupMember(broker, group, [topic_name], "s1", **{"group.instance.id": "i1"}, **static)
    s2 = GroupMember(broker, group, [topic_name], "s2", **{"group.instance.id": "i2"}, **static)
    members = [s1, s2]
    s1b = s1c = None
    try:
        pump(members, lambda: len(s1.assignment()) == 2 and len(s2.assignment()) == 2,
             what="a 2+2 split")
        pump_for(members, 1.5)  # settled
        a1, a2 = s1.assignment(), s2.assignment()
        assert sorted(a1 + a2) == [0, 1, 2, 3]
        s2_events = list(s2.events)

        # a static member does not leave the group on close; its replacement, with the same
        # group.instance.id, gets the same partitions back and nobody else is rebalanced
        s1.close()
        t0 = time.monotonic()
        s1b = GroupMember(broker, group, [topic_name], "s1b", **{"group.instance.id": "i1"},
                          **static)
        members = [s1b, s2]
        pump(members, lambda: s1b.assignment() != [], what="the restarted static member assigned")
        rejoin = time.monotonic() - t0
        pump_for(members, 2.0)
        print(f"\nstatic member rejoin: {rejoin:.2f}s, assignments {a1} -> {s1b.assignment()}")
        assert s1b.assignment() == a1
        assert [(k, p) for k, p, _ in s1b.events] == [("assign", a1)]
        assert s2.events == s2_events, "the other member was rebalanced"
        assert s2.assignment() == a2

        produce_per_partition(broker, topic_name, 4, 2, b"s")
        pump(members, lambda: {p for _, p, _, _, _ in s1b.records} == set(a1)
             and {p for _, p, _, _, _ in s2.records} == set(a2), what="both reading")

        # two live instances with one group.instance.id: the newer one fences the older
        s1c = GroupMember(broker, group, [topic_name], "s1c", **{"group.instance.id": "i1"},
                          **static)
        members = [s1b, s1c, s2]
        # librdkafka raises a fatal error for FENCED_INSTANCE_ID
        pump(members, lambda: any(e.code() == KafkaError._FATAL and "fenced" in e.str()
                                  for e in s1b.errors), what="the older instance i1 fenced")
        pump([s1c, s2], lambda: s1c.assignment() == a1, what="the newer instance i1 assigned")
        assert s2.events == s2_events, "fencing a static member rebalanced the other member"
    finally:
        for m in (s1, s2, s1b, s1c):
            if m is not None:
                m.close()


def test_assign_and_commit_without_subscription(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)
    produce_per_partition(broker, topic_name, 2, 10, b"s")
    group = group_name()
    c = consumer(broker, **{"group.id": group})
    try:
        c.assign([TopicPartition(topic_name, 0, 0), TopicPartition(topic_name, 1, 0)])
        seen = 0
        deadline = time.monotonic() + TIMEOUT
        while seen < 20 and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                seen += 1
        assert seen == 20
        c.commit(offsets=[TopicPartition(topic_name, 0, 4, metadata="simple"),
                          TopicPartition(topic_name, 1, 10)], asynchronous=False)
        got = c.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)],
                          timeout=TIMEOUT)
        assert [(tp.offset, tp.metadata) for tp in got] == [(4, "simple"), (10, None)], got
    finally:
        c.close()

    # another consumer in the group, assign() without an offset: starts at the committed one
    c = consumer(broker, **{"group.id": group})
    try:
        c.assign([TopicPartition(topic_name, 0)])
        msg = None
        deadline = time.monotonic() + TIMEOUT
        while (msg is None or msg.error()) and time.monotonic() < deadline:
            msg = c.poll(0.2)
        assert msg is not None and not msg.error() and msg.offset() == 4, msg
    finally:
        c.close()

    a = admin(broker)
    [d] = [f.result(TIMEOUT) for f in a.describe_consumer_groups(
        [group], request_timeout=TIMEOUT).values()]
    assert d.state == ConsumerGroupState.EMPTY and d.members == [], (d.state, d.members)
    listed = a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    assert {g.group_id: g.state for g in listed.valid}.get(group) == ConsumerGroupState.EMPTY
    offsets = a.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    assert sorted((tp.partition, tp.offset) for tp in offsets.topic_partitions
                  if tp.topic == topic_name) == [(0, 4), (1, 10)]


def test_simple_commit_into_active_group_is_unknown_member(broker, topic_name):
    """A commit with no member id and generation -1 (what assign()+commit sends) is only
    accepted while the group has no members: Kafka answers UNKNOWN_MEMBER_ID otherwise."""
    create_topic(broker, topic_name, partitions=1)
    produce_all(broker, topic_name, [b"x"] * 3)
    group = group_name()
    m = GroupMember(broker, group, [topic_name], "member")
    c = consumer(broker, **{"group.id": group})
    try:
        pump([m], lambda: m.assignment() == [0], what="the member assigned")
        c.assign([TopicPartition(topic_name, 0, 0)])
        with pytest.raises(KafkaException) as e:
            c.commit(offsets=[TopicPartition(topic_name, 0, 2)], asynchronous=False)
        assert e.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID, e.value
        # once the group is empty, the same commit is accepted
        m.close()
        c.commit(offsets=[TopicPartition(topic_name, 0, 2)], asynchronous=False)
        [tp] = c.committed([TopicPartition(topic_name, 0)], timeout=TIMEOUT)
        assert tp.offset == 2
    finally:
        c.close()
        m.close()

