"""The Java client (kafka-clients 4.x from Maven Central) against the broker.

Two Java programs, each one JVM run shared by the tests below it (see proto-tests/java/src):
- ProducerConsumerCheck: the default producer (idempotent, acks=all) sends records to two
  partitions, two producers in turn, one zstd-compressed; offsets are checked from the send
  futures; then a consumer with assign() and seek() reads every record back exactly (offsets,
  keys, values, headers, timestamps), seeks into the middle of batches, and offsetsForTimes.
- AdminCheck: AdminClient describeCluster, createTopics, describeTopics, describeConfigs (topic
  and broker), incrementalAlterConfigs, createPartitions, deleteRecords, describeLogDirs,
  deleteTopics, each with Kafka's error cases.
"""
import uuid

import pytest

from clients import create_topic
from javatools import assert_section, java_main
from targets import module_target, shared_target  # noqa: F401  (fixtures)

PRODUCER_CONSUMER = ["producer-defaults", "default-producer-sends", "assign-seek-consumer"]
ADMIN = ["describeCluster", "createTopics", "describeTopics", "describeConfigs-topic",
         "describeConfigs-broker", "incrementalAlterConfigs", "createPartitions", "deleteRecords",
         "describeLogDirs", "deleteTopics"]


@pytest.fixture(scope="module")
def producer_consumer_run(module_target):
    topic = f"java-pc-{uuid.uuid4().hex[:8]}"
    create_topic(module_target, topic, partitions=2)
    return java_main("gregor.prototests.ProducerConsumerCheck", module_target.bootstrap, topic)


@pytest.fixture(scope="module")
def admin_run(module_target):
    return java_main("gregor.prototests.AdminCheck", module_target.bootstrap,
                     f"java-admin-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("section", PRODUCER_CONSUMER)
def test_java_producer_consumer(shared_target, producer_consumer_run, section):
    assert_section(producer_consumer_run, section)


@pytest.mark.parametrize("section", ADMIN)
def test_java_admin(shared_target, admin_run, section):
    assert_section(admin_run, section)


def test_java_programs_exit_status(shared_target, producer_consumer_run, admin_run):
    """Each program exits 0 exactly when all its sections passed (and it ran them all)."""
    for proc, names in ((producer_consumer_run, PRODUCER_CONSUMER), (admin_run, ADMIN)):
        for n in names:
            assert_section(proc, n)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
