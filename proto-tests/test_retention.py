"""Retention, as Kafka does it: a background task (every log.retention.check.interval.ms) deletes
whole segments whose largest timestamp is older than retention.ms, or the oldest segments while
the partition is larger than retention.bytes, and moves the log start offset to the first
remaining offset. ListOffsets earliest then answers the new log start offset, and a fetch below
it gets OFFSET_OUT_OF_RANGE. Offsets never move back.

The broker runs with log.retention.check.interval.ms=200 (Gregor reads it as
GREGOR_KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS) and log.initial.task.delay.ms=0.
"""
import random
import string
import time

import wire
from clients import TIMEOUT, consume_range, create_topic, producer
from targets import make_target, partition_dir  # noqa: F401  (fixture)
from wire import Reader, i8, i32, i64

SEGMENT_BYTES = 1048576  # Kafka 4's minimum segment.bytes
BROKER = {"log.retention.check.interval.ms": 200, "log.initial.task.delay.ms": 0}
OFFSET_OUT_OF_RANGE = 1


def fetch_v5(broker, topic, partition, offset):
    """One Fetch v5: (error, high watermark, log start offset, records bytes)."""
    req = (wire.header_v1(1, 5, 7) + i32(-1) + i32(0) + i32(1) + i32(1 << 20) + i8(0)
           + i32(1) + wire.string(topic) + i32(1)
           + i32(partition) + i64(offset) + i64(-1) + i32(1 << 20))
    with wire.connect(broker) as s:
        r = wire.request(s, req, 7)
    r.i32()  # throttle_time_ms
    [(_, [p])] = r.array(lambda r: (r.string(), r.array(lambda r: (
        r.i32(), r.i16(), r.i64(), r.i64(), r.i64(),
        r.array(lambda r: (r.i64(), r.i64())), _bytes(r)))))
    _, error, hwm, _, log_start, _, records = p
    return error, hwm, log_start, records


def _bytes(r):
    n = r.i32()
    return None if n < 0 else r.take(n)


def earliest_latest(broker, topic, partition=0):
    with wire.connect(broker) as s:
        e = wire.read_list_offsets(wire.request(s, wire.list_offsets_v1(1, topic, partition, -2), 1), 1)
        l = wire.read_list_offsets(wire.request(s, wire.list_offsets_v1(2, topic, partition, -1), 2), 1)
    assert e[0] == 0 and l[0] == 0, f"ListOffsets errors {e} {l}"
    return e[2], l[2]


def produce(broker, topic, count, timestamp, size=1000, seed=0):
    """`count` records of `size` incompressible bytes, all with the given CreateTime; returns
    their offsets."""
    rnd = random.Random(seed)
    p = producer(broker, **{"linger.ms": 5, "batch.num.messages": 100})
    acked, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append(msg.offset())
    for _ in range(count):
        v = "".join(rnd.choices(string.ascii_letters, k=size)).encode()
        while True:
            try:
                p.produce(topic, v, partition=0, timestamp=timestamp, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0 and not errors, errors[:5]
    return acked


def segment_bases(broker, topic):
    return sorted(int(f.stem) for f in partition_dir(broker, topic, 0).glob("*.log"))


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} (after {timeout}s)"
        time.sleep(0.1)


