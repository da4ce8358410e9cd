"""Raw-socket bad input: the broker answers with Kafka's error or closes the connection, stays up,
and a confluent-kafka producer and consumer running alongside keep delivering.

Covers: garbage bytes, a truncated frame, oversized/negative/zero size prefixes, a wrong CRC
(CORRUPT_MESSAGE, nothing written), an unknown API key, ApiVersions v99 (KIP-511 v0-layout
UNSUPPORTED_VERSION), Metadata v99, a Metadata array count with no elements, Produce partition
errors (unknown topic/partition, bad acks, not exactly one batch, zstd before v7), an invalid
topic name in Metadata, and a client that never reads its responses.
test_raw_protocol.py checks the encoder on well-formed requests.
"""
import socket
import threading
import time

import pytest
from confluent_kafka import TopicPartition

import wire
from clients import consume_range, consumer, create_topic, producer, watermarks

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_VERSION = 35
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87


class Alongside:
    """A producer and a consumer on their own topic, running in background threads."""

    def __init__(self, broker, topic):
        self.broker, self.topic = broker, topic
        self.client_errors, self.delivery_errors = [], []
        self.acked, self.received = [], set()
        self.stop_event = threading.Event()
        self.p = producer(broker, **{"linger.ms": 0, "error_cb": self.client_errors.append})
        self.c = consumer(broker, **{"error_cb": self.client_errors.append,
                                     "fetch.wait.max.ms": 100})
        self.c.assign([TopicPartition(topic, 0, 0)])
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._produce, self._consume)]
        for t in self.threads:
            t.start()

    def _dr(self, err, msg):
        if err is None:
            self.acked.append(msg.value())
        else:
            self.delivery_errors.append(err)

    def _produce(self):
        n = 0
        while not self.stop_event.is_set():
            self.p.produce(self.topic, f"along-{n}".encode(), partition=0, on_delivery=self._dr)
            n += 1
            self.p.poll(0.02)
        self.p.flush(10)

    def _consume(self):
        while not self.stop_event.is_set():
            m = self.c.poll(0.1)
            if m is not None and m.error() is None:
                self.received.add(m.value())
        self.c.close()

    def assert_healthy(self, new=10, timeout=15):
        """The broker is up and both clients make progress from now on, without errors."""
        assert self.broker.alive(), "broker died\n" + self.broker.log_tail()
        mark = len(self.acked)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.acked) >= mark + new and self.acked[mark + new - 1] in self.received:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"alongside clients stalled: acked {len(self.acked) - mark} new, "
                                 f"errors {self.client_errors + self.delivery_errors}")
        assert not self.delivery_errors, self.delivery_errors
        assert not self.client_errors, self.client_errors
        # And a fresh raw connection is served.
        with wire.connect(self.broker) as s:
            r = wire.request(s, wire.api_versions_v0(1), 1)
            assert wire.read_api_versions_v0(r)[0] == 0

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(15)


@pytest.fixture
def alongside(broker):
    create_topic(broker, "alongside")
    a = Alongside(broker, "alongside")
    a.assert_healthy(new=5)  # warmed up before the bad input
    yield a
    a.stop()


# --- bad input -------------------------------------------------------------------------------

def test_garbage_bytes(alongside):
    with wire.connect(alongside.broker) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # size prefix 0x47455420 > 100 MiB
        wire.expect_closed(s)
    with wire.connect(alongside.broker) as s:
        s.sendall(wire.i32(16) + b"\xff" * 16)  # api key -1, version -1
        wire.expect_closed(s)
    alongside.assert_healthy()


def test_truncated_frame_then_close(alongside):
    for _ in range(3):
        with wire.connect(alongside.broker) as s:
            s.sendall(wire.i32(100) + wire.api_versions_v0(1)[:10])
    alongside.assert_healthy()


@pytest.mark.parametrize("size", [0x7FFFFFFF, 100 * 1024 * 1024 + 1, -1, -0x80000000, 0],
                         ids=["2GiB", "over-100MiB", "minus-1", "min-int", "zero"])
def test_bad_size_prefix_closes(alongside, size):
    with wire.connect(alongside.broker) as s:
        s.sendall(wire.i32(size))  # no body follows: the broker must not wait for one
        wire.expect_closed(s)
    alongside.assert_healthy()


def test_wrong_crc_is_corrupt_message(alongside, topic_name):
    b = alongside.broker
    create_topic(b, topic_name)
    good, bad = wire.record_batch([b"good"]), wire.record_batch([b"evil"], corrupt_crc=True)
    with wire.connect(b) as s:
        [p] = wire.read_produce_v3(wire.request(s, wire.produce_v3(1, topic_name, 0, good), 1))[
            topic_name]
        assert (p["index"], p["error"], p["base_offset"]) == (0, 0, 0)
        [p] = wire.read_produce_v3(wire.request(s, wire.produce_v3(2, topic_name, 0, bad), 2))[
            topic_name]
        assert (p["index"], p["error"]) == (0, CORRUPT_MESSAGE)
        # Kafka keeps the connection open after a partition-level error.
        [p] = wire.read_produce_v3(wire.request(s, wire.produce_v3(3, topic_name, 0, good), 3))[
            topic_name]
        assert (p["error"], p["base_offset"]) == (0, 1)
    assert watermarks(b, topic_name) == (0, 2)
    assert [m.value() for m in consume_range(b, topic_name)] == [b"good", b"good"]
    alongside.assert_healthy()


