"""confluent-kafka (librdkafka 2.16) against Gregor: producer, consumer, and timestamps.

Covers: delivery reports with dense offsets (acks all/1/0), every codec (stored as sent),
assign/seek, offset reset, offsets_for_times, get_watermark_offsets, CreateTime and
LogAppendTime topics, MESSAGE_TOO_LARGE from a topic's max.message.bytes, fetches larger than
the max bytes, segment rolling, and a consumer long poll that wakes on new data (not on a
timer).
AdminClient (create/list/delete topics) is in test_confluent_admin.py.
"""
import json
import threading
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME,
                             TIMESTAMP_LOG_APPEND_TIME, KafkaError, TopicPartition)

from clients import (CODECS, TIMEOUT, assert_stored_codec, consume_range, consumer,
                     create_topic, produce_all, producer, watermarks)
from wire import batch_headers


def poll_value(c, timeout=10):
    """Next real message (skipping partition EOF events) or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
            continue
        assert m.error() is None, m.error()
        return m
    raise AssertionError(f"no message within {timeout}s")


@pytest.mark.parametrize("acks", ["all", "1"])
def test_producer_delivery_reports(broker, topic_name, acks):
    create_topic(broker, topic_name)
    values = [f"v{i}".encode() for i in range(1000)]
    acked = produce_all(broker, topic_name, values, acks=acks)
    assert acked == list(enumerate(values))
    assert [(m.offset(), m.value()) for m in consume_range(broker, topic_name)] == acked


@pytest.mark.parametrize("codec", list(CODECS))
def test_round_trip_codec(broker, topic_name, codec):
    create_topic(broker, topic_name)
    values = [f"{codec}-{i}-".encode() + b"z" * (i % 300) for i in range(3000)]
    keys = [f"k{i}".encode() for i in range(3000)]
    assert produce_all(broker, topic_name, values, keys=keys,
                       **{"compression.type": codec}) == list(enumerate(values))
    msgs = consume_range(broker, topic_name)
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == list(zip(range(3000), keys, values))
    assert_stored_codec(broker, topic_name, codec)


def test_producer_acks_0(broker, topic_name):
    create_topic(broker, topic_name)
    values = [f"v{i}".encode() for i in range(500)]
    produce_all(broker, topic_name, values, acks="0")  # no response: offsets are unknown
    deadline = time.monotonic() + 10
    while watermarks(broker, topic_name)[1] < len(values) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [(m.offset(), m.value()) for m in consume_range(broker, topic_name)] == list(
        enumerate(values))


def test_fetch_returns_batch_larger_than_max_bytes(broker, topic_name):
    create_topic(broker, topic_name)
    big = [bytes([65 + i]) * 20_000 for i in range(3)]
    for v in big:  # one batch each
        produce_all(broker, topic_name, [v], **{"compression.type": "none"})
    # KIP-74: the first batch is returned even when larger than the fetch limits.
    msgs = consume_range(broker, topic_name, **{"max.partition.fetch.bytes": 1000,
                                                 "fetch.max.bytes": 1000,
                                                 "message.max.bytes": 1000})
    assert [m.value() for m in msgs] == big


def test_producer_partitions_have_dense_offsets(broker, topic_name):
    create_topic(broker, topic_name, partitions=3)
    sent = {p: [f"p{p}-{i}".encode() for i in range(50 + 10 * p)] for p in range(3)}
    for p, values in sent.items():
        acked = produce_all(broker, topic_name, values, partition=p)
        assert acked == list(enumerate(values)), f"partition {p}"
    for p, values in sent.items():
        assert watermarks(broker, topic_name, p) == (0, len(values))
        assert [m.value() for m in consume_range(broker, topic_name, p)] == values


def test_consumer_assign_and_seek(broker, topic_name):
    create_topic(broker, topic_name)
    values = [f"m{i}".encode() for i in range(100)]
    produce_all(broker, topic_name, values)
    c = consumer(broker)
    try:
        c.assign([TopicPartition(topic_name, 0, 40)])
        assert [poll_value(c).offset() for _ in range(5)] == [40, 41, 42, 43, 44]
        c.seek(TopicPartition(topic_name, 0, 7))
        m = poll_value(c)
        assert (m.offset(), m.value()) == (7, b"m7")
        c.seek(TopicPartition(topic_name, 0, 99))
        assert poll_value(c).value() == b"m99"
        c.seek(TopicPartition(topic_name, 0, OFFSET_BEGINNING))
        assert poll_value(c).offset() == 0
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        time.sleep(1)
        produce_all(broker, topic_name, [b"new"])
        m = poll_value(c)
        assert (m.offset(), m.value()) == (100, b"new")
    finally:
        c.close()


def test_consumer_offset_out_of_range_resets(broker, topic_name):
    create_topic(broker, topic_name)
    produce_all(broker, topic_name, [b"a", b"b", b"c"])
    # Fetch at offset 50 > HWM: OFFSET_OUT_OF_RANGE, then auto.offset.reset applies.
    for reset, want in (("earliest", 0), ("latest", None)):
        c = consumer(broker, **{"auto.offset.reset": reset})
        try:
            c.assign([TopicPartition(topic_name, 0, 50)])
            if want is None:
                time.sleep(1.5)
                produce_all(broker, topic_name, [b"d"])
                want = 3
            assert poll_value(c).offset() == want
        finally:
            c.close()


def test_watermarks(broker, topic_name):
    create_topic(broker, topic_name, partitions=2)
    assert watermarks(broker, topic_name, 0) == (0, 0)
    produce_all(broker, topic_name, [b"x"] * 7, partition=0)
    produce_all(broker, topic_name, [b"y"] * 3, partition=1)
    assert watermarks(broker, topic_name, 0) == (0, 7)
    assert watermarks(broker, topic_name, 1) == (0, 3)


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_offsets_for_times(broker, topic_name, codec):
    create_topic(broker, topic_name)
    base = 1_700_000_000_000
    # Two batches: offsets 0-9 at base+i*1000, then 10-12 with out-of-order timestamps.
    ts = [base + i * 1000 for i in range(10)]
    produce_all(broker, topic_name, [b"a"] * 10, timestamps=ts, **{"compression.type": codec,
                                                                     "linger.ms": 50})
    late = [base + 20_000, base + 15_000, base + 30_000]
    produce_all(broker, topic_name, [b"b"] * 3, timestamps=late, **{"compression.type": codec,
                                                                      "linger.ms": 50})
    msgs = consume_range(broker, topic_name)
    assert [m.timestamp() for m in msgs] == [(TIMESTAMP_CREATE_TIME, t) for t in ts + late]
    # Kafka: the earliest offset whose timestamp is >= the target, or -1 if there is none.
    queries = {base - 5: 0, base: 0, base + 2500: 3, base + 9000: 9, base + 9001: 10,
               base + 16_000: 10, base + 20_001: 12, base + 30_000: 12, base + 30_001: -1}
    c = consumer(broker)
    try:
        got = {q: c.offsets_for_times([TopicPartition(topic_name, 0, q)], timeout=TIMEOUT)[0]
               for q in queries}
    finally:
        c.close()
    assert {q: tp.offset for q, tp in got.items()} == queries
    assert all(tp.error is None for tp in got.values())


def test_create_time_is_kept(broker, topic_name):
    create_topic(broker, topic_name, config={"message.timestamp.type": "CreateTime"})
    produce_all(broker, topic_name, [b"a", b"b"], timestamps=[1_600_000_000_123, 1_600_000_000_456])
    assert [m.timestamp() for m in consume_range(broker, topic_name)] == [
        (TIMESTAMP_CREATE_TIME, 1_600_000_000_123), (TIMESTAMP_CREATE_TIME, 1_600_000_000_456)]


def test_log_append_time(broker, topic_name):
    create_topic(broker, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    p = producer(broker, **{"linger.ms": 50})
    reports = []
    before = int(time.time() * 1000)
    for i in range(5):
        p.produce(topic_name, f"v{i}".encode(), partition=0, timestamp=1_000_000 + i,
                  on_delivery=lambda err, msg: reports.append((err, msg.timestamp())))
    assert p.flush(TIMEOUT) == 0
    after = int(time.time() * 1000)
    assert [r[0] for r in reports] == [None] * 5
    # The produce response carries the broker's append time (ProduceResponse log_append_time_ms).
    for kind, ts in (r[1] for r in reports):
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before - 1000 <= ts <= after + 1000
    msgs = consume_range(broker, topic_name)
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(5)]
    for m in msgs:
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)


def test_message_too_large(broker, topic_name):
    create_topic(broker, topic_name, config={"max.message.bytes": "1000"})
    assert produce_all(broker, topic_name, [b"s" * 100]) == [(0, b"s" * 100)]
    p = producer(broker, **{"compression.type": "none"})
    errors = []
    p.produce(topic_name, b"L" * 5000, partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(TIMEOUT) == 0
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE  # broker's MESSAGE_TOO_LARGE (10)
    assert watermarks(broker, topic_name) == (0, 1)
    assert produce_all(broker, topic_name, [b"t"]) == [(1, b"t")]
    # The topic config survives a restart.
    broker.restart()
    errors.clear()
    p = producer(broker, **{"compression.type": "none"})
    p.produce(topic_name, b"L" * 5000, partition=0, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(TIMEOUT) == 0
    assert [e and e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    assert watermarks(broker, topic_name) == (0, 2)


def test_segments_roll(broker, topic_name):
    create_topic(broker, topic_name, config={"segment.bytes": str(1 << 20)})
    base = 1_700_000_000_000
    n = 3000
    values = [f"{i:06d}".encode() + b"s" * 1000 for i in range(n)]
    for chunk in range(0, n, 500):  # several produce requests, each of several batches
        produce_all(broker, topic_name, values[chunk:chunk + 500],
                    timestamps=[base + i for i in range(chunk, chunk + 500)],
                    **{"compression.type": "none", "batch.size": 100_000})
    [part_dir] = broker.data_dir.rglob(f"{topic_name}-0")
    segments = sorted(part_dir.glob("*.log"))
    assert len(segments) >= 3, [p.name for p in segments]
    assert all(len(p.stem) == 20 and p.stem.isdigit() for p in segments)
    next_offset = 0  # each segment is named after its first offset; offsets run on densely
    for seg in segments:
        batches = batch_headers(seg.read_bytes())
        assert batches[0]["base_offset"] == int(seg.stem) == next_offset, seg.name
        for b in batches:
            assert b["base_offset"] == next_offset and b["crc_ok"]
            next_offset += b["last_offset_delta"] + 1
    assert next_offset == n
    for kill in (None, True):
        if kill:
            broker.restart(kill=True)
        assert watermarks(broker, topic_name) == (0, n)
        assert [m.value() for m in consume_range(broker, topic_name)] == values
        tail = consume_range(broker, topic_name, start=2500)
        assert [m.offset() for m in tail] == list(range(2500, n))
        c = consumer(broker)
        try:
            for target in (0, 1234, 2999):
                [tp] = c.offsets_for_times([TopicPartition(topic_name, 0, base + target)],
                                           timeout=TIMEOUT)
                assert tp.offset == target
        finally:
            c.close()


def test_long_poll_wakes_on_produce(broker, topic_name):
    create_topic(broker, topic_name)
    stats = []
    c = consumer(broker, **{"fetch.wait.max.ms": 3000, "fetch.min.bytes": 1,
                            "statistics.interval.ms": 200, "stats_cb": stats.append,
                            "enable.partition.eof": False})
    got = []

    def run():
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            m = c.poll(0.05)
            if m is not None and m.error() is None:
                got.append((time.monotonic(), m))

    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        t = threading.Thread(target=run)
        t.start()
        time.sleep(2.5)
        fetches_idle = _fetch_count(stats)
        sent = time.monotonic()
        produce_all(broker, topic_name, [b"wake"], **{"linger.ms": 0})
        t.join(25)
        assert got, "consumer never received the message"
        received, m = got[0]
        assert m.value() == b"wake" and m.offset() == 0
        # A waiting fetch wakes when data is appended: far sooner than fetch.wait.max.ms.
        assert received - sent < 1.0, f"delivered {received - sent:.2f}s after produce"
        # While idle the broker held each fetch for ~max_wait instead of answering at once.
        assert fetches_idle is not None and fetches_idle <= 4, f"{fetches_idle} fetches in 2.5s"
    finally:
        c.close()


def _fetch_count(stats):
    for raw in reversed(stats):
        s = json.loads(raw)
        for b in s.get("brokers", {}).values():
            if b.get("nodeid", -1) >= 0:
                return b.get("req", {}).get("Fetch")
    return None
