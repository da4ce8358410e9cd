"""On-disk fidelity: Kafka's own DumpLogSegments (kafka-dump-log, Kafka 4.x) reads the broker's
segment files after a clean shutdown, with --deep-iteration --print-data-log and with
--verify-index-only, and finds exactly what was produced, with no index mismatch.

Kafka's index rules that --verify-index-only checks: an offset index entry is (the last offset of
a batch, the position of that batch); a time index entry is (a batch's max timestamp, that
batch's last offset), with timestamps never decreasing.
"""
import random
import re
import string
import time

import wire

from clients import TIMEOUT, create_topic, producer
from javatools import kafka_tool
from targets import make_target, partition_dir  # noqa: F401  (fixture)

SEGMENT_BYTES = 1048576  # Kafka 4's minimum segment.bytes
# (codec, records): the uncompressed ones alone fill more than a segment
CODECS = [("none", 1200), ("gzip", 400), ("snappy", 400), ("lz4", 400), ("zstd", 400)]
VALUE_LEN = 1000

BATCH = re.compile(r"^baseOffset: (\d+) lastOffset: (\d+) count: (\d+) .* CreateTime: (-?\d+) "
                   r"size: (\d+) magic: (\d+) compresscodec: (\w+) crc: (\d+) isvalid: (\w+)$")
RECORD = re.compile(r"^\| offset: (\d+) CreateTime: (-?\d+) keySize: (-?\d+) valueSize: (-?\d+) "
                    r"sequence: (-?\d+) headerKeys: \[(.*?)\](?: key: (\S*))? payload: (.*)$")


def produce_fixture_data(broker, topic):
    """Records of every codec, with keys, headers and some out-of-order timestamps.
    Returns [(offset, key, value, header keys, timestamp, codec)] in offset order."""
    rnd = random.Random(1234)
    now = int(time.time() * 1000)
    expected, offset = [], 0
    # words from a small vocabulary: every codec compresses them (librdkafka sends a batch
    # uncompressed when compression does not pay)
    words = ["".join(rnd.choices(string.ascii_letters, k=rnd.randint(3, 9))) for _ in range(200)]
    for codec, count in CODECS:
        values = [" ".join(rnd.choices(words, k=VALUE_LEN))[:VALUE_LEN].encode()
                  for _ in range(count)]
        keys = [b"k%d" % (offset + i) for i in range(count)]
        # timestamps go back and forth: the time index must track the max so far
        stamps = [now - 60_000 + offset + i - (i % 7) * 500 for i in range(count)]
        headers = [[("trace", b"t%d" % (offset + i))] + [("h%d" % j, b"x" * j) for j in range(i % 3)]
                   for i in range(count)]
        acked = _produce(broker, topic, values, keys, stamps, headers,
                         **{"compression.codec": codec, "batch.num.messages": 40,
                            "linger.ms": 20})
        assert acked == list(range(offset, offset + count))
        for i in range(count):
            expected.append((offset + i, keys[i].decode(), values[i].decode(), stamps[i],
                             ",".join(k for k, _ in headers[i]), codec))
        offset += count
    return expected


