"""TRACE (issue 16): what OpenTelemetry tracing costs Gregor on W1's produce, for
scripts/bench_vs_kafka.py (the runs) and scripts/bench_vs_kafka_report.py (the section).

Each run is a fresh single Gregor broker and a fresh Jaeger v2 (.deps/bin/jaeger, built by
scripts/install-test-deps.sh; in-memory storage) on loopback, both started in every mode so the
machine carries the same processes. W1's warm-up and W1's produce (2 GiB of 1 KiB messages,
acks=1, linger 5 ms, lz4, 6 partitions, 2 producers) are run in each mode:

  OFF      no OTEL_* variables: tracing off (the default)
  0        export on over OTLP http/protobuf, OTEL_TRACES_SAMPLER=parentbased_traceidratio,
           OTEL_TRACES_SAMPLER_ARG=0: every request span is created and dropped
  1        the same at 1% (OTEL_TRACES_SAMPLER_ARG=0.01)
  100      the same at 100% (every request, with its append child spans, exported to Jaeger)
  1HDRX    1%, with every message carrying a W3C traceparent header (flags 00: its producer
           did not sample it), on a topic without gregor.trace.headers: the header is not
           looked for in the compressed batches (the producer's cost of headers, and 6% more
           bytes)
  1HDR     the same on a topic with gregor.trace.headers=true: each compressed batch's first
           record is decompressed to find the header, and the request follows its parent's
           decision (not sampled). Against 1HDRX, the cost of reading the headers.

W1 sends few, large requests (about 400 Produce requests a second), so what tracing costs per
request hardly shows in it. Each mode but 1HDR then also runs, on the same broker, a load of many
small requests: gregor-bench's e2e at 20,000 messages/s of 100 bytes, linger 0, acks=1, for
TRACE_R_SECONDS (15) seconds, and reports the broker's CPU per request (Produce and Fetch, from
/metrics).

Apache Kafka has no broker-side tracing to compare with; TRACE runs on Gregor only. The modes
run in turn, reversed every other repetition. Results: TRACE-<tag>-P (W1) and TRACE-<tag>-R.
"""
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JAEGER_BIN = Path(os.environ.get("JAEGER_BIN", REPO / ".deps" / "bin" / "jaeger"))
# (tag, sampler ratio or None for tracing off, traceparent headers on the messages, read by the
# broker: the topics have gregor.trace.headers=true)
TRACE_MODES = [("OFF", None, False, False), ("0", 0.0, False, False), ("1", 0.01, False, False),
               ("100", 1.0, False, False), ("1HDRX", 0.01, True, False),
               ("1HDR", 0.01, True, True)]
_only = [m.strip().upper() for m in os.environ.get("BENCH_TRACE_MODES", "").split(",") if m.strip()]
if _only:
    TRACE_MODES = [m for m in TRACE_MODES if m[0] in _only]
# An unsampled W3C trace context (version 00, flags 00), as a producer that traced but did not
# sample the message would send it.
UNSAMPLED_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
R_SECONDS = float(os.environ.get("TRACE_R_SECONDS", "15"))

