"""The chart's startup contract, outside Kubernetes: three `gregor` processes started with
exactly the command, args and environment that the rendered StatefulSet gives pods 0, 1 and 2
(chart.pod_process: the image's ENV, fieldRefs, $(VAR) expansion, HOSTNAME) form a cluster.

What a pod has that this machine does not is emulated, and every such substitution is listed
in the test's output (and asserted to be the only changes):
- DNS: pod N's name <fullname>-N.<headless>.<namespace>.svc.cluster.local resolves to the
  loopback address 127.0.0.(N+1), and so does 0.0.0.0 in pod N's own listen addresses (each
  pod has its own IP, so all three listen on the same ports, as in the cluster);
- volumes: the data volume /var/lib/gregor and the ConfigMap mount /etc/gregor are temporary
  directories (the ConfigMap's items are written there);
- the image: `gregor` on PATH is GREGOR_BIN, and PATH is Debian's default.
Ports are the rendered ones; the chart is rendered with free ephemeral ports in `ports`.
The pods are probed the way the kubelet would probe them (the rendered readinessProbe), then
Metadata, the quorum status, a provisioned topic and a new replication-factor-3 topic with
produce and consume are checked.

test_secured_pods_form_a_cluster does the same for a release with `security` on (SASL_SSL,
the StandardAuthorizer): the Secrets the values name are given as files (a certificate for the
pods' loopback addresses, signed by the session's test CA, and the users' passwords), Secret
volumes become directories, secretKeyRefs their values, init containers run first, and
gregor.toml's mount paths are mapped like the environment's.
"""
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import chart
import wire
from clients import LOG
from cluster import wait_until
from conftest import GREGOR_BIN, free_ports
from security import certs, closed_without_answer, tls_context  # noqa: F401 (a fixture)

NAMESPACE = "gregor-test"
RELEASE = "gregor"
REPLICAS = 3
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_TIMEOUT = 30.0
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pod_ip(i):
    return f"127.0.0.{i + 1}"


def free_on_every_pod_ip(n_ports, pods=REPLICAS + 1):
    """Ports free on 127.0.0.1..127.0.0.<pods> alike (each "pod" listens on its own IP; the
    scale-up test adds a fourth)."""
    for _ in range(50):
        ports = free_ports(n_ports)
        socks = []
        try:
            for i in range(pods):
                for p in ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(s)
                    s.bind((pod_ip(i), p))
            return ports
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no ports free on every loopback pod address")


class Pod:
    """One emulated pod: its gregor process, started from the rendered spec."""

    def __init__(self, ordinal, argv, env, workdir):
        self.ordinal = ordinal
        self.argv, self.env = argv, env
        self.workdir = workdir
        self.log_path = workdir / "gregor.log"
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after SIGTERM timeout"

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def substitute(text, table):
    for old, new in table:
        text = text.replace(old, new)
    return text