def _produce(broker, topic, values, keys, stamps, headers, **conf):
    p = producer(broker, **conf)
    acked, errors = [], []

    def dr(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append(msg.offset())
    for v, k, ts, hs in zip(values, keys, stamps, headers):
        while True:
            try:
                p.produce(topic, v, key=k, partition=0, timestamp=ts, headers=hs, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0 and not errors, errors[:5]
    return acked


def test_dump_log_segments_reads_gregor_segments(make_target, topic_name):
    broker = make_target()
    # librdkafka enables LZ4 only when the broker advertises FindCoordinator (its proxy for
    # "Kafka >= 0.10"); without it, lz4 batches are sent uncompressed.
    with wire.connect(broker) as s:
        _, apis = wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(1), 1))
    lz4_enabled = 10 in apis
    create_topic(broker, topic_name, config={"segment.bytes": str(SEGMENT_BYTES)})
    expected = produce_fixture_data(broker, topic_name)
    code = broker.stop()
    assert code == 0, f"clean shutdown exited {code}"

    pdir = partition_dir(broker, topic_name, 0)
    logs = sorted(pdir.glob("*.log"))
    assert len(logs) >= 2, f"segment.bytes={SEGMENT_BYTES} should have rolled: {logs}"
    for f in logs:
        assert re.fullmatch(r"\d{20}\.log", f.name), f.name
        for ext in (".index", ".timeindex"):
            assert f.with_suffix(ext).exists(), f"{f.with_suffix(ext).name} missing"
    for f in logs[:-1]:
        assert f.stat().st_size <= SEGMENT_BYTES, f"{f.name}: {f.stat().st_size} bytes"

    # --deep-iteration --print-data-log over every segment
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, logs)),
                     "--deep-iteration", "--print-data-log")
    out = res.stdout + res.stderr
    for bad in ("mismatch", "corrupt", "exception", "error", "invalid"):
        assert bad not in out.lower(), f"{bad!r} in kafka-dump-log output:\n{_around(out, bad)}"
    batches, records, starts = [], [], []
    for line in res.stdout.splitlines():
        if line.startswith("Log starting offset: "):
            starts.append(int(line.split(": ")[1]))
        elif line.startswith("baseOffset: "):
            m = BATCH.match(line)
            assert m, f"unexpected batch line: {line}"
            batches.append(m.groups())
        elif line.startswith("| offset: "):
            m = RECORD.match(line)
            assert m, f"unexpected record line: {line[:300]}"
            records.append(m.groups())
    assert starts == [int(f.stem) for f in logs], "segment base offsets vs file names"
    assert all(b[8] == "true" for b in batches), "a batch failed its CRC check"
    assert all(b[5] == "2" for b in batches)
    # batches are dense and each segment starts with the batch its name says
    assert int(batches[0][0]) == 0
    for prev, nxt in zip(batches, batches[1:]):
        assert int(nxt[0]) == int(prev[1]) + 1, f"gap between batches {prev[:2]} and {nxt[:2]}"
    assert int(batches[-1][1]) == len(expected) - 1
    codec_of = {e[0]: e[-1] for e in expected}
    for b in batches:
        want = codec_of[int(b[0])]
        if want == "lz4" and not lz4_enabled:
            continue  # librdkafka sent it uncompressed, see lz4_enabled
        assert b[6] == want, f"batch at {b[0]}: codec {b[6]}, produced {want}"
    assert {b[6] for b in batches} >= {"none", "gzip", "snappy", "zstd"}
    got = [(int(r[0]), r[6], r[7], int(r[1]), r[5]) for r in records]
    want = [e[:-1] for e in expected]
    assert len(got) == len(want), f"{len(got)} records dumped, {len(want)} produced"
    for g, w in zip(got, want):
        assert g == w, f"record at offset {w[0]}: dumped {g[:2]}..., produced {w[:2]}..."
    assert all(r[2] == str(len(r[6])) and r[3] == str(VALUE_LEN) for r in records)

    # --verify-index-only on every offset and time index: nothing but the "Dumping" lines
    indexes = [f.with_suffix(ext) for f in logs for ext in (".index", ".timeindex")]
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, indexes)),
                     "--verify-index-only")
    extra = [l for l in (res.stdout + res.stderr).splitlines()
             if l.strip() and not l.startswith("Dumping ")]
    assert not extra, "kafka-dump-log --verify-index-only reports:\n" + "\n".join(extra[:40])

    # the index entries themselves: increasing, and there are some
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, indexes)),
                     "--index-sanity-check")
    out = res.stdout + res.stderr
    assert "corrupt" not in out.lower() and "exception" not in out.lower(), out[-3000:]
    res = kafka_tool("kafka-dump-log", None, "--files", ",".join(map(str, indexes)))
    entries = re.findall(r"^offset: (\d+) position: (\d+)$", res.stdout, re.M)
    assert len(entries) >= len(logs), f"offset indexes hold {len(entries)} entries"
    times = re.findall(r"^timestamp: (-?\d+) offset: (\d+)$", res.stdout, re.M)
    assert len(times) >= len(logs), f"time indexes hold {len(times)} entries"
    assert [int(o) for o, _ in entries] == sorted(int(o) for o, _ in entries)
    assert [int(t) for t, _ in times] == sorted(int(t) for t, _ in times)


def _around(text, word, width=600):
    i = text.lower().find(word)
    return text[max(0, i - width):i + width]
