"""Kafka's own transaction tools against an open transaction (issue 14), Kafka 4.x jars:

- kafka-transactions (org.apache.kafka.tools.TransactionsCommand): `list` shows the
  transactional id Ongoing at its coordinator, `describe` its producer id, epoch, timeout and
  partitions, `describe-producers` the open transaction's first offset on a partition,
  `find-hanging` finds nothing while the coordinator knows the partition, and `abort
  --start-offset` ends the transaction on one partition (the Admin client's WriteTxnMarkers to
  the partition leader): the LSO of that partition reaches the high watermark and
  read_committed never shows the aborted records, while the other partition stays open until
  the producer aborts for itself.
- kafka-dump-log (org.apache.kafka.tools.DumpLogSegments) reads the segment after a clean
  shutdown: transactional batches, COMMIT and ABORT control batches with the coordinator epoch,
  and the `.txnindex` entries of the aborted transactions with their producer id and offsets.

- The log cleaner on a compacted topic: an aborted transaction's records go at once, its ABORT
  marker once delete.retention.ms has passed; committed records and their markers stay.
- transactional.id.expiration.ms: a transactional id idle for longer is forgotten
  (DescribeTransactions answers TRANSACTIONAL_ID_NOT_FOUND, and the next InitProducerId gets a
  new producer id at epoch 0), while an id in use is kept.

Each test has a broker of its own (the first stops it for kafka-dump-log);
PROTO_TESTS_TARGET=kafka runs the same against Apache Kafka.
"""
import re
import time
import uuid

from confluent_kafka import Producer

from clients import LOG
from javatools import kafka_tool
from targets import partition_dir
import wire
from transactions import (NONE, READ_COMMITTED, READ_UNCOMMITTED, TRANSACTIONAL_ID_NOT_FOUND,
                          Conn, RawTxn, create_topic, eventually, offsets_of, read_compact_string,
                          read_partition, txn_broker)
from wire import compact_string, uvarint

PER = 3