class Emulation:
    """Pods of one rendered release on this machine (see the module docstring)."""

    def __init__(self, tmp_path, ports):
        self.tmp_path = tmp_path
        self.ports = ports  # (kafka, controller, admin)
        self.pods = []
        self.substitutions = []
        self.bindir = tmp_path / "image-bin"
        self.bindir.mkdir()
        (self.bindir / "gregor").symlink_to(GREGOR_BIN)
        self.substitutions.append(f"all pods: `gregor` on PATH -> {GREGOR_BIN}, PATH is "
                                  "Debian's default")

    def render(self, **values):
        kafka, controller, admin = self.ports[:3]
        ports = {"kafka": kafka, "controller": controller, "admin": admin}
        if len(self.ports) > 3:
            ports["internal"] = self.ports[3]
        values = {"ports": ports, "logFormat": "text", **values}
        return chart.render(values, release=RELEASE, namespace=NAMESPACE)

    def dns(self, manifests, count):
        """The pod DNS names and the client Service's name, mapped to loopback addresses."""
        sts = manifests.one("StatefulSet")
        name, headless = sts["metadata"]["name"], sts["spec"]["serviceName"]
        table = [(f"{name}-{j}.{headless}.{NAMESPACE}.svc.cluster.local", pod_ip(j))
                 for j in range(count)]
        # the client Service (used by the join Job) reaches a ready broker: pod 0's address
        table.append((f"{name}.{NAMESPACE}.svc.cluster.local", pod_ip(0)))
        return table

    def emulate(self, what, argv, env, table, listens=True):
        table = sorted(table, key=lambda t: -len(t[0]))  # /etc/gregor-tls before /etc/gregor
        new_env = {k: substitute(v, table) for k, v in env.items()}
        new_env["PATH"] = f"{self.bindir}:{DEBIAN_PATH}"
        new_argv = [substitute(a, table) for a in argv]
        for k in sorted(set(env) | set(new_env)):
            if k != "PATH" and env.get(k) != new_env.get(k):
                self.substitutions.append(f"{what}: env {k}: {env.get(k)!r} -> {new_env[k]!r}")
        for a, b in zip(argv, new_argv):
            if a != b:
                self.substitutions.append(f"{what}: arg {a!r} -> {b!r}")
        leftover = [v for v in list(new_env.values()) + new_argv
                    if ".svc.cluster.local" in v or (listens and "0.0.0.0" in v)]
        assert not leftover, f"{what}: unmapped addresses: {leftover}"
        return new_argv, new_env

    def volumes(self, manifests, i, workdir, table, secrets):
        """The broker container's volumes as directories of `workdir`: ConfigMap and Secret
        volumes written out (ConfigMap files with the substitutions of `table`, which gets
        every mount), emptyDirs created; /tmp stays /tmp."""
        dirs = {"/var/lib/gregor": workdir / "data", "/etc/gregor": workdir / "etc-gregor"}
        mounts = [m for m in chart.pod_volumes(manifests, secrets) if m[0] != "/tmp"]
        for path, name, _, _ in mounts:
            d = dirs.setdefault(path, workdir / f"vol-{name}")
            table.append((path, str(d)))
        for c in chart.init_containers(manifests):
            for path, name, _, _ in chart.pod_volumes(manifests, secrets, c=c):
                if path not in dirs:
                    dirs[path] = workdir / f"vol-{name}"
                    table.append((path, str(dirs[path])))
        ordered = sorted(table, key=lambda t: -len(t[0]))
        for path, name, kind, files in mounts:
            d = dirs[path]
            d.mkdir(parents=True, exist_ok=True)
            for f, content in (files or {}).items():
                if kind == "configMap":
                    new = substitute(content, ordered)
                    if new != content:
                        self.substitutions.append(f"pod {i}: file {path}/{f}: mount paths and "
                                                  "addresses mapped as in the environment")
                    leftover = [l for l in new.splitlines()
                                if ".svc.cluster.local" in l or "0.0.0.0" in l]
                    assert not leftover, f"pod {i}: {path}/{f}: unmapped addresses {leftover}"
                    content = new
                (d / f).write_text(content)
                if kind == "secret":
                    (d / f).chmod(0o440)
        return dirs

    def run_init_containers(self, manifests, i, table, secrets):
        """Each init container's command, as in the pod (its volumes mapped like the broker's)."""
        for c in chart.init_containers(manifests):
            argv, env = chart.pod_process(manifests, i, NAMESPACE, pod_ip=pod_ip(i),
                                          secrets=secrets, c=c)
            argv, env = self.emulate(f"pod {i} init container {c['name']}", argv, env, table)
            for path, name, _, _ in chart.pod_volumes(manifests, secrets, c=c):
                Path(substitute(path, sorted(table, key=lambda t: -len(t[0])))).mkdir(
                    parents=True, exist_ok=True)
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, \
                f"pod {i} init container {c['name']} exited {res.returncode}: {res.stderr}"

    def start_pod(self, manifests, i, replicas, secrets=None):
        """Starts StatefulSet pod i of `manifests` (a release of `replicas` pods); `secrets`:
        {name: {key: value}}, the Secrets its env and volumes refer to."""
        argv, env = chart.pod_process(manifests, i, NAMESPACE, pod_ip=pod_ip(i), secrets=secrets)
        workdir = self.tmp_path / f"pod-{i}"
        workdir.mkdir(parents=True)
        table = self.dns(manifests, replicas) + [("0.0.0.0", pod_ip(i))]
        self.volumes(manifests, i, workdir, table, secrets)
        self.run_init_containers(manifests, i, table, secrets)
        argv, env = self.emulate(f"pod {i}", argv, env, table)
        pod = Pod(i, argv, env, workdir)
        pod.ports, pod.manifests = self.ports, manifests
        self.pods.append(pod)
        pod.start()
        return pod

    def run_job(self, manifests, replicas, timeout):
        """Runs the release's join Job (its container command, as in its pod); returns the
        CompletedProcess."""
        job = manifests.one("Job")
        c = job["spec"]["template"]["spec"]["containers"][0]
        env = dict(chart.image_env())
        for e in c.get("env", []):
            env[e["name"]] = chart.expand(str(e["value"]), env)
        argv = [chart.expand(a, env) for a in c["command"] + c.get("args", [])]
        # `gregor admin` listens on nothing: the image's GREGOR_*LISTEN variables stay unused
        argv, env = self.emulate("join job", argv, env, self.dns(manifests, replicas),
                                 listens=False)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def stop_all(self):
        errors = []
        for pod in self.pods:
            was_alive = pod.alive()
            code = pod.stop()
            if not was_alive:
                errors.append(f"pod {pod.ordinal} exited during the test ({code})\n"
                              f"{pod.log_tail()}")
            elif code != 0:
                errors.append(f"pod {pod.ordinal} exited with {code} on SIGTERM\n"
                              f"{pod.log_tail()}")
        return errors


