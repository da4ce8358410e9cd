"""Shared pieces of the transaction proto-tests (issue 14), for Gregor and, with
PROTO_TESTS_TARGET=kafka, for Apache Kafka 4.3.1 itself (targets.py):

- Broker settings by Kafka's names (`TXN_BROKER`, `TXN_CLUSTER`): the transaction state log's
  replication factor, min ISR and partition count, the timed-out-transaction abort interval,
  `transaction.max.timeout.ms` and `transactional.id.expiration.ms`. Gregor gets the same keys
  (GREGOR_KAFKA_* variables); Kafka needs the replication settings on a one-node cluster.
- `txn_broker()`: an unstarted single-node broker of the selected target with them; `kill9()`
  and `start_again()` for either target.
- `TxnCluster`: three brokers (Gregor's cluster.py nodes, or Kafka nodes in KRaft combined
  mode) with RF 3 for every internal topic and min.insync.replicas=2.
- Raw wire (on top of wire.py): FindCoordinator(TRANSACTION), InitProducerId with a
  transactional id, AddPartitionsToTxn v3, AddOffsetsToTxn v3, TxnOffsetCommit v3, EndTxn v3,
  Produce v9 of a transactional batch, OffsetFetch v7 (require_stable), ListOffsets v7 with an
  isolation level (READ_COMMITTED gives the last stable offset), Fetch v11 (aborted
  transactions). `RawTxn` drives one transactional producer with them.
- Reading back: `read_partition()` (confluent-kafka, read_committed or read_uncommitted, from
  offset 0 to the LSO or high watermark), `check_transactions()` (every transaction seen is
  complete, every acknowledged commit is there, nothing aborted is visible).
- `TxnWorker`: the Java transactional producer of proto-tests/java/src (TxnWorker.java) as
  its own process, driven step by step over stdin, so that a test can kill a broker between
  two steps of a transaction.
"""
import os
import queue
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from clients import LOG
from conftest import REPO, Broker, free_ports
from javatools import JVM_OPTS, _java, java_classpath
from targets import TARGET, KafkaReferenceBroker, new_target
from wire import Reader, compact_string, i8, i16, i32, i64, uvarint

# --- Kafka error codes ---------------------------------------------------------------------
NONE = 0
NOT_LEADER_OR_FOLLOWER = 6
REQUEST_TIMED_OUT = 7
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
NOT_ENOUGH_REPLICAS = 19
CONCURRENT_TRANSACTIONS = 51
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
TRANSACTIONAL_ID_NOT_FOUND = 105
PRODUCER_FENCED = 90
UNSTABLE_OFFSET_COMMIT = 88
TRANSACTION_ABORTABLE = 120
RETRIABLE = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
             CONCURRENT_TRANSACTIONS, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT}

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
COORDINATOR_TYPE_TRANSACTION = 1
TRANSACTIONAL = 0x10  # record batch attribute bit 4
CONTROL = 0x20  # bit 5
TIMEOUT = 30.0

# --- broker settings -------------------------------------------------------------------------

# Single node: Kafka needs the transaction state log's replication lowered to start one at all.
# Five partitions of __transaction_state instead of 50 (both brokers create fewer logs).
TXN_BROKER = {
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.state.log.num.partitions": 5,
    "transaction.max.timeout.ms": 900000,
    "transactional.id.expiration.ms": 3600000,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 1000,
    "offsets.topic.replication.factor": 1,
    "group.initial.rebalance.delay.ms": 0,
}

# Three nodes: RF 3 everywhere, and a write needs two in-sync replicas.
TXN_CLUSTER = {
    **TXN_BROKER,
    "transaction.state.log.replication.factor": 3,
    "transaction.state.log.min.isr": 2,
    "offsets.topic.replication.factor": 3,
    "default.replication.factor": 3,
    "min.insync.replicas": 2,
}


