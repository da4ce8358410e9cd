"""kcat (Debian's 1.7.1, librdkafka 2.0.2) against Gregor.

Covers: -L metadata, -P/-C round trips for every compression codec (exact content and count,
and the batch stored on disk with the producer's codec), keys and headers, consuming from an
offset, the issue's 100000-line zstd user story, and restarts (SIGTERM and kill -9) keeping
every message at its offset.
"""
import json

import pytest

from clients import CODECS, assert_stored_codec, create_topic, kcat, stored_batches

def consume(broker, topic, *args, fmt="%o|%s\\n"):
    out = kcat(broker, "-C", "-t", topic, "-e", "-f", fmt, *args).stdout.decode()
    return out.splitlines()


def test_metadata_lists_broker_and_topics(broker, topic_name):
    create_topic(broker, topic_name, partitions=3)
    md = json.loads(kcat(broker, "-L", "-J").stdout)
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(1, broker.bootstrap)]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics
    parts = sorted(topics[topic_name]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2]
    for p in parts:
        assert p["leader"] == 1
        assert [r["id"] for r in p["replicas"]] == [1]
        assert [r["id"] for r in p["isrs"]] == [1]
    text = kcat(broker, "-L").stdout.decode()
    assert f"broker 1 at {broker.bootstrap}" in text
    assert f'topic "{topic_name}" with 3 partitions' in text


@pytest.mark.parametrize("codec", list(CODECS))
def test_round_trip_codec(broker, topic_name, codec):
    lines = [f"{codec}-message-{i}-" + "x" * (i % 50) for i in range(2000)]
    kcat(broker, "-P", "-t", topic_name, "-z", codec, input=("\n".join(lines) + "\n").encode())
    got = consume(broker, topic_name, "-o", "beginning")
    assert got == [f"{i}|{v}" for i, v in enumerate(lines)]
    assert_stored_codec(broker, topic_name, codec)
    next_offset = 0  # and offsets in the stored batches are dense
    for b in stored_batches(broker, topic_name):
        assert b["base_offset"] == next_offset
        next_offset += b["last_offset_delta"] + 1
    assert next_offset == len(lines)


def test_keys_and_headers(broker, topic_name):
    data = b"k1:v1\nk2:v2\n:no-key-value\nk4:\n"
    kcat(broker, "-P", "-t", topic_name, "-K:", "-H", "h1=a", "-H", "h2=b c", input=data)
    got = consume(broker, topic_name, "-o", "beginning", fmt="%o|%k|%K|%s|%h\\n")
    # %K is the key length (-1 for a null key); kcat sends an empty key for ":value".
    assert got == [
        "0|k1|2|v1|h1=a,h2=b c",
        "1|k2|2|v2|h1=a,h2=b c",
        "2||0|no-key-value|h1=a,h2=b c",
        "3|k4|2||h1=a,h2=b c",
    ]


def test_consume_from_offset(broker, topic_name):
    kcat(broker, "-P", "-t", topic_name, input="".join(f"m{i}\n" for i in range(20)).encode())
    assert consume(broker, topic_name, "-o", "15") == [f"{i}|m{i}" for i in range(15, 20)]
    assert consume(broker, topic_name, "-o", "-3") == [f"{i}|m{i}" for i in range(17, 20)]
    assert consume(broker, topic_name, "-o", "5", "-c", "2") == ["5|m5", "6|m6"]
    assert consume(broker, topic_name, "-o", "end") == []


def test_user_story_100000_lines_zstd(broker):
    lines = "".join(f"{i}\n" for i in range(1, 100001)).encode()
    kcat(broker, "-P", "-t", "chat-topic", "-z", "zstd", input=lines)  # topic auto-created
    out = kcat(broker, "-C", "-t", "chat-topic", "-o", "beginning", "-e").stdout
    assert out.count(b"\n") == 100000
    assert out == lines


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "kill9"])
def test_restart_keeps_offsets(broker, topic_name, kill):
    kcat(broker, "-P", "-t", topic_name, "-z", "lz4",
         input="".join(f"before-{i}\n" for i in range(500)).encode())
    before = consume(broker, topic_name, "-o", "beginning")
    assert len(before) == 500
    broker.restart(kill=kill)
    assert consume(broker, topic_name, "-o", "beginning") == before
    kcat(broker, "-P", "-t", topic_name, input=b"after-0\nafter-1\n")
    assert consume(broker, topic_name, "-o", "498") == [
        "498|before-498", "499|before-499", "500|after-0", "501|after-1"]
    broker.restart(kill=kill)
    assert consume(broker, topic_name, "-o", "beginning") == before + ["500|after-0", "501|after-1"]
