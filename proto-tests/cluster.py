"""A three-broker Gregor cluster on loopback for the failure tests, and the load they run.

`Cluster(workdir, size=3, kafka_config={...})` starts `size` gregor processes (node ids 1..size)
on ephemeral ports, each with its own data dir and `--voters` listing all of them; Kafka
settings (by Kafka's names) reach every node as GREGOR_KAFKA_* environment variables. Nodes are
`ClusterNode`s, a `conftest.Broker` with a node id and the voter list; each logs to
`<workdir>/node-N/gregor.log`, and the `cluster` fixture attaches every node's log tail to a
failing test's report. Faults: `kill9(id)`, `stop(id)` (SIGTERM), `sigstop(id)`, `sigcont(id)`,
`start_node(id)`, `restart(id)`. Who is who: `controller()` (from /raft/status),
`leader_of_most(topic)` and `metadata(node)` (Metadata v1, asked of one node directly).
Teardown stops every process by pid (SIGCONT first for a paused one, then SIGTERM, then SIGKILL).

Load: `ProducerLoad` (an idempotent acks=all confluent-kafka producer in a thread, at a fixed
rate, recording every acknowledged (partition, offset, value) with its enqueue and ack times),
`GroupReader` (a group consumer in a thread that commits what it read) and `CommitMonitor`
(OffsetFetch of the group's committed offsets over time). `read_all()` reads partitions back
from offset 0 to their high watermark, and `check_log()` checks acknowledged messages against
what was read.
"""
import bisect
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import wire
from clients import LOG
from conftest import GREGOR_BIN, Broker, free_ports

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
OFFSETS_TOPIC = "__consumer_offsets"


def kafka_env(kafka_config):
    """Kafka settings as Gregor's GREGOR_KAFKA_<NAME> environment variables (dots become `_`,
    a literal `_` in a name `__`)."""
    return {"GREGOR_KAFKA_" + k.upper().replace("_", "__").replace(".", "_"): str(v)
            for k, v in (kafka_config or {}).items()}


def wait_until(cond, timeout, what, interval=0.1):
    """Polls cond() until it returns something truthy (returned); fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout}s")
        time.sleep(interval)


class ClusterNode(Broker):
    """One broker of a Cluster: node id `node_id`, ports given by the cluster."""

    def __init__(self, workdir, node_id, ports, voters, env, kafka_config=None):
        """kafka_config: this node's own settings (e.g. its `listeners`), in its TOML file;
        env: the settings every node shares."""
        super().__init__(workdir, kafka_config=kafka_config, env=env)
        self.node_id = node_id
        self.port, self.controller_port, self.admin_port = ports
        self.voters = voters
        self.paused = False

    def _command(self):
        return [str(GREGOR_BIN), "serve", "--node-id", str(self.node_id),
                "--data-dir", str(self.data_dir),
                "--listen", self.bootstrap,
                "--controller-listen", f"127.0.0.1:{self.controller_port}",
                "--admin-listen", f"127.0.0.1:{self.admin_port}",
                "--voters", self.voters] + self._config_args()

    def launch(self):
        self.paused = False
        return super().launch()

    def sigstop(self):
        assert self.alive()
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def sigcont(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=30.0):
        if self.paused:
            self.sigcont()
        return super().stop(timeout)

    def kill9(self):
        super().kill9()
        self.paused = False

    def up(self):
        """Running and not paused: it can answer."""
        return self.alive() and not self.paused

    def http_json(self, path, timeout=1.0):
        with _HTTP.open(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())

    def raft_status(self):
        """/raft/status, or None when the node does not answer."""
        if not self.up():
            return None
        try:
            return self.http_json("/raft/status")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def ready(self):
        if not self.up():
            return False
        try:
            with _HTTP.open(f"http://127.0.0.1:{self.admin_port}/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metadata(self, topics=None, timeout=3.0):
        """This node's own Metadata v1 answer (brokers, controller_id, topics), or None."""
        if not self.up():
            return None
        try:
            with wire.connect(self, timeout=timeout) as s:
                return wire.read_metadata(wire.request(s, wire.metadata_v1(1, topics), 1), 1)
        except (OSError, AssertionError):
            return None


