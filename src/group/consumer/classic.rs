//! Online migration between classic and consumer groups (KIP-848, Kafka's
//! `group.consumer.migration.policy`): a live classic group using the `consumer` protocol type
//! becomes a consumer group when a ConsumerGroupHeartbeat joins it, and its members stay in as
//! members that still speak JoinGroup, SyncGroup, Heartbeat and LeaveGroup (Kafka's
//! `ConsumerGroupMember` with `classicMemberMetadata`): the coordinator assigns their partitions
//! with the server-side assignor and asks them to rejoin (REBALANCE_IN_PROGRESS) whenever their
//! assignment moves. When the last member using the consumer protocol leaves, the group turns
//! back into a classic group. Pure state: the caller persists the records and keeps the clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use super::heartbeat::{HeartbeatSettings, Topics};
use super::reconcile::reconcile;
use super::records::{ClassicMemberMetadata, ConsumerRecord, MemberMetadataValue};
use super::{ConsumerGroup, ConsumerMember, MemberState, MemberTimers, TopicPartitions};
use crate::group::member::{JoinRequest, JoinResult, Member, SyncResult};
use crate::group::state::Group;

/// The embedded protocol type both kinds of group must use to convert.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// `group.consumer.migration.policy`: which conversions of non-empty groups are allowed
/// (empty groups are always taken over by either kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl MigrationPolicy {
    /// Kafka's values, matched case-insensitively.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "disabled" => Some(Self::Disabled),
            "upgrade" => Some(Self::Upgrade),
            "downgrade" => Some(Self::Downgrade),
            "bidirectional" => Some(Self::Bidirectional),
            _ => None,
        }
    }

    pub fn upgrade_enabled(self) -> bool {
        matches!(self, Self::Upgrade | Self::Bidirectional)
    }

    pub fn downgrade_enabled(self) -> bool {
        matches!(self, Self::Downgrade | Self::Bidirectional)
    }
}

/// The version of an embedded consumer protocol message (its first two bytes).
fn protocol_version(bytes: &[u8]) -> Result<i16, String> {
    match bytes {
        [a, b, ..] => Ok(i16::from_be_bytes([*a, *b])),
        _ => Err("the embedded consumer protocol is malformed".into()),
    }
}

/// A classic member's ConsumerProtocolSubscription.
pub fn decode_subscription(metadata: &Bytes) -> Result<ConsumerProtocolSubscription, String> {
    let version = protocol_version(metadata)?;
    let mut body = metadata.slice(2..);
    ConsumerProtocolSubscription::decode(&mut body, version.clamp(0, 3))
        .map_err(|_| "the embedded consumer protocol is malformed".to_string())
}

/// A classic member's ConsumerProtocolAssignment, by topic id (unknown topics are dropped).
pub fn decode_assignment(bytes: &Bytes, topics: &dyn Topics) -> Result<TopicPartitions, String> {
    let version = protocol_version(bytes)?;
    let mut body = bytes.slice(2..);
    let a = ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3))
        .map_err(|_| "the embedded consumer protocol is malformed".to_string())?;
    Ok(by_topic_id(
        a.assigned_partitions
            .iter()
            .map(|t| (t.topic.as_str(), &t.partitions[..])),
        topics,
    ))
}

fn by_topic_id<'a>(
    named: impl Iterator<Item = (&'a str, &'a [i32])>,
    topics: &dyn Topics,
) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (name, parts) in named {
        if let Some(t) = topics.lookup(name) {
            out.entry(t.topic_id)
                .or_default()
                .extend(parts.iter().copied());
        }
    }
    out.retain(|_, p| !p.is_empty());
    out
}

/// `assigned` as a ConsumerProtocolAssignment of `version` (the member's protocol version).
pub fn encode_assignment(assigned: &TopicPartitions, topics: &dyn Topics, version: i16) -> Bytes {
    let version = version.clamp(0, 3);
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assigned
            .iter()
            .filter_map(|(id, parts)| {
                let name = topics.name_of(*id)?;
                Some(
                    AssignedTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name)))
                        .with_partitions(parts.iter().copied().collect()),
                )
            })
            .collect(),
    );
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    if a.encode(&mut buf, version).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

impl ConsumerMember {
    /// Whether the member speaks the classic protocol.
    pub fn is_classic(&self) -> bool {
        self.subscription.classic.is_some()
    }

    fn classic_session_timeout(&self) -> Duration {
        let ms = self
            .subscription
            .classic
            .as_ref()
            .map_or(0, |c| c.session_timeout_ms);
        Duration::from_millis(ms.max(0) as u64)
    }

