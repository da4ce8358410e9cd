"""Idempotent produce, byte for byte: InitProducerId v4 and Produce v9 encoded by hand (on top of
wire.py), so each test controls the producer id, epoch and sequence of every batch.

Kafka's rules (ProducerStateManager / ProducerAppendInfo):
- a batch equal in (producer id, epoch, first and last sequence) to one of the last 5 batches of
  that producer is a duplicate: error NONE with the original base offset, nothing written;
- a sequence that does not follow the last one in the same epoch: OUT_OF_ORDER_SEQUENCE_NUMBER;
- a new (higher) epoch must start at sequence 0;
- an epoch lower than the last seen one: INVALID_PRODUCER_EPOCH;
- producer ids are never reused, across restarts too; producer state survives a restart.
Plus the confluent-kafka producer with enable.idempotence=true.
"""
import struct
import time

import wire
from clients import TIMEOUT, consume_range, create_topic, producer, watermarks
from targets import make_target  # noqa: F401  (fixture)
from wire import Reader, compact_string, i8, i16, i32, i64, uvarint, varint

NONE, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH = 0, 45, 47
RETRIABLE = {14, 15}  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE


def init_producer_id_v4(correlation_id, transactional_id=None, timeout_ms=60000):
    tid = uvarint(0) if transactional_id is None else compact_string(transactional_id)
    return (wire.header_v2(22, 4, correlation_id) + tid + i32(timeout_ms)
            + i64(-1) + i16(-1) + uvarint(0))


def read_init_producer_id_v4(r):
    r.skip_tags()  # response header v1
    r.i32()  # throttle_time_ms
    out = {"error": r.i16(), "producer_id": r.i64(), "producer_epoch": r.i16()}
    r.skip_tags()
    return out


def idempotent_batch(values, producer_id, epoch, base_sequence, timestamp=None):
    """A v2 batch from an idempotent producer: uncompressed, base offset 0. The timestamp must be
    recent: Kafka forgets producers whose last batch is older than producer.id.expiration.ms
    (1 day), on restart too."""
    if timestamp is None:
        timestamp = int(time.time() * 1000)
    records = b"".join(wire.record(i, v) for i, v in enumerate(values))
    after_crc = (i16(0) + i32(len(values) - 1) + i64(timestamp) + i64(timestamp)
                 + i64(producer_id) + i16(epoch) + i32(base_sequence)
                 + i32(len(values)) + records)
    after_length = i32(-1) + i8(2) + struct.pack(">I", wire.crc32c(after_crc)) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def produce_v9(correlation_id, topic, partition, batch, acks=-1, timeout_ms=10000):
    return (wire.header_v2(0, 9, correlation_id) + uvarint(0) + i16(acks) + i32(timeout_ms)
            + uvarint(2) + compact_string(topic)
            + uvarint(2) + i32(partition) + uvarint(len(batch) + 1) + batch + uvarint(0)
            + uvarint(0) + uvarint(0))


