"""Kafka's own CLI tools (Kafka 4.x jars) with consumer groups: kafka-consumer-groups --list,
--describe (offsets, --members, --state), --reset-offsets --to-earliest --execute, --delete,
with Kafka's refusals for an active group, and kafka-console-consumer with --group (it commits,
and a second run resumes where the first stopped).

The tools print "Error: ..." and still exit 0 for these refusals, as in Kafka.
"""
import re

from clients import GroupMember, create_topic, produce_all, pump
from javatools import kafka_tool
from targets import make_target  # noqa: F401  (fixture)

FAST = {"group.initial.rebalance.delay.ms": 0}


def groups_tool(broker, *args):
    res = kafka_tool("kafka-consumer-groups", broker, *args)
    return res.stdout, res.stderr


def table(out):
    """The rows of a kafka-consumer-groups table, as dicts keyed by the header's columns."""
    ls = [l for l in out.splitlines() if l.strip()]
    i = next(i for i, l in enumerate(ls) if l.startswith("GROUP "))
    # columns are separated by at least one space; headers hold single spaces only in
    # "COORDINATOR (ID)"
    header = re.split(r"\s{2,}|\s(?=[A-Z#])", ls[i].strip())
    rows = []
    for line in ls[i + 1:]:
        if line.startswith("Error") or line.startswith("Consumer group"):
            break
        if "COORDINATOR (ID)" in header:
            m = re.fullmatch(r"(\S+)\s+(\S+\s+\(\d+\))\s+(\S+)\s+(\S+)\s+(\d+)", line.strip())
            assert m, f"unexpected --state row {line!r}"
            rows.append(dict(zip(header, m.groups())))
        else:
            rows.append(dict(zip(header, line.split())))
    return rows


def offsets_by_partition(out):
    return {int(r["PARTITION"]): r for r in table(out)}


def test_consumer_groups_list_describe_reset_delete(make_target, topic_name):
    broker = make_target(FAST)
    create_topic(broker, topic_name, partitions=2)
    for p in (0, 1):
        produce_all(broker, topic_name, [b"v%d" % i for i in range(5)], partition=p)
    group = f"cli-{topic_name}"
    m = GroupMember(broker, group, [topic_name], "m", **{"client.id": "cli-groups"})
    try:
        pump([m], lambda: len(m.records) >= 10, what="the member reading everything")
        m.consumer.commit(asynchronous=False)

        out, _ = groups_tool(broker, "--list")
        assert group in out.split(), out

        out, _ = groups_tool(broker, "--describe", "--group", group)
        rows = offsets_by_partition(out)
        assert sorted(rows) == [0, 1], out
        for r in rows.values():
            assert (r["GROUP"], r["TOPIC"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) == \
                (group, topic_name, "5", "5", "0"), out
            # the member id is the client id and a UUID, the host is as Java prints an address
            assert re.fullmatch(r"cli-groups-[0-9a-f-]{36}", r["CONSUMER-ID"]), out
            assert (r["HOST"], r["CLIENT-ID"]) == ("/127.0.0.1", "cli-groups"), out

        out, _ = groups_tool(broker, "--describe", "--group", group, "--members")
        [row] = table(out)
        assert (row["CLIENT-ID"], row["#PARTITIONS"], row["HOST"]) == ("cli-groups", "2", "/127.0.0.1")

        out, _ = groups_tool(broker, "--describe", "--group", group, "--state")
        [row] = table(out)
        assert row["COORDINATOR (ID)"].split() == [broker.bootstrap, "(1)"], out
        assert (row["ASSIGNMENT-STRATEGY"], row["STATE"], row["#MEMBERS"]) == ("range", "Stable", "1")

        # an active group: offsets are not reset, the group is not deleted
        out, _ = groups_tool(broker, "--reset-offsets", "--to-earliest", "--execute",
                             "--group", group, "--topic", topic_name)
        assert f"Error: Assignments can only be reset if the group '{group}' is inactive, " \
               f"but the current state is Stable." in out, out
        out, _ = groups_tool(broker, "--delete", "--group", group)
        assert "GroupNotEmptyException" in out, out
        out, _ = groups_tool(broker, "--describe", "--group", group)
        assert [r["CURRENT-OFFSET"] for _, r in sorted(offsets_by_partition(out).items())] == ["5", "5"]
    finally:
        m.close()

    # the member left: the group is empty
    out, err = groups_tool(broker, "--describe", "--group", group)
    assert f"Consumer group '{group}' has no active members." in err, (out, err)
    for r in offsets_by_partition(out).values():
        assert (r["CURRENT-OFFSET"], r["CONSUMER-ID"], r["HOST"], r["CLIENT-ID"]) == ("5", "-", "-", "-")
    out, _ = groups_tool(broker, "--describe", "--group", group, "--state")
    [row] = table(out)
    assert (row["ASSIGNMENT-STRATEGY"], row["STATE"], row["#MEMBERS"]) == ("-", "Empty", "0"), out

    out, _ = groups_tool(broker, "--reset-offsets", "--to-earliest", "--execute",
                         "--group", group, "--topic", topic_name)
    assert {p: r["NEW-OFFSET"] for p, r in offsets_by_partition(out).items()} == {0: "0", 1: "0"}, out
    out, _ = groups_tool(broker, "--describe", "--group", group)
    assert {p: (r["CURRENT-OFFSET"], r["LAG"]) for p, r in offsets_by_partition(out).items()} == \
        {0: ("0", "5"), 1: ("0", "5")}, out

    # a new member starts at the reset offsets
    m = GroupMember(broker, group, [topic_name], "after-reset")
    try:
        pump([m], lambda: len(m.records) >= 10, what="reading from the reset offsets")
        firsts = {}
        for _, p, o, _, _ in m.records:
            firsts.setdefault(p, o)
        assert firsts == {0: 0, 1: 0}
    finally:
        m.close()

    out, _ = groups_tool(broker, "--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out, out
    out, _ = groups_tool(broker, "--list")
    assert group not in out.split(), out
    out, _ = groups_tool(broker, "--describe", "--group", group)
    assert f"GroupIdNotFoundException: Group {group} not found." in out, out
    out, _ = groups_tool(broker, "--delete", "--group", group + "-missing")
    assert f"Group '{group}-missing' could not be deleted due to: " \
           "org.apache.kafka.common.errors.GroupIdNotFoundException" in out, out


def test_console_consumer_with_group(make_target, topic_name):
    broker = make_target(FAST)
    create_topic(broker, topic_name)
    produce_all(broker, topic_name, [b"first-%d" % i for i in range(6)])
    group = f"console-{topic_name}"

    def console(n, *extra):
        res = kafka_tool("kafka-console-consumer", broker, "--topic", topic_name, "--group", group,
                         "--max-messages", n, "--timeout-ms", 30000, *extra, timeout=90)
        return [l for l in res.stdout.splitlines() if l]

    assert console(6, "--from-beginning") == [f"first-{i}" for i in range(6)]
    out, _ = groups_tool(broker, "--describe", "--group", group)
    assert offsets_by_partition(out)[0]["CURRENT-OFFSET"] == "6", out

    # --from-beginning only applies without a committed offset: the second run resumes
    produce_all(broker, topic_name, [b"second-%d" % i for i in range(3)])
    assert console(3, "--from-beginning") == [f"second-{i}" for i in range(3)]
    out, _ = groups_tool(broker, "--describe", "--group", group)
    assert offsets_by_partition(out)[0]["CURRENT-OFFSET"] == "9", out