    /// The name of the protocol the member prefers (what its JoinGroup and SyncGroup carry).
    fn first_protocol(&self) -> Option<&(String, Bytes)> {
        self.subscription
            .classic
            .as_ref()
            .and_then(|c| c.supported_protocols.first())
    }
}

/// A classic member's JoinGroup or SyncGroup inside a consumer group was refused.
pub type ClassicError = ResponseError;

impl ConsumerGroup {
    /// Kafka's `ConsumerGroup.fromClassicGroup`: every classic member becomes a member in the
    /// group's generation, stable, with its last assignment as both current and target.
    pub fn from_classic(group: &Group, topics: &dyn Topics) -> Result<Self, String> {
        let protocol = group
            .protocol
            .clone()
            .ok_or_else(|| "the group has no protocol".to_string())?;
        let mut cg = ConsumerGroup {
            group_epoch: group.generation,
            assignment_epoch: group.generation,
            ..Default::default()
        };
        for m in group.members() {
            let sub = decode_subscription(&m.metadata_for(&protocol))?;
            let assigned = decode_assignment(&m.assignment, topics)?;
            let mut member = ConsumerMember::new(&m.member_id);
            member.member_epoch = group.generation;
            member.previous_member_epoch = group.generation;
            member.state = MemberState::Stable;
            member.assigned = assigned.clone();
            member.subscription = MemberMetadataValue {
                instance_id: m.group_instance_id.clone(),
                rack_id: sub.rack_id.as_ref().map(|r| r.to_string()),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: sub.topics.iter().map(|t| t.to_string()).collect(),
                subscribed_topic_regex: None,
                rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                server_assignor: None,
                classic: Some(ClassicMemberMetadata {
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    supported_protocols: m.protocols.clone(),
                }),
            };
            cg.target.insert(m.member_id.clone(), assigned);
            cg.put_member(member);
        }
        Ok(cg)
    }

