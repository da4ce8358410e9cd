"""The Java client (kafka-clients 4.x) and Kafka's CLI tools with security on (issue 12), in one
JVM run (proto-tests/java/src/gregor/prototests/SecurityCheck.java):

- kafka-configs --entity-type users: adds SCRAM-SHA-256 (8192 iterations) and SCRAM-SHA-512
  credentials for a new user, describes them (iterations, never the password), deletes one;
  AdminClient.describeUserScramCredentials agrees, and RESOURCE_NOT_FOUND for an unknown user;
  a deleted mechanism no longer logs in;
- kafka-acls --add (operations, and --consumer), --list (by topic, group and principal),
  --remove --force; a removed WRITE stops the producer (TopicAuthorizationException; the
  idempotent producer, now without WRITE on any topic, is refused IDEMPOTENT_WRITE at
  InitProducerId: ClusterAuthorizationException, KIP-679);
- the Java producer (idempotent, acks=all) and a group consumer over SASL_SSL with
  SCRAM-SHA-512 and SCRAM-SHA-256 as that user; TopicAuthorizationException and
  GroupAuthorizationException where it has no ACL;
- the Java client as alice over SSL with mTLS (PEM keystore) and over SASL_PLAINTEXT and
  SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (PEM truststore).

Each Java section is one pytest test here. One broker for the module
(security.new_secure_target). PROTO_TESTS_TARGET=kafka runs it against Apache Kafka 4.3.1.
"""
import uuid

import pytest

from javatools import assert_section, java_main
from security import (ADMIN, ALICE_DN, ALICE_WAYS, Identity, acl, attach_logs, bootstrap_of,
                      certs, create_acls, create_topics, java_properties,  # noqa: F401
                      new_secure_target, serving, upsert_scram, write_properties)

TOOL_SECTIONS = ["kafka-configs-add-scram", "kafka-configs-describe-scram",
                 "admin-describeUserScramCredentials", "kafka-acls-add", "kafka-acls-list",
                 "java-scram-sha-512-produce-consume", "java-scram-sha-256-produce",
                 "java-refused-without-acls", "kafka-acls-remove", "kafka-configs-delete-scram"]


def label(ident):
    return ident.label.replace("_", "-").lower()


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    with serving(new_secure_target(tmp_path_factory.mktemp("java"), certs)) as b:
        yield b


@pytest.fixture(scope="module")
def java_run(secure, certs, tmp_path_factory):
    b = secure
    d = tmp_path_factory.mktemp("java-config")
    tag = uuid.uuid4().hex[:6]
    user, password = f"carol-{tag}", f"carol-pw-{tag}"
    topic, denied = f"jv-carol-{tag}", f"jv-denied-{tag}"
    upsert_scram(b, certs, users={"alice": "alice-scram-pw"})
    create_acls(b, certs, [
        acl("User:alice", "topic", "jv-sasl-", "WRITE", prefixed=True),
        acl("User:alice", "topic", "jv-sasl-", "READ", prefixed=True),
        acl(f"User:{ALICE_DN}", "topic", "jv-mtls-", "WRITE", prefixed=True),
        acl(f"User:{ALICE_DN}", "topic", "jv-mtls-", "READ", prefixed=True),
    ])
    ways = {}
    for ident in ALICE_WAYS:
        kind = "mtls" if ident.cert else "sasl"
        ways[label(ident)] = (ident, f"jv-{kind}-{label(ident)}-{tag}")
    create_topics(b, certs, [topic, denied] + [t for _, t in ways.values()])
    bs = bootstrap_of(b, "SASL_SSL")
    cfg = {
        "bootstrap": bs,
        "admin.config": write_properties(d / "admin.properties",
                                         java_properties(bs, certs, ADMIN)),
        "user": user, "password": password, "topic": topic, "denied.topic": denied,
        "group": f"jv-group-{tag}", "ways": ",".join(ways),
    }
    for mech in ("256", "512"):
        ident = Identity("SASL_SSL", f"SCRAM-SHA-{mech}", user, password)
        cfg[f"user{mech}.config"] = write_properties(d / f"user{mech}.properties",
                                                     java_properties(bs, certs, ident))
    for name, (ident, t) in ways.items():
        cfg[f"way.{name}.config"] = write_properties(
            d / f"{name}.properties",
            java_properties(bootstrap_of(b, ident.listener), certs, ident))
        cfg[f"way.{name}.topic"] = t
    path = write_properties(d / "check.properties", cfg)
    return java_main("gregor.prototests.SecurityCheck", path, timeout=300)


@pytest.fixture
def run(request, secure, java_run):
    attach_logs(request, secure)
    return java_run


@pytest.mark.parametrize("section", TOOL_SECTIONS)
def test_cli_tools_and_scram_users(run, section):
    assert_section(run, section)


@pytest.mark.parametrize("ident", ALICE_WAYS, ids=[label(w) for w in ALICE_WAYS])
def test_java_client_over(run, ident):
    assert_section(run, f"java-{label(ident)}")


def test_java_program_exit_status(run):
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
