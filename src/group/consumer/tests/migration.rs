//! Online migration: a classic group converted to a consumer group and back, and classic
//! members (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) inside a consumer group.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::super::classic::{decode_assignment, encode_assignment, MigrationPolicy};
use super::super::records::ConsumerRecord;
use super::super::{ConsumerGroup, MemberState, TopicPartitions};
use super::{count, hb, join, settings, topics, FakeTopics, T};
use crate::group::member::JoinRequest;
use crate::group::records::{GroupValue, MemberValue};
use crate::group::state::{Group, GroupState};

/// A ConsumerProtocolSubscription v1 to `t`, owning `owned`.
fn subscription(owned: &[i32]) -> Bytes {
    let mut sub =
        ConsumerProtocolSubscription::default().with_topics(vec![StrBytes::from_static_str("t")]);
    if !owned.is_empty() {
        sub.owned_partitions = vec![OwnedTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(owned.to_vec())];
    }
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut buf, 1).expect("encodes");
    buf.freeze()
}

fn parts(p: &[i32]) -> TopicPartitions {
    [(T, p.iter().copied().collect())].into()
}

/// A stable classic group of generation 4: a owns 0..3, b owns 3..6 of topic t.
fn classic_group(t: &FakeTopics) -> Group {
    let member = |id: &str, owned: &[i32]| MemberValue {
        member_id: id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: subscription(&[]),
        assignment: encode_assignment(&parts(owned), t, 1),
    };
    let value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 4,
        protocol: Some("range".into()),
        leader: Some("a".into()),
        current_state_timestamp: 1,
        members: vec![member("a", &[0, 1, 2]), member("b", &[3, 4, 5])],
    };
    Group::restore("g", &value, Instant::now(), 1)
}

fn classic_join(member_id: &str, owned: &[i32]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), subscription(owned))],
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        require_known_member_id: true,
    }
}

#[test]
fn migration_policy_is_parsed_as_kafka_does() {
    assert_eq!(
        MigrationPolicy::parse("BIDIRECTIONAL"),
        Some(MigrationPolicy::Bidirectional)
    );
    assert_eq!(
        MigrationPolicy::parse("Upgrade"),
        Some(MigrationPolicy::Upgrade)
    );
    assert_eq!(MigrationPolicy::parse("none"), None);
    let p = MigrationPolicy::parse("downgrade").expect("valid");
    assert!(p.downgrade_enabled() && !p.upgrade_enabled());
    assert!(!MigrationPolicy::Disabled.upgrade_enabled());
    assert!(!MigrationPolicy::Disabled.downgrade_enabled());
}

#[test]
fn a_classic_group_converts_with_its_generation_and_assignments() {
    let t = topics(6);
    let classic = classic_group(&t);
    let cg = ConsumerGroup::from_classic(&classic, &t).expect("converts");
    assert_eq!((cg.group_epoch, cg.assignment_epoch), (4, 4));
    for (id, owned) in [("a", [0, 1, 2]), ("b", [3, 4, 5])] {
        let m = &cg.members[id];
        assert!(m.is_classic());
        assert_eq!((m.member_epoch, m.state), (4, MemberState::Stable));
        assert_eq!(m.assigned, parts(&owned));
        assert_eq!(cg.target[id], parts(&owned));
        assert_eq!(m.subscription.subscribed_topic_names, vec!["t".to_string()]);
    }
    // Kafka's record order, and the records rebuild the same group on another coordinator.
    let records = cg.creation_records();
    assert!(matches!(records[0], ConsumerRecord::MemberMetadata(..)));
    assert!(matches!(records[2], ConsumerRecord::GroupEpoch(Some(4))));
    assert!(matches!(records[5], ConsumerRecord::TargetEpoch(Some(4))));
    let mut replayed = ConsumerGroup::default();
    for r in records {
        let (k, v) = r.encode("g");
        let mut kb = &k[..];
        let version = i16::from_be_bytes([kb[0], kb[1]]);
        kb = &kb[2..];
        let key = super::super::records::ConsumerKey::decode(version, kb).expect("key");
        assert!(replayed.replay(ConsumerRecord::decode(&key, v.as_deref()).expect("value")));
    }
    assert_eq!(replayed.members, cg.members);
    assert_eq!(replayed.target, cg.target);
}

