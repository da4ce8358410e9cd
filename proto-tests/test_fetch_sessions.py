"""Fetch v12-v17 and KIP-227 incremental fetch sessions on one broker.

Raw wire (fetch_wire.py): a full fetch with epoch 0 opens a session; incremental fetches then
carry only changed partitions and get back only partitions with something new (records, a moved
high watermark or log start, an error); forgotten topics leave the session; an unknown topic id
is UNKNOWN_TOPIC_ID on its partition; session errors (FETCH_SESSION_ID_NOT_FOUND,
INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR); epoch -1 closes a session. Runs
against Kafka too (PROTO_TESTS_TARGET=kafka). On Gregor only: eviction in a one-slot cache
(`max.incremental.fetch.session.cache.slots`), where a follower's session pushes out a consumer's
and a new consumer cannot push out either. Real clients: the Java 4.x console consumer,
franz-go (with and without sessions), confluent-kafka and kcat read a many-partition topic,
and /metrics shows the Fetch versions they used (v17 for Java and franz-go).
"""
import json
import re
import subprocess
import urllib.request
import uuid

import pytest

import wire
from clients import consume_range, create_topic, kcat, produce_all
from fetch_wire import fetch, topic_id
from javatools import kafka_tool
from targets import TARGET, new_target

NONE, OFFSET_OUT_OF_RANGE, NOT_LEADER = 0, 1, 6
FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH = 70, 71
UNKNOWN_TOPIC_ID, FETCH_SESSION_TOPIC_ID_ERROR = 100, 106
FRANZ_FETCH = ".deps/bin/franz-fetch"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker")).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


@pytest.fixture
def broker(request, shared):
    request.node._gregor_brokers = [shared]
    return shared


def metrics(broker):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def fetch_versions(broker):
    return {int(v): int(n) for v, n in
            re.findall(r'^gregor_fetch_requests_total\{version="(\d+)"\} (\d+)$',
                       metrics(broker), re.M)}


def changed(resp):
    """{(topic, partition): records} of a response."""
    return {(t, p): d["count"] for t, parts in resp["topics"].items() for p, d in parts.items()}


@pytest.mark.parametrize("version", [12, 17])
def test_incremental_session_sends_only_changed_partitions(broker, topic_name, version):
    create_topic(broker, topic_name, partitions=4)
    for p in range(4):
        produce_all(broker, topic_name, [b"first"], partition=p)
    t = topic_id(broker, topic_name) if version >= 13 else topic_name
    with wire.connect(broker) as s:
        # A full fetch (epoch 0) of the four partitions opens a session and answers them all.
        full = fetch(s, 1, version, [(t, [(p, 0) for p in range(4)])], epoch=0)
        assert full["error"] == NONE and full["session_id"] != 0
        sid = full["session_id"]
        assert changed(full) == {(t, p): 1 for p in range(4)}
        assert all(d["hw"] == 1 for d in full["topics"][t].values())

        # The client moves its positions: nothing new, so nothing comes back.
        r = fetch(s, 2, version, [(t, [(p, 1) for p in range(4)])], session_id=sid, epoch=1)
        assert (r["error"], r["session_id"], r["topics"]) == (NONE, sid, {})

        # Records on partition 2 only: an empty incremental fetch returns partition 2 alone.
        produce_all(broker, topic_name, [b"a", b"b"], partition=2)
        r = fetch(s, 3, version, [], session_id=sid, epoch=2)
        assert changed(r) == {(t, 2): 2} and r["topics"][t][2]["hw"] == 3

        # A replayed epoch is refused, and leaves the session as it was.
        r = fetch(s, 4, version, [], session_id=sid, epoch=2)
        assert (r["error"], r["topics"]) == (INVALID_FETCH_SESSION_EPOCH, {})

        r = fetch(s, 5, version, [(t, [(2, 3)])], session_id=sid, epoch=3)
        assert (r["error"], r["topics"]) == (NONE, {})

        # Forget partition 0; records on 0 and 1: only 1 is answered.
        produce_all(broker, topic_name, [b"c"], partition=0)
        produce_all(broker, topic_name, [b"d"], partition=1)
        r = fetch(s, 6, version, [], session_id=sid, epoch=4, forgotten=[(t, [0])])
        assert changed(r) == {(t, 1): 1}

        if version >= 13:
            # An unknown topic id joins the session with UNKNOWN_TOPIC_ID, sent every time.
            ghost = uuid.uuid4()
            for epoch in (5, 6):
                # (The client also moves past the record it got from partition 1.)
                adds = [(t, [(1, 2)]), (ghost, [(0, 0)])] if epoch == 5 else []
                r = fetch(s, 7 + epoch, version, adds, session_id=sid, epoch=epoch)
                assert changed(r) == {(ghost, 0): 0}
                assert r["topics"][ghost][0]["error"] == UNKNOWN_TOPIC_ID
            # A session by ids cannot go on with names, nor the other way.
            r = fetch(s, 20, 12, [], session_id=sid, epoch=7)
            assert r["error"] == FETCH_SESSION_TOPIC_ID_ERROR
            epoch = 7
        else:
            r = fetch(s, 20, 17, [], session_id=sid, epoch=5)
            assert r["error"] == FETCH_SESSION_TOPIC_ID_ERROR
            epoch = 5

        # A full fetch with epoch -1 closes the session (and fetches without one).
        r = fetch(s, 21, version, [(t, [(3, 0)])], session_id=sid, epoch=-1)
        assert (r["error"], r["session_id"], changed(r)) == (NONE, 0, {(t, 3): 1})
        r = fetch(s, 22, version, [], session_id=sid, epoch=epoch)
        assert (r["error"], r["session_id"]) == (FETCH_SESSION_ID_NOT_FOUND, 0)
        # So is an id that never existed.
        r = fetch(s, 23, version, [], session_id=12345, epoch=1)
        assert r["error"] == FETCH_SESSION_ID_NOT_FOUND


