#!/usr/bin/env bash
# Installs every test dependency this project needs (idempotent), checks the Dockerfile and the
# Helm chart, builds the broker, and runs the whole suite: Rust unit and integration tests, then
# the real-client proto-tests (which include the chart's rendering and StatefulSet-args tests).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# the Dockerfile and the Helm chart: hadolint, helm lint, helm template | kubeconform
scripts/check-chart.sh

export CARGO_TERM_COLOR=never
cargo build --release --locked
cargo test --release --locked
# the chat example (proto-tests/test_chat.py); target/rdkafka is shared with bench/
cargo build --release --locked --manifest-path examples/chat/Cargo.toml --target-dir target/rdkafka

export GREGOR_BIN="$PWD/target/release/gregor"
# screenshots of the console and of a trace (proto-tests/browser.py)
export GREGOR_TEST_ARTIFACTS="$PWD/target/test-artifacts"
# The proto-tests mostly wait on brokers and clients (a serial run keeps 2 cores a quarter busy),
# so three pytest-xdist workers share them, each taking whole modules (module-scoped brokers stay
# shared); conftest.py gives each worker its own port range and starts the longest modules first.
.deps/venv/bin/python -m pytest proto-tests -q -p no:cacheprovider \
    -n "${PROTO_TESTS_WORKERS:-3}" --dist loadfile --durations=25
