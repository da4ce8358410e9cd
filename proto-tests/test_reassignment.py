"""Partition reassignment and leader election on a Gregor cluster, driven by the Kafka CLI tools
unchanged (kafka-leader-election, kafka-reassign-partitions), confluent-kafka's AdminClient
and raw AlterPartitionReassignments / ListPartitionReassignments requests.

One five-broker cluster (proto-tests/cluster.py) serves the module:
- test_leader_election: preferred election back to the first replica after a restart moved
  leadership away (kafka-leader-election and confluent-kafka's elect_leaders), "already
  elected" and PREFERRED_LEADER_NOT_AVAILABLE answers, and an unclean election for an explicit
  partition whose only ISR member is down; Metadata leaves fenced brokers out.
- test_reassign_cli: kafka-reassign-partitions --generate, --execute, --verify, --list and
  --cancel; removed replicas' logs are deleted.
- test_reassignment_errors: Kafka's error codes for bad requests, a reorder that completes at
  once, and ElectLeaders v0 (raw requests).
- test_move_under_load: a partition moves from brokers {1,2,3} to {2,3,4} under an idempotent
  acks=all producer; nothing acknowledged is lost, the ISR ends as {2,3,4}, broker 1 deleted
  the partition's log directory.
- test_replication_throttle: kafka-reassign-partitions --execute --throttle adds a replica to a
  partition holding 4 MB; the throttle configs it sets are described with their sources, the
  in-sync followers are not held back (acks=all writes go on), the new replica takes about as
  long to catch up as the rate implies, --verify reports the move
  complete and removes the throttle configs, and the new replica, made leader, serves every
  record.
test_scale_out_with_cluster_sh: the README's scale-out story through scripts/cluster.sh: three
brokers, `cluster.sh grow 5`, then half the partitions move onto brokers 4 and 5.
"""
import json
import time

import pytest
from confluent_kafka import ElectionType, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

import wire
from cluster import Cluster, ProducerLoad, check_log, read_all, wait_until
from clients import LOG
from conftest import GREGOR_BIN  # noqa: F401 - the binary the cluster runs
from javatools import kafka_tool
from test_cluster_failover import ClusterScript, pick_port_base

SESSION_S = 4.0
REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
ELECTION = "org.apache.kafka.tools.LeaderElectionCommand"

NO_ERROR, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT = 0, 3, 39
NO_REASSIGNMENT_IN_PROGRESS, PREFERRED_LEADER_NOT_AVAILABLE, ELECTION_NOT_NEEDED = 85, 80, 84


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("reassign"), size=5,
                kafka_config={"auto.leader.rebalance.enable": "false",
                              "broker.session.timeout.ms": int(SESSION_S * 1000)})
    try:
        c.start()
        yield c
        assert not c.crashed(), f"nodes died: {c.crashed()}\n{c.log_tails()}"
    finally:
        c.shutdown()


def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "logger": LOG})


def create(cluster, name, assignment, config=None):
    a = admin(cluster)
    fut = a.create_topics(
        [NewTopic(name, len(assignment), replica_assignment=assignment, config=config or {})],
        operation_timeout=10, request_timeout=30)
    fut[name].result(30)
    cluster.wait_fully_replicated([name], 60)


def partitions(cluster, topic):
    """{index: (leader, replicas, isr)} as a live node reports it."""
    md = cluster.metadata([topic])
    [t] = md["topics"]
    return {p["index"]: (p["leader"], p["replicas"], p["isr"]) for p in t["partitions"]}


def wait_state(cluster, topic, what, cond, timeout=60):
    try:
        return wait_until(lambda: cond(partitions(cluster, topic)), timeout, what, interval=0.2)
    except AssertionError:
        raise AssertionError(f"{what}: now {partitions(cluster, topic)}\n{cluster.log_tails(30)}")


def log_dir(cluster, node_id, topic, partition):
    return cluster.node(node_id).data_dir / "logs" / f"{topic}-{partition}"


# --- raw requests ----------------------------------------------------------------------------

def compact_ints(values):
    if values is None:
        return wire.uvarint(0)
    return wire.uvarint(len(values) + 1) + b"".join(wire.i32(v) for v in values)