JAEGER_CONFIG = """
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
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger:
    def __init__(self, workdir, free_ports):
        self.workdir = Path(workdir)
        self.otlp_grpc, self.otlp_http, self.query_http, self.query_grpc = free_ports(4)
        self.proc = None

    def start(self, timeout=60):
        if not JAEGER_BIN.exists():
            raise RuntimeError(f"{JAEGER_BIN} missing: run scripts/install-test-deps.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "jaeger.yaml"
        config.write_text(JAEGER_CONFIG.format(otlp_grpc=self.otlp_grpc, otlp_http=self.otlp_http,
                                               query_http=self.query_http,
                                               query_grpc=self.query_grpc))
        with open(self.workdir / "jaeger.log", "ab") as logf:
            self.proc = subprocess.Popen([str(JAEGER_BIN), "--config", f"file:{config}"],
                                         stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jaeger exited: see {self.workdir / 'jaeger.log'}")
            try:
                self.get("/api/services")
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError("jaeger's query API did not answer")

    def get(self, path):
        import json
        with _HTTP.open(f"http://127.0.0.1:{self.query_http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def services(self):
        return self.get("/api/services").get("data") or []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def requests_served(broker):
    """Requests the broker has answered (gregor_requests_total over every API)."""
    with _HTTP.open(f"http://127.0.0.1:{broker.aport}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(int(float(v)) for v in
               re.findall(r"^gregor_requests_total\{[^}]*\} (\S+)$", text, re.M))


def otel_env(jaeger, ratio):
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{jaeger.otlp_http}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "gregor-bench",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}"}


def run_trace(bvk, workdir, tag, ratio, headers, read):
    """One TRACE mode on a fresh broker (bvk: the bench_vs_kafka module): W1's warm-up, then
    W1's produce, measured."""
    jaeger = Jaeger(Path(workdir) / "jaeger", bvk.free_ports).start()
    b = bvk.GregorSingle(Path(workdir) / "gregor")
    for k in list(b.env):
        if k.startswith("OTEL_"):
            del b.env[k]
    if ratio is not None:
        b.env.update(otel_env(jaeger, ratio))
    if read:  # the broker-wide default of the topic config
        b.env["GREGOR_KAFKA_GREGOR_TRACE_HEADERS"] = "true"
    try:
        b.start()
        extra = ("--traceparent", UNSAMPLED_TRACEPARENT) if headers else ()
        for topic in ("warmup", "trace"):
            bvk.create_topic(b, topic)
        bvk.bench(b, "produce", "--topic", "warmup", "--bytes", bvk.WARMUP_BYTES, "--msg-size",
                  1024, "--acks", "1", "--linger-ms", 5, "--compression", "lz4",
                  "--producers", bvk.PRODUCERS, *extra)
        p = bvk.measure(b, lambda: bvk.bench(
            b, "produce", "--topic", "trace", "--bytes", bvk.W1_BYTES, "--msg-size", 1024,
            "--acks", "1", "--linger-ms", 5, "--compression", "lz4",
            "--producers", bvk.PRODUCERS, *extra))
        p["sampler_ratio"] = -1 if ratio is None else ratio
        p["traceparent_headers"] = int(headers)
        # Whether spans reached Jaeger (the batch exporter sends every 5 s).
        seen = False
        deadline = time.monotonic() + (8 if ratio else 0)
        while not seen:
            seen = "gregor-bench" in jaeger.services()
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        p["jaeger_has_broker_spans"] = int(seen)
        out = {f"TRACE-{tag}-P": p}
        if not headers:
            bvk.create_topic(b, "small")
            before = requests_served(b)
            r = bvk.measure(b, lambda: bvk.bench(
                b, "e2e", "--topic", "small", "--rate", 20000, "--seconds", R_SECONDS,
                "--warmup-s", 2, "--msg-size", 100, "--acks", "1", "--linger-ms", 0))
            r["requests"] = requests_served(b) - before
            r["broker_cpu_us_per_request"] = round(r["broker_cpu_s"] / r["requests"] * 1e6, 2)
            out[f"TRACE-{tag}-R"] = r
        return out
    finally:
        b.stop(kill=True)
        jaeger.stop()


# --- the report ----------------------------------------------------------------------------

MODE_TEXT = {"OFF": "tracing off", "0": "on, 0% sampled", "1": "on, 1% sampled",
             "100": "on, 100% sampled", "1HDRX": "on, 1%, traceparent headers not read",
             "1HDR": "on, 1%, traceparent headers read (lz4 decompressed)"}
GOAL = 0.03  # tracing on at 1% costs under 3% of W1