#[test]
fn a_malformed_embedded_protocol_does_not_convert() {
    let t = topics(6);
    let value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 1,
        protocol: Some("range".into()),
        leader: Some("a".into()),
        current_state_timestamp: 1,
        members: vec![MemberValue {
            member_id: "a".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1,
            session_timeout_ms: 1,
            subscription: Bytes::from_static(&[0]),
            assignment: Bytes::new(),
        }],
    };
    let classic = Group::restore("g", &value, Instant::now(), 1);
    assert!(ConsumerGroup::from_classic(&classic, &t).is_err());
}

#[test]
fn classic_members_rejoin_to_follow_the_server_assignment() {
    let t = topics(6);
    let mut cg = ConsumerGroup::from_classic(&classic_group(&t), &t).expect("converts");
    let now = Instant::now();
    // Nothing moved yet: the classic members' heartbeats pass.
    assert_eq!(cg.classic_heartbeat("a", None, 4, now), Ok(()));
    assert_eq!(
        cg.classic_heartbeat("a", None, 3, now),
        Err(ResponseError::IllegalGeneration)
    );
    // A consumer protocol member joins: the group epoch moves, the target spreads 2+2+2.
    let (reply, _) = hb(&mut cg, join("c"), &t);
    assert!(cg.group_epoch > 4);
    assert_eq!(count(&cg.target["c"]), 2);
    assert_eq!(
        reply.assignment.as_ref().map(count),
        Some(0),
        "c waits for releases"
    );
    // A consumer protocol member is unknown to the classic APIs.
    assert_eq!(
        cg.classic_heartbeat("c", None, reply.member_epoch, now),
        Err(ResponseError::UnknownMemberId)
    );
    // a must rejoin; a cooperative rejoin still owning its partitions has to revoke first.
    assert_eq!(
        cg.classic_heartbeat("a", None, 4, now),
        Err(ResponseError::RebalanceInProgress)
    );
    let (j, records) = cg
        .classic_join(&classic_join("a", &[0, 1, 2]), &t, &settings(), now)
        .expect("joins");
    assert!(!records.is_empty());
    assert_eq!((j.error, j.generation, j.leader.as_str()), (0, 4, ""));
    assert_eq!(j.protocol.as_deref(), Some("range"));
    assert_eq!(cg.members["a"].state, MemberState::UnrevokedPartitions);
    let s = cg
        .classic_sync("a", None, 4, (Some("consumer"), Some("range")), &t, now)
        .expect("syncs");
    let kept = decode_assignment(&s.assignment, &t).expect("decodes");
    assert_eq!(kept, cg.members["a"].assigned);
    assert_eq!(count(&kept), 2);
    assert_eq!(
        cg.classic_heartbeat("a", None, 4, now),
        Err(ResponseError::RebalanceInProgress)
    );
    // Rejoining without the revoked partition moves a to the new epoch.
    let owned: Vec<i32> = kept[&T].iter().copied().collect();
    let (j, _) = cg
        .classic_join(&classic_join("a", &owned), &t, &settings(), now)
        .expect("rejoins");
    assert_eq!(j.generation, cg.group_epoch);
    assert_eq!(cg.members["a"].state, MemberState::Stable);
    // An eager member (owning nothing on rejoin) moves at once.
    let (j, _) = cg
        .classic_join(&classic_join("b", &[]), &t, &settings(), now)
        .expect("rejoins");
    assert_eq!(j.generation, cg.group_epoch);
    assert_eq!(
        cg.classic_sync("b", None, 4, (None, None), &t, now).err(),
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        cg.classic_sync(
            "b",
            None,
            j.generation,
            (Some("consumer"), Some("roundrobin")),
            &t,
            now
        )
        .err(),
        Some(ResponseError::InconsistentGroupProtocol)
    );
    // The partitions a and b released go to c on its next heartbeat.
    let epoch = cg.members["c"].member_epoch;
    let (reply, _) = hb(
        &mut cg,
        super::beat("c", epoch, &TopicPartitions::new()),
        &t,
    );
    assert_eq!(reply.assignment.as_ref().map(count), Some(2));
}

