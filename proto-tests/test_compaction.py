"""Log compaction (cleanup.policy=compact), as Kafka does it.

A topic with small time-based segments (segment.ms=100: a record produced more than 100 ms
after a segment's first one starts a new segment), min.cleanable.dirty.ratio=0.01 and
delete.retention.ms=3000, on a broker whose cleaner checks every 200 ms
(log.cleaner.backoff.ms; Gregor reads GREGOR_KAFKA_LOG_CLEANER_BACKOFF_MS):

1. Several values per key and a tombstone, then a record in a new segment (the active segment
   is never cleaned). After cleaning, each key keeps only its latest value, at the offset it was
   produced at; the tombstone is still there (the first cleaning only starts its
   delete.retention.ms); the log start offset and the high watermark do not move.
2. After delete.retention.ms, more records and another roll: the next cleaning drops the
   tombstone, and the record it deleted stays gone.
3. After a clean shutdown, Kafka's kafka-dump-log reads the segments: every batch has a valid
   CRC and holds exactly the surviving records, at their offsets.
"""
import re
import time

from clients import consume_range, create_topic, produce_all, watermarks
from javatools import kafka_tool
from targets import make_target, partition_dir  # noqa: F401  (fixture)

BROKER = {"log.cleaner.backoff.ms": 200}
TOPIC = {"cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
         "delete.retention.ms": "3000"}
DELETE_RETENTION_S = 3.0
CLEAN_TIMEOUT = 30.0
RECORD = re.compile(r"^\| offset: (\d+) .* keySize: (-?\d+) valueSize: (-?\d+) .*?"
                    r"(?: key: (\S*))? payload: ?(.*)$")


def produce(broker, topic, pairs):
    """[(key, value or None)] -> {offset: (key, value)}, each call its own batch(es)."""
    acked = produce_all(broker, topic, [v for _, v in pairs], keys=[k for k, _ in pairs])
    assert [o for o, _ in acked] == sorted(o for o, _ in acked)
    return {o: (k, v) for (o, v), (k, _) in zip(acked, pairs)}


def roll(broker, topic, key):
    """One record in a new segment (segment.ms has passed since the last record)."""
    time.sleep(0.3)
    return produce(broker, topic, [(key, b"roll")])


def log_contents(broker, topic):
    """{offset: (key, value)} read from the beginning."""
    return {m.offset(): (m.key(), m.value()) for m in consume_range(broker, topic)}


def wait_for(broker, topic, expected, what):
    deadline = time.monotonic() + CLEAN_TIMEOUT
    while True:
        got = log_contents(broker, topic)
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen after {CLEAN_TIMEOUT}s:\n got {got}\nwant {expected}")
        time.sleep(0.3)


def test_compaction_keeps_latest_values_and_drops_tombstones(make_target, topic_name):
    broker = make_target(BROKER)
    create_topic(broker, topic_name, config=TOPIC)

    produced = produce(broker, topic_name, [
        (b"k0", b"a0"), (b"k1", b"b0"), (b"k0", b"a1"), (b"del", b"d0"), (b"k2", b"c0"),
        (b"k0", b"a2"), (b"k1", b"b1"), (b"del", None)])
    assert sorted(produced) == list(range(8))
    # one batch, in the active segment: nothing to clean yet
    assert log_contents(broker, topic_name) == produced
    produced.update(roll(broker, topic_name, b"roll-1"))
    assert watermarks(broker, topic_name) == (0, 9)

    # the latest value per key, at its own offset; the tombstone stays for now
    latest = {4: (b"k2", b"c0"), 5: (b"k0", b"a2"), 6: (b"k1", b"b1"), 7: (b"del", None),
              8: (b"roll-1", b"roll")}
    t_cleaned = time.monotonic()
    wait_for(broker, topic_name, latest, "the first cleaning")
    print(f"\nfirst cleaning seen after {time.monotonic() - t_cleaned:.1f}s")
    assert watermarks(broker, topic_name) == (0, 9), "compaction moved the log start or the HWM"
    # consuming from an offset the cleaner removed starts at the next record kept
    assert [m.offset() for m in consume_range(broker, topic_name, start=1)] == [4, 5, 6, 7, 8]

    # after delete.retention.ms, a newer value for k1 and another roll: the tombstone goes
    time.sleep(max(0.0, DELETE_RETENTION_S + 1.0 - (time.monotonic() - t_cleaned)))
    assert sorted(produce(broker, topic_name, [(b"k1", b"b2")])) == [9]
    roll(broker, topic_name, b"roll-2")
    final = {4: (b"k2", b"c0"), 5: (b"k0", b"a2"), 8: (b"roll-1", b"roll"),
             9: (b"k1", b"b2"), 10: (b"roll-2", b"roll")}
    wait_for(broker, topic_name, final, "the tombstone's removal")
    assert watermarks(broker, topic_name) == (0, 11)

    # on disk, as Kafka's own tool reads it
    assert broker.stop() == 0
    logs = sorted(partition_dir(broker, topic_name, 0).glob("*.log"))
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, logs)),
                     "--deep-iteration", "--print-data-log")
    assert "isvalid: false" not in res.stdout, res.stdout
    batches = re.findall(r"^baseOffset: (\d+) lastOffset: (\d+) count: (\d+) .* isvalid: (\w+)$",
                         res.stdout, re.M)
    assert batches and all(v == "true" for *_, v in batches), res.stdout
    dumped = {}
    for line in res.stdout.splitlines():
        if line.startswith("| offset: "):
            m = RECORD.match(line)
            assert m, f"unexpected kafka-dump-log line {line!r}"
            off, _, value_size, key, payload = m.groups()
            dumped[int(off)] = (key.encode(), None if value_size == "-1" else payload.encode())
    # the active segment holds the last roll record; everything before it is compacted
    assert dumped == final, res.stdout
