"""Fixtures for proto-tests: a `Broker` that runs the real gregor binary.

Each broker gets its own temp data dir and free loopback ports, is started from GREGOR_BIN
(default <repo>/target/release/gregor), is ready when /health/ready answers 200, and logs to
`<tmp>/gregor.log` (its tail is attached to the report of a failing test). Teardown stops it by
pid: SIGTERM, then SIGKILL after a timeout. `restart()` reuses the data dir and ports;
`kill9()` simulates a crash.
"""
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GREGOR_BIN = Path(os.environ.get("GREGOR_BIN", REPO / "target" / "release" / "gregor"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


# Ports for brokers come from below the kernel's ephemeral range (32768+), so a client's outgoing
# connection can never take a port a broker is about to bind. Each pytest-xdist worker owns its own
# slice of 2,500 ports (gw0 from 20000, gw1 from 22500, ...; a run without xdist uses 10000..12499),
# and walks it from a random point, skipping ports that do not bind.
_PORT_SLICE = 2500
_port_cursor = None


def _port_slice():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return 20000 + (int(worker[2:]) % 4) * _PORT_SLICE
    return 10000


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1, from this worker's own slice."""
    global _port_cursor
    base = _port_slice()
    if _port_cursor is None:
        _port_cursor = random.randrange(_PORT_SLICE)
    ports = []
    for _ in range(_PORT_SLICE):
        if len(ports) == n:
            break
        port = base + _port_cursor
        _port_cursor = (_port_cursor + 1) % _PORT_SLICE
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    assert len(ports) == n, f"only {len(ports)} free ports in {base}..{base + _PORT_SLICE}"
    return ports


class Broker:
    """One gregor process (node 1) on its own data dir and ports."""

    def __init__(self, workdir, kafka_config=None, env=None):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "gregor.log"
        self.port, self.controller_port, self.admin_port = free_ports(3)
        self.kafka_config = dict(kafka_config or {})
        self.extra_env = dict(env or {})
        self.proc = None
        self.starts = 0
        self.stopped_on_purpose = False

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid

    def _command(self):
        cmd = [str(GREGOR_BIN), "serve", "--node-id", "1",
               "--data-dir", str(self.data_dir),
               "--listen", self.bootstrap,
               "--controller-listen", f"127.0.0.1:{self.controller_port}",
               "--admin-listen", f"127.0.0.1:{self.admin_port}"]
        return cmd + self._config_args()

    def _config_args(self):
        """kafka_config as <workdir>/gregor.toml's [kafka] table: ["--config", path], or []."""
        if not self.kafka_config:
            return []
        path = self.workdir / "gregor.toml"
        lines = ["[kafka]"] + [f'"{k}" = {_toml_value(v)}' for k, v in self.kafka_config.items()]
        path.write_text("\n".join(lines) + "\n")
        return ["--config", str(path)]

    def start(self, timeout=READY_TIMEOUT):
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self):
        """Starts the process without waiting for readiness (a cluster node is ready only once
        a quorum of its peers runs)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not GREGOR_BIN.exists():
            pytest.fail(f"{GREGOR_BIN} not found: run `cargo build --release` or set GREGOR_BIN")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREGOR_")}
        env.update(self.extra_env)
        self.starts += 1
        self.stopped_on_purpose = False
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env)
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.admin_port}/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gregor exited with {self.proc.returncode} before ready\n"
                                     + self.log_tail())
            try:
                with _HTTP.open(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"gregor not ready after {timeout}s\n" + self.log_tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_on_purpose = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"gregor ignored SIGTERM for {timeout}s\n" + self.log_tail())
        return self.proc.returncode

    def kill9(self):
        self.stopped_on_purpose = True
        self.proc.kill()
        self.proc.wait()

    def restart(self, kill=False):
        """Stop (SIGTERM, or SIGKILL when kill=True) and start again on the same dir and ports."""
        if kill:
            self.kill9()
        else:
            code = self.stop()
            assert code == 0, f"SIGTERM shutdown exited with {code}\n" + self.log_tail()
        return self.start()

    def log_tail(self, lines=40):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, b in enumerate(getattr(item, "_gregor_brokers", [])):
            rep.sections.append((f"gregor log tail (broker {i}, {b.log_path})", b.log_tail()))


@pytest.fixture
def make_broker(request, tmp_path):
    """make_broker(kafka_config={...}, env={...}) -> a started Broker, stopped at teardown."""
    brokers = []
    request.node._gregor_brokers = brokers

    def make(kafka_config=None, env=None, start=True):
        b = Broker(tmp_path / f"broker{len(brokers)}", kafka_config, env)
        b.workdir.mkdir(parents=True)
        brokers.append(b)
        return b.start() if start else b

    yield make
    errors = []
    for b in brokers:
        if b.proc is None:
            continue
        was_alive, on_purpose = b.alive(), b.stopped_on_purpose
        code = b.stop()
        if not was_alive and not on_purpose:
            errors.append(f"gregor died during the test (exit {code})\n{b.log_tail()}")
        elif was_alive and code != 0:
            errors.append(f"gregor exited with {code} on SIGTERM\n{b.log_tail()}")
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def broker(make_broker):
    """A fresh single-node broker with default settings."""
    return make_broker()


@pytest.fixture
def topic_name(request):
    """A unique, legal topic name for this test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def measurement(request):
    """measurement(line): a line for the `measurements` section of the session summary (shown
    even with -q), e.g. failover unavailability windows."""
    lines = request.config.__dict__.setdefault("_gregor_measurements", [])
    return lines.append


def pytest_terminal_summary(terminalreporter, config):
    lines = getattr(config, "_gregor_measurements", [])
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)


# The modules that take longest run first, so that with pytest-xdist (`-n 3 --dist loadfile`,
# scripts/test.sh) no worker starts one of them near the end while the others sit idle. The
# order within a module, and among the rest, is pytest's own.
_LONGEST_MODULES = (
    "test_quotas.py", "test_cluster_failover.py", "test_network_partition.py",
    "test_kafka_cli.py", "test_transactions_failures.py", "test_statefulset_args.py",
    "test_consumer_protocol.py", "test_more_clients.py", "test_reassignment.py",
    "test_cluster_script_security.py", "test_transactions_streams.py",
    "test_group_migration.py", "test_share_cluster.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
