"""Hand-written Kafka wire encoding for the few requests the raw-socket tests need.

Covers: request headers v1/v2, ApiVersions v0/v3, Metadata v0/v1, ListOffsets v1/v7, Produce v3
with a v2 record batch (CRC32C), response readers for those, and a reader for record batch
headers (used to check that batches are stored on disk as the producer sent them).
"""
import socket
import struct
import uuid

# --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) ------------------------------------

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value

# --- primitives ----------------------------------------------------------------------------

def i8(v): return struct.pack(">b", v)
def i16(v): return struct.pack(">h", v)
def i32(v): return struct.pack(">i", v)
def i64(v): return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode()
    return i16(len(b)) + b


def uvarint(v):
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v):
    return uvarint((v << 1) ^ (v >> 63))  # zigzag


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        assert self.pos + n <= len(self.data), \
            f"response truncated at {self.pos}+{n}/{len(self.data)}"
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self): return struct.unpack(">b", self.take(1))[0]
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def array(self, item):
        n = self.i32()
        return None if n < 0 else [item(self) for _ in range(n)]

    def compact_array(self, item):
        n = self.uvarint() - 1
        return None if n < 0 else [item(self) for _ in range(n)]

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def done(self):
        return self.pos == len(self.data)


# --- framing -------------------------------------------------------------------------------

def header_v1(api_key, version, correlation_id, client_id="proto-tests"):
    return i16(api_key) + i16(version) + i32(correlation_id) + string(client_id)


def header_v2(api_key, version, correlation_id, client_id="proto-tests"):
    return header_v1(api_key, version, correlation_id, client_id) + uvarint(0)


def frame(payload):
    return i32(len(payload)) + payload