def txn_broker(workdir, extra=None):
    """An unstarted single-node broker of the selected target with TXN_BROKER (+ extra), in
    `workdir` (made if missing)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return new_target(workdir, {**TXN_BROKER, **(extra or {})})


def kill9(node):
    """SIGKILL a broker (either target) and reap it."""
    node.stopped_on_purpose = True
    node.proc.kill()
    node.proc.wait()


def start_again(node, timeout=90):
    """Starts a stopped single-node broker on its data (Gregor: ready; Kafka: answering
    Metadata)."""
    if isinstance(node, KafkaReferenceBroker):
        return node.start(timeout=timeout)
    return node.start(timeout=timeout)


def stop_module_broker(b):
    """Module teardown: the broker must have stayed up, and stop cleanly."""
    was_alive = b.alive()
    code = b.stop()
    assert was_alive, "the broker died during the module's tests\n" + b.log_tail()
    assert code == 0, f"broker exited with {code} on SIGTERM\n" + b.log_tail()


def eventually(cond, timeout, what, interval=0.2):
    """Polls cond() until it returns something truthy (returned). An AssertionError or a
    KafkaException/OSError inside cond counts as 'not yet'; the last one is reported."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except (AssertionError, KafkaException, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout}s (last: {last})")
        time.sleep(interval)


def create_topic(bootstrap, name, partitions, rf=1, config=None):
    a = AdminClient({"bootstrap.servers": bootstrap, "logger": LOG})
    fut = a.create_topics([NewTopic(name, partitions, rf, config=config or {})],
                          operation_timeout=10, request_timeout=TIMEOUT)
    fut[name].result(TIMEOUT)

    def ready():
        md = a.list_topics(name, timeout=10)
        t = md.topics.get(name)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 and len(p.isrs) == rf for p in t.partitions.values()))
    eventually(ready, 30, f"topic {name} with {partitions} partitions and full ISRs")


# --- raw wire --------------------------------------------------------------------------------

def compact_nullable_string(s):
    return uvarint(0) if s is None else compact_string(s)


