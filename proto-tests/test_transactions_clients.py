"""Transactions with real clients (issue 14), against one broker shared by the module (settings:
transactions.TXN_BROKER). Every test has its own topics, groups and transactional ids.

- Java (TxnCheck, one JVM for the module; each section a test): a consume-transform-produce
  loop with sendOffsetsToTransaction and aborts in the middle; zombie fencing; the LSO and the
  Admin transaction APIs (describeTransactions, listTransactions, describeProducers);
  transactional offsets visible only on commit. See TxnCheck.java.
- confluent-kafka (librdkafka): transactions over two partitions, every third aborted, and two
  transactional producers interleaved so that a committed transaction sits behind an open one
  that then aborts. read_committed sees exactly the committed records, in order; read_uncommitted
  sees the aborted ones too; the last stable offset (ListOffsets READ_COMMITTED) stops at the
  first open transaction and reaches the high watermark once every transaction ended.
- franz-go (franz-txn, a kgo.GroupTransactSession): consume-transform-produce in a group,
  every third transaction aborted (the session rewinds); every input record is in the output
  exactly once for read_committed (franz-go's and confluent-kafka's consumers), and the aborted
  copies are visible read_uncommitted.
"""
import json
import subprocess
import uuid

import pytest
from confluent_kafka import Producer

from clients import LOG
from conftest import REPO
from javatools import assert_section, java_main
from transactions import (check_transactions, create_topic, eventually, hwm, lso,
                          read_partition, stop_module_broker, txn_broker)

JAVA_SECTIONS = ["consume-transform-produce", "zombie-fencing", "lso-and-admin",
                 "offsets-on-commit"]
FRANZ_TXN = REPO / ".deps" / "bin" / "franz-txn"


@pytest.fixture(scope="module")
def txn_target(tmp_path_factory):
    b = txn_broker(tmp_path_factory.mktemp("broker")).start()
    yield b
    stop_module_broker(b)


@pytest.fixture
def broker(request, txn_target):
    request.node._gregor_brokers = [txn_target]
    return txn_target


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- Java ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def java_run(txn_target):
    return java_main("gregor.prototests.TxnCheck", txn_target.bootstrap, name("jtxn"),
                     timeout=400)


@pytest.mark.parametrize("section", JAVA_SECTIONS)
def test_java_transactions(broker, java_run, section):
    assert_section(java_run, section)


def test_java_transactions_exit_status(java_run):
    for s in JAVA_SECTIONS:
        assert_section(java_run, s)
    assert java_run.returncode == 0, java_run.stdout[-2000:] + java_run.stderr[-2000:]


# --- confluent-kafka -------------------------------------------------------------------------

def txn_producer(broker, txn_id):
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 60000, "linger.ms": 5, "logger": LOG})
    p.init_transactions(30)
    return p


def values(records):
    return [v for _, v in records]


def wait_stable(broker, topic, partitions):
    eventually(lambda: all(lso(broker, topic, p) == hwm(broker, topic, p)
                           for p in range(partitions)),
               30, f"LSO = high watermark on every partition of {topic}")


def test_confluent_commit_and_abort(broker):
    topic = name("ck-txn")
    create_topic(broker.bootstrap, topic, 2)
    p = txn_producer(broker, name("ck-txn-id"))
    committed, aborted = [], []
    per = 5
    for txn in range(12):
        p.begin_transaction()
        for part in range(2):
            for i in range(per):
                p.produce(topic, b"%d:%d:%d" % (txn, part, i), partition=part)
        if txn % 3 == 2:
            p.flush(30)  # on the log, then aborted
            p.abort_transaction(30)
            aborted.append(txn)
        else:
            p.commit_transaction(30)
            committed.append(txn)
    wait_stable(broker, topic, 2)
    seen = {part: values(read_partition(broker.bootstrap, topic, part, "read_committed"))
            for part in range(2)}
    problems = check_transactions(seen, per, [0, 1], committed, aborted)
    assert not problems, problems
    for part in range(2):
        # in commit order, nothing else
        assert seen[part] == [b"%d:%d:%d" % (t, part, i) for t in committed for i in range(per)]
        every = values(read_partition(broker.bootstrap, topic, part, "read_uncommitted"))
        assert every == [b"%d:%d:%d" % (t, part, i) for t in range(12) for i in range(per)], \
            "read_uncommitted sees the aborted records too, in produce order"
        # 12 transactions of 5 records and one marker each
        assert hwm(broker, topic, part) == 12 * (per + 1)


