#!/usr/bin/env bash
# Gregor and Apache Kafka side by side on this machine, with the same client and workloads
# (issue 7): W1-W6 plus Kafka's own perf-test tools, and SEC (the cost of TLS and of ACLs),
# alternating Gregor/Kafka, 3 repetitions.
# Writes docs/bench/REPORT.md, PNG charts and results.json. It reports; it never fails on a
# number (a failed run is recorded in the report), and it is not part of .ci/run.
#
#   scripts/bench-vs-kafka.sh                     full size (about 35-45 minutes on 2 cores,
#                                                 of which SEC about 10)
#   BENCH_SCALE=0.05 BENCH_REPS=1 scripts/bench-vs-kafka.sh      a smoke run (a few minutes)
#   BENCH_WORKLOADS=SEC BENCH_MERGE=1 scripts/bench-vs-kafka.sh  SEC alone, merged into the
#                                                 existing results.json (other runs kept)
#   scripts/bench-vs-kafka.sh --report-only       re-render the report from results.json
#
# What it installs, by itself: Apache Kafka's jars from Maven Central only
# (mvn dependency:copy-dependencies with bench/kafka/pom.xml, into .deps/kafka-bench/), the
# gregor-bench load generator (bench/, the rdkafka crate), and matplotlib in .deps/bench-venv.
# Needs a JDK 17+, Maven, and OpenSSL's headers for librdkafka's TLS plus the openssl CLI for
# SEC's certificates (installed from Debian's packages when missing).
#
# Environment: BENCH_SCALE, BENCH_REPS, BENCH_WORKLOADS (W1,W2,W3,W4,W5,W6,PERF,SEC), BENCH_OUT,
# BENCH_MERGE, BENCH_SEC_MODES, BENCH_W6_KAFKA, KAFKA_HEAP (1g), KAFKA_VERSION (the pom's),
# GREGOR_BIN; see scripts/bench_vs_kafka.py.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${BENCH_OUT:-docs/bench}
VENV=.deps/bench-venv
POM=bench/kafka/pom.xml

setup_python() {
    if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.8,<4'
    fi
}

if [ "${1:-}" = "--report-only" ]; then
    setup_python
    exec "$VENV/bin/python" scripts/bench_vs_kafka_report.py "$OUT"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1 \
        || ! command -v openssl >/dev/null 2>&1 || ! pkg-config --exists openssl 2>/dev/null; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        maven default-jdk-headless openssl libssl-dev pkg-config
fi

# Apache Kafka: the broker, the storage tool and the perf-test tools, one classpath.
KAFKA_VERSION=${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")}
KAFKA_LIB=.deps/kafka-bench/kafka-$KAFKA_VERSION
if ! ls "$KAFKA_LIB"/kafka_2.13-"$KAFKA_VERSION".jar "$KAFKA_LIB"/kafka-tools-"$KAFKA_VERSION".jar \
        >/dev/null 2>&1 || [ ! -f "$KAFKA_LIB/.complete" ]; then
    rm -rf "$KAFKA_LIB"
    mkdir -p "$KAFKA_LIB"
    log=$(mktemp)
    if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
            dependency:copy-dependencies -DoutputDirectory="$PWD/$KAFKA_LIB" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    touch "$KAFKA_LIB/.complete"
fi

setup_python

GREGOR_BIN=${GREGOR_BIN:-target/release/gregor}
[ -x "$GREGOR_BIN" ] || cargo build --release --locked
# target/rdkafka: shared with examples/chat (gregor-bench's librdkafka has OpenSSL, chat's
# does not, so each has its own build of it there)
cargo build --release -q --manifest-path bench/Cargo.toml --target-dir target/rdkafka

export KAFKA_LIB GREGOR_BIN BENCH_OUT="$OUT" BENCH_BIN=target/rdkafka/release/gregor-bench
"$VENV/bin/python" scripts/bench_vs_kafka.py
"$VENV/bin/python" scripts/bench_vs_kafka_report.py "$OUT"
