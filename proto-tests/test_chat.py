"""The chat example (examples/chat, on the rdkafka crate) against one broker.

Two replicas, A and B, each in a consumer group of its own (chat-replica-<id>). A user on A and
a user on B: what one writes, the other reads, in order, as `<nick>: <text>`. A third replica
started later does not replay history (auto.offset.reset=latest). SIGTERM stops a replica
cleanly (exit 0, connected users told).

The example is built (a no-op when fresh) with
    cargo build --release --locked --manifest-path examples/chat/Cargo.toml --target-dir target/rdkafka
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from clients import TIMEOUT, admin
from conftest import REPO, free_ports
from targets import make_target  # noqa: F401  (fixture)

CHAT_BIN = REPO / "target" / "rdkafka" / "release" / "gregor-chat"
READY_TIMEOUT = 30.0
LINE_TIMEOUT = 15.0
BROKER = {"group.initial.rebalance.delay.ms": 0}


@pytest.fixture(scope="session")
def chat_bin():
    """Builds examples/chat when cargo is there (a no-op when up to date)."""
    cargo = shutil.which("cargo")
    if cargo:
        res = subprocess.run(
            [cargo, "build", "--release", "--locked", "--quiet",
             "--manifest-path", str(REPO / "examples" / "chat" / "Cargo.toml"),
             "--target-dir", str(REPO / "target" / "rdkafka")],
            capture_output=True, text=True, timeout=1800)
        assert res.returncode == 0, f"building examples/chat failed:\n{res.stderr[-4000:]}"
    if not CHAT_BIN.exists():
        pytest.fail(f"{CHAT_BIN} not found and cargo is not on PATH")
    return CHAT_BIN


class Replica:
    def __init__(self, binary, workdir, broker, replica_id, topic):
        self.id = replica_id
        self.port = free_ports(1)[0]
        self.log_path = workdir / f"chat-{replica_id}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "--bootstrap", broker.bootstrap, "--listen",
                 f"127.0.0.1:{self.port}", "--replica-id", replica_id, "--topic", topic],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_BACKTRACE": "1"})

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while "chat: ready" not in self.log():
            assert self.proc.poll() is None, f"replica {self.id} exited\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"replica {self.id} not ready\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def stop(self, timeout=15):
        """SIGTERM; returns the exit code (SIGKILL and an error after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"replica {self.id} ignored SIGTERM\n{self.log()[-3000:]}")
        return self.proc.returncode


class User:
    """A user on a replica's line-based TCP interface."""

    def __init__(self, replica, nick):
        self.replica = replica
        self.sock = socket.create_connection(("127.0.0.1", replica.port), timeout=LINE_TIMEOUT)
        self.buf = b""
        greeting = self.line()
        assert greeting.startswith("* welcome"), greeting
        self.send(f"/nick {nick}")
        assert self.line() == f"* you are {nick}"

    def send(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def line(self, timeout=LINE_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from replica {self.replica.id} within {timeout}s " \
                             f"(partial {self.buf!r})\n{self.replica.log()[-2000:]}"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError(f"replica {self.replica.id} closed the connection "
                                     f"(partial {self.buf!r})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def chat_lines(self, n):
        """The next n chat lines (skipping none: every line must be a chat line)."""
        return [self.line() for _ in range(n)]

    def close(self):
        self.sock.close()


@pytest.fixture
def replicas(chat_bin, tmp_path):
    started = []

    def start(broker, replica_id, topic):
        r = Replica(chat_bin, tmp_path, broker, replica_id, topic)
        started.append(r)
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_chat_two_replicas(make_target, replicas, topic_name):
    broker = make_target(BROKER)
    # both start at once: both try to create the topic, one of them finds it exists
    a = replicas(broker, "a", topic_name)
    b = replicas(broker, "b", topic_name)
    a.wait_ready()
    b.wait_ready()

    alice, bob = User(a, "alice"), User(b, "bob")
    sent = [f"hello from A #{i}" for i in range(10)]
    for m in sent:
        alice.send(m)
    want = [f"alice: {m}" for m in sent]
    assert bob.chat_lines(len(sent)) == want, "bob (replica B) did not get alice's messages in order"
    assert alice.chat_lines(len(sent)) == want, "alice did not see her own messages come back"

    sent = [f"reply from B: {i}" for i in range(10)]
    for m in sent:
        bob.send(m)
    want = [f"bob: {m}" for m in sent]
    assert alice.chat_lines(len(sent)) == want, "alice (replica A) did not get bob's messages in order"
    assert bob.chat_lines(len(sent)) == want

    # each replica reads the whole topic in a group of its own
    groups = {f"chat-replica-{r}" for r in "ab"}
    adm = admin(broker)  # kept alive until the futures resolve
    desc = adm.describe_consumer_groups(list(groups), request_timeout=TIMEOUT)
    for g, fut in desc.items():
        d = fut.result(TIMEOUT)
        assert len(d.members) == 1, f"{g}: {d.members}"
        parts = sorted(tp.partition for tp in d.members[0].assignment.topic_partitions
                       if tp.topic == topic_name)
        assert parts == [0, 1, 2], f"{g} reads partitions {parts}"

    # a new replica starts at the end of the topic: carol sees only what comes after
    c = replicas(broker, "c", topic_name)
    c.wait_ready()
    carol = User(c, "carol")
    alice.send("after C joined")
    assert carol.line() == "alice: after C joined", "replica C replayed history"
    assert bob.line() == "alice: after C joined"
    assert alice.line() == "alice: after C joined"

    # SIGTERM: users are told, the replica exits 0
    for r, u in ((a, alice), (b, bob), (c, carol)):
        assert r.stop() == 0, f"replica {r.id} exit code\n{r.log()[-2000:]}"
        assert u.line() == "* replica shutting down"
        u.close()
