#!/usr/bin/env python3
"""Broker CPU of a 1,000-partition consumer's fetch loop, with and without KIP-227 incremental
fetch sessions (issue 13's closing note).

Starts one Gregor broker (GREGOR_BIN, default target/release/gregor), creates a topic of
BENCH_FETCH_PARTITIONS partitions (default 1000) with one record in each, then for each mode
(franz-go with sessions, franz-go with -no-sessions) and each load (idle; light traffic:
BENCH_FETCH_RATE records/s, default 200, spread over the partitions by a confluent-kafka
producer) runs .deps/bin/franz-fetch polling every partition for BENCH_FETCH_SECONDS (default
30). It reports the broker's CPU (utime + stime from /proc/<pid>/stat) over that time, the Fetch
requests it served (from /metrics) and the CPU per fetch above the broker's own idle CPU (measured first,
with no client). It reports; it never fails on a number.

  .deps/venv/bin/python scripts/bench_fetch_sessions.py
"""
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "proto-tests"))

from confluent_kafka import Producer  # noqa: E402

from clients import create_topic  # noqa: E402
from conftest import Broker  # noqa: E402

PARTITIONS = int(os.environ.get("BENCH_FETCH_PARTITIONS", "1000"))
SECONDS = float(os.environ.get("BENCH_FETCH_SECONDS", "30"))
RATE = float(os.environ.get("BENCH_FETCH_RATE", "200"))
FRANZ_FETCH = REPO / ".deps/bin/franz-fetch"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def fetches(broker):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(int(n) for n in re.findall(r"^gregor_fetch_requests_total\{[^}]*\} (\d+)$",
                                          text, re.M))


def traffic(broker, topic, stop):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": 1})
    i = 0
    start = time.monotonic()
    while not stop.is_set():
        p.produce(topic, b"light-%d" % i, partition=i % PARTITIONS)
        p.poll(0)
        i += 1
        time.sleep(max(0.0, start + i / RATE - time.monotonic()))
    p.flush(10)


def baseline(broker):
    """The broker's own CPU with no client (Raft heartbeats, timers), in % of a core."""
    cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
    time.sleep(SECONDS)
    return (cpu_seconds(broker.pid) - cpu0) / (time.monotonic() - t0) * 100


def run(broker, topic, sessions, light, idle_cpu):
    stop = threading.Event()
    load = threading.Thread(target=traffic, args=(broker, topic, stop)) if light else None
    args = [str(FRANZ_FETCH), "-brokers", broker.bootstrap, "-topic", topic,
            "-partitions", str(PARTITIONS), "-for", f"{SECONDS + 5}s"]
    if not sessions:
        args.append("-no-sessions")
    client = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    time.sleep(5)  # connect, list offsets, first full fetch
    if load:
        load.start()
    cpu0, f0, t0 = cpu_seconds(broker.pid), fetches(broker), time.monotonic()
    time.sleep(SECONDS)
    cpu1, f1, t1 = cpu_seconds(broker.pid), fetches(broker), time.monotonic()
    stop.set()
    if load:
        load.join()
    client.communicate(timeout=60)
    cpu, n, secs = cpu1 - cpu0, f1 - f0, t1 - t0
    fetch_cpu = max(0.0, cpu - idle_cpu / 100 * secs)
    return cpu / secs * 100, n / secs, (fetch_cpu / n * 1e6 if n else 0.0)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(tmp).start()
        try:
            topic = "bench-fetch-sessions"
            create_topic(broker, topic, partitions=PARTITIONS)
            p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
            for i in range(PARTITIONS):
                p.produce(topic, b"seed", partition=i)
            p.flush(30)
            del p
            idle_cpu = baseline(broker)
            print(f"{PARTITIONS} partitions, {SECONDS:.0f} s per run, franz-go consumer; "
                  f"light traffic = {RATE:.0f} records/s; the broker alone (no client) uses "
                  f"{idle_cpu:.2f}% of a core, subtracted in CPU per fetch\n")
            print("| load | fetch sessions | broker CPU | fetches/s | CPU per fetch |")
            print("|---|---|---|---|---|")
            for light in (False, True):
                for sessions in (True, False):
                    cpu, rate, per = run(broker, topic, sessions, light, idle_cpu)
                    print(f"| {'light' if light else 'idle'} | {'on' if sessions else 'off'} "
                          f"| {cpu:.1f}% | {rate:.1f} | {per:.0f} µs |", flush=True)
        finally:
            broker.stop(timeout=60)  # 1,000 partitions to close


if __name__ == "__main__":
    main()
