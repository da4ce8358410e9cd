"""Transactions through failures (issue 14), on one node and on three nodes with RF 3
(min.insync.replicas=2, transaction.state.log.replication.factor=3, min.isr 2): see
transactions.TXN_BROKER and TXN_CLUSTER. One broker and one cluster are shared by the tests of
the module; every test has its own topic and transactional id, and leaves every node running.

The producer is the Java client in its own process (TxnWorker.java), driven step by step: each
transaction writes PER records to every partition of the topic, valued "<txn>:<partition>:<i>",
and the test kills a broker between two steps. The Java client retries a commit that timed out;
a fatal error makes the worker start a new producer with the same transactional id (whose
initTransactions completes or aborts what the old one left).

Faults:
- the transaction coordinator killed with SIGKILL right after commitTransaction starts (one
  node: the broker, then started again; three nodes: the coordinator found with
  FindCoordinator(TRANSACTION), which stays down while the commit completes elsewhere);
- (one node, raw protocol) SIGKILL right after EndTxn answered, before the markers may have
  landed: the coordinator must finish the commit (or abort) when it loads again;
- a partition leader killed between AddPartitionsToTxn and EndTxn (one node: the broker
  restarts with the transaction open, and the LSO must come back at the transaction's first
  offset; three nodes: a leader other than the coordinator stays down while the commit writes
  its markers to the new leader);
- a transaction left to time out (transaction.timeout.ms 3000): the broker aborts it on its
  own, the LSO moves on (later committed data becomes visible read_committed), and the
  timed-out producer is fenced.

In every case, read back with read_committed: every transaction seen is whole, every
transaction the client saw committed is there, no aborted one is visible, and the last stable
offset (ListOffsets READ_COMMITTED, asked of each partition's leader) reaches the high
watermark.
"""
import time
import uuid

import pytest
from confluent_kafka import Producer

from clients import LOG
from transactions import (READ_COMMITTED, READ_UNCOMMITTED, NONE, RawTxn, TxnCluster,
                          TxnWorker, check_transactions, create_topic, eventually,
                          find_coordinator, kill9, offsets_of, read_partition, start_again,
                          stop_module_broker, txn_broker)

PER = 3  # records per partition per transaction
PARTITIONS = 3


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_broker(tmp_path_factory):
    b = txn_broker(tmp_path_factory.mktemp("single"))
    b.start()
    yield b
    stop_module_broker(b)


@pytest.fixture
def single(request, single_broker):
    """The module's broker, started again if an earlier test left it down."""
    request.node._gregor_brokers = [single_broker]
    if not single_broker.alive():
        start_again(single_broker)
    return single_broker


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    c = TxnCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        crashed = c.crashed()
        codes = c.shutdown()
    assert not crashed, f"nodes died during the tests: {crashed}"
    assert all(code == 0 for code in codes.values()), f"SIGTERM exit codes: {codes}"


@pytest.fixture
def cluster(request, three_nodes):
    """The module's cluster, every node running (an earlier test's killed node started)."""
    request.node._gregor_brokers = list(three_nodes.nodes.values())
    for i, n in three_nodes.nodes.items():
        if n.proc is None or n.proc.poll() is not None:
            three_nodes.start_node(i)
    return three_nodes


@pytest.fixture
def workers(tmp_path):
    """make(bootstrap, topic, txn_id, txn_timeout_ms=60000) -> a TxnWorker, closed at
    teardown."""
    made = []

    def make(bootstrap, topic, txn_id, txn_timeout_ms=60000):
        w = TxnWorker(tmp_path, bootstrap, topic, PARTITIONS, txn_id, PER, txn_timeout_ms)
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


# --- steps -----------------------------------------------------------------------------------

def begin(w, n):
    words = w.do(f"begin {n}", "SENT", "SEND_FAILED")
    assert words[0] == "SENT", f"txn {n}: {' '.join(words)}\n{w.report()}"


