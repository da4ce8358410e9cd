"""Shared pieces of the security proto-tests (issue 12: TLS, SASL, ACLs), for Gregor and, with
PROTO_TESTS_TARGET=kafka, for Apache Kafka itself (targets.py):

- `Certs`: a CA, a server certificate for 127.0.0.1/localhost, client certificates for mTLS
  (CN=alice and CN=admin), an expired client certificate and one from an untrusted CA, made
  once per test session with the `openssl` CLI (fixture `certs`). Keys are EC P-256 in
  unencrypted PKCS#8; a keystore file is the key followed by the certificate chain, as Kafka's
  PEM keystores (`ssl.keystore.type=PEM`) and Gregor take it.
- `security_config()`: a broker's security settings by Kafka's names (listeners, ssl.*,
  sasl.*, JAAS users, the authorizer); `new_secure_target()` an unstarted broker of the selected
  target with them, listening on PLAINTEXT (on .port, for the harness), SSL (mTLS required),
  SASL_PLAINTEXT and SASL_SSL.
- `Identity`: who a client is and how it connects (listener, SASL mechanism and credentials or
  a client certificate), turned into each client's settings: `rdkafka_conf()` (confluent-kafka,
  and kcat's -X), `java_properties()`, `franz_args()` (proto-tests/go/franzcheck).
- Admin helpers over SASL_SSL as the super user: topics, SCRAM users, ACLs (confluent-kafka's
  AdminClient); `eventually()`; kcat and franz-go runners.
- Raw wire: a TLS socket, SaslHandshake v1 and SaslAuthenticate v1/v2 (KIP-152), for the
  bad-input tests.
- `SecureCluster`: three brokers (Gregor's cluster.py nodes, or Kafka nodes) with SASL_SSL on
  the client, inter-broker and controller planes.
"""
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

import wire
from clients import LOG
from conftest import REPO, Broker, free_ports
from targets import TARGET, KafkaReferenceBroker

LISTENERS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"

# PLAIN users (JAAS user_<name> entries); "admin" is the broker's own identity and super user.
PLAIN_USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
# SCRAM users, created through AlterUserScramCredentials (other passwords than PLAIN's, so a
# test cannot pass by the wrong mechanism).
SCRAM_USERS = {"admin": "admin-scram-pw", "alice": "alice-scram-pw", "bob": "bob-scram-pw"}
SCRAM_ITERATIONS = 4096  # Kafka's minimum
# Certificate subjects (RFC 2253, as Java's X500Principal.getName() prints them).
ALICE_DN = "CN=alice,OU=test,O=gregor"
ADMIN_DN = "CN=admin,OU=test,O=gregor"
SUPER_USERS = f"User:admin;User:{ADMIN_DN}"

# Kafka error codes
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58

DEPS_BIN = REPO / ".deps" / "bin"
FRANZ_CHECK = DEPS_BIN / "franz-check"


# --- certificates --------------------------------------------------------------------------