def read_compact_string(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def find_coordinator_v2(cid, key, key_type=COORDINATOR_TYPE_TRANSACTION):
    return wire.find_coordinator_v2(cid, key, key_type)


def init_producer_id_v4(cid, transactional_id, timeout_ms=60000, producer_id=-1, epoch=-1):
    tid = compact_nullable_string(transactional_id)
    return (wire.header_v2(22, 4, cid) + tid + i32(timeout_ms) + i64(producer_id) + i16(epoch)
            + uvarint(0))


def read_init_producer_id_v4(r):
    r.skip_tags()
    r.i32()  # throttle_time_ms
    out = {"error": r.i16(), "producer_id": r.i64(), "producer_epoch": r.i16()}
    r.skip_tags()
    return out


def add_partitions_to_txn_v3(cid, txn_id, pid, epoch, partitions):
    """partitions: {topic: [partition]} (the client's form, v3 and below)."""
    topics = b"".join(compact_string(t) + uvarint(len(ps) + 1) + b"".join(i32(p) for p in ps)
                      + uvarint(0) for t, ps in partitions.items())
    return (wire.header_v2(24, 3, cid) + compact_string(txn_id) + i64(pid) + i16(epoch)
            + uvarint(len(partitions) + 1) + topics + uvarint(0))


def read_add_partitions_to_txn_v3(r):
    """{(topic, partition): error}"""
    r.skip_tags()
    r.i32()  # throttle_time_ms
    out = {}

    def part(r):
        p, e = r.i32(), r.i16()
        r.skip_tags()
        return p, e

    def topic(r):
        name = read_compact_string(r)
        for p, e in r.compact_array(part):
            out[(name, p)] = e
        r.skip_tags()
    r.compact_array(topic)
    r.skip_tags()
    return out


def add_offsets_to_txn_v3(cid, txn_id, pid, epoch, group):
    return (wire.header_v2(25, 3, cid) + compact_string(txn_id) + i64(pid) + i16(epoch)
            + compact_string(group) + uvarint(0))


def read_error_v3(r):
    """AddOffsetsToTxn v3 / EndTxn v3: throttle_time_ms, error_code."""
    r.skip_tags()
    r.i32()
    e = r.i16()
    r.skip_tags()
    return e


def end_txn_v3(cid, txn_id, pid, epoch, commit):
    return (wire.header_v2(26, 3, cid) + compact_string(txn_id) + i64(pid) + i16(epoch)
            + i8(1 if commit else 0) + uvarint(0))


def txn_offset_commit_v3(cid, txn_id, group, pid, epoch, offsets, generation=-1, member_id=""):
    """offsets: {(topic, partition): offset}"""
    by_topic = {}
    for (t, p), o in offsets.items():
        by_topic.setdefault(t, []).append((p, o))
    topics = b"".join(
        compact_string(t) + uvarint(len(ps) + 1)
        + b"".join(i32(p) + i64(o) + i32(-1) + compact_nullable_string("") + uvarint(0)
                   for p, o in ps) + uvarint(0)
        for t, ps in by_topic.items())
    return (wire.header_v2(28, 3, cid) + compact_string(txn_id) + compact_string(group)
            + i64(pid) + i16(epoch) + i32(generation) + compact_string(member_id)
            + compact_nullable_string(None) + uvarint(len(by_topic) + 1) + topics + uvarint(0))


def read_txn_offset_commit_v3(r):
    """{(topic, partition): error}"""
    r.skip_tags()
    r.i32()
    out = {}

    def part(r):
        p, e = r.i32(), r.i16()
        r.skip_tags()
        return p, e

    def topic(r):
        name = read_compact_string(r)
        for p, e in r.compact_array(part):
            out[(name, p)] = e
        r.skip_tags()
    r.compact_array(topic)
    r.skip_tags()
    return out


def offset_fetch_v7(cid, group, partitions, require_stable):
    """partitions: [(topic, partition)]"""
    by_topic = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    topics = b"".join(compact_string(t) + uvarint(len(ps) + 1) + b"".join(i32(p) for p in ps)
                      + uvarint(0) for t, ps in by_topic.items())
    return (wire.header_v2(9, 7, cid) + compact_string(group) + uvarint(len(by_topic) + 1)
            + topics + i8(1 if require_stable else 0) + uvarint(0))


def read_offset_fetch_v7(r):
    """(error, {(topic, partition): (offset, error)})"""
    r.skip_tags()
    r.i32()
    out = {}

    def part(r):
        p, o = r.i32(), r.i64()
        r.i32()  # committed_leader_epoch
        read_compact_string(r)  # metadata
        e = r.i16()
        r.skip_tags()
        return p, o, e

    def topic(r):
        name = read_compact_string(r)
        for p, o, e in r.compact_array(part):
            out[(name, p)] = (o, e)
        r.skip_tags()
    r.compact_array(topic)
    error = r.i16()
    r.skip_tags()
    return error, out


def list_offsets_v7(cid, topic, partitions, timestamp=-1, isolation=READ_COMMITTED):
    parts = b"".join(i32(p) + i32(-1) + i64(timestamp) + uvarint(0) for p in partitions)
    return (wire.header_v2(2, 7, cid) + i32(-1) + i8(isolation)
            + uvarint(2) + compact_string(topic) + uvarint(len(partitions) + 1) + parts
            + uvarint(0) + uvarint(0))


def read_list_offsets_v7(r):
    """{partition: (error, offset)}"""
    r.skip_tags()
    r.i32()
    out = {}

    def part(r):
        p, e, _ts, o, _epoch = r.i32(), r.i16(), r.i64(), r.i64(), r.i32()
        r.skip_tags()
        out[p] = (e, o)

    def topic(r):
        read_compact_string(r)
        r.compact_array(part)
        r.skip_tags()
    r.compact_array(topic)
    r.skip_tags()
    return out


def fetch_v11(cid, topic, partition, offset, isolation, max_wait_ms=0, max_bytes=1 << 20):
    return (wire.header_v1(1, 11, cid) + i32(-1) + i32(max_wait_ms) + i32(1) + i32(max_bytes)
            + i8(isolation) + i32(0) + i32(-1)
            + i32(1) + wire.string(topic) + i32(1)
            + i32(partition) + i32(-1) + i64(offset) + i64(-1) + i32(max_bytes)
            + i32(0) + wire.string(""))


def read_fetch_v11(r):
    """The single partition: dict error, high_watermark, last_stable_offset,
    log_start_offset, aborted ([(producer_id, first_offset)] or None), records (bytes)."""
    r.i32()  # throttle
    top_error = r.i16()
    r.i32()  # session id

    def part(r):
        p = {"index": r.i32(), "error": r.i16(), "high_watermark": r.i64(),
             "last_stable_offset": r.i64(), "log_start_offset": r.i64(),
             "aborted": r.array(lambda r: (r.i64(), r.i64()))}
        r.i32()  # preferred read replica
        n = r.i32()
        p["records"] = b"" if n < 0 else r.take(n)
        return p
    [(_, [p])] = r.array(lambda r: (r.string(), r.array(part)))
    p["top_error"] = top_error
    return p


def txn_batch(values, pid, epoch, base_sequence, transactional=True, timestamp=None):
    """A v2 batch of a (transactional) producer: uncompressed, base offset 0."""
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    records = b"".join(wire.record(i, v) for i, v in enumerate(values))
    attributes = TRANSACTIONAL if transactional else 0
    after_crc = (i16(attributes) + i32(len(values) - 1) + i64(timestamp) + i64(timestamp)
                 + i64(pid) + i16(epoch) + i32(base_sequence) + i32(len(values)) + records)
    after_length = i32(-1) + i8(2) + struct.pack(">I", wire.crc32c(after_crc)) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def produce_v9(cid, txn_id, topic, partition, batch, acks=-1, timeout_ms=10000):
    return (wire.header_v2(0, 9, cid) + compact_nullable_string(txn_id) + i16(acks)
            + i32(timeout_ms) + uvarint(2) + compact_string(topic)
            + uvarint(2) + i32(partition) + uvarint(len(batch) + 1) + batch + uvarint(0)
            + uvarint(0) + uvarint(0))


def read_produce_v9(r):
    """The single partition's result: dict error, base_offset, message."""
    r.skip_tags()

    def record_error(r):
        e = (r.i32(), read_compact_string(r))
        r.skip_tags()
        return e

    def part(r):
        p = {"index": r.i32(), "error": r.i16(), "base_offset": r.i64(),
             "log_append_time": r.i64(), "log_start_offset": r.i64(),
             "record_errors": r.compact_array(record_error),
             "message": read_compact_string(r)}
        r.skip_tags()
        return p

    def topic(r):
        t = (read_compact_string(r), r.compact_array(part))
        r.skip_tags()
        return t
    [(_, [p])] = r.compact_array(topic)
    r.i32()
    r.skip_tags()
    return p


class Conn:
    """One connection to a broker (anything with .port); numbers the requests."""

    def __init__(self, broker, timeout=TIMEOUT):
        self.sock = wire.connect(broker, timeout=timeout)
        self.cid = 0

    def call(self, encode, decode, *args, **kw):
        self.cid += 1
        return decode(wire.request(self.sock, encode(self.cid, *args, **kw), self.cid))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def retrying(f, what, timeout=30, retriable=RETRIABLE, error_of=lambda v: v):
    """Calls f() until its error (error_of(result)) is not retriable; returns the result."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if error_of(v) not in retriable:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {error_of(v)} after {timeout}s")
        time.sleep(0.1)


def find_coordinator(broker, key, key_type=COORDINATOR_TYPE_TRANSACTION, timeout=30):
    """The coordinator's node id for a transactional id (or group with key_type=0)."""
    with Conn(broker) as c:
        res = retrying(lambda: c.call(find_coordinator_v2, wire.read_find_coordinator_v2, key,
                                      key_type),
                       f"FindCoordinator({key})", timeout, error_of=lambda v: v["error"])
    assert res["error"] == NONE, f"FindCoordinator({key}, type {key_type}): {res}"
    return res["node_id"]


class RawTxn:
    """One transactional producer spoken by hand over one connection to a single-node broker
    (it is coordinator and leader of everything)."""

    def __init__(self, broker, txn_id, timeout_ms=60000):
        self.broker, self.txn_id = broker, txn_id
        assert find_coordinator(broker, txn_id) >= 0
        self.conn = Conn(broker)
        res = retrying(lambda: self.conn.call(init_producer_id_v4, read_init_producer_id_v4,
                                              txn_id, timeout_ms),
                       "InitProducerId", error_of=lambda v: v["error"])
        assert res["error"] == NONE, f"InitProducerId({txn_id}): {res}"
        self.pid, self.epoch = res["producer_id"], res["producer_epoch"]
        self.seq = {}

    def add_partitions(self, partitions):
        """{topic: [partitions]} -> {(topic, partition): error}, retrying CONCURRENT_TRANSACTIONS
        (the previous transaction still completing)."""
        def call():
            return self.conn.call(add_partitions_to_txn_v3, read_add_partitions_to_txn_v3,
                                  self.txn_id, self.pid, self.epoch, partitions)
        return retrying(call, "AddPartitionsToTxn",
                        error_of=lambda v: next((e for e in v.values() if e in RETRIABLE), NONE))

    def produce(self, topic, partition, values, transactional=True):
        seq = self.seq.get((topic, partition), 0)
        batch = txn_batch(values, self.pid, self.epoch, seq, transactional)
        res = self.conn.call(produce_v9, read_produce_v9, self.txn_id if transactional else None,
                             topic, partition, batch)
        if res["error"] == NONE:
            self.seq[(topic, partition)] = seq + len(values)
        return res

    def add_offsets(self, group):
        return retrying(lambda: self.conn.call(add_offsets_to_txn_v3, read_error_v3, self.txn_id,
                                               self.pid, self.epoch, group),
                        "AddOffsetsToTxn")

    def txn_offset_commit(self, group, offsets):
        """TxnOffsetCommit to the group's coordinator (the same node here; FindCoordinator
        first, as clients do: Kafka creates __consumer_offsets on the first one)."""
        find_coordinator(self.broker, group, key_type=0)
        return retrying(lambda: self.conn.call(txn_offset_commit_v3, read_txn_offset_commit_v3,
                                               self.txn_id, group, self.pid, self.epoch, offsets),
                        "TxnOffsetCommit",
                        error_of=lambda v: next((e for e in v.values() if e in RETRIABLE), NONE))

    def end(self, commit):
        return retrying(lambda: self.conn.call(end_txn_v3, read_error_v3, self.txn_id, self.pid,
                                               self.epoch, commit), "EndTxn")

    def close(self):
        self.conn.close()


def offsets_of(broker, topic, partitions, isolation, timeout=30):
    """{partition: offset} of ListOffsets(latest) at `isolation` (READ_COMMITTED: the last
    stable offset; READ_UNCOMMITTED: the high watermark), asked of `broker`, retrying the
    errors a leader answers while it loads (NOT_LEADER_OR_FOLLOWER etc.)."""
    def call():
        with Conn(broker, timeout=10) as c:
            return c.call(list_offsets_v7, read_list_offsets_v7, topic, list(partitions),
                          -1, isolation)
    res = retrying(call, f"ListOffsets {topic} isolation {isolation}", timeout,
                   error_of=lambda v: next((e for e, _ in v.values() if e != NONE), NONE),
                   retriable=RETRIABLE | {COORDINATOR_LOAD_IN_PROGRESS, 5, 3})
    bad = {p: e for p, (e, _) in res.items() if e != NONE}
    assert not bad, f"ListOffsets {topic}: errors {bad}"
    return {p: o for p, (_, o) in res.items()}


def lso(broker, topic, partition):
    return offsets_of(broker, topic, [partition], READ_COMMITTED)[partition]


def hwm(broker, topic, partition):
    return offsets_of(broker, topic, [partition], READ_UNCOMMITTED)[partition]


# --- reading back ----------------------------------------------------------------------------

def read_partition(bootstrap, topic, partition, isolation, end=None, timeout=60):
    """[(offset, value)] of one partition from offset 0 up to `end` (exclusive; default: what
    the consumer's own end of partition says) with isolation.level read_committed or
    read_uncommitted (the string)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-read-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "isolation.level": isolation,
                  "check.crcs": True, "logger": LOG})
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if end is None or m.offset() >= end:
                        return out
                    continue
                raise KafkaException(m.error())
            out.append((m.offset(), m.value()))
            if end is not None and m.offset() >= end - 1:
                return out
        raise AssertionError(f"{topic}/{partition} ({isolation}): not read up to "
                             f"{end if end is not None else 'its end'} in {timeout}s; "
                             f"{len(out)} records, last {out[-1] if out else None}")
    finally:
        c.close()


def parse_value(v):
    """Values written by the transaction tests: b"<txn>:<partition>:<index>" (with an
    optional tag after a second colon-separated field set: b"t<txn>:p<part>:i<idx>")."""
    txn, part, idx = v.decode().split(":")[:3]
    return int(txn), int(part), int(idx)


def check_transactions(seen, per_partition, partitions, committed=(), aborted=()):
    """Problems (a list) in what read_committed consumers saw: `seen` {partition: [values]}
    with values b"<txn>:<partition>:<index>", `per_partition` records a transaction writes to
    each of `partitions`. Every transaction seen must be whole (every index on every
    partition, once, in order); every `committed` one must be there; no `aborted` one."""
    problems = []
    got = {}
    for p, values in seen.items():
        for v in values:
            txn, vp, idx = parse_value(v)
            if vp != p:
                problems.append(f"txn {txn} record for partition {vp} found in partition {p}")
            got.setdefault(txn, {}).setdefault(p, []).append(idx)
    for txn, parts in sorted(got.items()):
        want = {p: list(range(per_partition)) for p in partitions}
        if parts != want:
            problems.append(f"txn {txn} torn or duplicated: { {p: parts.get(p) for p in partitions} }")
    for txn in committed:
        if txn not in got:
            problems.append(f"txn {txn} was acknowledged as committed but is not visible")
    for txn in aborted:
        if txn in got:
            problems.append(f"txn {txn} was aborted but read_committed sees it")
    return problems


# --- the Java transactional worker -----------------------------------------------------------

class TxnWorker:
    """proto-tests/java/src/gregor/prototests/TxnWorker.java as a process. Commands go to its
    stdin, one a line; it answers each with one line (see the Java file). Lines are read by a
    thread so that a test can wait for one with a timeout."""

    def __init__(self, workdir, bootstrap, topic, partitions, txn_id, per_partition=3,
                 txn_timeout_ms=60000, extra=()):
        self.log_path = Path(workdir) / f"txn-worker-{txn_id}.log"
        cp = java_classpath()
        cmd = [_java(), *JVM_OPTS, "-cp", cp, "gregor.prototests.TxnWorker", bootstrap, topic,
               str(partitions), txn_id, str(per_partition), str(txn_timeout_ms), *extra]
        self._err = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.transcript = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect("READY", timeout=90)

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, command):
        self.transcript.append(f"> {command}")
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def next_line(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"TxnWorker said nothing for {timeout}s\n{self.report()}") from None
        if line is None:
            raise AssertionError(f"TxnWorker exited ({self.proc.poll()})\n{self.report()}")
        self.transcript.append(f"< {line}")
        return line

    def expect(self, *prefixes, timeout=120):
        """The next line that starts with one of `prefixes` (other lines are kept in the
        transcript), as a list of words."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if line.split(" ")[0] in prefixes:
                return line.split(" ")

    def do(self, command, *answers, timeout=120):
        self.send(command)
        return self.expect(*answers, timeout=timeout)

    def report(self):
        try:
            err = self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            err = ""
        return "transcript:\n" + "\n".join(self.transcript[-40:]) + "\nstderr:\n" + err

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self, timeout=60):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        self._err.close()


