#!/usr/bin/env python3
"""Turns the Kubernetes JSON schemas shipped in the `kubernetes-validate` wheel (PyPI) into the
self-contained files kubeconform reads offline.

The wheel's `<version>-local-strict/<kind>-<group>-<version>.json` files point into one shared
`_definitions.json` through absolute references (`/api/_definitions.json#/$defs/...`), which a
validator would try to fetch from the network. This copies each object kind (a schema with
`apiVersion` and `kind`) to `<out>/v<version>-standalone-strict/<same name>.json`, the layout
kubeconform's default schema-location template expects, with the definitions it needs embedded
under `$defs` and its references made local (`#/$defs/...`).

usage: k8s-schemas.py WHEEL OUT_DIR KUBERNETES_VERSION...
"""
import json
import re
import sys
import zipfile
from pathlib import Path

REF_PREFIX = "/api/_definitions.json#/$defs/"


def local_refs(node, found):
    """Rewrites shared-definition refs in place to local ones; adds referenced names to found."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            for prefix in (REF_PREFIX, "#/$defs/"):
                if ref.startswith(prefix):
                    name = ref[len(prefix):]
                    node["$ref"] = "#/$defs/" + name
                    found.add(name)
                    break
        for v in node.values():
            local_refs(v, found)
    elif isinstance(node, list):
        for v in node:
            local_refs(v, found)


def standalone(schema, defs):
    schema = json.loads(json.dumps(schema))
    schema.pop("$id", None)
    todo = set()
    local_refs(schema, todo)
    embedded = {}
    while todo:
        name = todo.pop()
        if name in embedded:
            continue
        d = json.loads(json.dumps(defs[name]))
        d.pop("$id", None)
        more = set()
        local_refs(d, more)
        embedded[name] = d
        todo |= more - embedded.keys()
    if embedded:
        schema["$defs"] = dict(sorted(embedded.items()))
    return schema


def main():
    wheel, out, versions = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for version in versions:
            v = "v" + version.lstrip("v")
            prefix = f"kubernetes_validate/kubernetes-json-schema/{v}-local-strict/"
            defs_name = prefix + "_definitions.json"
            if defs_name not in names:
                sys.exit(f"{wheel} has no schemas for Kubernetes {v}")
            defs = json.loads(z.read(defs_name))["$defs"]
            dest = out / f"{v}-standalone-strict"
            tmp = out / f".{v}-standalone-strict.tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            count = 0
            for name in names:
                if not name.startswith(prefix) or not name.endswith(".json"):
                    continue
                base = name[len(prefix):]
                if base.startswith("_") or base == "all.json" or "/" in base:
                    continue
                schema = json.loads(z.read(name))
                props = schema.get("properties", {})
                if "kind" not in props or "apiVersion" not in props:
                    continue  # a part of an object, not an object kind
                if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*\.json", base):
                    continue
                (tmp / base).write_text(json.dumps(standalone(schema, defs)))
                count += 1
            if dest.exists():
                for f in dest.iterdir():
                    f.unlink()
                dest.rmdir()
            tmp.rename(dest)
            print(f"k8s-schemas: {count} object schemas for Kubernetes {v} in {dest}")


if __name__ == "__main__":
    main()