def alter_reassignments(node, moves, correlation_id=7):
    """AlterPartitionReassignments v0: moves = {(topic, partition): replicas or None}.
    Returns (top-level error, {(topic, partition): error code})."""
    topics = {}
    for (t, p), replicas in moves.items():
        topics.setdefault(t, []).append((p, replicas))
    body = wire.i32(30000) + wire.uvarint(len(topics) + 1)
    for t, parts in topics.items():
        body += wire.compact_string(t) + wire.uvarint(len(parts) + 1)
        for p, replicas in parts:
            body += wire.i32(p) + compact_ints(replicas) + wire.uvarint(0)
        body += wire.uvarint(0)
    body += wire.uvarint(0)
    with wire.connect(node, timeout=40) as s:
        r = wire.request(s, wire.header_v2(45, 0, correlation_id) + body, correlation_id)
    r.skip_tags()
    r.i32()
    top = r.i16()
    r.take(max(0, r.uvarint() - 1))

    def partition(r):
        index, code = r.i32(), r.i16()
        r.take(max(0, r.uvarint() - 1))
        r.skip_tags()
        return index, code

    def topic(r):
        name = r.take(r.uvarint() - 1).decode()
        parts = r.compact_array(partition)
        r.skip_tags()
        return [((name, i), c) for i, c in parts]

    results = {}
    for entries in r.compact_array(topic):
        results.update(entries)
    return top, results


def elect_preferred_v0(node, topic, partitions, correlation_id=9):
    """ElectLeaders v0 (preferred only, not flexible): {partition: error code}."""
    body = wire.i32(1) + wire.string(topic) + wire.i32(len(partitions)) \
        + b"".join(wire.i32(p) for p in partitions) + wire.i32(30000)
    with wire.connect(node, timeout=40) as s:
        r = wire.request(s, wire.header_v1(43, 0, correlation_id) + body, correlation_id)
    r.i32()
    out = {}
    for _ in range(r.i32()):
        assert r.string() == topic
        for _ in range(r.i32()):
            p, code = r.i32(), r.i16()
            r.string()
            out[p] = code
    assert r.done()
    return out


def list_reassignments(node, correlation_id=8):
    """ListPartitionReassignments v0 for every topic: {(topic, p): (replicas, adding, removing)}."""
    body = wire.i32(30000) + wire.uvarint(0) + wire.uvarint(0)
    with wire.connect(node) as s:
        r = wire.request(s, wire.header_v2(46, 0, correlation_id) + body, correlation_id)
    r.skip_tags()
    r.i32()
    assert r.i16() == NO_ERROR
    r.take(max(0, r.uvarint() - 1))
    ints = lambda r: [r.i32() for _ in range(r.uvarint() - 1)]  # noqa: E731

    def partition(r):
        index, replicas, adding, removing = r.i32(), ints(r), ints(r), ints(r)
        r.skip_tags()
        return index, (replicas, adding, removing)

    def topic(r):
        name = r.take(r.uvarint() - 1).decode()
        parts = r.compact_array(partition)
        r.skip_tags()
        return [((name, i), v) for i, v in parts]

    out = {}
    for entries in r.compact_array(topic):
        out.update(entries)
    return out


# --- leader election -------------------------------------------------------------------------

