"""Feature flags (KIP-584/778/1022): the supported and finalized features in ApiVersions v3+,
`kafka-features.sh describe` (FeatureCommand, with --bootstrap-server) showing metadata.version,
UpdateFeatures with Kafka's validation and error codes (upgrade past what is supported, unknown
features, downgrades without a downgrade type, dry runs), and kcat (librdkafka 2.0.2) and
confluent-kafka reading the ApiVersions answer that carries the features as tagged fields.

Gregor's levels differ from Kafka's (it supports metadata.version 3.9-IV0 only, and no other
feature above 0; see src/meta/features.rs), so the tests that pin Gregor's levels are skipped
with PROTO_TESTS_TARGET=kafka; the rest hold for both.
"""
import re

import pytest

import wire
from clients import create_topic, kcat, produce_all
from javatools import kafka_tool
from targets import TARGET, module_target, shared_target  # noqa: F401  (fixtures)
from wire import compact_string, i8, i16, i32, uvarint

INVALID_UPDATE_VERSION = 95
gregor_only = pytest.mark.skipif(TARGET != "gregor", reason="Gregor's own feature levels")


def cnstring(r):
    n = r.uvarint() - 1
    return None if n < 0 else r.take(n).decode()


def api_versions_features(broker, version):
    """(supported {name: (min, max)}, finalized {name: (min, max)}, epoch) from ApiVersions."""
    with wire.connect(broker) as s:
        r = wire.request(s, wire.api_versions_v3(1, version=version), 1)
    assert r.i16() == 0

    def item(r):
        k = (r.i16(), r.i16(), r.i16())
        r.skip_tags()
        return k
    r.compact_array(item)
    r.i32()
    supported, finalized, epoch = {}, {}, -1

    def feature(r):
        f = (cnstring(r), r.i16(), r.i16())
        r.skip_tags()
        return f
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        end = r.pos + size
        if tag == 0:
            supported = {n: (lo, hi) for n, lo, hi in r.compact_array(feature)}
        elif tag == 1:
            epoch = r.i64()
        elif tag == 2:
            # finalized: name, max_version_level, min_version_level
            finalized = {n: (lo, hi) for n, hi, lo in r.compact_array(feature)}
        r.pos = end
    assert r.done(), "trailing bytes in the ApiVersions response"
    return supported, finalized, epoch


def update_features(broker, version, updates, validate_only=False, cid=7):
    """UpdateFeatures v0-v2: updates are (feature, level, upgrade type or, in v0, allow
    downgrade). Returns (error, message, [(feature, error, message)])."""
    def key(f, level, kind):
        k = compact_string(f) + i16(level)
        k += i8(1 if kind else 0) if version == 0 else i8(kind)
        return k + uvarint(0)
    body = i32(30000) + uvarint(len(updates) + 1) + b"".join(key(*u) for u in updates)
    if version >= 1:
        body += i8(1 if validate_only else 0)
    req = wire.header_v2(57, version, cid) + body + uvarint(0)
    with wire.connect(broker) as s:
        r = wire.request(s, req, cid)
    r.skip_tags()
    r.i32()
    error, message = r.i16(), cnstring(r)
    results = []
    if version <= 1:
        def res(r):
            x = (cnstring(r), r.i16(), cnstring(r))
            r.skip_tags()
            return x
        results = r.compact_array(res)
    r.skip_tags()
    assert r.done(), "trailing bytes in the UpdateFeatures response"
    return error, message, results


@gregor_only
def test_api_versions_features(shared_target):
    for version in (3, 4):
        supported, finalized, epoch = api_versions_features(shared_target, version)
        assert supported == {"metadata.version": (21, 21)}, version
        assert finalized == {"metadata.version": (21, 21)}, version
        assert epoch > 0, "the finalized features epoch is the metadata log position"


def test_kafka_features_describe(shared_target):
    out = kafka_tool("kafka-features", shared_target, "describe").stdout
    rows = {m[0]: m[1:] for m in re.findall(
        r"Feature: (\S+)\s+SupportedMinVersion: (\S+)\s+SupportedMaxVersion: (\S+)\s+"
        r"FinalizedVersionLevel: (\S+)\s+Epoch: (\d+)", out)}
    assert "metadata.version" in rows, out
    if TARGET == "gregor":
        assert rows == {"metadata.version": ("3.9-IV0", "3.9-IV0", "3.9-IV0", rows[
            "metadata.version"][3])}, out


