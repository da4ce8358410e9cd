"""DescribeTopicPartitions under ACLs (authorizer on), as Kafka's handler authorizes it: a named
topic the principal may not DESCRIBE answers TOPIC_AUTHORIZATION_FAILED with a zero topic id
(whether or not it exists), and an all-topics request leaves such topics out. Raw requests over
SASL_SSL as bob (PLAIN); the topics and ACLs are made by the super user. Passes against Kafka
4.3.1 too (PROTO_TESTS_TARGET=kafka).
"""
import uuid

import pytest

import wire
from security import (TOPIC_AUTHORIZATION_FAILED, acl, attach_logs, certs,  # noqa: F401
                      create_acls, create_topics, eventually, new_secure_target, sasl_session,
                      serving)
from test_protocol_versions import dtp_request, read_dtp


@pytest.fixture(scope="module")
def secure(tmp_path_factory, certs):
    with serving(new_secure_target(tmp_path_factory.mktemp("dtp-acls"), certs,
                                   listeners=("PLAINTEXT", "SASL_SSL"))) as b:
        yield b


def as_bob(broker, certs, topics, limit=100):
    with sasl_session(broker, "SASL_SSL", certs, "bob", "bob-secret") as s:
        return read_dtp(wire.request(s, dtp_request(4, topics, limit), 4))


def test_describe_topic_partitions_authorization(request, secure, certs):
    attach_logs(request, secure)
    tag = uuid.uuid4().hex[:8]
    seen, hidden, missing = f"dtp-seen-{tag}", f"dtp-hidden-{tag}", f"dtp-missing-{tag}"
    create_topics(secure, certs, [seen, hidden], partitions=2)
    create_acls(secure, certs, [acl("User:bob", "topic", seen, "DESCRIBE")])

    def named():
        got, cursor = as_bob(secure, certs, [hidden, missing, seen])
        assert cursor is None
        by_name = {t["name"]: t for t in got}
        assert by_name[seen]["error"] == 0, by_name
        assert [p["index"] for p in by_name[seen]["partitions"]] == [0, 1]
        for n in (hidden, missing):
            assert by_name[n]["error"] == TOPIC_AUTHORIZATION_FAILED, by_name[n]
            assert by_name[n]["id"].int == 0 and by_name[n]["partitions"] == []
        # Authorized topics first (in name order), the refused ones after them.
        assert got[0]["name"] == seen
    eventually(named, what="DESCRIBE on the topic reached the authorizer")
    got, _ = as_bob(secure, certs, [])
    assert [t["name"] for t in got] == [seen]
