#!/usr/bin/env python3
"""Side-by-side benchmark of Gregor and Apache Kafka on this machine (issue 7).

Run through scripts/bench-vs-kafka.sh, which installs what this needs (Kafka's jars from Maven
Central, the gregor-bench load generator, matplotlib) and then renders the report with
scripts/bench_vs_kafka_report.py.

Every workload runs against both brokers, alternating Gregor/Kafka/Gregor/Kafka, each run on a
fresh broker with a fresh data directory:

  W1   produce 2 GiB of 1 KiB messages, 6 partitions, acks=1, linger 5 ms, lz4
  W2   the same with 100-byte messages
  W3   consume all of W1 from the beginning (same broker, right after W1)
  W4   20k msgs/s of 1 KiB, acks=all, end-to-end latency (producer and consumer in one process),
       linger 5 ms; W4b the same with linger 0 (on the same broker, after W4)
  W5   idle broker with 100 topics x 6 partitions: RSS; startup to first acknowledged produce
  W6   3 brokers, RF 3, acks=all, produce throughput
  PERF Kafka's own kafka-producer-perf-test / kafka-consumer-perf-test on the W1/W3 workload
  SEC  the cost of TLS and of ACLs: W1's produce (acks=1, 1 KiB, linger 5 ms, lz4, 6
       partitions) and W3's consume of it, on brokers whose only listener is
         PLAINTEXT
         SSL              TLS with server authentication only (ssl.client.auth=none)
         SASL_PLAINTEXT   SASL PLAIN as user "bench", no authorizer
         SASL_PLAINTEXT+ACL   the same with the StandardAuthorizer, super.users=User:admin and
                          ACLs granting User:bench WRITE, READ and DESCRIBE on the topics and
                          READ on the consumer group (created by the admin with Kafka's
                          AclCommand)
       Certificates are made with the openssl CLI in the work directory (a CA, and one PEM
       keystore holding the server's PKCS#8 key and certificate chain). Each (broker, mode)
       is a fresh broker; the modes run in turn, reversed every other repetition.
  TRACE the cost of OpenTelemetry tracing on W1's produce, Gregor only: off, and export to a
       Jaeger v2 at 0%, 1% and 100% sampling, and at 1% reading traceparent headers of
       compressed batches (scripts/bench_trace.py)

The load generator is bench/ (gregor-bench, librdkafka through the rdkafka crate). For each run
the driver records the broker's CPU seconds (utime+stime from /proc/PID/stat), its peak RSS
(VmHWM, reset through /proc/PID/clear_refs before each workload) and the largest RssAnon and
RssFile seen (sampled every 100 ms): Gregor maps its segments for reads, so RssFile counts page
cache the kernel can drop, while RssAnon is the process's own memory.

Environment:
  BENCH_SCALE=1      multiplies W1/W2/W3/W6/PERF/SEC sizes and W4's duration (0.05: a smoke run)
  BENCH_REPS=3       repetitions per workload and broker
  BENCH_WORKLOADS    comma-separated subset of W1,W2,W3,W4,W5,W6,PERF,SEC,TXN,SHARE,TRACE (W3
                     runs with W1; TXN: transactional produce, scripts/bench_txn.py; SHARE: share
                     groups, scripts/bench_share.py; TRACE: tracing on W1, scripts/bench_trace.py)
  BENCH_MERGE=1      keep the other workloads' runs of an existing BENCH_OUT/results.json (a
                     re-run of some workloads, e.g. SEC alone); their meta goes to meta.reruns
  BENCH_SEC_MODES    comma-separated subset of PLAINTEXT,SSL,SASL_PLAINTEXT,SASL_PLAINTEXT+ACL
  BENCH_TRACE_MODES  comma-separated subset of OFF,0,1,100,1HDR
  BENCH_OUT          output directory (docs/bench)
  BENCH_WORKDIR      where data directories go (a fresh temporary directory)
  BENCH_W6_KAFKA=1   also run the 3-node Kafka cluster for W6 (0: Gregor only)
  BENCH_KINDS        gregor,kafka (default), or gregor alone: two Gregor builds compared in
                     runs of their own (GREGOR_BIN), e.g. before and after a hot-path change
  BENCH_PRODUCERS=2, BENCH_CONSUMERS=2   client instances in W1, W2, W6 / W3
  KAFKA_HEAP=1g      Kafka's -Xmx/-Xms
  KAFKA_LIB          Kafka's classpath directory (set by the shell script)
  GREGOR_BIN, BENCH_BIN   the broker and load generator binaries
"""
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import bench_trace
import bench_share
import bench_txn

REPO = Path(__file__).resolve().parent.parent
GiB = 1 << 30

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
WORKLOADS = [w.strip().upper() for w in
             os.environ.get("BENCH_WORKLOADS", "W1,W2,W3,W4,W5,W6,PERF,SEC,TXN,SHARE,TRACE").split(",") if w.strip()]
OUT = Path(os.environ.get("BENCH_OUT", REPO / "docs" / "bench"))
KAFKA_HEAP = os.environ.get("KAFKA_HEAP", "1g")
KAFKA_LIB = Path(os.environ.get("KAFKA_LIB", REPO / ".deps" / "kafka-bench" / "kafka-4.3.1"))
GREGOR_BIN = Path(os.environ.get("GREGOR_BIN", REPO / "target" / "release" / "gregor"))
BENCH_BIN = Path(os.environ.get("BENCH_BIN", REPO / "target" / "rdkafka" / "release" / "gregor-bench"))
W6_KAFKA = os.environ.get("BENCH_W6_KAFKA", "1") == "1"
# Which brokers run: both by default; "gregor" alone compares two Gregor builds (GREGOR_BIN)
# run one after the other, e.g. the cost of a change to the hot path.
KINDS = [k.strip() for k in os.environ.get("BENCH_KINDS", "gregor,kafka").split(",") if k.strip()]