class Cluster:
    def __init__(self, workdir, size=3, kafka_config=None):
        self.workdir = Path(workdir)
        self.size = size
        self.kafka_config = dict(kafka_config or {})
        ports = free_ports(3 * size)
        triples = [ports[3 * i:3 * i + 3] for i in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{t[1]}" for i, t in enumerate(triples))
        env = kafka_env(self.kafka_config)
        self.nodes = {}
        for i, t in enumerate(triples):
            node_id = i + 1
            d = self.workdir / f"node-{node_id}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes[node_id] = ClusterNode(d, node_id, t, voters, env)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout=60):
        for n in self.nodes.values():
            n.launch()
        for n in self.nodes.values():
            n.wait_ready(timeout)
        self.wait_brokers_registered(timeout)
        self.controller(timeout)
        return self

    def node(self, node_id):
        return self.nodes[node_id]

    def kill9(self, node_id):
        self.nodes[node_id].kill9()

    def stop(self, node_id):
        """SIGTERM (controlled shutdown); returns the exit code."""
        return self.nodes[node_id].stop()

    def sigstop(self, node_id):
        self.nodes[node_id].sigstop()

    def sigcont(self, node_id):
        self.nodes[node_id].sigcont()

    def start_node(self, node_id, timeout=60):
        n = self.nodes[node_id]
        n.launch()
        n.wait_ready(timeout)
        return n

    def restart(self, node_id, kill=False):
        if kill:
            self.kill9(node_id)
        else:
            code = self.stop(node_id)
            assert code == 0, f"node {node_id}: SIGTERM exit {code}\n" + self.nodes[node_id].log_tail()
        return self.start_node(node_id)

    def shutdown(self):
        """Stops every node by pid: SIGCONT for a paused one, SIGTERM to all, then SIGKILL.
        Returns {node_id: exit code} of the nodes that were running."""
        running = [n for n in self.nodes.values() if n.alive()]
        for n in running:
            if n.paused:
                n.sigcont()
            n.proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + 30
        for n in running:
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                n.proc.kill()
                n.proc.wait()
            codes[n.node_id] = n.proc.returncode
            n.stopped_on_purpose = True
        return codes

    def crashed(self):
        """Nodes that exited without the test stopping them: {node_id: exit code}."""
        return {n.node_id: n.proc.returncode for n in self.nodes.values()
                if n.proc is not None and not n.alive() and not n.stopped_on_purpose}

    def log_tails(self, lines=60):
        return "\n".join(f"----- node {i} ({n.log_path}) -----\n{n.log_tail(lines)}"
                         for i, n in self.nodes.items())

    # --- who is who --------------------------------------------------------------------------

    def up_nodes(self):
        return [n for n in self.nodes.values() if n.up()]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def controller(self, timeout=30):
        """The active controller (Raft leader) that a majority of answering nodes agree on, in
        the highest term they report."""
        def agreed():
            st = [s for s in (n.raft_status() for n in self.up_nodes()) if s]
            if not st:
                return None
            term = max(s["term"] for s in st)
            leaders = [s["leader"] for s in st if s["term"] == term and s["leader"] is not None]
            for cand in set(leaders):
                if leaders.count(cand) > len(st) // 2 and self.nodes.get(cand) \
                        and self.nodes[cand].up():
                    return cand
            return None
        return wait_until(agreed, timeout, "a controller every node agrees on")

    def metadata(self, topics=None):
        """Metadata from the first node that answers."""
        for n in self.up_nodes():
            md = n.metadata(topics)
            if md is not None:
                return md
        raise AssertionError("no node answers Metadata\n" + self.log_tails(20))

    def leaders(self, topic):
        md = self.metadata([topic])
        [t] = md["topics"]
        assert t["error"] == 0, f"topic {topic}: error {t['error']}"
        return {p["index"]: p["leader"] for p in t["partitions"]}

    def leader_of_most(self, topic, exclude=()):
        """The node leading most of the topic's partitions (ties: lowest id), not in `exclude`."""
        counts = {}
        for leader in self.leaders(topic).values():
            if leader >= 0 and leader not in exclude:
                counts[leader] = counts.get(leader, 0) + 1
        assert counts, f"no leader for {topic} outside {exclude}"
        return max(sorted(counts), key=lambda b: counts[b])

    def wait_brokers_registered(self, timeout=30):
        def ok():
            md = self.metadata()
            return len(md["brokers"]) == self.size
        wait_until(ok, timeout, f"{self.size} brokers in Metadata")

    def fully_replicated(self, topics, nodes=None):
        """Whether every node in `nodes` (default: those up) says that every partition of
        `topics` has a leader and a full ISR (isr == replicas)."""
        for n in nodes or self.up_nodes():
            md = n.metadata(list(topics))
            if md is None:
                return False
            for t in md["topics"]:
                if t["error"] != 0 or not t["partitions"]:
                    return False
                for p in t["partitions"]:
                    if p["error"] != 0 or p["leader"] < 0 or sorted(p["isr"]) != sorted(p["replicas"]):
                        return False
        return True

    def wait_fully_replicated(self, topics, timeout=60):
        try:
            wait_until(lambda: self.fully_replicated(topics), timeout,
                       f"full ISR on every partition of {list(topics)}", interval=0.2)
        except AssertionError:
            md = self.metadata(list(topics))
            state = [(t["name"], p["index"], p["leader"], p["isr"]) for t in md["topics"]
                     for p in t["partitions"] if sorted(p["isr"]) != sorted(p["replicas"])]
            raise AssertionError(f"partitions without a full ISR after {timeout}s: {state[:20]}\n"
                                 + self.log_tails(30))

    def fenced(self):
        """The fenced brokers according to the controller's /raft/status."""
        st = self.nodes[self.controller()].raft_status() or {}
        return set(st.get("fenced_brokers") or [])

    def create_topic(self, name, partitions, rf=3, config=None, timeout=30):
        a = AdminClient({"bootstrap.servers": self.bootstrap, "logger": LOG})
        fut = a.create_topics([NewTopic(name, partitions, rf, config=config or {})],
                              operation_timeout=10, request_timeout=timeout)
        fut[name].result(timeout)
        self.wait_fully_replicated([name], timeout)


@pytest.fixture
def make_cluster(request, tmp_path):
    """make_cluster(size=3, kafka_config={...}) -> a started Cluster, shut down at teardown.
    A node that died without the test killing it fails the test."""
    clusters = []
    request.node._gregor_brokers = []  # conftest attaches their log tails on failure

    def make(size=3, kafka_config=None, start=True):
        c = Cluster(tmp_path / f"cluster{len(clusters)}", size, kafka_config)
        clusters.append(c)
        request.node._gregor_brokers.extend(c.nodes.values())
        return c.start() if start else c

    yield make
    errors = []
    for c in clusters:
        crashed = c.crashed()
        codes = c.shutdown()
        if crashed:
            errors.append(f"nodes died during the test: {crashed}")
        bad = {i: code for i, code in codes.items() if code != 0}
        if bad:
            errors.append(f"nodes exited non-zero on SIGTERM at teardown: {bad}")
    if errors:
        pytest.fail("\n".join(errors))


# --- load ------------------------------------------------------------------------------------

def seq_of(value):
    return int(value.split(b"-")[1])


class ProducerLoad(threading.Thread):
    """An idempotent acks=all producer sending `rate` messages a second, round robin over
    `partitions` partitions, values b"m-<seq>". Records for every acknowledged message
    (partition, offset, seq, ack time); enqueue times are in `sent_at[seq]`."""

    def __init__(self, bootstrap, topic, partitions, rate=300, **conf):
        super().__init__(daemon=True, name="producer-load")
        self.topic, self.partitions, self.rate = topic, partitions, rate
        self.conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5, "message.timeout.ms": 120000, "request.timeout.ms": 10000,
                     "retry.backoff.ms": 50, "retry.backoff.max.ms": 500,
                     "topic.metadata.refresh.interval.ms": 5000,
                     "error_cb": self._error, "logger": LOG}
        # librdkafka's idempotence decisions (PID, epoch bumps, drains) go to the captured log,
        # shown with a failing test; PRODUCER_DEBUG picks other contexts.
        self.conf["debug"] = os.environ.get("PRODUCER_DEBUG", "eos")
        self.conf.update(conf)
        self.sent_at = []
        self.acked = []      # (partition, offset, seq, t_ack)
        self.failed = []     # (seq, KafkaError, t)
        self.errors = []     # error_cb: (KafkaError, t)
        self.stop_event = threading.Event()
        self.unflushed = None
        self.exc = None

    def _error(self, err):
        self.errors.append((err, time.monotonic()))

    def _dr(self, err, msg):
        now = time.monotonic()
        seq = seq_of(msg.value())
        if err is not None:
            self.failed.append((seq, err, now))
        else:
            self.acked.append((msg.partition(), msg.offset(), seq, now))

    def run(self):
        try:
            p = Producer(self.conf)
            t0 = time.monotonic()
            while not self.stop_event.is_set():
                due = int((time.monotonic() - t0) * self.rate) + 1
                n = 0
                while len(self.sent_at) < due and n < 100:
                    seq = len(self.sent_at)
                    try:
                        p.produce(self.topic, f"m-{seq:09d}".encode(),
                                  partition=seq % self.partitions, on_delivery=self._dr)
                    except BufferError:
                        break
                    self.sent_at.append(time.monotonic())
                    n += 1
                p.poll(0.005)
            self.unflushed = p.flush(150)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.exc = e

    def stop(self, timeout=160):
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), "producer thread did not finish flushing"
        if self.exc:
            raise self.exc

    def fatal_errors(self):
        return [(e, t) for e, t in self.errors if e.fatal()]

    def acks_since(self, t):
        return sum(1 for a in list(self.acked) if a[3] >= t)

    def first_ack_after(self, t):
        """Ack time of the first acknowledged message enqueued at or after t, or None."""
        acked = self.acked
        n = len(acked)
        # acks are appended in time order, and a message enqueued after t is acked after t
        i = bisect.bisect_left(acked, t, hi=n, key=lambda a: a[3])
        for k in range(i, n):
            part, off, seq, ta = acked[k]
            if self.sent_at[seq] >= t:
                return ta
        return None

    def wait_resumed(self, t, timeout, what):
        """Waits for a message enqueued after t to be acknowledged; returns the window (s)."""
        try:
            ta = wait_until(lambda: self.first_ack_after(t), timeout, what, interval=0.02)
        except AssertionError:
            raise AssertionError(f"{what}: producer stuck, no acknowledged produce in {timeout}s "
                                 f"after the fault (acked {len(self.acked)}, sent "
                                 f"{len(self.sent_at)}, failed {len(self.failed)}, "
                                 f"errors {[str(e) for e, _ in self.errors[-5:]]})")
        return ta - t

    def max_gap(self, start, end):
        """Longest stretch in [start, end] without any acknowledgement."""
        times = sorted(a[3] for a in list(self.acked) if start <= a[3] <= end)
        points = [start] + times + [end]
        return max(b - a for a, b in zip(points, points[1:]))