class Certs:
    """Certificates under `root`, made with the openssl CLI. Paths (str):
    ca (the trusted CA bundle), server (keystore: key + chain; SANs DNS:localhost and
    IP:127.0.0.1), client keystores by name: alice, admin (CN=<name>,OU=test,O=gregor, signed
    by the CA), expired (signed by the CA, valid 2020-2021) and untrusted (signed by another
    CA); for each keystore also <name>_key and <name>_crt (chain only), for clients that want
    them apart (librdkafka)."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._ca("ca", "/O=gregor/CN=Gregor Test CA")
        self._ca("evil-ca", "/O=mallory/CN=Untrusted Test CA")
        self.ca = str(self.root / "ca.pem")
        self.server = self._leaf("server", "/O=gregor/OU=test/CN=localhost", "ca",
                                 san="DNS:localhost,IP:127.0.0.1")
        self.alice = self._leaf("alice", "/O=gregor/OU=test/CN=alice", "ca")
        self.admin = self._leaf("admin", "/O=gregor/OU=test/CN=admin", "ca")
        self.expired = self._leaf("expired", "/O=gregor/OU=test/CN=expired", "ca",
                                  dates=("20200101000000Z", "20210101000000Z"))
        self.untrusted = self._leaf("untrusted", "/O=gregor/OU=test/CN=alice", "evil-ca")

    def keystore(self, name):
        return getattr(self, name)

    def key(self, name):
        return str(self.root / f"{name}.key")

    def chain(self, name):
        return str(self.root / f"{name}-chain.pem")

    def _run(self, *args):
        res = subprocess.run(["openssl", *args], cwd=self.root, capture_output=True, text=True)
        if res.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)}: {res.stderr}")

    def _key(self, name):
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", f"{name}.key")  # PKCS#8, unencrypted

    def _ca(self, name, subject):
        self._key(name)
        (self.root / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\n")
        self._run("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
                  "-config", self._req_cnf())
        self._run("x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key",
                  "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
                  "-set_serial", str(uuid.uuid4().int >> 64), "-out", f"{name}.pem")
        # for `openssl ca` (the expired certificate's fixed dates)
        d = self.root / f"{name}-db"
        d.mkdir(exist_ok=True)
        (d / "index.txt").write_text("")
        (d / "serial").write_text(f"{uuid.uuid4().int >> 72:016X}\n")
        (self.root / f"{name}-ca.cnf").write_text(
            f"[ca]\ndefault_ca=CA_default\n[CA_default]\ndir={d}\ndatabase={d}/index.txt\n"
            f"new_certs_dir={d}\nserial={d}/serial\ndefault_md=sha256\npolicy=policy_any\n"
            f"unique_subject=no\n[policy_any]\ncommonName=supplied\n")

    def _req_cnf(self):
        path = self.root / "req.cnf"
        if not path.exists():
            path.write_text("[req]\ndistinguished_name=dn\nprompt=no\n[dn]\n")
        return str(path)

    def _leaf(self, name, subject, ca, san=None, dates=None):
        self._key(name)
        ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
               "extendedKeyUsage=serverAuth,clientAuth", "authorityKeyIdentifier=keyid"]
        if san:
            ext.append(f"subjectAltName={san}")
        (self.root / f"{name}.ext").write_text("\n".join(ext) + "\n")
        self._run("req", "-new", "-key", f"{name}.key", "-subj", subject,
                  "-out", f"{name}.csr", "-config", self._req_cnf())
        if dates:
            self._run("ca", "-batch", "-config", f"{ca}-ca.cnf", "-cert", f"{ca}.pem",
                      "-keyfile", f"{ca}.key", "-in", f"{name}.csr", "-out", f"{name}.crt",
                      "-startdate", dates[0], "-enddate", dates[1], "-extfile", f"{name}.ext",
                      "-preserveDN", "-notext")
        else:
            self._run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
                      "-CAkey", f"{ca}.key", "-set_serial", str(uuid.uuid4().int >> 64),
                      "-days", "825", "-sha256", "-extfile", f"{name}.ext",
                      "-out", f"{name}.crt")
        crt = (self.root / f"{name}.crt").read_text()
        ca_pem = (self.root / f"{ca}.pem").read_text()
        (self.root / f"{name}-chain.pem").write_text(crt + ca_pem)
        key = (self.root / f"{name}.key").read_text()
        path = self.root / f"{name}-keystore.pem"
        path.write_text(key + crt + ca_pem)
        return str(path)


_CERTS = []


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """The session's certificates (made once, whichever module asks first)."""
    if not _CERTS:
        _CERTS.append(Certs(tmp_path_factory.mktemp("certs")))
    return _CERTS[0]


# --- broker settings -----------------------------------------------------------------------

def plain_jaas(users=PLAIN_USERS, me="admin"):
    """A PlainLoginModule JAAS config: `me` is the broker's own identity, every user_<name> an
    accepted user."""
    entries = " ".join(f'user_{u}="{p}"' for u, p in users.items())
    return (f'{PLAIN_LOGIN} required username="{me}" password="{users[me]}" {entries};')


def security_config(certs, ports, *, mechanisms=",".join(MECHANISMS), authorizer=True,
                    super_users=SUPER_USERS, ssl_client_auth="required", extra=None):
    """Security settings by Kafka's names for listeners {name: port} on 127.0.0.1: a PEM
    keystore and truststore, the SSL listener with ssl.client.auth=`ssl_client_auth` (its
    listener.name.ssl. override), `mechanisms` on the SASL listeners with the PLAIN users of
    PLAIN_USERS, and (authorizer=True) the StandardAuthorizer with `super_users`. The broker
    talks to itself as User:admin over SASL_PLAINTEXT, else SASL_SSL (PLAIN), when there is
    one: Kafka's broker sends itself requests that need CLUSTER_ACTION (AddPartitionsToTxn to
    verify a transaction, KIP-890)."""
    cfg = {
        "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "ssl.keystore.type": "PEM", "ssl.keystore.location": certs.server,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": certs.ca,
    }
    if "SSL" in ports and ssl_client_auth:
        cfg["listener.name.ssl.ssl.client.auth"] = ssl_client_auth
    sasl = [n for n in ports if n.startswith("SASL_")]
    if sasl:
        cfg["sasl.enabled.mechanisms"] = mechanisms
        for n in sasl:
            cfg[f"listener.name.{n.lower()}.plain.sasl.jaas.config"] = plain_jaas()
    if authorizer:
        cfg["authorizer.class.name"] = STANDARD_AUTHORIZER
        cfg["super.users"] = super_users
        inter = next((n for n in ("SASL_PLAINTEXT", "SASL_SSL") if n in ports), None)
        if inter:  # the broker's own requests to itself (e.g. KIP-890 transaction checks)
            cfg["inter.broker.listener.name"] = inter
            cfg["sasl.mechanism.inter.broker.protocol"] = "PLAIN"
    cfg.update(extra or {})
    return cfg


