"""scripts/cluster.sh with CLUSTER_SECURITY=sasl_ssl, as the README's "Security" section uses it:
three brokers with SASL_SSL on the client, inter-broker and controller planes, the
StandardAuthorizer and super.users=User:admin, on a random free port base and a temp
CLUSTER_DIR (never 9092, never ./cluster-data).

- `start 3` makes the dev CA and broker certificate once (CLUSTER_DIR/tls), writes the client
  files for admin (kcat-admin.conf for kcat -F and librdkafka, client-admin.properties for the
  Kafka CLI tools) and prints the command lines that use them;
- kcat as admin (-F kcat-admin.conf) lists the three brokers, produces and consumes; the Kafka
  CLI (kafka-topics, with --command-config client-admin.properties) sees the topic;
- alice (a PLAIN user of the JAAS config) is refused a topic until an ACL allows it;
- a client without TLS and SASL (kcat's defaults, and a raw ApiVersions request) and a wrong
  password get nothing;
- `kill` (kill -9) of one broker and `start-node` again: `status` shows it down, then it rejoins
  every ISR of a replication-factor-3 topic and no acknowledged record is lost;
- `stop` ends every broker; the fixture kills leftovers by pid.
"""
import re
import socket
import subprocess
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import javatools
import wire
from clients import LOG
from cluster import wait_until
from security import closed_without_answer
from test_cluster_failover import CLUSTER_SH, ClusterScript, NodeLog, pick_port_base

PARTITIONS = 3


class SecureClusterScript(ClusterScript):
    def __init__(self, cluster_dir, port_base):
        super().__init__(cluster_dir, port_base)
        self.env["CLUSTER_SECURITY"] = "sasl_ssl"

    @property
    def kcat_conf(self):
        return self.dir / "kcat-admin.conf"

    def librdkafka_conf(self):
        """kcat-admin.conf as librdkafka settings (the file kcat -F reads)."""
        conf = {}
        for line in self.kcat_conf.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                k, _, v = line.partition("=")
                conf[k.strip()] = v.strip()
        return {"bootstrap.servers": self.bootstrap, **conf}

    def kcat(self, *args, input=None, check=True, conf=True, timeout=60):
        cmd = ["kcat"] + (["-F", str(self.kcat_conf)] if conf else []) + \
            ["-b", self.bootstrap, *args]
        res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
        if check:
            assert res.returncode == 0, f"{cmd} exited {res.returncode}\n" \
                                        f"{res.stderr.decode(errors='replace')[-2000:]}"
        return res

    def kcat_metadata(self, topic=None):
        out = self.kcat("-L", "-m", "10", *(["-t", topic] if topic else [])).stdout.decode()
        brokers = [int(b) for b in re.findall(r"^\s+broker (\d+) at ", out, re.M)]
        parts = {int(p): (int(l), [int(i) for i in isr.split(",") if i])
                 for p, l, isr in re.findall(
                     r"partition (\d+), leader (-?\d+), replicas: [\d,]*, isrs: ([\d,]*)", out)}
        return brokers, parts, out


@pytest.fixture
def secure_script(request, tmp_path):
    cs = SecureClusterScript(tmp_path / "cluster-data", pick_port_base())
    request.node._gregor_brokers = [NodeLog(cs.dir / f"node-{i}" / "gregor.log")
                                    for i in (1, 2, 3)]
    yield cs
    try:
        subprocess.run([str(CLUSTER_SH), "stop"], env=cs.env, capture_output=True, timeout=120)
    finally:
        cs.kill_leftovers()


