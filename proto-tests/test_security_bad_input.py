"""Bad input on the secure listeners (issue 12): each gets Kafka's error or a closed
connection, the broker keeps serving, and no password reaches the broker's log.

- A wrong password (PLAIN, SCRAM-SHA-256/512) or an unknown SCRAM user:
  SASL_AUTHENTICATION_FAILED (58) with Kafka's message (the same for an unknown user as for a
  wrong password), answered only after connection.failed.authentication.delay.ms (500 here),
  then the connection is closed. confluent-kafka and franz-go report the failure.
- A SCRAM client-final-message whose nonce is not the server's (as librdkafka < 2.6.1 sent it):
  58. A correct exchange succeeds and the server's signature verifies.
- An unknown or disabled mechanism in SaslHandshake: UNSUPPORTED_SASL_MECHANISM (33) with the
  enabled mechanisms, then the connection is closed.
- SaslAuthenticate, Produce or Metadata before the handshake on a SASL listener: the
  connection is closed without an answer (ApiVersions is answered).
- Random bytes or a plaintext Kafka request instead of a TLS ClientHello: closed (at most a TLS
  alert comes back).
- An expired client certificate, one from an untrusted CA, or none, on the SSL listener with
  ssl.client.auth=required: with TLS 1.2 the handshake fails; with TLS 1.3 (where the client
  finishes first) the first request is never answered and the connection closes.
- KIP-368 re-authentication with connections.max.reauth.ms=2000: SaslAuthenticate v1 reports a
  session lifetime of 2000 ms; a request after the session expired closes the connection;
  authenticating again on the connection before that extends the session; changing the
  principal on re-authentication is refused (58); a confluent-kafka producer keeps producing
  across several session lifetimes.

One broker for the module (security.new_secure_target). Each test checks afterwards that the
broker still serves every listener and that no test password is in its log.

PROTO_TESTS_TARGET=kafka runs the same tests against Apache Kafka 4.3.1 (targets.py).
"""
import os
import socket
import ssl
import time

import pytest
from confluent_kafka import KafkaError, Producer

import wire
from clients import LOG
from security import (MECHANISMS, SASL_AUTHENTICATION_FAILED,  # noqa: F401
                      UNSUPPORTED_SASL_MECHANISM, ClientErrors, Identity, attach_logs,
                      bootstrap_of, certs, closed_without_answer, connect, create_topics,
                      franz, high_watermark, mtls, new_secure_target, plain_login, plain_token,
                      rdkafka_conf, read_sasl_handshake, recv_frame, sasl,
                      sasl_authenticate_v1, sasl_handshake_v1, sasl_session, scram_login,
                      secrets_in_log, serving, tls_context, upsert_scram, wait_for)

DELAY_MS = 500
REAUTH_MS = 2000
SASL_LISTENERS = ("SASL_PLAINTEXT", "SASL_SSL")
PLAIN_FAILED = "Authentication failed: Invalid username or password"


def scram_failed(mechanism):
    return ("Authentication failed during authentication due to invalid credentials with SASL "
            f"mechanism {mechanism}")


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    extra = {"connection.failed.authentication.delay.ms": DELAY_MS,
             "connections.max.reauth.ms": REAUTH_MS}
    with serving(new_secure_target(tmp_path_factory.mktemp("bad"), certs, extra=extra)) as b:
        upsert_scram(b, certs)
        wait_for(lambda: scram_login(connect(b, "SASL_SSL", certs), "SCRAM-SHA-512", "alice",
                                     "alice-scram-pw")[0][0] == 0,
                 what="SCRAM credentials reached the broker")
        yield b


@pytest.fixture
def broker(request, secure, certs):
    attach_logs(request, secure)
    yield secure
    assert_still_serving(secure, certs)


