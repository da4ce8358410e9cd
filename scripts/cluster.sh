#!/usr/bin/env bash
# A local Gregor cluster on 127.0.0.1, for people and for tests.
#
#   scripts/cluster.sh start N        start brokers 1..N (Kafka 19092, 19192, 19292, ...)
#   scripts/cluster.sh stop           SIGTERM every broker and wait
#   scripts/cluster.sh kill ID        kill -9 one broker
#   scripts/cluster.sh start-node ID  start one broker again (it rejoins and catches up)
#   scripts/cluster.sh status         pid, readiness and Raft status of each broker
#
# Broker ID listens for Kafka on 127.0.0.1:(19092 + 100*(ID-1)), for Raft on +1 and for the
# admin HTTP API on +552 (19644, 19744, ...). Data lives in $CLUSTER_DIR (./cluster-data).
# Overrides: GREGOR_BIN, CLUSTER_DIR, CLUSTER_SIZE (the voter count, remembered by `start`),
# CLUSTER_PORT_BASE (19092); extra Kafka settings as GREGOR_KAFKA_* pass through.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_DIR=${CLUSTER_DIR:-./cluster-data}
PORT_BASE=${CLUSTER_PORT_BASE:-19092}
GREGOR_BIN=${GREGOR_BIN:-target/release/gregor}

kafka_port() { echo $((PORT_BASE + 100 * ($1 - 1))); }
raft_port() { echo $(($(kafka_port "$1") + 1)); }
admin_port() { echo $(($(kafka_port "$1") + 552)); }
node_dir() { echo "$CLUSTER_DIR/node-$1"; }

cluster_size() {
    if [ -n "${CLUSTER_SIZE:-}" ]; then echo "$CLUSTER_SIZE";
    elif [ -f "$CLUSTER_DIR/size" ]; then cat "$CLUSTER_DIR/size";
    else echo 3; fi
}

voters() {
    local n; n=$(cluster_size); local v=""
    for id in $(seq 1 "$n"); do v="$v${v:+,}$id@127.0.0.1:$(raft_port "$id")"; done
    echo "$v"
}

is_running() {
    local pidfile; pidfile="$(node_dir "$1")/pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start_node() {
    local id=$1 dir; dir=$(node_dir "$id")
    mkdir -p "$dir"
    if is_running "$id"; then echo "node $id already running (pid $(cat "$dir/pid"))"; return; fi
    "$GREGOR_BIN" serve --node-id "$id" --data-dir "$dir/data" \
        --listen "127.0.0.1:$(kafka_port "$id")" \
        --controller-listen "127.0.0.1:$(raft_port "$id")" \
        --admin-listen "127.0.0.1:$(admin_port "$id")" \
        --voters "$(voters)" >>"$dir/gregor.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "node $id: pid $!, kafka 127.0.0.1:$(kafka_port "$id"), log $dir/gregor.log"
}

wait_ready() {
    local id=$1
    for _ in $(seq 1 300); do
        if curl -fs "http://127.0.0.1:$(admin_port "$id")/health/ready" >/dev/null 2>&1; then return 0; fi
        if ! is_running "$id"; then echo "node $id exited; see $(node_dir "$id")/gregor.log" >&2; return 1; fi
        sleep 0.1
    done
    echo "node $id not ready after 30 s" >&2
    return 1
}

case "${1:-}" in
start)
    n=${2:?usage: cluster.sh start N}
    [ -x "$GREGOR_BIN" ] || cargo build --release --locked
    mkdir -p "$CLUSTER_DIR"
    echo "$n" >"$CLUSTER_DIR/size"
    for id in $(seq 1 "$n"); do start_node "$id"; done
    for id in $(seq 1 "$n"); do wait_ready "$id"; done
    echo "cluster of $n ready: bootstrap 127.0.0.1:$(kafka_port 1)"
    ;;
stop)
    for dir in "$CLUSTER_DIR"/node-*; do
        [ -f "$dir/pid" ] || continue
        pid=$(cat "$dir/pid")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for dir in "$CLUSTER_DIR"/node-*; do
        [ -f "$dir/pid" ] || continue
        pid=$(cat "$dir/pid")
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    done
    echo "stopped"
    ;;
kill)
    id=${2:?usage: cluster.sh kill ID}
    if is_running "$id"; then kill -9 "$(cat "$(node_dir "$id")/pid")"; echo "killed node $id"; else echo "node $id not running"; fi
    rm -f "$(node_dir "$id")/pid"
    ;;
start-node)
    id=${2:?usage: cluster.sh start-node ID}
    start_node "$id"
    wait_ready "$id"
    ;;
status)
    for id in $(seq 1 "$(cluster_size)"); do
        if is_running "$id"; then
            ready=$(curl -fs "http://127.0.0.1:$(admin_port "$id")/health/ready" 2>/dev/null || echo "not ready")
            raft=$(curl -fs "http://127.0.0.1:$(admin_port "$id")/raft/status" 2>/dev/null || echo "")
            echo "node $id: pid $(cat "$(node_dir "$id")/pid"), $ready ${raft}"
        else
            echo "node $id: down"
        fi
    done
    ;;
*)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
