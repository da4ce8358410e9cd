"""The chart's monitoring pieces, checked against a real broker's /metrics: the Grafana
dashboard (helm/gregor/dashboards/gregor.json, shipped in a ConfigMap with the
`grafana_dashboard` label) validates against a JSON schema of the dashboard model it uses, and
the PrometheusRule validates against the schema kubeconform checks it with
(scripts/schemas/monitoring.coreos.com). Every PromQL expression of both is parsed and
type-checked by promql-parser (the Rust PromQL parser, from PyPI), and every metric it names is
one the broker really exports (or a recording rule of the chart). The rules select exactly
the series the ServiceMonitor scrapes for this release.
"""
import json
import re
import urllib.request

import jsonschema
import promql_parser as pp
import pytest

from chart import CHART, REPO, render

NS = "kafka"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
DASHBOARD = json.loads((CHART / "dashboards" / "gregor.json").read_text())
RULE_SCHEMA = json.loads(
    (REPO / "scripts" / "schemas" / "monitoring.coreos.com" / "prometheusrule_v1.json").read_text())
ALERTS = {"GregorConsumerGroupLagGrowing", "GregorUnderReplicatedPartitions",
          "GregorOfflinePartitions", "GregorNoActiveController"}
# What the dashboard must show (issue 16): a panel title pattern for each.
DASHBOARD_SHOWS = {
    "throughput": r"(Bytes|Messages) (in|out) per second by topic",
    "latency percentiles": r"latency p99.*|latency p50 and p95",
    "ISR shrink/expand": r"ISR shrinks and expands",
    "consumer lag": r"Consumer group lag",
    "Raft state": r"Raft term|Active controller",
}

_DATASOURCE = {"type": "object", "required": ["type", "uid"],
               "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
# The part of Grafana's dashboard model (schemaVersion 36 and later) the dashboard uses.
DASHBOARD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "refresh": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {
            "type": "array", "items": {
                "type": "object", "required": ["name", "type"],
                "properties": {"type": {"enum": ["datasource", "query", "custom", "interval"]},
                               "name": {"pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/panel"}},
    },
    "$defs": {
        "panel": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["row", "stat", "timeseries", "gauge", "bargauge", "table"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": _DATASOURCE,
                "gridPos": {
                    "type": "object", "required": ["h", "w", "x", "y"],
                    "properties": {"h": {"type": "integer", "minimum": 1},
                                   "w": {"type": "integer", "minimum": 1, "maximum": 24},
                                   "x": {"type": "integer", "minimum": 0, "maximum": 23},
                                   "y": {"type": "integer", "minimum": 0}}},
                "targets": {"type": "array", "items": {
                    "type": "object", "required": ["refId", "expr", "datasource"],
                    "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"},
                                   "expr": {"type": "string", "minLength": 1},
                                   "datasource": _DATASOURCE,
                                   "legendFormat": {"type": "string"}}}},
                "fieldConfig": {"type": "object", "required": ["defaults"]},
            },
            "if": {"properties": {"type": {"const": "row"}}},
            "then": {"properties": {"gridPos": {"properties": {"h": {"const": 1},
                                                               "w": {"const": 24}}}}},
            "else": {"required": ["targets", "datasource", "fieldConfig"],
                     "properties": {"targets": {"minItems": 1}}},
        },
    },
}


def parse(expr):
    """The expression's AST (Grafana's $__rate_interval as a plain range), which must be an
    instant vector or a scalar: what a panel or a rule evaluates."""
    ast = pp.parse(expr.replace("$__rate_interval", "5m"))
    assert not isinstance(ast, (pp.MatrixSelector, pp.SubqueryExpr)), expr
    return ast


def selectors(ast):
    found = []
    pp.walk(ast, lambda n: found.append(n) if isinstance(n, pp.VectorSelector) else None)
    return found


def dashboard_exprs():
    return [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def rules():
    m = render({"metrics": {"serviceMonitor": {"enabled": True},
                            "prometheusRule": {"enabled": True,
                                               "labels": {"release": "prom"}}}}, namespace=NS)
    return m


def test_dashboard_is_a_valid_grafana_dashboard():
    jsonschema.Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    jsonschema.validate(DASHBOARD, DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells = {}
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    titles = [p["title"] for p in DASHBOARD["panels"]]
    for what, pattern in DASHBOARD_SHOWS.items():
        assert any(re.search(pattern, t) for t in titles), f"no panel shows {what}"
    for expr in dashboard_exprs():
        parse(expr)
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    used = set(re.findall(r"\$\{?([a-zA-Z_]+)", json.dumps(DASHBOARD)))
    assert used - {"__rate_interval"} <= variables, used - variables


def test_dashboard_configmap():
    m = render({"metrics": {"grafanaDashboard": {"enabled": True}}})
    cm = m.one("ConfigMap", "gregor-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["gregor.json"]) == DASHBOARD
    assert not render().of_kind("PrometheusRule")


def test_prometheus_rules(rules):
    pr = rules.one("PrometheusRule", "gregor")
    jsonschema.validate(pr, RULE_SCHEMA)
    assert pr["metadata"]["labels"]["release"] == "prom"
    all_rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}
    assert set(alerts) == ALERTS
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in alerts.values())
    recorded = {r["record"] for r in all_rules if "record" in r}
    # The series this release's ServiceMonitor scrapes carry these labels.
    sm = rules.one("ServiceMonitor", "gregor")
    headless = rules.one("Service", "gregor-headless")
    assert sm["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    want = {("namespace", NS), ("service", headless["metadata"]["name"])}
    for r in all_rules:
        for s in selectors(parse(r["expr"])):
            got = {(m.name, m.value) for m in s.matchers.matchers if m.op == pp.MatchOp.Equal}
            assert want <= got, f"{r.get('record') or r['alert']}: {s} selects other releases"
            if s.name.startswith("gregor:"):
                assert s.name in recorded, f"{s.name} is not a recording rule of the chart"
    # The lag alert's threshold and durations come from the values.
    lag = alerts["GregorConsumerGroupLagGrowing"]
    assert "> 1000" in lag["expr"] and lag["for"] == "15m"


def test_an_alert_can_be_left_out():
    m = render({"metrics": {"prometheusRule": {"enabled": True, "offlinePartitions": None}}})
    pr = m.one("PrometheusRule", "gregor")
    names = {r.get("alert") for g in pr["spec"]["groups"] for r in g["rules"]}
    assert "GregorOfflinePartitions" not in names and "GregorNoActiveController" in names


def test_every_expression_names_a_metric_the_broker_exports(make_broker, rules):
    pr = rules.one("PrometheusRule", "gregor")
    exprs = dashboard_exprs() + [r["expr"] for g in pr["spec"]["groups"] for r in g["rules"]]
    used = {s.name for e in exprs for s in selectors(parse(e))}
    used = {n for n in used if not n.startswith("gregor:")}  # recording rules, checked above
    b = make_broker()
    with _HTTP.open(f"http://127.0.0.1:{b.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    known = set(families)
    for name, kind in families.items():
        if kind == "histogram":
            known |= {name + "_bucket", name + "_sum", name + "_count"}
    assert used <= known, f"not in /metrics: {sorted(used - known)}"
    # The alerts' inputs are there on a healthy single broker (its own active controller).
    for name, value in [("gregor_raft_is_leader", "1"), ("gregor_offline_partitions", "0"),
                        ("gregor_under_replicated_partitions", "0"),
                        ("gregor_isr_shrinks_total", "0")]:
        assert re.search(rf"^{name} {value}$", text, re.M), name