def connect(broker, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(sock, n):
    """n bytes, or None if the peer closed (or reset) the connection first."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    """One response frame body, or None if the connection was closed. Raises socket.timeout."""
    size = recv_exact(sock, 4)
    if size is None:
        return None
    (n,) = struct.unpack(">i", size)
    assert 0 <= n < 64 << 20, f"bad response size {n}"
    body = recv_exact(sock, n)
    assert body is not None, "connection closed mid-response"
    return body


def request(sock, payload, correlation_id):
    """Send one framed request; return a Reader positioned after the response's correlation id."""
    sock.sendall(frame(payload))
    body = recv_frame(sock)
    assert body is not None, "broker closed the connection instead of answering"
    r = Reader(body)
    got = r.i32()
    assert got == correlation_id, f"correlation id {got} != {correlation_id}"
    return r


def expect_closed(sock, timeout=5.0):
    """Assert the broker closes the connection (EOF or reset) without sending a response."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    except socket.timeout:
        raise AssertionError(f"connection still open {timeout}s later") from None
    assert data == b"", \
        f"expected the connection to be closed, got {len(data)} bytes: {data[:64]!r}"


# --- ApiVersions (key 18) --------------------------------------------------------------------

def api_versions_v0(correlation_id):
    return header_v1(18, 0, correlation_id)


def api_versions_v3(correlation_id, version=3):
    return (header_v2(18, version, correlation_id)
            + compact_string("proto-tests") + compact_string("1.0") + uvarint(0))


def read_api_versions_v0(r):
    error = r.i16()
    keys = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
    return error, {k: (lo, hi) for k, lo, hi in keys}


def read_api_versions_v3(r):
    error = r.i16()

    def item(r):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        r.skip_tags()
        return k, lo, hi
    keys = r.compact_array(item)
    r.i32()  # throttle_time_ms
    r.skip_tags()
    return error, {k: (lo, hi) for k, lo, hi in keys}


# --- Metadata (key 3) --------------------------------------------------------------------------

def metadata_v0(correlation_id, topics=(), raw_count=None):
    count = len(topics) if raw_count is None else raw_count
    return header_v1(3, 0, correlation_id) + i32(count) + b"".join(string(t) for t in topics)


def metadata_v1(correlation_id, topics=None):
    body = i32(-1) if topics is None else i32(len(topics)) + b"".join(string(t) for t in topics)
    return header_v1(3, 1, correlation_id) + body


def read_metadata(r, version):
    def broker(r):
        b = {"node_id": r.i32(), "host": r.string(), "port": r.i32()}
        if version >= 1:
            b["rack"] = r.string()
        return b

    def partition(r):
        return {"error": r.i16(), "index": r.i32(), "leader": r.i32(),
                "replicas": r.array(lambda r: r.i32()), "isr": r.array(lambda r: r.i32())}

    def topic(r):
        t = {"error": r.i16(), "name": r.string()}
        if version >= 1:
            t["internal"] = r.i8()
        t["partitions"] = r.array(partition)
        return t

    out = {"brokers": r.array(broker)}
    if version >= 1:
        out["controller_id"] = r.i32()
    out["topics"] = r.array(topic)
    return out


# --- record batch v2 -------------------------------------------------------------------------

def record(offset_delta, value, key=None, ts_delta=0):
    body = (i8(0) + varint(ts_delta) + varint(offset_delta)
            + (varint(-1) if key is None else varint(len(key)) + key)
            + varint(len(value)) + value + varint(0))
    return varint(len(body)) + body


def record_batch(values, timestamp=1_700_000_000_000, corrupt_crc=False, attributes=0):
    """A v2 batch with base offset 0 and no producer id; records are stored uncompressed
    whatever codec `attributes` claims."""
    records = b"".join(record(i, v) for i, v in enumerate(values))
    after_crc = (i16(attributes) + i32(len(values) - 1) + i64(timestamp) + i64(timestamp)
                 + i64(-1) + i16(-1) + i32(-1) + i32(len(values)) + records)
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_length = i32(0) + i8(2) + struct.pack(">I", crc) + after_crc
    return i64(0) + i32(len(after_length)) + after_length


def batch_headers(data):
    """Parse concatenated v2 batches: list of dicts with base_offset, attributes, record_count."""
    out, pos = [], 0
    while pos + 61 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        if length <= 0 or pos + 12 + length > len(data):
            break
        magic = data[pos + 16]
        (crc,) = struct.unpack_from(">I", data, pos + 17)
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        out.append({"base_offset": base_offset, "magic": magic, "attributes": attributes,
                    "last_offset_delta": last_delta, "record_count": count,
                    "crc_ok": crc == crc32c(data[pos + 21:pos + 12 + length])})
        pos += 12 + length
    return out


# --- Produce v3 (key 0) ----------------------------------------------------------------------

def produce_v3(correlation_id, topic, partition, batch, acks=-1, timeout_ms=10000):
    return (header_v1(0, 3, correlation_id) + string(None) + i16(acks) + i32(timeout_ms)
            + i32(1) + string(topic) + i32(1) + i32(partition) + i32(len(batch)) + batch)


def read_produce_v3(r):
    def part(r):
        return {"index": r.i32(), "error": r.i16(), "base_offset": r.i64(),
                "log_append_time": r.i64()}

    topics = r.array(lambda r: (r.string(), r.array(part)))
    r.i32()  # throttle_time_ms
    return {name: parts for name, parts in topics}


def read_leader_hint(r, leader_tag):
    """A partition's tagged fields; its KIP-951 current leader (under `leader_tag`) as
    (id, epoch), or None."""
    leader = None
    for _ in range(r.uvarint()):
        tag, data = r.uvarint(), Reader(r.take(r.uvarint()))
        if tag == leader_tag:
            leader = (data.i32(), data.i32())
    return leader


def read_node_endpoints(r):
    """A response's top-level tagged fields; its KIP-951 node endpoints (tag 0) as
    {id: (host, port, rack)}."""
    nodes = {}
    for _ in range(r.uvarint()):
        tag, data = r.uvarint(), Reader(r.take(r.uvarint()))
        if tag == 0:
            for node in data.compact_array(
                    lambda d: (d.i32(), _cstring(d), d.i32(), _cstring(d), d.skip_tags())):
                nodes[node[0]] = node[1:4]
    return nodes


def produce_flexible(correlation_id, topic, partition, batch, version=11, acks=-1,
                     timeout_ms=10000):
    """Produce v9+ (flexible): one batch to one partition; the topic a name, or from v13 a
    uuid.UUID (KIP-516)."""
    part = i32(partition) + uvarint(len(batch) + 1) + batch + uvarint(0)
    name = topic.bytes if version >= 13 else compact_string(topic)
    return (header_v2(0, version, correlation_id) + uvarint(0) + i16(acks) + i32(timeout_ms)
            + uvarint(2) + name + uvarint(2) + part + uvarint(0) + uvarint(0))


def read_produce_flexible(r, version=11):
    """{"topics": {name (a uuid.UUID from v13): [partition, ...]}, "nodes": {id: (host, port,
    rack)}}; each partition with its KIP-951 leader hint (tag 0) as "leader": (id, epoch)."""
    r.skip_tags()  # response header v1

    def part(r):
        p = {"index": r.i32(), "error": r.i16(), "base_offset": r.i64(),
             "log_append_time": r.i64(), "log_start": r.i64()}
        r.compact_array(lambda r: (r.i32(), _cstring(r), r.skip_tags()))
        p["message"] = _cstring(r)
        p["leader"] = read_leader_hint(r, 0)
        return p

    def topic(r):
        name = uuid.UUID(bytes=r.take(16)) if version >= 13 else _cstring(r)
        parts = r.compact_array(part)
        r.skip_tags()
        return name, parts

    out = {"topics": dict(r.compact_array(topic)), "nodes": {}}
    r.i32()  # throttle_time_ms
    out["nodes"] = read_node_endpoints(r)
    assert r.done(), "trailing bytes in the Produce response"
    return out


def produce(sock, correlation_id, topic, partition, batch, version=11, **kw):
    """One flexible Produce, its response read."""
    return read_produce_flexible(request(
        sock, produce_flexible(correlation_id, topic, partition, batch, version, **kw),
        correlation_id), version)


# --- ListOffsets (key 2) ---------------------------------------------------------------------

def list_offsets_v1(correlation_id, topic, partition, timestamp):
    return (header_v1(2, 1, correlation_id) + i32(-1)
            + i32(1) + string(topic) + i32(1) + i32(partition) + i64(timestamp))


def list_offsets_v7(correlation_id, topic, partition, timestamp):
    return (header_v2(2, 7, correlation_id) + i32(-1) + i8(0)
            + uvarint(2) + compact_string(topic)
            + uvarint(2) + i32(partition) + i32(-1) + i64(timestamp) + uvarint(0)
            + uvarint(0) + uvarint(0))


def read_list_offsets(r, version):
    """Returns (error, timestamp, offset) of the single partition answered."""
    if version >= 6:
        r.skip_tags()  # response header v1
        r.i32()  # throttle_time_ms
        topics = r.compact_array(
            lambda r: (_cstring(r), r.compact_array(_lo_part_v7), r.skip_tags()))
        r.skip_tags()
    else:
        topics = r.array(lambda r: (r.string(), r.array(
            lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
    [(_, [(_, error, timestamp, offset)], *_)] = topics
    return error, timestamp, offset


def _cstring(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def _lo_part_v7(r):
    p = (r.i32(), r.i16(), r.i64(), r.i64())
    r.i32()  # leader_epoch
    r.skip_tags()
    return p


# --- consumer groups (classic protocol), non-flexible versions -------------------------------
# FindCoordinator v2 (10), JoinGroup v5 (11), Heartbeat v3 (12), LeaveGroup v3 (13),
# SyncGroup v3 (14), DescribeGroups v4 (15), OffsetCommit v7 (8), OffsetFetch v5 (9).

def nullable_string(s):
    return string(s)  # i16(-1) for None


def bytes_(b):
    return i32(-1) if b is None else i32(len(b)) + b


def read_bytes(r):
    n = r.i32()
    return None if n < 0 else r.take(n)


def find_coordinator_v2(correlation_id, key, key_type=0):
    return header_v1(10, 2, correlation_id) + string(key) + i8(key_type)


def read_find_coordinator_v2(r):
    r.i32()  # throttle_time_ms
    return {"error": r.i16(), "message": r.string(), "node_id": r.i32(), "host": r.string(),
            "port": r.i32()}


def join_group_v5(correlation_id, group, member_id="", instance_id=None, session_ms=10000,
                  rebalance_ms=10000, protocols=(("range", b"meta"),), protocol_type="consumer"):
    return (header_v1(11, 5, correlation_id) + string(group) + i32(session_ms) + i32(rebalance_ms)
            + string(member_id) + nullable_string(instance_id) + string(protocol_type)
            + i32(len(protocols)) + b"".join(string(n) + bytes_(m) for n, m in protocols))


def read_join_group_v5(r):
    r.i32()  # throttle_time_ms
    out = {"error": r.i16(), "generation": r.i32(), "protocol": r.string(), "leader": r.string(),
           "member_id": r.string()}
    out["members"] = r.array(lambda r: (r.string(), r.string(), read_bytes(r)))
    return out


def sync_group_v3(correlation_id, group, generation, member_id, assignments=(), instance_id=None):
    return (header_v1(14, 3, correlation_id) + string(group) + i32(generation) + string(member_id)
            + nullable_string(instance_id) + i32(len(assignments))
            + b"".join(string(m) + bytes_(a) for m, a in assignments))


def read_sync_group_v3(r):
    r.i32()  # throttle_time_ms
    return {"error": r.i16(), "assignment": read_bytes(r)}


def heartbeat_v3(correlation_id, group, generation, member_id, instance_id=None):
    return (header_v1(12, 3, correlation_id) + string(group) + i32(generation) + string(member_id)
            + nullable_string(instance_id))


def read_error_only(r):
    """Heartbeat v1+ response: throttle_time_ms, error_code."""
    r.i32()
    return r.i16()


def leave_group_v3(correlation_id, group, members):
    """members: [(member_id, instance_id or None)]"""
    return (header_v1(13, 3, correlation_id) + string(group) + i32(len(members))
            + b"".join(string(m) + nullable_string(i) for m, i in members))


def read_leave_group_v3(r):
    r.i32()  # throttle_time_ms
    error = r.i16()
    return error, r.array(lambda r: (r.string(), r.string(), r.i16()))


def offset_commit_v7(correlation_id, group, generation, member_id, offsets, instance_id=None):
    """offsets: {topic: [(partition, offset, metadata or None)]}"""
    topics = b"".join(
        string(t) + i32(len(ps)) + b"".join(i32(p) + i64(o) + i32(-1) + nullable_string(m)
                                             for p, o, m in ps)
        for t, ps in offsets.items())
    return (header_v1(8, 7, correlation_id) + string(group) + i32(generation) + string(member_id)
            + nullable_string(instance_id) + i32(len(offsets)) + topics)


def read_offset_commit_v7(r):
    """{(topic, partition): error}"""
    r.i32()  # throttle_time_ms
    out = {}
    for t, ps in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, e in ps:
            out[(t, p)] = e
    return out


def offset_fetch_v5(correlation_id, group, topics=None):
    """topics: {topic: [partitions]}, or None for every committed partition."""
    body = i32(-1) if topics is None else i32(len(topics)) + b"".join(
        string(t) + i32(len(ps)) + b"".join(i32(p) for p in ps) for t, ps in topics.items())
    return header_v1(9, 5, correlation_id) + string(group) + body


def read_offset_fetch_v5(r):
    """(error, {(topic, partition): (offset, metadata, error)})"""
    r.i32()  # throttle_time_ms
    out = {}
    for t, ps in r.array(lambda r: (r.string(), r.array(
            lambda r: (r.i32(), r.i64(), r.i32(), r.string(), r.i16())))):
        for p, o, _epoch, m, e in ps:
            out[(t, p)] = (o, m, e)
    return r.i16(), out


def describe_groups_v4(correlation_id, groups):
    return (header_v1(15, 4, correlation_id) + i32(len(groups)) + b"".join(map(string, groups))
            + i8(0))


def read_describe_groups_v4(r):
    r.i32()  # throttle_time_ms

    def member(r):
        return {"member_id": r.string(), "instance_id": r.string(), "client_id": r.string(),
                "client_host": r.string(), "metadata": read_bytes(r), "assignment": read_bytes(r)}

    def group(r):
        g = {"error": r.i16(), "group": r.string(), "state": r.string(),
             "protocol_type": r.string(), "protocol": r.string(), "members": r.array(member)}
        r.i32()  # authorized_operations
        return g
    return r.array(group)


# --- Produce v3 to several partitions of one topic -------------------------------------------

def produce_v3_partitions(correlation_id, topic, batches, acks=-1, timeout_ms=10000):
    """batches: [(partition, batch bytes)]"""
    parts = b"".join(i32(p) + i32(len(b)) + b for p, b in batches)
    return (header_v1(0, 3, correlation_id) + string(None) + i16(acks) + i32(timeout_ms)
            + i32(1) + string(topic) + i32(len(batches)) + parts)


# --- OffsetCommit v2 (key 8), OffsetFetch v1 (key 9), OffsetDelete v0 (key 47) ---------------

def offset_commit_v2(correlation_id, group, offsets, generation=-1, member_id=""):
    """offsets: {(topic, partition): offset}; a simple (generation -1) commit by default."""
    by_topic = {}
    for (t, p), o in offsets.items():
        by_topic.setdefault(t, []).append((p, o))
    topics = b"".join(string(t) + i32(len(ps))
                      + b"".join(i32(p) + i64(o) + nullable_string("") for p, o in ps)
                      for t, ps in by_topic.items())
    return (header_v1(8, 2, correlation_id) + string(group) + i32(generation) + string(member_id)
            + i64(-1) + i32(len(by_topic)) + topics)


def read_offset_commit_v2(r):
    """{(topic, partition): error}"""
    out = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, e in parts:
            out[(name, p)] = e
    return out


def _partitions_by_topic(partitions):
    """[(topic, partition)] as an array of (topic, [partition])."""
    by_topic = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    return i32(len(by_topic)) + b"".join(string(t) + i32(len(ps)) + b"".join(i32(p) for p in ps)
                                         for t, ps in by_topic.items())


def offset_fetch_v1(correlation_id, group, partitions):
    """partitions: [(topic, partition)]"""
    return header_v1(9, 1, correlation_id) + string(group) + _partitions_by_topic(partitions)


def read_offset_fetch_v1(r):
    """{(topic, partition): (offset, error)}"""
    def part(r):
        p, offset = r.i32(), r.i64()
        r.string()  # metadata
        return p, offset, r.i16()

    out = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(part))):
        for p, offset, e in parts:
            out[(name, p)] = (offset, e)
    return out


def offset_delete_v0(correlation_id, group, partitions):
    return header_v1(47, 0, correlation_id) + string(group) + _partitions_by_topic(partitions)


def read_offset_delete_v0(r):
    """(error, {(topic, partition): error})"""
    error = r.i16()
    r.i32()  # throttle_time_ms
    out = {}
    for name, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, e in parts:
            out[(name, p)] = e
    return error, out
