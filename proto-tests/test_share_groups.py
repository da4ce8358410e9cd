"""Share groups (KIP-932): the Java KafkaShareConsumer and Admin (ShareCheck in
proto-tests/java/src, one JVM for the main sections and one after a broker restart, consumers as
threads), Kafka's CLI tools kafka-share-groups and kafka-console-share-consumer, and
ShareFetch/ShareAcknowledge v1 by hand on the wire for the errors clients only show indirectly.

The broker runs with group.share.record.lock.duration.ms=2000 (Kafka's minimum is 1000) and
group.share.delivery.count.limit=3, so that lock expiry and archiving happen quickly.

- split: 3 share consumers on one partition divide 300 records, each getting some, no delivery
  of a record twice (a record comes again only when its lock expired, with a higher count).
- redelivery: a consumer that dies with records acquired: they go to another consumer once the
  acquisition lock expires, with delivery count 2.
- reject-release: REJECTed records are not delivered again; a RELEASEd one is.
- delivery-limit: a record released at each delivery is archived after the 3rd.
- describe: describeShareGroups, listShareGroupOffsets.
- restart: accepted and released records before a broker restart; after it the group gets
  exactly the released ones, their delivery counts kept (state in __share_group_state).
- tools: kafka-console-share-consumer reads 5 records; kafka-share-groups --describe shows the
  group's start offset.
- wire: acknowledging records another member acquired, or records never fetched, gets
  INVALID_RECORD_STATE and changes nothing; session epochs are checked.
"""
import socket
import subprocess
import uuid

import pytest

import wire
from clients import create_topic, produce_all
from javatools import JAVA_LIB, JVM_OPTS, _java, assert_section, java_main, kafka_tool
from targets import new_target

SHARE_FETCH = 78
SHARE_ACKNOWLEDGE = 79
INVALID_RECORD_STATE = 121
SHARE_SESSION_NOT_FOUND = 122
INVALID_SHARE_SESSION_EPOCH = 123
ACCEPT = 1

MAIN_SECTIONS = ["split", "redelivery", "reject-release", "delivery-limit", "describe",
                 "restart-before", "console-setup"]

BROKER_CONFIG = {
    "group.share.record.lock.duration.ms": 2000,
    "group.share.delivery.count.limit": 3,
    "group.initial.rebalance.delay.ms": 0,
}