def assert_still_serving(broker, certs):
    """Every listener answers a well-behaved client, and no test password is in the log."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.settimeout(5)
        assert wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(1), 1))[0] == 0
    with connect(broker, "SSL", certs, client="alice") as s:
        assert wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(1), 1))[0] == 0
    for listener in SASL_LISTENERS:
        with sasl_session(broker, listener, certs, "alice", "alice-secret") as s:
            md = wire.read_metadata(wire.request(s, wire.metadata_v1(5), 5), 1)
            assert md["brokers"], listener
    assert secrets_in_log(broker) == [], "passwords in the broker's log"


def answer_after(sock, correlation_id, request):
    """Sends `request`; returns (SaslAuthenticate v1 answer or None if closed, seconds)."""
    t = time.monotonic()
    sock.sendall(wire.frame(request))
    body = recv_frame(sock)
    took = time.monotonic() - t
    if body is None:
        return None, took
    r = wire.Reader(body)
    assert r.i32() == correlation_id
    return (r.i16(), r.string(), wire.read_bytes(r), r.i64()), took


# --- wrong credentials ---------------------------------------------------------------------

@pytest.mark.parametrize("listener", SASL_LISTENERS)
def test_wrong_plain_password_is_refused_after_the_delay(broker, certs, listener):
    s = connect(broker, listener, certs)
    err, mechs = read_sasl_handshake(wire.request(s, sasl_handshake_v1(1, "PLAIN"), 1))
    assert err == 0 and set(mechs) == set(MECHANISMS)
    answer, took = answer_after(s, 2, sasl_authenticate_v1(2, plain_token("alice",
                                                                          "wrong-password")))
    assert answer is not None, "closed without SASL_AUTHENTICATION_FAILED"
    assert answer[:2] == (SASL_AUTHENTICATION_FAILED, PLAIN_FAILED)
    assert took >= 0.8 * DELAY_MS / 1000, f"answered after {took:.2f}s"
    closed_without_answer(s, timeout=3)


@pytest.mark.parametrize("listener", SASL_LISTENERS)
@pytest.mark.parametrize("mechanism", MECHANISMS[1:])
def test_wrong_scram_password_or_unknown_user_is_refused(broker, certs, listener, mechanism):
    for user in ("alice", "nobody"):
        s = connect(broker, listener, certs)
        t = time.monotonic()
        answer, _ = scram_login(s, mechanism, user, "wrong-password")
        took = time.monotonic() - t
        assert answer is not None and answer[:2] == (SASL_AUTHENTICATION_FAILED,
                                                     scram_failed(mechanism)), user
        assert took >= 0.8 * DELAY_MS / 1000, f"{user}: answered after {took:.2f}s"
        closed_without_answer(s, timeout=3)


@pytest.mark.parametrize("mechanism", MECHANISMS[1:])
def test_scram_final_message_must_carry_the_servers_nonce(broker, certs, mechanism):
    s = connect(broker, "SASL_SSL", certs)
    answer, client = scram_login(s, mechanism, "alice", "alice-scram-pw")
    assert answer[0] == 0 and client.verify(answer[2]), answer
    s.close()
    s = connect(broker, "SASL_SSL", certs)
    answer, _ = scram_login(s, mechanism, "alice", "alice-scram-pw", repeat_client_nonce=True)
    assert answer is not None and answer[:2] == (SASL_AUTHENTICATION_FAILED,
                                                 scram_failed(mechanism))
    closed_without_answer(s, timeout=3)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_real_clients_report_a_wrong_password(broker, certs, mechanism):
    ident = sasl("SASL_SSL", mechanism, "alice").with_password("wrong-password")
    errs = ClientErrors()
    p = Producer({**rdkafka_conf(bootstrap_of(broker, "SASL_SSL"), certs, ident),
                  "error_cb": errs, "logger": LOG, "message.timeout.ms": 10000})
    delivered = []
    p.produce("bad-input-unwritten", b"x", on_delivery=lambda e, m: delivered.append(e))
    deadline = time.monotonic() + 15
    while KafkaError._AUTHENTICATION not in errs.codes() and time.monotonic() < deadline:
        p.poll(0.2)
    assert KafkaError._AUTHENTICATION in errs.codes(), errs.errors
    assert any("Authentication failed" in e.str() for e in errs.errors), errs.errors
    p.purge()
    p.flush(5)
    assert delivered and all(e is not None for e in delivered)
    rep = franz(bootstrap_of(broker, "SASL_SSL"), certs, ident, "-topic",
                "bad-input-unwritten", "-n", 1, "-timeout", "3s")
    assert rep["produced"] == 0 and rep["produce_error_code"] == SASL_AUTHENTICATION_FAILED, rep


# --- mechanisms and order ------------------------------------------------------------------

@pytest.mark.parametrize("listener", SASL_LISTENERS)
@pytest.mark.parametrize("mechanism", ["FOO", "GSSAPI", "OAUTHBEARER", "plain"])
def test_unknown_mechanism_lists_the_enabled_ones(broker, certs, listener, mechanism):
    s = connect(broker, listener, certs)
    err, mechs = read_sasl_handshake(wire.request(s, sasl_handshake_v1(1, mechanism), 1))
    assert err == UNSUPPORTED_SASL_MECHANISM and set(mechs) == set(MECHANISMS), (err, mechs)
    closed_without_answer(s, timeout=3)


REQUESTS_BEFORE_HANDSHAKE = {
    "SaslAuthenticate": lambda: sasl_authenticate_v1(1, b"\0alice\0alice-secret"),
    "Produce": lambda: wire.produce_v3(1, "bad-input-unwritten", 0, wire.record_batch([b"x"])),
    "Metadata": lambda: wire.metadata_v1(1),
}


@pytest.mark.parametrize("listener", SASL_LISTENERS)
@pytest.mark.parametrize("request_name", list(REQUESTS_BEFORE_HANDSHAKE))
def test_request_before_the_handshake_closes_the_connection(broker, certs, listener,
                                                            request_name):
    s = connect(broker, listener, certs)
    s.sendall(wire.frame(REQUESTS_BEFORE_HANDSHAKE[request_name]()))
    closed_without_answer(s, timeout=5)
    # ApiVersions is allowed before the handshake (KIP-35), and the login then proceeds
    s = connect(broker, listener, certs)
    assert wire.read_api_versions_v0(wire.request(s, wire.api_versions_v0(1), 1))[0] == 0
    answer = plain_login(s, "alice", "alice-secret", correlation_id=2)
    assert answer is not None and answer[0] == 0
    s.close()


# --- TLS -----------------------------------------------------------------------------------

@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
@pytest.mark.parametrize("garbage", ["random", "plaintext-kafka"])
def test_garbage_instead_of_a_client_hello(broker, certs, listener, garbage):
    data = os.urandom(512) if garbage == "random" else wire.frame(wire.api_versions_v0(1))
    with socket.create_connection(("127.0.0.1", broker.listener_ports[listener]),
                                  timeout=5) as s:
        s.sendall(data)
        got = closed_without_answer(s, timeout=5)
    assert got == b"" or got[0] == 0x15, f"not a TLS alert: {got[:32]!r}"  # 0x15: alert


@pytest.mark.parametrize("cert", ["expired", "untrusted", None], ids=["expired", "untrusted",
                                                                       "none"])
def test_bad_client_certificate_fails_the_handshake(broker, certs, cert):
    port = broker.listener_ports["SSL"]
    ctx = tls_context(certs, cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    ctx = tls_context(certs, cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(wire.frame(wire.api_versions_v0(1)))
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # refused during the handshake: fine too
        else:
            closed_without_answer(s, timeout=5)
    # a real client gets nowhere either
    ident = mtls(cert) if cert else Identity("SSL")
    rep = franz(bootstrap_of(broker, "SSL"), certs, ident, "-topic", "bad-input-unwritten",
                "-n", 1, "-timeout", "3s")
    assert rep["produced"] == 0 and rep["produce_error"], rep


# --- KIP-368 re-authentication -------------------------------------------------------------

def test_session_lifetime_and_expiry(broker, certs):
    s = connect(broker, "SASL_SSL", certs)
    answer = plain_login(s, "alice", "alice-secret")
    assert answer[0] == 0 and 0 < answer[3] <= REAUTH_MS, answer
    time.sleep(answer[3] / 1000 + 0.5)
    s.sendall(wire.frame(wire.metadata_v1(5)))
    closed_without_answer(s, timeout=5)


def test_reauthentication_extends_the_session(broker, certs):
    """Authenticating again every 0.55 lifetimes (1.1 s: Kafka takes a SaslHandshake less
    than 1 s after the last re-authentication began as an ordinary request, answered
    ILLEGAL_SASL_STATE) keeps one connection usable for two lifetimes and more."""
    s = connect(broker, "SASL_SSL", certs)
    first = plain_login(s, "alice", "alice-secret")
    assert first[0] == 0 and first[3] > 0, first
    t0 = time.monotonic()
    cid = 10
    while time.monotonic() - t0 < 2 * first[3] / 1000:
        time.sleep(0.55 * first[3] / 1000)
        again = plain_login(s, "alice", "alice-secret", correlation_id=cid)
        assert again is not None and again[0] == 0 and 0 < again[3] <= REAUTH_MS, again
        cid += 2
    md = wire.read_metadata(wire.request(s, wire.metadata_v1(cid), cid), 1)
    assert md["brokers"]
    s.close()


def test_reauthentication_cannot_change_the_principal(broker, certs):
    s = connect(broker, "SASL_SSL", certs)
    assert plain_login(s, "alice", "alice-secret")[0] == 0
    answer = plain_login(s, "bob", "bob-secret", correlation_id=10)
    assert answer is not None and answer[0] == SASL_AUTHENTICATION_FAILED, answer
    closed_without_answer(s, timeout=5)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_client_keeps_producing_across_reauthentications(broker, certs, mechanism):
    topic = f"bad-reauth-{mechanism.lower()}-{os.urandom(3).hex()}"
    create_topics(broker, certs, [topic])
    ident = sasl("SASL_SSL", mechanism, "admin")
    errs = ClientErrors()
    p = Producer({**rdkafka_conf(bootstrap_of(broker, "SASL_SSL"), certs, ident),
                  "error_cb": errs, "logger": LOG, "linger.ms": 0, "acks": "all"})
    acked, failed = [], []
    end = time.monotonic() + 2.5 * REAUTH_MS / 1000
    n = 0
    while time.monotonic() < end:
        p.produce(topic, f"r-{n}".encode(), partition=0,
                  on_delivery=lambda e, m: (failed if e else acked).append(e or m.offset()))
        n += 1
        p.poll(0.1)
    assert p.flush(15) == 0
    assert not failed and not errs.errors, (failed[:3], errs.errors[:3])
    assert acked == list(range(n))
    assert high_watermark(broker, certs, topic) == n
