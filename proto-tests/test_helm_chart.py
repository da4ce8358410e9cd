"""The Helm chart (helm/gregor) rendered with `helm template`, and the Dockerfile, checked for
what the deployment relies on: the StatefulSet and its Services, PDB, probes, security
context, the voters and advertised listeners, how each pod derives its node id (the pod's
start script is run with a stand-in `gregor` that records what it was given), the gregor.toml
in the ConfigMap (parsed by the real broker), the join Job for scale-ups, the ServiceMonitor and
external access. The dashboard and the PrometheusRule: test_monitoring.py.

scripts/check-chart.sh runs helm lint, kubeconform and hadolint on the same files.
"""
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

import chart
from chart import CHART, REPO, container, render, render_error

NS = "kafka"
DOMAIN = "gregor-headless.kafka.svc.cluster.local"
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def voters(n, port=9093, domain=DOMAIN, name="gregor"):
    return ",".join(f"{i + 1}@{name}-{i}.{domain}:{port}" for i in range(n))


@pytest.fixture(scope="module")
def default():
    return render(namespace=NS)


def run_pod_script(tmp_path, manifests, ordinal, pod_name=None, secrets=None):
    """Runs pod `ordinal`'s command with a stand-in `gregor` on PATH; returns (exit code,
    argv given to gregor, its environment, stderr)."""
    argv, env = chart.pod_process(manifests, ordinal, NS, secrets=secrets)
    if pod_name:
        env["POD_NAME"] = env["HOSTNAME"] = pod_name
    bindir = tmp_path / f"bin-{ordinal}"
    bindir.mkdir(exist_ok=True)
    out = tmp_path / f"gregor-{ordinal}.out"
    fake = bindir / "gregor"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{out}.args"\nenv -0 > "{out}.env"\n')
    fake.chmod(0o755)
    env["PATH"] = f"{bindir}:{DEBIAN_PATH}"
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        return res.returncode, None, None, res.stderr
    args = (Path(f"{out}.args").read_bytes().decode().split("\0"))[:-1]
    got = dict(kv.split("=", 1) for kv in Path(f"{out}.env").read_bytes().decode().split("\0")
               if "=" in kv)
    return 0, args, got, res.stderr


# --- the StatefulSet and its Services -----------------------------------------------------------