@gregor_only
def test_kafka_features_upgrade_refused_and_disable_allowed(shared_target):
    """Two JVMs: an upgrade of metadata.version past 3.9-IV0 and of transaction.version to 2
    (one request: the first failure fails both), then disabling group.version (at 0: a no-op
    that Kafka accepts too)."""
    res = kafka_tool("kafka-features", shared_target, "upgrade", "--feature",
                     "metadata.version=22", "--feature", "transaction.version=2", check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert ("Invalid update version 22 for feature metadata.version. Local controller 1 only "
            "supports versions 21-21") in out, out
    res = kafka_tool("kafka-features", shared_target, "disable", "--feature", "group.version")
    assert "group.version was disabled." in res.stdout, res.stdout


def test_update_features_validation(shared_target):
    """Kafka's checks, in its order, each failing the whole request with
    INVALID_UPDATE_VERSION and a message naming the feature."""
    cases = [
        (("foo.version", 1, 1), "Invalid update version 1 for feature foo.version. Local "
                                "controller 1 does not support this feature."),
        (("group.version", -1, 2), "A feature version cannot be less than 0."),
        (("group.version", 0, 7), "The controller does not support the given upgrade type."),
        (("metadata.version", 99, 1), "for feature metadata.version. Local controller 1 only "
                                      "supports versions"),
    ]
    for update, message in cases:
        error, msg, results = update_features(shared_target, 2, [update], validate_only=True)
        assert error == INVALID_UPDATE_VERSION, (update, msg)
        assert msg.startswith("The update failed for all features since the following "
                              "feature had an error: "), msg
        assert message in msg, msg
        assert results == []
    # One bad update fails the good one next to it.
    error, _, _ = update_features(shared_target, 1, [("group.version", 0, 2),
                                                     ("foo.version", 1, 1)])
    assert error == INVALID_UPDATE_VERSION


def test_update_features_downgrade_needs_a_downgrade_type(shared_target):
    _, finalized, _ = api_versions_features(shared_target, 4)
    level = finalized["metadata.version"][1]
    error, msg, _ = update_features(shared_target, 2, [("metadata.version", level - 1, 1)],
                                    validate_only=True)
    assert error == INVALID_UPDATE_VERSION, msg
    if TARGET == "gregor":
        # Gregor supports one level, so the range check comes first.
        assert "only supports versions 21-21" in msg, msg
    else:
        assert "without setting the upgrade type" in msg, msg


def test_update_features_dry_run_and_results_by_version(shared_target):
    """Disabling group.version (level 0) is accepted: v0 and v1 answer per feature, v2 only at
    the top; a dry run changes nothing. On Kafka group.version starts
    finalized at 1 and the change shows; Gregor has it at 0 already, and the accepted update is
    still a metadata record (the finalized features epoch moves only then: Gregor writes no
    records of its own meanwhile, unlike KRaft's no-op records)."""
    _, finalized, epoch_before = api_versions_features(shared_target, 4)
    assert update_features(shared_target, 1, [("group.version", 0, 2)], validate_only=True) \
        == (0, None, [("group.version", 0, "NONE")])
    _, finalized_after, epoch_after = api_versions_features(shared_target, 4)
    assert finalized_after == finalized, "a dry run changed the finalized features"
    if TARGET == "gregor":
        assert epoch_after == epoch_before, "a dry run wrote to the metadata log"
    assert update_features(shared_target, 2, [("group.version", 0, 2)]) == (0, None, [])
    _, finalized_after, epoch_after = api_versions_features(shared_target, 4)
    assert "group.version" not in finalized_after
    assert epoch_after > epoch_before, "the update was not written to the metadata log"
    # v0 only upgrades (Kafka 4.3 ignores allow_downgrade): a downgrade is refused, and
    # finalizing the current metadata.version again is accepted.
    error, msg, _ = update_features(shared_target, 0, [("share.version", 0, True)]) \
        if TARGET == "kafka" else update_features(shared_target, 0, [
            ("metadata.version", 20, True)])
    assert error == INVALID_UPDATE_VERSION, msg
    level = finalized["metadata.version"][1]
    assert update_features(shared_target, 0, [("metadata.version", level, False)]) \
        == (0, None, [("metadata.version", 0, "NONE")])


def test_kcat_and_confluent_read_the_features(shared_target, topic_name):
    """librdkafka 2.0.2 (kcat) and confluent-kafka's librdkafka skip the tagged fields of the
    ApiVersions answer correctly: both produce, consume and list metadata."""
    create_topic(shared_target, topic_name)
    kcat(shared_target, "-P", "-t", topic_name, input=b"one\ntwo\n")
    out = kcat(shared_target, "-C", "-t", topic_name, "-o", "beginning", "-e", "-q").stdout
    assert out.split() == [b"one", b"two"], out
    meta = kcat(shared_target, "-L", "-t", topic_name).stdout.decode()
    assert f'topic "{topic_name}" with 1 partitions' in meta, meta
    produce_all(shared_target, topic_name, [b"three"])
    out = kcat(shared_target, "-C", "-t", topic_name, "-o", "beginning", "-e", "-q").stdout
    assert len(out.split()) == 3, out
