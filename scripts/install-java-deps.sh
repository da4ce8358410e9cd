#!/usr/bin/env bash
# Installs what the Java proto-tests need, from Maven Central only: the Apache Kafka client,
# CLI tools, broker and Streams jars with their runtime dependencies, pinned in
# proto-tests/java/pom.xml, into .deps/java/jars/<hash of the pom>/ (proto-tests/javatools.py
# finds them there by the same hash, and compiles proto-tests/java/src with plain javac on first
# use). One directory per pom, so worktrees that share .deps never take each other's jars
# away. Safe to run again: it skips what is already there. Needs a JDK 17+ and Maven (installed
# from Debian's packages when missing; root or sudo then).
set -euo pipefail
cd "$(dirname "$0")/.."

POM=proto-tests/java/pom.xml

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        maven default-jdk-headless
fi

# Jars: fetched once per version of the pom.
want=$(sha256sum "$POM" | cut -d' ' -f1)
LIB=.deps/java/jars/${want:0:16}
if [ ! -f "$LIB/.complete" ]; then
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
    touch "$LIB/.complete"
fi

echo "java test deps ready: $(ls "$LIB" | grep -E "^kafka(-clients|-tools|_2\.13)-[0-9]" | tr '\n' ' ')"
