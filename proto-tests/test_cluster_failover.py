"""Failure tests on a three-broker cluster (issue 5): no acknowledged write is lost or
duplicated across broker crashes, pauses, a controller crash and a rolling restart.

test_cluster_failover: a topic with RF 3, min.insync.replicas=2 and 6 partitions; an idempotent
acks=all producer (ProducerLoad) records every acknowledged (partition, offset, value); a group
consumer reads along and commits; a monitor records the group's committed offsets over time.
Faults in sequence: kill -9 the broker leading most partitions (not the controller); restart
it; SIGSTOP the broker then leading most partitions past broker.session.timeout.ms (until the
controller has fenced it), then SIGCONT; kill -9 the active controller, then restart it. After
each fault the producer and the consumer must resume, and a restarted or resumed broker must
rejoin every ISR. Afterwards every acknowledged message is read back exactly once, at its
acknowledged offset, in send order per partition; offsets are dense; committed offsets never
went backwards. Each fault's unavailability window (fault -> first acknowledged acks=all
produce of a message sent after the fault) is printed as a line `UNAVAILABILITY ...` in the
`measurements` section of the session summary and written to <tmp>/unavailability.txt.

The test lowers broker.session.timeout.ms to 3000 and replica.lag.time.max.ms to 5000 to stay
fast; CLUSTER_FAILOVER_DEFAULTS=1 runs it with Kafka's defaults (9000 / 30000) instead.
test_cluster_user_story runs one fault with the defaults through scripts/cluster.sh.

test_cluster_rolling_restart: SIGTERM and restart each broker in turn under load (default
timeouts: controlled shutdown must move leadership away without waiting for fencing).

test_cluster_user_story: the issue's user story through scripts/cluster.sh, on a random free
port base and a temp CLUSTER_DIR.
"""
import os
import random
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cluster import (OFFSETS_TOPIC, CommitMonitor, GroupReader, ProducerLoad, check_log,
                     committed_went_backwards, make_cluster, read_all, wait_until)  # noqa: F401
from conftest import GREGOR_BIN, REPO

PARTITIONS = 6
RATE = 300  # messages a second
DEFAULTS = os.environ.get("CLUSTER_FAILOVER_DEFAULTS") == "1"
FAST = {"broker.session.timeout.ms": 3000, "replica.lag.time.max.ms": 5000,
        "leader.imbalance.check.interval.seconds": 5}
COMMON = {"group.initial.rebalance.delay.ms": 0}


def session_timeout_ms(config):
    return int(config.get("broker.session.timeout.ms", 9000))