@pytest.fixture
def emulation(request, tmp_path):
    e = Emulation(tmp_path, free_on_every_pod_ip(3))
    request.node._gregor_brokers = e.pods  # conftest attaches their log tails on failure
    yield e
    print("\n".join(["emulated pods, substitutions:"] + e.substitutions))
    errors = e.stop_all()
    if errors:
        pytest.fail("\n".join(errors))


def start_release(emulation, **values):
    manifests = emulation.render(replicaCount=REPLICAS, **values)
    return manifests, [emulation.start_pod(manifests, i, REPLICAS) for i in range(REPLICAS)]


def wait_ready(pods, timeout=120):
    def all_ready():
        for p in pods:
            assert p.alive(), f"pod {p.ordinal} exited ({p.proc.returncode})\n{p.log_tail()}"
        return all(probe(p, "readinessProbe") for p in pods)
    wait_until(all_ready, timeout, "readinessProbe of every pod", interval=0.25)


def probe(pod, which):
    """The rendered probe, as the kubelet runs it against the pod's IP: True on 2xx/3xx."""
    spec = chart.container(pod.manifests)[which]["httpGet"]
    port = chart.named_port(pod.manifests, spec["port"])
    url = f"http://{pod_ip(pod.ordinal)}:{port}{spec['path']}"
    try:
        with _HTTP.open(url, timeout=2) as r:
            return 200 <= r.status < 400
    except (urllib.error.URLError, OSError):
        return False


def raft_status(pod):
    with _HTTP.open(f"http://{pod_ip(pod.ordinal)}:{pod.ports[2]}/raft/status", timeout=2) as r:
        return json.loads(r.read())


