"""Runs the Java proto-test programs (proto-tests/java/src) and Kafka's own CLI tools from the
jars that scripts/install-java-deps.sh puts in .deps/java/jars/<pom hash> (Kafka 4.x from Maven
Central).

    java_main("gregor.prototests.AdminCheck", bootstrap, prefix)   -> CompletedProcess (text)
    kafka_tool("kafka-topics", broker, "--list")                   -> CompletedProcess (text)
    sections(proc)                                                 -> {name: (passed, message)}

A Java program prints "PASS name" / "FAIL name: message" per section (see Checks.java) and exits
non-zero when any section failed. To add a tool, put its main class in TOOLS.
"""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
JAVA_POM = REPO / "proto-tests" / "java" / "pom.xml"
# Where scripts/install-java-deps.sh puts the pom's jars: a directory per version of the pom.
JAVA_LIB = REPO / ".deps" / "java" / "jars" / hashlib.sha256(JAVA_POM.read_bytes()).hexdigest()[:16]
JAVA_CLASSES = REPO / ".deps" / "java" / "classes"
JAVA_SRC = REPO / "proto-tests" / "java" / "src"

# Kafka 4.x main classes of the bin/kafka-*.sh scripts (checked in the 4.3 jars).
TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-configs": "kafka.admin.ConfigCommand",                    # still in kafka_2.13
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-dump-log": "org.apache.kafka.tools.DumpLogSegments",      # no broker needed
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
    "kafka-storage": "kafka.tools.StorageTool",
    "kafka-server-start": "kafka.Kafka",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
}

# Short-lived JVMs: C1 only and the serial GC start fastest on 2 cores; slf4j-simple at warn.
JVM_OPTS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss1m", "-Xmx512m",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.logFile=System.err"]


def _java():
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java") or "java"


def require_java():
    """Fails the test (with the fix) when the jars are missing. Returns the directory of the
    compiled test programs: one per version of their sources (a hash of paths and contents),
    compiled on first use, so that worktrees sharing .deps never overwrite each other's."""
    if not (JAVA_LIB / ".complete").exists():
        pytest.fail(f"Kafka jars missing from {JAVA_LIB}: run scripts/install-java-deps.sh")
    sources = sorted(JAVA_SRC.rglob("*.java"))
    digest = hashlib.sha256()
    digest.update(JAVA_LIB.name.encode())  # the jars compiled against
    for src in sources:
        digest.update(str(src.relative_to(JAVA_SRC)).encode() + b"\0" + src.read_bytes() + b"\0")
    out = JAVA_CLASSES / digest.hexdigest()[:16]
    if (out / ".compiled").exists():
        return out
    JAVA_CLASSES.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=JAVA_CLASSES, prefix=".javac-"))
    javac = shutil.which("javac") or "javac"
    res = subprocess.run([javac, "-nowarn", "-encoding", "UTF-8", "--release", "17",
                          "-cp", f"{JAVA_LIB}/*", "-d", str(tmp), *map(str, sources)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"javac failed:\n{res.stdout}{res.stderr}")
    (tmp / ".compiled").touch()
    try:
        tmp.rename(out)
    except OSError:  # compiled meanwhile by another run: theirs is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def java_classpath():
    """The classpath of the test programs and the Kafka jars (compiling them if needed)."""
    return f"{require_java()}{os.pathsep}{JAVA_LIB}/*"


def _run(cmd, input, timeout, check, what):
    try:
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                             stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{what} timed out after {timeout}s\nstdout: {_tail(e.stdout)}\n"
                             f"stderr: {_tail(e.stderr)}") from None
    if check and res.returncode != 0:
        raise AssertionError(f"{what} exited {res.returncode}\nstdout: {_tail(res.stdout)}\n"
                             f"stderr: {_tail(res.stderr)}")
    return res


def _tail(s, n=4000):
    if isinstance(s, bytes):
        s = s.decode(errors="replace")
    return (s or "")[-n:]


def java_main(main, *args, input=None, timeout=180, check=False, jvm_opts=()):
    """Runs a class from proto-tests/java/src (compiled on demand) with the Kafka jars."""
    cp = java_classpath()
    cmd = [_java(), *JVM_OPTS, *jvm_opts, "-cp", cp, main, *map(str, args)]
    return _run(cmd, input, timeout, check, f"java {main} {' '.join(map(str, args))}")


def kafka_tool(tool, broker=None, *args, input=None, timeout=120, check=True, jvm_opts=()):
    """Runs a Kafka CLI tool (a TOOLS name or a main class) as bin/<tool>.sh would, with
    `--bootstrap-server` added when a broker is given. Returns the CompletedProcess (text)."""
    require_java()
    main = TOOLS.get(tool, tool)
    bootstrap = ["--bootstrap-server", broker.bootstrap] if broker is not None else []
    cmd = [_java(), *JVM_OPTS, *jvm_opts, "-cp", f"{JAVA_LIB}/*", main, *bootstrap,
           *map(str, args)]
    return _run(cmd, input, timeout, check, f"{tool} {' '.join(map(str, args))}")


_SECTION = re.compile(r"^(PASS|FAIL) (\S+)(?:: (.*)| \(\d+ ms\))?$")


def sections(proc):
    """{section: (passed, message)} from a Java check program's stdout."""
    out = {}
    for line in proc.stdout.splitlines():
        m = _SECTION.match(line)
        if m:
            out[m.group(2)] = (m.group(1) == "PASS", m.group(3) or "")
    return out


def assert_section(proc, name):
    """Asserts that section `name` of a finished Java check program passed."""
    got = sections(proc)
    if name not in got:
        raise AssertionError(f"section {name} never ran (exit {proc.returncode})\n"
                             f"stdout: {_tail(proc.stdout)}\nstderr: {_tail(proc.stderr)}")
    passed, msg = got[name]
    if not passed:
        # the stack trace of this section, from stderr
        err = proc.stderr
        i = err.find(f"---- {name} ----")
        if i >= 0:
            j = err.find("\n---- ", i + 1)
            trace = err[i:j if j >= 0 else len(err)][:4000]
        else:
            trace = _tail(err)
        raise AssertionError(f"{name}: {msg}\n{trace}")
