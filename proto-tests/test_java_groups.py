"""The Java consumer in a group and the AdminClient's group operations (kafka-clients 4.x,
classic group protocol, Kafka 4's default group.protocol): GroupCheck (proto-tests/java/src),
one JVM run for the module, each section its own test. The broker runs with
group.initial.rebalance.delay.ms=0.

- default-assignors: two consumers with the default assignors ([range, cooperative-sticky])
  split 4 partitions 2+2, each reads its own partitions once and commits.
- range-assignor: RangeAssignor alone: {0,1} and {2,3}.
- cooperative-sticky: a second consumer takes 2 of the first one's 4 partitions; the first
  revokes only those two.
- admin-groups: listGroups/listConsumerGroups, describeConsumerGroups, describeClassicGroups,
  listConsumerGroupOffsets, alterConsumerGroupOffsets, deleteConsumerGroupOffsets,
  deleteConsumerGroups, with Kafka's errors for an active group.
"""
import uuid

import pytest

from javatools import assert_section, java_main
from targets import new_target

SECTIONS = ["default-assignors", "range-assignor", "cooperative-sticky", "admin-groups"]


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory):
    b = new_target(tmp_path_factory.mktemp("broker"),
                   {"group.initial.rebalance.delay.ms": 0}).start()
    yield b
    alive = b.alive()
    b.stop()
    assert alive, "the broker died during the module's tests\n" + b.log_tail()


@pytest.fixture(scope="module")
def group_run(group_broker):
    return java_main("gregor.prototests.GroupCheck", group_broker.bootstrap,
                     f"java-groups-{uuid.uuid4().hex[:8]}", timeout=300)


@pytest.mark.parametrize("section", SECTIONS)
def test_java_groups(request, group_broker, group_run, section):
    request.node._gregor_brokers = [group_broker]
    assert_section(group_run, section)


def test_java_group_program_exit_status(group_run):
    for s in SECTIONS:
        assert_section(group_run, s)
    assert group_run.returncode == 0, group_run.stdout[-2000:] + group_run.stderr[-2000:]