def finish(w, n):
    """The outcome of a commit/abort already sent: COMMITTED, ABORTED, FATAL or UNKNOWN."""
    words = w.expect("COMMITTED", "ABORTED", "FATAL", "UNKNOWN", timeout=240)
    if words[0] == "FATAL":
        w.expect("REINIT", timeout=180)
    return words[0]


def commit(w, n):
    w.send(f"commit {n}")
    return finish(w, n)


def commit_ok(w, n):
    outcome = commit(w, n)
    assert outcome == "COMMITTED", f"txn {n}: {outcome}\n{w.report()}"
    return outcome


def leader_offsets(target, topic, isolation):
    """{partition: offset} asked of each partition's leader (one node: the broker)."""
    if isinstance(target, TxnCluster):
        out = {}
        for p, lead in target.leaders(topic).items():
            assert lead > 0, f"{topic}/{p}: no leader"
            out[p] = offsets_of(target.nodes[lead], topic, [p], isolation)[p]
        return out
    return offsets_of(target, topic, range(PARTITIONS), isolation)


def wait_stable(target, topic, timeout=60):
    """Waits until the LSO is the high watermark on every partition; returns the offsets."""
    def stable():
        lso = leader_offsets(target, topic, READ_COMMITTED)
        hw = leader_offsets(target, topic, READ_UNCOMMITTED)
        assert lso == hw, f"LSO {lso} vs high watermark {hw}"
        return hw
    return eventually(stable, timeout, f"the LSO reaches the high watermark on {topic}")


def verify(target, bootstrap, topic, outcomes, extra_committed=()):
    """outcomes: {txn: COMMITTED | ABORTED | FATAL | UNKNOWN}. The last two may have gone
    either way, but not half."""
    wait_stable(target, topic)
    seen = {p: [v for _, v in read_partition(bootstrap, topic, p, "read_committed")]
            for p in range(PARTITIONS)}
    for p in seen:  # records of other producers (not "<txn>:<p>:<i>") checked by the caller
        seen[p] = [v for v in seen[p] if v.count(b":") == 2]
    committed = [n for n, o in outcomes.items() if o == "COMMITTED"] + list(extra_committed)
    aborted = [n for n, o in outcomes.items() if o == "ABORTED"]
    problems = check_transactions(seen, PER, range(PARTITIONS), committed, aborted)
    assert not problems, f"{problems}\noutcomes: {outcomes}"
    return seen


# --- one node --------------------------------------------------------------------------------

def test_single_kill_coordinator_mid_commit(single, workers):
    topic = name("f1-coord")
    create_topic(single.bootstrap, topic, PARTITIONS)
    w = workers(single.bootstrap, topic, name("f1-coord-txn"))
    outcomes = {}
    begin(w, 1)
    outcomes[1] = commit_ok(w, 1)
    begin(w, 2)
    w.send("commit 2")
    w.expect("COMMITTING")
    kill9(single)
    start_again(single)
    outcomes[2] = finish(w, 2)
    begin(w, 3)
    outcomes[3] = commit_ok(w, 3)
    begin(w, 4)
    outcomes[4] = w.do("abort 4", "ABORTED", "FATAL")[0]
    verify(single, single.bootstrap, topic, outcomes)
    assert outcomes[2] == "COMMITTED", f"the commit did not survive the restart: {w.report()}"


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_single_kill_right_after_end_txn(single, commit):
    """EndTxn answered, then SIGKILL at once: the markers may not be on the log yet. After the
    restart the coordinator completes what it prepared: committed data appears, aborted data
    never does, and the LSO moves on."""
    topic = name("f1-endtxn")
    create_topic(single.bootstrap, topic, PARTITIONS)
    t = RawTxn(single, name("f1-endtxn-txn"))
    try:
        assert t.add_partitions({topic: list(range(PARTITIONS))}) == \
            {(topic, p): NONE for p in range(PARTITIONS)}
        for p in range(PARTITIONS):
            res = t.produce(topic, p, [b"1:%d:%d" % (p, i) for i in range(PER)])
            assert res["error"] == NONE, res
        assert t.end(commit) == NONE
        kill9(single)
    finally:
        t.close()
    start_again(single)
    hw = wait_stable(single, topic)
    assert hw == {p: PER + 1 for p in range(PARTITIONS)}, f"records and one marker each: {hw}"
    outcomes = {1: "COMMITTED" if commit else "ABORTED"}
    verify(single, single.bootstrap, topic, outcomes)


