"""Issue 3's APIs on the wire, by hand (wire.py): what ApiVersions advertises, DescribeCluster
v0 and OffsetForLeaderEpoch v3, whose answers the Java client only uses indirectly."""
import wire
from clients import create_topic, produce_all
from targets import make_target  # noqa: F401  (fixture)
from wire import compact_string, i8, i32, uvarint

UNKNOWN_LEADER_EPOCH = 75

# api key: (name, highest version the max must reach, a version the range must include)
REQUIRED = {
    21: ("DeleteRecords", 0, None),
    22: ("InitProducerId", 4, None),
    23: ("OffsetForLeaderEpoch", 3, 2),
    32: ("DescribeConfigs", 4, None),
    33: ("AlterConfigs", 0, None),
    35: ("DescribeLogDirs", 1, None),
    37: ("CreatePartitions", 1, None),
    44: ("IncrementalAlterConfigs", 1, None),
    60: ("DescribeCluster", 0, None),
}


def test_issue3_apis_advertised(make_target):
    broker = make_target()
    with wire.connect(broker) as s:
        err, apis = wire.read_api_versions_v3(wire.request(s, wire.api_versions_v3(1), 1))
    assert err == 0
    missing = []
    for key, (name, min_max, must_include) in REQUIRED.items():
        lo, hi = apis.get(key, (None, None))
        if hi is None or hi < min_max or (must_include is not None
                                          and not lo <= must_include <= hi):
            missing.append(f"{name}({key}): advertised {lo}..{hi}, need max >= {min_max}"
                           + (f" and {must_include} in range" if must_include else ""))
    assert not missing, "\n".join(missing)


def test_describe_cluster_v0(make_target):
    broker = make_target()
    req = wire.header_v2(60, 0, 3) + i8(0) + uvarint(0)
    with wire.connect(broker) as s:
        r = wire.request(s, req, 3)
    r.skip_tags()
    r.i32()  # throttle_time_ms
    error = r.i16()
    message = _cnstring(r)
    cluster_id = _cnstring(r)
    controller = r.i32()

    def b(r):
        x = (r.i32(), _cnstring(r), r.i32(), _cnstring(r))
        r.skip_tags()
        return x
    brokers = r.compact_array(b)
    r.i32()  # cluster_authorized_operations
    r.skip_tags()
    assert r.done(), "trailing bytes in the DescribeCluster v0 response"
    assert (error, message) == (0, None)
    assert cluster_id, "empty cluster id"
    assert controller == 1
    assert [(n, h, p) for n, h, p, _ in brokers] == [(1, "127.0.0.1", broker.port)]


def test_offset_for_leader_epoch_v3(make_target, topic_name):
    broker = make_target()
    create_topic(broker, topic_name)
    produce_all(broker, topic_name, [b"x%d" % i for i in range(5)])
    ask = lambda s, cid, current, epoch: _ofle(s, cid, topic_name, current, epoch)  # noqa: E731
    with wire.connect(broker) as s:
        # the leader epoch of a new topic's partition is 0, and it holds offsets 0..4
        assert ask(s, 1, -1, 0) == (0, 0, 5)
        assert ask(s, 2, 0, 0) == (0, 0, 5)
        # a newer epoch than the leader knows is not answered: the leader may be behind
        assert ask(s, 3, 7, 0)[0] == UNKNOWN_LEADER_EPOCH
        # an epoch past the latest one: undefined epoch and offset
        assert ask(s, 4, -1, 9) == (0, -1, -1)


def _ofle(s, cid, topic, current_epoch, epoch):
    req = (wire.header_v1(23, 3, cid) + i32(-1) + i32(1) + wire.string(topic)
           + i32(1) + i32(0) + i32(current_epoch) + i32(epoch))
    r = wire.request(s, req, cid)
    r.i32()  # throttle_time_ms
    [(_, [p])] = r.array(lambda r: (r.string(), r.array(
        lambda r: (r.i16(), r.i32(), r.i32(), r.i64()))))
    error, partition, leader_epoch, end_offset = p
    assert partition == 0
    return error, leader_epoch, end_offset


def _cnstring(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()