PARTITIONS = 6
W1_BYTES = int(2 * GiB * SCALE)
W2_BYTES = int(2 * GiB * SCALE)
# W6 is smaller than W1: three brokers and the client share the two cores, and its size is
# not given by the issue.
W6_BYTES = int(GiB // 4 * SCALE)
# Client instances per workload: one librdkafka producer compresses on one thread per broker
# connection, which caps it near one core; with two, the client can use the machine's second
# core and the broker, not the client, sets the pace.
PRODUCERS = int(os.environ.get("BENCH_PRODUCERS", "2"))
CONSUMERS = int(os.environ.get("BENCH_CONSUMERS", "2"))
W4_RATE = 20_000
W4_SECONDS = max(5.0, 30.0 * SCALE)
W4B_SECONDS = max(5.0, 15.0 * SCALE)
W4_WARMUP_S = 5.0 if SCALE >= 0.5 else 2.0
W5_TOPICS = int(os.environ.get("BENCH_W5_TOPICS", "100"))
W5_IDLE_S = float(os.environ.get("BENCH_W5_IDLE_S", "10"))
WARMUP_BYTES = min(64 << 20, W1_BYTES)
W6_WARMUP_BYTES = min(16 << 20, W6_BYTES)
CLIENT_TIMEOUT_S = 1800
MERGE = os.environ.get("BENCH_MERGE", "0") == "1"

# SEC: security modes (id tag, mode); the bytes produced per run are W1's.
SEC_MODES = [("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL"), ("SASL", "SASL_PLAINTEXT"),
             ("ACL", "SASL_PLAINTEXT+ACL")]
_sec_only = [m.strip().upper() for m in os.environ.get("BENCH_SEC_MODES", "").split(",") if m.strip()]
if _sec_only:
    SEC_MODES = [(t, m) for t, m in SEC_MODES if m in _sec_only]
SEC_BYTES = W1_BYTES
SEC_GROUP = "gregor-bench"  # the group id of gregor-bench's consumers
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SEC_USERS = {"admin": "admin-secret", "bench": "bench-secret"}
# The broker's JAAS config for PLAIN: its own identity (admin) and the accepted users.
SEC_JAAS = (f'{PLAIN_LOGIN} required username="admin" password="{SEC_USERS["admin"]}" '
            + " ".join(f'user_{u}="{pw}"' for u, pw in SEC_USERS.items()) + ";")

# Kafka's bin/kafka-server-start.sh defaults (KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS).
KAFKA_JVM_OPTS = [f"-Xmx{KAFKA_HEAP}", f"-Xms{KAFKA_HEAP}", "-server", "-XX:+UseG1GC",
                  "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                  "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]
TOOL_JVM_OPTS = ["-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                 "-Dorg.slf4j.simpleLogger.logFile=System.err"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ports_free(ports):
    for p in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True


# ------------------------------------------------------------------------------------------
# /proc measurements

def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0])
    return out


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Monitor:
    """Broker CPU seconds and memory over one workload, summed over the broker processes."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.max_anon = self.max_file = self.max_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample_once(self):
        try:
            st = [status_kb(p) for p in self.pids]
        except (OSError, ValueError):
            return
        self.max_anon = max(self.max_anon, sum(s.get("RssAnon", 0) for s in st))
        self.max_file = max(self.max_file, sum(s.get("RssFile", 0) for s in st))
        self.max_rss = max(self.max_rss, sum(s.get("VmRSS", 0) for s in st))

    def _sample(self):
        while not self._stop.wait(0.1):
            self._sample_once()

    def __enter__(self):
        self.reset_ok = all(reset_peak(p) for p in self.pids)
        self.cpu0 = sum(cpu_seconds(p) for p in self.pids)
        self.t0 = time.monotonic()
        self.load0 = os.getloadavg()[0]
        self._sample_once()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.result = {}
        try:
            self._sample_once()
            self.result = {
                "broker_cpu_s": round(sum(cpu_seconds(p) for p in self.pids) - self.cpu0, 3),
                "broker_peak_rss_mb": round(sum(status_kb(p).get("VmHWM", 0) for p in self.pids) / 1024, 1),
                "broker_rss_anon_max_mb": round(self.max_anon / 1024, 1),
                "broker_rss_file_max_mb": round(self.max_file / 1024, 1),
                "wall_s": round(time.monotonic() - self.t0, 3),
                "loadavg_1m_before": self.load0,
                "loadavg_1m_after": os.getloadavg()[0],
            }
            if not self.reset_ok:
                self.result["note"] = "VmHWM not reset: peak since broker start"
        except (OSError, ValueError) as e:
            self.result = {"monitor_error": str(e)}
        return False


# ------------------------------------------------------------------------------------------
# Brokers

class Broker:
    name = "?"

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs = []
        # librdkafka properties (gregor-bench -X) for the load generator and for the admin
        # (topic creation); set by SEC for its listeners.
        self.client_config = {}
        self.admin_config = {}

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self, timeout=60, kill=False):
        """SIGTERM and wait (a clean shutdown), or with kill=True SIGKILL: the end of a run
        whose data is thrown away, where shutdown time would only lengthen the benchmark."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def log_tail(self, n=30):
        tails = []
        for path in sorted(self.workdir.glob("**/*.log")):
            try:
                lines = path.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            tails.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(tails)[-6000:]


