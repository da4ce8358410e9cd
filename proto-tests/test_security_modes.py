"""Security settings beyond the defaults of the other security modules (issue 12):

- ssl.client.auth=requested (on the SSL listener, by its listener.name.ssl. prefix): a client
  without a certificate connects as User:ANONYMOUS, one with alice's certificate as her
  subject DN, and a certificate from an untrusted CA still fails the handshake;
- allow.everyone.if.no.acl.found=true: a topic without any ACL is open to every principal (also
  User:ANONYMOUS on PLAINTEXT), a topic with an ACL only to whom it names;
- listener.name.<l>.sasl.enabled.mechanisms: SASL_PLAINTEXT enables SCRAM-SHA-512 only, so
  PLAIN there gets UNSUPPORTED_SASL_MECHANISM listing just that, while SASL_SSL keeps all three;
- the PLAIN users come from the global sasl.jaas.config (Gregor's interface accepts it; Kafka's
  broker reads only listener-prefixed JAAS configs, so the Kafka target copies it to
  listener.name.sasl_ssl.plain.sasl.jaas.config: for Kafka this part checks nothing).

One broker for the module. PROTO_TESTS_TARGET=kafka runs it against Apache Kafka 4.3.1.
"""
import socket
import ssl
import uuid

import pytest

import wire
from security import (ALICE_DN, TOPIC_AUTHORIZATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
                      Identity, acl, attach_logs, bootstrap_of, certs,  # noqa: F401
                      closed_without_answer, connect, create_acls, create_topics, mtls,
                      new_secure_target, plain_jaas, produce, rdkafka_conf,
                      read_sasl_handshake, sasl, sasl_handshake_v1, scram_login, serving,
                      tls_context, upsert_scram, wait_for)


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    extra = {"allow.everyone.if.no.acl.found": "true",
             "listener.name.sasl_plaintext.sasl.enabled.mechanisms": "SCRAM-SHA-512",
             # PLAIN between brokers needs a listener that enables PLAIN
             "inter.broker.listener.name": "SASL_SSL"}
    b = new_secure_target(tmp_path_factory.mktemp("modes"), certs,
                          ssl_client_auth="requested", extra=extra)
    # the PLAIN users from the global sasl.jaas.config instead of the per-listener ones
    for k in [k for k in b.kafka_config if k.endswith(".plain.sasl.jaas.config")]:
        del b.kafka_config[k]
    b.kafka_config["sasl.jaas.config"] = plain_jaas()
    with serving(b) as b:
        upsert_scram(b, certs, users={"alice": "alice-scram-pw"},
                     mechanisms=("SCRAM-SHA-512",))
        yield b


@pytest.fixture
def broker(request, secure):
    attach_logs(request, secure)
    return secure


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def writes(broker, certs, ident, topic):
    """The set of error codes of a one-record produce (empty: written)."""
    acked, failed, _ = produce(rdkafka_conf(bootstrap_of(broker, ident.listener), certs, ident),
                               topic, [b"x"], timeout=10)
    return {e.code() for e in failed} if not acked else set()


def test_requested_client_auth_principals(broker, certs):
    anonymous_only, alice_only = name("md-anon"), name("md-alice")
    create_topics(broker, certs, [anonymous_only, alice_only])
    create_acls(broker, certs, [acl("User:ANONYMOUS", "topic", anonymous_only, "WRITE"),
                                acl(f"User:{ALICE_DN}", "topic", alice_only, "WRITE")])
    bare, alice = Identity("SSL"), mtls("alice")
    wait_for(lambda: writes(broker, certs, bare, anonymous_only) == set(), 20,
             "ANONYMOUS may write")
    assert writes(broker, certs, bare, alice_only) == {TOPIC_AUTHORIZATION_FAILED}
    assert writes(broker, certs, alice, alice_only) == set()
    assert writes(broker, certs, alice, anonymous_only) == {TOPIC_AUTHORIZATION_FAILED}
    # requested, not optional: a certificate that is presented must verify
    ctx = tls_context(certs, "untrusted")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", broker.listener_ports["SSL"]), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def test_allow_everyone_if_no_acl_found(broker, certs):
    open_topic, guarded = name("md-open"), name("md-guarded")
    create_topics(broker, certs, [open_topic, guarded])
    create_acls(broker, certs, [acl("User:alice", "topic", guarded, "WRITE")])
    bob, alice = sasl("SASL_SSL", "PLAIN", "bob"), sasl("SASL_SSL", "PLAIN", "alice")
    plaintext = Identity("PLAINTEXT")
    wait_for(lambda: writes(broker, certs, bob, guarded) == {TOPIC_AUTHORIZATION_FAILED}, 20,
             "the ACL on the guarded topic")
    assert writes(broker, certs, alice, guarded) == set()
    for ident in (bob, plaintext, Identity("SSL")):
        assert writes(broker, certs, ident, open_topic) == set(), ident.label


def test_per_listener_sasl_mechanisms(broker, certs):
    with connect(broker, "SASL_PLAINTEXT", certs) as s:
        err, mechs = read_sasl_handshake(wire.request(s, sasl_handshake_v1(1, "PLAIN"), 1))
        assert (err, mechs) == (UNSUPPORTED_SASL_MECHANISM, ["SCRAM-SHA-512"])
        closed_without_answer(s, timeout=3)
    with connect(broker, "SASL_PLAINTEXT", certs) as s:
        answer, _ = scram_login(s, "SCRAM-SHA-512", "alice", "alice-scram-pw")
        assert answer[0] == 0
    with connect(broker, "SASL_SSL", certs) as s:
        err, mechs = read_sasl_handshake(wire.request(s, sasl_handshake_v1(1, "PLAIN"), 1))
        assert err == 0 and set(mechs) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
