"""Real clients over every secure listener (issue 12): confluent-kafka (librdkafka 2.12+) and
franz-go each produce and consume as alice over SSL with mTLS, and over SASL_PLAINTEXT and
SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; kcat (Debian's, librdkafka 2.0.2) does the
same over mTLS and PLAIN, and its SCRAM login is refused, as Kafka 4.x refuses it (librdkafka
before 2.6.1 sends a client-final-message with the wrong nonce). The Java client is in
test_security_java.py.

One broker for the module (security.new_secure_target): PLAINTEXT, SSL (ssl.client.auth=required),
SASL_PLAINTEXT and SASL_SSL; PEM keystore and truststore; PLAIN users in the JAAS config, SCRAM
users created with AlterUserScramCredentials; the StandardAuthorizer with super users User:admin
and the admin certificate's subject. alice may write and read topics prefixed `cl-sasl-` as
User:alice and topics prefixed `cl-mtls-` as her certificate's subject
(User:CN=alice,OU=test,O=gregor), and read groups prefixed `cl-`: so each client reaches its
topic only when the broker authenticated it as the right principal. Also: the SSL listener
refuses a client without a certificate, and the admin certificate's subject is a super user.

PROTO_TESTS_TARGET=kafka runs the same tests against Apache Kafka 4.3.1 (targets.py).
"""
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

import wire
from clients import LOG
from security import (ALICE_DN, ALICE_WAYS, CLUSTER_AUTHORIZATION_FAILED,
                      TOPIC_AUTHORIZATION_FAILED, Identity, acl, attach_logs, bootstrap_of,
                      certs, connect, consume, create_acls, create_topics,  # noqa: F401
                      describe_acls, describe_acls_v1, eventually, franz, kcat,
                      list_topic_names, mtls, new_secure_target, produce, rdkafka_conf,
                      read_describe_acls_v1, sasl, secrets_in_log, serving, upsert_scram)

N = 20


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    with serving(new_secure_target(tmp_path_factory.mktemp("secure"), certs)) as b:
        upsert_scram(b, certs)
        create_acls(b, certs, [
            acl("User:alice", "topic", "cl-sasl-", "WRITE", prefixed=True),
            acl("User:alice", "topic", "cl-sasl-", "READ", prefixed=True),
            acl("User:alice", "group", "cl-", "READ", prefixed=True),
            acl(f"User:{ALICE_DN}", "topic", "cl-mtls-", "WRITE", prefixed=True),
            acl(f"User:{ALICE_DN}", "topic", "cl-mtls-", "READ", prefixed=True),
            acl(f"User:{ALICE_DN}", "group", "cl-", "READ", prefixed=True),
        ])
        # SCRAM credentials and ACLs reach the broker's caches through the metadata log
        for ident in (sasl("SASL_SSL", "SCRAM-SHA-512", "alice"),
                      sasl("SASL_SSL", "SCRAM-SHA-256", "alice")):
            eventually(lambda: list_topic_names(rdkafka_conf(bootstrap_of(b, "SASL_SSL"),
                                                             certs, ident)),
                       what=f"{ident.label} login")
        yield b


@pytest.fixture
def broker(request, secure):
    attach_logs(request, secure)
    return secure


def topic_for(ident, client):
    kind = "mtls" if ident.cert else "sasl"
    return f"cl-{kind}-{client}-{ident.label}-{uuid.uuid4().hex[:6]}"


def ids(ways):
    return [w.label for w in ways]


KCAT_WAYS = [w for w in ALICE_WAYS if not (w.mechanism or "").startswith("SCRAM")]
KCAT_SCRAM = [w for w in ALICE_WAYS if (w.mechanism or "").startswith("SCRAM")]


@pytest.mark.parametrize("ident", KCAT_WAYS, ids=ids(KCAT_WAYS))
def test_kcat_produce_consume(broker, certs, ident):
    topic = topic_for(ident, "kcat")
    create_topics(broker, certs, [topic])
    lines = [f"kcat-{ident.label}-{i}" for i in range(N)]
    bs = bootstrap_of(broker, ident.listener)
    kcat(bs, certs, ident, "-P", "-t", topic, "-p", "0",
         input=("\n".join(lines) + "\n").encode())
    out = kcat(bs, certs, ident, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
               "-f", "%o|%s\\n").stdout.decode().splitlines()
    assert out == [f"{i}|{v}" for i, v in enumerate(lines)]


@pytest.mark.parametrize("ident", KCAT_SCRAM, ids=ids(KCAT_SCRAM))
def test_kcat_scram_is_refused_as_kafka_4_refuses_it(broker, certs, ident):
    """Debian's kcat links librdkafka 2.0.2, whose SCRAM client-final-message repeats the
    client nonce after the server's combined nonce (fixed in librdkafka 2.6.1). Kafka 4.x checks
    the nonce as RFC 5802 says and refuses it: SASL_AUTHENTICATION_FAILED, "invalid
    credentials", although the password is right (confluent-kafka's newer librdkafka and the
    other clients log in with the same credentials; test_security_bad_input.py checks the nonce
    rule on the wire)."""
    res = kcat(bootstrap_of(broker, ident.listener), certs, ident, "-L", "-m", "5",
               check=False)
    assert res.returncode != 0
    err = res.stderr.decode(errors="replace")
    assert "SASL authentication error: Authentication failed" in err, err[-2000:]