def test_pods_form_a_cluster(emulation):
    _, pods = start_release(emulation, provisioning={"topics": [
        {"name": "provisioned", "partitions": 3, "replicationFactor": 3,
         "config": {"min.insync.replicas": "2"}}]})
    wait_ready(pods)
    assert all(probe(p, "livenessProbe") for p in pods)
    assert all(probe(p, "startupProbe") for p in pods)

    # Metadata: three brokers, each at its own advertised (pod DNS) address, one controller
    kafka_port = pods[0].ports[0]
    want_brokers = {i + 1: (pod_ip(i), kafka_port) for i in range(len(pods))}
    controllers = set()
    for p in pods:
        admin = AdminClient({"bootstrap.servers": f"{pod_ip(p.ordinal)}:{kafka_port}",
                             "logger": LOG})
        md = admin.list_topics(timeout=20)
        assert {b.id: (b.host, b.port) for b in md.brokers.values()} == want_brokers
        controllers.add(md.controller_id)
    assert len(controllers) == 1 and controllers <= set(want_brokers), controllers

    statuses = [raft_status(p) for p in pods]
    assert {s["leader"] for s in statuses} == controllers
    for s in statuses:
        assert s["voters"] == {str(i + 1): f"{pod_ip(i)}:{pods[0].ports[1]}"
                               for i in range(len(pods))}, s
        assert not s["learners"]
    assert sorted(s["node_id"] for s in statuses) == [1, 2, 3]

    bootstrap = ",".join(f"{pod_ip(p.ordinal)}:{kafka_port}" for p in pods)
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": LOG})

    # provisioning.topics from the chart's values, created at startup
    def provisioned():
        t = admin.list_topics(topic="provisioned", timeout=10).topics.get("provisioned")
        return t is not None and t.error is None and len(t.partitions) == 3 and t
    t = wait_until(provisioned, 30, "provisioned topic")
    assert all(len(p.replicas) == 3 for p in t.partitions.values())

    # a replication-factor-3 topic: produce with acks=all, consume everything back
    topic = f"sts-{uuid.uuid4().hex[:8]}"
    fut = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic]
    fut.result(30)

    def full_isr():
        t = admin.list_topics(topic=topic, timeout=10).topics[topic]
        return (t.error is None and len(t.partitions) == 3
                and all(len(p.isrs) == 3 and p.leader in want_brokers
                        for p in t.partitions.values()))
    wait_until(full_isr, 30, f"{topic}: 3 partitions with 3 in-sync replicas")

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "logger": LOG})
    errors = []
    sent = [f"m{i}".encode() for i in range(300)]
    for i, v in enumerate(sent):
        producer.produce(topic, v, key=str(i % 7).encode(),
                         on_delivery=lambda err, msg: err and errors.append(err))
    assert producer.flush(30) == 0
    assert not errors, errors

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "logger": LOG})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        assert sorted(got) == sorted(sent)
    finally:
        consumer.close()


