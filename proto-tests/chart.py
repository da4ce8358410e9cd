"""The Helm chart (helm/gregor) and the Dockerfile as the tests see them.

`render(values=..., files=...)` runs `helm template` (the helm that scripts/check-chart.sh
installs under .deps/bin, or HELM_BIN) and returns the manifests as a `Manifests` list of
dicts. `pod_process(manifests, ordinal)` works out what the StatefulSet's pod <ordinal> runs,
the way Kubernetes would: the image's ENV (from the Dockerfile) under the container's env,
`fieldRef`s for the pod's name and namespace, `secretKeyRef`s from the Secrets a test gives
(`secrets={name: {key: value}}`), `$(VAR)` references expanded in env values, command and
args, HOSTNAME set to the pod name. `pod_volumes(manifests, secrets)` lists the broker
container's mounts with what a Secret, ConfigMap or emptyDir volume holds; `init_containers()`
its init containers. `dockerfile()` parses the Dockerfile into stages of (instruction,
arguments).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "gregor"
DOCKERFILE = REPO / "Dockerfile"


def helm_bin():
    for candidate in (os.environ.get("HELM_BIN"), REPO / ".deps" / "bin" / "helm",
                      shutil.which("helm")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("helm not found: run scripts/check-chart.sh --install (or set HELM_BIN)")


class Manifests(list):
    def of_kind(self, kind):
        return [m for m in self if m["kind"] == kind]

    def one(self, kind, name=None):
        found = [m for m in self.of_kind(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found " \
                                f"{[m['metadata']['name'] for m in found]}"
        return found[0]


def render(values=None, files=(), release="gregor", namespace="kafka", kube_version=None):
    """helm template with `values` (a dict, passed as a values file) and values `files`."""
    cmd = [helm_bin(), "template", release, str(CHART), "--namespace", namespace]
    if kube_version:
        cmd += ["--kube-version", kube_version]
    for f in files:
        cmd += ["-f", str(f)]
    tmp = None
    try:
        if values:
            import tempfile
            fd, tmp = tempfile.mkstemp(suffix=".yaml")
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(values, f)
            cmd += ["-f", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        if tmp:
            os.unlink(tmp)
    if res.returncode != 0:
        raise AssertionError(f"helm template failed ({res.returncode}):\n{res.stderr}")
    return Manifests(d for d in yaml.safe_load_all(res.stdout) if d)


def render_error(values, release="gregor", namespace="kafka"):
    """helm template's error message for values that must be refused."""
    try:
        render(values, release=release, namespace=namespace)
    except AssertionError as e:
        return str(e)
    raise AssertionError(f"helm template accepted {values}")


# --- the Dockerfile -----------------------------------------------------------------------------

def dockerfile(path=DOCKERFILE):
    """[(stage base image, stage name, [(INSTRUCTION, args)])] with continuation lines joined
    and comments dropped."""
    lines, buf = [], ""
    for raw in Path(path).read_text().splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    stages = []
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], name, []))
        elif stages:
            stages[-1][2].append((instr, args.strip()))
        else:
            stages.append((None, "preamble", [(instr, args.strip())]))
    return [s for s in stages if s[0] is not None]


def image_env(path=DOCKERFILE):
    """The ENV of the Dockerfile's final stage (what every container of the image starts with)."""
    env = {}
    for instr, args in dockerfile(path)[-1][2]:
        if instr != "ENV":
            continue
        for token in shlex.split(args):
            k, sep, v = token.partition("=")
            assert sep, f"ENV {args}: use the KEY=value form"
            env[k] = v
    return env


