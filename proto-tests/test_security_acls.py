"""ACLs (issue 12) enforced as Kafka's StandardAuthorizer enforces them, seen by real clients
(confluent-kafka) and on the raw wire:

- a principal without WRITE is refused with TOPIC_AUTHORIZATION_FAILED and nothing is written
  (with DESCRIBE, the Produce reaches the broker and its partition answers 29; without, the
  client is stopped at Metadata with 29);
- without DESCRIBE a topic is missing from an all-topics Metadata answer, and a Metadata request
  naming it (or naming a topic that does not exist) answers TOPIC_AUTHORIZATION_FAILED, so
  existence does not leak;
- DENY beats ALLOW (a literal DENY against a prefixed ALLOW, and a DENY for one user against an
  ALLOW for User:*);
- prefixed ACLs match names starting with the prefix and nothing else; literal ones match one
  name;
- a consumer without READ on its group gets GROUP_AUTHORIZATION_FAILED, and with it reads;
- CreateTopics needs CREATE (cluster or topic), CreateAcls needs ALTER on the cluster
  (CLUSTER_AUTHORIZATION_FAILED); a transactional producer needs WRITE on its transactional id;
- CreateAcls / DescribeAcls / DeleteAcls round trip, and a deleted ACL stops granting.

One broker for the module (security.new_secure_target, authorizer on, super user User:admin);
each test uses its own topic names and principals (bob, alice over SASL_SSL with PLAIN), so
tests do not see each other's ACLs. ACLs reach the authorizer asynchronously in Kafka (through
the metadata log), so a check that follows a change waits for it (security.eventually).

PROTO_TESTS_TARGET=kafka runs the same tests against Apache Kafka 4.3.1 (targets.py).
"""
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

import wire
from clients import LOG
from security import (CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED,
                      TOPIC_AUTHORIZATION_FAILED, acl, admin_client, attach_logs,
                      bootstrap_of, certs, consume, create_acls, create_topics,  # noqa: F401
                      delete_acls, describe_acls, eventually, high_watermark,
                      list_topic_names, new_secure_target, produce, rdkafka_conf, sasl,
                      sasl_session, serving, wait_for)

TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
UNKNOWN_TOPIC_OR_PARTITION = 3
BOB = sasl("SASL_SSL", "PLAIN", "bob")
ALICE = sasl("SASL_SSL", "PLAIN", "alice")


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    with serving(new_secure_target(tmp_path_factory.mktemp("acls"), certs,
                                   listeners=("PLAINTEXT", "SASL_SSL"))) as b:
        yield b


@pytest.fixture
def broker(request, secure):
    attach_logs(request, secure)
    return secure


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def conf(broker, certs, ident=BOB):
    return rdkafka_conf(bootstrap_of(broker, ident.listener), certs, ident)


def codes(errors):
    return {e.code() for e in errors}


def raw_produce(broker, certs, topic, user="bob"):
    """Produce v3 of one record as `user` (PLAIN); the partition's error code."""
    with sasl_session(broker, "SASL_SSL", certs, user, f"{user}-secret") as s:
        r = wire.request(s, wire.produce_v3(9, topic, 0, wire.record_batch([b"raw"])), 9)
        return wire.read_produce_v3(r)[topic][0]["error"]


def raw_metadata(broker, certs, topics, user="bob"):
    """Metadata v1 as `user`: {topic: error} (topics=None: all topics)."""
    with sasl_session(broker, "SASL_SSL", certs, user, f"{user}-secret") as s:
        md = wire.read_metadata(wire.request(s, wire.metadata_v1(9, topics), 9), 1)
    return {t["name"]: t["error"] for t in md["topics"]}


