"""Crash test: kill -9 mid-stream on a flush.messages=1 topic loses no acknowledged message.

A confluent-kafka producer (acks=all, no idempotence, no retries, so each message is written at
most once) produces continuously and records every acknowledged (offset, value). The broker is
killed with SIGKILL after a few thousand acks, restarted on the same data dir and ports, and
the partition is read back from the beginning: every acknowledged value must be at its
acknowledged offset exactly once, and offsets must be dense.

Also: recovery after kill -9 truncates a torn tail and a batch whose CRC does not match (as
Kafka's LogSegment.recover does), keeping every batch before it.
"""
import time

import pytest

from clients import TIMEOUT, consume_range, create_topic, produce_all, producer, watermarks

ACKS_BEFORE_KILL = 3000


def test_kill9_mid_stream_keeps_every_acked_message(broker, topic_name):
    create_topic(broker, topic_name, config={"flush.messages": "1"})
    p = producer(broker, **{"acks": "all", "enable.idempotence": False, "retries": 0,
                            "linger.ms": 2, "message.timeout.ms": 5000,
                            "socket.timeout.ms": 5000, "max.in.flight": 5})
    acked, failed = {}, []

    def dr(err, msg):
        if err is None:
            assert msg.offset() not in acked, f"offset {msg.offset()} acknowledged twice"
            acked[msg.offset()] = msg.value()
        else:
            failed.append(msg.value())

    i = 0
    kill_at = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            p.produce(topic_name, f"value-{i:07d}".encode(), partition=0, on_delivery=dr)
            i += 1
        except BufferError:
            pass
        p.poll(0.001 if i % 50 == 0 else 0)
        if kill_at is None and len(acked) >= ACKS_BEFORE_KILL:
            broker.kill9()  # with produce requests in flight
            kill_at = time.monotonic()
        elif kill_at is not None and time.monotonic() - kill_at > 0.5:
            break
    assert kill_at is not None, f"only {len(acked)} acks in 60s"
    p.flush(TIMEOUT)
    acked_at_kill = len(acked)

    broker.start()
    hwm = watermarks(broker, topic_name)[1]
    log = consume_range(broker, topic_name, end=hwm)
    offsets = [m.offset() for m in log]
    assert offsets == list(range(hwm)), "offsets are not dense from 0"
    values = [m.value() for m in log]
    assert len(set(values)) == len(values), "a message was written twice"
    missing = {o: v for o, v in acked.items() if o >= hwm or values[o] != v}
    assert not missing, f"{len(missing)} acknowledged messages lost or moved, e.g. " \
                        f"{sorted(missing.items())[:3]}"
    assert hwm >= acked_at_kill >= ACKS_BEFORE_KILL
    # Nothing beyond what the producer sent, and the unacknowledged tail holds only sent values.
    sent = {f"value-{j:07d}".encode() for j in range(i)}
    assert set(values) <= sent
    # The log keeps working after recovery.
    p2 = producer(broker)
    out = []
    p2.produce(topic_name, b"after-restart", partition=0,
               on_delivery=lambda err, msg: out.append((err, msg.offset())))
    p2.flush(TIMEOUT)
    assert out == [(None, hwm)]


@pytest.mark.parametrize("damage", ["torn-tail", "bad-crc"])
def test_recovery_truncates_damaged_tail(broker, topic_name, damage):
    create_topic(broker, topic_name)
    batches = [[f"b{b}-{i}".encode() for i in range(10)] for b in range(3)]
    for values in batches:  # one batch each
        produce_all(broker, topic_name, values, **{"linger.ms": 100})
    broker.kill9()
    [part_dir] = broker.data_dir.rglob(f"{topic_name}-0")
    [seg] = sorted(part_dir.glob("*.log"))
    data = seg.read_bytes()
    if damage == "torn-tail":
        # A crash in the middle of writing a fourth batch: a header, and part of its body.
        seg.write_bytes(data + data[:40])
        kept = batches
    else:
        # The last byte of the last batch (its last record's header count) flips: CRC fails.
        seg.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        kept = batches[:2]
    broker.start()
    values = [v for b in kept for v in b]
    assert watermarks(broker, topic_name) == (0, len(values))
    assert [m.value() for m in consume_range(broker, topic_name)] == values
    assert produce_all(broker, topic_name, [b"next"]) == [(len(values), b"next")]
    assert [m.value() for m in consume_range(broker, topic_name)] == values + [b"next"]