def _compact_nullable_string(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def read_produce_v9(r):
    """The single partition's result: dict with error, base_offset, log_start_offset, message."""
    r.skip_tags()  # response header v1

    def record_error(r):
        e = (r.i32(), _compact_nullable_string(r))
        r.skip_tags()
        return e

    def part(r):
        p = {"index": r.i32(), "error": r.i16(), "base_offset": r.i64(),
             "log_append_time": r.i64(), "log_start_offset": r.i64(),
             "record_errors": r.compact_array(record_error),
             "message": _compact_nullable_string(r)}
        r.skip_tags()
        return p

    def topic(r):
        t = (_compact_nullable_string(r), r.compact_array(part))
        r.skip_tags()
        return t

    [(_, [p])] = r.compact_array(topic)
    r.i32()  # throttle_time_ms
    r.skip_tags()
    assert r.done(), "trailing bytes in the Produce v9 response"
    return p


class Session:
    """One connection; numbers the requests."""

    def __init__(self, broker):
        self.sock = wire.connect(broker, timeout=TIMEOUT)
        self.cid = 0
        self.sent = {}  # a batch sent again is sent byte for byte, as a producer's retry is

    def _next(self):
        self.cid += 1
        return self.cid

    def init_producer_id(self):
        """A new producer id. Retries the retriable errors that clients retry
        (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE), as Kafka answers with them
        while it fetches its first block of producer ids."""
        deadline = time.monotonic() + 10
        while True:
            cid = self._next()
            res = read_init_producer_id_v4(wire.request(self.sock, init_producer_id_v4(cid), cid))
            if res["error"] not in RETRIABLE or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert res["error"] == NONE, f"InitProducerId error {res['error']}"
        assert res["producer_id"] >= 0 and res["producer_epoch"] == 0, res
        return res["producer_id"]

    def produce(self, topic, values, pid, epoch, seq, partition=0):
        cid = self._next()
        key = (pid, epoch, seq, tuple(values))
        batch = self.sent.setdefault(key, idempotent_batch(values, pid, epoch, seq))
        return read_produce_v9(wire.request(self.sock, produce_v9(cid, topic, partition, batch), cid))

    def close(self):
        self.sock.close()


def ok(result, base_offset, what):
    assert (result["error"], result["base_offset"]) == (NONE, base_offset), f"{what}: {result}"


def values_in(broker, topic):
    return [m.value() for m in consume_range(broker, topic)]


def test_duplicate_batches_get_their_original_offsets(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    s = Session(broker)
    try:
        pid = s.init_producer_id()
        a, b, c = [b"a0", b"a1", b"a2"], [b"b0", b"b1"], [b"c0"]
        ok(s.produce(topic_name, a, pid, 0, 0), 0, "batch A, sequence 0")
        ok(s.produce(topic_name, b, pid, 0, 3), 3, "batch B, sequence 3")
        ok(s.produce(topic_name, c, pid, 0, 5), 5, "batch C, sequence 5")
        # retries of the last batch and of older ones (Kafka keeps the last 5 per producer)
        ok(s.produce(topic_name, c, pid, 0, 5), 5, "batch C sent again")
        ok(s.produce(topic_name, b, pid, 0, 3), 3, "batch B sent again")
        ok(s.produce(topic_name, a, pid, 0, 0), 0, "batch A sent again")
        # the producer goes on where it was
        ok(s.produce(topic_name, [b"d0"], pid, 0, 6), 6, "batch D, sequence 6")
        # a second producer has its own sequence space on the same partition
        pid2 = s.init_producer_id()
        assert pid2 != pid, "InitProducerId returned the same producer id twice"
        ok(s.produce(topic_name, [b"e0"], pid2, 0, 0), 7, "second producer, sequence 0")
    finally:
        s.close()
    assert watermarks(broker, topic_name) == (0, 8)
    assert values_in(broker, topic_name) == a + b + c + [b"d0", b"e0"]


def test_sequence_gap_is_rejected(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    s = Session(broker)
    try:
        pid = s.init_producer_id()
        ok(s.produce(topic_name, [b"x0", b"x1"], pid, 0, 0), 0, "sequence 0..1")
        r = s.produce(topic_name, [b"gap"], pid, 0, 5)
        assert r["error"] == OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence 5 after 1: {r}"
        r = s.produce(topic_name, [b"old"], pid, 0, 1)  # overlaps, but is no retry of a batch
        assert r["error"] == OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence 1 after 0..1: {r}"
        ok(s.produce(topic_name, [b"x2"], pid, 0, 2), 2, "sequence 2, in order")
    finally:
        s.close()
    assert watermarks(broker, topic_name) == (0, 3)
    assert values_in(broker, topic_name) == [b"x0", b"x1", b"x2"]


def test_stale_epoch_is_fenced(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    s = Session(broker)
    try:
        pid = s.init_producer_id()
        ok(s.produce(topic_name, [b"e0-0"], pid, 0, 0), 0, "epoch 0, sequence 0")
        ok(s.produce(topic_name, [b"e0-1"], pid, 0, 1), 1, "epoch 0, sequence 1")
        # an idempotent producer bumps its own epoch after an error (KIP-360); a new epoch
        # starts at sequence 0
        r = s.produce(topic_name, [b"e1-3"], pid, 1, 3)
        assert r["error"] == OUT_OF_ORDER_SEQUENCE_NUMBER, f"epoch 1 starting at sequence 3: {r}"
        ok(s.produce(topic_name, [b"e1-0"], pid, 1, 0), 2, "epoch 1, sequence 0")
        r = s.produce(topic_name, [b"e0-2"], pid, 0, 2)
        assert r["error"] == INVALID_PRODUCER_EPOCH, f"epoch 0 after epoch 1: {r}"
        ok(s.produce(topic_name, [b"e1-1"], pid, 1, 1), 3, "epoch 1, sequence 1")
    finally:
        s.close()
    assert values_in(broker, topic_name) == [b"e0-0", b"e0-1", b"e1-0", b"e1-1"]


def test_producer_state_and_ids_survive_restart(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    s = Session(broker)
    try:
        pid = s.init_producer_id()
        ok(s.produce(topic_name, [b"a0", b"a1"], pid, 0, 0), 0, "batch A")
        ok(s.produce(topic_name, [b"b0"], pid, 0, 2), 2, "batch B")
    finally:
        s.close()
    broker.restart()
    s = Session(broker)
    try:
        ok(s.produce(topic_name, [b"b0"], pid, 0, 2), 2, "batch B retried after a restart")
        r = s.produce(topic_name, [b"gap"], pid, 0, 9)
        assert r["error"] == OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence gap after a restart: {r}"
        ok(s.produce(topic_name, [b"c0"], pid, 0, 3), 3, "batch C after a restart")
        new_pid = s.init_producer_id()
        assert new_pid != pid, f"producer id {pid} handed out again after a restart"
    finally:
        s.close()
    assert values_in(broker, topic_name) == [b"a0", b"a1", b"b0", b"c0"]


def test_confluent_idempotent_producer(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name, partitions=2)
    p = producer(broker, **{"enable.idempotence": True, "linger.ms": 2,
                            "batch.num.messages": 50})
    acked, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset()))

    n = 2000
    for i in range(n):
        while True:
            try:
                p.produce(topic_name, b"v%d" % i, partition=i % 2, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    assert not errors, errors[:5]
    for part in (0, 1):
        offs = [o for pp, o in acked if pp == part]
        assert offs == list(range(n // 2)), f"partition {part} offsets not dense and in order"
        got = [m.value() for m in consume_range(broker, topic_name, partition=part)]
        assert got == [b"v%d" % i for i in range(part, n, 2)]