def gregor_env_name(key):
    """GREGOR_KAFKA_<NAME> for a Kafka key: dots become `_`, a literal `_` becomes `__`."""
    return "GREGOR_KAFKA_" + key.upper().replace("_", "__").replace(".", "_")


def _ports_avoiding(n, taken):
    while True:
        ports = free_ports(n)
        if not set(ports) & set(taken):
            return ports


def new_secure_target(workdir, certs, listeners=LISTENERS, **opts):
    """An unstarted broker of the selected target (Gregor by default; Kafka with
    PROTO_TESTS_TARGET=kafka) in `workdir` with security_config(certs, ..., **opts) on
    `listeners`. PLAINTEXT (when listed) is on .port, so the harness's plain helpers work.
    Gregor gets the settings in its TOML file's [kafka] table; Kafka's broker logs at INFO
    (its log then shows authentication failures, for the no-secret-in-the-log checks).
    .listener_ports is {name: port}."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if TARGET == "gregor":
        b = Broker(workdir)
        taken = [b.port, b.controller_port, b.admin_port]
    else:
        b = KafkaReferenceBroker(workdir, log_level="info")
        taken = [b.port, b.controller_port]
    others = [n for n in listeners if n != "PLAINTEXT"]
    ports = dict(zip(others, _ports_avoiding(len(others), taken)))
    if "PLAINTEXT" in listeners:
        ports = {"PLAINTEXT": b.port, **ports}
    b.listener_ports = ports
    b.kafka_config = security_config(certs, ports, **opts)
    return b


@contextmanager
def serving(b, timeout=60):
    """For a module fixture: starts `b`, yields it, stops it by pid; fails when it died during
    the module's tests or did not stop cleanly."""
    b.start(timeout) if isinstance(b, KafkaReferenceBroker) else b.start()
    try:
        yield b
    except BaseException:
        b.stop()
        raise
    was_alive = b.alive()
    code = b.stop()
    assert was_alive, "the broker died during the module's tests\n" + b.log_tail()
    assert code == 0, f"broker exited with {code} on SIGTERM\n" + b.log_tail()


def attach_logs(request, *brokers):
    """Has conftest attach these brokers' log tails to the report of a failing test."""
    request.node._gregor_brokers = list(brokers)


def addr(target, listener):
    return f"127.0.0.1:{target.listener_ports[listener]}"


