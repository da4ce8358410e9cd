"""Client helpers shared by the tests: kcat runner and confluent-kafka factories.

Producers run with enable.idempotence=false and consumers use assign() unless a test says
otherwise; GroupMember and pump() drive consumers in a group (subscribe()).
"""
import logging
import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from wire import batch_headers

TIMEOUT = 30.0
# librdkafka logs go through Python logging (shown with a failing test), not straight to stderr.
LOG = logging.getLogger("librdkafka")
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # batch attribute bits 0-2


def kcat(broker, *args, input=None, timeout=60, check=True):
    """Run kcat against `broker`; returns CompletedProcess with bytes stdout/stderr."""
    cmd = ["kcat", "-b", broker.bootstrap, *args]
    res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} exited {res.returncode}\n"
                             f"stderr: {res.stderr.decode()[-3000:]}")
    return res


def producer(broker, **conf):
    c = {"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "acks": "all",
         "linger.ms": 5, "logger": LOG}
    c.update(conf)
    return Producer(c)


def consumer(broker, **conf):
    c = {"bootstrap.servers": broker.bootstrap, "group.id": "proto-tests-unused",
         "enable.auto.commit": False, "enable.auto.offset.store": False,
         "auto.offset.reset": "earliest", "enable.partition.eof": True,
         "check.crcs": True, "logger": LOG}
    c.update(conf)
    return Consumer(c)


def admin(broker, **conf):
    c = {"bootstrap.servers": broker.bootstrap, "logger": LOG}
    c.update(conf)
    return AdminClient(c)


def create_topic(broker, name, partitions=1, config=None):
    a = admin(broker)  # keep the handle alive until the future resolves
    fut = a.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                          operation_timeout=10, request_timeout=TIMEOUT)
    fut[name].result(TIMEOUT)
    wait_for_topic(broker, name, partitions)


def wait_for_topic(broker, name, partitions, timeout=10):
    a = admin(broker)
    deadline = time.monotonic() + timeout
    while True:
        md = a.list_topics(name, timeout=TIMEOUT)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader == 1 for p in t.partitions.values()):
            return md
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} not ready: {t and t.error}")
        time.sleep(0.1)


def produce_all(broker, topic, values, partition=0, timestamps=None, keys=None, **conf):
    """Produce values, flush, and return delivery reports [(offset, value)] in delivery order.
    Fails on any delivery error."""
    p = producer(broker, **conf)
    acked, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.offset(), msg.value()))

    for i, v in enumerate(values):
        kw = {}
        if timestamps is not None:
            kw["timestamp"] = timestamps[i]
        if keys is not None:
            kw["key"] = keys[i]
        while True:
            try:
                p.produce(topic, v, partition=partition, on_delivery=dr, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(TIMEOUT)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return acked


def consume_range(broker, topic, partition=0, start=0, end=None, timeout=TIMEOUT, **conf):
    """Messages at offsets [start, end); end defaults to the high watermark."""
    c = consumer(broker, **conf)
    try:
        if end is None:
            end = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)[1]
        out = []
        if end <= start:
            return out
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while (not out or out[-1].offset() < end - 1) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append(m)
        return out
    finally:
        c.close()


def watermarks(broker, topic, partition=0, timeout=10):
    """(low, high) watermarks. Retries errors Kafka marks retriable, e.g. NOT_LEADER right after
    a restart while the partition's leadership is being re-established."""
    c = consumer(broker)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT,
                                               cached=False)
            except KafkaException as e:
                err = e.args[0]
                retry = err.retriable() or err.code() in (KafkaError.LEADER_NOT_AVAILABLE,
                                                          KafkaError.NOT_LEADER_FOR_PARTITION)
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        c.close()


def stored_batches(broker, topic, partition=0):
    """Headers of the batches in the partition's segment files, in offset order."""
    dirs = list(Path(broker.data_dir).rglob(f"{topic}-{partition}"))
    assert len(dirs) == 1, f"partition dir for {topic}-{partition}: {dirs}"
    out = []
    for seg in sorted(dirs[0].glob("*.log")):
        out += batch_headers(seg.read_bytes())
    return out


def assert_stored_codec(broker, topic, codec):
    """Batches are stored as the producer sent them: with the producer's codec. librdkafka sends
    a batch uncompressed when compressing does not shrink it (a tiny batch), so most records,
    not all, must sit in batches of that codec."""
    batches = stored_batches(broker, topic)
    assert batches and all(b["magic"] == 2 and b["crc_ok"] for b in batches)
    used = {b["attributes"] & 7 for b in batches}
    assert used <= {0, CODECS[codec]}, f"codecs on disk: {used}"
    total = sum(b["record_count"] for b in batches)
    coded = sum(b["record_count"] for b in batches if b["attributes"] & 7 == CODECS[codec])
    hint = (" (librdkafka compresses with lz4 only when ApiVersions lists FindCoordinator,"
            " as Kafka's does)") if codec == "lz4" else ""
    assert coded >= 0.9 * total, f"only {coded} of {total} records stored with {codec}{hint}"



class GroupMember:
    """A confluent-kafka consumer in a group (subscribe()), recording its rebalance callbacks
    and the records it polls. Drive it (and others) with pump()."""

    def __init__(self, broker, group, topics, name="member", **conf):
        c = {"group.id": group, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
             "enable.partition.eof": False, "enable.auto.offset.store": True,
             "error_cb": self._error}
        c.update(conf)
        self.name = name
        self.events = []    # (kind, [partitions], monotonic time); kind: assign, revoke, lost
        self.records = []   # (topic, partition, offset, key, value)
        self.errors = []    # KafkaError from error_cb and from poll()
        self.consumer = consumer(broker, **c)
        self.consumer.subscribe(list(topics), on_assign=self._on("assign"),
                                on_revoke=self._on("revoke"), on_lost=self._on("lost"))
        self.closed = False

    def _on(self, kind):
        def cb(_consumer, parts):
            self.events.append((kind, sorted(p.partition for p in parts), time.monotonic()))
        return cb

    def _error(self, err):
        self.errors.append(err)

    def poll(self, timeout=0.05):
        m = self.consumer.poll(timeout)
        if m is None:
            return
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                self.errors.append(m.error())
            return
        self.records.append((m.topic(), m.partition(), m.offset(), m.key(), m.value()))

    def assignment(self):
        return sorted(p.partition for p in self.consumer.assignment())

    def assigns(self):
        return [parts for kind, parts, _ in self.events if kind == "assign"]

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def pump(members, until, timeout=TIMEOUT, what="condition"):
    """Polls every member in turn until until() holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            state = "; ".join(f"{m.name}: assignment {m.assignment()} events "
                              f"{[(k, p) for k, p, _ in m.events]} records {len(m.records)} "
                              f"errors {m.errors[:3]}" for m in members if not m.closed)
            raise AssertionError(f"{what} not reached after {timeout}s ({state})")
        for m in members:
            if not m.closed:
                m.poll(0.02)


def pump_for(members, seconds):
    """Polls every member for `seconds` (to let heartbeats and any rebalance happen)."""
    end = time.monotonic() + seconds
    pump(members, lambda: time.monotonic() >= end, timeout=seconds + 5)
