#!/usr/bin/env python3
"""Renders the Gregor vs Apache Kafka benchmark (results.json from scripts/bench_vs_kafka.py)
into REPORT.md and PNG charts in the same directory:

    .deps/bench-venv/bin/python scripts/bench_vs_kafka_report.py docs/bench

The hand-written findings (profiles, explanations) live in FINDINGS.md next to the report and
are included at its end, so re-rendering never loses them.
"""
import json
import statistics
import sys
from pathlib import Path

import bench_trace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"gregor": "#2a9d8f", "kafka": "#6c757d"}

# (workload, key, label, better, goal) -- goal: (kind, value, text), kind "ratio>=" / "ratio<="
# compares Gregor/Kafka; "abs<" compares Gregor's own median.
METRICS = [
    ("W1", "mb_per_s", "produce throughput (MB/s)", "higher", ("ratio>=", 1.5, "≥ 1.5×")),
    ("W1", "msgs_per_s", "produce throughput (msgs/s)", "higher", ("ratio>=", 1.5, "≥ 1.5×")),
    ("W1", "p99_ms", "produce ack latency p99 (ms)", "lower", None),
    ("W1", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("W1", "client_cpu_s", "load generator CPU (s)", "lower", None),
    ("W1", "cpu_s_per_gb", "broker CPU per GB (s)", "lower", None),
    ("W1", "broker_peak_rss_mb", "broker peak RSS (MB)", "lower", None),
    ("W1", "broker_rss_anon_max_mb", "broker RssAnon max (MB)", "lower", None),
    ("W1", "broker_rss_file_max_mb", "broker RssFile max (MB)", "lower", None),
    ("W1", "stored_mb", "W1's segment files on disk (MB)", "lower", None),
    ("W2", "msgs_per_s", "produce throughput (msgs/s)", "higher", ("ratio>=", 1.5, "≥ 1.5×")),
    ("W2", "mb_per_s", "produce throughput (MB/s)", "higher", None),
    ("W2", "p99_ms", "produce ack latency p99 (ms)", "lower", None),
    ("W2", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("W2", "client_cpu_s", "load generator CPU (s)", "lower", None),
    ("W2", "cpu_s_per_gb", "broker CPU per GB (s)", "lower", None),
    ("W2", "broker_peak_rss_mb", "broker peak RSS (MB)", "lower", None),
    ("W2", "broker_rss_anon_max_mb", "broker RssAnon max (MB)", "lower", None),
    ("W3", "mb_per_s", "consume throughput (MB/s)", "higher", ("ratio>=", 1.5, "≥ 1.5×")),
    ("W3", "msgs_per_s", "consume throughput (msgs/s)", "higher", None),
    ("W3", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("W3", "client_cpu_s", "load generator CPU (s)", "lower", None),
    ("W3", "cpu_s_per_gb", "broker CPU per GB (s)", "lower", None),
    ("W3", "broker_peak_rss_mb", "broker peak RSS (MB)", "lower", None),
    ("W3", "broker_rss_anon_max_mb", "broker RssAnon max (MB)", "lower", None),
    ("W3", "broker_rss_file_max_mb", "broker RssFile max (MB)", "lower", None),
    ("W4", "p50_ms", "end-to-end p50 (ms)", "lower", None),
    ("W4", "p99_ms", "end-to-end p99 (ms)", "lower", ("ratio<=", 0.5, "≤ 0.5×")),
    ("W4", "p999_ms", "end-to-end p99.9 (ms)", "lower", None),
    ("W4", "max_ms", "end-to-end max (ms)", "lower", None),
    ("W4", "ack_p99_ms", "produce ack p99 (ms)", "lower", None),
    ("W4", "rate", "achieved send rate (msgs/s)", "higher", None),
    ("W4", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("W4", "broker_peak_rss_mb", "broker peak RSS (MB)", "lower", None),
    ("W4", "broker_rss_anon_max_mb", "broker RssAnon max (MB)", "lower", None),
    ("W4b", "p50_ms", "end-to-end p50 (ms)", "lower", None),
    ("W4b", "p99_ms", "end-to-end p99 (ms)", "lower", None),
    ("W4b", "p999_ms", "end-to-end p99.9 (ms)", "lower", None),
    ("W4b", "max_ms", "end-to-end max (ms)", "lower", None),
    ("W4b", "rate", "achieved send rate (msgs/s)", "higher", None),
    ("W4b", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("W5", "rss_mb", "idle RSS, 100 topics × 6 partitions (MB)", "lower", ("ratio<=", 0.05, "≤ 1/20")),
    ("W5", "rss_anon_mb", "idle RssAnon (MB)", "lower", None),
    ("W5", "rss_file_mb", "idle RssFile (MB)", "lower", None),
    ("W5", "startup_ms", "restart to first acked produce, 600 partitions (ms)", "lower", ("abs<", 100, "< 100 ms")),
    ("W5", "startup_empty_ms", "empty broker to first acked produce, auto-created topic (ms)", "lower", ("abs<", 100, "< 100 ms")),
    ("W5", "ready_ms_logged", "restart to 'gregor ready', Gregor's log (ms)", "lower", None),
    ("W5", "create_topics_s", "create 100 topics × 6 partitions (s)", "lower", None),
    ("W5", "broker_cpu_s", "broker CPU, creating topics + idle (s)", "lower", None),
    ("W5", "rss_after_restart_mb", "RSS after the restart (MB)", "lower", None),
    ("W6", "mb_per_s", "produce throughput, 3 nodes RF 3 acks=all (MB/s)", "higher", None),
    ("W6", "msgs_per_s", "produce throughput (msgs/s)", "higher", None),
    ("W6", "p99_ms", "produce ack latency p99 (ms)", "lower", None),
    ("W6", "broker_cpu_s", "CPU of the 3 brokers (s)", "lower", None),
    ("W6", "broker_peak_rss_mb", "sum of the 3 brokers' peak RSS (MB)", "lower", None),
    ("W6r", "mb_per_s", "produce throughput, 3 nodes RF 3 acks=all (MB/s)", "higher", None),
    ("W6r", "msgs_per_s", "produce throughput (msgs/s)", "higher", None),
    ("W6r", "p99_ms", "produce ack latency p99 (ms)", "lower", None),
    ("W6r", "broker_cpu_s", "CPU of the 3 brokers (s)", "lower", None),
    ("W6r", "broker_peak_rss_mb", "sum of the 3 brokers' peak RSS (MB)", "lower", None),
    ("PERF-P", "mb_per_s", "kafka-producer-perf-test (MB/s)", "higher", None),
    ("PERF-P", "msgs_per_s", "kafka-producer-perf-test (msgs/s)", "higher", None),
    ("PERF-P", "p99_ms", "kafka-producer-perf-test p99 (ms)", "lower", None),
    ("PERF-P", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("PERF-C", "mb_per_s", "kafka-consumer-perf-test fetch (MB/s)", "higher", None),
    ("PERF-C", "msgs_per_s", "kafka-consumer-perf-test fetch (msgs/s)", "higher", None),
    ("PERF-C", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("TXN-0", "mb_per_s", "Java producer, no transactions (MB/s)", "higher", None),
    ("TXN-0", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("TXN-100", "mb_per_s", "transactions of 100 records (MB/s)", "higher", None),
    ("TXN-100", "txns_per_s", "transactions of 100 records (commits/s)", "higher", None),
    ("TXN-100", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("TXN-10000", "mb_per_s", "transactions of 10,000 records (MB/s)", "higher", None),
    ("TXN-10000", "txns_per_s", "transactions of 10,000 records (commits/s)", "higher", None),
    ("TXN-10000", "broker_cpu_s", "broker CPU (s)", "lower", None),
    ("SHARE-1", "msgs_per_s", "1 share consumer on 1 partition (records/s)", "higher", None),
    ("SHARE-3", "msgs_per_s", "3 share consumers on 1 partition (records/s)", "higher", None),
    ("SHARE-10", "msgs_per_s", "10 share consumers on 1 partition (records/s)", "higher", None),
    ("SHARE-10", "redeliveries", "10 share consumers: redeliveries", "lower", None),
    ("SHARE-1", "broker_cpu_s", "broker CPU over the SHARE program (s)", "lower", None),
]

WORKLOAD_TEXT = {
    "W1": "produce {W1} of 1 KiB messages, 6 partitions, acks=1, linger 5 ms, lz4",
    "W2": "produce {W2} of 100-byte messages, 6 partitions, acks=1, linger 5 ms, lz4",
    "W3": "consume all of W1 from the beginning (same broker, right after W1)",
    "W4": "{rate} msgs/s of 1 KiB for {secs} s (after {warm} s of warm-up), acks=all, linger 5 ms "
          "(librdkafka's default), no compression, 6 partitions; end-to-end = the send time scheduled "
          "by the fixed rate (stamped in the payload) to receipt by a consumer in the same process",
    "W4b": "W4 with linger 0 (a latency-tuned client: more, smaller requests), {secs_b} s after {warm} s "
           "of warm-up, on the same broker right after W4",
    "W5": "idle broker with {topics} topics × 6 partitions; startup to the first acknowledged produce",
    "W6": "3 brokers on loopback, topic with 6 partitions and RF 3, produce {W6} of 1 KiB, acks=all, linger 5 ms, lz4",
    "W6r": "W6 again, run separately later with a newer Gregor ({rerun_w6})",
    "PERF-P": "kafka-producer-perf-test (ProducerPerformance, Java client), W1's records: acks=1, linger 5 ms, lz4",
    "PERF-C": "kafka-consumer-perf-test (ConsumerPerformance, Java client) reading PERF-P's topic",
    "SEC": "W1's produce ({SEC}, acks=1, 1 KiB, linger 5 ms, lz4, 6 partitions) and W3's consume of "
           "it, over PLAINTEXT, SSL (TLS, server authentication only), SASL_PLAINTEXT (PLAIN) without "
           "an authorizer, and SASL_PLAINTEXT with the StandardAuthorizer and ACLs: see *Security*",
    "TRACE": "W1's produce on Gregor with OpenTelemetry tracing off, and exporting to a Jaeger v2 at "
             "0%, 1% and 100% sampling, and at 1% reading traceparent headers of compressed batches: "
             "see *Tracing*",
    "TXN-0": "the Java producer (bench/kafka/TxnProducerBench.java), {TXN} of 1 KiB records, acks=all, "
             "idempotent, linger 5 ms, lz4, 6 partitions, no transactions",
    "TXN-100": "TXN-0's load in transactions of 100 records (a commit every 100 sends)",
    "TXN-10000": "TXN-0's load in transactions of 10,000 records",
    "SHARE-1": "share groups (KIP-932, bench/kafka/ShareConsumerBench.java): {SHARE} records of 1 KiB "
               "in one partition, consumed by one Java KafkaShareConsumer (implicit acknowledgement); "
               "timed from the consumers' creation, so joining the group counts",
    "SHARE-3": "SHARE-1 with 3 share consumers in one group on the same partition",
    "SHARE-10": "SHARE-1 with 10 share consumers in one group on the same partition",
}

# SEC: (id tag, mode as shown); produce is SEC-<tag>-P, consume SEC-<tag>-C.
SEC_MODES = [("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL"), ("SASL", "SASL_PLAINTEXT"),
             ("ACL", "SASL_PLAINTEXT + ACLs")]

BYTES_PER_MSG = {"W1": 1024, "W2": 100, "W6": 1024, "PERF-P": 1024}


def human_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.2f} {unit}"
    return f"{n} B"


def rerun_text(meta, wid):
    """A workload re-run on its own after the main run (results merged into results.json under
    a workload id of its own, with its binary in meta["reruns"])."""
    r = meta.get("reruns", {}).get(wid)
    if not r:
        return ""
    return (f"`{r['gregor_commit']}`, binary built {r['gregor_binary_mtime']} UTC; "
            f"run on {r['date_utc']} UTC")


def derive(run):
    m = run.get("metrics", {})
    w = run["workload"]
    if "broker_cpu_s" in m:
        gb = None
        per_msg = BYTES_PER_MSG.get(w, 1024 if w.startswith(("SEC-", "TRACE-")) and w.endswith("-P")
                                    else None)
        if per_msg and "messages" in m:
            gb = m["messages"] * per_msg / 1e9
        elif "bytes" in m:
            gb = m["bytes"] / 1e9
        if gb:
            m["cpu_s_per_gb"] = round(m["broker_cpu_s"] / gb, 3)
    return run


def values(runs, workload, broker, key):
    return [r["metrics"][key] for r in runs
            if r["ok"] and r["workload"] == workload and r["broker"] == broker
            and isinstance(r.get("metrics", {}).get(key), (int, float)) and r["metrics"][key] >= 0]


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(vals):
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"


def goal_status(goal, g, k):
    if goal is None or g is None:
        return ""
    kind, target, text = goal
    if kind == "abs<":
        return f"{text}: {'met' if g < target else '**missed**'}"
    if k in (None, 0):
        return text
    ratio = g / k
    ok = ratio >= target if kind == "ratio>=" else ratio <= target
    return f"{text}: {'met' if ok else '**missed**'}"


def table(runs):
    lines = ["| workload | metric | Gregor median (min–max) | Kafka median (min–max) | Gregor/Kafka | goal |",
             "|---|---|---|---|---|---|"]
    summary = []
    for w, key, label, better, goal in METRICS:
        g, k = values(runs, w, "gregor", key), values(runs, w, "kafka", key)
        if not g and not k:
            continue
        gm = statistics.median(g) if g else None
        km = statistics.median(k) if k else None
        ratio = f"{gm / km:.2f}×" if gm is not None and km else "–"
        status = goal_status(goal, gm, km)
        lines.append(f"| {w} | {label} | {cell(g)} | {cell(k)} | {ratio} | {status} |")
        if goal:
            summary.append((w, label, goal[2], gm, km, ratio, status))
    return "\n".join(lines), summary


def median(vals):
    return statistics.median(vals) if vals else None


def ratio_text(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


ACL_GOAL = 0.95  # produce with the authorizer on, over produce without it: within 5%


def sec_acl_ratio(runs, broker):
    """Median produce MB/s with the ACL authorizer on over the median without (SASL_PLAINTEXT
    both), or None."""
    off = median(values(runs, "SEC-SASL-P", broker, "mb_per_s"))
    on = median(values(runs, "SEC-ACL-P", broker, "mb_per_s"))
    return on / off if off and on is not None else None


def sec_section(runs, meta):
    """The SEC workload: TLS and ACLs against each broker's PLAINTEXT, and Gregor/Kafka."""
    present = [(t, m) for t, m in SEC_MODES
               if any(r["workload"] in (f"SEC-{t}-P", f"SEC-{t}-C") for r in runs)]
    if not present:
        return []
    sec_meta = meta.get("reruns", {}).get("SEC", meta)
    sizes = sec_meta.get("sizes", meta["sizes"])
    L = ["## Security: the cost of TLS and of ACLs (SEC)\n"]
    if sec_meta is not meta:
        L.append(f"Run separately from the rest of this report: Gregor `{sec_meta['gregor_commit']}` "
                 f"(binary built {sec_meta['gregor_binary_mtime']} UTC), on {sec_meta['date_utc']} UTC, "
                 f"scale {sec_meta['scale']:g}, {sec_meta['reps']} repetitions, "
                 f"{sec_meta.get('wall_s', 0) / 60:.0f} min; 1-minute load average "
                 f"{sec_meta['loadavg_start'][0]:.1f} at the start, "
                 f"{sec_meta.get('loadavg_end', [0])[0]:.1f} at the end.\n")
    if sec_meta.get("scale", 1) < 1:
        L.append(f"> **Scaled down:** `BENCH_SCALE={sec_meta['scale']:g}`: these numbers are a smoke "
                 "test, not a measurement.\n")
    L.append(f"W1's load ({human_bytes(sizes.get('SEC_bytes', sizes['W1_bytes']))} of 1 KiB messages, "
             "acks=1, linger 5 ms, lz4, 6 partitions, "
             f"{sizes.get('producers', 1)} producers), then W3's consume of it "
             f"({sizes.get('consumers', 1)} consumers), on a fresh broker per mode whose only client "
             "listener is the mode's, after the same warm-up as W1 over the same listener. Each "
             "broker's own PLAINTEXT run is the baseline (×PLAINTEXT). Both brokers get the same "
             "settings by Kafka's names (Gregor through `GREGOR_KAFKA_*`):\n")
    L.append("- **SSL**: `listeners=SSL://127.0.0.1:PORT`, `ssl.keystore.type=PEM` with one PEM file "
             "holding the server's key (EC P-256, unencrypted PKCS#8) and certificate chain "
             "(SAN IP:127.0.0.1, DNS:localhost), `ssl.truststore.type=PEM` (the CA), "
             "`ssl.client.auth=none`; made with the `openssl` CLI. The client: librdkafka with "
             "OpenSSL, `security.protocol=SSL`, hostname verification on.")
    L.append("- **SASL_PLAINTEXT**: `sasl.enabled.mechanisms=PLAIN` with the users in "
             "`listener.name.sasl_plaintext.plain.sasl.jaas.config`; the client is user `bench`. "
             "No authorizer.")
    L.append("- **SASL_PLAINTEXT + ACLs**: the same, plus `authorizer.class.name="
             "org.apache.kafka.metadata.authorizer.StandardAuthorizer` and `super.users=User:admin`. "
             "The admin creates the topics and, with Kafka's `AclCommand`, ACLs that allow "
             "`User:bench` WRITE, READ and DESCRIBE on the topics and READ on the consumer group; "
             "`bench` is not a super user, so every produce and fetch goes through the ACLs. "
             "Kafka's controller listener stays PLAINTEXT, where Kafka authorizes its broker's own "
             "registration as `User:ANONYMOUS` (CLUSTER_ACTION), so Kafka's `super.users` also lists "
             "`User:ANONYMOUS`; no client can be anonymous on its SASL listener.\n")
    checks = []
    tls = sorted({r["metrics"]["tls"] for r in runs
                  if r["ok"] and r["workload"].startswith("SEC-SSL") and r["metrics"].get("tls")})
    if tls:
        checks.append(f"`openssl s_client` negotiated {', '.join(tls)} with a verified certificate "
                      "on every SSL run, and a plaintext client was refused")
    if any(r["ok"] and r["metrics"].get("unauthorized_create_refused") for r in runs):
        checks.append("on every ACL run, `User:bench` was refused a topic creation that no ACL "
                      "grants (authorization failed)")
    if checks:
        L.append("Checked on each run: " + "; ".join(checks) + ".\n")
    L.append("Median over the repetitions (min–max). ×PLAINTEXT: the ratio to the same broker's "
             "PLAINTEXT median. Broker CPU per GB: utime + stime over the workload, per GB of "
             "messages.\n")
    L.append("| mode | broker | produce MB/s | ×PLAINTEXT | consume MB/s | ×PLAINTEXT | "
             "broker CPU s/GB, produce | broker CPU s/GB, consume |")
    L.append("|---|---|---|---|---|---|---|---|")
    base = {b: (median(values(runs, "SEC-PLAINTEXT-P", b, "mb_per_s")),
                median(values(runs, "SEC-PLAINTEXT-C", b, "mb_per_s")))
            for b in ("gregor", "kafka")}
    for tag, mode in present:
        meds = {}
        for b in ("gregor", "kafka"):
            p = values(runs, f"SEC-{tag}-P", b, "mb_per_s")
            c = values(runs, f"SEC-{tag}-C", b, "mb_per_s")
            meds[b] = (median(p), median(c))
            L.append(f"| {mode} | {b.capitalize()} | {cell(p)} | {ratio_text(meds[b][0], base[b][0])} | "
                     f"{cell(c)} | {ratio_text(meds[b][1], base[b][1])} | "
                     f"{cell(values(runs, f'SEC-{tag}-P', b, 'cpu_s_per_gb'))} | "
                     f"{cell(values(runs, f'SEC-{tag}-C', b, 'cpu_s_per_gb'))} |")
        L.append(f"| {mode} | **Gregor/Kafka** | {ratio_text(meds['gregor'][0], meds['kafka'][0])} | | "
                 f"{ratio_text(meds['gregor'][1], meds['kafka'][1])} | | | |")
    L.append("")
    if any(t == "ACL" for t, _ in present) and any(t == "SASL" for t, _ in present):
        L.append("**ACL overhead** (goal: produce with the authorizer on within 5% of produce "
                 "without it, same listener and user):\n")
        for b in ("gregor", "kafka"):
            off = median(values(runs, "SEC-SASL-P", b, "mb_per_s"))
            on = median(values(runs, "SEC-ACL-P", b, "mb_per_s"))
            coff = median(values(runs, "SEC-SASL-P", b, "cpu_s_per_gb"))
            con = median(values(runs, "SEC-ACL-P", b, "cpu_s_per_gb"))
            if off and on is not None:
                d = (on / off - 1) * 100
                status = "met" if on / off >= ACL_GOAL else "**missed**"
                cpu = (f"; broker CPU per GB {fmt(con)} against {fmt(coff)} s "
                       f"({(con / coff - 1) * 100:+.1f}%)" if con is not None and coff else "")
                L.append(f"- {b.capitalize()}: {fmt(on)} MB/s with ACLs against {fmt(off)} MB/s "
                         f"without, **{d:+.1f}%** (within 5%: {status}){cpu}.")
            else:
                L.append(f"- {b.capitalize()}: no complete pair of runs.")
        L.append("")
    return L


def chart_throughput(runs, out):
    panels = [("W1", "mb_per_s", "W1 produce 1 KiB\nMB/s"), ("W2", "msgs_per_s", "W2 produce 100 B\nthousand msgs/s"),
              ("W3", "mb_per_s", "W3 consume\nMB/s"), ("W6", "mb_per_s", "W6 3 nodes RF3 acks=all\nMB/s"),
              ("W6r", "mb_per_s", "W6r (W6 re-run,\nnewer Gregor) MB/s"),
              ("PERF-P", "mb_per_s", "producer-perf-test\nMB/s"), ("PERF-C", "mb_per_s", "consumer-perf-test\nMB/s")]
    panels = [p for p in panels if values(runs, p[0], "gregor", p[1]) or values(runs, p[0], "kafka", p[1])]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 1, 3.8))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (w, key, title) in zip(axes, panels):
        scale = 1000 if key == "msgs_per_s" else 1
        for i, broker in enumerate(("gregor", "kafka")):
            vals = [v / scale for v in values(runs, w, broker, key)]
            if not vals:
                continue
            med = statistics.median(vals)
            ax.bar(i, med, color=COLORS[broker], label=broker.capitalize(),
                   yerr=[[med - min(vals)], [max(vals) - med]], capsize=4)
            ax.text(i, med / 2, f"{med:.0f}", ha="center", va="center", fontsize=8,
                    color="white", fontweight="bold")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([0, 1], ["Gregor", "Kafka"], fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle("Throughput (median, bars show min–max over repetitions; higher is better)", fontsize=10)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def chart_latency(runs, out):
    panels = [(w, title) for w, title in
              (("W4", "W4: linger 5 ms"), ("W4b", "W4b: linger 0"))
              if any(r["ok"] and r["workload"] == w for r in runs)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (w, title) in zip(axes[0], panels):
        seen = set()
        for r in runs:
            if not (r["ok"] and r["workload"] == w and r.get("metrics", {}).get("curve")):
                continue
            broker = r["broker"]
            pts = [(1 / (1 - q), v) for q, v in r["metrics"]["curve"] if 0.5 <= q < 1]
            ax.plot([x for x, _ in pts], [v for _, v in pts], marker="o", markersize=3,
                    color=COLORS[broker], alpha=0.8,
                    label=broker.capitalize() if broker not in seen else None)
            seen.add(broker)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([2, 10, 100, 1000, 10000], ["p50", "p90", "p99", "p99.9", "p99.99"])
        ax.set_ylabel("end-to-end latency (ms, log scale)")
        ax.set_title(f"{title}; one line per repetition", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("20k msgs/s of 1 KiB, acks=all: end-to-end latency percentiles (lower is better)",
                 fontsize=10)
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def chart_memory(runs, out):
    workloads = [w for w in ("W1", "W2", "W3", "W4") if values(runs, w, "gregor", "broker_rss_anon_max_mb")]
    have_w5 = values(runs, "W5", "gregor", "rss_mb") or values(runs, "W5", "kafka", "rss_mb")
    if not workloads and not have_w5:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    labels = (["W5 idle"] if have_w5 else []) + workloads
    for i, broker in enumerate(("gregor", "kafka")):
        anon, file_ = [], []
        if have_w5:
            anon.append(statistics.median(values(runs, "W5", broker, "rss_anon_mb") or [0]))
            file_.append(statistics.median(values(runs, "W5", broker, "rss_file_mb") or [0]))
        for w in workloads:
            anon.append(statistics.median(values(runs, w, broker, "broker_rss_anon_max_mb") or [0]))
            file_.append(statistics.median(values(runs, w, broker, "broker_rss_file_max_mb") or [0]))
        xs = [j + (i - 0.5) * 0.38 for j in range(len(labels))]
        ax.bar(xs, anon, width=0.36, color=COLORS[broker], label=f"{broker.capitalize()} RssAnon")
        ax.bar(xs, file_, width=0.36, bottom=anon, color=COLORS[broker], alpha=0.35,
               label=f"{broker.capitalize()} RssFile")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("MB")
    ax.set_title("Broker memory (max during the workload)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    cw = [w for w in ("W1", "W2", "W3", "W4", "W6") if values(runs, w, "gregor", "broker_cpu_s")
          or values(runs, w, "kafka", "broker_cpu_s")]
    for i, broker in enumerate(("gregor", "kafka")):
        meds = [statistics.median(values(runs, w, broker, "broker_cpu_s") or [0]) for w in cw]
        ax.bar([j + (i - 0.5) * 0.38 for j in range(len(cw))], meds, width=0.36,
               color=COLORS[broker], label=broker.capitalize())
    ax.set_xticks(range(len(cw)), cw)
    ax.set_ylabel("CPU seconds (user + system)")
    ax.set_title("Broker CPU per workload (median; lower is better)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "resources.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/bench")
    data = json.loads((out / "results.json").read_text())
    meta, runs = data["meta"], [derive(r) for r in data["runs"]]
    sizes = meta["sizes"]
    tbl, summary = table(runs)
    charts = [c for c in (chart_throughput(runs, out), chart_latency(runs, out), chart_memory(runs, out)) if c]
    failed = [r for r in runs if not r["ok"]]
    reps_done = {}
    for r in runs:
        reps_done.setdefault((r["workload"], r["broker"]), 0)
        reps_done[(r["workload"], r["broker"])] += r["ok"]

    wl = {k: v.format(W1=human_bytes(sizes["W1_bytes"]), W2=human_bytes(sizes["W2_bytes"]),
                      W6=human_bytes(sizes["W6_bytes"]), rate=f"{sizes['W4_rate']:,}",
                      secs=f"{sizes['W4_seconds']:g}", warm=f"{sizes['W4_warmup_s']:g}",
                      secs_b=f"{sizes.get('W4b_seconds', 0):g}",
                      rerun_w6=rerun_text(meta, "W6r"),
                      topics=sizes["W5_topics"],
                      SEC=human_bytes(meta.get("reruns", {}).get("SEC", meta)["sizes"].get(
                          "SEC_bytes", sizes["W1_bytes"])),
                      TXN=human_bytes(meta.get("reruns", {}).get("TXN", meta)["sizes"].get(
                          "TXN_bytes", 0)),
                      SHARE=f'{meta.get("reruns", {}).get("SHARE", meta)["sizes"].get("SHARE_records", 0):,}')
          for k, v in WORKLOAD_TEXT.items()}
    full = meta["scale"] >= 1
    st = [r["metrics"]["stored_mb"] / r["metrics"]["raw_mb"] for r in runs if r["ok"]
          and r["workload"] == "W1" and r["metrics"].get("raw_mb")]
    stored = f"{statistics.median(st):.0%}" if st else "?"
    L = []
    L.append("# Gregor vs Apache Kafka: side-by-side benchmark\n")
    L.append("Generated by `scripts/bench-vs-kafka.sh` (issue 7) on "
             f"{meta['date_utc']} UTC. Re-render from `results.json` with "
             "`scripts/bench-vs-kafka.sh --report-only`.\n")
    L.append("> **Noisy numbers.** This run was taken on a *shared 2-core virtual machine*, "
             "where other work may run alongside (1-minute load average "
             f"{meta['loadavg_start'][0]:.1f} at the start, "
             f"{meta.get('loadavg_end', [0])[0]:.1f} at the end; each run's load is in "
             "`results.json`). The broker, the load generator and, for W6, three brokers share two "
             "cores, so client CPU competes with broker CPU. Treat ratios as indicative, and the "
             "spread (min–max) as part of the result.\n")
    if not full:
        L.append(f"> **Scaled down:** `BENCH_SCALE={meta['scale']:g}` — sizes are "
                 f"{meta['scale']:g}× the issue's (see Workloads), to fit the time budget.\n")
    L.append("## Goals\n")
    L.append("| workload | metric | goal | Gregor | Kafka | Gregor/Kafka | status |")
    L.append("|---|---|---|---|---|---|---|")
    for w, label, goal, gm, km, ratio, status in summary:
        st = status.split(": ", 1)[-1] if status else ""
        L.append(f"| {w} | {label} | {goal} | {fmt(gm)} | {fmt(km)} | {ratio} | {st} |")
    acl = {b: sec_acl_ratio(runs, b) for b in ("gregor", "kafka")}
    if acl["gregor"] is not None or acl["kafka"] is not None:
        st = "–" if acl["gregor"] is None else "met" if acl["gregor"] >= ACL_GOAL else "**missed**"
        L.append(f"| SEC | produce with ACLs ÷ without (each broker's own; see *Security*) | "
                 f"≥ {ACL_GOAL:g}× (within 5%) | {ratio_text(acl['gregor'], 1)} | "
                 f"{ratio_text(acl['kafka'], 1)} | – | {st} |")
    L.append("")
    if (out / "FINDINGS.md").exists():
        L.append("Why a goal is missed, and where the time goes: *Notes on the numbers* and "
                 "*Profiles* at the end of this report.\n")
    L.append("## Setup\n")
    L.append(f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem_gib']} GiB RAM, "
             f"{meta['os']}, Linux {meta['kernel']}. Everything on loopback, data on the same disk.")
    L.append(f"- Apache Kafka {meta['kafka']} (Maven Central jars: `kafka_2.13`, `kafka-server`, "
             f"`kafka-tools`), KRaft combined mode (broker + controller in one process), on "
             f"{meta['java']}. JVM options are those of `bin/kafka-server-start.sh`: "
             f"`{meta['kafka_jvm_opts']}` (heap: Kafka's default 1 GiB). Logging at INFO to a file.")
    L.append(f"- Gregor `{meta['gregor_commit']}` (release binary built {meta['gregor_binary_mtime']} "
             "UTC, copied at the start of the run), single node with default settings.")
    L.append("- Same settings on both: Kafka's defaults for flush (no fsync per message; "
             "`log.flush.interval.messages` unset), retention (168 h, no size limit) and segments "
             "(1 GiB). Each topic is created explicitly with 6 partitions (RF 1; RF 3 in W6). "
             "Kafka's internal topics get RF 1 on a single node.")
    L.append(f"- Load generator: `gregor-bench` (bench/, the `rdkafka` crate with librdkafka "
             f"{meta['librdkafka']}), the same binary and settings for both brokers; second opinion "
             "from Kafka's `kafka-producer-perf-test` / `kafka-consumer-perf-test` (PERF-P, PERF-C). "
             f"Payloads are slices of generated English-like text (as stored after lz4: {stored} of the "
             "raw bytes), keyed over 1024 keys; idempotence off. W1, W2 and W6 run "
             f"{sizes.get('producers', 1)} producer instances in parallel and W3 "
             f"{sizes.get('consumers', 1)} consumers (one librdkafka producer compresses on a "
             "single thread per broker connection, which would make the client, not the broker, "
             "the limit).")
    L.append(f"- Method: each workload runs on a fresh broker with a fresh data directory, alternating "
             f"Gregor, Kafka, Gregor, Kafka, {meta['reps']} repetitions each. Before W1, W2, W4, W6, "
             f"PERF and each SEC mode each broker first takes {human_bytes(sizes['warmup_bytes'])} of the same load "
             f"on a topic of its own ({human_bytes(sizes.get('W6_warmup_bytes', 0))} in W6; JIT "
             "and page cache warm-up; not measured). Broker CPU = utime + "
             "stime from `/proc/PID/stat` over the workload; peak RSS = `VmHWM`, reset through "
             "`/proc/PID/clear_refs` before each workload; RssAnon/RssFile = the largest values "
             "sampled every 100 ms. Gregor reads segments through mmap, so its RssFile is page "
             "cache the kernel can drop at will; RssAnon is its own memory. For Kafka, RssAnon "
             "includes the Java heap. In W6 the figures are summed over the three brokers.")
    L.append(f"- Scale {meta['scale']:g}, {meta['reps']} repetitions, total wall time "
             f"{meta.get('wall_s', 0) / 60:.0f} min.\n")
    L.append("### Workloads\n")
    L.append("| id | workload |")
    L.append("|---|---|")
    for k in ("W1", "W2", "W3", "W4", "W4b", "W5", "W6", "W6r", "PERF-P", "PERF-C", "SEC",
              "TXN-0", "TXN-100", "TXN-10000", "SHARE-1", "SHARE-3", "SHARE-10", "TRACE"):
        if any(r["workload"] == k or (k in ("SEC", "TRACE") and r["workload"].startswith(k + "-"))
               for r in runs):
            L.append(f"| {k} | {wl[k]} |")
    L.append("")
    L.append("## Results\n")
    if tbl.count("\n") > 1:  # not only the header (e.g. a run of SEC alone)
        L.append("Median over the repetitions, with the spread (min–max) in parentheses. "
                 "Gregor/Kafka is the ratio of the medians.\n")
        L.append(tbl)
        L.append("")
    def reps_of(w):
        rerun = meta.get("reruns", {}).get(w.split("-")[0] if w.startswith(("SEC-", "TRACE-"))
                                            else w, meta)
        return rerun.get("reps", meta["reps"])
    incomplete = [f"{w}/{b}: {n} of {reps_of(w)}" for (w, b), n in sorted(reps_done.items())
                  if n < reps_of(w)]
    if incomplete:
        L.append("Runs that did not complete: " + ", ".join(incomplete) + ".\n")
    L.extend(sec_section(runs, meta))
    L.extend(bench_trace.trace_section(runs, values, cell, median))
    if charts:
        L.append("## Charts\n")
        for c in charts:
            L.append(f"![{c}]({c})\n")
    if failed:
        L.append("## Failed runs\n")
        for r in failed:
            err = r.get("error", "").strip().splitlines()
            L.append(f"- {r['workload']} rep {r['rep']} on {r['broker']}: "
                     f"`{(err[0] if err else '?')[:300]}`")
        L.append("")
    findings = out / "FINDINGS.md"
    if findings.exists():
        L.append(findings.read_text().strip() + "\n")
    (out / "REPORT.md").write_text("\n".join(L))
    print(f"wrote {out / 'REPORT.md'} and {', '.join(charts)}")


if __name__ == "__main__":
    main()