def log_text(target):
    """The broker's whole log (Gregor: <workdir>/gregor.log; Kafka: its stdout at INFO)."""
    try:
        return Path(target.log_path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def secrets_in_log(target):
    """Which of the test passwords appear in the broker's log."""
    text = log_text(target)
    return sorted({p for p in [*PLAIN_USERS.values(), *SCRAM_USERS.values(), "wrong-password"]
                   if p in text})


def bootstrap_of(target, listener):
    """The bootstrap address(es) of `listener`: a SecureCluster lists every node's."""
    if hasattr(target, "bootstrap_of"):
        return target.bootstrap_of(listener)
    return addr(target, listener)


# --- who a client is -----------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """How a client connects: the listener's security protocol (its name here), a SASL
    mechanism with credentials, and/or a client certificate (a Certs keystore name)."""
    listener: str
    mechanism: str = None
    user: str = None
    password: str = None
    cert: str = None

    @property
    def principal(self):
        if self.user:
            return f"User:{self.user}"
        if self.cert in ("alice", "admin"):
            return f"User:CN={self.cert},OU=test,O=gregor"
        return "User:ANONYMOUS"

    @property
    def label(self):
        what = self.mechanism or (f"mtls-{self.cert}" if self.cert else "anonymous")
        return f"{self.listener}-{what}"

    def with_password(self, password):
        return replace(self, password=password)


def sasl(listener, mechanism, user):
    """A SASL identity with the user's password for that mechanism (PLAIN_USERS or
    SCRAM_USERS)."""
    users = PLAIN_USERS if mechanism == "PLAIN" else SCRAM_USERS
    return Identity(listener, mechanism, user, users[user])


def mtls(name, listener="SSL"):
    return Identity(listener, cert=name)


ADMIN = sasl("SASL_SSL", "PLAIN", "admin")

# Every way in for alice: mTLS on SSL, and each mechanism on both SASL listeners.
ALICE_WAYS = [mtls("alice")] + [sasl(listener, m, "alice")
                                for listener in ("SASL_PLAINTEXT", "SASL_SSL")
                                for m in MECHANISMS]


def rdkafka_conf(bootstrap, certs, ident):
    """librdkafka settings (confluent-kafka, and kcat's -X) for `ident`."""
    c = {"bootstrap.servers": bootstrap, "security.protocol": ident.listener}
    if ident.listener in ("SSL", "SASL_SSL"):
        c["ssl.ca.location"] = certs.ca
        if ident.cert:
            c["ssl.certificate.location"] = certs.chain(ident.cert)
            c["ssl.key.location"] = certs.key(ident.cert)
    if ident.mechanism:
        c.update({"sasl.mechanisms": ident.mechanism, "sasl.username": ident.user,
                  "sasl.password": ident.password})
    return c


def java_properties(bootstrap, certs, ident):
    """Java client settings (also a kafka-*.sh --command-config file) for `ident`, with PEM
    trust and key stores (KIP-651)."""
    p = {"bootstrap.servers": bootstrap, "security.protocol": ident.listener}
    if ident.listener in ("SSL", "SASL_SSL"):
        p.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": certs.ca})
        if ident.cert:
            p.update({"ssl.keystore.type": "PEM",
                      "ssl.keystore.location": certs.keystore(ident.cert)})
    if ident.mechanism:
        module = PLAIN_LOGIN if ident.mechanism == "PLAIN" else SCRAM_LOGIN
        p["sasl.mechanism"] = ident.mechanism
        p["sasl.jaas.config"] = (f'{module} required username="{ident.user}" '
                                 f'password="{ident.password}";')
    return p


def write_properties(path, props):
    Path(path).write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return str(path)


def franz_args(bootstrap, certs, ident):
    """Command-line flags of proto-tests/go/franzcheck for `ident`."""
    a = ["-brokers", bootstrap]
    if ident.listener in ("SSL", "SASL_SSL"):
        a += ["-ca", certs.ca]
        if ident.cert:
            a += ["-keystore", certs.keystore(ident.cert)]
    if ident.mechanism:
        a += ["-sasl", ident.mechanism, "-user", ident.user, "-password", ident.password]
    return a


# --- waiting -------------------------------------------------------------------------------

def eventually(fn, timeout=20, what="condition", interval=0.2):
    """Calls fn() until it returns without an AssertionError or KafkaException (returns its
    value); fails with the last one after `timeout` s. For ACLs and SCRAM credentials, which
    reach a broker's authorizer and credential cache asynchronously after the request that
    made them (in Kafka as in Gregor, through the metadata log)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, KafkaException) as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s: {e}") from None
        time.sleep(interval)


def wait_for(pred, timeout=20, what="condition", interval=0.2):
    """Calls pred() until it returns something truthy (returned), as eventually() does."""
    def check():
        v = pred()
        assert v, f"{what}: {v!r}"
        return v
    return eventually(check, timeout, what, interval)


# --- admin (as the super user) -------------------------------------------------------------

def admin_client(target, certs, ident=ADMIN):
    return AdminClient({**rdkafka_conf(bootstrap_of(target, ident.listener), certs, ident),
                        "logger": LOG})


def create_topics(target, certs, names, partitions=1, rf=1, config=None, timeout=30,
                  assignment=None):
    """Creates topics as the super user and waits until each partition has a leader;
    assignment: the replicas of each partition (preferred leader first), instead of rf."""
    a = admin_client(target, certs)
    if assignment:  # confluent-kafka 2.16 refuses a replica assignment: on the wire
        partitions = len(assignment)
        node = target.nodes[assignment[0][0]] if hasattr(target, "nodes") else target
        with sasl_session(node, "SASL_SSL", certs, "admin", PLAIN_USERS["admin"]) as s:
            errors = read_create_topics_v2(wire.request(
                s, create_topics_v2(3, names, assignment, config or {}), 3))
        assert all(e == 0 for _, e, _ in errors), errors
    else:
        futs = a.create_topics([NewTopic(n, partitions, rf, config=config or {})
                                for n in names], operation_timeout=10, request_timeout=timeout)
        for f in futs.values():
            f.result(timeout)

    def ready():
        md = a.list_topics(timeout=10)
        for n in names:
            t = md.topics.get(n)
            assert t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()), f"topic {n}: {t}"
    eventually(ready, timeout, "topics have leaders")


def upsert_scram(target, certs, users=SCRAM_USERS, mechanisms=MECHANISMS[1:]):
    """SCRAM credentials for `users` ({name: password}) with each mechanism, through
    AlterUserScramCredentials (KIP-554)."""
    a = admin_client(target, certs)
    for m in mechanisms:  # Kafka refuses a user twice in one request (DUPLICATE_RESOURCE)
        ups = [UserScramCredentialUpsertion(u, ScramCredentialInfo(
            getattr(ScramMechanism, m.replace("-", "_")), SCRAM_ITERATIONS), p.encode())
            for u, p in users.items()]
        for f in a.alter_user_scram_credentials(ups).values():
            f.result(30)


def delete_scram(target, certs, user, mechanism):
    a = admin_client(target, certs)
    d = UserScramCredentialDeletion(user, getattr(ScramMechanism, mechanism.replace("-", "_")))
    for f in a.alter_user_scram_credentials([d]).values():
        f.result(30)


RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
            "cluster": ResourceType.BROKER, "transactional_id": ResourceType.TRANSACTIONAL_ID}


def acl(principal, resource, name, operation, allow=True, prefixed=False, host="*"):
    """An AclBinding: resource in RESOURCE, operation by Kafka's name (WRITE, READ, ...)."""
    return AclBinding(RESOURCE[resource], name,
                      ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
                      principal, host, getattr(AclOperation, operation),
                      AclPermissionType.ALLOW if allow else AclPermissionType.DENY)


def create_acls(target, certs, bindings, ident=ADMIN):
    a = admin_client(target, certs, ident)
    for f in a.create_acls(list(bindings), request_timeout=30).values():
        f.result(30)


def delete_acls(target, certs, bindings):
    """Deletes exactly the given bindings (as filters); returns the bindings deleted."""
    a = admin_client(target, certs)
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                b.host, b.operation, b.permission_type) for b in bindings]
    out = []
    for f in a.delete_acls(filters, request_timeout=30).values():
        out += f.result(30)
    return out