class GroupReader(threading.Thread):
    """A group consumer (subscribe) reading `topic` and committing its position synchronously
    every `commit_every` s. Records (partition, offset, seq, t) it read and every commit the
    broker acknowledged: (t, {partition: offset})."""

    def __init__(self, bootstrap, topic, group, commit_every=0.3, **conf):
        super().__init__(daemon=True, name="group-reader")
        self.topic, self.group, self.commit_every = topic, group, commit_every
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
                     "enable.partition.eof": False, "check.crcs": True,
                     "error_cb": self._error, "logger": LOG}
        self.conf.update(conf)
        self.records = []    # (partition, offset, seq, t)
        self.commits = []    # (t_ack, {partition: offset})
        self.commit_failures = []
        self.errors = []
        self.positions = {}  # partition -> next offset to read
        self.stop_event = threading.Event()
        self.exc = None

    def _error(self, err):
        self.errors.append((err, time.monotonic()))

    def _commit(self, c):
        if not self.positions:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self.positions.items())]
        try:
            res = c.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            self.commit_failures.append((e.args[0], time.monotonic()))
            return
        now = time.monotonic()
        ok = {tp.partition: tp.offset for tp in res if tp.error is None}
        bad = [(tp.partition, tp.error) for tp in res if tp.error is not None]
        if bad:
            self.commit_failures.append((bad, now))
        if ok:
            self.commits.append((now, ok))

    def run(self):
        try:
            c = Consumer(self.conf)
            c.subscribe([self.topic])
            last_commit = time.monotonic()
            while not self.stop_event.is_set():
                m = c.poll(0.05)
                if m is not None:
                    if m.error():
                        self.errors.append((m.error(), time.monotonic()))
                    else:
                        self.records.append((m.partition(), m.offset(), seq_of(m.value()),
                                             time.monotonic()))
                        self.positions[m.partition()] = m.offset() + 1
                if time.monotonic() - last_commit >= self.commit_every:
                    self._commit(c)
                    last_commit = time.monotonic()
            self._commit(c)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.exc = e

    def stop(self, timeout=60):
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), "group consumer thread did not stop"
        if self.exc:
            raise self.exc

    def first_read_after(self, t, sent_at):
        """Time the consumer read the first message enqueued at or after t, or None."""
        records = self.records
        n = len(records)
        i = bisect.bisect_left(records, t, hi=n, key=lambda r: r[3])
        for k in range(i, n):
            part, off, seq, tr = records[k]
            if sent_at[seq] >= t:
                return tr
        return None