def test_retention_ms_deletes_expired_segments(make_target, topic_name):
    broker = make_target(BROKER)
    create_topic(broker, topic_name, config={"segment.bytes": str(SEGMENT_BYTES),
                                             "retention.ms": "60000"})
    now = int(time.time() * 1000)
    # ~1.2 MB stamped 55 s ago, so expiring 5 s from now: a full segment, and some more
    old = produce(broker, topic_name, 1200, now - 55_000)
    bases_after_old = segment_bases(broker, topic_name)
    assert len(bases_after_old) >= 2 and bases_after_old[0] == 0, bases_after_old
    # ~1.2 MB stamped now: the segment the old ones spilled into gets recent records too
    new = produce(broker, topic_name, 1200, now, seed=1)
    assert old + new == list(range(2400))
    # the old segments are all expired except the one that also holds recent records
    keep_from = bases_after_old[-1]

    assert time.time() * 1000 < now + 4000, "producing took too long for this test"
    assert earliest_latest(broker, topic_name) == (0, 2400), "deleted before retention.ms"
    wait_for(lambda: earliest_latest(broker, topic_name)[0] > 0, 20,
             "log start offset still 0: expired segments not deleted")
    earliest, latest = earliest_latest(broker, topic_name)
    assert (earliest, latest) == (keep_from, 2400), \
        f"earliest/latest {earliest}/{latest}; segments were {bases_after_old}"
    bases = segment_bases(broker, topic_name)
    assert bases[0] == keep_from and all(b not in bases for b in bases_after_old[:-1]), \
        f"segments left: {bases}, before: {bases_after_old}"
    assert not (partition_dir(broker, topic_name, 0) / "00000000000000000000.log").exists()

    # a fetch below the log start offset is out of range; at it, it returns data
    for off in (0, keep_from - 1):
        error, hwm, log_start, _ = fetch_v5(broker, topic_name, 0, off)
        assert error == OFFSET_OUT_OF_RANGE, f"fetch at {off} below log start {keep_from}: {error}"
    error, hwm, log_start, records = fetch_v5(broker, topic_name, 0, keep_from)
    assert (error, hwm, log_start) == (0, 2400, keep_from) and records, (error, hwm, log_start)
    got = consume_range(broker, topic_name, start=keep_from)
    assert [m.offset() for m in got] == list(range(keep_from, 2400))

    # unexpired data stays: nothing more goes in the next retention checks
    time.sleep(1.0)
    assert earliest_latest(broker, topic_name) == (keep_from, 2400)


def test_expired_active_segment_is_rolled_and_deleted(make_target, topic_name):
    """When every segment has expired, Kafka rolls a new empty active segment at the log end
    offset and deletes the rest: the log start offset reaches the log end offset, and offsets
    go on from there."""
    broker = make_target(BROKER)
    create_topic(broker, topic_name, config={"retention.ms": "1000"})
    assert produce(broker, topic_name, 10, int(time.time() * 1000)) == list(range(10))
    wait_for(lambda: earliest_latest(broker, topic_name) == (10, 10), 15,
             "expired records not deleted")
    assert segment_bases(broker, topic_name) == [10]
    error, hwm, log_start, _ = fetch_v5(broker, topic_name, 0, 5)
    assert error == OFFSET_OUT_OF_RANGE, f"fetch at 5, log start 10: {error}"
    assert produce(broker, topic_name, 1, int(time.time() * 1000)) == [10]


def test_retention_bytes_deletes_oldest_segments(make_target, topic_name):
    broker = make_target(BROKER)
    create_topic(broker, topic_name, config={"segment.bytes": str(SEGMENT_BYTES),
                                             "retention.bytes": str(SEGMENT_BYTES)})
    now = int(time.time() * 1000)
    assert produce(broker, topic_name, 3000, now) == list(range(3000))  # ~3 MB
    wait_for(lambda: earliest_latest(broker, topic_name)[0] > 0, 15,
             "log start offset still 0: retention.bytes not enforced")
    time.sleep(0.6)  # let it finish
    pdir = partition_dir(broker, topic_name, 0)
    sizes = {int(f.stem): f.stat().st_size for f in pdir.glob("*.log")}
    bases = sorted(sizes)
    earliest, latest = earliest_latest(broker, topic_name)
    assert latest == 3000 and earliest == bases[0], (earliest, latest, bases)
    # Kafka deletes the oldest segments while the partition minus that segment stays at or
    # above retention.bytes: what is left is at most retention.bytes + one segment, and
    # dropping its oldest segment would go below retention.bytes
    total = sum(sizes.values())
    assert total - sizes[bases[0]] < SEGMENT_BYTES, f"segments left: {sizes}"
    error, _, log_start, _ = fetch_v5(broker, topic_name, 0, 0)
    assert error == OFFSET_OUT_OF_RANGE, f"fetch at 0, log start {earliest}: {error}"