def test_leader_election(cluster):
    create(cluster, "elect", [[1, 2, 3], [2, 3, 1]])
    create(cluster, "unclean", [[3, 4]])
    # A restart of broker 1 moves elect-0's leadership away; with auto.leader.rebalance.enable
    # off it stays away once 1 is back in the ISR.
    assert cluster.stop(1) == 0
    wait_state(cluster, "elect", "elect-0 led by 2", lambda s: s[0][0] == 2)
    cluster.start_node(1)
    cluster.wait_fully_replicated(["elect"], 60)
    assert partitions(cluster, "elect")[0][0] == 2

    out = kafka_tool(ELECTION, cluster.node(3), "--election-type", "PREFERRED",
                     "--all-topic-partitions").stdout
    assert "Successfully completed leader election (PREFERRED) for partitions" in out, out
    assert "elect-0" in out and "elect-1" not in out, out
    wait_state(cluster, "elect", "elect-0 led by 1", lambda s: s[0][0] == 1, 10)
    out = kafka_tool(ELECTION, cluster.node(2), "--election-type", "PREFERRED",
                     "--topic", "elect", "--partition", "1").stdout
    assert "Valid replica already elected for partitions elect-1" in out, out

    # unclean-0: only 3 in the ISR, and 3 down; 4 is live but out of the ISR.
    assert cluster.stop(4) == 0
    wait_state(cluster, "unclean", "ISR [3]", lambda s: s[0][2] == [3])
    assert cluster.stop(3) == 0
    stopped = time.monotonic()
    # A heartbeat that 3 acknowledged just before it stopped can get it unfenced once more
    # (and made leader again) until its session runs out: wait out one session.
    wait_until(lambda: time.monotonic() - stopped > SESSION_S + 0.5 and 3 in cluster.fenced()
               and partitions(cluster, "unclean")[0][0] == -1, 30, "unclean-0 without a leader")
    # Metadata leaves the fenced brokers 3 and 4 out, as Kafka's does.
    a = admin(cluster)
    wait_until(lambda: sorted(a.list_topics(timeout=10).brokers) == [1, 2, 5], 10,
               "Metadata without the fenced brokers")
    cluster.start_node(4)
    wait_until(lambda: sorted(a.list_topics(timeout=10).brokers) == [1, 2, 4, 5], 30,
               "Metadata with broker 4 back")
    # confluent-kafka (librdkafka) asks for a preferred election: the preferred replica is down
    # and no ISR member is live.
    futs = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition("unclean", 0)])
    [err] = futs.result(30).values()
    assert err is not None and err.code() == PREFERRED_LEADER_NOT_AVAILABLE, err
    out = kafka_tool(ELECTION, cluster.node(1), "--election-type", "UNCLEAN",
                     "--topic", "unclean", "--partition", "0").stdout
    assert "Successfully completed leader election (UNCLEAN) for partitions unclean-0" in out, out
    wait_state(cluster, "unclean", "led by 4, ISR [4]", lambda s: s[0][0] == 4 and s[0][2] == [4], 10)
    cluster.start_node(3)
    cluster.wait_fully_replicated(["unclean", "elect"], 60)
    # confluent-kafka: elect_leaders back to the preferred replica 3.
    res = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition("unclean", 0)]).result(30)
    assert list(res.values()) == [None], res
    wait_state(cluster, "unclean", "led by 3", lambda s: s[0][0] == 3, 10)


# --- kafka-reassign-partitions ---------------------------------------------------------------

def reassign(cluster, tmp_path, *args, node=1, check=True):
    return kafka_tool(REASSIGN, cluster.node(node), *args, check=check)