def table(out):
    """Rows of ToolsUtils.prettyPrintTable output as dicts by header."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "no table printed"
    headers = lines[0].split()
    return [dict(zip(headers, line.split())) for line in lines[1:]]


def tool(broker, *args):
    res = kafka_tool("kafka-transactions", broker, *args)
    return res.stdout


def test_kafka_transactions_and_dump_log(tmp_path):
    broker = txn_broker(tmp_path / "broker").start()
    try:
        run(broker)
    finally:
        if broker.alive():
            broker.stop()


def run(broker):
    topic, txn_id = f"tools-{uuid.uuid4().hex[:8]}", f"tools-txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id,
                  "transaction.timeout.ms": 600000, "logger": LOG})
    p.init_transactions(30)
    p.begin_transaction()
    for part in (0, 1):
        for i in range(PER):
            p.produce(topic, b"open-%d-%d" % (part, i), partition=part)
    assert p.flush(30) == 0

    listed = [r for r in table(tool(broker, "list")) if r["TransactionalId"] == txn_id]
    assert len(listed) == 1, tool(broker, "list")
    assert listed[0]["TransactionState"] == "Ongoing", listed
    pid = int(listed[0]["ProducerId"])
    assert pid >= 0

    desc = tool(broker, "describe", "--transactional-id", txn_id)
    row = table(desc)[0]
    assert int(row["ProducerId"]) == pid and row["TransactionState"] == "Ongoing", desc
    assert row["TransactionTimeoutMs"] == "600000", desc
    assert f"{topic}-0" in desc and f"{topic}-1" in desc, desc
    epoch = int(row["ProducerEpoch"])

    producers = table(tool(broker, "describe-producers", "--topic", topic, "--partition", "0"))
    mine = [r for r in producers if int(r["ProducerId"]) == pid]
    assert len(mine) == 1, producers
    assert int(mine[0]["ProducerEpoch"]) == epoch, mine
    assert mine[0]["CurrentTransactionStartOffset"] == "0", mine
    assert int(mine[0]["LastSequence"]) == PER - 1, mine

    # the coordinator lists both partitions: nothing hangs, however short the timeout
    hanging = table(tool(broker, "find-hanging", "--topic", topic,
                         "--max-transaction-timeout", "0"))
    assert hanging == [], hanging

    assert offsets_of(broker, topic, [0, 1], READ_COMMITTED) == {0: 0, 1: 0}
    tool(broker, "abort", "--topic", topic, "--partition", "0", "--start-offset", "0")
    # an ABORT marker on partition 0 only: its LSO moves past it, partition 1 stays open
    eventually(lambda: offsets_of(broker, topic, [0], READ_COMMITTED) == {0: PER + 1}, 30,
               "partition 0 stable after kafka-transactions abort")
    assert offsets_of(broker, topic, [0, 1], READ_UNCOMMITTED) == {0: PER + 1, 1: PER}
    assert offsets_of(broker, topic, [1], READ_COMMITTED) == {1: 0}
    assert read_partition(broker.bootstrap, topic, 0, "read_committed") == []
    producers = table(tool(broker, "describe-producers", "--topic", topic, "--partition", "0"))
    assert [r["CurrentTransactionStartOffset"] for r in producers
            if int(r["ProducerId"]) == pid] == ["None"], producers

    # the producer aborts for itself (markers on both partitions), then commits one
    p.abort_transaction(30)
    p.begin_transaction()
    for part in (0, 1):
        p.produce(topic, b"committed-%d" % part, partition=part)
    p.commit_transaction(30)
    # partition 0: 3 aborted, marker (tool), marker (producer), 1 committed, marker
    eventually(lambda: offsets_of(broker, topic, [0, 1], READ_COMMITTED) == {0: PER + 4, 1: PER + 3},
               30, "both partitions stable after the commit")
    got = [v for _, v in read_partition(broker.bootstrap, topic, 0, "read_committed")]
    assert got == [b"committed-0"], got
    desc = table(tool(broker, "describe", "--transactional-id", txn_id))[0]
    assert desc["TransactionState"] == "CompleteCommit", desc
    del p

    code = broker.stop()
    assert code == 0, f"clean shutdown exited {code}"
    dump_log(partition_dir(broker, topic, 0), pid)


BATCH = re.compile(r"^baseOffset: (\d+) lastOffset: (\d+) count: (\d+) .*producerId: (-?\d+) "
                   r"producerEpoch: (-?\d+) .*isTransactional: (\w+) isControl: (\w+)")
MARKER = re.compile(r"^\| offset: (\d+) .*endTxnMarker: (ABORT|COMMIT) coordinatorEpoch: (\d+)")
TXN_ENTRY = re.compile(r"^version: (\d+) producerId: (\d+) firstOffset: (\d+) lastOffset: (\d+) "
                       r"lastStableOffset: (\d+)$")


def dump_log(pdir, pid):
    logs = sorted(pdir.glob("*.log"))
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, logs)),
                     "--deep-iteration", "--print-data-log")
    out = res.stdout + res.stderr
    assert "exception" not in out.lower() and "corrupt" not in out.lower(), out[-3000:]
    batches = [BATCH.match(line).groups() for line in res.stdout.splitlines()
               if line.startswith("baseOffset: ")]
    markers = [MARKER.match(line).groups() for line in res.stdout.splitlines()
               if "endTxnMarker" in line]
    # (base offset, producer id, transactional, control)
    shape = [(int(b[0]), int(b[3]), b[5], b[6]) for b in batches]
    assert shape[0] == (0, pid, "true", "false"), shape
    controls = [(s[0]) for s in shape if s[3] == "true"]
    assert controls == [PER, PER + 1, PER + 3], f"control batches at {controls}: {shape}"
    assert all(s[1] == pid and s[2] == "true" for s in shape), shape
    assert [(int(m[0]), m[1]) for m in markers] == \
        [(PER, "ABORT"), (PER + 1, "ABORT"), (PER + 3, "COMMIT")], markers

    indexes = sorted(pdir.glob("*.txnindex"))
    assert indexes, f"no .txnindex in {sorted(p.name for p in pdir.iterdir())}"
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, indexes)))
    entries = [TXN_ENTRY.match(line).groups() for line in res.stdout.splitlines()
               if line.startswith("version: ")]
    # the tool's abort covers 0..3; the producer's own abort has no data on partition 0
    # (Kafka writes an index entry for it too: first = last = its marker)
    assert entries, res.stdout
    first = entries[0]
    assert (int(first[1]), int(first[2]), int(first[3])) == (pid, 0, PER), entries
    assert all(int(e[1]) == pid for e in entries), entries


# --- transactional.id.expiration.ms ------------------------------------------------------------

def describe_transactions_v0(cid, ids):
    return (wire.header_v2(65, 0, cid) + uvarint(len(ids) + 1)
            + b"".join(compact_string(i) for i in ids) + uvarint(0))


def read_describe_transactions_v0(r):
    """{transactional id: (error, state, producer id, epoch)}"""
    r.skip_tags()
    r.i32()  # throttle_time_ms

    def partitions(r):
        read_compact_string(r)
        r.compact_array(lambda r: r.i32())
        r.skip_tags()

    def state(r):
        error, tid, st = r.i16(), read_compact_string(r), read_compact_string(r)
        r.i32()  # timeout
        r.i64()  # start time
        pid, epoch = r.i64(), r.i16()
        r.compact_array(partitions)
        r.skip_tags()
        return tid, (error, st, pid, epoch)
    out = dict(r.compact_array(state))
    r.skip_tags()
    return out


def describe(broker, txn_id):
    with Conn(broker) as c:
        return c.call(describe_transactions_v0, read_describe_transactions_v0, [txn_id])[txn_id]


def one_transaction(broker, txn_id, topic):
    t = RawTxn(broker, txn_id)
    try:
        assert t.add_partitions({topic: [0]}) == {(topic, 0): NONE}
        assert t.produce(topic, 0, [b"x"])["error"] == NONE
        assert t.end(True) == NONE
        return t.pid, t.epoch
    finally:
        t.close()


def test_transactional_id_expiration(tmp_path):
    broker = txn_broker(tmp_path / "broker", {
        "transactional.id.expiration.ms": 2000,
        "transaction.remove.expired.transaction.cleanup.interval.ms": 500}).start()
    try:
        topic = f"expire-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, 1)
        idle, busy = f"idle-{uuid.uuid4().hex[:8]}", f"busy-{uuid.uuid4().hex[:8]}"
        pid, epoch = one_transaction(broker, idle, topic)
        assert describe(broker, idle)[0] == NONE
        # `busy` stays in use: a transaction every half second, each re-initialising the id
        busy_pid, _ = one_transaction(broker, busy, topic)

        def expired():
            return describe(broker, idle)[0] == TRANSACTIONAL_ID_NOT_FOUND
        deadline = time.monotonic() + 30
        while not expired():
            assert time.monotonic() < deadline, f"{idle} never expired: {describe(broker, idle)}"
            again, _ = one_transaction(broker, busy, topic)
            assert again == busy_pid, "the busy id lost its producer id"
            time.sleep(0.5)
        st = describe(broker, busy)
        assert st[0] == NONE and st[2] == busy_pid, st
        # a forgotten id starts over: a new producer id at epoch 0
        new_pid, new_epoch = one_transaction(broker, idle, topic)
        assert new_pid != pid and new_epoch == 0, (pid, epoch, new_pid, new_epoch)
    finally:
        broker.stop()


# --- the log cleaner --------------------------------------------------------------------------

CLEANER_BROKER = {"log.cleaner.backoff.ms": 200}
COMPACTED = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
             "delete.retention.ms": "3000"}


def test_cleaner_drops_aborted_data_then_its_marker(tmp_path):
    """A compacted topic (segments rolled every 100 ms, cleaned as soon as dirty): the cleaner
    removes an aborted transaction's records at once, and its ABORT marker once
    delete.retention.ms has passed since the first cleaning that kept it. The committed
    records and their COMMIT markers stay; read_committed reads the same before and after."""
    broker = txn_broker(tmp_path / "broker", CLEANER_BROKER).start()
    try:
        topic = f"clean-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap, topic, 1, config=COMPACTED)
        p = Producer({"bootstrap.servers": broker.bootstrap, "logger": LOG,
                      "transactional.id": f"clean-txn-{uuid.uuid4().hex[:8]}"})
        p.init_transactions(30)

        def txn(values, commit):
            p.begin_transaction()
            for k, v in values:
                p.produce(topic, v, key=k, partition=0)
            assert p.flush(30) == 0
            (p.commit_transaction if commit else p.abort_transaction)(30)

        txn([(b"k%d" % i, b"aborted-%d" % i) for i in range(3)], commit=False)  # 0-2, marker 3
        txn([(b"k%d" % i, b"committed-%d" % i) for i in range(3)], commit=True)  # 4-6, marker 7
        committed = [(4 + i, b"committed-%d" % i) for i in range(3)]
        time.sleep(0.3)
        txn([(b"roll", b"roll-1")], commit=True)  # a new segment: 8, marker 9

        def uncommitted():
            return read_partition(broker.bootstrap, topic, 0, "read_uncommitted")
        eventually(lambda: uncommitted() == committed + [(8, b"roll-1")], 30,
                   "the aborted records cleaned away")
        assert read_partition(broker.bootstrap, topic, 0, "read_committed") == \
            committed + [(8, b"roll-1")]
        # after delete.retention.ms, another roll and cleaning: the ABORT marker goes too
        time.sleep(3.5)
        txn([(b"roll", b"roll-2")], commit=True)  # 10, marker 11
        time.sleep(0.3)
        txn([(b"roll", b"roll-3")], commit=True)  # 12, marker 13
        # roll-1 is replaced by roll-2; roll-3 is in the active segment, never cleaned
        eventually(lambda: [o for o, _ in uncommitted()] == [4, 5, 6, 10, 12], 30,
                   "roll-1 compacted away")
        # The marker gets its horizon in the first pass that finds its transaction empty (for
        # Kafka, possibly only the one after roll-2), and goes in the first pass after it: one
        # that expired horizons trigger on their own, dirty or not.
        time.sleep(3 + 2)
        del p
        assert broker.stop() == 0
        pdir = partition_dir(broker, topic, 0)
        res = kafka_tool("kafka-dump-log", None, "--files",
                         ",".join(map(str, sorted(pdir.glob("*.log")))), "--deep-iteration")
        markers = [(int(m[0]), m[1]) for m in (MARKER.match(line).groups()
                   for line in res.stdout.splitlines() if "endTxnMarker" in line)]
        assert (3, "ABORT") not in markers, f"the ABORT marker outlived delete.retention.ms: {markers}"
        assert (7, "COMMIT") in markers, f"the COMMIT marker of kept records: {markers}"
    finally:
        if broker.alive():
            broker.stop()
