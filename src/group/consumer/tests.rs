//! The consumer group state machine driven through heartbeats, and replayed from its records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::heartbeat::{Heartbeat, HeartbeatReply, HeartbeatSettings, Topics};
use super::records::{ConsumerRecord, TopicMetadata};
use super::*;

mod migration;

struct FakeTopics(BTreeMap<String, (Uuid, i32)>);

impl Topics for FakeTopics {
    fn lookup(&self, name: &str) -> Option<TopicMetadata> {
        self.0.get(name).map(|(id, n)| TopicMetadata {
            topic_id: *id,
            name: name.to_string(),
            partitions: *n,
        })
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn name_of(&self, id: Uuid) -> Option<String> {
        self.0
            .iter()
            .find(|(_, (t, _))| *t == id)
            .map(|(n, _)| n.clone())
    }
}

const T: Uuid = Uuid::from_u128(7);

fn topics(partitions: i32) -> FakeTopics {
    FakeTopics([("t".to_string(), (T, partitions))].into())
}

fn settings() -> HeartbeatSettings<'static> {
    HeartbeatSettings {
        session_timeout: Duration::from_secs(45),
        max_size: 3,
        default_assignor: "uniform",
    }
}

fn join(member: &str) -> Heartbeat {
    Heartbeat {
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec!["t".into()]),
        owned: Some(TopicPartitions::new()),
        ..Default::default()
    }
}

fn beat(member: &str, epoch: i32, owned: &TopicPartitions) -> Heartbeat {
    Heartbeat {
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(owned.clone()),
        ..Default::default()
    }
}

fn hb(
    g: &mut ConsumerGroup,
    h: Heartbeat,
    t: &FakeTopics,
) -> (HeartbeatReply, Vec<ConsumerRecord>) {
    g.heartbeat("g", h, t, &settings(), Instant::now())
        .expect("heartbeat accepted")
}

fn count(a: &TopicPartitions) -> usize {
    a.values().map(|p| p.len()).sum()
}

#[test]
fn members_converge_without_double_ownership() {
    let t = topics(6);
    let mut g = ConsumerGroup::default();
    let (a, _) = hb(&mut g, join("a"), &t);
    assert_eq!(a.member_epoch, 1);
    let a_owned = a.assignment.expect("full assignment on join");
    assert_eq!(count(&a_owned), 6);
    assert_eq!(g.state(), ConsumerGroupState::Stable);

    // b joins: group epoch 2; b gets nothing until a revokes.
    let (b, _) = hb(&mut g, join("b"), &t);
    assert_eq!(b.member_epoch, 2);
    assert_eq!(count(&b.assignment.clone().expect("assignment")), 0);
    assert_eq!(g.state(), ConsumerGroupState::Reconciling);
    // a is asked to revoke 3 and stays in epoch 1.
    let (a2, _) = hb(&mut g, beat("a", 1, &a_owned), &t);
    assert_eq!(a2.member_epoch, 1);
    let a_kept = a2.assignment.expect("new assignment");
    assert_eq!(count(&a_kept), 3);
    // While a still owns them, b gets nothing.
    let (b2, _) = hb(&mut g, beat("b", 2, &TopicPartitions::new()), &t);
    assert_eq!(b2.assignment, None);
    // a revokes: epoch 2.
    let (a3, _) = hb(&mut g, beat("a", 1, &a_kept), &t);
    assert_eq!(a3.member_epoch, 2);
    let (b3, _) = hb(&mut g, beat("b", 2, &TopicPartitions::new()), &t);
    let b_owned = b3.assignment.expect("released partitions");
    assert_eq!(count(&b_owned), 3);
    assert!(a_kept[&T].is_disjoint(&b_owned[&T]));
    assert_eq!(g.state(), ConsumerGroupState::Stable);
}