class Load:
    """Producer, group consumer and commit monitor on one topic, and the fault timeline."""

    def __init__(self, bootstrap, topic, group):
        self.topic = topic
        self.prod = ProducerLoad(bootstrap, topic, PARTITIONS, rate=RATE)
        self.reader = GroupReader(bootstrap, topic, group)
        self.monitor = CommitMonitor(bootstrap, topic, group, PARTITIONS)
        self.faults = []  # (name, t)

    def start(self):
        self.prod.start()
        self.reader.start()
        wait_until(lambda: len(self.prod.acked) >= 2 * RATE and self.reader.commits, 60,
                   "producer acks and a first consumer commit")
        self.monitor.start()

    def fault(self, name):
        t = time.monotonic()
        self.faults.append((name, t))
        return t

    def resumed(self, name, t, timeout):
        """Waits until producer and consumer work again after the fault at t; returns the
        producer's unavailability window."""
        window = self.prod.wait_resumed(t, timeout, name)
        try:
            wait_until(lambda: self.reader.first_read_after(t, self.prod.sent_at), timeout + 30,
                       f"{name}: consumer reads a message sent after the fault", interval=0.05)
        except AssertionError:
            raise AssertionError(f"{name}: group consumer stuck (read {len(self.reader.records)},"
                                 f" errors {[str(e) for e, _ in self.reader.errors[-5:]]})")
        return window

    def stop_and_check(self, cluster):
        """Stops the load and checks the log, the consumer and the committed offsets. Returns
        the read-back high watermarks."""
        end = time.monotonic()
        self.prod.stop()
        prod = self.prod
        assert prod.unflushed == 0, f"{prod.unflushed} messages never acknowledged"
        assert not prod.fatal_errors(), f"fatal producer errors: {prod.fatal_errors()}"
        assert not prod.failed, f"{len(prod.failed)} deliveries failed, e.g. " \
                                f"{[(s, str(e)) for s, e, _ in prod.failed[:5]]}"
        log, hwm = read_all(cluster.bootstrap, self.topic, PARTITIONS)
        problems = check_log(log, hwm, prod.acked, len(prod.sent_at))
        assert not problems, "\n".join(problems)
        assert sum(hwm.values()) == len(prod.acked) == len(prod.sent_at)

        # The consumer reads everything, commits it, and committed offsets never went back.
        wait_until(lambda: all(self.reader.positions.get(p, 0) >= hwm[p] for p in hwm), 60,
                   f"group consumer reads up to the high watermarks {hwm} "
                   f"(at {self.reader.positions})")
        wait_until(lambda: self.reader.commits and self.reader.commits[-1][1] == hwm, 30,
                   "group consumer commits the high watermarks")
        time.sleep(0.5)  # one more monitor observation
        self.reader.stop()
        self.monitor.stop()
        read = {(p, o): s for p, o, s, _ in self.reader.records}
        wrong = [(p, o, s) for (p, o), s in read.items() if log[p][o][1] != f"m-{s:09d}".encode()]
        assert not wrong, f"the group consumer read values that differ from the log: {wrong[:5]}"
        assert set(read) == {(p, o) for p in log for o, _ in log[p]}, \
            "the group consumer did not read every message"
        back = committed_went_backwards(self.reader.commits)
        assert not back, f"acknowledged commits went backwards: {back[:5]}"
        back = committed_went_backwards(self.monitor.observations)
        assert not back, f"committed offsets (OffsetFetch) went backwards: {back[:5]}"
        assert len(self.monitor.observations) > 10
        # every acknowledged commit is still there later
        for t, offs in self.reader.commits:
            for tm, seen in self.monitor.observations:
                if tm > t + 0.01:
                    lower = {p: (o, seen.get(p)) for p, o in offs.items()
                             if seen.get(p, -1) < o}
                    assert not lower, f"a commit acknowledged at {t:.2f} was lost at {tm:.2f}: {lower}"
        self.end = end
        return hwm

    def gaps(self):
        """Longest stretch without acknowledgements from each fault to the next (or the end)."""
        times = [t for _, t in self.faults] + [self.end]
        return {name: self.prod.max_gap(t, times[i + 1])
                for i, (name, t) in enumerate(self.faults)}

    def summary(self):
        return (f"acked={len(self.prod.acked)} consumed={len(self.reader.records)} "
                f"commits={len(self.reader.commits)} commit_failures="
                f"{len(self.reader.commit_failures)} producer_errors={len(self.prod.errors)}")


def fmt(values):
    return " ".join(f"{k}={v:.2f}s" for k, v in values.items())


def preferred_leaders(cluster, topic):
    md = cluster.metadata([topic])
    return all(p["leader"] == p["replicas"][0] for p in md["topics"][0]["partitions"])