def test_sasl_ssl_cluster_script(secure_script):
    cs = secure_script
    out = cs.run("start", "3")
    assert "cluster of 3 ready" in out, out
    # the printed command lines name the files that `start` wrote
    assert f"kcat -F {cs.kcat_conf} -b {cs.bootstrap} -L" in out, out
    props = cs.dir / "client-admin.properties"
    assert f"--command-config {props}" in out, out
    assert (cs.dir / "tls" / "ca.pem").exists() and (cs.dir / "tls" / "broker-keystore.pem").exists()
    text = props.read_text()
    for line in ("security.protocol=SASL_SSL", "sasl.mechanism=PLAIN",
                 "ssl.truststore.type=PEM", f"ssl.truststore.location={cs.dir / 'tls' / 'ca.pem'}"):
        assert line in text.splitlines(), text
    assert 'username="admin" password="admin-secret";' in text
    # every node's plane: SASL_SSL for clients and the controller, the authorizer
    toml = (cs.dir / "node-2" / "gregor.toml").read_text()
    assert f'"listeners" = "SASL_SSL://127.0.0.1:{cs.base + 100}"' in toml
    assert "CONTROLLER:SASL_SSL" in toml and "User:admin" in toml and "StandardAuthorizer" in toml

    brokers, _, md = cs.kcat_metadata()
    assert sorted(brokers) == [1, 2, 3], md
    assert "sasl_ssl://" in md

    # admin: a replication-factor-3 topic, produce and consume with kcat
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({**cs.librdkafka_conf(), "logger": LOG})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=10)[topic].result(30)

    def full_isr():
        _, parts, _ = cs.kcat_metadata(topic)
        return len(parts) == PARTITIONS and all(sorted(i) == [1, 2, 3] for _, i in parts.values())
    wait_until(full_isr, 30, "topic fully replicated")
    before = [f"before-{i}" for i in range(200)]
    cs.kcat("-P", "-t", topic, "-p", "0", "-X", "acks=all", input="\n".join(before).encode() + b"\n")

    def consume_all(n):
        res = cs.kcat("-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", str(n), "-e")
        return res.stdout.decode().splitlines()
    assert consume_all(len(before)) == before

    # the Kafka CLI with the printed --command-config file
    res = javatools.kafka_tool("org.apache.kafka.tools.TopicCommand", None,
                               "--bootstrap-server", cs.bootstrap, "--command-config", props,
                               "--list")
    assert topic in res.stdout.split(), res.stdout + res.stderr

    # alice (PLAIN) is authenticated but not authorized until an ACL says so
    alice = ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={cs.dir / 'tls' / 'ca.pem'}",
             "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=alice",
             "-X", "sasl.password=alice-secret"]
    res = cs.kcat(*alice, "-P", "-t", topic, "-p", "1", input=b"from-alice\n", check=False,
                  conf=False, timeout=60)
    assert res.returncode != 0 and b"authoriz" in res.stderr.lower(), res.stderr[-1000:]
    res = javatools.kafka_tool("org.apache.kafka.tools.AclCommand", None,
                               "--bootstrap-server", cs.bootstrap, "--command-config", props,
                               "--add", "--allow-principal", "User:alice", "--operation", "All",
                               "--topic", topic)

    def alice_writes():
        r = cs.kcat(*alice, "-P", "-t", topic, "-p", "1", input=b"from-alice\n", check=False,
                    conf=False)
        return r.returncode == 0
    wait_until(alice_writes, 30, "alice may write once the ACL exists", interval=1)

    # no TLS and no SASL: refused; a wrong password: refused
    res = cs.kcat("-L", "-m", "5", check=False, conf=False, timeout=30)
    assert res.returncode != 0 or b"broker 1 at" not in res.stdout, res.stdout
    with socket.create_connection(("127.0.0.1", cs.base), timeout=5) as s:
        s.sendall(wire.frame(wire.api_versions_v0(1)))
        got = closed_without_answer(s, timeout=5)
        assert got == b"" or got[0] == 0x15, got[:32]  # EOF, or a TLS alert record
    wrong = [a.replace("alice-secret", "wrong-password") for a in alice]
    res = cs.kcat(*wrong, "-L", "-m", "5", check=False, conf=False, timeout=30)
    assert res.returncode != 0 and b"authentication" in res.stderr.lower(), res.stderr[-1000:]

    # kill -9 one broker, produce while it is down, start it again: it rejoins every ISR
    assert "killed node 2" in cs.run("kill", "2")
    assert "node 2: down" in cs.run("status")
    during = [f"during-{i}" for i in range(100)]
    cs.kcat("-P", "-t", topic, "-p", "0", "-X", "acks=all", "-X", "message.timeout.ms=60000",
            input="\n".join(during).encode() + b"\n", timeout=90)
    cs.run("start-node", "2")
    wait_until(full_isr, 60, "node 2 rejoins every ISR", interval=0.5)
    status = cs.run("status")
    assert len(re.findall(r"^node \d: pid \d+, ready", status, re.M)) == 3, status
    assert consume_all(len(before) + len(during)) == before + during

    assert "stopped" in cs.run("stop")
    for pid in cs.pids:
        try:
            state = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        assert "zombie" in state.lower(), f"broker pid {pid} still running"
    # no password in any broker's log
    for i in (1, 2, 3):
        log = (cs.dir / f"node-{i}" / "gregor.log").read_text(errors="replace")
        assert "admin-secret" not in log and "alice-secret" not in log, f"node {i}"
