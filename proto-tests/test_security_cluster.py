"""A three-broker cluster with SASL_SSL on every plane (issue 12): clients, replication between
brokers (inter.broker.listener.name=SASL_SSL, PLAIN as User:admin) and the controller (Raft)
plane (listener.security.protocol.map CONTROLLER:SASL_SSL) all use TLS with SASL.

- SCRAM users (AlterUserScramCredentials) and ACLs reach every broker: alice produces with
  acks=all to a topic with RF 3 and min.insync.replicas=2 over SCRAM-SHA-512 (confluent-kafka
  and franz-go) and reads everything back; bob, with DESCRIBE only, is refused
  (TOPIC_AUTHORIZATION_FAILED) and writes nothing.
- A broker restart (SIGTERM, start again on the same data): producing goes on while it is
  down; once it is back and leads its preferred partitions again, that broker itself still
  enforces the ACLs created before the restart (a literal DENY, bob without WRITE, a topic
  hidden from bob's Metadata), alice's SCRAM login still works, and no acknowledged record is
  lost.
- The controller port of every node speaks TLS with the broker certificate (the handshake
  verifies against the CA for 127.0.0.1) and closes on plaintext.

SecureCluster (security.py) builds the nodes: Gregor's from cluster.py (shared settings as
GREGOR_KAFKA_* variables, each node's `listeners` in its TOML file; SECURE_CLUSTER_TOML=1 puts
the shared settings in the TOML files too), or, with PROTO_TESTS_TARGET=kafka, three Apache
Kafka 4.3.1 nodes in KRaft combined mode.
"""
import os
import socket
import uuid

import pytest

import wire
from security import (TOPIC_AUTHORIZATION_FAILED, SecureCluster, acl,
                      certs, closed_without_answer, consume, create_acls,  # noqa: F401
                      create_topics, franz, high_watermark, produce, rdkafka_conf, sasl,
                      sasl_session, secrets_in_log, tls_context, upsert_scram, wait_for)

ALICE = sasl("SASL_SSL", "SCRAM-SHA-512", "alice")
BOB = sasl("SASL_SSL", "SCRAM-SHA-256", "bob")
RESTARTED = 2


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory, certs):
    c = SecureCluster(tmp_path_factory.mktemp("secure-cluster"), certs,
                      shared_in_env=os.environ.get("SECURE_CLUSTER_TOML") != "1")
    try:
        c.start()
        upsert_scram(c, certs)
        create_acls(c, certs, [acl("User:alice", "topic", "sc-", "WRITE", prefixed=True),
                               acl("User:alice", "topic", "sc-", "READ", prefixed=True),
                               acl("User:alice", "group", "sc-", "READ", prefixed=True)])
        yield c
    finally:
        crashed = c.crashed()
        codes = c.shutdown()
    assert not crashed, f"nodes died during the tests: {crashed}"
    assert all(code == 0 for code in codes.values()), f"SIGTERM exit codes: {codes}"


@pytest.fixture
def cluster(request, secure_cluster):
    request.node._gregor_brokers = list(secure_cluster.nodes.values())
    return secure_cluster


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fully_replicated(cluster, topic, leader=None):
    def check():
        for p, (lead, isr, replicas) in cluster.leaders(topic).items():
            assert len(replicas) == 3 and isr == replicas, f"partition {p}: isr {isr}"
            assert lead >= 0 and (leader is None or lead == leader), f"partition {p}: {lead}"
        return True
    return check


def raw_produce(node, certs, topic, user, password, value=b"raw"):
    with sasl_session(node, "SASL_SSL", certs, user, password) as s:
        r = wire.request(s, wire.produce_v3(9, topic, 0, wire.record_batch([value])), 9)
        return wire.read_produce_v3(r)[topic][0]["error"]


def raw_topic_names(node, certs, user, password):
    with sasl_session(node, "SASL_SSL", certs, user, password) as s:
        md = wire.read_metadata(wire.request(s, wire.metadata_v1(9), 9), 1)
    return {t["name"] for t in md["topics"]}