    /// The records that create this group (Kafka's `createConsumerGroupRecords` order).
    pub fn creation_records(&self) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        for m in self.members.values() {
            out.push(ConsumerRecord::MemberMetadata(
                m.member_id.clone(),
                Some(m.subscription.clone()),
            ));
        }
        out.push(ConsumerRecord::GroupEpoch(Some(self.group_epoch)));
        for id in self.members.keys() {
            out.push(ConsumerRecord::TargetMember(
                id.clone(),
                Some(self.target.get(id).cloned().unwrap_or_default()),
            ));
        }
        out.push(ConsumerRecord::TargetEpoch(Some(self.group_epoch)));
        for m in self.members.values() {
            out.push(ConsumerRecord::CurrentAssignment(
                m.member_id.clone(),
                Some(m.current_assignment()),
            ));
        }
        out
    }

    /// Whether every member but `member_id` speaks the classic protocol, and `member_id` does not.
    pub fn all_classic_except(&self, member_id: &str) -> bool {
        self.members
            .values()
            .filter(|m| m.member_id != member_id)
            .all(ConsumerMember::is_classic)
            && self.members.get(member_id).is_some_and(|m| !m.is_classic())
    }

    /// Kafka's `supportsClassicProtocols`: a classic member may join when it names a protocol
    /// every classic member supports.
    fn supports_classic(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type != CONSUMER_PROTOCOL_TYPE {
            return false;
        }
        let classic: Vec<&ConsumerMember> =
            self.members.values().filter(|m| m.is_classic()).collect();
        if classic.is_empty() {
            return !protocols.is_empty();
        }
        protocols.iter().any(|(name, _)| {
            classic.iter().all(|m| {
                m.subscription
                    .classic
                    .as_ref()
                    .is_some_and(|c| c.supported_protocols.iter().any(|(n, _)| n == name))
            })
        })
    }

    /// The classic member a request names (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID).
    fn classic_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<&ConsumerMember, ClassicError> {
        let member = match instance {
            None => self.members.get(member_id),
            Some(i) => {
                let m = self
                    .static_member(i)
                    .ok_or(ResponseError::UnknownMemberId)?;
                if m.member_id != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
                Some(m)
            }
        };
        // Kafka: a member of the consumer protocol is unknown to the classic APIs.
        member
            .filter(|m| m.is_classic())
            .ok_or(ResponseError::UnknownMemberId)
    }

    /// JoinGroup by a classic member (Kafka's `classicGroupJoinToConsumerGroup`): the member
    /// joins or updates its subscription, the target assignment is recomputed when the group
    /// epoch moved, and the member takes one reconciliation step. Its generation is its member
    /// epoch; it is never the leader (the coordinator assigns).
    pub fn classic_join(
        &mut self,
        join: &JoinRequest,
        topics: &dyn Topics,
        settings: &HeartbeatSettings<'_>,
        now: Instant,
    ) -> Result<(JoinResult, Vec<ConsumerRecord>), ClassicError> {
        let unknown = join.member_id.is_empty();
        let member_id = if unknown {
            // Kafka names the member as it names a consumer protocol member: a Kafka UUID.
            crate::kafka_uuid::kafka_uuid(&crate::kafka_uuid::random_kafka_uuid())
        } else {
            join.member_id.clone()
        };
        if self.members.len() >= settings.max_size && !self.members.contains_key(&member_id) {
            return Err(ResponseError::GroupMaxSizeReached);
        }
        if !self.supports_classic(&join.protocol_type, &join.protocols) {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if join.require_known_member_id && unknown && join.group_instance_id.is_none() {
            return Ok((
                JoinResult::error(ResponseError::MemberIdRequired, &member_id),
                Vec::new(),
            ));
        }
        let existing = match &join.group_instance_id {
            None => self.members.get(&member_id).cloned(),
            Some(i) => match self.static_member(i) {
                Some(m) if m.member_id == member_id => Some(m.clone()),
                Some(_) if !unknown => return Err(ResponseError::FencedInstanceId),
                // The instance is held by a member of another id: it must leave first.
                Some(_) => return Err(ResponseError::UnreleasedInstanceId),
                None => None,
            },
        };
        if existing.as_ref().is_some_and(|m| !m.is_classic()) {
            return Err(ResponseError::UnknownMemberId);
        }
        let (_, metadata) = join
            .protocols
            .first()
            .ok_or(ResponseError::InconsistentGroupProtocol)?;
        let sub =
            decode_subscription(metadata).map_err(|_| ResponseError::InconsistentGroupProtocol)?;
        let member = existing.unwrap_or_else(|| ConsumerMember::new(&member_id));
        let mut updated = member.clone();
        let s = &mut updated.subscription;
        if join.group_instance_id.is_some() {
            s.instance_id = join.group_instance_id.clone();
        }
        if let Some(r) = &sub.rack_id {
            s.rack_id = Some(r.to_string());
        }
        s.rebalance_timeout_ms = join.rebalance_timeout.as_millis() as i32;
        s.subscribed_topic_names = sub.topics.iter().map(|t| t.to_string()).collect();
        s.client_id = join.client_id.clone();
        s.client_host = join.client_host.clone();
        s.classic = Some(ClassicMemberMetadata {
            session_timeout_ms: join.session_timeout.as_millis() as i32,
            supported_protocols: join.protocols.clone(),
        });
        let mut records = Vec::new();
        let new = !self.members.contains_key(&member_id);
        let mut bump = false;
        if new || updated.subscription != member.subscription {
            records.push(ConsumerRecord::MemberMetadata(
                member_id.clone(),
                Some(updated.subscription.clone()),
            ));
            bump = new
                || updated.subscription.subscribed_topic_names
                    != member.subscription.subscribed_topic_names;
        }
        let subs = self.subscriptions(Some(&updated), topics);
        bump |= self.refresh_subscription_metadata(&subs, topics, &mut records);
        if bump {
            self.bump_group_epoch(&mut records);
        }
        self.put_member(updated.clone());
        if self.group_epoch > self.assignment_epoch {
            self.update_target(&subs, settings.default_assignor, &mut records);
        }
        let owned = by_topic_id(
            sub.owned_partitions
                .iter()
                .map(|t| (t.topic.as_str(), &t.partitions[..])),
            topics,
        );
        let empty = TopicPartitions::new();
        let target = self.target.get(&member_id).unwrap_or(&empty);
        let next = reconcile(
            &updated,
            self.assignment_epoch,
            target,
            |t, p| self.partition_epoch(t, p),
            Some(&owned),
        );
        if next != updated || new {
            records.push(ConsumerRecord::CurrentAssignment(
                member_id.clone(),
                Some(next.current_assignment()),
            ));
            self.put_member(next.clone());
        }
        // The member must come back (SyncGroup, heartbeats) within its session.
        self.timers.insert(
            member_id.clone(),
            MemberTimers {
                session_deadline: now + next.classic_session_timeout(),
                rebalance_deadline: None,
            },
        );
        let protocol = next.first_protocol().map(|(n, _)| n.clone());
        Ok((
            JoinResult {
                error: 0,
                generation: next.member_epoch,
                protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
                protocol,
                leader: String::new(),
                member_id,
                members: Vec::new(),
                skip_assignment: false,
            },
            records,
        ))
    }

    /// SyncGroup by a classic member: its current assignment, in its protocol's version.
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        topics: &dyn Topics,
        now: Instant,
    ) -> Result<SyncResult, ClassicError> {
        let member = self.classic_member(member_id, instance)?;
        if generation != member.member_epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        let (protocol_type, protocol_name) = protocol;
        let first = member.first_protocol().cloned().unwrap_or_default();
        if protocol_type.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol_name.is_some_and(|n| n != first.0)
        {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if self.group_epoch > member.member_epoch
            && member.state != MemberState::UnrevokedPartitions
        {
            return Err(ResponseError::RebalanceInProgress);
        }
        let version = protocol_version(&first.1).unwrap_or(0);
        let assignment = encode_assignment(&member.assigned, topics, version);
        let session = member.classic_session_timeout();
        self.touch(member_id, now + session);
        Ok(SyncResult {
            error: 0,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol: Some(first.0),
            assignment,
        })
    }

    fn touch(&mut self, member_id: &str, deadline: Instant) {
        self.timers
            .entry(member_id.to_string())
            .or_insert(MemberTimers {
                session_deadline: deadline,
                rebalance_deadline: None,
            })
            .session_deadline = deadline;
    }

    /// Heartbeat by a classic member (Kafka's `classicGroupHeartbeatToConsumerGroup`):
    /// REBALANCE_IN_PROGRESS when it must rejoin, because the group epoch moved past it, it has
    /// partitions to revoke, or partitions it waits for were released.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ClassicError> {
        let member = self.classic_member(member_id, instance)?;
        if generation != member.member_epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        let rejoin = member.member_epoch < self.group_epoch
            || member.state == MemberState::UnrevokedPartitions
            || (member.state == MemberState::UnreleasedPartitions
                && !self.waiting_on_unreleased(member));
        let session = member.classic_session_timeout();
        let rebalance_ms = member.subscription.rebalance_timeout_ms.max(0) as u64;
        let epoch = member.member_epoch;
        self.touch(member_id, now + session);
        if rejoin {
            // Kafka's join timeout: the member must rejoin within its rebalance timeout.
            if let Some(t) = self.timers.get_mut(member_id) {
                if t.rebalance_deadline.is_none() {
                    t.rebalance_deadline = Some((now + Duration::from_millis(rebalance_ms), epoch));
                }
            }
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Whether a partition of the member's target is still held by another member.
    fn waiting_on_unreleased(&self, member: &ConsumerMember) -> bool {
        let Some(target) = self.target.get(&member.member_id) else {
            return false;
        };
        target.iter().any(|(t, parts)| {
            parts.iter().any(|p| {
                !member.assigned.get(t).is_some_and(|a| a.contains(p))
                    && self.partition_epoch(*t, *p) != -1
            })
        })
    }

    /// LeaveGroup for one classic member (by member id, or by instance id alone): the member
    /// id that left.
    pub fn classic_leave(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<String, ClassicError> {
        let member = match instance {
            Some(i) if member_id.is_empty() => self
                .static_member(i)
                .filter(|m| m.is_classic())
                .ok_or(ResponseError::UnknownMemberId)?,
            _ => self.classic_member(member_id, instance)?,
        };
        Ok(member.member_id.clone())
    }

    /// Kafka's `ClassicGroup.fromConsumerGroup`: the classic group the remaining (classic)
    /// members form once `leaving` is gone, in the group epoch as generation, each member with
    /// its target assignment. The caller starts a rebalance.
    pub fn to_classic(
        &self,
        group_id: &str,
        leaving: &str,
        topics: &dyn Topics,
        now: Instant,
        now_ms: i64,
    ) -> Group {
        let members = self
            .members
            .values()
            .filter(|m| m.member_id != leaving)
            .filter_map(|m| {
                let c = m.subscription.classic.as_ref()?;
                let version = c
                    .supported_protocols
                    .first()
                    .and_then(|(_, meta)| protocol_version(meta).ok())
                    .unwrap_or(0);
                let target = self.target.get(&m.member_id).cloned().unwrap_or_default();
                let session = Duration::from_millis(c.session_timeout_ms.max(0) as u64);
                Some(Member {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.subscription.instance_id.clone(),
                    client_id: m.subscription.client_id.clone(),
                    client_host: m.subscription.client_host.clone(),
                    rebalance_timeout: Duration::from_millis(
                        m.subscription.rebalance_timeout_ms.max(0) as u64,
                    ),
                    session_timeout: session,
                    protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                    protocols: c.supported_protocols.clone(),
                    assignment: encode_assignment(&target, topics, version),
                    awaiting_join: None,
                    awaiting_sync: None,
                    heartbeat_deadline: now + session,
                })
            })
            .collect();
        Group::converted(group_id, self.group_epoch, members, now_ms)
    }
}
