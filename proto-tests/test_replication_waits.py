"""What waits for replication, on three brokers with one follower paused (SIGSTOP) while it stays
in the ISR (issue 11):

- A Produce with acks=-1 that spans several partitions waits one deadline (`timeout_ms`) in
  all, as Kafka's DelayedProduce does, not one per partition.
- An offset commit is visible to OffsetFetch only once it is replicated; one whose replication
  times out is never visible, and what was committed before stays. An OffsetDelete whose
  tombstones are not replicated deletes nothing.

Raw protocol (wire.py), so that each request and its error code are exactly what is sent and
answered. One cluster serves every test of this file; each test resumes what it paused.
"""
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from clients import LOG
from cluster import Cluster, wait_until

REQUEST_TIMED_OUT = 7
COMMIT_TIMEOUT_MS = 2000
PAUSED = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("replication-waits"), 3, {
        "offsets.commit.timeout.ms": COMMIT_TIMEOUT_MS,
        "offsets.topic.num.partitions": 6,
        # The paused broker is neither fenced nor dropped from the ISR while a test runs.
        "broker.session.timeout.ms": 60000,
        "replica.lag.time.max.ms": 60000,
    })
    c.start()
    yield c
    crashed = c.crashed()
    c.shutdown()
    assert not crashed, f"brokers died: {crashed}\n{c.log_tails(40)}"


def create(cluster, name, assignment):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "logger": LOG})
    fut = admin.create_topics([NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment)],
                              operation_timeout=10, request_timeout=30)
    fut[name].result(30)
    cluster.wait_fully_replicated([name], 30)


def call(node, payload, read, timeout=15.0):
    with wire.connect(node, timeout=timeout) as s:
        return read(wire.request(s, payload, 1))


def test_a_produce_to_many_partitions_waits_one_deadline(cluster):
    topic = "one-deadline"
    partitions = 4
    create(cluster, topic, [[1, 2, 3]] * partitions)
    leader = cluster.node(1)
    batches = [(p, wire.record_batch([b"v%d" % p])) for p in range(partitions)]
    timeout_ms = 1500
    cluster.sigstop(PAUSED)
    try:
        started = time.monotonic()
        answer = call(leader, wire.produce_v3_partitions(1, topic, batches, acks=-1,
                                                         timeout_ms=timeout_ms),
                      wire.read_produce_v3)
        elapsed = time.monotonic() - started
    finally:
        cluster.sigcont(PAUSED)
    errors = [p["error"] for p in answer[topic]]
    assert errors == [REQUEST_TIMED_OUT] * partitions, answer
    # One deadline for the request: 4 partitions waited in turn would take 6 s.
    assert timeout_ms / 1000 - 0.1 <= elapsed < 2 * timeout_ms / 1000, elapsed
    cluster.wait_fully_replicated([topic], 30)


def group_not_on(cluster, node_id):
    """A group name whose coordinator is not `node_id`, and its coordinator."""
    for i in range(200):
        group = f"pending-commits-{i}"
        found = call(cluster.node(1), wire.find_coordinator_v2(1, group),
                     wire.read_find_coordinator_v2)
        if found["error"] == 0 and found["node_id"] != node_id:
            return group, cluster.node(found["node_id"])
    raise AssertionError(f"every group is coordinated by {node_id}")


def test_unreplicated_commits_and_deletes_are_never_visible(cluster):
    topic = "commits"
    create(cluster, topic, [[1, 2, 3]])
    group, coordinator = group_not_on(cluster, PAUSED)
    tp = (topic, 0)

    def commit(offset):
        return call(coordinator, wire.offset_commit_v2(1, group, {tp: offset}),
                    wire.read_offset_commit_v2)[tp]

    def fetched():
        offset, error = call(coordinator, wire.offset_fetch_v1(1, group, [tp]),
                             wire.read_offset_fetch_v1)[tp]
        assert error == 0
        return offset

    wait_until(lambda: commit(5) == 0, 30, "a first commit")
    assert fetched() == 5

    cluster.sigstop(PAUSED)
    try:
        slow = {}
        t = threading.Thread(target=lambda: slow.update(error=commit(9)))
        started = time.monotonic()
        t.start()
        # While the commit waits for the paused follower, OffsetFetch shows the old offset.
        time.sleep(0.5)
        assert fetched() == 5
        t.join(30)
        assert slow.get("error") == REQUEST_TIMED_OUT, slow
        assert time.monotonic() - started >= COMMIT_TIMEOUT_MS / 1000 - 0.1
        # Its replication failed: it was never committed, and the old offset stays.
        assert fetched() == 5

        error, parts = call(coordinator, wire.offset_delete_v0(1, group, [tp]),
                            wire.read_offset_delete_v0)
        assert error == REQUEST_TIMED_OUT and parts == {tp: 0}, (error, parts)
        # The tombstone was not replicated: the offset is still there.
        assert fetched() == 5
    finally:
        cluster.sigcont(PAUSED)

    wait_until(lambda: commit(11) == 0, 30, "a commit after the follower resumed")
    # Seen once (2026-12-06): a NOT_COORDINATOR (16) OffsetFetch right after this commit, as
    # the resumed follower rejoined; clients retry it, so the check does too (noted in the
    # closing note for a look at the coordinator's reaction to ISR changes).
    wait_until(lambda: call(coordinator, wire.offset_fetch_v1(1, group, [tp]),
                            wire.read_offset_fetch_v1)[tp][1] == 0, 30, "the coordinator")
    assert fetched() == 11
    error, parts = call(coordinator, wire.offset_delete_v0(1, group, [tp]),
                        wire.read_offset_delete_v0)
    assert (error, parts) == (0, {tp: 0})
    assert fetched() == -1
