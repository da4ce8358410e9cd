"""The broker a test runs against: Gregor by default, or Apache Kafka itself (from the jars in
.deps/java/lib) with PROTO_TESTS_TARGET=kafka, to check that a test asserts Kafka's behaviour:

    PROTO_TESTS_TARGET=kafka .deps/venv/bin/python -m pytest proto-tests/test_java_client.py

Fixtures (import them into a test module to use them):
    make_target(kafka_config=None)  function-scoped factory; kafka_config holds Kafka broker
                                    settings by Kafka's names. Gregor gets them as GREGOR_KAFKA_*
                                    environment variables, Kafka in its server.properties.
    module_target                   one started broker with default settings for a whole module.
    new_target(workdir, kafka_config)   (a function) an unstarted broker, for module fixtures
                                    with settings of their own.
    shared_target                   module_target, with its log tail attached to a failing
                                    test's report (as conftest does for make_broker).
Both give an object with .bootstrap, .port, .data_dir, .start(), .stop(), .log_tail(); use
partition_dir(broker, topic, partition) for the directory holding a partition's segments.
"""
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import wire
from conftest import Broker, free_ports
from javatools import JAVA_LIB, JVM_OPTS, TOOLS, _java, require_java

TARGET = os.environ.get("PROTO_TESTS_TARGET", "gregor")
assert TARGET in ("gregor", "kafka"), f"PROTO_TESTS_TARGET={TARGET}: use gregor or kafka"


def gregor_env(kafka_config):
    """Kafka settings as Gregor's GREGOR_KAFKA_<NAME> environment variables."""
    return {"GREGOR_KAFKA_" + k.upper().replace(".", "_"): str(v)
            for k, v in (kafka_config or {}).items()}


def partition_dir(broker, topic, partition):
    if isinstance(broker, KafkaReferenceBroker):
        return broker.data_dir / f"{topic}-{partition}"
    return Path(broker.data_dir) / "logs" / f"{topic}-{partition}"


class KafkaReferenceBroker:
    """Apache Kafka (the kafka_2.13 jar), one node in KRaft combined mode, node id 1."""

    def __init__(self, workdir, kafka_config=None):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "kafka-logs"
        self.log_path = self.workdir / "kafka.log"
        self.port, self.controller_port = free_ports(2)
        self.kafka_config = dict(kafka_config or {})
        self.proc = None
        self.formatted = False

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _properties(self):
        props = {
            "process.roles": "broker,controller", "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1, "group.initial.rebalance.delay.ms": 0,
        }
        props.update(self.kafka_config)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _cmd(self, main, *args):
        return [_java(), *JVM_OPTS, "-cp", f"{JAVA_LIB}/*", main, *args]

    def start(self, timeout=60):
        require_java()
        props = self._properties()
        if not self.formatted:
            subprocess.run(self._cmd(TOOLS["kafka-storage"], "format", "-t",
                                     uuid.uuid4().hex[:22], "-c", str(props)),
                           check=True, capture_output=True, timeout=60)
            self.formatted = True
        with open(self.log_path, "ab") as log:
            # a server: the full JIT and more heap (later flags win over JVM_OPTS)
            cmd = [_java(), *JVM_OPTS, "-Xmx1g", "-XX:TieredStopAtLevel=4",
                   "-cp", f"{JAVA_LIB}/*", TOOLS["kafka-server-start"], str(props)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "kafka exited before ready\n" + self.log_tail()
            try:
                with wire.connect(self) as s:
                    md = wire.read_metadata(wire.request(s, wire.metadata_v1(1), 1), 1)
                if md["brokers"]:
                    return self
            except (OSError, AssertionError):
                pass
            time.sleep(0.2)
        raise AssertionError("kafka not ready\n" + self.log_tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return 0  # the JVM exits 143 on SIGTERM after a clean shutdown

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def new_target(workdir, kafka_config=None):
    """An unstarted broker of the selected target, in `workdir` (which must exist), for
    module-scoped fixtures that need settings of their own."""
    if TARGET == "gregor":
        return Broker(workdir, env=gregor_env(kafka_config))
    return KafkaReferenceBroker(workdir, kafka_config)


@pytest.fixture
def make_target(request, tmp_path):
    """make_target(kafka_config={...}, start=True) -> a broker, stopped at teardown."""
    if TARGET == "gregor":
        make_broker = request.getfixturevalue("make_broker")

        def make(kafka_config=None, start=True):
            return make_broker(env=gregor_env(kafka_config), start=start)
        yield make
        return

    brokers = []

    def make(kafka_config=None, start=True):
        b = KafkaReferenceBroker(tmp_path / f"kafka{len(brokers)}", kafka_config)
        b.workdir.mkdir(parents=True)
        brokers.append(b)
        return b.start() if start else b
    yield make
    for b in brokers:
        b.stop()


@pytest.fixture(scope="module")
def module_target(tmp_path_factory):
    """One broker with default settings, shared by the tests of a module."""
    workdir = tmp_path_factory.mktemp("broker")
    b = Broker(workdir) if TARGET == "gregor" else KafkaReferenceBroker(workdir)
    b.start()
    yield b
    was_alive = b.alive()
    code = b.stop()
    assert was_alive, "the broker died during the module's tests\n" + b.log_tail()
    assert code == 0, f"broker exited with {code} on SIGTERM\n" + b.log_tail()


@pytest.fixture
def shared_target(request, module_target):
    if isinstance(module_target, Broker):
        request.node._gregor_brokers = [module_target]
    return module_target
