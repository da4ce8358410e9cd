"""Kafka Streams with processing.guarantee=exactly_once_v2 (issue 14): a word count
(proto-tests/java/src/gregor/prototests/WordCountEos.java) runs as its own process against one
broker while lines of words are produced to its input; it is killed with SIGKILL twice in the
middle of its work and started again each time. Streams creates its internal topics itself
(a -repartition topic and a -changelog topic, with their configs, replication factor 1).

With the record cache off, every input word makes one output record (word, count). Read with
read_committed, the counts of each word must be exactly 1, 2, ..., n where n is the number of
times the word was produced: a count missing is a lost update, a count twice is a duplicate
from a transaction that should have been aborted (or a state store restored from uncommitted
changelog data). This exercises zombie fencing across restarts (the new instance's producer
has the same transactional id), pending transactional offsets (OffsetFetch with
require_stable), read_committed fetches of the changelog when the state is restored, and
aborted transactions' data in every topic.
"""
import os
import queue
import random
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from clients import LOG
from javatools import JVM_OPTS, _java, java_classpath
from transactions import create_topic, stop_module_broker, txn_broker

import subprocess

LINES = 1000
WORDS_PER_LINE = 3
VOCABULARY = 40
PRODUCE_SECONDS = 20
KILL_AT = (0.2, 0.55)  # fractions of the expected output records seen before each kill -9
TIMEOUT = 240


class StreamsApp:
    """WordCountEos as a process; stdout lines go to a queue."""

    def __init__(self, workdir, bootstrap, app_id, src, dst, state_dir):
        self.args = [bootstrap, app_id, src, dst, str(state_dir),
                     os.environ.get("WORDCOUNT_GUARANTEE", "exactly_once_v2")]
        self.log_path = workdir / "streams.log"
        self.proc = None
        self.lines = queue.Queue()
        self.starts = 0

    def start(self):
        self.starts += 1
        cp = java_classpath()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [_java(), *JVM_OPTS, "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                 "-cp", cp, "gregor.prototests.WordCountEos", *self.args],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        proc = self.proc
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc):
        for line in proc.stdout:
            self.lines.put(line.strip())

    def wait_running(self, timeout=90):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"the Streams app exited: {seen}\n{self.tail()}"
                continue
            seen.append(line)
            assert not line.startswith(("UNCAUGHT", "STATE ERROR")), f"{seen}\n{self.tail()}"
            if line == "STATE RUNNING":
                return
        raise AssertionError(f"the Streams app not RUNNING after {timeout}s: {seen}\n{self.tail()}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout=60):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, n=3000):
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


class CountsReader:
    """A read_committed consumer of the output topic, from offset 0: counts[word] is the list
    of counts read, in order."""

    def __init__(self, bootstrap, topic, partitions):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "streams-reader-unused",
                           "enable.auto.commit": False, "isolation.level": "read_committed",
                           "auto.offset.reset": "earliest", "logger": LOG})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.counts = {}
        self.records = 0

    def poll(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            m = self.c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            self.counts.setdefault(m.key().decode(), []).append(int(m.value()))
            self.records += 1

    def close(self):
        self.c.close()


def deviation(word, counts, n):
    """Where the counts of a word stop being 1, 2, ..., n."""
    i = next((i for i, c in enumerate(counts) if c != i + 1), len(counts))
    return (f"{word}: n={n}, {len(counts)} counts, from index {i}: {counts[max(0, i - 2):i + 6]}"
            + (" (duplicates)" if len(counts) > n else ""))


def test_streams_word_count_exactly_once_across_kill9(request, tmp_path):
    broker = txn_broker(tmp_path / "broker").start()
    request.node._gregor_brokers = [broker]
    app = reader = None
    stop = threading.Event()
    try:
        src, dst, app_id = (f"wc-{k}-{uuid.uuid4().hex[:8]}" for k in ("in", "out", "app"))
        create_topic(broker.bootstrap, src, 2)
        create_topic(broker.bootstrap, dst, 2)
        rnd = random.Random(14)
        vocab = [f"w{i:02d}" for i in range(VOCABULARY)]
        lines = [" ".join(rnd.choice(vocab) for _ in range(WORDS_PER_LINE)) for _ in range(LINES)]
        expected = {}
        for line in lines:
            for w in line.split(" "):
                expected[w] = expected.get(w, 0) + 1
        total = LINES * WORDS_PER_LINE

        produced = []
        errors = []

        def produce():
            p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                          "linger.ms": 5, "logger": LOG})
            t0 = time.monotonic()
            for i, line in enumerate(lines):
                if stop.is_set():
                    break
                p.produce(src, line.encode(), key=b"line%d" % i,
                          on_delivery=lambda err, m: errors.append(err) if err else None)
                p.poll(0)
                lag = t0 + PRODUCE_SECONDS * (i + 1) / LINES - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            p.flush(60)
            produced.append(True)
        producer = threading.Thread(target=produce, daemon=True)

        app = StreamsApp(tmp_path, broker.bootstrap, app_id, src, dst, tmp_path / "state")
        reader = CountsReader(broker.bootstrap, dst, 2)
        app.start()
        app.wait_running()
        producer.start()
        deadline = time.monotonic() + TIMEOUT
        for fraction in KILL_AT:
            while reader.records < fraction * total:
                assert time.monotonic() < deadline, \
                    f"only {reader.records} of {total} counts after {TIMEOUT}s\n{app.tail()}"
                assert app.proc.poll() is None, "the Streams app died\n" + app.tail()
                reader.poll(0.5)
            app.kill9()
            app.start()
            app.wait_running()

        def done():
            return all(reader.counts.get(w, [0])[-1] >= n for w, n in expected.items())
        while not done():
            assert time.monotonic() < deadline, (
                f"final counts not reached after {TIMEOUT}s: "
                f"{ {w: (reader.counts.get(w, [0])[-1], n) for w, n in expected.items() if reader.counts.get(w, [0])[-1] < n} }"
                f"\n{app.tail()}")
            assert app.proc.poll() is None, "the Streams app died\n" + app.tail()
            reader.poll(0.5)
        producer.join(60)
        assert produced and not errors, f"input produce errors: {errors[:3]}"
        reader.poll(2)  # anything after the final counts would be a duplicate
        bad = {w: reader.counts.get(w) for w, n in expected.items()
               if reader.counts.get(w) != list(range(1, n + 1))}
        assert not bad, (f"counts read_committed are not exactly 1..n for {len(bad)} words, e.g. "
                         + "; ".join(deviation(w, c, expected[w]) for w, c in list(bad.items())[:5]))
        assert set(reader.counts) == set(expected), "words that were never produced"
        assert reader.records == total
        assert app.starts == 1 + len(KILL_AT)
    finally:
        stop.set()
        if reader:
            reader.close()
        if app:
            app.stop()
        stop_module_broker(broker)