# --- what a pod runs ----------------------------------------------------------------------------

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s, env):
    """Kubernetes' $(VAR) expansion: known variables are replaced, unknown references stay as
    they are, and $$ is a literal $."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _REF.sub(sub, s)


def container(manifests, kind="StatefulSet", name="gregor"):
    obj = manifests.one(kind)
    containers = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def secret_value(secrets, ref):
    """A secretKeyRef's value: the kubelet refuses to start a pod whose Secret or key is missing
    (unless the reference is optional)."""
    data = (secrets or {}).get(ref["name"])
    if data is None or ref["key"] not in data:
        raise AssertionError(f"secretKeyRef {ref}: no such Secret key (given: "
                             f"{ {n: sorted(d) for n, d in (secrets or {}).items()} })")
    return data[ref["key"]]


def pod_process(manifests, ordinal, namespace, pod_ip="10.0.0.1", secrets=None, c=None):
    """(argv, env) of the broker container (or container `c`) in StatefulSet pod `ordinal`, as
    the kubelet and the container runtime would start it; `secrets`: {name: {key: value}}."""
    sts = manifests.one("StatefulSet")
    pod_name = f"{sts['metadata']['name']}-{ordinal}"
    c = c or container(manifests)
    env = dict(image_env())
    env["HOSTNAME"] = pod_name
    own = {}
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace,
              "status.podIP": pod_ip, "spec.serviceAccountName":
                  sts["spec"]["template"]["spec"].get("serviceAccountName", "default")}
    configmaps = {m["metadata"]["name"]: m.get("data", {}) for m in manifests.of_kind("ConfigMap")}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef")
        assert ref, f"envFrom {src} is not emulated"
        for k, v in configmaps[ref["name"]].items():
            env[src.get("prefix", "") + k] = v
    for e in c.get("env", []):
        if "value" in e:
            v = expand(str(e["value"]), {**env, **own})
        elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
            v = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "valueFrom" in e and "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            v = configmaps[ref["name"]][ref["key"]]
        elif "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
            v = secret_value(secrets, e["valueFrom"]["secretKeyRef"])
        else:
            raise AssertionError(f"env {e} is not emulated")
        own[e["name"]] = v
        env[e["name"]] = v
    argv = [expand(a, env) for a in c.get("command", [])] + \
           [expand(a, env) for a in c.get("args", [])]
    if not c.get("command"):
        argv = None  # the image's ENTRYPOINT would run
    return argv, env


def configmap_files(manifests, mount_path):
    """{path inside the container: contents} of the ConfigMap volume mounted at mount_path."""
    sts = manifests.one("StatefulSet")
    c = container(manifests)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == mount_path)
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    cm = manifests.one("ConfigMap", volume["configMap"]["name"])
    items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in cm["data"]]
    return {f"{mount_path}/{i['path']}": cm["data"][i["key"]] for i in items}


def init_containers(manifests):
    return manifests.one("StatefulSet")["spec"]["template"]["spec"].get("initContainers", [])


def pod_volumes(manifests, secrets=None, c=None):
    """The mounts of the broker container (or container `c`): [(mountPath, volume name, kind,
    files)], kind one of configMap, secret, emptyDir, persistentVolumeClaim; files is
    {relative path: contents} for configMap and secret volumes (their `items`, else every key),
    None otherwise."""
    sts = manifests.one("StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    out = []
    for m in (c or container(manifests)).get("volumeMounts", []):
        name = m["name"]
        if name in claims and name not in volumes:
            out.append((m["mountPath"], name, "persistentVolumeClaim", None))
            continue
        v = volumes[name]
        if "configMap" in v:
            data = manifests.one("ConfigMap", v["configMap"]["name"]).get("data", {})
            items = v["configMap"].get("items")
            kind = "configMap"
        elif "secret" in v:
            data = (secrets or {}).get(v["secret"]["secretName"])
            if data is None:
                raise AssertionError(f"volume {name}: Secret {v['secret']['secretName']} not given")
            items = v["secret"].get("items")
            kind = "secret"
        elif "emptyDir" in v:
            out.append((m["mountPath"], name, "emptyDir", None))
            continue
        else:
            raise AssertionError(f"volume {v} is not emulated")
        items = items or [{"key": k, "path": k} for k in data]
        out.append((m["mountPath"], name, kind, {i["path"]: data[i["key"]] for i in items}))
    return out


def named_port(manifests, port):
    """A probe's port: a number, or the name of a container port."""
    if isinstance(port, int):
        return port
    for p in container(manifests)["ports"]:
        if p["name"] == port:
            return p["containerPort"]
    raise AssertionError(f"no container port named {port}")


def dump(obj):
    return json.dumps(obj, indent=2, sort_keys=True)
