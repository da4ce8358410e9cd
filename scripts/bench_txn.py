"""The TXN workload of scripts/bench-vs-kafka.sh (issue 14): transactional produce with the
Java client (bench/kafka/TxnProducerBench.java), 1 KiB records, acks=all, linger 5 ms, lz4,
6 partitions, on one broker:

  TXN-0      the same producer without transactions (idempotent only): the baseline
  TXN-100    a commit every 100 records
  TXN-10000  a commit every 10,000 records

Each on a topic of its own, after the usual warm-up. The harness (bench_vs_kafka) passes itself
in, so this module adds a workload without a second copy of its broker handling.
"""
import re

GiB = 1 << 30
TXN_SIZES = (0, 100, 10_000)
SOURCE = "bench/kafka/TxnProducerBench.java"


def txn_bytes(scale):
    return int(GiB // 4 * scale)


def run_txn(bv, kind, workdir):
    b = bv.make_broker(kind, workdir).start()
    try:
        bv.warm_up(b)
        n = max(10_000, txn_bytes(bv.SCALE) // 1024)
        out = {}
        for size in TXN_SIZES:
            topic = f"txn{size}"
            bv.create_topic(b, topic)
            out[f"TXN-{size}"] = bv.measure(b, lambda: _produce(bv, b, topic, n, size))
        return out
    finally:
        b.stop(kill=True)


def _produce(bv, b, topic, n, size):
    stdout, cpu = bv.java_tool(str(bv.REPO / SOURCE), b.bootstrap, topic, n, 1024, size)
    m = re.search(r"RESULT records=(\d+) seconds=([\d.]+) transactions=(\d+)", stdout)
    if not m:
        raise RuntimeError(f"unexpected TxnProducerBench output: {stdout[-2000:]}")
    records, secs, txns = int(m.group(1)), float(m.group(2)), int(m.group(3))
    return {"messages": records, "msgs_per_s": round(records / secs, 1),
            "mb_per_s": round(records * 1024 / 1e6 / secs, 2),
            "txns_per_s": round(txns / secs, 1), "seconds": secs, "client_cpu_s": cpu}
