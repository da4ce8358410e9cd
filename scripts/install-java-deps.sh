#!/usr/bin/env bash
# Installs what the Java proto-tests need, from Maven Central only: the Apache Kafka client,
# CLI tools and broker jars (for DumpLogSegments) with their runtime dependencies, pinned in
# proto-tests/java/pom.xml, into .deps/java/lib/; then compiles proto-tests/java/src with plain
# javac into .deps/java/classes/. Safe to run again: it skips what is already there. Needs a
# JDK 17+ and Maven (installed from Debian's packages when missing; root or sudo then).
set -euo pipefail
cd "$(dirname "$0")/.."

POM=proto-tests/java/pom.xml
SRC=proto-tests/java/src
LIB=.deps/java/lib
CLASSES=.deps/java/classes

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        maven default-jdk-headless
fi

# Jars: fetched again only when the pom changes (or a jar went missing).
STAMP=$LIB/.pom.sha256
want=$(sha256sum "$POM" | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] \
        || ! ls "$LIB"/kafka-clients-*.jar "$LIB"/kafka-tools-*.jar "$LIB"/kafka_2.13-*.jar \
            >/dev/null 2>&1; then
    rm -rf "$LIB"
    mkdir -p "$LIB"
    log=$(mktemp)
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
            -DoutputDirectory="$PWD/$LIB" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    echo "$want" > "$STAMP"
fi

# Test programs: recompiled when any source is newer than the stamp (or the jars changed).
CSTAMP=$CLASSES/.compiled
if [ ! -f "$CSTAMP" ] || [ "$STAMP" -nt "$CSTAMP" ] \
        || [ -n "$(find "$SRC" -name '*.java' -newer "$CSTAMP" -print -quit)" ]; then
    rm -rf "$CLASSES"
    mkdir -p "$CLASSES"
    find "$SRC" -name '*.java' -print0 \
        | xargs -0 javac -nowarn -encoding UTF-8 --release 17 -cp "$LIB/*" -d "$CLASSES"
    touch "$CSTAMP"
fi

echo "java test deps ready: $(ls "$LIB" | grep -E "^kafka(-clients|-tools|_2\.13)-[0-9]" | tr '\n' ' ')"