@pytest.mark.parametrize("ident", ALICE_WAYS, ids=ids(ALICE_WAYS))
def test_confluent_produce_consume_in_a_group(broker, certs, ident):
    """Produce, then read back with subscribe() in a group and commit (FindCoordinator,
    JoinGroup, SyncGroup, OffsetCommit all over the secure listener as alice)."""
    topic = topic_for(ident, "ck")
    create_topics(broker, certs, [topic])
    conf = rdkafka_conf(bootstrap_of(broker, ident.listener), certs, ident)
    values = [f"ck-{ident.label}-{i}".encode() for i in range(N)]
    acked, failed, _ = produce(conf, topic, values)
    assert not failed and [o for o, _ in acked] == list(range(N))
    got, errors = consume(conf, topic, N, group=f"cl-g-{uuid.uuid4().hex[:8]}",
                          subscribe=True)
    assert got == values, errors


@pytest.mark.parametrize("ident", ALICE_WAYS, ids=ids(ALICE_WAYS))
def test_franz_go_produce_consume(broker, certs, ident):
    topic = topic_for(ident, "franz")
    create_topics(broker, certs, [topic])
    rep = franz(bootstrap_of(broker, ident.listener), certs, ident, "-topic", topic, "-n", N)
    assert rep == {"produced": N, "produce_error": "", "produce_error_code": 0,
                   "consumed": N, "consume_error": "", "values_ok": True}


def test_mtls_principal_is_the_certificate_subject(broker, certs):
    """The certificate's subject DN is the principal: alice's certificate reaches `cl-mtls-`
    topics, not `cl-sasl-` ones (granted to User:alice only), and SASL alice the reverse."""
    t_mtls, t_sasl = (f"cl-{k}-who-{uuid.uuid4().hex[:6]}" for k in ("mtls", "sasl"))
    create_topics(broker, certs, [t_mtls, t_sasl])
    cert_alice = rdkafka_conf(bootstrap_of(broker, "SSL"), certs, mtls("alice"))
    sasl_alice = rdkafka_conf(bootstrap_of(broker, "SASL_SSL"), certs,
                              sasl("SASL_SSL", "PLAIN", "alice"))
    for conf, ok, refused in ((cert_alice, t_mtls, t_sasl), (sasl_alice, t_sasl, t_mtls)):
        acked, failed, _ = produce(conf, ok, [b"x"])
        assert len(acked) == 1 and not failed
        acked, failed, _ = produce(conf, refused, [b"x"], timeout=10)
        assert not acked and {e.code() for e in failed} == {TOPIC_AUTHORIZATION_FAILED}
        visible = list_topic_names(conf)
        assert ok in visible and refused not in visible


def test_admin_certificate_subject_is_a_super_user(broker, certs):
    """super.users lists `User:CN=admin,OU=test,O=gregor`: over the SSL listener the admin
    certificate may describe and create ACLs (DESCRIBE and ALTER on the cluster), alice's may
    not: CLUSTER_AUTHORIZATION_FAILED. (DescribeAcls on the raw wire: confluent-kafka's
    describe_acls() returns an empty list for that error.)"""
    for who, want in (("admin", 0), ("alice", CLUSTER_AUTHORIZATION_FAILED)):
        with connect(broker, "SSL", certs, client=who) as s:
            err, _, _ = read_describe_acls_v1(wire.request(s, describe_acls_v1(7), 7))
        assert err == want, who
    name = f"cl-none-{uuid.uuid4().hex[:6]}"
    binding = acl("User:nobody", "topic", name, "READ")
    with pytest.raises(KafkaException) as e:
        create_acls(broker, certs, [binding], ident=mtls("alice"))
    assert e.value.args[0].code() == CLUSTER_AUTHORIZATION_FAILED
    create_acls(broker, certs, [binding], ident=mtls("admin"))
    assert any(b.name == name for b in describe_acls(broker, certs))


@pytest.mark.parametrize("client", ["confluent", "kcat"])
def test_ssl_listener_refuses_a_client_without_certificate(broker, certs, client):
    """ssl.client.auth=required on the SSL listener: no certificate, no connection (and no
    metadata); the same client with alice's certificate gets in."""
    bare = Identity("SSL")
    if client == "kcat":
        res = kcat(bootstrap_of(broker, "SSL"), certs, bare, "-L", "-m", "5", check=False)
        assert res.returncode != 0
        kcat(bootstrap_of(broker, "SSL"), certs, mtls("alice"), "-L", "-m", "10")
        return
    a = AdminClient({**rdkafka_conf(bootstrap_of(broker, "SSL"), certs, bare), "logger": LOG})
    with pytest.raises(KafkaException) as e:
        a.list_topics(timeout=5)
    assert e.value.args[0].code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                                      KafkaError._SSL, KafkaError._ALL_BROKERS_DOWN)
    assert list_topic_names(rdkafka_conf(bootstrap_of(broker, "SSL"), certs, mtls("alice")))


def test_no_password_in_the_broker_log(broker, certs):
    """The JAAS config (PLAIN passwords) and SCRAM passwords never reach the broker's log,
    whatever the other tests of the module did before."""
    assert list_topic_names(rdkafka_conf(bootstrap_of(broker, "SASL_SSL"), certs,
                                         sasl("SASL_SSL", "SCRAM-SHA-512", "alice")))
    assert secrets_in_log(broker) == []
