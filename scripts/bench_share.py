"""The SHARE workload of scripts/bench-vs-kafka.sh (issue 15): share-group (KIP-932)
consumption of one partition by 1, 3 and 10 Java KafkaShareConsumers
(bench/kafka/ShareConsumerBench.java), on one broker.

A single-partition topic is created empty; one share group per consumer count is primed while
it is empty (so the default `share.auto.offset.reset=latest` starts each group at offset 0);
then SHARE_RECORDS * scale records of 1 KiB are produced (acks=1, linger 5 ms, lz4), and each
group in turn consumes all of them with its count of consumers (implicit acknowledgement).
The time of each count runs from the consumers' creation to the last distinct offset seen, so
it includes their joining the group. Results: SHARE-1, SHARE-3, SHARE-10 (records/s, MB/s,
redeliveries); the broker's CPU and memory are over the whole program (priming, produce and the
three consumptions).

The harness (bench_vs_kafka) passes itself in, as for TXN.
"""
import re

SHARE_COUNTS = (1, 3, 10)
SHARE_RECORDS = 400_000
SOURCE = "bench/kafka/ShareConsumerBench.java"


def share_records(scale):
    return max(10_000, int(SHARE_RECORDS * scale))


def run_share(bv, kind, workdir):
    b = bv.make_broker(kind, workdir).start()
    try:
        bv.warm_up(b)
        topic = "share1p"
        bv.create_topic(b, topic, partitions=1)
        n = share_records(bv.SCALE)
        return _split(bv.measure(b, lambda: _consume(bv, b, topic, n)))
    finally:
        b.stop(kill=True)


def _consume(bv, b, topic, n):
    counts = ",".join(map(str, SHARE_COUNTS))
    stdout, cpu = bv.java_tool(str(bv.REPO / SOURCE), b.bootstrap, topic, n, 1024, counts)
    per_count = {}
    for m in re.finditer(r"RESULT consumers=(\d+) records=(\d+) seconds=([\d.]+) "
                         r"deliveries=(\d+)", stdout):
        c, records, secs, deliveries = int(m[1]), int(m[2]), float(m[3]), int(m[4])
        per_count[c] = {"consumers": c, "messages": records,
                        "msgs_per_s": round(records / secs, 1),
                        "mb_per_s": round(records * 1024 / 1e6 / secs, 2),
                        "redeliveries": deliveries - records, "seconds": secs}
    if sorted(per_count) != sorted(SHARE_COUNTS):
        raise RuntimeError(f"unexpected ShareConsumerBench output: {stdout[-2000:]}")
    return {"per_count": per_count, "client_cpu_s": cpu}


def _split(result):
    """One result per consumer count; the broker's resource use goes with each."""
    shared = {k: v for k, v in result.items() if k != "per_count"}
    return {f"SHARE-{c}": {**m, **shared} for c, m in result["per_count"].items()}
