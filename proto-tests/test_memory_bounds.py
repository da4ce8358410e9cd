"""Memory stays bounded however many clients send large requests (issue 11).

Every request's bytes are leased from one budget, `queued.max.request.bytes`, before its frame
is read; when the budget is spent the broker stops reading sockets. 200 connections that each
announce a 100 MiB frame and start sending it cannot push the broker past its budget (plus the
one frame it may overdraw by), and once they are gone it serves as before. Connection limits
(`max.connections.per.ip`) refuse connections over the limit.
"""
import socket
import struct
import time
import urllib.request

import pytest

import wire
from conftest import Broker

MiB = 1 << 20
BUDGET = 128 * MiB
FRAME = 100 * MiB
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def metrics(broker):
    with _HTTP.open(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def broker(tmp_path, request):
    b = Broker(tmp_path, kafka_config={"queued.max.request.bytes": BUDGET,
                                       "max.connections.per.ip": 250})
    request.node._gregor_brokers = [b]
    b.start()
    yield b
    b.stop()


def test_two_hundred_huge_frames_stay_within_the_budget(broker):
    chunk = b"\0" * MiB
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            s.sendall(struct.pack(">i", FRAME))
            socks.append(s)
        # Each sends up to 8 MiB of its frame; the broker reads only what its budget allows,
        # the rest stays in (small) socket buffers and blocks the sender.
        for s in socks:
            s.setblocking(False)
            for _ in range(8):
                try:
                    s.send(chunk)
                except BlockingIOError:
                    break
        peak_rss = 0
        peak_leased = 0
        for _ in range(10):
            time.sleep(0.3)
            m = metrics(broker)
            peak_leased = max(peak_leased, m["gregor_request_memory_bytes"])
            peak_rss = max(peak_rss, rss(broker.pid))
        assert m["gregor_request_memory_limit_bytes"] == BUDGET
        # At most one frame past the budget, however many connections wait.
        assert 0 < peak_leased <= BUDGET + FRAME, peak_leased
        # 200 x 8 MiB sent; without a budget the broker would buffer all of it.
        assert peak_rss < BUDGET + FRAME + 128 * MiB, peak_rss
    finally:
        for s in socks:
            s.close()
    # The requests never complete; once their connections are gone the memory comes back and
    # the broker serves new clients.
    deadline = time.monotonic() + 20
    while metrics(broker)["gregor_request_memory_bytes"] != 0:
        assert time.monotonic() < deadline, "request memory not returned"
        time.sleep(0.2)
    with wire.connect(broker) as s:
        error, _ = wire.read_api_versions_v3(wire.request(s, wire.api_versions_v3(1), 1))
    assert error == 0


def test_connections_over_the_per_ip_limit_are_closed(tmp_path, request):
    b = Broker(tmp_path, kafka_config={"max.connections.per.ip": 3})
    request.node._gregor_brokers = [b]
    b.start()
    try:
        # The readiness probe in start() went over HTTP; these are the only Kafka clients.
        held = [wire.connect(b) for _ in range(3)]
        for i, s in enumerate(held):
            r = wire.request(s, wire.api_versions_v3(i + 1), i + 1)
            assert wire.read_api_versions_v3(r)[0] == 0
        extra = wire.connect(b)
        wire.expect_closed(extra)
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            s = wire.connect(b)
            try:
                r = wire.request(s, wire.api_versions_v3(9), 9)
                assert wire.read_api_versions_v3(r)[0] == 0
                break
            except AssertionError:
                assert time.monotonic() < deadline, "no room after a connection closed"
                time.sleep(0.1)
            finally:
                s.close()
        for s in held:
            s.close()
    finally:
        b.stop()
