"""kcat -G (balanced consumer groups, librdkafka 2.0.2) against the broker.

Two `kcat -G` processes in one group over a 4-partition topic: the broker keeps Kafka's default
group.initial.rebalance.delay.ms (3000 ms), so both join the group's first generation and each
is assigned two partitions once, with no second rebalance. Together they consume every message
exactly once, the ones produced before they started and the ones after.
"""
import re
import signal
import subprocess
import time
import uuid

from clients import create_topic, produce_all
from targets import make_target  # noqa: F401  (fixture)

PARTITIONS = 4
PER_PARTITION = 50
# Kafka's default, stated so that the reference Kafka (whose harness default is 0) uses it too
BROKER = {"group.initial.rebalance.delay.ms": 3000}
ASSIGNED = re.compile(r"% Group (\S+) rebalanced \(memberid (\S+)\): assigned: (.*)")


class KcatConsumer:
    def __init__(self, broker, group, topic, workdir, name):
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["kcat", "-b", broker.bootstrap, "-G", group, "-u", "-f", "%p|%o|%s\\n",
                 "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
                 "-X", "heartbeat.interval.ms=500", topic],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def records(self):
        """[(partition, offset, value)] consumed so far (complete lines only)."""
        text = self.out_path.read_text()
        return [(int(p), int(o), v) for p, o, v in
                (l.split("|", 2) for l in text.splitlines(keepends=True) if l.endswith("\n"))
                for v in [v.rstrip("\n")]]

    def assignments(self):
        """The partitions of each `assigned:` rebalance kcat reported, in order."""
        out = []
        for line in self.err_path.read_text().splitlines():
            m = ASSIGNED.match(line)
            if m:
                out.append(sorted(int(p) for p in re.findall(r"\[(\d+)\]", m.group(3))))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"kcat ignored SIGTERM\n{self.err_path.read_text()[-2000:]}")
        return self.proc.returncode


def produce_round(broker, topic, round_):
    expected = {}
    for p in range(PARTITIONS):
        values = [f"r{round_}-p{p}-m{i}".encode() for i in range(PER_PARTITION)]
        for offset, v in produce_all(broker, topic, values, partition=p):
            expected[(p, offset)] = v.decode()
    return expected


def wait_for_count(consumers, n, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        got = sum(len(c.records()) for c in consumers)
        if got >= n:
            return
        for c in consumers:
            assert c.proc.poll() is None, f"kcat exited\n{c.err_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, (
            f"{got} of {n} messages consumed after {timeout}s; assignments "
            f"{[c.assignments() for c in consumers]}\n"
            + "\n".join(c.err_path.read_text()[-1500:] for c in consumers))
        time.sleep(0.1)


def test_kcat_balanced_consumers(make_target, topic_name, tmp_path):
    broker = make_target(BROKER)
    create_topic(broker, topic_name, partitions=PARTITIONS)
    expected = produce_round(broker, topic_name, 0)
    group = f"kcat-group-{uuid.uuid4().hex[:8]}"
    consumers = [KcatConsumer(broker, group, topic_name, tmp_path, f"kcat{i}") for i in range(2)]
    try:
        t0 = time.monotonic()
        wait_for_count(consumers, len(expected))
        print(f"kcat -G: both consumers assigned and {len(expected)} messages consumed "
              f"{time.monotonic() - t0:.1f}s after start")
        expected.update(produce_round(broker, topic_name, 1))
        wait_for_count(consumers, len(expected))
        time.sleep(1.0)  # a duplicate would show up now
        # before stopping them: the first one to stop leaves the group, which rebalances
        assignments = [c.assignments() for c in consumers]
        records = [c.records() for c in consumers]
    finally:
        codes = [c.stop() for c in consumers]

    # one generation: each kcat was assigned once, two partitions, and the two are disjoint
    assert [len(a) for a in assignments] == [1, 1], f"rebalances seen by each kcat: {assignments}"
    first, second = assignments[0][0], assignments[1][0]
    assert len(first) == len(second) == 2 and sorted(first + second) == [0, 1, 2, 3], assignments

    got = {}
    for i, recs in enumerate(records):
        parts = {p for p, _, _ in recs}
        assert parts == set(assignments[i][0]), \
            f"kcat{i} consumed partitions {parts}, assigned {assignments[i][0]}"
        for p, o, v in recs:
            assert (p, o) not in got, f"partition {p} offset {o} consumed twice"
            got[(p, o)] = v
    assert got == expected
    # kcat exits 0 on SIGTERM after closing its consumer
    assert codes == [0, 0], codes