def trace_section(runs, values, cell, median):
    """The TRACE section of REPORT.md (helpers from bench_vs_kafka_report)."""
    present = [m[0] for m in TRACE_MODES if any(r["workload"] == f"TRACE-{m[0]}-P" for r in runs)]
    if "OFF" not in present:
        return []
    L = ["## Tracing: the cost of OpenTelemetry export (TRACE)\n",
         "W1's produce on a fresh Gregor with a fresh Jaeger v2 (in-memory) receiving OTLP "
         "http/protobuf, sampler `parentbased_traceidratio`; see scripts/bench_trace.py. "
         "Gregor only (Apache Kafka has no broker-side tracing). Cost = the mode's median over "
         "tracing off's: throughput lost, and broker CPU seconds added per GB.\n",
         "| mode | produce MB/s | vs off | broker CPU (s) | broker CPU per GB (s) | vs off | "
         "spans reached Jaeger |",
         "|---|---|---|---|---|---|---|"]
    off_mb = median(values(runs, "TRACE-OFF-P", "gregor", "mb_per_s"))
    off_cpu = median(values(runs, "TRACE-OFF-P", "gregor", "cpu_s_per_gb"))
    for t in present:
        w = f"TRACE-{t}-P"
        mb = median(values(runs, w, "gregor", "mb_per_s"))
        cpu = median(values(runs, w, "gregor", "cpu_s_per_gb"))
        dmb = f"{(mb / off_mb - 1):+.1%}" if mb and off_mb and t != "OFF" else "–"
        dcpu = f"{(cpu / off_cpu - 1):+.1%}" if cpu and off_cpu and t != "OFF" else "–"
        seen = values(runs, w, "gregor", "jaeger_has_broker_spans")
        L.append(f"| {MODE_TEXT[t]} | {cell(values(runs, w, 'gregor', 'mb_per_s'))} | {dmb} | "
                 f"{cell(values(runs, w, 'gregor', 'broker_cpu_s'))} | "
                 f"{cell(values(runs, w, 'gregor', 'cpu_s_per_gb'))} | {dcpu} | "
                 f"{'yes' if seen and max(seen) else 'no'} |")
    hx = median(values(runs, "TRACE-1HDRX-P", "gregor", "cpu_s_per_gb"))
    hr = median(values(runs, "TRACE-1HDR-P", "gregor", "cpu_s_per_gb"))
    if hx and hr:
        L += ["", f"Reading the traceparent of compressed batches (`gregor.trace.headers=true`, "
              f"1HDR against 1HDRX, the same messages): {hr - hx:+.3f} broker CPU s per GB "
              f"({hr / hx - 1:+.1%})."]
    small = [t for t in present if any(r["workload"] == f"TRACE-{t}-R" for r in runs)]
    if "OFF" in small:
        L += ["", "Many small requests (20,000 messages/s of 100 bytes, linger 0, acks=1, "
              "producer and consumer in one process), on the same broker after W1:\n",
              "| mode | requests | broker CPU per request (µs) | vs off | end-to-end p99 (ms) |",
              "|---|---|---|---|---|"]
        off_us = median(values(runs, "TRACE-OFF-R", "gregor", "broker_cpu_us_per_request"))
        for t in small:
            w = f"TRACE-{t}-R"
            us = median(values(runs, w, "gregor", "broker_cpu_us_per_request"))
            d = f"{(us / off_us - 1):+.1%}" if us and off_us and t != "OFF" else "–"
            L.append(f"| {MODE_TEXT[t]} | {cell(values(runs, w, 'gregor', 'requests'))} | "
                     f"{cell(values(runs, w, 'gregor', 'broker_cpu_us_per_request'))} | {d} | "
                     f"{cell(values(runs, w, 'gregor', 'p99_ms'))} |")
    one = median(values(runs, "TRACE-1-P", "gregor", "mb_per_s"))
    if one and off_mb:
        cost = 1 - one / off_mb
        L.append("")
        L.append(f"Goal: tracing on at 1% sampling costs under {GOAL:.0%} of W1's throughput: "
                 f"it costs {cost:.1%} ({'met' if cost < GOAL else '**missed**'}; a negative "
                 "cost is a run faster than tracing off, within the noise).\n")
    return L