class CommitMonitor(threading.Thread):
    """Polls the group's committed offsets (OffsetFetch, through a consumer that never joins)
    every `interval` s: observations (t, {partition: offset}), t being when it asked."""

    def __init__(self, bootstrap, topic, group, partitions, interval=0.25):
        super().__init__(daemon=True, name="commit-monitor")
        self.topic, self.partitions, self.interval = topic, partitions, interval
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "logger": LOG}
        self.observations = []
        self.failures = 0
        self.stop_event = threading.Event()
        self.exc = None

    def run(self):
        try:
            c = Consumer(self.conf)
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            while not self.stop_event.is_set():
                asked = time.monotonic()  # the answer reflects the state at or after this
                try:
                    res = c.committed(tps, timeout=5)
                    self.observations.append(
                        (asked, {tp.partition: tp.offset for tp in res if tp.error is None}))
                except KafkaException:
                    self.failures += 1
                self.stop_event.wait(self.interval)
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.exc = e

    def stop(self, timeout=30):
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), "commit monitor did not stop"
        if self.exc:
            raise self.exc


def committed_went_backwards(series):
    """Violations in a series [(t, {partition: offset})]: a partition's offset that is lower
    than one seen earlier (a negative offset, i.e. none committed, after a real one counts)."""
    best, bad = {}, []
    for t, offs in series:
        for p, o in offs.items():
            if p in best and o < best[p][1]:
                bad.append((p, best[p], (t, o)))
            if o >= 0 and (p not in best or o > best[p][1]):
                best[p] = (t, o)
    return bad