# --- a three-node cluster --------------------------------------------------------------------

class TxnCluster:
    """Three brokers of the selected target with TXN_CLUSTER: Gregor's cluster.py nodes, or
    Kafka nodes (KRaft combined mode, static voters). Nodes by id in .nodes; each has .port,
    .bootstrap, .log_tail()."""

    def __init__(self, workdir, size=3, extra=None):
        self.workdir = Path(workdir)
        self.size = size
        config = {**TXN_CLUSTER, **(extra or {})}
        if TARGET == "gregor":
            from cluster import Cluster
            self.gregor = Cluster(self.workdir, size, config)
            self.nodes = self.gregor.nodes
            return
        self.gregor = None
        ports = free_ports(2 * size)
        pairs = [ports[2 * i:2 * i + 2] for i in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p[1]}" for i, p in enumerate(pairs))
        cluster_id = os.urandom(11).hex()[:22]
        self.nodes = {}
        for i, p in enumerate(pairs):
            d = self.workdir / f"node-{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            n = KafkaReferenceBroker(d, config, node_id=i + 1, ports=tuple(p), voters=voters,
                                     log_level="info")
            n.cluster_id = cluster_id
            n.stopped_on_purpose = False
            self.nodes[i + 1] = n

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def bootstrap_without(self, node_id):
        return ",".join(n.bootstrap for i, n in self.nodes.items() if i != node_id)

    def start(self, timeout=120):
        if self.gregor:
            self.gregor.start(timeout)
            return self
        for n in self.nodes.values():
            n.launch()
        for i in self.nodes:
            self._wait_registered(i, timeout)
        return self

    def _wait_registered(self, node_id, timeout):
        n = self.nodes[node_id]

        def ok():
            assert n.proc.poll() is None, f"node {node_id} exited\n" + n.log_tail()
            with wire.connect(n, timeout=5) as s:
                md = wire.read_metadata(wire.request(s, wire.metadata_v1(1), 1), 1)
            return len(md["brokers"]) == self.size
        eventually(ok, timeout, f"node {node_id} lists {self.size} brokers", interval=0.3)

    def kill9(self, node_id):
        kill9(self.nodes[node_id])

    def start_node(self, node_id, timeout=120):
        if self.gregor:
            return self.gregor.start_node(node_id, timeout)
        n = self.nodes[node_id]
        n.stopped_on_purpose = False
        n.launch()
        self._wait_registered(node_id, timeout)
        return n

    def alive_nodes(self):
        return [n for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]

    def metadata(self, topics=None):
        for n in self.alive_nodes():
            try:
                with wire.connect(n, timeout=5) as s:
                    return wire.read_metadata(wire.request(s, wire.metadata_v1(1, topics), 1), 1)
            except (OSError, AssertionError):
                continue
        raise AssertionError("no node answers Metadata")

    def partitions(self, topic):
        """{partition: (leader, isr)} from a live node's Metadata."""
        md = self.metadata([topic])
        [t] = md["topics"]
        assert t["error"] == 0, f"{topic}: error {t['error']}"
        return {p["index"]: (p["leader"], sorted(p["isr"])) for p in t["partitions"]}

    def leaders(self, topic):
        return {p: lead for p, (lead, _) in self.partitions(topic).items()}

    def wait_fully_replicated(self, topics, timeout=120):
        def ok():
            for t in topics:
                for p, (lead, isr) in self.partitions(t).items():
                    assert lead > 0 and len(isr) == self.size, f"{t}/{p}: leader {lead} isr {isr}"
            return True
        eventually(ok, timeout, f"every partition of {list(topics)} led with a full ISR",
                   interval=0.5)

    def node_for(self, node_id):
        return self.nodes[node_id]

    def crashed(self):
        return {i: n.proc.returncode for i, n in self.nodes.items()
                if n.proc is not None and n.proc.poll() is not None
                and not getattr(n, "stopped_on_purpose", False)}

    def shutdown(self, timeout=60):
        """SIGTERM to every running node at once, SIGKILL after `timeout`. {id: exit code}
        (a JVM's 143 after SIGTERM counts as 0)."""
        running = {i: n for i, n in self.nodes.items()
                   if n.proc is not None and n.proc.poll() is None}
        for n in running.values():
            n.stopped_on_purpose = True
            if getattr(n, "paused", False):
                n.proc.send_signal(signal.SIGCONT)
            n.proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for i, n in running.items():
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
                code = n.proc.returncode
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
                code = "SIGKILL after SIGTERM timeout"
            codes[i] = 0 if code == 143 and not isinstance(n, Broker) else code
        return codes

    def log_tails(self, lines=40):
        return "\n".join(f"----- node {i} -----\n{n.log_tail(lines)}" for i, n in self.nodes.items())


def kafka_tool_bootstrap(bootstrap):
    """An object with .bootstrap, for javatools.kafka_tool(..., broker=...)."""
    class _B:
        pass
    b = _B()
    b.bootstrap = bootstrap
    return b


__all__ = [n for n in dir() if not n.startswith("_")] + ["REPO"]