def test_scale_up_joins_new_pods(emulation):
    """replicaCount 3 -> 4 on a running release: the existing pods keep their template (no
    restart), pod 3 starts as a non-voter, and the chart's join Job, run as its pod would run
    it, adds node 4 as a learner and promotes it."""
    before, pods = start_release(emulation)
    wait_ready(pods)
    # What `helm upgrade --set replicaCount=4` renders: the release's ConfigMap recorded 3
    # initial voters at install, which the upgrade reads back (quorum.initialVoters: 0 looks
    # it up; `helm template` has no cluster to ask, so it is given here).
    assert before.one("ConfigMap")["data"]["initial-voters"] == "3"
    after = emulation.render(replicaCount=4, quorum={"initialVoters": 3})
    assert after.one("StatefulSet")["spec"]["template"] == \
        before.one("StatefulSet")["spec"]["template"]
    assert after.one("StatefulSet")["spec"]["replicas"] == 4

    new = emulation.start_pod(after, 3, 4)
    res = emulation.run_job(after, 4, timeout=240)
    assert res.returncode == 0, f"join Job failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    wait_ready(pods + [new], timeout=60)

    ports = emulation.ports
    for p in pods + [new]:
        s = raft_status(p)
        assert s["voters"] == {str(i + 1): f"{pod_ip(i)}:{ports[1]}" for i in range(4)}, s
        assert not s["learners"], s
    admin = AdminClient({"bootstrap.servers": f"{pod_ip(3)}:{ports[0]}", "logger": LOG})
    md = admin.list_topics(timeout=20)
    assert sorted(b.id for b in md.brokers.values()) == [1, 2, 3, 4]

    # the Job is safe to run again (every upgrade runs it): both steps are no-ops now
    again = emulation.run_job(after, 4, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr


# --- with security on -------------------------------------------------------------------------

USERS = {"admin": 'adm"in\\pw', "alice": "alice-pw"}  # JAAS quoting is exercised


@pytest.fixture(scope="module")
def pod_tls(certs):
    """A Secret like cert-manager's for the pods: one certificate for every pod's (loopback)
    address, signed by the test CA; tls.crt is the chain, tls-combined.pem the key + chain."""
    sans = ",".join(f"IP:{pod_ip(i)}" for i in range(REPLICAS + 1))
    certs._leaf("pods", "/O=gregor/OU=test/CN=gregor", "ca", san=sans)
    key = Path(certs.key("pods")).read_text()
    chain = Path(certs.chain("pods")).read_text()
    return {"tls.key": key, "tls.crt": chain, "ca.crt": Path(certs.ca).read_text(),
            "tls-combined.pem": key + chain}


SECURED = {
    "combined-keystore-internal-listener": {
        "interBroker": {"listener": "internal"}, "controller": {"protocol": "SASL_SSL"},
        "tls": {"existingSecret": "gregor-tls"}},
    "init-container-keystore-mtls-controller": {
        "controller": {"protocol": "SSL"},
        "tls": {"existingSecret": "gregor-tls", "keystoreKey": "", "clientAuth": "requested"}},
}


@pytest.mark.parametrize("layout", sorted(SECURED))
def test_secured_pods_form_a_cluster(request, tmp_path, certs, pod_tls, layout):
    from security import TOPIC_AUTHORIZATION_FAILED, consume, produce
    e = Emulation(tmp_path, free_on_every_pod_ip(4))
    request.node._gregor_brokers = e.pods
    try:
        security = {"enabled": True, "protocol": "SASL_SSL",
                    "sasl": {"existingSecret": "gregor-users", "users": ["admin", "alice"]},
                    "authorizer": {"enabled": True}, **SECURED[layout]}
        manifests = e.render(replicaCount=REPLICAS, security=security)
        secrets = {"gregor-tls": pod_tls, "gregor-users": USERS}
        pods = [e.start_pod(manifests, i, REPLICAS, secrets=secrets) for i in range(REPLICAS)]
        wait_ready(pods)  # the probes stay on the plain admin port
        check_secured_cluster(e, pods, certs, layout, TOPIC_AUTHORIZATION_FAILED, produce,
                              consume)
    finally:
        print("\n".join(["emulated pods, substitutions:"] + e.substitutions))
        errors = e.stop_all()
    if errors:
        pytest.fail("\n".join(errors))


def check_secured_cluster(e, pods, certs, layout, topic_auth_failed, produce, consume):
    kafka, controller = e.ports[0], e.ports[1]
    bootstrap = ",".join(f"{pod_ip(p.ordinal)}:{kafka}" for p in pods)

    def conf(user):
        return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
                "ssl.ca.location": certs.ca, "sasl.mechanisms": "PLAIN",
                "sasl.username": user, "sasl.password": USERS[user]}

    # Metadata over SASL_SSL (the pods' certificate verified for their addresses), as admin
    # with the password the JAAS config quotes
    admin = AdminClient({**conf("admin"), "logger": LOG})
    md = admin.list_topics(timeout=20)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == \
        {i + 1: (pod_ip(i), kafka) for i in range(len(pods))}
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[topic].result(30)

    def full_isr():  # followers fetch over the secured inter-broker listener
        t = admin.list_topics(topic=topic, timeout=10).topics[topic]
        return (t.error is None and len(t.partitions) == 3
                and all(len(p.isrs) == 3 for p in t.partitions.values()))
    wait_until(full_isr, 30, f"{topic}: 3 in-sync replicas per partition")
    sent = [f"m{i}".encode() for i in range(100)]
    acked, failed, _ = produce(conf("admin"), topic, sent, partition=1)
    assert len(acked) == len(sent) and not failed, failed[:3]
    got, errors = consume(conf("admin"), topic, len(sent), partition=1)
    assert got == sent, errors

    # alice logs in but has no ACL: the authorizer refuses her
    acked, failed, _ = produce(conf("alice"), topic, [b"x"], timeout=10)
    assert not acked and {f.code() for f in failed} == {topic_auth_failed}, failed

    # nothing speaks plaintext: the Kafka port and the Raft port close on a plain request
    for port in (kafka, controller) + ((e.ports[3],) if "internal" in layout else ()):
        with socket.create_connection((pod_ip(0), port), timeout=5) as s:
            s.sendall(wire.frame(wire.api_versions_v0(1)))
            closed = closed_without_answer(s, timeout=5)
            assert closed == b"" or closed[0] == 0x15, (port, closed[:16])
    # the Raft plane speaks TLS with the pods' certificate (a broker's own for mutual TLS)
    ctx = tls_context(certs, client="pods")
    with socket.create_connection((pod_ip(1), controller), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=pod_ip(1)) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
    statuses = [raft_status(p) for p in pods]
    assert len({s["leader"] for s in statuses}) == 1
    assert all(len(s["voters"]) == 3 for s in statuses)
    for p in pods:
        log = p.log_path.read_text(errors="replace")
        assert "alice-pw" not in log and "adm" + '"in' not in log, f"pod {p.ordinal} log"