# --- reading back and checking ---------------------------------------------------------------

def read_all(bootstrap, topic, partitions, timeout=60):
    """{partition: [(offset, value)]} from offset 0 up to each partition's high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "read-all-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "check.crcs": True, "auto.offset.reset": "earliest", "logger": LOG})
    try:
        hwm = {}
        for p in range(partitions):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    hwm[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                     cached=False)[1]
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        out = {p: [] for p in range(partitions)}
        todo = {p for p in range(partitions) if hwm[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out[m.partition()].append((m.offset(), m.value()))
            if m.offset() >= hwm[m.partition()] - 1:
                todo.discard(m.partition())
        assert not todo, f"partitions {sorted(todo)} not read up to their high watermark " \
                         f"{ {p: hwm[p] for p in todo} } in {timeout}s"
        return out, hwm
    finally:
        c.close()


def check_log(log, hwm, acked, sent):
    """Checks a read-back log against the producer's acknowledgements. Returns a list of
    problems (empty when all is well):
    - offsets in each partition are dense from 0 up to the high watermark;
    - every acknowledged message is there exactly once, at its acknowledged offset (in its
      partition when the client could not tell the offset);
    - no value appears twice anywhere, and each partition holds its values in send order;
    - nothing is in the log that was never sent."""
    problems = []
    where = {}
    for p, entries in log.items():
        offsets = [o for o, _ in entries]
        if offsets != list(range(hwm[p])):
            gaps = sorted(set(range(hwm[p])) - set(offsets))[:10]
            problems.append(f"partition {p}: offsets not dense 0..{hwm[p]}: {len(entries)} "
                            f"read, missing e.g. {gaps}")
        seqs = []
        for o, v in entries:
            try:
                s = seq_of(v)
            except (ValueError, IndexError):
                problems.append(f"partition {p} offset {o}: unexpected value {v[:40]!r}")
                continue
            if s >= sent:
                problems.append(f"partition {p} offset {o}: seq {s} was never sent")
            if s in where:
                problems.append(f"seq {s} is in the log twice: {where[s]} and {(p, o)}")
            where[s] = (p, o)
            seqs.append(s)
        out_of_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
        if out_of_order:
            problems.append(f"partition {p}: values out of send order, e.g. {out_of_order[:5]}")
    # librdkafka acknowledges a message whose own request failed as "possibly persisted"
    # (e.g. REQUEST_TIMED_OUT) once a later batch of the same idempotent producer succeeds
    # (IMPLICITACK): its offset is then unknown (None), and it must be in its partition once.
    lost = [(p, o, s) for p, o, s, _ in acked
            if (where.get(s) != (p, o) if o is not None and o >= 0
                else (where.get(s) or (None,))[0] != p)]
    if lost:
        problems.append(f"{len(lost)} acknowledged messages lost or moved, e.g. "
                        + ", ".join(f"seq {s} acked at {p}/{o}, found at {where.get(s)}"
                                    for p, o, s in lost[:5]))
    dup_acks = len(acked) - len({a[2] for a in acked})
    if dup_acks:
        problems.append(f"{dup_acks} messages acknowledged twice")
    return problems