@pytest.fixture(scope="module")
def share_broker(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker"), BROKER_CONFIG).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


@pytest.fixture(scope="module")
def prefix():
    return f"share-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def main_run(share_broker, prefix):
    return java_main("gregor.prototests.ShareCheck", share_broker.bootstrap, prefix, "main",
                     timeout=300)


@pytest.mark.parametrize("section", MAIN_SECTIONS)
def test_share_consumer(request, share_broker, main_run, section):
    request.node._gregor_brokers = [share_broker]
    assert_section(main_run, section)


def test_console_share_consumer_and_describe(share_broker, main_run, prefix):
    assert_section(main_run, "console-setup")
    topic, group = f"{prefix}-console", f"{prefix}-console"
    cmd = [_java(), *JVM_OPTS, "-cp", f"{JAVA_LIB}/*",
           "org.apache.kafka.tools.consumer.ConsoleShareConsumer",
           "--bootstrap-server", share_broker.bootstrap, "--topic", topic, "--group", group,
           "--max-messages", "5", "--timeout-ms", "30000"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert sorted(res.stdout.split()) == [f"console-{i}" for i in range(5)], res.stdout
    out = kafka_tool("org.apache.kafka.tools.consumer.group.ShareGroupCommand", share_broker,
                     "--describe", "--group", group).stdout
    rows = [line.split() for line in out.splitlines() if topic in line]
    assert rows, out
    # GROUP TOPIC PARTITION [LEADER-EPOCH] START-OFFSET ...: every record was accepted.
    assert rows[0][:3] == [group, topic, "0"] and "5" in rows[0][3:], out


def test_state_survives_restart(share_broker, main_run, prefix):
    assert_section(main_run, "restart-before")
    share_broker.restart()
    run = java_main("gregor.prototests.ShareCheck", share_broker.bootstrap, prefix,
                    "after-restart", timeout=180)
    assert_section(run, "restart-after")


# --- on the wire ---------------------------------------------------------------------------

def _uuid_bytes(topic_id):
    hi = topic_id.get_most_significant_bits() & (2**64 - 1)
    lo = topic_id.get_least_significant_bits() & (2**64 - 1)
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")


def _topic_id(broker, topic):
    from confluent_kafka import TopicCollection
    from clients import admin
    client = admin(broker)  # kept alive until the answer is in
    desc = client.describe_topics(TopicCollection([topic]))[topic].result(timeout=10)
    return _uuid_bytes(desc.topic_id)


def _acks(batches):
    """Compact array of AcknowledgementBatch: (first, last, [types])."""
    out = wire.uvarint(len(batches) + 1)
    for first, last, types in batches:
        out += wire.i64(first) + wire.i64(last) + wire.uvarint(len(types) + 1)
        out += b"".join(wire.i8(t) for t in types) + wire.uvarint(0)
    return out


def share_fetch(cid, group, member, epoch, topic_id, acks=(), max_wait_ms=0, partitions=(0,)):
    body = wire.compact_string(group) + wire.compact_string(member) + wire.i32(epoch)
    body += wire.i32(max_wait_ms) + wire.i32(1) + wire.i32(1 << 20) + wire.i32(500) + wire.i32(500)
    body += wire.uvarint(2) + topic_id + wire.uvarint(len(partitions) + 1)
    for p in partitions:
        body += wire.i32(p) + _acks(acks) + wire.uvarint(0)
    body += wire.uvarint(0)  # topic tags
    body += wire.uvarint(1) + wire.uvarint(0)  # no forgotten topics; request tags
    return wire.header_v2(SHARE_FETCH, 1, cid) + body


def _node_endpoint(r):
    r.i32()
    r.take(max(r.uvarint() - 1, 0))
    r.i32()
    r.take(max(r.uvarint() - 1, 0))
    r.skip_tags()


def read_share_fetch(r):
    r.skip_tags()  # response header v1
    r.i32()
    out = {"error": r.i16()}
    r.take(max(r.uvarint() - 1, 0))
    r.i32()
    parts = []

    def partition(r):
        p = {"partition": r.i32(), "error": r.i16()}
        r.take(max(r.uvarint() - 1, 0))
        p["ack_error"] = r.i16()
        r.take(max(r.uvarint() - 1, 0))
        r.i32(), r.i32(), r.skip_tags()
        n = r.uvarint() - 1
        p["records"] = r.take(n) if n > 0 else b""

        def acquired(r):
            a = (r.i64(), r.i64(), r.i16())
            r.skip_tags()
            return a
        p["acquired"] = r.compact_array(acquired)
        r.skip_tags()
        parts.append(p)

    def topic(r):
        r.take(16)
        r.compact_array(partition)
        r.skip_tags()
    r.compact_array(topic)
    r.compact_array(_node_endpoint)
    r.skip_tags()
    out["partitions"] = parts
    return out


def share_acknowledge(cid, group, member, epoch, topic_id, acks):
    body = wire.compact_string(group) + wire.compact_string(member) + wire.i32(epoch)
    body += wire.uvarint(2) + topic_id + wire.uvarint(2) + wire.i32(0) + _acks(acks)
    body += wire.uvarint(0) + wire.uvarint(0) + wire.uvarint(0)
    return wire.header_v2(SHARE_ACKNOWLEDGE, 1, cid) + body


def read_share_acknowledge(r):
    r.skip_tags()
    r.i32()
    out = {"error": r.i16()}
    r.take(max(r.uvarint() - 1, 0))
    parts = []

    def partition(r):
        p = {"partition": r.i32(), "error": r.i16()}
        r.take(max(r.uvarint() - 1, 0))
        r.i32(), r.i32(), r.skip_tags()
        r.skip_tags()
        parts.append(p)

    def topic(r):
        r.take(16)
        r.compact_array(partition)
        r.skip_tags()
    r.compact_array(topic)
    r.compact_array(_node_endpoint)
    r.skip_tags()
    out["partitions"] = parts
    return out


class Member:
    """A share consumer on the wire: one connection, its member id and session epoch."""

    def __init__(self, broker, group, topic_id):
        self.sock = wire.connect(broker, timeout=20)
        self.group, self.topic_id = group, topic_id
        self.member = str(uuid.uuid4())
        self.cid = 0
        self.epoch = 0

    def fetch(self, acks=(), max_wait_ms=0, epoch=None):
        self.cid += 1
        e = self.epoch if epoch is None else epoch
        r = wire.request(self.sock, share_fetch(self.cid, self.group, self.member, e,
                                                self.topic_id, acks, max_wait_ms), self.cid)
        out = read_share_fetch(r)
        assert r.done()
        if out["error"] == 0 and epoch is None:
            self.epoch += 1
        return out

    def acknowledge(self, acks, epoch=None):
        self.cid += 1
        e = self.epoch if epoch is None else epoch
        r = wire.request(self.sock, share_acknowledge(self.cid, self.group, self.member, e,
                                                      self.topic_id, acks), self.cid)
        out = read_share_acknowledge(r)
        assert r.done()
        if out["error"] == 0 and epoch is None:
            self.epoch += 1
        return out


def test_wire_invalid_record_state(share_broker):
    topic = f"share-wire-{uuid.uuid4().hex[:8]}"
    group = f"share-wire-{uuid.uuid4().hex[:8]}"
    create_topic(share_broker, topic)
    tid = _topic_id(share_broker, topic)
    a, b = Member(share_broker, group, tid), Member(share_broker, group, tid)
    try:
        # No session yet: an acknowledgement is refused.
        assert a.acknowledge([(0, 0, [ACCEPT])], epoch=1)["error"] == SHARE_SESSION_NOT_FOUND
        # Epoch 0 opens a session; the share-partition starts at the high watermark (0).
        first = a.fetch()
        assert first["error"] == 0 and first["partitions"][0]["acquired"] == []
        produce_all(share_broker, topic, [b"r0", b"r1", b"r2"])
        got = b.fetch(max_wait_ms=5000)  # b opens its session and acquires them
        assert got["error"] == 0
        assert got["partitions"][0]["acquired"] == [(0, 2, 1)], got
        # a never acquired these: INVALID_RECORD_STATE, and nothing changes.
        res = a.acknowledge([(0, 2, [ACCEPT])])
        assert res["error"] == 0 and res["partitions"] == [{"partition": 0,
                                                            "error": INVALID_RECORD_STATE}]
        # Records never fetched by anyone (beyond the log end) likewise, piggybacked on a fetch.
        res = a.fetch(acks=[(10, 12, [ACCEPT])])
        assert res["partitions"][0]["ack_error"] == INVALID_RECORD_STATE, res
        # A stale session epoch.
        assert a.fetch(epoch=a.epoch + 5)["error"] == INVALID_SHARE_SESSION_EPOCH
        # The owner acknowledges them fine, once; a second time is INVALID_RECORD_STATE.
        assert b.acknowledge([(0, 2, [ACCEPT])])["partitions"][0]["error"] == 0
        assert b.acknowledge([(1, 1, [ACCEPT])])["partitions"][0]["error"] == \
            INVALID_RECORD_STATE
        # Nothing was lost: a new record is acquired at offset 3, the broker lives.
        produce_all(share_broker, topic, [b"r3"])
        got = a.fetch(max_wait_ms=5000)
        assert got["partitions"][0]["acquired"] == [(3, 3, 1)], got
    finally:
        a.sock.close()
        b.sock.close()
    assert share_broker.alive()
