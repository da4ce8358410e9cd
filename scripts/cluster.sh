#!/usr/bin/env bash
# A local Gregor cluster on 127.0.0.1, for people and for tests.
#
#   scripts/cluster.sh start N        start brokers 1..N (Kafka 19092, 19192, 19292, ...)
#   scripts/cluster.sh stop           SIGTERM every broker and wait
#   scripts/cluster.sh kill ID        kill -9 one broker
#   scripts/cluster.sh start-node ID  start one broker again (it rejoins and catches up)
#   scripts/cluster.sh grow N         scale out to N brokers: start each new one, add it to the
#                                     metadata quorum as a learner, then promote it to voter
#   scripts/cluster.sh status         pid, readiness and Raft status of each broker
#
# Broker ID listens for Kafka on 127.0.0.1:(19092 + 100*(ID-1)), for Raft on +1 and for the
# admin HTTP API on +552 (19644, 19744, ...). Data lives in $CLUSTER_DIR (./cluster-data).
# Overrides: GREGOR_BIN, CLUSTER_DIR, CLUSTER_SIZE (the voter count, remembered by `start`),
# CLUSTER_PORT_BASE (19092); extra Kafka settings as GREGOR_KAFKA_* pass through.
#
# CLUSTER_SECURITY=sasl_ssl scripts/cluster.sh start 3   (remembered by `start`, like the size)
#   SASL_SSL on every plane: clients, replication between brokers (PLAIN, as User:admin) and
#   the Raft plane (CONTROLLER:SASL_SSL), with the StandardAuthorizer and super.users=User:admin.
#   Made once, with openssl, in $CLUSTER_DIR/tls: a dev CA (ca.pem) and one broker certificate
#   for localhost and 127.0.0.1 (broker-keystore.pem: key + chain). PLAIN users admin
#   (admin-secret) and alice (alice-secret). Client settings for admin:
#   $CLUSTER_DIR/client-admin.properties (Kafka CLI tools: --command-config) and
#   $CLUSTER_DIR/kcat-admin.conf (kcat -F); `start` prints ready-to-paste command lines.
#   Each node's settings are in $CLUSTER_DIR/node-ID/gregor.toml. The admin HTTP port stays
#   plain. CLUSTER_SECURITY=none (the default) runs every plane in PLAINTEXT, as before.
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

# none or sasl_ssl: CLUSTER_SECURITY for `start`, else what `start` remembered.
security_mode() {
    local mode
    if [ -n "${CLUSTER_SECURITY:-}" ]; then mode=$CLUSTER_SECURITY;
    elif [ -f "$CLUSTER_DIR/security" ]; then mode=$(cat "$CLUSTER_DIR/security");
    else mode=none; fi
    case "$mode" in
        none|sasl_ssl) echo "$mode" ;;
        *) echo "CLUSTER_SECURITY must be none or sasl_ssl, not $mode" >&2; return 1 ;;
    esac
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

# --- CLUSTER_SECURITY=sasl_ssl ----------------------------------------------------------------

ADMIN_PASSWORD=admin-secret
ALICE_PASSWORD=alice-secret
PLAIN_LOGIN=org.apache.kafka.common.security.plain.PlainLoginModule

abs_dir() { (cd "$1" && pwd); }

# A dev CA and a broker certificate (SANs localhost, 127.0.0.1), made once.
make_tls() {
    local tls="$CLUSTER_DIR/tls"
    [ -f "$tls/broker-keystore.pem" ] && [ -f "$tls/ca.pem" ] && return 0
    command -v openssl >/dev/null || { echo "CLUSTER_SECURITY=sasl_ssl needs openssl" >&2; return 1; }
    mkdir -p "$tls"
    (
        cd "$tls"
        umask 077
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
        openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=gregor-dev/CN=Gregor dev CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out broker.key 2>/dev/null
        openssl req -new -key broker.key -subj "/O=gregor-dev/CN=localhost" -out broker.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            > broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
            -sha256 -extfile broker.ext -out broker.crt 2>/dev/null
        # Kafka's PEM keystore: the private key, then the certificate chain, in one file
        cat broker.key broker.crt ca.pem > broker-keystore.pem
        rm -f broker.csr broker.ext ca.srl
        chmod 644 ca.pem broker.crt
    )
    echo "made a dev CA and a broker certificate (localhost, 127.0.0.1) in $tls"
}

jaas_admin() {  # the brokers' PLAIN JAAS: users admin and alice; the brokers are admin
    printf '%s required username="admin" password="%s" user_admin="%s" user_alice="%s";' \
        "$PLAIN_LOGIN" "$ADMIN_PASSWORD" "$ADMIN_PASSWORD" "$ALICE_PASSWORD"
}

# Client settings for admin: a Kafka CLI --command-config file and a kcat -F file.
write_client_files() {
    local ca; ca="$(abs_dir "$CLUSTER_DIR/tls")/ca.pem"
    (
        umask 077
        cat > "$CLUSTER_DIR/client-admin.properties" <<PROPS
# Kafka CLI tools as admin: kafka-topics.sh --bootstrap-server 127.0.0.1:$(kafka_port 1) --command-config $CLUSTER_DIR/client-admin.properties
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=$PLAIN_LOGIN required username="admin" password="$ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$ca
PROPS
        cat > "$CLUSTER_DIR/kcat-admin.conf" <<CONF
# kcat as admin: kcat -F $CLUSTER_DIR/kcat-admin.conf -b 127.0.0.1:$(kafka_port 1) -L
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=admin
sasl.password=$ADMIN_PASSWORD
ssl.ca.location=$ca
CONF
    )
}

