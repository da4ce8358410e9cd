#!/usr/bin/env bash
# Single-broker benchmark: starts a fresh Gregor, produces BENCH_BYTES (default 1 GiB) of
# BENCH_MSG_SIZE (1 KiB) messages to a 6-partition topic with acks=1, consumes it all back,
# and prints throughput, produce latency, and the broker's peak RSS and CPU time.
# It reports; it never fails on a number. Comparing with Apache Kafka: scripts/bench-vs-kafka.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES=${BENCH_BYTES:-1073741824}
MSG=${BENCH_MSG_SIZE:-1024}
PARTITIONS=${BENCH_PARTITIONS:-6}
ACKS=${BENCH_ACKS:-1}
COMPRESSION=${BENCH_COMPRESSION:-none}

cargo build --release --locked -q
# target/rdkafka: shared with examples/chat, so librdkafka compiles once for both
cargo build --release -q --manifest-path bench/Cargo.toml --target-dir target/rdkafka
GREGOR=target/release/gregor
BENCH=target/rdkafka/release/gregor-bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
port=$(free_port); cport=$(free_port); aport=$(free_port)
GREGOR_KAFKA_NUM_PARTITIONS=$PARTITIONS "$GREGOR" serve --data-dir "$work/data" \
  --listen 127.0.0.1:$port --controller-listen 127.0.0.1:$cport --admin-listen 127.0.0.1:$aport \
  2> "$work/gregor.log" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 300); do grep -q "gregor ready" "$work/gregor.log" && break; sleep 0.05; done

cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$pid/stat"; }
# Peak RSS counts file pages mapped for reads (page cache the kernel can drop at will);
# RssAnon is the broker's own memory.
peak_rss_mb() { awk '/VmHWM/ {h=$2} /RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "%.1f (now: anon %.1f, file-backed %.1f)", h/1024, a/1024, f/1024}' "/proc/$pid/status"; }

echo "gregor bench: $((BYTES / 1048576)) MiB of ${MSG}-byte messages, $PARTITIONS partitions, acks=$ACKS, compression=$COMPRESSION"
topic=bench-$RANDOM
"$BENCH" --bootstrap 127.0.0.1:$port produce --topic "$topic" --bytes "$BYTES" --msg-size "$MSG" \
  --acks "$ACKS" --compression "$COMPRESSION"
echo "broker after produce: cpu_s=$(cpu_seconds) peak_rss_mb=$(peak_rss_mb)"
"$BENCH" --bootstrap 127.0.0.1:$port consume --topic "$topic" --messages $((BYTES / MSG))
echo "broker after consume: cpu_s=$(cpu_seconds) peak_rss_mb=$(peak_rss_mb)"