def test_session_waits_and_answers_the_partition_that_got_data(broker, topic_name):
    """An incremental fetch with min_bytes waits for an append, then answers that partition."""
    create_topic(broker, topic_name, partitions=3)
    t = topic_id(broker, topic_name)
    with wire.connect(broker, timeout=15) as s:
        full = fetch(s, 1, 17, [(t, [(p, 0) for p in range(3)])], epoch=0)
        sid = full["session_id"]
        assert sid != 0 and changed(full) == {(t, p): 0 for p in range(3)}
        import threading
        timer = threading.Timer(0.5, lambda: produce_all(broker, topic_name, [b"x"], partition=1))
        timer.start()
        r = fetch(s, 2, 17, [], session_id=sid, epoch=1, max_wait_ms=10000, min_bytes=1)
        timer.join()
        assert changed(r) == {(t, 1): 1}


@pytest.mark.skipif(TARGET != "gregor", reason="Kafka splits the slots over 8 shards")
def test_eviction_in_a_one_slot_cache(make_broker, topic_name):
    b = make_broker({"max.incremental.fetch.session.cache.slots": 1})
    create_topic(b, topic_name)
    t = topic_id(b, topic_name)
    parts = [(t, [(0, 0)])]
    with wire.connect(b) as s:
        a = fetch(s, 1, 17, parts, epoch=0)["session_id"]
        assert a != 0
        # Another consumer's session is worth no more than a session not yet 2 minutes old.
        assert fetch(s, 2, 17, parts, epoch=0)["session_id"] == 0
        assert fetch(s, 3, 17, [], session_id=a, epoch=1)["error"] == NONE
        # A follower's session (replica id set) is privileged: it evicts the consumer's.
        f = fetch(s, 4, 17, parts, epoch=0, replica_id=7)
        assert f["session_id"] != 0
        assert f["topics"][t][0]["error"] == NOT_LEADER  # broker 7 is no replica
        r = fetch(s, 5, 17, [], session_id=a, epoch=2)
        assert (r["error"], r["session_id"]) == (FETCH_SESSION_ID_NOT_FOUND, 0)
        # ...and a consumer cannot evict a follower's.
        assert fetch(s, 6, 17, parts, epoch=0)["session_id"] == 0
        # Sessionless fetches work whatever the cache holds.
        r = fetch(s, 7, 17, parts, epoch=-1)
        assert (r["error"], r["session_id"]) == (NONE, 0)
    m = metrics(b)
    assert "gregor_fetch_sessions 1" in m
    assert "gregor_fetch_session_evictions_total 1" in m


@pytest.mark.skipif(TARGET != "gregor", reason="reads Gregor's /metrics")
def test_real_clients_consume_many_partitions(broker, topic_name):
    """Java 4.x and franz-go (sessions on and off) at Fetch v17, confluent-kafka and kcat."""
    partitions = 30
    create_topic(broker, topic_name, partitions=partitions)
    for p in range(partitions):
        produce_all(broker, topic_name, [b"v%d-%d" % (p, i) for i in range(3)], partition=p)
    total = 3 * partitions

    before = fetch_versions(broker)
    for extra in ([], ["-no-sessions"]):
        res = subprocess.run([FRANZ_FETCH, "-brokers", broker.bootstrap, "-topic", topic_name,
                              "-partitions", str(partitions), "-n", str(total), *extra],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        rep = json.loads(res.stdout)
        assert rep == {**rep, "consumed": total, "in_order": True}, (extra, rep)
    after = fetch_versions(broker)
    assert after.get(17, 0) > before.get(17, 0), after

    before = after
    out = kafka_tool("kafka-console-consumer", broker, "--topic", topic_name,
                     "--from-beginning", "--max-messages", str(total),
                     "--group", f"g-{uuid.uuid4().hex[:8]}", "--timeout-ms", "30000").stdout
    assert sorted(out.split()) == sorted("v%d-%d" % (p, i) for p in range(partitions)
                                         for i in range(3))
    after = fetch_versions(broker)
    assert after.get(17, 0) > before.get(17, 0), after

    for p in (0, partitions - 1):
        assert [m.value() for m in consume_range(broker, topic_name, partition=p)] == [
            b"v%d-%d" % (p, i) for i in range(3)]
    got = kcat(broker, "-C", "-t", topic_name, "-e", "-q", "-f", "%s\n").stdout.split()
    assert len(got) == total