#[test]
fn stale_epochs_are_fenced_and_unknown_members_refused() {
    let t = topics(2);
    let mut g = ConsumerGroup::default();
    let (a, _) = hb(&mut g, join("a"), &t);
    let owned = a.assignment.expect("assignment");
    let err = g
        .heartbeat("g", beat("a", 5, &owned), &t, &settings(), Instant::now())
        .expect_err("a greater epoch");
    assert_eq!(err.0, ResponseError::FencedMemberEpoch);
    hb(&mut g, join("b"), &t);
    hb(&mut g, beat("a", 1, &owned), &t);
    let err = g
        .heartbeat("g", beat("x", 1, &owned), &t, &settings(), Instant::now())
        .expect_err("unknown");
    assert_eq!(err.0, ResponseError::UnknownMemberId);
    // Group full at 3.
    hb(&mut g, join("c"), &t);
    let err = g
        .heartbeat("g", join("d"), &t, &settings(), Instant::now())
        .expect_err("full");
    assert_eq!(err.0, ResponseError::GroupMaxSizeReached);
}

#[test]
fn leave_bumps_epoch_and_replay_restores_the_group() {
    let t = topics(4);
    let mut g = ConsumerGroup::default();
    let mut log = Vec::new();
    let (a, r) = hb(&mut g, join("a"), &t);
    log.extend(r);
    let (_, r) = hb(&mut g, join("b"), &t);
    log.extend(r);
    let (_, r) = hb(&mut g, beat("a", 1, &a.assignment.expect("a")), &t);
    log.extend(r);
    let epoch = g.group_epoch;
    let mut leave = beat("b", -1, &TopicPartitions::new());
    leave.owned = None;
    let (reply, r) = hb(&mut g, leave, &t);
    log.extend(r);
    assert_eq!(reply.member_epoch, -1);
    assert_eq!(g.group_epoch, epoch + 1);
    assert!(!g.members.contains_key("b"));

    let mut restored = ConsumerGroup::default();
    for rec in log {
        let (k, v) = rec.encode("g");
        let mut kb = &k[..];
        let version = bytes::Buf::get_i16(&mut kb);
        let key = records::ConsumerKey::decode(version, kb).expect("key");
        assert!(restored.replay(ConsumerRecord::decode(&key, v.as_deref()).expect("value")));
    }
    assert_eq!(restored.group_epoch, g.group_epoch);
    assert_eq!(restored.assignment_epoch, g.assignment_epoch);
    assert_eq!(restored.members, g.members);
    assert_eq!(restored.target, g.target);
    assert_eq!(restored.subscription_metadata, g.subscription_metadata);
}

#[test]
fn more_partitions_bump_the_group_epoch() {
    let mut g = ConsumerGroup::default();
    let (a, _) = hb(&mut g, join("a"), &topics(2));
    let owned = a.assignment.expect("a");
    let (a2, _) = hb(&mut g, beat("a", 1, &owned), &topics(3));
    assert_eq!(a2.member_epoch, 2);
    assert_eq!(count(&a2.assignment.expect("grown")), 3);
}

#[test]
fn static_member_leaves_and_rejoins_with_its_partitions() {
    let t = topics(4);
    let mut g = ConsumerGroup::default();
    let mut j = join("a");
    j.instance_id = Some("i".into());
    let (a, _) = hb(&mut g, j.clone(), &t);
    let owned = a.assignment.expect("a");
    let mut other = join("a2");
    other.instance_id = Some("i".into());
    let err = g
        .heartbeat("g", other.clone(), &t, &settings(), Instant::now())
        .expect_err("instance in use");
    assert_eq!(err.0, ResponseError::UnreleasedInstanceId);
    let mut leave = beat("a", -2, &owned);
    leave.instance_id = Some("i".into());
    let (r, _) = hb(&mut g, leave, &t);
    assert_eq!(r.member_epoch, -2);
    let epoch = g.group_epoch;
    let (back, _) = hb(&mut g, other, &t);
    assert_eq!(g.group_epoch, epoch, "no rebalance");
    assert_eq!(back.member_epoch, epoch);
    assert_eq!(back.assignment, Some(owned));
    assert!(!g.members.contains_key("a"));
}