def test_without_write_produce_is_refused_and_nothing_is_written(broker, certs):
    described, hidden = name("acl-nowrite"), name("acl-nothing")
    create_topics(broker, certs, [described, hidden])
    create_acls(broker, certs, [acl("User:bob", "topic", described, "DESCRIBE")])
    wait_for(lambda: described in list_topic_names(conf(broker, certs)),
               what="DESCRIBE reached the authorizer")
    # DESCRIBE only: the Produce itself is refused, per partition
    assert raw_produce(broker, certs, described) == TOPIC_AUTHORIZATION_FAILED
    for topic in (described, hidden):
        acked, failed, _ = produce(conf(broker, certs), topic, [b"a", b"b"], timeout=10)
        assert not acked and codes(failed) == {TOPIC_AUTHORIZATION_FAILED}, topic
        assert high_watermark(broker, certs, topic) == 0, f"{topic}: a refused write landed"
    # and WRITE lets the same client in
    create_acls(broker, certs, [acl("User:bob", "topic", described, "WRITE")])
    wait_for(lambda: raw_produce(broker, certs, described) == 0,
               what="WRITE reached the authorizer")
    acked, failed, _ = produce(conf(broker, certs), described, [b"c"])
    assert len(acked) == 1 and not failed, failed
    assert high_watermark(broker, certs, described) == 2  # the raw record and "c"


def test_without_describe_metadata_hides_the_topic(broker, certs):
    hidden, readable, missing = name("acl-hidden"), name("acl-readable"), name("acl-missing")
    create_topics(broker, certs, [hidden, readable])
    create_acls(broker, certs, [acl("User:bob", "topic", readable, "READ")])  # implies DESCRIBE

    def check():
        everything = raw_metadata(broker, certs, None)
        assert readable in everything and hidden not in everything
        assert everything[readable] == 0
    eventually(check, what="READ reached the authorizer")
    assert hidden in raw_metadata(broker, certs, None, user="admin")
    assert hidden not in list_topic_names(conf(broker, certs))
    assert hidden in list_topic_names(conf(broker, certs, sasl("SASL_SSL", "PLAIN", "admin")))
    # named explicitly: TOPIC_AUTHORIZATION_FAILED, for an existing and a missing topic alike
    named = raw_metadata(broker, certs, [hidden, missing, readable])
    assert named == {hidden: TOPIC_AUTHORIZATION_FAILED, missing: TOPIC_AUTHORIZATION_FAILED,
                     readable: 0}


def test_deny_beats_allow(broker, certs):
    prefix = name("acl-deny") + "-"
    denied, allowed, everyone = prefix + "denied", prefix + "allowed", name("acl-everyone")
    create_topics(broker, certs, [denied, allowed, everyone])
    create_acls(broker, certs, [
        acl("User:bob", "topic", prefix, "WRITE", prefixed=True),
        acl("User:bob", "topic", denied, "WRITE", allow=False),
        acl("User:*", "topic", everyone, "WRITE"),
        acl("User:bob", "topic", everyone, "WRITE", allow=False),
    ])

    def check():
        acked, failed, _ = produce(conf(broker, certs), allowed, [b"ok"], timeout=10)
        assert len(acked) == 1, failed
    eventually(check, what="the prefixed ALLOW reached the authorizer")
    for topic in (denied, everyone):
        acked, failed, _ = produce(conf(broker, certs), topic, [b"no"], timeout=10)
        assert not acked and codes(failed) == {TOPIC_AUTHORIZATION_FAILED}, topic
        assert high_watermark(broker, certs, topic) == 0
    acked, failed, _ = produce(conf(broker, certs, ALICE), everyone, [b"alice"])
    assert len(acked) == 1 and not failed  # User:* allows alice; only bob is denied


def test_prefixed_and_literal_acls_match_as_kafka_does(broker, certs):
    base = name("acl-pfx")
    prefix = base + "-"
    literal = name("acl-lit")
    topics = {prefix + "a": True, prefix + "b.c": True, base: False, "x" + prefix: False,
              literal: True, literal + "-2": False}
    create_topics(broker, certs, list(topics))
    create_acls(broker, certs, [acl("User:bob", "topic", prefix, "WRITE", prefixed=True),
                                acl("User:bob", "topic", literal, "WRITE")])
    wait_for(lambda: raw_produce(broker, certs, prefix + "a") == 0,
               what="the ACLs reached the authorizer")
    got = {t: raw_produce(broker, certs, t) for t in topics}
    assert got == {t: 0 if ok else TOPIC_AUTHORIZATION_FAILED for t, ok in topics.items()}


