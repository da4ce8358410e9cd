"""Kafka's config providers (KIP-297, KIP-421, KIP-887, KIP-993) in broker settings: a
SASL_PLAINTEXT listener whose PLAIN JAAS config is put together at startup from

- `${file:PATH:KEY}` (FileConfigProvider): the login module and the broker's own password, keys
  of a Java properties file (one of them on a continued line);
- `${dir:DIR:FILE}` (DirectoryConfigProvider, with allowed.paths): the `user_<name>` entries,
  the whole content of a file in a directory laid out as Kubernetes mounts a Secret (`plain-users`
  a symlink to `..data/plain-users`, `..data` a symlink to a timestamped directory), trailing
  newline included;
- `${env:NAME}` (EnvVarConfigProvider): sasl.enabled.mechanisms.

A client with the right password produces and consumes (confluent-kafka and kcat), a wrong
password gets SASL_AUTHENTICATION_FAILED, and no password is in the broker's log.
PROTO_TESTS_TARGET=kafka runs the same against Apache Kafka. For Gregor alone: a properties file
that cannot be read, or a JAAS variable that stays unresolved, stops startup with an error that
names the path or the variable and shows no secret.
"""
import os
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from clients import LOG
from conftest import Broker
from security import (PLAIN_LOGIN, PLAIN_USERS, SASL_AUTHENTICATION_FAILED, addr,
                      attach_logs, certs, connect, consume, kcat, log_text,  # noqa: F401
                      new_secure_target, plain_login, produce, rdkafka_conf, sasl,
                      secrets_in_log, serving)
from targets import TARGET

FILE = "org.apache.kafka.common.config.provider.FileConfigProvider"
DIRECTORY = "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
ENV_VAR = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
MECHANISMS_VAR = "CP_TEST_SASL_MECHANISMS"  # (the harness drops GREGOR_* variables)


def secret_volume(root):
    """A directory as Kubernetes mounts a Secret with the key `plain-users`."""
    root.mkdir()
    data = root / "..2026_01_01_00_00_00.000000001"
    data.mkdir()
    users = " ".join(f'user_{u}="{p}"' for u, p in PLAIN_USERS.items())
    (data / "plain-users").write_text(users + "\n")  # as `kubectl create secret --from-file`
    (root / "..data").symlink_to(data.name)
    (root / "plain-users").symlink_to("..data/plain-users")
    return root


def broker_properties(path):
    """The broker's own identity, as a Java properties file."""
    path.write_text("# the broker's PLAIN identity\n"
                    f"plain.login = {PLAIN_LOGIN} \\\n"
                    "    required username=\"admin\"\n"
                    f"admin.password: {PLAIN_USERS['admin']}\n")
    return path


def provider_settings(props, volume):
    jaas = (f"${{file:{props}:plain.login}} password=\"${{file:{props}:admin.password}}\" "
            f"${{dir:{volume}:plain-users}};")
    return {
        "config.providers": "file,dir,env",
        "config.providers.file.class": FILE,
        "config.providers.dir.class": DIRECTORY,
        "config.providers.dir.param.allowed.paths": str(volume),
        "config.providers.env.class": ENV_VAR,
        "config.providers.env.param.allowlist.pattern": "CP_TEST_.*",
        "sasl.enabled.mechanisms": f"${{env:{MECHANISMS_VAR}}}",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory, certs):
    work = tmp_path_factory.mktemp("providers")
    b = new_secure_target(work / "broker", certs, listeners=("PLAINTEXT", "SASL_PLAINTEXT"),
                          authorizer=False)
    b.kafka_config.update(provider_settings(broker_properties(work / "broker.properties"),
                                            secret_volume(work / "secrets")))
    os.environ[MECHANISMS_VAR] = "PLAIN"  # both targets inherit the environment
    try:
        with serving(b) as b:
            yield b
    finally:
        os.environ.pop(MECHANISMS_VAR, None)


def test_plain_users_from_files(request, broker, certs):
    attach_logs(request, broker)
    topic = f"cp-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "logger": LOG})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    bootstrap = addr(broker, "SASL_PLAINTEXT")
    # bob is only in the Secret volume's file; admin's password only in the properties file.
    for user in ("alice", "bob", "admin"):
        conf = rdkafka_conf(bootstrap, certs, sasl("SASL_PLAINTEXT", "PLAIN", user))
        acked, failed, errors = produce(conf, topic, [user.encode()])
        assert len(acked) == 1 and not failed, (user, failed, errors)
    alice = sasl("SASL_PLAINTEXT", "PLAIN", "alice")
    values, errors = consume(rdkafka_conf(bootstrap, certs, alice), topic, 3)
    assert values == [b"alice", b"bob", b"admin"], errors
    out = kcat(bootstrap, certs, alice, "-C", "-t", topic, "-o", "beginning", "-c", "3", "-e",
               "-q", "-f", "%s\\n")
    assert out.stdout.decode().split() == ["alice", "bob", "admin"]
    # A wrong password: SASL_AUTHENTICATION_FAILED, for a raw client as for kcat.
    with connect(broker, "SASL_PLAINTEXT") as s:
        answer = plain_login(s, "alice", "wrong-password")
    assert answer is not None and answer[0] == SASL_AUTHENTICATION_FAILED, answer
    res = kcat(bootstrap, certs, alice.with_password("wrong-password"), "-L", timeout=30,
               check=False)
    assert res.returncode != 0
    assert secrets_in_log(broker) == [], "passwords in the broker's log"
    if TARGET == "gregor":
        log = log_text(broker)
        assert "config.providers" not in log, "a provider setting was warned about:\n" + log
        assert "not resolved" not in log and "left as written" not in log, log


def failed_start(workdir, kafka_config, timeout=30):
    """Gregor's exit code and log when it refuses `kafka_config` (with `listeners` added)."""
    workdir.mkdir()
    b = Broker(workdir)
    b.kafka_config = {"listeners": f"PLAINTEXT://{b.bootstrap},SASL_PLAINTEXT://127.0.0.1:1",
                      **kafka_config}
    b.launch()
    try:
        code = b.proc.wait(timeout)
    finally:
        b.stop()
    return code, b.log_path.read_text(errors="replace")


@pytest.mark.skipif(TARGET != "gregor", reason="Gregor's own startup errors")
def test_unreadable_or_unresolved_secrets_stop_startup(tmp_path):
    props = broker_properties(tmp_path / "broker.properties")
    volume = secret_volume(tmp_path / "secrets")
    base = provider_settings(props, volume)
    base["sasl.enabled.mechanisms"] = "PLAIN"
    key = "listener.name.sasl_plaintext.plain.sasl.jaas.config"
    # The properties file is missing: Kafka's "Could not read properties from file".
    missing = tmp_path / "missing.properties"
    cfg = {**base, key: base[key].replace(str(props), str(missing))}
    code, log = failed_start(tmp_path / "missing", cfg)
    assert code == 2, log
    assert f"could not read properties from file {missing}" in log, log
    # A file the Secret does not have: `${dir:...}` stays as written (as in Kafka), so the
    # JAAS text does not parse; the error names the variable and shows no password (the
    # broker's own one was resolved from the properties file).
    cfg = {**base, key: base[key].replace(":plain-users}", ":no-such-file}")}
    code, log = failed_start(tmp_path / "unresolved", cfg)
    assert code == 2, log
    assert "unresolved config variables" in log and f"${{dir:{volume}:no-such-file}}" in log, log
    assert not [p for p in PLAIN_USERS.values() if p in log], log