def last_json(out):
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_reassign_cli(cluster, tmp_path):
    create(cluster, "moves", [[1, 2], [2, 3]])
    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps({"version": 1, "topics": [{"topic": "moves"}]}))
    out = reassign(cluster, tmp_path, "--generate", "--topics-to-move-json-file", topics,
                   "--broker-list", "3,4").stdout
    assert "Current partition replica assignment" in out, out
    proposed = last_json(out)
    targets = {p["partition"]: p["replicas"] for p in proposed["partitions"]}
    assert sorted(targets) == [0, 1] and all(sorted(r) == [3, 4] for r in targets.values()), out

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(proposed))
    out = reassign(cluster, tmp_path, "--execute", "--reassignment-json-file", plan).stdout
    assert "Successfully started partition reassignments for moves-0,moves-1" in out, out
    wait_state(cluster, "moves", "moved to 3,4",
               lambda s: all(s[p][1] == targets[p] and sorted(s[p][2]) == [3, 4]
                             for p in (0, 1)))
    out = reassign(cluster, tmp_path, "--verify", "--reassignment-json-file", plan).stdout
    assert "Reassignment of partition moves-0 is completed." in out, out
    assert "Reassignment of partition moves-1 is completed." in out, out
    # The removed replicas' logs are gone.
    wait_until(lambda: not log_dir(cluster, 1, "moves", 0).exists()
               and not log_dir(cluster, 2, "moves", 0).exists()
               and not log_dir(cluster, 2, "moves", 1).exists(), 30, "removed logs deleted")

    # A reassignment that cannot finish (broker 1 is down, so it never catches up) shows in
    # --list and is cancelled with --cancel: back to the original replicas.
    assert cluster.stop(1) == 0
    wait_until(lambda: 1 in cluster.fenced(), 30, "broker 1 fenced")
    stuck = {"version": 1, "partitions": [
        {"topic": "moves", "partition": 0, "replicas": [targets[0][0], 1],
         "log_dirs": ["any", "any"]}]}
    top, errors = alter_reassignments(cluster.node(2), {("moves", 0): [targets[0][0], 1]})
    assert (top, errors) == (NO_ERROR, {("moves", 0): NO_ERROR})
    removing = [b for b in targets[0] if b != targets[0][0]]
    # Node 3 answers from its own image, which may not have the change yet (seen twice in
    # five runs on a loaded machine).
    listed = {("moves", 0): ([targets[0][0], 1] + removing, [1], removing)}
    wait_until(lambda: list_reassignments(cluster.node(3)) == listed, 10,
               "the reassignment listed by node 3")
    out = reassign(cluster, tmp_path, "--list", node=2).stdout
    assert "moves-0: replicas:" in out and "adding: 1" in out, out
    stuck_file = tmp_path / "stuck.json"
    stuck_file.write_text(json.dumps(stuck))
    # Clearing throttles would alter the configs of broker 1, which is down (in Kafka too).
    out = reassign(cluster, tmp_path, "--cancel", "--reassignment-json-file", stuck_file,
                   "--preserve-throttles", node=2).stdout
    assert "Successfully cancelled partition reassignment for: moves-0" in out, out
    wait_state(cluster, "moves", "reverted", lambda s: s[0][1] == targets[0], 10)
    assert list_reassignments(cluster.node(3)) == {}
    cluster.start_node(1)
    cluster.wait_fully_replicated(["moves"], 60)


def test_reassignment_errors(cluster):
    create(cluster, "errs", [[1, 2]])
    node = cluster.node(4)
    assert alter_reassignments(node, {("errs", 0): None}) == \
        (NO_ERROR, {("errs", 0): NO_REASSIGNMENT_IN_PROGRESS})
    assert alter_reassignments(node, {("errs", 0): [1, 1]})[1] == \
        {("errs", 0): INVALID_REPLICA_ASSIGNMENT}
    assert alter_reassignments(node, {("errs", 0): [1, 99]})[1] == \
        {("errs", 0): INVALID_REPLICA_ASSIGNMENT}
    assert alter_reassignments(node, {("errs", 0): []})[1] == \
        {("errs", 0): INVALID_REPLICA_ASSIGNMENT}
    assert alter_reassignments(node, {("errs", 5): [1, 2], ("nope", 0): [1, 2]})[1] == \
        {("errs", 5): UNKNOWN_TOPIC_OR_PARTITION, ("nope", 0): UNKNOWN_TOPIC_OR_PARTITION}
    # Reordering completes at once and moves nothing; the leader stays.
    leader = partitions(cluster, "errs")[0][0]
    assert alter_reassignments(node, {("errs", 0): [2, 1]})[1] == {("errs", 0): NO_ERROR}
    wait_state(cluster, "errs", "reordered", lambda s: s[0][:2] == (leader, [2, 1]), 10)
    assert list_reassignments(node) == {}
    # ElectLeaders v0 (preferred): the new first replica, 2, takes over.
    assert leader == 1
    assert elect_preferred_v0(node, "errs", [0]) == {0: NO_ERROR}
    wait_state(cluster, "errs", "led by 2", lambda s: s[0][0] == 2, 10)
    assert elect_preferred_v0(node, "errs", [0, 7]) == \
        {0: ELECTION_NOT_NEEDED, 7: UNKNOWN_TOPIC_OR_PARTITION}


# --- a move under load -----------------------------------------------------------------------