#[test]
fn classic_joins_are_checked_as_kafka_checks_them() {
    let t = topics(6);
    let mut cg = ConsumerGroup::from_classic(&classic_group(&t), &t).expect("converts");
    let now = Instant::now();
    let (j, records) = cg
        .classic_join(&classic_join("", &[]), &t, &settings(), now)
        .expect("answered");
    assert_eq!(j.error, ResponseError::MemberIdRequired.code());
    assert!(!j.member_id.is_empty() && records.is_empty());
    let mut other = classic_join("", &[]);
    other.protocol_type = "connect".into();
    assert_eq!(
        cg.classic_join(&other, &t, &settings(), now).err(),
        Some(ResponseError::InconsistentGroupProtocol)
    );
    let mut unsupported = classic_join("", &[]);
    unsupported.protocols[0].0 = "roundrobin".into();
    assert_eq!(
        cg.classic_join(&unsupported, &t, &settings(), now).err(),
        Some(ResponseError::InconsistentGroupProtocol)
    );
    // settings() caps the group at 3 members.
    let (j, _) = cg
        .classic_join(&classic_join(&j.member_id, &[]), &t, &settings(), now)
        .expect("third member");
    assert_eq!(j.error, 0);
    assert_eq!(
        cg.classic_join(&classic_join("x", &[]), &t, &settings(), now)
            .err(),
        Some(ResponseError::GroupMaxSizeReached)
    );
}

#[test]
fn classic_members_commit_in_their_generation() {
    let t = topics(6);
    let cg = ConsumerGroup::from_classic(&classic_group(&t), &t).expect("converts");
    // OffsetCommit below v9 is fine for a classic member; another generation is illegal.
    assert_eq!(cg.validate_offset_commit("a", 4, 8, false), Ok(()));
    assert_eq!(
        cg.validate_offset_commit("a", 3, 8, false),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        cg.validate_offset_fetch(Some("a"), 5),
        Err(ResponseError::IllegalGeneration)
    );
}

#[test]
fn the_last_consumer_member_leaving_downgrades_to_classic() {
    let t = topics(6);
    let mut cg = ConsumerGroup::from_classic(&classic_group(&t), &t).expect("converts");
    let (reply, _) = hb(&mut cg, join("c"), &t);
    assert!(cg.all_classic_except(&reply.member_id));
    assert!(!cg.all_classic_except("a"));
    let now = Instant::now();
    let classic = cg.to_classic("g", &reply.member_id, &t, now, 1);
    assert_eq!(classic.state, GroupState::Stable);
    assert_eq!(classic.generation, cg.group_epoch);
    assert_eq!(classic.protocol.as_deref(), Some("range"));
    let ids: Vec<&str> = classic.members().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    for m in classic.members() {
        // Each classic member gets its target assignment.
        let a = decode_assignment(&m.assignment, &t).expect("decodes");
        assert_eq!(a, cg.target[&m.member_id]);
        assert_eq!(m.session_timeout, Duration::from_secs(10));
    }
    // The group stored as Kafka's GroupMetadata keeps members and assignments.
    let value = classic.to_value();
    assert_eq!(value.generation, cg.group_epoch);
    assert_eq!(value.members.len(), 2);
}

#[test]
fn leaving_classic_members_are_fenced() {
    let t = topics(6);
    let mut cg = ConsumerGroup::from_classic(&classic_group(&t), &t).expect("converts");
    assert_eq!(cg.classic_leave("a", None), Ok("a".to_string()));
    assert_eq!(
        cg.classic_leave("z", None),
        Err(ResponseError::UnknownMemberId)
    );
    let before = cg.group_epoch;
    let records = cg.fence("a", &t);
    assert!(records.contains(&ConsumerRecord::MemberMetadata("a".into(), None)));
    assert_eq!(cg.group_epoch, before + 1);
}