def test_single_kill_leader_between_add_partitions_and_end_txn(single, workers):
    topic = name("f1-leader")
    create_topic(single.bootstrap, topic, PARTITIONS)
    w = workers(single.bootstrap, topic, name("f1-leader-txn"))
    outcomes = {}
    begin(w, 1)
    outcomes[1] = commit_ok(w, 1)
    start = wait_stable(single, topic)
    begin(w, 2)  # partitions added, records written, no EndTxn yet
    kill9(single)
    start_again(single)
    # recovery rebuilds the open transaction: the LSO is back at its first offset
    eventually(lambda: leader_offsets(single, topic, READ_COMMITTED) == start, 30,
               "the LSO at the open transaction's first offset after the restart")
    assert leader_offsets(single, topic, READ_UNCOMMITTED) == \
        {p: o + PER for p, o in start.items()}, "the open transaction's records survived"
    outcomes[2] = commit(w, 2)
    begin(w, 3)
    outcomes[3] = commit_ok(w, 3)
    verify(single, single.bootstrap, topic, outcomes)
    assert outcomes[2] == "COMMITTED", f"txn 2 after the restart: {w.report()}"


def test_single_transaction_timeout(single, workers, measurement):
    topic = name("f1-timeout")
    create_topic(single.bootstrap, topic, PARTITIONS)
    run_timeout_case(single, single.bootstrap, topic, workers, measurement, "one node")


def run_timeout_case(target, bootstrap, topic, workers, measurement, what):
    w = workers(bootstrap, topic, name("timeout-txn"), txn_timeout_ms=3000)
    outcomes = {}
    begin(w, 1)
    outcomes[1] = commit_ok(w, 1)
    start = wait_stable(target, topic)
    begin(w, 2)
    t_sent = time.monotonic()
    time.sleep(1.0)
    if time.monotonic() - t_sent < 2.0:
        assert leader_offsets(target, topic, READ_COMMITTED) == start, \
            "the LSO moved within 1 s of a transaction with transaction.timeout.ms=3000"
    # committed data from another producer after the hanging transaction
    other = Producer({"bootstrap.servers": bootstrap, "transactional.id": name("later"),
                      "logger": LOG})
    other.init_transactions(30)
    other.begin_transaction()
    for p in range(PARTITIONS):
        other.produce(topic, b"later-%d" % p, partition=p)
    other.commit_transaction(30)
    hw = wait_stable(target, topic, timeout=60)
    measurement(f"transactions ({what}): a 3000 ms transaction aborted by the broker "
                f"{time.monotonic() - t_sent:.1f} s after its records were acknowledged")
    assert hw == {p: start[p] + PER + 1 + 1 + 1 for p in range(PARTITIONS)}, \
        f"the timed-out records, their abort marker, the later record and its commit marker: {hw}"
    verify(target, bootstrap, topic, {**outcomes, 2: "ABORTED"})
    for p in range(PARTITIONS):
        later = [v for _, v in read_partition(bootstrap, topic, p, "read_committed")
                 if v.startswith(b"later-")]
        assert later == [b"later-%d" % p], f"partition {p}: the later committed record: {later}"
    # the timed-out producer is fenced: its commit fails
    outcome = commit(w, 2)
    assert outcome in ("FATAL", "ABORTED"), f"txn 2 committed after it timed out: {w.report()}"
    fenced = [line for line in w.transcript if line.startswith("< FATAL")
              or line.startswith("< COMMIT_FAILED")]
    measurement(f"transactions ({what}): the timed-out producer's commit: {fenced[-1:]}")
    begin(w, 3)
    outcomes[3] = commit_ok(w, 3)
    verify(target, bootstrap, topic, {**outcomes, 2: "ABORTED"})