def test_move_under_load(cluster, tmp_path):
    create(cluster, "load", [[1, 2, 3]], config={"min.insync.replicas": "2"})
    assert partitions(cluster, "load")[0][0] == 1
    prod = ProducerLoad(cluster.bootstrap, "load", 1, rate=400)
    prod.start()
    try:
        wait_until(lambda: len(prod.acked) > 500, 60, "500 acknowledged before the move")
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": "load", "partition": 0, "replicas": [2, 3, 4]}]}))
        t0 = time.monotonic()
        reassign(cluster, tmp_path, "--execute", "--reassignment-json-file", plan, node=4)
        wait_state(cluster, "load", "moved to 2,3,4",
                   lambda s: s[0][1] == [2, 3, 4] and sorted(s[0][2]) == [2, 3, 4], 90)
        moved = time.monotonic() - t0
        prod.wait_resumed(time.monotonic(), 60, "producing after the move")
        wait_until(lambda: prod.acks_since(time.monotonic() - 1) > 100, 30, "steady again")
    finally:
        prod.stop()
    assert not prod.fatal_errors(), prod.fatal_errors()
    assert not prod.failed, prod.failed[:5]
    log, hwm = read_all(cluster.bootstrap, "load", 1)
    problems = check_log(log, hwm, prod.acked, len(prod.sent_at))
    assert not problems, problems
    state = partitions(cluster, "load")[0]
    assert state[1] == [2, 3, 4] and sorted(state[2]) == [2, 3, 4] and state[0] == 2, state
    wait_until(lambda: not log_dir(cluster, 1, "load", 0).exists(), 30,
               "broker 1 deleted load-0")
    assert log_dir(cluster, 4, "load", 0).exists()
    print(f"MEASURE reassignment under load: {len(prod.acked)} acked, {hwm[0]} in the log, "
          f"move done {moved:.1f}s after --execute started")


# --- replication throttles ------------------------------------------------------------------

THROTTLE = 200_000  # bytes/s
RATES = ("leader.replication.throttled.rate", "follower.replication.throttled.rate")
REPLICA_LISTS = ("leader.replication.throttled.replicas", "follower.replication.throttled.replicas")
DYNAMIC_BROKER_CONFIG, DEFAULT_CONFIG = 2, 5


def describe(cluster, kind, name):
    """{name: ConfigEntry} of a broker or topic, through confluent-kafka's AdminClient."""
    r, a = ConfigResource(kind, str(name)), admin(cluster)
    return a.describe_configs([r], request_timeout=30)[r].result(30)