def describe_acls(target, certs, principal=None, ident=ADMIN):
    a = admin_client(target, certs, ident)
    flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    return a.describe_acls(flt, request_timeout=30).result(30)


# --- produce and consume with confluent-kafka ----------------------------------------------

class ClientErrors:
    """error_cb sink: the client-level errors a client saw (authentication, transport)."""

    def __init__(self):
        self.errors = []

    def __call__(self, err):
        self.errors.append(err)

    def codes(self):
        return {e.code() for e in self.errors}


def produce(conf, topic, values, partition=0, timeout=20, **extra):
    """Produces `values` with confluent-kafka (acks=all, no retries past `timeout`); returns
    (acked [(offset, value)], delivery errors [KafkaError], client errors [KafkaError])."""
    errs = ClientErrors()
    p = Producer({**conf, "acks": "all", "enable.idempotence": False, "linger.ms": 5,
                  "message.timeout.ms": int(timeout * 1000), "error_cb": errs,
                  "logger": LOG, **extra})
    acked, failed = [], []

    def dr(err, msg):
        (failed.append(err) if err is not None else acked.append((msg.offset(), msg.value())))

    for v in values:
        p.produce(topic, v, partition=partition, on_delivery=dr)
    p.flush(timeout + 10)
    return acked, failed, errs.errors


def consume(conf, topic, n, partition=0, group=None, timeout=20, subscribe=False, **extra):
    """Reads up to `n` messages of one partition from offset 0 (assign(), or subscribe() in
    `group`); returns (values, errors from poll and error_cb)."""
    errs = ClientErrors()
    c = Consumer({**conf, "group.id": group or f"noop-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": False, "error_cb": errs, "logger": LOG, **extra})
    values, errors = [], []
    try:
        if subscribe:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + timeout
        while len(values) < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                errors.append(m.error())
                if not m.error().retriable() and subscribe:
                    break
                continue
            values.append(m.value())
        if subscribe and values:
            c.commit(asynchronous=False)
    except KafkaException as e:
        errors.append(e.args[0])
    finally:
        c.close()
    return values, errors + errs.errors


def high_watermark(target, certs, topic, partition=0):
    """The partition's high watermark, asked as the super user."""
    c = Consumer({**rdkafka_conf(bootstrap_of(target, "SASL_SSL"), certs, ADMIN),
                  "group.id": "hwm-unused", "logger": LOG})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=15,
                                       cached=False)[1]
    finally:
        c.close()


def list_topic_names(conf):
    """The topics a client sees in an all-topics Metadata request."""
    a = AdminClient({**conf, "logger": LOG})
    return set(a.list_topics(timeout=15).topics)