# --- three nodes -----------------------------------------------------------------------------

def alive_bootstrap(cluster):
    return ",".join(n.bootstrap for n in cluster.alive_nodes())


def test_cluster_kill_coordinator_mid_commit(cluster, workers):
    topic = name("f3-coord")
    create_topic(cluster.bootstrap, topic, PARTITIONS, rf=3)
    txn_id = name("f3-coord-txn")
    w = workers(cluster.bootstrap, topic, txn_id)
    outcomes = {}
    begin(w, 1)
    outcomes[1] = commit_ok(w, 1)
    coordinator = find_coordinator(cluster.nodes[1], txn_id)
    assert coordinator in cluster.nodes, coordinator
    begin(w, 2)
    w.send("commit 2")
    w.expect("COMMITTING")
    cluster.kill9(coordinator)
    outcomes[2] = finish(w, 2)  # with the coordinator still down
    assert outcomes[2] == "COMMITTED", f"commit across a coordinator failover: {w.report()}"
    other = next(i for i in cluster.nodes if i != coordinator)
    eventually(lambda: find_coordinator(cluster.nodes[other], txn_id) != coordinator, 60,
               f"a coordinator other than node {coordinator}")
    wait_stable(cluster, topic)
    begin(w, 3)
    outcomes[3] = commit_ok(w, 3)
    verify(cluster, alive_bootstrap(cluster), topic, outcomes)
    cluster.start_node(coordinator)
    cluster.wait_fully_replicated([topic, "__transaction_state"])
    begin(w, 4)
    outcomes[4] = commit_ok(w, 4)
    verify(cluster, cluster.bootstrap, topic, outcomes)


def test_cluster_kill_leader_between_add_partitions_and_end_txn(cluster, workers):
    topic = name("f3-leader")
    create_topic(cluster.bootstrap, topic, PARTITIONS, rf=3)
    txn_id = name("f3-leader-txn")
    w = workers(cluster.bootstrap, topic, txn_id)
    outcomes = {}
    begin(w, 1)
    outcomes[1] = commit_ok(w, 1)
    coordinator = find_coordinator(cluster.nodes[1], txn_id)
    leaders = cluster.leaders(topic)
    victims = sorted({lead for lead in leaders.values() if lead != coordinator})
    assert victims, f"every partition led by the coordinator {coordinator}: {leaders}"
    victim = victims[0]
    begin(w, 2)
    cluster.kill9(victim)
    outcomes[2] = commit(w, 2)  # the markers go to the partitions' new leaders
    assert outcomes[2] == "COMMITTED", f"commit with leader {victim} down: {w.report()}"
    begin(w, 3)
    outcomes[3] = commit_ok(w, 3)
    verify(cluster, alive_bootstrap(cluster), topic, outcomes)
    cluster.start_node(victim)
    cluster.wait_fully_replicated([topic, "__transaction_state"])
    begin(w, 4)
    outcomes[4] = commit_ok(w, 4)
    verify(cluster, cluster.bootstrap, topic, outcomes)


def test_cluster_transaction_timeout(cluster, workers, measurement):
    topic = name("f3-timeout")
    create_topic(cluster.bootstrap, topic, PARTITIONS, rf=3)
    leaders = set(cluster.leaders(topic).values())
    assert len(leaders) > 1, f"all partitions led by one node: {leaders}"
    run_timeout_case(cluster, cluster.bootstrap, topic, workers, measurement, "three nodes")