def test_consumer_without_read_on_its_group_is_refused(broker, certs):
    topic, group, good_group = name("acl-grp"), name("acl-grp-g"), name("acl-grp-ok")
    create_topics(broker, certs, [topic])
    produce(conf(broker, certs, sasl("SASL_SSL", "PLAIN", "admin")), topic, [b"m1", b"m2"])
    create_acls(broker, certs, [acl("User:bob", "topic", topic, "READ"),
                                acl("User:bob", "group", good_group, "READ")])
    wait_for(lambda: topic in list_topic_names(conf(broker, certs)),
               what="READ reached the authorizer")
    got, errors = consume(conf(broker, certs), topic, 2, group=group, subscribe=True,
                          timeout=10)
    assert not got and GROUP_AUTHORIZATION_FAILED in codes(errors), errors
    got, errors = consume(conf(broker, certs), topic, 2, group=good_group, subscribe=True)
    assert got == [b"m1", b"m2"], errors


def test_create_topics_needs_create_and_create_acls_needs_cluster_alter(broker, certs):
    prefix = name("acl-create") + "-"
    a = admin_client(broker, certs, BOB)

    def create(topic):
        try:
            a.create_topics([NewTopic(topic, 1, 1)], request_timeout=15)[topic].result(20)
            return 0
        except KafkaException as e:
            return e.args[0].code()

    assert create(prefix + "one") == TOPIC_AUTHORIZATION_FAILED
    create_acls(broker, certs, [acl("User:bob", "topic", prefix, "CREATE", prefixed=True)])
    wait_for(lambda: create(prefix + "two") == 0,
               what="CREATE reached the authorizer")
    assert create(name("acl-elsewhere")) == TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        create_acls(broker, certs, [acl("User:bob", "topic", prefix, "WRITE")], ident=BOB)
    assert e.value.args[0].code() == CLUSTER_AUTHORIZATION_FAILED


def test_transactional_id_needs_write(broker, certs):
    """init_transactions without WRITE on the transactional id: FindCoordinator / InitProducerId
    answer TRANSACTIONAL_ID_AUTHORIZATION_FAILED. With it, that refusal is gone, and the
    transaction runs: a read_committed consumer sees its record."""
    topic, txn = name("acl-txn"), name("acl-txn-id")
    create_topics(broker, certs, [topic])
    create_acls(broker, certs, [acl("User:bob", "topic", topic, "WRITE")])
    wait_for(lambda: topic in list_topic_names(conf(broker, certs)),
             what="WRITE reached the authorizer")

    def init(timeout):
        p = Producer({**conf(broker, certs), "transactional.id": txn, "logger": LOG})
        try:
            p.init_transactions(timeout)
            return 0, p
        except KafkaException as e:
            return e.args[0].code(), None

    assert init(15)[0] == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    create_acls(broker, certs, [acl("User:bob", "transactional_id", txn, "WRITE")])
    code, p = wait_for(lambda: (lambda r: r if r[0] != TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                                else None)(init(5)),
                       30, "WRITE on the transactional id reached the authorizer")
    assert code == 0, code
    p.begin_transaction()
    p.produce(topic, b"in-a-transaction", partition=0)
    p.commit_transaction(15)
    values, _ = consume(conf(broker, certs, sasl("SASL_SSL", "PLAIN", "admin")), topic, 1,
                        **{"isolation.level": "read_committed"})
    assert values == [b"in-a-transaction"]


def test_acl_round_trip_and_a_deleted_acl_stops_granting(broker, certs):
    topic = name("acl-del")
    create_topics(broker, certs, [topic])
    bindings = [acl("User:bob", "topic", topic, "WRITE"), acl("User:bob", "topic", topic, "READ"),
                acl("User:alice", "topic", topic, "READ", allow=False)]
    create_acls(broker, certs, bindings)
    mine = [b for b in describe_acls(broker, certs) if b.name == topic]
    assert sorted(map(str, mine)) == sorted(map(str, bindings))
    assert sorted(map(str, (b for b in describe_acls(broker, certs, principal="User:alice")
                            if b.name == topic))) == [str(bindings[2])]
    wait_for(lambda: raw_produce(broker, certs, topic) == 0,
               what="WRITE reached the authorizer")
    deleted = delete_acls(broker, certs, [bindings[0]])
    assert [str(b) for b in deleted] == [str(bindings[0])]
    assert delete_acls(broker, certs, [bindings[0]]) == []  # nothing left to match
    wait_for(lambda: raw_produce(broker, certs, topic) == TOPIC_AUTHORIZATION_FAILED,
               what="the deletion reached the authorizer")
    assert sorted(str(b) for b in describe_acls(broker, certs) if b.name == topic) == \
        sorted(map(str, bindings[1:]))