# --- kcat and franz-go ---------------------------------------------------------------------

def kcat(bootstrap, certs, ident, *args, input=None, timeout=60, check=True):
    """kcat (librdkafka 2.0.2) with `ident`'s settings as -X options."""
    conf = rdkafka_conf(bootstrap, certs, ident)
    cmd = ["kcat", "-b", conf.pop("bootstrap.servers")]
    for k, v in conf.items():
        cmd += ["-X", f"{k}={v}"]
    cmd += list(args)
    res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"kcat {ident.label} {args} exited {res.returncode}\n"
                             f"stderr: {res.stderr.decode(errors='replace')[-3000:]}")
    return res


def franz(bootstrap, certs, ident, *args, timeout=60):
    """Runs proto-tests/go/franzcheck (built by scripts/install-test-deps.sh into .deps/bin);
    returns its JSON report."""
    if not FRANZ_CHECK.exists():
        pytest.fail(f"{FRANZ_CHECK} missing: run scripts/install-test-deps.sh")
    cmd = [str(FRANZ_CHECK), *franz_args(bootstrap, certs, ident), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"franz-check {ident.label} exited {res.returncode}\n"
                             f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-3000:]}")


# --- raw wire: TLS and SASL ----------------------------------------------------------------

def tls_context(certs, client=None, verify=True):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client:
        ctx.load_cert_chain(certs.chain(client), certs.key(client))
    return ctx


def connect(target, listener, certs=None, client=None, timeout=5.0):
    """A socket to `listener`, TLS-wrapped (and handshaken) on SSL and SASL_SSL."""
    s = socket.create_connection(("127.0.0.1", target.listener_ports[listener]), timeout=timeout)
    s.settimeout(timeout)
    if listener in ("SSL", "SASL_SSL"):
        s = tls_context(certs, client).wrap_socket(s, server_hostname="127.0.0.1")
    return s


def sasl_handshake_v1(correlation_id, mechanism):
    return wire.header_v1(17, 1, correlation_id) + wire.string(mechanism)


def read_sasl_handshake(r):
    return r.i16(), r.array(lambda r: r.string())


def sasl_authenticate_v1(correlation_id, auth_bytes):
    return wire.header_v1(36, 1, correlation_id) + wire.bytes_(auth_bytes)


def read_sasl_authenticate_v1(r):
    """(error_code, error_message, auth_bytes, session_lifetime_ms)."""
    return r.i16(), r.string(), wire.read_bytes(r), r.i64()


def plain_token(user, password):
    return b"\0" + user.encode() + b"\0" + password.encode()


def plain_login(sock, user, password, correlation_id=1):
    """SaslHandshake v1 (PLAIN) then SaslAuthenticate v1; returns the latter's answer, or None
    when the broker closed the connection instead of answering."""
    err, mechs = read_sasl_handshake(wire.request(sock, sasl_handshake_v1(correlation_id,
                                                                          "PLAIN"),
                                                  correlation_id))
    assert err == 0, f"SaslHandshake PLAIN: error {err}, mechanisms {mechs}"
    sock.sendall(wire.frame(sasl_authenticate_v1(correlation_id + 1,
                                                 plain_token(user, password))))
    body = recv_frame(sock)
    if body is None:
        return None
    r = wire.Reader(body)
    assert r.i32() == correlation_id + 1
    return read_sasl_authenticate_v1(r)


def recv_frame(sock):
    """wire.recv_frame that also takes a TLS alert or an abrupt TLS close as a closed
    connection (None)."""
    try:
        return wire.recv_frame(sock)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None


def closed_without_answer(sock, timeout=5.0):
    """Whether the peer closes the connection within `timeout` s without sending a Kafka
    response: EOF, a reset or a TLS alert. Returns the bytes read before the close."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return got
        except socket.timeout:
            break
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"connection still open after {timeout}s (read {got[:64]!r})")


def describe_acls_v1(correlation_id):
    """DescribeAcls v1 (key 29) matching every binding."""
    return (wire.header_v1(29, 1, correlation_id) + wire.i8(1) + wire.string(None)
            + wire.i8(1) + wire.string(None) + wire.string(None) + wire.i8(1) + wire.i8(1))


def read_describe_acls_v1(r):
    """(error_code, error_message, number of resources)."""
    r.i32()  # throttle_time_ms
    err, msg = r.i16(), r.string()
    n = r.i32()
    return err, msg, n


def sasl_session(target, listener, certs, user, password, correlation_id=1):
    """A raw socket on a SASL listener, logged in with PLAIN."""
    s = connect(target, listener, certs)
    res = plain_login(s, user, password, correlation_id)
    assert res is not None and res[0] == 0, f"PLAIN login as {user}: {res}"
    return s


# --- raw SCRAM (RFC 5802 / 7677), for the wire-level tests ----------------------------------

def _b64(b):
    return base64.b64encode(b).decode()


class ScramClient:
    """A SCRAM-SHA-256/512 client. first() gives the client-first-message; final(server_first)
    the client-final-message (repeat_client_nonce=True builds it as librdkafka before 2.6.1
    did: the client nonce appended again after the server's combined nonce);
    verify(server_final) checks the server's signature."""

    def __init__(self, mechanism, user, password):
        self.hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self.user, self.password = user, password
        self.nonce = _b64(os.urandom(18))
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first, repeat_client_nonce=False):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), f"server nonce {attrs['r']}"
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        nonce = attrs["r"] + (self.nonce if repeat_client_nonce else "")
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth = f"{self.bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.auth = auth
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        want = hmac.new(self.server_key, self.auth, self.hash).digest()
        return attrs.get("v") == _b64(want)


