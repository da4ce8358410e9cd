"""A real Jaeger v2 (.deps/bin/jaeger, built by scripts/install-test-deps.sh from the Go module
proxy) with in-memory storage, on loopback ports of its own: OTLP over gRPC and HTTP in, the
query API out. `Jaeger(workdir).start()`; `trace(trace_id)` reads one trace from the query API
(`/api/traces/<id>`) as {"spans": [...], "processes": {...}}; `stop()` ends it by pid.
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import REPO, free_ports

JAEGER_BIN = Path(os.environ.get("JAEGER_BIN", REPO / ".deps" / "bin" / "jaeger"))
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))

CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 200000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.otlp_grpc, self.otlp_http, self.query_http, self.query_grpc = free_ports(4)
        self.proc = None
        self.log_path = self.workdir / "jaeger.log"

    @property
    def otlp_http_endpoint(self):
        return f"http://127.0.0.1:{self.otlp_http}"

    @property
    def otlp_grpc_endpoint(self):
        return f"http://127.0.0.1:{self.otlp_grpc}"

    def start(self, timeout=60):
        assert JAEGER_BIN.exists(), f"{JAEGER_BIN} missing: run scripts/install-test-deps.sh"
        config = self.workdir / "jaeger.yaml"
        config.write_text(CONFIG.format(otlp_grpc=self.otlp_grpc, otlp_http=self.otlp_http,
                                        query_http=self.query_http, query_grpc=self.query_grpc))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(JAEGER_BIN), "--config", f"file:{config}"],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "jaeger exited\n" + self.log_tail()
            try:
                self.get("/api/services")
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError("jaeger's query API did not answer\n" + self.log_tail())

    def get(self, path):
        with _HTTP.open(f"http://127.0.0.1:{self.query_http}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def trace(self, trace_id):
        """The trace's spans and processes, or None while Jaeger has none of it."""
        try:
            data = self.get(f"/api/traces/{trace_id}").get("data") or []
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        return data[0] if data else None

    def traces(self, service, limit=20):
        return self.get(f"/api/traces?service={service}&limit={limit}&lookback=1h").get("data") or []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def span_tags(span):
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def service_of(trace, span):
    return trace["processes"][span["processID"]]["serviceName"]


def parent_of(span):
    for ref in span.get("references", []):
        if ref.get("refType") == "CHILD_OF":
            return ref["spanID"]
    return None


def waterfall_html(trace, title):
    """A trace from Jaeger's query API drawn as a waterfall (Jaeger's UI is not part of the
    binary the Go module proxy builds), for a picture of what the trace holds."""
    import html
    spans = sorted(trace["spans"], key=lambda s: s["startTime"])
    by_id = {s["spanID"]: s for s in spans}

    def depth(s):
        d, p = 0, parent_of(s)
        while p in by_id and d < 20:
            d, p = d + 1, parent_of(by_id[p])
        return d

    ordered, seen = [], set()

    def visit(s):
        if s["spanID"] in seen:
            return
        seen.add(s["spanID"])
        ordered.append(s)
        for c in spans:
            if parent_of(c) == s["spanID"]:
                visit(c)

    for s in spans:
        if parent_of(s) not in by_id:
            visit(s)
    t0 = min(s["startTime"] for s in spans)
    t1 = max(s["startTime"] + s["duration"] for s in spans)
    total = max(t1 - t0, 1)
    colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
    services = sorted({service_of(trace, s) for s in spans})
    rows = []
    for s in ordered:
        service = service_of(trace, s)
        left = 100.0 * (s["startTime"] - t0) / total
        width = max(100.0 * s["duration"] / total, 0.4)
        tags = span_tags(s)
        detail = ", ".join(f"{k}={tags[k]}" for k in sorted(tags) if k.startswith("messaging."))
        rows.append(
            f'<tr><td style="padding-left:{8 + 18 * depth(s)}px"><b>{html.escape(service)}</b> '
            f'{html.escape(s["operationName"])}<div class="d">{html.escape(detail)}</div></td>'
            f'<td class="bar"><div style="margin-left:{left:.2f}%;width:{width:.2f}%;'
            f'background:{colours[services.index(service) % len(colours)]}"></div>'
            f'<span>{s["duration"] / 1000:.2f} ms</span></td></tr>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px sans-serif;margin:20px;color:#222}} table{{border-collapse:collapse;width:100%}}
td{{border-bottom:1px solid #eee;padding:6px 8px;vertical-align:top}} td.bar{{width:55%}}
td.bar div{{height:14px;border-radius:3px}} td.bar span{{font-size:11px;color:#666}}
.d{{font-size:11px;color:#777;max-width:640px}}</style></head><body>
<h2>{html.escape(title)}</h2><p>trace {trace["traceID"]}: {len(spans)} spans from {', '.join(map(html.escape, services))},
{total / 1000:.2f} ms (from Jaeger's query API)</p><table>{''.join(rows)}</table></body></html>"""