def test_confluent_interleaved_transactions(broker):
    """A commits behind B's open transaction: read_committed sees nothing past B's first
    record until B ends; B aborts; then A's records are visible and B's never are."""
    topic = name("ck-inter")
    create_topic(broker.bootstrap, topic, 1)
    a = txn_producer(broker, name("ck-inter-a"))
    b = txn_producer(broker, name("ck-inter-b"))
    a.begin_transaction()
    a.produce(topic, b"a-first", partition=0)
    a.commit_transaction(30)
    wait_stable(broker, topic, 1)
    first_open = hwm(broker, topic, 0)  # 2: a-first and its marker
    b.begin_transaction()
    for i in range(3):
        b.produce(topic, b"b%d" % i, partition=0)
    b.flush(30)
    a.begin_transaction()
    for i in range(3):
        a.produce(topic, b"a%d" % i, partition=0)
    a.commit_transaction(30)
    # A's commit marker is written, but B's transaction is still open before it
    eventually(lambda: hwm(broker, topic, 0) == first_open + 3 + 3 + 1, 30,
               "A's records and commit marker on the log")
    assert lso(broker, topic, 0) == first_open, "the LSO stays at B's first record"
    assert values(read_partition(broker.bootstrap, topic, 0, "read_committed")) == [b"a-first"]
    b.abort_transaction(30)
    wait_stable(broker, topic, 1)
    assert lso(broker, topic, 0) == first_open + 3 + 3 + 1 + 1
    assert values(read_partition(broker.bootstrap, topic, 0, "read_committed")) == \
        [b"a-first", b"a0", b"a1", b"a2"]
    assert values(read_partition(broker.bootstrap, topic, 0, "read_uncommitted")) == \
        [b"a-first", b"b0", b"b1", b"b2", b"a0", b"a1", b"a2"]


# --- franz-go --------------------------------------------------------------------------------

def test_franz_group_transact_session(broker):
    if not FRANZ_TXN.exists():
        pytest.fail(f"{FRANZ_TXN} missing: run scripts/install-test-deps.sh")
    src, dst, group = name("fz-in"), name("fz-out"), name("fz-group")
    create_topic(broker.bootstrap, src, 2)
    create_topic(broker.bootstrap, dst, 2)
    n = 200
    plain = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "logger": LOG})
    for i in range(n):
        plain.produce(src, b"v%d" % i, partition=i % 2)
    assert plain.flush(30) == 0
    res = subprocess.run([str(FRANZ_TXN), "-brokers", broker.bootstrap, "-group", group,
                          "-input", src, "-output", dst, "-partitions", "2",
                          "-txn-id", name("fz-txn"), "-expect", str(n), "-abort-every", "3",
                          "-timeout", "120s"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["error"] == "", rep["error"]
    assert rep["processed"] == n and rep["aborted"] >= 1, \
        {k: rep[k] for k in ("transactions", "committed", "aborted", "processed")}
    want = sorted(f"out-v{i}" for i in range(n))
    assert sorted(rep["read_committed"]) == want, "franz-go read_committed: each record once"
    assert len(rep["read_uncommitted"]) > n and set(rep["read_uncommitted"]) == set(want), \
        f"franz-go read_uncommitted: {len(rep['read_uncommitted'])} records"
    # the same through librdkafka's read_committed consumer (the END records the program
    # appended after its transactions are plain ones)
    got = []
    for part in range(2):
        vs = [v.decode() for v in values(read_partition(broker.bootstrap, dst, part,
                                                         "read_committed"))]
        assert vs[-1] == "END", vs[-3:]
        assert all(int(v[len("out-v"):]) % 2 == part for v in vs[:-1]), \
            f"partition {part} holds records of the other input partition"
        got += vs[:-1]
    assert sorted(got) == want