def sasl_authenticate(sock, correlation_id, token):
    """One SaslAuthenticate v1 round trip: (error, message, auth_bytes, session_lifetime_ms),
    or None when the broker closed the connection instead of answering."""
    sock.sendall(wire.frame(sasl_authenticate_v1(correlation_id, token)))
    body = recv_frame(sock)
    if body is None:
        return None
    r = wire.Reader(body)
    assert r.i32() == correlation_id
    return read_sasl_authenticate_v1(r)


def scram_login(sock, mechanism, user, password, correlation_id=1, repeat_client_nonce=False):
    """SaslHandshake v1 and the two SaslAuthenticate v1 rounds of SCRAM. Returns the answer to
    the last round sent (see sasl_authenticate) and the client (for verify())."""
    err, mechs = read_sasl_handshake(wire.request(sock, sasl_handshake_v1(correlation_id,
                                                                          mechanism),
                                                  correlation_id))
    assert err == 0, f"SaslHandshake {mechanism}: error {err}, mechanisms {mechs}"
    c = ScramClient(mechanism, user, password)
    first = sasl_authenticate(sock, correlation_id + 1, c.first())
    if first is None or first[0] != 0:
        return first, c
    return sasl_authenticate(sock, correlation_id + 2,
                             c.final(first[2], repeat_client_nonce)), c


# --- a three-broker cluster with SASL_SSL on every plane -----------------------------------

def cluster_config(certs, extra=None):
    """The settings every node shares: SASL_SSL for clients and between brokers (PLAIN, as
    User:admin), the CONTROLLER (Raft) plane on SASL_SSL too (listener.security.protocol.map
    CONTROLLER:SASL_SSL; the broker's TLS settings, the PLAIN identity of
    listener.name.controller.plain.sasl.jaas.config), PLAIN and SCRAM users, the authorizer."""
    cfg = {
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "ssl.keystore.type": "PEM", "ssl.keystore.location": certs.server,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": certs.ca,
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain_jaas(),
        "listener.name.controller.plain.sasl.jaas.config": plain_jaas(),
        "authorizer.class.name": STANDARD_AUTHORIZER, "super.users": SUPER_USERS,
        "offsets.topic.replication.factor": 3, "transaction.state.log.replication.factor": 3,
        "transaction.state.log.min.isr": 2, "group.initial.rebalance.delay.ms": 0,
        # a restarted broker takes its preferred leaderships back within seconds
        "leader.imbalance.check.interval.seconds": 5,
    }
    cfg.update(extra or {})
    return cfg