def test_replication_throttle(cluster, tmp_path):
    topic, n, more, size = "throttled", 4000, 20, 1000
    create(cluster, topic, [[2, 3]])
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 20,
                  "enable.idempotence": True, "logger": LOG})
    for i in range(n):
        p.produce(topic, f"{i:08d}".encode().ljust(size, b"."), partition=0)
        p.poll(0)
    assert p.flush(60) == 0
    total = n * size

    # Broker 5 joins as the preferred replica, with the inter-broker throttle.
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [5, 2, 3]}]}))
    out = reassign(cluster, tmp_path, "--execute", "--reassignment-json-file", plan,
                   "--throttle", THROTTLE, node=4).stdout
    t0 = time.monotonic()
    assert f"The inter-broker throttle limit was set to {THROTTLE} B/s" in out, out
    # The tool named the current replicas leader-throttled and the new one follower-throttled,
    # and set both rates on every broker involved.
    configs = describe(cluster, ConfigResource.Type.TOPIC, topic)
    assert {k: configs[k].value for k in REPLICA_LISTS} == {
        "leader.replication.throttled.replicas": "0:2,0:3",
        "follower.replication.throttled.replicas": "0:5"}, configs
    for broker in (2, 3, 5):
        configs = describe(cluster, ConfigResource.Type.BROKER, broker)
        for k in RATES:
            assert (configs[k].value, configs[k].source) == \
                (str(THROTTLE), DYNAMIC_BROKER_CONFIG), (broker, configs[k])

    # While the leader's quota is used up, its in-sync followers are not held back: acks=all
    # writes go on (a throttled follower would wait seconds for the quota window).
    t1 = time.monotonic()
    for i in range(n, n + more):
        p.produce(topic, f"{i:08d}".encode().ljust(size, b"."), partition=0)
    assert p.flush(30) == 0
    acked_in = time.monotonic() - t1
    assert acked_in < 3, acked_in
    assert 5 not in partitions(cluster, topic)[0][2], "the move must still be in progress"

    wait_state(cluster, topic, "5 in the ISR",
               lambda s: s[0][1] == [5, 2, 3] and sorted(s[0][2]) == [2, 3, 5], 90)
    took = time.monotonic() - t0
    print(f"MEASURE throttled catch-up: {total / 1e6:.1f} MB at {THROTTLE / 1e3:.0f} KB/s "
          f"took {took:.1f}s ({total / THROTTLE:.1f}s at the rate; the first fetch takes up to "
          f"replica.fetch.max.bytes at once); {more} acks=all writes meanwhile in "
          f"{acked_in * 1000:.0f} ms")
    # Loose: at least half the time the rate implies (Kafka 4.3.1 took 17.7 s here).
    assert took >= 0.5 * total / THROTTLE, took

    out = reassign(cluster, tmp_path, "--verify", "--reassignment-json-file", plan).stdout
    assert f"Reassignment of partition {topic}-0 is completed." in out, out
    assert "Clearing broker-level throttles" in out and "Clearing topic-level throttles" in out, out
    configs = describe(cluster, ConfigResource.Type.TOPIC, topic)
    assert {(configs[k].value, configs[k].source) for k in REPLICA_LISTS} == \
        {("", DEFAULT_CONFIG)}, configs
    for broker in (2, 3, 5):
        configs = describe(cluster, ConfigResource.Type.BROKER, broker)
        # As in Kafka, the rates are listed only while set.
        assert not set(RATES) & set(configs), (broker, {k: configs[k] for k in RATES if k in configs})

    # The new replica holds every record: made leader, it serves them all.
    a = admin(cluster)
    res = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(30)
    assert list(res.values()) == [None], res
    wait_state(cluster, topic, "led by 5", lambda s: s[0][0] == 5, 10)
    log, hwm = read_all(cluster.bootstrap, topic, 1)
    assert hwm[0] == n + more, hwm
    assert [v[:8] for _, v in log[0]] == [f"{i:08d}".encode() for i in range(n + more)]


# --- scale-out with scripts/cluster.sh -------------------------------------------------------

def test_scale_out_with_cluster_sh(tmp_path):
    base = pick_port_base(size=5)
    cs = ClusterScript(tmp_path / "cluster", base)
    try:
        cs.run("start", "3")
        a = AdminClient({"bootstrap.servers": cs.bootstrap, "logger": LOG})
        a.create_topics([NewTopic("orders", 6, 2)], operation_timeout=10)["orders"].result(30)
        out = cs.run("grow", "5", timeout=180)
        assert "node 5 joined the quorum as a voter" in out, out
        wait_until(lambda: sorted(cs.kcat_metadata()[0]) == [1, 2, 3, 4, 5], 30,
                   "five brokers in Metadata")
        # Move half the partitions (0, 2, 4) onto the new brokers.
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": "orders", "partition": p, "replicas": [4, 5] if p % 4 == 0 else [5, 4]}
            for p in (0, 2, 4)]}))

        class Boot:
            bootstrap = cs.bootstrap
        kafka_tool(REASSIGN, Boot, "--execute", "--reassignment-json-file", plan)

        def moved():
            _, parts, _ = cs.kcat_metadata("orders")
            return all(p in parts and sorted(parts[p][1]) == [4, 5] for p in (0, 2, 4))
        wait_until(moved, 60, "partitions 0, 2, 4 in sync on brokers 4 and 5")
        out = kafka_tool(REASSIGN, Boot, "--verify", "--reassignment-json-file", plan).stdout
        for p in (0, 2, 4):
            assert f"Reassignment of partition orders-{p} is completed." in out, out
        _, parts, _ = cs.kcat_metadata("orders")
        assert all(parts[p][0] in (4, 5) for p in (0, 2, 4)), parts
        assert all(not set(parts[p][1]) & {4, 5} for p in (1, 3, 5)), parts
    finally:
        try:
            cs.run("stop")
        finally:
            cs.kill_leftovers()