# Node ID's gregor.toml: its SASL_SSL listener and the settings every node shares.
write_node_config() {
    local id=$1 tls; tls="$(abs_dir "$CLUSTER_DIR/tls")"
    (
        umask 077
        cat > "$(node_dir "$id")/gregor.toml" <<TOML
# Written by scripts/cluster.sh (CLUSTER_SECURITY=sasl_ssl); rewritten on every start.
[kafka]
"listeners" = "SASL_SSL://127.0.0.1:$(kafka_port "$id")"
"listener.security.protocol.map" = "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL"
"inter.broker.listener.name" = "SASL_SSL"
"sasl.mechanism.inter.broker.protocol" = "PLAIN"
"sasl.enabled.mechanisms" = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
"ssl.keystore.type" = "PEM"
"ssl.keystore.location" = "$tls/broker-keystore.pem"
"ssl.truststore.type" = "PEM"
"ssl.truststore.location" = "$tls/ca.pem"
"listener.name.sasl_ssl.plain.sasl.jaas.config" = '$(jaas_admin)'
"listener.name.controller.plain.sasl.jaas.config" = '$(jaas_admin)'
"authorizer.class.name" = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
"super.users" = "User:admin"
TOML
    )
}

print_client_commands() {
    local b="127.0.0.1:$(kafka_port 1)" dir; dir=$(abs_dir "$CLUSTER_DIR")
    cat <<TXT
SASL_SSL on every plane; users admin ($ADMIN_PASSWORD, super user) and alice ($ALICE_PASSWORD); CA $dir/tls/ca.pem
  kcat -F $dir/kcat-admin.conf -b $b -L
  echo hello | kcat -F $dir/kcat-admin.conf -b $b -P -t demo
  kcat -F $dir/kcat-admin.conf -b $b -C -t demo -o beginning -e
  kafka-topics.sh --bootstrap-server $b --command-config $dir/client-admin.properties --list
  kafka-configs.sh --bootstrap-server $b --command-config $dir/client-admin.properties \\
    --alter --add-config 'SCRAM-SHA-512=[password=alice-scram]' --entity-type users --entity-name alice
  kafka-acls.sh --bootstrap-server $b --command-config $dir/client-admin.properties \\
    --add --allow-principal User:alice --operation All --topic demo
  echo hi | kcat -b $b -X security.protocol=SASL_SSL -X ssl.ca.location=$dir/tls/ca.pem \\
    -X sasl.mechanisms=PLAIN -X sasl.username=alice -X sasl.password=$ALICE_PASSWORD -P -t demo
  # SCRAM-SHA-512: -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.password=alice-scram (kcat linked
  # with librdkafka >= 2.6.1; older ones, such as Debian's kcat 1.7.0, are refused, as by Kafka 4)
TXT
}

# ----------------------------------------------------------------------------------------------

start_node() {
    local id=$1 dir config=(); dir=$(node_dir "$id")
    mkdir -p "$dir"
    if is_running "$id"; then echo "node $id already running (pid $(cat "$dir/pid"))"; return; fi
    if [ "$(security_mode)" = sasl_ssl ]; then
        write_node_config "$id"
        config=(--config "$dir/gregor.toml")
    fi
    "$GREGOR_BIN" serve --node-id "$id" --data-dir "$dir/data" \
        --listen "127.0.0.1:$(kafka_port "$id")" \
        --controller-listen "127.0.0.1:$(raft_port "$id")" \
        --admin-listen "127.0.0.1:$(admin_port "$id")" \
        --voters "$(voters)" "${config[@]}" >>"$dir/gregor.log" 2>&1 &
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
    mode=$(security_mode)
    [ -x "$GREGOR_BIN" ] || cargo build --release --locked
    mkdir -p "$CLUSTER_DIR"
    echo "$n" >"$CLUSTER_DIR/size"
    echo "$mode" >"$CLUSTER_DIR/security"
    if [ "$mode" = sasl_ssl ]; then make_tls; write_client_files; fi
    for id in $(seq 1 "$n"); do start_node "$id"; done
    for id in $(seq 1 "$n"); do wait_ready "$id"; done
    echo "cluster of $n ready: bootstrap 127.0.0.1:$(kafka_port 1)"
    if [ "$mode" = sasl_ssl ]; then print_client_commands; fi
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
grow)
    n=${2:?usage: cluster.sh grow N}
    old=$(cluster_size)
    [ "$n" -gt "$old" ] || { echo "the cluster already has $old brokers" >&2; exit 1; }
    for id in $(seq $((old + 1)) "$n"); do
        # The new node lists the current voters and itself; it waits until it is added.
        CLUSTER_SIZE=$id start_node "$id"
        "$GREGOR_BIN" admin --admin-url "http://127.0.0.1:$(admin_port 1)" \
            add-learner "$id" "127.0.0.1:$(raft_port "$id")" >/dev/null
        "$GREGOR_BIN" admin --admin-url "http://127.0.0.1:$(admin_port 1)" promote "$id" >/dev/null
        echo "$id" >"$CLUSTER_DIR/size"
        wait_ready "$id"
        echo "node $id joined the quorum as a voter"
    done
    echo "cluster of $n ready; existing partitions stay where they are until reassigned"
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
    sed -n '2,28p' "$0"
    exit 2
    ;;
esac
