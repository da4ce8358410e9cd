#!/usr/bin/env python3
"""How long the web console's pages take on a cluster with many partitions (issue 16).

Starts three Gregor brokers on loopback (proto-tests/cluster.py, GREGOR_BIN), creates
BENCH_CONSOLE_TOPICS topics (default 10) of BENCH_CONSOLE_PARTITIONS partitions each (default
100: 1,000 partitions, RF 3), writes a few messages to every partition, runs a consumer group
over the first topic, then loads every console page through a broker that is not the
controller: REPS server responses timed over HTTP (time to the last byte), and each page once
in headless Chromium (Navigation Timing: responseEnd and loadEventEnd). Prints a Markdown table.
It reports; it never fails on a number.

  .deps/venv/bin/python scripts/bench_console.py
"""
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "proto-tests"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from cluster import Cluster, wait_until  # noqa: E402

TOPICS = int(os.environ.get("BENCH_CONSOLE_TOPICS", "10"))
PARTITIONS = int(os.environ.get("BENCH_CONSOLE_PARTITIONS", "100"))
REPS = int(os.environ.get("BENCH_CONSOLE_REPS", "10"))
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def timed_get(url):
    t = time.perf_counter()
    with _HTTP.open(url, timeout=60) as r:
        body = r.read()
        assert r.status == 200, (url, r.status)
    return time.perf_counter() - t, len(body)


def main():
    work = Path(tempfile.mkdtemp(prefix="gregor-console-bench-"))
    c = Cluster(work, 3)
    consumer = None
    try:
        c.start()
        names = [f"load-{i:02d}" for i in range(TOPICS)]
        t = time.monotonic()
        admin = AdminClient({"bootstrap.servers": c.bootstrap})
        for f in admin.create_topics([NewTopic(n, PARTITIONS, 3) for n in names],
                                     operation_timeout=60, request_timeout=120).values():
            f.result(120)
        c.wait_fully_replicated(names, timeout=300)
        created_s = time.monotonic() - t
        p = Producer({"bootstrap.servers": c.bootstrap, "linger.ms": 20})
        for n in names:
            for part in range(PARTITIONS):
                for i in range(3):
                    p.produce(n, value=f'{{"n": {i}}}'.encode(), partition=part)
            p.poll(0)
        assert p.flush(120) == 0
        consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "console-bench",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([names[0]])
        wait_until(lambda: consumer.poll(0.5) is not None and consumer.assignment(), 60,
                   "the group's member is assigned")
        # A committed offset on every partition: the group page lists lag for all of them.
        consumer.commit(offsets=[TopicPartition(names[0], part, 1) for part in range(PARTITIONS)],
                        asynchronous=False)
        time.sleep(12)  # two sampler rounds, for the group's lag chart and the throughput page
        controller = c.controller()
        node = c.node(next(i for i in sorted(c.nodes) if i != controller))
        base = f"http://127.0.0.1:{node.admin_port}"
        pages = [("cluster", "/console/cluster"), ("topics", "/console/topics"),
                 (f"topic ({PARTITIONS} partitions)", f"/console/topics/{names[-1]}"),
                 ("groups", "/console/groups"), ("group", "/console/groups/console-bench"),
                 ("messages", f"/console/messages?topic={names[-1]}&partition=7&offset=0"),
                 ("throughput", "/console/throughput")]
        rows = []
        from browser import Browser
        b = Browser()
        try:
            for label, path in pages:
                timed_get(base + path)  # warm connections to the peers
                times, size = [], 0
                for _ in range(REPS):
                    dt, size = timed_get(base + path)
                    times.append(dt * 1000)
                b.open(base + path)
                nav = b.driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "return [n.responseEnd, n.loadEventEnd];")
                rows.append((label, statistics.median(times), max(times), size, nav))
        finally:
            b.close()
        print(f"3 brokers, {TOPICS} topics x {PARTITIONS} partitions = {TOPICS * PARTITIONS} "
              f"partitions (RF 3, {TOPICS * PARTITIONS * 3} replicas; created and fully "
              f"replicated in {created_s:.1f} s), read through broker {node.node_id} "
              f"(controller: {controller}); {REPS} requests per page; load average "
              f"{os.getloadavg()[0]:.1f}\n")
        print("| page | server, median (ms) | server, max (ms) | HTML size | Chromium: response end / load event (ms) |")
        print("|---|---|---|---|---|")
        for label, med, mx, size, nav in rows:
            print(f"| {label} | {med:.1f} | {mx:.1f} | {size / 1024:.0f} KiB | "
                  f"{nav[0]:.0f} / {nav[1]:.0f} |")
    finally:
        if consumer is not None:
            consumer.close()
        c.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