def test_cluster_failover(make_cluster, topic_name, tmp_path, measurement):
    config = dict(COMMON) if DEFAULTS else {**COMMON, **FAST}
    session = session_timeout_ms(config) / 1000
    rebalance = int(config.get("leader.imbalance.check.interval.seconds", 300))
    wait = session + 30  # the longest a fault may keep the producer waiting
    c = make_cluster(kafka_config=config)
    c.create_topic(topic_name, PARTITIONS, 3, {"min.insync.replicas": "2"})
    load = Load(c.bootstrap, topic_name, f"failover-{uuid.uuid4().hex[:6]}")
    load.start()
    c.wait_fully_replicated([topic_name, OFFSETS_TOPIC])
    windows = {}

    def back_to_normal(restarted):
        c.wait_fully_replicated([topic_name, OFFSETS_TOPIC], timeout=60)
        if rebalance <= 10:  # leadership goes back to the preferred replicas
            wait_until(lambda: preferred_leaders(c, topic_name), 4 * rebalance + 10,
                       f"node {restarted} gets its preferred leaderships back")
        time.sleep(1)

    # 1. kill -9 the leader of most partitions (not the controller: that is fault 4)
    controller = c.controller()
    x = c.leader_of_most(topic_name, exclude={controller})
    t = load.fault("kill-leader")
    c.kill9(x)
    windows["kill-leader"] = load.resumed("kill-leader", t, wait)
    wait_until(lambda: x not in c.leaders(topic_name).values(), 10,
               f"leadership moves away from killed node {x}")

    # 2. restart it: it catches up and rejoins every ISR
    t = load.fault("restart-leader")
    c.start_node(x)
    windows["restart-leader"] = load.resumed("restart-leader", t, wait)
    back_to_normal(x)

    # 3. SIGSTOP a broker past the session timeout (until fenced), then SIGCONT
    y = c.leader_of_most(topic_name, exclude={c.controller()})
    t = load.fault("sigstop")
    c.sigstop(y)
    windows["sigstop"] = load.resumed("sigstop", t, wait)
    wait_until(lambda: y in c.fenced(), 3 * session + 10, f"paused node {y} is fenced")
    assert time.monotonic() - t >= session
    wait_until(lambda: y not in c.leaders(topic_name).values(), 10,
               f"leadership moves away from paused node {y}")
    t = load.fault("sigcont")
    c.sigcont(y)
    windows["sigcont"] = load.resumed("sigcont", t, wait)
    wait_until(lambda: y not in c.fenced(), 30, f"resumed node {y} is unfenced")
    back_to_normal(y)

    # 4. kill -9 the active controller, then restart it
    z = c.controller()
    t = load.fault("kill-controller")
    c.kill9(z)
    windows["kill-controller"] = load.resumed("kill-controller", t, wait)
    new_controller = c.controller()
    assert new_controller != z
    t = load.fault("restart-controller")
    c.start_node(z)
    windows["restart-controller"] = load.resumed("restart-controller", t, wait)
    back_to_normal(z)
    time.sleep(2)

    assert not c.crashed(), f"nodes died: {c.crashed()}\n{c.log_tails()}"
    hwm = load.stop_and_check(c)
    gaps = load.gaps()
    consumer = {name: load.reader.first_read_after(t, load.prod.sent_at) - t
                for name, t in load.faults}
    tag = (f"session_timeout_ms={session_timeout_ms(config)} "
           f"replica_lag_ms={config.get('replica.lag.time.max.ms', 30000)}")
    lines = [f"UNAVAILABILITY {tag} {fmt(windows)}",
             f"MAX-ACK-GAP {tag} {fmt(gaps)}",
             f"CONSUMER-RESUME {tag} {fmt(consumer)}",
             f"FAILOVER nodes: kill-leader={x} sigstop={y} kill-controller={z} "
             f"(new controller {new_controller}); hwm={hwm}; {load.summary()}"]
    (tmp_path / "unavailability.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        print(line)
        measurement(line)
    for name, w in windows.items():
        assert w < wait, f"{name}: unavailable for {w:.1f}s"


def test_cluster_rolling_restart(make_cluster, topic_name, tmp_path, measurement):
    c = make_cluster(kafka_config=COMMON)  # default session and lag timeouts
    c.create_topic(topic_name, PARTITIONS, 3, {"min.insync.replicas": "2"})
    load = Load(c.bootstrap, topic_name, f"rolling-{uuid.uuid4().hex[:6]}")
    load.start()
    c.wait_fully_replicated([topic_name, OFFSETS_TOPIC])
    windows = {}
    for node_id in sorted(c.nodes):
        name = f"restart-node{node_id}" + ("(controller)" if node_id == c.controller() else "")
        t = load.fault(name)
        code = c.stop(node_id)
        assert code == 0, f"node {node_id}: exit {code} on SIGTERM\n{c.node(node_id).log_tail()}"
        c.start_node(node_id)
        windows[name] = load.resumed(name, t, 40)
        c.wait_fully_replicated([topic_name, OFFSETS_TOPIC], timeout=60)
        time.sleep(1)
    load.stop_and_check(c)
    gaps = load.gaps()
    lines = [f"ROLLING-RESTART session_timeout_ms=9000 max-ack-gap: {fmt(gaps)}",
             f"ROLLING-RESTART first-ack-after-SIGTERM: {fmt(windows)}; {load.summary()}"]
    (tmp_path / "unavailability.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        print(line)
        measurement(line)


# --- the user story, through scripts/cluster.sh ----------------------------------------------

CLUSTER_SH = REPO / "scripts" / "cluster.sh"


def ports_free(ports):
    socks = []
    try:
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def pick_port_base(size=3):
    """A random base below the ephemeral port range whose cluster.sh ports are all free."""
    for _ in range(50):
        base = random.randrange(20000, 31000, 2)
        ports = [base + 100 * i + d for i in range(size) for d in (0, 1, 552)]
        if ports_free(ports):
            return base
    pytest.skip("no free port base for cluster.sh found")


class ClusterScript:
    def __init__(self, cluster_dir, port_base):
        self.dir = Path(cluster_dir)
        self.base = port_base
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GREGOR_")}
        self.env.update(CLUSTER_DIR=str(self.dir), CLUSTER_PORT_BASE=str(port_base),
                        GREGOR_BIN=str(GREGOR_BIN))
        self.env.pop("CLUSTER_SIZE", None)
        self.pids = set()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.base}"

    def run(self, *args, timeout=90):
        res = subprocess.run([str(CLUSTER_SH), *args], env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        for f in self.dir.glob("node-*/pid"):
            try:
                self.pids.add(int(f.read_text().strip()))
            except (OSError, ValueError):
                pass
        assert res.returncode == 0, f"cluster.sh {' '.join(args)} exited {res.returncode}\n" \
                                    f"{res.stdout}\n{res.stderr}\n{self.log_tails()}"
        return res.stdout

    def kcat_metadata(self, topic=None):
        """(brokers, {partition: (leader, [isr])}) from kcat -L."""
        args = ["kcat", "-b", self.bootstrap, "-L", "-m", "10"] + (["-t", topic] if topic else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
        brokers = [int(b) for b in re.findall(r"^\s+broker (\d+) at ", out, re.M)]
        parts = {int(p): (int(l), [int(i) for i in isr.split(",") if i])
                 for p, l, isr in re.findall(
                     r"partition (\d+), leader (-?\d+), replicas: [\d,]*, isrs: ([\d,]*)", out)}
        return brokers, parts, out

    def log_tails(self, lines=30):
        out = []
        for f in sorted(self.dir.glob("node-*/gregor.log")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"----- {f} -----\n" + "\n".join(text))
        return "\n".join(out)

    def kill_leftovers(self):
        """Kills, by pid, any broker this test started that still runs."""
        for pid in self.pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.dir).encode() in cmdline:
                os.kill(pid, 9)


class NodeLog:
    def __init__(self, path):
        self.log_path = path

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@pytest.fixture
def cluster_script(request, tmp_path):
    cs = ClusterScript(tmp_path / "cluster-data", pick_port_base())
    # conftest attaches these logs' tails to a failing test's report
    request.node._gregor_brokers = [NodeLog(cs.dir / f"node-{i}" / "gregor.log")
                                    for i in (1, 2, 3)]
    yield cs
    try:
        subprocess.run([str(CLUSTER_SH), "stop"], env=cs.env, capture_output=True, timeout=120)
    finally:
        cs.kill_leftovers()


def test_cluster_user_story(cluster_script, topic_name, measurement):
    cs = cluster_script
    assert "cluster of 3 ready" in cs.run("start", "3")
    brokers, _, out = cs.kcat_metadata()
    assert sorted(brokers) == [1, 2, 3], out

    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": cs.bootstrap})
    a.create_topics([NewTopic(topic_name, PARTITIONS, 3, config={"min.insync.replicas": "2"})],
                    operation_timeout=10)[topic_name].result(30)

    def full_isr():
        _, parts, _ = cs.kcat_metadata(topic_name)
        return len(parts) == PARTITIONS and all(sorted(i) == [1, 2, 3] for _, i in parts.values())
    wait_until(full_isr, 30, "topic fully replicated")
    _, parts, out = cs.kcat_metadata(topic_name)
    leaders = [leader for leader, _ in parts.values()]
    assert sorted(set(leaders)) == [1, 2, 3], f"leaders not spread:\n{out}"

    prod = ProducerLoad(cs.bootstrap, topic_name, PARTITIONS, rate=RATE)
    prod.start()
    wait_until(lambda: len(prod.acked) >= RATE, 30, "first acknowledgements")
    victim = max(sorted(set(leaders)), key=leaders.count)
    t = time.monotonic()
    assert f"killed node {victim}" in cs.run("kill", str(victim))
    window = prod.wait_resumed(t, 60, "cluster.sh kill")
    assert f"node {victim}: down" in cs.run("status")
    wait_until(lambda: victim not in [l for l, _ in cs.kcat_metadata(topic_name)[1].values()], 30,
               f"leadership moves away from node {victim}")

    cs.run("start-node", str(victim))
    t_rejoin = time.monotonic()
    wait_until(full_isr, 60, f"node {victim} rejoins every ISR")
    rejoin = time.monotonic() - t_rejoin
    time.sleep(1)
    prod.stop()
    assert prod.unflushed == 0 and not prod.failed and not prod.fatal_errors()
    log, hwm = read_all(cs.bootstrap, topic_name, PARTITIONS)
    problems = check_log(log, hwm, prod.acked, len(prod.sent_at))
    assert not problems, "\n".join(problems)
    gap = prod.max_gap(t, time.monotonic())
    line = (f"UNAVAILABILITY cluster.sh session_timeout_ms=9000 (default) kill-leader={window:.2f}s "
            f"max-ack-gap={gap:.2f}s; node {victim} back in every ISR {rejoin:.2f}s after "
            f"start-node; acked={len(prod.acked)}")
    print(line)
    measurement(line)
    assert "stopped" in cs.run("stop")
    for pid in cs.pids:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(
            f"/proc/{pid}/status").read_bytes().lower(), f"broker pid {pid} still running"


def test_cluster_full_restart(make_cluster, topic_name):
    """Every node killed at once, then all restarted: the quorum recovers from disk (same
    controller-elected metadata, topics and configs) and every acknowledged message and
    committed offset is there."""
    c = make_cluster(kafka_config=COMMON)
    c.create_topic(topic_name, PARTITIONS, 3, {"min.insync.replicas": "2",
                                               "retention.ms": "86400000"})
    prod = ProducerLoad(c.bootstrap, topic_name, PARTITIONS, rate=RATE)
    prod.start()
    wait_until(lambda: len(prod.acked) >= 2 * RATE, 60, "acknowledged messages")
    prod.stop()
    assert prod.unflushed == 0 and not prod.failed
    group = f"restart-{uuid.uuid4().hex[:6]}"
    reader = GroupReader(c.bootstrap, topic_name, group)
    reader.start()
    wait_until(lambda: sum(reader.positions.values()) >= len(prod.acked)
               and reader.commits and sum(reader.commits[-1][1].values()) >= len(prod.acked),
               60, "the group consumer reads and commits everything")
    reader.stop()
    committed = reader.commits[-1][1]

    for node_id in c.nodes:
        c.kill9(node_id)
    for n in c.nodes.values():
        n.launch()
    for n in c.nodes.values():
        n.wait_ready(60)
    c.controller(60)
    c.wait_fully_replicated([topic_name, OFFSETS_TOPIC], timeout=60)

    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    [fut] = admin.describe_configs([ConfigResource("topic", topic_name)]).values()
    configs = fut.result(30)
    assert configs["min.insync.replicas"].value == "2"
    assert configs["retention.ms"].value == "86400000"
    log, hwm = read_all(c.bootstrap, topic_name, PARTITIONS)
    problems = check_log(log, hwm, prod.acked, len(prod.sent_at))
    assert not problems, "\n".join(problems)
    monitor = CommitMonitor(c.bootstrap, topic_name, group, PARTITIONS)
    monitor.start()
    wait_until(lambda: monitor.observations and monitor.observations[-1][1] == committed, 60,
               f"committed offsets {committed} after the restart")
    monitor.stop()