class SecureCluster:
    """`size` brokers (node ids 1..size) of the selected target, each with one client listener,
    SASL_SSL on its .port, and the Raft plane on its .controller_port, with cluster_config().
    Gregor's nodes are cluster.py ClusterNodes: shared settings in GREGOR_KAFKA_* variables,
    each node's `listeners` in its own TOML file. Kafka's are KafkaReferenceBrokers in KRaft
    combined mode with a static voter set. Nodes have .listener_ports {"SASL_SSL": port}."""

    def __init__(self, workdir, certs, size=3, extra=None, shared_in_env=True):
        """shared_in_env=False puts the shared settings in each Gregor node's TOML file too."""
        from cluster import ClusterNode, kafka_env
        self.workdir = Path(workdir)
        self.certs = certs
        shared = cluster_config(certs, extra)
        ports = free_ports(3 * size)
        triples = [ports[3 * i:3 * i + 3] for i in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{t[1]}" for i, t in enumerate(triples))
        cluster_id = uuid.uuid4().hex[:22]
        self.nodes = {}
        for i, t in enumerate(triples):
            node_id = i + 1
            d = self.workdir / f"node-{node_id}"
            d.mkdir(parents=True, exist_ok=True)
            own = {"listeners": f"SASL_SSL://127.0.0.1:{t[0]}"}
            if TARGET == "gregor":
                if shared_in_env:
                    n = ClusterNode(d, node_id, t, voters, kafka_env(shared), kafka_config=own)
                else:
                    n = ClusterNode(d, node_id, t, voters, {}, kafka_config={**shared, **own})
            else:
                n = KafkaReferenceBroker(d, {**shared, **own}, node_id=node_id,
                                         ports=(t[0], t[1]), voters=voters, log_level="info")
                n.cluster_id = cluster_id
            n.listener_ports = {"SASL_SSL": t[0]}
            self.nodes[node_id] = n

    def bootstrap_of(self, listener="SASL_SSL", nodes=None):
        return ",".join(addr(self.nodes[i], listener) for i in (nodes or self.nodes))

    def node_conf(self, node_id, ident=ADMIN):
        """Client settings that bootstrap from one node only."""
        return rdkafka_conf(addr(self.nodes[node_id], "SASL_SSL"), self.certs, ident)

    def _launch(self, n):
        n.launch()

    def _wait_node(self, n, timeout):
        if isinstance(n, Broker):
            n.wait_ready(timeout)

    def start(self, timeout=90):
        for n in self.nodes.values():
            self._launch(n)
        for n in self.nodes.values():
            self._wait_node(n, timeout)
        self.wait_brokers(timeout)
        return self

    def wait_brokers(self, timeout=60, nodes=None):
        """Every node (or those in `nodes`) answers Metadata over SASL_SSL as admin, listing
        all brokers."""
        for i in nodes or self.nodes:
            def registered():
                md = AdminClient({**self.node_conf(i), "logger": LOG}).list_topics(timeout=5)
                assert len(md.brokers) == len(self.nodes), f"node {i}: {md.brokers}"
            eventually(registered, timeout, f"node {i} lists every broker", interval=0.5)

    def stop_node(self, node_id):
        n = self.nodes[node_id]
        code = n.stop()
        assert code == 0, f"node {node_id}: SIGTERM exit {code}\n" + n.log_tail()

    def start_node(self, node_id, timeout=90):
        n = self.nodes[node_id]
        self._launch(n)
        self._wait_node(n, timeout)
        self.wait_brokers(timeout, nodes=[node_id])

    def shutdown(self, timeout=30):
        """Stops every node by pid: SIGTERM to all at once, then SIGKILL after `timeout`.
        {node_id: exit code} of those that were running (a JVM's 143 on SIGTERM counts as 0)."""
        running = {i: n for i, n in self.nodes.items()
                   if n.proc is not None and n.proc.poll() is None}
        for n in running.values():
            n.stopped_on_purpose = True
            n.proc.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for i, n in running.items():
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
                code = n.proc.returncode
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
                code = "SIGKILL after SIGTERM timeout"
            codes[i] = 0 if code == 143 and not isinstance(n, Broker) else code
        return codes

    def crashed(self):
        return {i: n.proc.returncode for i, n in self.nodes.items()
                if n.proc is not None and n.proc.poll() is not None
                and not getattr(n, "stopped_on_purpose", True)}

    def leaders(self, topic):
        md = AdminClient({**rdkafka_conf(self.bootstrap_of(), self.certs, ADMIN),
                          "logger": LOG}).list_topics(topic, timeout=10)
        t = md.topics[topic]
        assert t.error is None, t.error
        return {p.id: (p.leader, sorted(p.isrs), sorted(p.replicas))
                for p in t.partitions.values()}


def create_topics_v2(correlation_id, names, assignment, config, timeout_ms=10000):
    """CreateTopics v2 (key 19) with a replica assignment for each topic."""
    def topic(n):
        return (wire.string(n) + wire.i32(-1) + wire.i16(-1)
                + wire.i32(len(assignment))
                + b"".join(wire.i32(i) + wire.i32(len(r)) + b"".join(wire.i32(b) for b in r)
                           for i, r in enumerate(assignment))
                + wire.i32(len(config))
                + b"".join(wire.string(k) + wire.string(str(v)) for k, v in config.items()))
    return (wire.header_v1(19, 2, correlation_id) + wire.i32(len(names))
            + b"".join(topic(n) for n in names) + wire.i32(timeout_ms) + wire.i8(0))


def read_create_topics_v2(r):
    """[(name, error_code, error_message)]"""
    r.i32()  # throttle_time_ms
    return r.array(lambda r: (r.string(), r.i16(), r.string()))