def test_rf3_produce_consume_with_scram_and_acls(cluster, certs):
    topic, franz_topic = name("sc-rf3"), name("sc-franz")
    create_topics(cluster, certs, [topic, franz_topic], partitions=3, rf=3,
                  config={"min.insync.replicas": "2"})
    wait_for(fully_replicated(cluster, topic), 30, "full ISR")
    create_acls(cluster, certs, [acl("User:bob", "topic", topic, "DESCRIBE")])
    conf = rdkafka_conf(cluster.bootstrap_of(), certs, ALICE)
    sent = {}
    for p in range(3):
        sent[p] = [f"p{p}-{i}".encode() for i in range(100)]
        acked, failed, _ = produce(conf, topic, sent[p], partition=p)
        assert not failed and [o for o, _ in acked] == list(range(100)), failed[:3]
    for p in range(3):
        got, errors = consume(conf, topic, 100, partition=p)
        assert got == sent[p], errors
    got, errors = consume(conf, topic, 100, partition=1, group=name("sc-group"),
                          subscribe=False)
    assert got == sent[1], errors

    bob = rdkafka_conf(cluster.bootstrap_of(), certs, BOB)

    def refused():
        acked, failed, _ = produce(bob, topic, [b"bob"], timeout=10)
        assert not acked and {e.code() for e in failed} == {TOPIC_AUTHORIZATION_FAILED}
    wait_for(lambda: refused() is None, 20, "bob refused")
    assert high_watermark(cluster, certs, topic) == 100

    rep = franz(cluster.bootstrap_of(), certs, ALICE, "-topic", franz_topic, "-n", 50)
    assert rep == {"produced": 50, "produce_error": "", "produce_error_code": 0,
                   "consumed": 50, "consume_error": "", "values_ok": True}


def test_acls_created_before_a_restart_are_enforced_by_the_restarted_broker(cluster, certs):
    others = [i for i in cluster.nodes if i != RESTARTED]
    assignment = [[RESTARTED, *others]]
    topic, denied, hidden = name("sc-restart"), name("sc-denied"), name("sc-hidden")
    create_topics(cluster, certs, [topic, denied, hidden], assignment=assignment,
                  config={"min.insync.replicas": "2"})
    for t in (topic, denied, hidden):
        wait_for(fully_replicated(cluster, t, leader=RESTARTED), 30, f"{t} on its preferred leader")
    create_acls(cluster, certs, [
        acl("User:bob", "topic", topic, "DESCRIBE"),
        acl("User:alice", "topic", denied, "WRITE", allow=False),
    ])
    node = cluster.nodes[RESTARTED]

    def enforced():
        assert raw_produce(node, certs, topic, "bob", "bob-secret") == TOPIC_AUTHORIZATION_FAILED
        assert raw_produce(node, certs, denied, "alice", "alice-secret") == \
            TOPIC_AUTHORIZATION_FAILED
        names = raw_topic_names(node, certs, "bob", "bob-secret")
        assert topic in names and hidden not in names and denied not in names
        return True
    wait_for(enforced, 20, "ACLs in effect before the restart")

    conf = rdkafka_conf(cluster.bootstrap_of(), certs, ALICE)
    before = [f"before-{i}".encode() for i in range(50)]
    acked, failed, _ = produce(conf, topic, before)
    assert len(acked) == 50 and not failed

    cluster.stop_node(RESTARTED)
    during = [f"during-{i}".encode() for i in range(50)]
    acked, failed, _ = produce(conf, topic, during, timeout=60)
    assert len(acked) == 50 and not failed, failed[:3]
    cluster.start_node(RESTARTED)
    for t in (topic, denied, hidden):
        wait_for(fully_replicated(cluster, t, leader=RESTARTED), 90,
                 f"{t} led by node {RESTARTED} again")

    # the restarted broker answers for its partitions itself, with the ACLs from before
    wait_for(enforced, 20, "ACLs enforced after the restart")
    assert raw_produce(node, certs, topic, "alice", "alice-secret", b"after") == 0
    only_node = rdkafka_conf(f"127.0.0.1:{node.listener_ports['SASL_SSL']}", certs, ALICE)
    got, errors = consume(only_node, topic, 101)
    assert got == before + during + [b"after"], errors
    assert high_watermark(cluster, certs, denied) == 0
    for i, n in cluster.nodes.items():
        assert secrets_in_log(n) == [], f"passwords in node {i}'s log"


def test_controller_plane_speaks_tls(cluster, certs):
    for i, node in cluster.nodes.items():
        with socket.create_connection(("127.0.0.1", node.controller_port), timeout=5) as raw:
            with tls_context(certs).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.version() in ("TLSv1.2", "TLSv1.3"), f"node {i}"
        with socket.create_connection(("127.0.0.1", node.controller_port), timeout=5) as s:
            s.sendall(wire.frame(wire.api_versions_v0(1)))
            got = closed_without_answer(s, timeout=5)
            assert got == b"" or got[0] == 0x15, f"node {i}: {got[:32]!r}"