def wait_for_log(path, needle, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in path.read_text(errors="replace"):
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited ({proc.returncode}) before ready: see {path}")
        time.sleep(0.05)
    raise RuntimeError(f"broker not ready after {timeout} s: see {path}")


class GregorSingle(Broker):
    name = "gregor"

    def __init__(self, workdir, security=None):
        """security: broker settings by Kafka's names (see sec_broker_config); its listener's
        port is taken from {port}."""
        super().__init__(workdir)
        self.port, self.cport, self.aport = free_ports(3)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "gregor.log"
        self.env = dict(os.environ)
        for k, v in (security or {}).items():
            # GREGOR_KAFKA_<KEY>: upper case, dots as underscores. Gregor reads the `_` of a
            # listener name back as `.` too (listener.name.sasl.plaintext.plain...), which it
            # accepts for listener.name.sasl_plaintext.plain...
            self.env["GREGOR_KAFKA_" + k.upper().replace(".", "_")] = \
                str(v).replace("{port}", str(self.port))

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def spawn(self):
        """Starts the process and returns at once (for startup timing)."""
        logf = open(self.log_path, "ab")
        proc = subprocess.Popen(
            [str(GREGOR_BIN), "serve", "--data-dir", str(self.data_dir),
             "--listen", self.bootstrap, "--controller-listen", f"127.0.0.1:{self.cport}",
             "--admin-listen", f"127.0.0.1:{self.aport}"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env)
        logf.close()
        self.procs = [proc]
        return proc

    def wait_ready(self, timeout=60):
        wait_for_log(self.log_path, "gregor ready", self.procs[0], timeout)

    def start(self):
        # The log is appended to across restarts: count readiness lines, not just find one.
        before = self.log_path.read_text(errors="replace").count("gregor ready") \
            if self.log_path.exists() else 0
        proc = self.spawn()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.log_path.read_text(errors="replace").count("gregor ready") > before:
                return self
            if proc.poll() is not None:
                raise RuntimeError(f"gregor exited before ready:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"gregor not ready after 60 s:\n{self.log_tail()}")


class KafkaNodeSet(Broker):
    """Apache Kafka in KRaft combined mode (broker + controller in each process), n nodes."""
    name = "kafka"

    def __init__(self, workdir, nodes=1, security=None):
        """security (one node): broker settings by Kafka's names (sec_broker_config), whose
        `listeners` replaces the PLAINTEXT listener; the CONTROLLER listener stays
        PLAINTEXT."""
        super().__init__(workdir)
        self.n = nodes
        self.security = dict(security or {})
        ports = free_ports(2 * nodes)
        self.ports, self.cports = ports[:nodes], ports[nodes:]
        self.cluster_id = _kafka_cluster_id()
        self.formatted = False
        self.starts = 0

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _props(self, i):
        node = i + 1
        voters = ",".join(f"{j + 1}@127.0.0.1:{c}" for j, c in enumerate(self.cports))
        rf = min(3, self.n)
        props = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.ports[i]},CONTROLLER://127.0.0.1:{self.cports[i]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.ports[i]}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / f"node-{node}" / "kafka-logs"),
            # Internal topics must fit the node count; everything else is Kafka's default.
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min(2, rf),
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min(2, rf),
        }
        if self.security:
            sec = {k: str(v).replace("{port}", str(self.ports[i])) for k, v in self.security.items()}
            name = sec["listeners"].split("://")[0]
            props.update(sec)
            props["listeners"] = f"{sec['listeners']},CONTROLLER://127.0.0.1:{self.cports[i]}"
            props["advertised.listeners"] = sec["listeners"]
            props["listener.security.protocol.map"] = f"CONTROLLER:PLAINTEXT,{name}:{name}"
        path = self.workdir / f"node-{node}" / "server.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def format(self):
        procs = [subprocess.Popen(
            ["java", *TOOL_JVM_OPTS, "-cp", f"{KAFKA_LIB}/*", "kafka.tools.StorageTool",
             "format", "-t", self.cluster_id, "-c", str(self._props(i))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(self.n)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"kafka storage format failed:\n{out}")
        self.formatted = True

    def log_path(self, i):
        return self.workdir / f"node-{i + 1}" / "kafka.log"

    def spawn(self):
        if not self.formatted:
            self.format()
        self.procs = []
        self.starts += 1
        for i in range(self.n):
            props = self.workdir / f"node-{i + 1}" / "server.properties"
            logp = self.log_path(i)
            logp.with_suffix(f".{self.starts}.log").touch()
            cmd = ["java", *KAFKA_JVM_OPTS,
                   "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                   "-Dorg.slf4j.simpleLogger.showDateTime=true",
                   f"-Dorg.slf4j.simpleLogger.logFile={logp.with_suffix(f'.{self.starts}.log')}",
                   "-cp", f"{KAFKA_LIB}/*", "kafka.Kafka", str(props)]
            out = open(self.workdir / f"node-{i + 1}" / "stdout.txt", "ab")
            self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL))
            out.close()
        return self.procs

    def wait_ready(self, timeout=180):
        for i, p in enumerate(self.procs):
            wait_for_log(self.log_path(i).with_suffix(f".{self.starts}.log"),
                         "Kafka Server started", p, timeout)

    def start(self):
        self.spawn()
        self.wait_ready()
        return self


def _kafka_cluster_id():
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    import base64
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class GregorCluster(Broker):
    """Three Gregor brokers through scripts/cluster.sh."""
    name = "gregor"

    def __init__(self, workdir, nodes=3):
        super().__init__(workdir)
        self.n = nodes
        self.cluster_dir = self.workdir / "cluster"
        for _ in range(200):
            base = 20000 + 10 * int.from_bytes(os.urandom(2), "big") % 9000
            ports = [base + 100 * i + off for i in range(nodes) for off in (0, 1, 552)]
            if ports_free(ports):
                break
        self.base = base
        self.env = dict(os.environ, CLUSTER_DIR=str(self.cluster_dir),
                        CLUSTER_PORT_BASE=str(base), GREGOR_BIN=str(GREGOR_BIN),
                        CLUSTER_SIZE=str(nodes))

    @property
    def bootstrap(self):
        return ",".join(f"127.0.0.1:{self.base + 100 * i}" for i in range(self.n))

    def start(self):
        res = subprocess.run([str(REPO / "scripts" / "cluster.sh"), "start", str(self.n)],
                             env=self.env, capture_output=True, text=True, timeout=180)
        if res.returncode != 0:
            raise RuntimeError(f"cluster.sh start failed:\n{res.stdout}\n{res.stderr}\n{self.log_tail()}")
        self._pids = [int((self.cluster_dir / f"node-{i + 1}" / "pid").read_text())
                      for i in range(self.n)]
        return self

    @property
    def pids(self):
        return self._pids

    def alive(self):
        return all(os.path.exists(f"/proc/{p}") for p in self._pids)

    def stop(self, timeout=60, kill=False):
        if kill:
            for p in self._pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        subprocess.run([str(REPO / "scripts" / "cluster.sh"), "stop"], env=self.env,
                       capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------
# Clients

def parse_result(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("no RESULT line in output:\n" + stdout[-2000:])


def run_client(cmd, timeout=CLIENT_TIMEOUT_S):
    """Runs a client to completion; returns (stdout, client CPU seconds)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        # RUST_LIB_BACKTRACE=0: gregor-bench's errors without a backtrace (which would push
        # the message out of the tail kept below when RUST_BACKTRACE is set).
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, RUST_LIB_BACKTRACE="0"))
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout} s:\n{(e.stdout or '')[-1500:]}\n"
                           f"{(e.stderr or '')[-1500:]}") from None
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {res.returncode}:\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return res.stdout, round(cpu, 3)


def client_args(config):
    """gregor-bench's -X options for librdkafka properties; with any, librdkafka's errors go
    to stderr too (shown when a run fails)."""
    args = [a for k, v in config.items() for a in ("-X", f"{k}={v}")]
    return args + ["--log", "warn"] if args else []


def bench(broker, *args, timeout=CLIENT_TIMEOUT_S, admin=False):
    """Runs gregor-bench against the broker, as its load generator's identity (or, with
    admin=True, the admin's)."""
    config = broker.admin_config if admin else broker.client_config
    out, cpu = run_client([str(BENCH_BIN), "--bootstrap", broker.bootstrap, *client_args(config),
                           *map(str, args)], timeout)
    result = parse_result(out)
    result["client_cpu_s"] = cpu
    return result


def create_topic(broker, name, partitions=PARTITIONS, rf=1, count=1):
    return bench(broker, "create-topics", "--prefix", name, "--count", count,
                 "--partitions", partitions, "--replication-factor", rf, timeout=300, admin=True)


def produce(broker, topic, nbytes, msg_size=1024, acks="1", linger=5, compression="lz4",
            producers=PRODUCERS):
    return bench(broker, "produce", "--topic", topic, "--bytes", nbytes, "--msg-size", msg_size,
                 "--acks", acks, "--linger-ms", linger, "--compression", compression,
                 "--producers", producers)


def warm_up(broker, rf=1, acks="1", nbytes=WARMUP_BYTES):
    """The same kind of load on a topic of its own, so the JVM's JIT (and the page cache) are
    warm for both brokers before anything is measured."""
    create_topic(broker, "warmup", rf=rf)
    produce(broker, "warmup", nbytes, acks=acks)


def stored_mb(broker, topic):
    """Bytes in the topic's segment files (how well the batches compressed, as stored)."""
    return round(sum(f.stat().st_size for f in broker.workdir.glob(f"**/{topic}-*/*.log")) / 1e6, 1)


def measure(broker, fn):
    """Runs fn() and returns its result merged with the broker's resource use."""
    with Monitor(broker.pids) as m:
        result = fn()
    if not broker.alive():
        raise RuntimeError("broker died during the workload\n" + broker.log_tail())
    result.update(m.result)
    return result


# ------------------------------------------------------------------------------------------
# Workloads. Each returns {workload id: metrics} for one run on one broker.

def make_broker(kind, workdir, nodes=1):
    if kind == "gregor":
        return GregorCluster(workdir, nodes) if nodes > 1 else GregorSingle(workdir)
    return KafkaNodeSet(workdir, nodes)


def run_w1_w3(kind, workdir, do_w3):
    b = make_broker(kind, workdir).start()
    try:
        warm_up(b)
        create_topic(b, "w1")
        out = {"W1": measure(b, lambda: produce(b, "w1", W1_BYTES))}
        if do_w3:
            n = int(out["W1"]["messages"])
            out["W3"] = measure(b, lambda: bench(b, "consume", "--topic", "w1", "--messages", n,
                                                 "--consumers", CONSUMERS))
        out["W1"]["stored_mb"] = stored_mb(b, "w1")
        out["W1"]["raw_mb"] = round(out["W1"]["messages"] * 1024 / 1e6, 1)
        return out
    finally:
        b.stop(kill=True)


def run_w2(kind, workdir):
    b = make_broker(kind, workdir).start()
    try:
        warm_up(b)
        create_topic(b, "w2")
        return {"W2": measure(b, lambda: produce(b, "w2", W2_BYTES, msg_size=100))}
    finally:
        b.stop(kill=True)


def run_w4(kind, workdir):
    """W4 with librdkafka's default linger (5 ms, as in W1), then W4b with linger 0 (a client
    tuned for latency: many more, smaller requests) on a topic of its own."""
    b = make_broker(kind, workdir).start()
    try:
        warm_up(b, acks="all")
        out = {}
        for wid, topic, linger, secs in (("W4", "w4", 5, W4_SECONDS), ("W4b", "w4b", 0, W4B_SECONDS)):
            create_topic(b, topic)
            out[wid] = measure(b, lambda: bench(
                b, "e2e", "--topic", topic, "--rate", W4_RATE, "--seconds", secs,
                "--warmup-s", W4_WARMUP_S, "--msg-size", 1024, "--acks", "all",
                "--linger-ms", linger, "--compression", "none"))
        return out
    finally:
        b.stop(kill=True)


def startup_to_first_produce(broker, topic):
    """Starts the probe, then the broker; returns ms from the broker's spawn to the probe's
    first acknowledged produce."""
    probe = subprocess.Popen([str(BENCH_BIN), "--bootstrap", broker.bootstrap, "probe",
                              "--topic", topic, "--timeout-s", "180"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = probe.stdout.readline()
    if "probe ready" not in line:
        probe.kill()
        raise RuntimeError(f"probe did not start: {line} {probe.stderr.read()}")
    t0 = time.time_ns()
    broker.spawn()
    try:
        out, err = probe.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        probe.kill()
        raise RuntimeError("probe timed out\n" + broker.log_tail()) from None
    if probe.returncode != 0:
        raise RuntimeError(f"probe failed: {out} {err}\n{broker.log_tail()}")
    acked = parse_result(line + out)["acked_epoch_ns"]
    return round((acked - t0) / 1e6, 1)


def idle_memory(pids):
    st = [status_kb(p) for p in pids]
    return {
        "rss_mb": round(sum(s["VmRSS"] for s in st) / 1024, 1),
        "rss_anon_mb": round(sum(s.get("RssAnon", 0) for s in st) / 1024, 1),
        "rss_file_mb": round(sum(s.get("RssFile", 0) for s in st) / 1024, 1),
        "peak_rss_mb": round(sum(s["VmHWM"] for s in st) / 1024, 1),
    }


def run_w5(kind, workdir):
    b = make_broker(kind, workdir)
    if kind == "kafka":
        b.format()  # a setup step, not part of startup
    try:
        out = {"startup_empty_ms": startup_to_first_produce(b, "probe")}
        if kind == "kafka":
            b.wait_ready()
        cpu0 = sum(cpu_seconds(p) for p in b.pids)
        t = time.monotonic()
        create_topic(b, "w5", count=W5_TOPICS)
        out["create_topics_s"] = round(time.monotonic() - t, 3)
        time.sleep(W5_IDLE_S)
        out.update(idle_memory(b.pids))
        out["broker_cpu_s"] = round(sum(cpu_seconds(p) for p in b.pids) - cpu0, 3)
        b.stop()
        out["startup_ms"] = startup_to_first_produce(b, "w5-0")
        if kind == "gregor":
            # Gregor's own figure: process start to "gregor ready" (listener serving).
            found = re.findall(r"startup_ms=(\d+)", b.log_path.read_text(errors="replace"))
            if found:
                out["ready_ms_logged"] = float(found[-1])
        if kind == "kafka":
            b.wait_ready()
        time.sleep(min(5.0, W5_IDLE_S))
        out["rss_after_restart_mb"] = idle_memory(b.pids)["rss_mb"]
        out["disk_mb"] = round(du_mb(b.workdir), 1)
        return {"W5": out}
    finally:
        b.stop(kill=True)


def run_w6(kind, workdir):
    b = make_broker(kind, workdir, nodes=3).start()
    try:
        warm_up(b, rf=3, acks="all", nbytes=W6_WARMUP_BYTES)
        create_topic(b, "w6", rf=3)
        return {"W6": measure(b, lambda: produce(b, "w6", W6_BYTES, acks="all"))}
    finally:
        b.stop(kill=True)


def payload_file(msg_size):
    """Lines of the same kind of text gregor-bench sends, for kafka-producer-perf-test."""
    path = OUT_WORK / f"payload-{msg_size}.txt"
    if path.exists():
        return path
    words = ("the of and to in a is that for it as was with be by on not he this are or his "
             "from at which but have an had they you were their one all we can her has there "
             "order payment customer shipped account balance event sensor temperature user "
             "session click page device region europe status ok error timeout retry latency "
             "partition offset message broker request").split()
    state = 0x9E3779B97F4A7C15
    lines = []
    for _ in range(20000):
        parts, n = [], 0
        while n <= msg_size:
            state = (state * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
            w = words[(state >> 33) % len(words)] if (state >> 20) % 7 else str((state >> 24) % 100000)
            parts.append(w)
            n += len(w) + 1
        lines.append(" ".join(parts)[:msg_size])
    path.write_text("\n".join(lines) + "\n")
    return path


def java_tool(main, *args, timeout=CLIENT_TIMEOUT_S):
    out, cpu = run_client(["java", *TOOL_JVM_OPTS, "-cp", f"{KAFKA_LIB}/*", main, *map(str, args)],
                          timeout)
    return out, cpu


def run_perf(kind, workdir):
    b = make_broker(kind, workdir).start()
    try:
        warm_up(b)
        create_topic(b, "perf")
        n = W1_BYTES // 1024

        def producer():
            out, cpu = java_tool(
                "org.apache.kafka.tools.ProducerPerformance", "--topic", "perf",
                "--num-records", n, "--throughput", -1, "--payload-file", payload_file(1024),
                "--bootstrap-server", b.bootstrap, "--command-property", "acks=1",
                "linger.ms=5", "compression.type=lz4", "enable.idempotence=false")
            # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency,
            #  p50 ms 50th, p95 ms 95th, p99 ms 99th, p999 ms 99.9th."
            last = [l for l in out.splitlines() if "records sent" in l][-1]
            sent = re.search(r"(\d+) records sent, ([\d.]+) records/sec", last)
            pct = re.search(r"([\d.]+) ms avg latency.* ([\d.]+) ms 50th, ([\d.]+) ms 95th, "
                            r"([\d.]+) ms 99th, ([\d.]+) ms 99.9th", last)
            if not sent or not pct:
                raise RuntimeError(f"unexpected kafka-producer-perf-test output: {last}")
            rate = float(sent.group(2))
            return {"messages": float(sent.group(1)), "msgs_per_s": rate,
                    "mb_per_s": round(rate * 1024 / 1e6, 2), "avg_ms": float(pct.group(1)),
                    "p50_ms": float(pct.group(2)), "p99_ms": float(pct.group(4)),
                    "p999_ms": float(pct.group(5)), "client_cpu_s": cpu, "raw": last}

        def consumer():
            out, cpu = java_tool(
                "org.apache.kafka.tools.ConsumerPerformance", "--topic", "perf",
                "--num-records", n, "--bootstrap-server", b.bootstrap, "--timeout", 60000)
            # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
            # nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
            line = [l for l in out.splitlines() if l and l[0].isdigit()][-1]
            f = [x.strip() for x in line.split(",")]
            mib, fetch_ms, nmsg = float(f[2]), float(f[7]), float(f[4])
            return {"messages": nmsg, "mb_per_s": round(mib * 1048576 / 1e6 / (fetch_ms / 1000), 2),
                    "msgs_per_s": round(nmsg / (fetch_ms / 1000), 1),
                    "rebalance_ms": float(f[6]), "client_cpu_s": cpu, "raw": line}

        out = {"PERF-P": measure(b, producer)}
        out["PERF-C"] = measure(b, consumer)
        return out
    finally:
        b.stop(kill=True)


# ------------------------------------------------------------------------------------------
# SEC: TLS and ACLs

class SecCerts:
    """A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI:
    `ca` (ca.pem, the truststore) and `keystore` (server-keystore.pem: the EC P-256 key,
    unencrypted PKCS#8, then the certificate chain), as Kafka's PEM keystores
    (ssl.keystore.type=PEM) and Gregor take them."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "req.cnf").write_text("[req]\ndistinguished_name=dn\nprompt=no\n[dn]\n")
        self._key("ca")
        (self.root / "ca.ext").write_text(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\n")
        self._run("req", "-new", "-key", "ca.key", "-subj", "/O=gregor-bench/CN=Bench CA",
                  "-config", "req.cnf", "-out", "ca.csr")
        self._run("x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", "3650",
                  "-sha256", "-extfile", "ca.ext", "-out", "ca.pem")
        self._key("server")
        (self.root / "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        self._run("req", "-new", "-key", "server.key", "-subj", "/O=gregor-bench/CN=localhost",
                  "-config", "req.cnf", "-out", "server.csr")
        self._run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                  "-set_serial", str(uuid.uuid4().int >> 64), "-days", "825", "-sha256",
                  "-extfile", "server.ext", "-out", "server.crt")
        self.ca = self.root / "ca.pem"
        self.keystore = self.root / "server-keystore.pem"
        self.keystore.write_text("".join((self.root / f).read_text()
                                         for f in ("server.key", "server.crt", "ca.pem")))

    def _key(self, name):
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", f"{name}.key")

    def _run(self, *args):
        res = subprocess.run(["openssl", *args], cwd=self.root, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)}: {res.stderr}")


_SEC_CERTS = []


def sec_certs():
    if not _SEC_CERTS:
        _SEC_CERTS.append(SecCerts(OUT_WORK / "certs"))
    return _SEC_CERTS[0]


def sec_broker_config(mode, certs):
    """The broker's settings for a SEC mode, by Kafka's names ({port}: the listener's port),
    the same for Gregor and Kafka; None for PLAINTEXT (each broker's defaults, as W1)."""
    if mode == "PLAINTEXT":
        return None
    if mode == "SSL":
        return {"listeners": "SSL://127.0.0.1:{port}", "inter.broker.listener.name": "SSL",
                "ssl.keystore.type": "PEM", "ssl.keystore.location": str(certs.keystore),
                "ssl.truststore.type": "PEM", "ssl.truststore.location": str(certs.ca),
                "ssl.client.auth": "none"}
    cfg = {"listeners": "SASL_PLAINTEXT://127.0.0.1:{port}",
           "inter.broker.listener.name": "SASL_PLAINTEXT",
           "sasl.enabled.mechanisms": "PLAIN",
           # Kafka's default is GSSAPI; Gregor's is PLAIN.
           "sasl.mechanism.inter.broker.protocol": "PLAIN",
           "listener.name.sasl_plaintext.plain.sasl.jaas.config": SEC_JAAS}
    if mode == "SASL_PLAINTEXT+ACL":
        cfg["authorizer.class.name"] = STANDARD_AUTHORIZER
        cfg["super.users"] = "User:admin"
    return cfg


def sec_client_config(mode, certs, user):
    """librdkafka's properties for a SEC mode, as `user`."""
    if mode == "PLAINTEXT":
        return {}
    if mode == "SSL":
        # ssl.endpoint.identification.algorithm is https by default: the certificate's SAN
        # IP:127.0.0.1 is checked too.
        return {"security.protocol": "SSL", "ssl.ca.location": str(certs.ca)}
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": user, "sasl.password": SEC_USERS[user]}


def sec_make_broker(kind, workdir, mode, certs):
    security = sec_broker_config(mode, certs)
    if kind == "gregor":
        b = GregorSingle(workdir, security)
    else:
        if security and "authorizer.class.name" in security:
            # Kafka authorizes its broker's registration with its controller (CLUSTER_ACTION)
            # on the controller listener, which stays PLAINTEXT: there the broker is
            # User:ANONYMOUS. Clients reach only the SASL listener, where nobody is anonymous.
            # (Gregor's single node has no such network hop.)
            security = dict(security, **{"super.users": "User:admin;User:ANONYMOUS"})
        b = KafkaNodeSet(workdir, 1, security)
    b.client_config = sec_client_config(mode, certs, "bench")
    b.admin_config = sec_client_config(mode, certs, "admin")
    return b


def sec_add_acls(broker, topics):
    """As the admin, with Kafka's own AclCommand (the same tool for both brokers): User:bench
    may WRITE, READ and DESCRIBE the topics and READ the consumer group."""
    props = broker.workdir / "admin.properties"
    props.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        f'sasl.jaas.config={PLAIN_LOGIN} required username="admin" '
        f'password="{SEC_USERS["admin"]}";\n')
    common = ["--bootstrap-server", broker.bootstrap, "--command-config", props, "--add",
              "--allow-principal", "User:bench"]
    # Two commands: AclCommand applies every --operation to every resource given, and WRITE
    # is no operation on a group.
    java_tool("org.apache.kafka.tools.AclCommand", *common,
              *[a for t in topics for a in ("--topic", t)],
              "--operation", "Write", "--operation", "Read", "--operation", "Describe",
              timeout=180)
    java_tool("org.apache.kafka.tools.AclCommand", *common, "--group", SEC_GROUP,
              "--operation", "Read", timeout=180)


def sec_checks(broker, mode, certs):
    """Evidence that the mode is what it says, recorded with the run: for SSL the protocol
    and cipher that `openssl s_client` negotiates, and that a plaintext client is refused;
    for the ACL mode that User:bench is refused what no ACL grants (creating a topic)."""
    out = {}
    if mode == "SSL":
        res = subprocess.run(["openssl", "s_client", "-connect", broker.bootstrap,
                              "-servername", "localhost", "-CAfile", str(certs.ca),
                              "-verify_return_error", "-brief"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        text = res.stdout + res.stderr
        proto = re.search(r"Protocol version: (\S+)", text)
        cipher = re.search(r"Ciphersuite: (\S+)", text)
        verified = "Verification: OK" in text
        if not (proto and cipher and verified):
            raise RuntimeError(f"TLS check failed against {broker.bootstrap}:\n{text[-2000:]}")
        out["tls"] = f"{proto.group(1)} {cipher.group(1)}"
        try:
            refused = subprocess.run([str(BENCH_BIN), "--bootstrap", broker.bootstrap,
                                      "create-topics", "--prefix", "plaintext-client",
                                      "--timeout-s", "5"],
                                     capture_output=True, text=True, timeout=60).returncode != 0
        except subprocess.TimeoutExpired:
            refused = True
        if not refused:
            raise RuntimeError("a plaintext client created a topic on the SSL listener")
        out["plaintext_client_refused"] = 1
    if mode == "SASL_PLAINTEXT+ACL":
        res = subprocess.run([str(BENCH_BIN), "--bootstrap", broker.bootstrap,
                              *client_args(broker.client_config), "create-topics",
                              "--prefix", "not-granted", "--timeout-s", "20"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, RUST_LIB_BACKTRACE="0"))
        if res.returncode == 0:
            raise RuntimeError("User:bench created a topic that no ACL allows")
        if "authorization failed" not in (res.stdout + res.stderr).lower():
            raise RuntimeError("creating a topic as User:bench failed, but not for want of "
                               f"an ACL:\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")
        out["unauthorized_create_refused"] = 1
    return out


def run_sec(kind, workdir, tag, mode):
    """One SEC mode on a fresh broker: W1's produce and W3's consume of it."""
    certs = sec_certs()
    b = sec_make_broker(kind, workdir, mode, certs)
    b.start()
    try:
        create_topic(b, "warmup")
        create_topic(b, "sec")
        if mode == "SASL_PLAINTEXT+ACL":
            sec_add_acls(b, ["warmup", "sec"])
        checks = sec_checks(b, mode, certs)
        # As in W1: the same load first, on a topic of its own (JIT, page cache; and here
        # the TLS and SASL paths), not measured.
        produce(b, "warmup", WARMUP_BYTES)
        p = measure(b, lambda: produce(b, "sec", SEC_BYTES))
        n = int(p["messages"])
        c = measure(b, lambda: bench(b, "consume", "--topic", "sec", "--messages", n,
                                     "--consumers", CONSUMERS))
        for m in (p, c):
            m["mode"] = mode
            m.update(checks)
        return {f"SEC-{tag}-P": p, f"SEC-{tag}-C": c}
    finally:
        b.stop(kill=True)


def du_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total / 1e6


# ------------------------------------------------------------------------------------------

def machine_info():
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    java = sh("java", "-version") or subprocess.run(["java", "-version"], capture_output=True,
                                                     text=True).stderr.splitlines()[0]
    jars = sorted(p.name for p in KAFKA_LIB.glob("kafka_2.13-*.jar"))
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 1048576, 1),
        "kernel": platform.release(), "os": sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "java": java.splitlines()[0] if java else "",
        "kafka": jars[0].removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "?",
        "kafka_jvm_opts": " ".join(KAFKA_JVM_OPTS),
        "gregor_commit": sh("git", "-C", str(REPO), "describe", "--always", "--dirty"),
        "gregor_binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S",
                                             time.gmtime(os.stat(GREGOR_BIN).st_mtime)),
        "librdkafka": re.sub(r".*\+", "", next(
            (l.split('"')[1] for l in (REPO / "bench" / "Cargo.lock").read_text().splitlines()
             if l.startswith('version = "') and "+" in l), "?")),
        "scale": SCALE, "reps": REPS, "workloads": WORKLOADS,
        "sizes": {"W1_bytes": W1_BYTES, "W2_bytes": W2_BYTES, "W6_bytes": W6_BYTES,
                  "W4_rate": W4_RATE, "W4_seconds": W4_SECONDS, "W4_warmup_s": W4_WARMUP_S,
                  "W4b_seconds": W4B_SECONDS, "producers": PRODUCERS, "consumers": CONSUMERS,
                  "W5_topics": W5_TOPICS, "W5_idle_s": W5_IDLE_S, "warmup_bytes": WARMUP_BYTES,
                  "W6_warmup_bytes": W6_WARMUP_BYTES, "SEC_bytes": SEC_BYTES,
                  "TXN_bytes": bench_txn.txn_bytes(SCALE),
                  "SHARE_records": bench_share.share_records(SCALE),
                  "SEC_modes": [m for _, m in SEC_MODES],
                  "TRACE_modes": [m[0] for m in bench_trace.TRACE_MODES]},
        "loadavg_start": os.getloadavg(),
    }


OUT_WORK = None


def workload_of(wid):
    """The BENCH_WORKLOADS entry that produces a result id (W3 runs with W1)."""
    if wid.startswith("SEC-"):
        return "SEC"
    if wid.startswith("TXN-"):
        return "TXN"
    if wid.startswith("SHARE-"):
        return "SHARE"
    if wid.startswith("TRACE-"):
        return "TRACE"
    return {"W3": "W1", "W4b": "W4", "PERF-P": "PERF", "PERF-C": "PERF"}.get(wid, wid)


def main():
    global OUT_WORK, GREGOR_BIN
    OUT.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("BENCH_WORKDIR")
    work = Path(tempfile.mkdtemp(prefix="gregor-vs-kafka-", dir=base))
    OUT_WORK = work
    # Snapshot the broker binary, so a rebuild during the run cannot change what is measured.
    snap = work / "gregor"
    shutil.copy2(GREGOR_BIN, snap)
    info = machine_info()
    GREGOR_BIN = snap
    results = {"meta": info, "runs": []}
    results_path = OUT / "results.json"
    if MERGE and results_path.exists():
        # Keep the other workloads' runs and meta; this run's meta goes to meta.reruns.
        old = json.loads(results_path.read_text())
        mine = {workload_of(w) for w in WORKLOADS}
        results = {"meta": old["meta"],
                   "runs": [r for r in old["runs"] if workload_of(r["workload"]) not in mine]}
        reruns = results["meta"].setdefault("reruns", {})
        for w in sorted(mine):
            reruns[w] = info

    plan = []
    for w in ("W1", "W2", "W4", "W5", "W6", "PERF", "SEC", "TXN", "SHARE", "TRACE"):
        if w == "W1" and not ({"W1", "W3"} & set(WORKLOADS)):
            continue
        if w != "W1" and w not in WORKLOADS:
            continue
        for rep in range(1, REPS + 1):
            # SEC: the modes in turn, reversed every other repetition, so that a drift in the
            # machine's load does not favour one mode (the ACL comparison is 5%).
            # TRACE the same way.
            modes = {"SEC": SEC_MODES, "TRACE": bench_trace.TRACE_MODES}.get(w, [None])
            modes = modes if rep % 2 else modes[::-1]
            for mode in modes:
                for kind in KINDS:
                    if w == "W6" and kind == "kafka" and not W6_KAFKA:
                        continue
                    if w == "TRACE" and kind == "kafka":  # Kafka has no broker-side tracing
                        continue
                    plan.append((w, rep, kind, mode))
    log(f"work dir {work}; {len(plan)} runs; scale {SCALE}, {REPS} reps")

    started = time.monotonic()
    for i, (w, rep, kind, mode) in enumerate(plan, 1):
        label = w if mode is None else f"{w} {mode[1]}"
        run_dir = work / (f"{w}-{rep}-{kind}" if mode is None else f"{w}-{mode[0]}-{rep}-{kind}")
        t = time.monotonic()
        log(f"({i}/{len(plan)}) {label} rep {rep} on {kind}")
        try:
            if w == "W1":
                out = run_w1_w3(kind, run_dir, "W3" in WORKLOADS)
            elif w == "W2":
                out = run_w2(kind, run_dir)
            elif w == "W4":
                out = run_w4(kind, run_dir)
            elif w == "W5":
                out = run_w5(kind, run_dir)
            elif w == "W6":
                out = run_w6(kind, run_dir)
            elif w == "SEC":
                out = run_sec(kind, run_dir, *mode)
            elif w == "TXN":
                out = bench_txn.run_txn(sys.modules[__name__], kind, run_dir)
            elif w == "SHARE":
                out = bench_share.run_share(sys.modules[__name__], kind, run_dir)
            elif w == "TRACE":
                out = bench_trace.run_trace(sys.modules[__name__], run_dir, *mode)
            else:
                out = run_perf(kind, run_dir)
            for wid, metrics in out.items():
                results["runs"].append({"workload": wid, "broker": kind, "rep": rep, "ok": True,
                                        "metrics": metrics})
                log(f"    {wid} {kind}: " + ", ".join(
                    f"{k}={v}" for k, v in metrics.items() if k not in ("curve", "raw")))
        except Exception as e:  # a failed run is reported, never fatal
            msg = str(e)
            log(f"    FAILED: {msg[:3000]}")
            wids = {"W1": ["W1", "W3"] if "W3" in WORKLOADS else ["W1"], "W4": ["W4", "W4b"],
                    "PERF": ["PERF-P", "PERF-C"],
                    "TXN": [f"TXN-{n}" for n in bench_txn.TXN_SIZES],
                    "SHARE": [f"SHARE-{n}" for n in bench_share.SHARE_COUNTS],
                    "SEC": [f"SEC-{mode[0]}-P", f"SEC-{mode[0]}-C"] if mode else [],
                    "TRACE": [f"TRACE-{mode[0]}-P", f"TRACE-{mode[0]}-R"] if mode else []
                    }.get(w, [w])
            for wid in wids:
                results["runs"].append({"workload": wid, "broker": kind, "rep": rep, "ok": False,
                                        "error": msg[:4000]})
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        log(f"    {time.monotonic() - t:.0f} s (total {time.monotonic() - started:.0f} s)")
        info["wall_s"] = round(time.monotonic() - started, 1)
        info["loadavg_end"] = os.getloadavg()
        results_path.write_text(json.dumps(results, indent=1))

    shutil.rmtree(work, ignore_errors=True)
    log(f"results: {results_path}")


if __name__ == "__main__":
    sys.exit(main())