def produce_error(broker, topic, partition, records, acks=-1):
    with wire.connect(broker) as s:
        resp = wire.read_produce_v3(
            wire.request(s, wire.produce_v3(9, topic, partition, records, acks=acks), 9))
    [p] = resp[topic]
    assert p["index"] == partition
    return p["error"]


def test_produce_unknown_topic_or_partition(broker, topic_name):
    create_topic(broker, topic_name)
    batch = wire.record_batch([b"x"])
    assert produce_error(broker, topic_name, 1, batch) == UNKNOWN_TOPIC_OR_PARTITION
    assert produce_error(broker, topic_name + "-nope", 0, batch) == UNKNOWN_TOPIC_OR_PARTITION
    assert produce_error(broker, topic_name, 0, batch, acks=2) == INVALID_REQUIRED_ACKS
    assert watermarks(broker, topic_name) == (0, 0)
    assert topic_name + "-nope" not in consumer(broker).list_topics(timeout=10).topics


def test_produce_v3_needs_exactly_one_batch(broker, topic_name):
    # Kafka's ProduceRequest.validateRecords, for v3 and later.
    create_topic(broker, topic_name)
    one = wire.record_batch([b"x"])
    assert produce_error(broker, topic_name, 0, one + one) == INVALID_RECORD
    assert produce_error(broker, topic_name, 0, b"") == INVALID_RECORD
    assert watermarks(broker, topic_name) == (0, 0)


def test_produce_zstd_needs_v7(broker, topic_name):
    create_topic(broker, topic_name)
    zstd = wire.record_batch([b"x"], attributes=4)
    assert produce_error(broker, topic_name, 0, zstd) == UNSUPPORTED_COMPRESSION_TYPE
    assert watermarks(broker, topic_name) == (0, 0)


def test_metadata_invalid_topic_name(broker):
    with wire.connect(broker) as s:
        r = wire.request(s, wire.metadata_v1(1, ["bad name"]), 1)
        md = wire.read_metadata(r, 1)
    assert [(t["name"], t["error"]) for t in md["topics"]] == [
        ("bad name", INVALID_TOPIC_EXCEPTION)]


def test_unknown_api_key_closes(alongside):
    with wire.connect(alongside.broker) as s:
        s.sendall(wire.frame(wire.header_v1(9999, 0, 1) + b"\x00" * 8))
        wire.expect_closed(s)
    alongside.assert_healthy()


def test_api_versions_unsupported_version(alongside):
    with wire.connect(alongside.broker) as s:
        # KIP-511: answered in the v0 layout with UNSUPPORTED_VERSION and the supported ranges.
        r = wire.request(s, wire.api_versions_v3(5, version=99), 5)
        error, keys = wire.read_api_versions_v0(r)
        assert r.done(), "v0 layout expected: trailing bytes after api_keys"
        assert error == UNSUPPORTED_VERSION
        assert 18 in keys and keys[18][0] == 0 and keys[18][1] >= 3, keys
        # The connection stays usable: the client retries with a version it now knows.
        assert wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(6), 6))[0] == 0
    alongside.assert_healthy()


def test_metadata_unsupported_version_closes(alongside):
    with wire.connect(alongside.broker) as s:
        s.sendall(wire.frame(wire.header_v1(3, 99, 1) + wire.i32(0)))
        wire.expect_closed(s)
    alongside.assert_healthy()


def test_metadata_huge_array_count_closes(alongside):
    with wire.connect(alongside.broker) as s:
        s.sendall(wire.frame(wire.metadata_v0(1, raw_count=0x7FFFFFFF)))
        wire.expect_closed(s)
    alongside.assert_healthy()


def test_slow_reader_does_not_block_others(alongside):
    """A client pipelines requests but never reads a response. Like Kafka (which stops reading
    a connection while its response is unsent), the broker must push back rather than buffer
    without bound, and other clients carry on."""
    s = wire.connect(alongside.broker)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        chunk = b"".join(wire.frame(wire.metadata_v1(i)) for i in range(1000))
        total = 64 << 20
        sent, last_progress = 0, time.monotonic()
        while sent < total and time.monotonic() - last_progress < 2:
            try:
                sent += s.send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        alongside.assert_healthy()
        assert sent < total, "the broker read 64 MiB of requests whose responses nobody read"
    finally:
        s.close()
    alongside.assert_healthy()
