"""The broker a test runs against: Gregor by default, or Apache Kafka itself (from the jars in
.deps/java/jars) with PROTO_TESTS_TARGET=kafka, to check that a test asserts Kafka's behaviour:

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

Security settings (issue 12) go in kafka_config by Kafka's names, as Gregor takes them:
`listeners` (keep PLAINTEXT on .port), `ssl.*`, `sasl.*`, `listener.name.<l>.*`, the authorizer.
KafkaReferenceBroker adds what only Kafka needs around them (its CONTROLLER listener and the
SCRAM login modules; see _security_properties). A KafkaReferenceBroker can also be one node
of a cluster (node_id, voters, ports); proto-tests/security.py builds both on top of this.
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
    """Kafka settings as Gregor's GREGOR_KAFKA_<NAME> environment variables (dots become `_`,
    a literal `_` in a name `__`)."""
    return {"GREGOR_KAFKA_" + k.upper().replace("_", "__").replace(".", "_"): str(v)
            for k, v in (kafka_config or {}).items()}


def partition_dir(broker, topic, partition):
    if isinstance(broker, KafkaReferenceBroker):
        return broker.data_dir / f"{topic}-{partition}"
    return Path(broker.data_dir) / "logs" / f"{topic}-{partition}"


class KafkaReferenceBroker:
    """Apache Kafka (the kafka_2.13 jar), one node in KRaft combined mode, node id 1."""

    def __init__(self, workdir, kafka_config=None, node_id=1, ports=None, voters=None,
                 log_level=None):
        """ports: (port, controller_port), default two free ones; voters: the
        controller.quorum.voters of a cluster, default this node alone; log_level: the
        broker's slf4j level (default warn, as every JVM here)."""
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "kafka-logs"
        self.log_path = self.workdir / "kafka.log"
        self.port, self.controller_port = ports or free_ports(2)
        self.node_id = node_id
        self.voters = voters
        self.log_level = log_level
        self.kafka_config = dict(kafka_config or {})
        self.proc = None
        self.formatted = False
        self.cluster_id = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def _properties(self):
        props = {
            "process.roles": "broker,controller", "node.id": self.node_id,
            "controller.quorum.voters":
                self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1, "group.initial.rebalance.delay.ms": 0,
        }
        if "listeners" in self.kafka_config:
            props.update(_security_properties(self.kafka_config, self.controller_port))
        else:
            props.update(self.kafka_config)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _cmd(self, main, *args):
        return [_java(), *JVM_OPTS, "-cp", f"{JAVA_LIB}/*", main, *args]

    def start(self, timeout=60):
        require_java()
        props = self._properties()
        self.launch(props)
        if "listeners" in self.kafka_config and \
                f"PLAINTEXT://{self.bootstrap}" not in self.kafka_config["listeners"]:
            return self  # no PLAINTEXT listener to ask: the caller waits in its own way
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

    def launch(self, props=None):
        """Formats the log dir (once) and starts the JVM, without waiting for readiness."""
        require_java()
        props = props or self._properties()
        if not self.formatted:
            self.cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
            res = subprocess.run(self._cmd(TOOLS["kafka-storage"], "format", "-t",
                                           self.cluster_id, "-c", str(props)),
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, f"kafka-storage format: {res.stdout}{res.stderr}"
            self.formatted = True
        with open(self.log_path, "ab") as log:
            # a server: the full JIT and more heap (later flags win over JVM_OPTS)
            cmd = [_java(), *JVM_OPTS, "-Xmx1g", "-XX:TieredStopAtLevel=4"]
            if self.log_level:
                cmd.append(f"-Dorg.slf4j.simpleLogger.defaultLogLevel={self.log_level}")
            cmd += ["-cp", f"{JAVA_LIB}/*", TOOLS["kafka-server-start"], str(props)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        return self

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


KAFKA_PROTOCOL_MAP = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def _security_properties(cfg, controller_port):
    """Kafka's server.properties for a kafka_config that sets `listeners`: the settings as
    given, plus what Kafka needs and Gregor's interface leaves out:
    - the CONTROLLER listener on controller_port. Its protocol is the map's CONTROLLER entry
      when there is one (a cluster with TLS or SASL on the Raft plane). Otherwise PLAINTEXT, or
      SASL_PLAINTEXT with the PLAIN identity of a SASL listener when an authorizer is on: Kafka
      authorizes the broker's own registration with its controller (CLUSTER_ACTION), so that
      identity must be a super user (Gregor's single node has no such network hop).
      A SASL controller uses PLAIN with listener.name.controller.plain.sasl.jaas.config, else
      the inter-broker listener's JAAS config (as Gregor falls back).
    - a ScramLoginModule JAAS entry for each SCRAM mechanism of each SASL listener (Kafka wants
      one per listener and mechanism; Gregor needs none);
    - a global sasl.jaas.config turned into the per-listener PLAIN entries Kafka reads (Kafka's
      broker ignores an unprefixed one; Gregor accepts it);
    - sasl.mechanism.inter.broker.protocol and sasl.mechanism.controller.protocol default to
      PLAIN (Kafka's default is GSSAPI; Gregor's is PLAIN).
    """
    props = dict(cfg)
    listeners = {n.split("://")[0].upper(): n for n in cfg["listeners"].split(",")}
    pmap = dict(e.split(":") for e in cfg.get("listener.security.protocol.map",
                                              KAFKA_PROTOCOL_MAP).split(","))
    sasl = [n for n in listeners if pmap[n].startswith("SASL_")]
    glob = props.pop("sasl.jaas.config", None)

    def mechanisms(listener):
        return cfg.get(f"listener.name.{listener.lower()}.sasl.enabled.mechanisms",
                       cfg.get("sasl.enabled.mechanisms", "GSSAPI")).split(",")

    for n in sasl:
        for m in mechanisms(n):
            key = f"listener.name.{n.lower()}.{m.lower()}.sasl.jaas.config"
            if m.startswith("SCRAM-"):
                props.setdefault(key, SCRAM_LOGIN)
            elif m == "PLAIN" and glob:
                props.setdefault(key, glob)
    inter = cfg.get("inter.broker.listener.name") or (
        "PLAINTEXT" if "PLAINTEXT" in listeners else next(iter(listeners)))
    props["inter.broker.listener.name"] = inter
    props.setdefault("sasl.mechanism.inter.broker.protocol", "PLAIN")
    plain_identity = (cfg.get(f"listener.name.{inter.lower()}.plain.sasl.jaas.config")
                      or next((props[k] for n in sasl
                               if (k := f"listener.name.{n.lower()}.plain.sasl.jaas.config")
                               in props), None))
    ctl = pmap.get("CONTROLLER")
    if ctl is None:
        ctl = "SASL_PLAINTEXT" if cfg.get("authorizer.class.name") and plain_identity \
            else "PLAINTEXT"
    pmap["CONTROLLER"] = ctl
    if ctl.startswith("SASL_"):
        props.setdefault("sasl.mechanism.controller.protocol", "PLAIN")
        props.setdefault("listener.name.controller.sasl.enabled.mechanisms", "PLAIN")
        props.setdefault("listener.name.controller.plain.sasl.jaas.config", plain_identity)
    props["listeners"] = f"{cfg['listeners']},CONTROLLER://127.0.0.1:{controller_port}"
    props["advertised.listeners"] = cfg.get("advertised.listeners", cfg["listeners"])
    props["listener.security.protocol.map"] = ",".join(f"{k}:{v}" for k, v in pmap.items())
    return props


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