def test_statefulset_shape(default):
    sts = default.one("StatefulSet", "gregor")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "gregor-headless"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec.get("minReadySeconds", 0) > 0
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    c = container(default)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/var/lib/gregor"] == "data"
    assert c["image"] == "gregor:" + yaml_chart()["appVersion"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == \
        {"kafka": 9092, "controller": 9093, "admin": 9644}
    assert sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert spec["template"]["spec"]["enableServiceLinks"] is False
    # soft anti-affinity by default
    aa = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in aa
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in aa
    term = aa["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert c["resources"]["requests"]


def yaml_chart():
    import yaml
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_storage_values():
    sts = render({"persistence": {"storageClass": "fast-ssd", "size": "50Gi"}}).one("StatefulSet")
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast-ssd"
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    sts = render({"persistence": {"storageClass": "-"}}).one("StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == ""
    sts = render({"persistence": {"enabled": False}}).one("StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    data = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert data == [{"name": "data", "emptyDir": {}}]


def test_services(default):
    headless = default.one("Service", "gregor-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in headless["spec"]["ports"]}
    assert ports == {"kafka": (9092, "kafka"), "controller": (9093, "controller"),
                     "admin": (9644, "admin")}
    client = default.one("Service", "gregor")
    assert client["spec"]["type"] == "ClusterIP"
    assert client["spec"].get("clusterIP") != "None"
    assert not client["spec"].get("publishNotReadyAddresses", False)
    assert {p["name"]: p["port"] for p in client["spec"]["ports"]} == {"kafka": 9092, "admin": 9644}
    pod_labels = default.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, client):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_pdb_and_service_account(default):
    pdb = default.one("PodDisruptionBudget", "gregor")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = default.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    sa = default.one("ServiceAccount", "gregor")
    assert sa["automountServiceAccountToken"] is False
    pod = default.one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gregor"
    assert pod["automountServiceAccountToken"] is False


def test_probes(default):
    c = container(default)
    admin = chart.named_port(default, "admin")
    assert admin == 9644
    ready, live, startup = c["readinessProbe"], c["livenessProbe"], c["startupProbe"]
    assert ready["httpGet"]["path"] == "/health/ready"
    assert live["httpGet"]["path"] == "/health/live"
    assert startup["httpGet"]["path"] == "/health/live"
    for p in (ready, live, startup):
        assert chart.named_port(default, p["httpGet"]["port"]) == admin
    # log recovery gets minutes before liveness may kill the pod
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert c.get("lifecycle") is None  # SIGTERM alone triggers the controlled shutdown
    pod = default.one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_security_context(default):
    pod = default.one("StatefulSet")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    csc = container(default)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert csc["runAsNonRoot"] is True
    # with a read-only root, everything written goes to the data volume or /tmp
    mounts = {m["mountPath"] for m in container(default)["volumeMounts"]}
    assert {"/var/lib/gregor", "/tmp"} <= mounts
    # the image's user is the one the chart runs as
    user = [a for i, a in chart.dockerfile()[-1][2] if i == "USER"]
    assert user and user[-1].split(":")[0] == str(psc["runAsUser"])


# --- identity: node ids, voters, advertised listeners -------------------------------------------

def test_voters_follow_replica_count(default):
    env = {e["name"]: e.get("value") for e in container(default)["env"]}
    assert env["GREGOR_VOTERS"] == voters(3)
    for n in (1, 5):
        m = render({"replicaCount": n}, namespace=NS)
        env = {e["name"]: e.get("value") for e in container(m)["env"]}
        assert env["GREGOR_VOTERS"] == voters(n)
        assert m.one("StatefulSet")["spec"]["replicas"] == n
        assert not m.of_kind("Job")  # every pod is an initial voter
    m = render({"replicaCount": 3, "ports": {"controller": 19093}}, release="events",
               namespace="prod")
    env = {e["name"]: e.get("value") for e in container(m)["env"]}
    assert env["GREGOR_VOTERS"] == voters(
        3, 19093, "events-gregor-headless.prod.svc.cluster.local", "events-gregor")


def test_each_pod_gets_its_identity(tmp_path, default):
    for i in range(3):
        code, args, env, err = run_pod_script(tmp_path, default, i)
        assert code == 0, err
        assert args == ["serve"]
        assert env["GREGOR_NODE_ID"] == str(i + 1)
        assert env["GREGOR_ADVERTISE"] == f"gregor-{i}.{DOMAIN}:9092"
        assert env["GREGOR_VOTERS"] == voters(3)
        assert env["GREGOR_LISTEN"] == "0.0.0.0:9092"
        assert env["GREGOR_CONTROLLER_LISTEN"] == "0.0.0.0:9093"
        assert env["GREGOR_ADMIN_LISTEN"] == "0.0.0.0:9644"
        assert env["GREGOR_DATA_DIR"] == "/var/lib/gregor"
        assert env["GREGOR_CONFIG"] == "/etc/gregor/gregor.toml"
        assert env["GREGOR_LOG_FORMAT"] == "json"
        # nothing else that the broker would read as a setting
        stray = {k for k in env if k.startswith("GREGOR_KAFKA_")}
        assert not stray


def test_pod_name_without_ordinal_is_refused(tmp_path, default):
    code, _, _, err = run_pod_script(tmp_path, default, 0, pod_name="gregor-x")
    assert code != 0 and "no ordinal" in err


def test_scale_up_pods_join_as_learners(tmp_path):
    m = render({"replicaCount": 5, "quorum": {"initialVoters": 3}}, namespace=NS)
    for i in range(5):
        code, _, env, err = run_pod_script(tmp_path, m, i)
        assert code == 0, err
        assert env["GREGOR_NODE_ID"] == str(i + 1)
        want = voters(3) if i < 3 else voters(3) + f",{i + 1}@gregor-{i}.{DOMAIN}:9093"
        assert env["GREGOR_VOTERS"] == want
    job = m.one("Job", "gregor-join")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    steps = re.findall(r"^\s*run (add-learner|promote|status)\b(.*)$", script, re.M)
    assert steps == [("add-learner", f" 4 gregor-3.{DOMAIN}:9093"), ("promote", " 4"),
                     ("add-learner", f" 5 gregor-4.{DOMAIN}:9093"), ("promote", " 5"),
                     ("status", "")]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GREGOR_ADMIN_URL"] == "http://gregor.kafka.svc.cluster.local:9644"
    assert job["spec"]["activeDeadlineSeconds"] > 0
    jc = job["spec"]["template"]["spec"]["containers"][0]
    assert jc["securityContext"]["readOnlyRootFilesystem"] is True
    assert jc["image"] == container(m)["image"]
    # growing the cluster leaves the existing pods' template (and so the pods) alone
    before = render({"replicaCount": 3, "quorum": {"initialVoters": 3}}, namespace=NS)
    assert before.one("StatefulSet")["spec"]["template"] == m.one("StatefulSet")["spec"]["template"]


def test_node_id_overrides(tmp_path):
    m = render({"replicaCount": 5, "quorum": {"initialVoters": 3, "nodeIds": {"3": 6}}},
               namespace=NS)
    ids = {}
    for i in range(5):
        code, _, env, err = run_pod_script(tmp_path, m, i)
        assert code == 0, err
        ids[i] = env["GREGOR_NODE_ID"]
        if i == 3:
            assert env["GREGOR_VOTERS"] == voters(3) + f",6@gregor-3.{DOMAIN}:9093"
    assert ids == {0: "1", 1: "2", 2: "3", 3: "6", 4: "5"}
    script = m.one("Job")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f"run add-learner 6 gregor-3.{DOMAIN}:9093" in script
    assert f"run add-learner 5 gregor-4.{DOMAIN}:9093" in script
    assert "nodeIds" in render_error({"quorum": {"nodeIds": {"x": 6}}})


def test_external_access_nodeport(tmp_path):
    m = render({"externalAccess": {"enabled": True, "type": "NodePort",
                                   "nodePort": {"host": "kafka.example.com", "basePort": 31090}}},
               namespace=NS)
    for i in range(3):
        svc = m.one("Service", f"gregor-{i}-external")
        assert svc["spec"]["type"] == "NodePort"
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"gregor-{i}"
        (port,) = svc["spec"]["ports"]
        assert port["nodePort"] == 31090 + i and port["targetPort"] == "kafka"
        code, _, env, err = run_pod_script(tmp_path, m, i)
        assert code == 0, err
        assert env["GREGOR_ADVERTISE"] == f"kafka.example.com:{31090 + i}"
        assert env["GREGOR_VOTERS"] == voters(3)  # the quorum stays on the pod network
    assert "host is required" in render_error({"externalAccess": {"enabled": True}})


def test_external_access_loadbalancer(tmp_path):
    hosts = [f"k{i}.example.com" for i in range(3)]
    m = render({"externalAccess": {"enabled": True, "type": "LoadBalancer",
                                   "loadBalancer": {"hostnames": hosts, "externalDns": True}}},
               namespace=NS)
    for i in range(3):
        svc = m.one("Service", f"gregor-{i}-external")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] == hosts[i]
        code, _, env, err = run_pod_script(tmp_path, m, i)
        assert code == 0, err
        assert env["GREGOR_ADVERTISE"] == f"{hosts[i]}:9092"
    assert "one entry per replica" in render_error(
        {"externalAccess": {"enabled": True, "type": "LoadBalancer",
                            "loadBalancer": {"hostnames": hosts[:2]}}})


# --- gregor.toml --------------------------------------------------------------------------------

def test_config_toml_from_values():
    values = {
        "config": {"kafka": {"log.retention.hours": 72, "message.max.bytes": 2097152,
                             "log.flush.interval.messages": "9223372036854775807",
                             "auto.create.topics.enable": False}},
        "provisioning": {"topics": [
            {"name": "chat-topic", "partitions": 6, "replicationFactor": 3,
             "config": {"max.message.bytes": "64000", "retention.ms": 604800000}},
            {"name": "audit"},
        ]},
    }
    cm = render(values, namespace=NS).one("ConfigMap", "gregor")
    toml = tomllib.loads(cm["data"]["gregor.toml"])
    assert toml["kafka"] == {
        "auto.create.topics.enable": "false", "log.retention.hours": "72",
        "message.max.bytes": "2097152", "log.flush.interval.messages": "9223372036854775807",
        "num.partitions": "3",
        # follow replicaCount unless set
        "default.replication.factor": "3", "offsets.topic.replication.factor": "3",
        "min.insync.replicas": "2",
    }
    assert toml["provisioning"]["topics"] == [
        {"name": "chat-topic", "partitions": 6, "replication_factor": 3,
         "config": {"max.message.bytes": "64000", "retention.ms": "604800000"}},
        {"name": "audit"},
    ]
    assert cm["data"]["initial-voters"] == "3"
    single = tomllib.loads(render({"replicaCount": 1}).one("ConfigMap")["data"]["gregor.toml"])
    assert single["kafka"]["default.replication.factor"] == "1"
    assert single["kafka"]["min.insync.replicas"] == "1"
    # the ConfigMap is what the pod reads
    files = chart.configmap_files(render(values, namespace=NS), "/etc/gregor")
    assert list(files) == ["/etc/gregor/gregor.toml"]


def test_the_broker_accepts_the_rendered_config(make_broker, tmp_path):
    """The chart's most involved example values, through the real broker's config loader."""
    m = render(files=[CHART / "ci" / "scale-5-nodeport-values.yaml"], namespace=NS)
    path = tmp_path / "gregor.toml"
    path.write_text(m.one("ConfigMap", "gregor")["data"]["gregor.toml"])
    b = make_broker(env={"GREGOR_CONFIG": str(path)})
    text = b.log_path.read_text()
    assert "ignoring unknown Kafka setting" not in text, text[-2000:]


# --- security -----------------------------------------------------------------------------------

USERS_SECRET = {"admin": 'adm"in\\pw', "alice": "alice-pw", "broker": "broker-pw"}
TLS_SECRET = {"tls.key": "KEY\n", "tls.crt": "CERT\nCA\n", "ca.crt": "CA\n",
              "tls-combined.pem": "KEY\nCERT\nCA\n"}
SASL_SSL = {"security": {"enabled": True, "protocol": "SASL_SSL",
                         "tls": {"existingSecret": "kafka-tls"},
                         "sasl": {"existingSecret": "kafka-users", "users": ["admin", "alice"]},
                         "authorizer": {"enabled": True}}}


def merged(base, extra):
    out = json.loads(json.dumps(base))
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def kafka_toml(manifests):
    return tomllib.loads(manifests.one("ConfigMap", "gregor")["data"]["gregor.toml"])["kafka"]


def env_of(manifests):
    return {e["name"]: e for e in container(manifests)["env"]}


def test_security_is_off_by_default(default):
    toml = kafka_toml(default)
    assert not {k for k in toml if k.startswith(("listener", "ssl.", "sasl.", "authorizer",
                                                  "super.users", "inter.broker"))}
    assert "GREGOR_KAFKA_LISTENERS" not in env_of(default)
    assert not default.of_kind("Certificate")
    assert "initContainers" not in default.one("StatefulSet")["spec"]["template"]["spec"]
    volumes = default.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert {v["name"] for v in volumes} == {"config", "tmp"}


def test_sasl_ssl_settings_env_and_volumes(tmp_path):
    m = render(SASL_SSL, namespace=NS)
    toml = kafka_toml(m)
    assert toml["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL"
    assert toml["inter.broker.listener.name"] == "CLIENT"
    assert toml["sasl.mechanism.inter.broker.protocol"] == "PLAIN"
    assert toml["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert toml["ssl.keystore.type"] == toml["ssl.truststore.type"] == "PEM"
    assert toml["listener.name.client.ssl.client.auth"] == "none"
    assert toml["authorizer.class.name"] == \
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert toml["super.users"] == "User:admin"
    assert toml["allow.everyone.if.no.acl.found"] == "false"
    # the keystore and truststore are files of the mounted Secret
    mounts = {path: (name, kind, files) for path, name, kind, files
              in chart.pod_volumes(m, secrets={"kafka-tls": TLS_SECRET})}
    tls_dir = str(Path(toml["ssl.keystore.location"]).parent)
    name, kind, files = mounts[tls_dir]
    assert kind == "secret" and name == "tls"
    assert files[Path(toml["ssl.keystore.location"]).name] == TLS_SECRET["tls-combined.pem"]
    assert files[Path(toml["ssl.truststore.location"]).name] == TLS_SECRET["ca.crt"]
    assert "/etc/gregor" != tls_dir and not tls_dir.startswith("/etc/gregor/")  # not nested
    volume = next(v for v in m.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "kafka-tls"
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    # the listener itself: env; the passwords: secretKeyRefs, never values
    env = env_of(m)
    assert env["GREGOR_KAFKA_LISTENERS"]["value"] == "CLIENT://0.0.0.0:9092"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env.values()
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert sorted(r["key"] for r in refs.values()) == ["admin", "alice"]
    assert {r["name"] for r in refs.values()} == {"kafka-users"}
    assert not [k for k in refs if k.startswith("GREGOR_")]  # the broker reads none of them
    # the pod builds the JAAS config from the Secret and hands it to the broker
    code, args, got, err = run_pod_script(tmp_path, m, 1, secrets={"kafka-users": USERS_SECRET})
    assert code == 0, err
    assert got["GREGOR_KAFKA_ADVERTISED_LISTENERS"] == f"CLIENT://gregor-1.{DOMAIN}:9092"
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="admin" password="adm\\"in\\\\pw" user_admin="adm\\"in\\\\pw" '
            'user_alice="alice-pw";')
    assert got["GREGOR_KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"] == jaas
    assert got["GREGOR_KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG"] == jaas
    assert not [k for k in got if k.startswith("SASL_USER_PASSWORD")]
    assert "pw" not in err  # the start line names listeners, not secrets
    # no JAAS config (so no password) in the ConfigMap or the pod spec's values
    assert not [k for k in toml if "jaas" in k]
    assert not [e for e in container(m)["env"] if "JAAS" in e["name"]]


def test_internal_listener_keeps_replication_on_the_pod_network(tmp_path):
    m = render(merged(SASL_SSL, {
        "security": {"interBroker": {"listener": "internal"}},
        "externalAccess": {"enabled": True, "type": "NodePort",
                           "nodePort": {"host": "kafka.example.com", "basePort": 31090}}}),
        namespace=NS)
    toml = kafka_toml(m)
    assert toml["listener.security.protocol.map"] == \
        "CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SASL_SSL"
    assert toml["inter.broker.listener.name"] == "INTERNAL"
    assert env_of(m)["GREGOR_KAFKA_LISTENERS"]["value"] == \
        "CLIENT://0.0.0.0:9092,INTERNAL://0.0.0.0:9095"
    assert {p["name"]: p["containerPort"] for p in container(m)["ports"]}["internal"] == 9095
    headless = m.one("Service", "gregor-headless")
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]}["internal"] == 9095
    for i in range(3):
        code, _, got, err = run_pod_script(tmp_path, m, i, secrets={"kafka-users": USERS_SECRET})
        assert code == 0, err
        assert got["GREGOR_KAFKA_ADVERTISED_LISTENERS"] == \
            f"CLIENT://kafka.example.com:{31090 + i},INTERNAL://gregor-{i}.{DOMAIN}:9095"
        assert "GREGOR_KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG" in got
    # the external Services still reach the CLIENT listener
    assert m.one("Service", "gregor-0-external")["spec"]["ports"][0]["targetPort"] == "kafka"


def test_keystore_from_key_and_certificate_by_an_init_container(tmp_path):
    m = render(merged(SASL_SSL, {"security": {"tls": {"keystoreKey": ""}}}), namespace=NS)
    toml = kafka_toml(m)
    (init,) = chart.init_containers(m)
    assert init["image"] == container(m)["image"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    keystore_vol = next(v for v in m.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]
                        if v["name"] == "keystore")
    assert keystore_vol["emptyDir"]["medium"] == "Memory"  # the private key stays off disk
    # run the init container with its volumes as directories, then read what the broker would
    table = []
    for path, name, kind, files in chart.pod_volumes(m, {"kafka-tls": TLS_SECRET}, c=init):
        d = tmp_path / name
        d.mkdir()
        for f, content in (files or {}).items():
            (d / f).write_text(content)
        table.append((path, str(d)))
    argv = [chart.expand(a, {}) for a in init["command"] + init.get("args", [])]
    for old, new in sorted(table, key=lambda t: -len(t[0])):
        argv = [a.replace(old, new) for a in argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    keystore = toml["ssl.keystore.location"]
    mount = next(p for p, n, _, _ in chart.pod_volumes(m, {"kafka-tls": TLS_SECRET})
                 if n == "keystore")
    assert keystore.startswith(mount + "/")
    written = tmp_path / "keystore" / Path(keystore).name
    assert written.read_text() == "KEY\nCERT\nCA\n"  # the key, then the chain
    assert written.stat().st_mode & 0o077 == 0


def test_cert_manager_certificate(tmp_path):
    hosts = ["k0.example.com", "k1.example.com", "203.0.113.12"]
    m = render({"security": {"enabled": True, "protocol": "SSL",
                             "tls": {"clientAuth": "required",
                                     "certManager": {"enabled": True,
                                                     "issuerRef": {"name": "ca",
                                                                   "kind": "ClusterIssuer"},
                                                     "extraDnsNames": ["kafka.example.org"]}},
                             "authorizer": {"enabled": True}},
                "externalAccess": {"enabled": True, "type": "LoadBalancer",
                                   "loadBalancer": {"hostnames": hosts}}}, namespace=NS)
    cert = m.one("Certificate", "gregor")["spec"]
    assert cert["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert cert["additionalOutputFormats"] == [{"type": "CombinedPEM"}]
    assert cert["privateKey"]["encoding"] == "PKCS8"  # unencrypted PKCS#8
    assert {"server auth", "client auth"} <= set(cert["usages"])
    names = set(cert["dnsNames"])
    assert {f"gregor-{i}.{DOMAIN}" for i in range(3)} <= names  # peers verify these
    assert {f"*.{DOMAIN}", "gregor", "gregor.kafka.svc", "gregor.kafka.svc.cluster.local",
            "k0.example.com", "k1.example.com", "kafka.example.org"} <= names
    assert cert["ipAddresses"] == ["203.0.113.12"]
    toml = kafka_toml(m)
    assert toml["ssl.keystore.location"].endswith("/tls-combined.pem")
    volume = next(v for v in m.one("StatefulSet")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "tls")
    assert volume["secret"]["secretName"] == cert["secretName"]
    # SSL everywhere: mutual TLS on the Raft plane; the brokers' principal is a super user
    assert toml["listener.security.protocol.map"] == "CLIENT:SSL,CONTROLLER:SSL"
    assert toml["listener.name.controller.ssl.client.auth"] == "required"
    assert toml["listener.name.client.ssl.client.auth"] == "required"
    assert toml["super.users"] == "User:CN=gregor;User:admin"
    assert "sasl.enabled.mechanisms" not in toml
    assert not [e for e in container(m)["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    # a scale-up changes the Certificate (cert-manager reissues it), not the pod template
    bigger = render({"replicaCount": 5, "quorum": {"initialVoters": 3},
                     "security": {"enabled": True, "protocol": "SSL",
                                  "tls": {"certManager": {"enabled": True,
                                                          "issuerRef": {"name": "ca"}}}}},
                    namespace=NS)
    assert f"gregor-4.{DOMAIN}" in bigger.one("Certificate")["spec"]["dnsNames"]


def test_jaas_from_a_secret_key():
    m = render(merged(SASL_SSL, {"security": {"sasl": {"jaasKey": "plain-jaas"},
                                              "controller": {"protocol": "SSL"}}}),
               namespace=NS)
    env = env_of(m)
    ref = env["GREGOR_KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]["valueFrom"]
    assert ref["secretKeyRef"] == {"name": "kafka-users", "key": "plain-jaas"}
    assert "GREGOR_KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG" not in env
    assert not [k for k in env if k.startswith("SASL_USER_PASSWORD")]
    script = container(m)["args"][0]
    assert "PlainLoginModule" not in script


def test_security_values_are_checked():
    base = {"security": {"enabled": True}}
    assert "existingSecret or security.tls.certManager.enabled" in render_error(base)
    assert "issuerRef.name" in render_error(merged(base, {"security": {"tls": {
        "certManager": {"enabled": True}}}}))
    assert "security.sasl.existingSecret" in render_error(merged(base, {"security": {"tls": {
        "existingSecret": "t"}}}))
    assert "must be PLAINTEXT, SSL" in render_error(merged(SASL_SSL, {"security": {
        "protocol": "TLS"}}))
    assert "client or internal" in render_error(merged(SASL_SSL, {"security": {
        "interBroker": {"listener": "both"}}}))
    assert "not supported" in render_error(merged(SASL_SSL, {"security": {"sasl": {
        "mechanisms": ["GSSAPI"]}}}))
    assert "not a valid user name" in render_error(merged(SASL_SSL, {"security": {"sasl": {
        "users": ["admin", "bad user"]}}}))
    assert "clientAuth: required" in render_error({"security": {
        "enabled": True, "protocol": "SSL", "tls": {"existingSecret": "t"},
        "authorizer": {"enabled": True}}})
    assert "authenticated inter-broker listener" in render_error({"security": {
        "enabled": True, "protocol": "PLAINTEXT", "controller": {"protocol": "SSL"},
        "tls": {"existingSecret": "t"}, "authorizer": {"enabled": True}}})


def test_security_ci_values_render():
    """helm/gregor/ci/*.yaml with security: the settings reach gregor.toml and the pods."""
    m = render(files=[CHART / "ci" / "sasl-ssl-values.yaml"], namespace=NS)
    toml = kafka_toml(m)
    assert toml["super.users"] == "User:broker;User:admin;User:CN=ops,OU=platform,O=example"
    assert toml["ssl.truststore.location"].endswith("/ca.pem")
    assert toml["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    assert chart.init_containers(m)
    m = render(files=[CHART / "ci" / "cert-manager-values.yaml"], namespace=NS)
    assert m.one("Certificate", "events")["spec"]["secretTemplate"]["labels"] == \
        {"team": "streaming"}


# --- monitoring ---------------------------------------------------------------------------------

def test_service_monitor():
    m = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
               namespace=NS)
    sm = m.one("ServiceMonitor", "gregor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "admin" and ep["path"] == "/metrics"
    headless = m.one("Service", "gregor-headless")
    assert sm["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    assert not sm["spec"]["selector"]["matchLabels"].items() <= \
        m.one("Service", "gregor")["metadata"]["labels"].items()  # each broker once
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NS]
    assert not render().of_kind("ServiceMonitor")


# --- the image ----------------------------------------------------------------------------------

def test_dockerfile_essentials():
    stages = chart.dockerfile()
    assert len(stages) >= 2, "multi-stage: build, then a runtime image"
    build_base, build_name, build = stages[0]
    assert build_base.startswith("rust:")
    runs = " ".join(a for i, a in build if i == "RUN")
    assert "cargo build --release --locked" in runs
    base, _, final = stages[-1]
    assert re.match(r"(debian:\$\{DEBIAN_RELEASE\}-slim|debian:[a-z]+-slim|gcr.io/distroless/cc)",
                    base), base
    instrs = {}
    for i, a in final:
        instrs.setdefault(i, []).append(a)
    assert any(f"--from={build_name}" in a and "/usr/local/bin/gregor" in a
               for a in instrs["COPY"])
    assert instrs["USER"][-1].split(":")[0] == "10001"
    assert "/var/lib/gregor" in instrs["VOLUME"][-1]
    assert set(" ".join(instrs["EXPOSE"]).split()) == {"9092", "9093", "9644"}
    assert json.loads(instrs["ENTRYPOINT"][-1]) == ["gregor", "serve"]
    env = chart.image_env()
    assert env["GREGOR_DATA_DIR"] == "/var/lib/gregor"
    assert env["GREGOR_LISTEN"] == "0.0.0.0:9092"
    assert env["GREGOR_CONTROLLER_LISTEN"] == "0.0.0.0:9093"
    assert env["GREGOR_ADMIN_LISTEN"] == "0.0.0.0:9644"
    assert not env["GREGOR_ADVERTISE"].startswith("0.0.0.0")  # the broker refuses a wildcard
    # the chart's pods run /bin/sh, which a debian-slim runtime has (distroless would not)
    assert container(render())["command"][0] == "/bin/sh"
    assert "debian" in base
    ignored = {l.strip().rstrip("/") for l in (REPO / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")}
    assert {"target", ".deps", "data", ".git"} <= ignored
    assert not ignored & {"src", "Cargo.toml", "Cargo.lock"}


def test_image_env_and_flags_agree():
    """Every GREGOR_* variable the image and the chart set is one the broker reads."""
    res = subprocess.run([str(chart_bin()), "serve", "--help"], capture_output=True, text=True,
                         timeout=10)
    assert res.returncode == 0, res.stderr
    known = set(re.findall(r"\[env: (GREGOR_[A-Z_]+)=", res.stdout))
    assert {"GREGOR_NODE_ID", "GREGOR_VOTERS", "GREGOR_ADVERTISE"} <= known
    chart_env = {e["name"] for e in container(render())["env"] if e["name"].startswith("GREGOR_")}
    assert set(chart.image_env()) <= known
    assert (chart_env | {"GREGOR_NODE_ID"}) <= known


def chart_bin():
    from conftest import GREGOR_BIN
    if not GREGOR_BIN.exists():
        pytest.fail(f"{GREGOR_BIN} not found: run `cargo build --release` or set GREGOR_BIN")
    return GREGOR_BIN
