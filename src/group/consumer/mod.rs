//! Consumer groups of the next-generation protocol (KIP-848), as Kafka's `ConsumerGroup` holds
//! them: the group epoch (bumped when subscriptions or the subscribed topics change), the
//! target assignment the coordinator computes with a server-side assignor (`assignor.rs`),
//! and each member's current assignment, which converges to the target one heartbeat at a
//! time (`reconcile.rs`). `heartbeat.rs` runs ConsumerGroupHeartbeat; `records.rs` holds the
//! `__consumer_offsets` records every change is persisted as. Pure state: no I/O, no clock
//! reads.

pub mod assignor;
pub mod classic;
pub mod heartbeat;
pub mod reconcile;
pub mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use records::{ConsumerRecord, CurrentAssignmentValue, MemberMetadataValue, TopicMetadata};

/// Partitions by topic id.
pub type TopicPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// The epoch of a member leaving the group (ConsumerGroupHeartbeat).
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// The epoch of a static member leaving for now, expected back with its instance id.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Where a member is in reconciling towards its target assignment (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// It must first give up partitions it still owns.
    UnrevokedPartitions,
    /// Partitions it should get are still held by other members.
    UnreleasedPartitions,
    Unknown,
}

impl MemberState {
    pub fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
            MemberState::Unknown => 127,
        }
    }

    pub fn from_code(code: i8) -> Self {
        match code {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

/// The group's state as ListGroups and the describe APIs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMember {
    pub member_id: String,
    pub subscription: MemberMetadataValue,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: TopicPartitions,
    pub pending_revocation: TopicPartitions,
}

impl ConsumerMember {
    pub fn new(member_id: &str) -> Self {
        Self {
            member_id: member_id.to_string(),
            subscription: MemberMetadataValue {
                rebalance_timeout_ms: -1,
                ..Default::default()
            },
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            assigned: TopicPartitions::new(),
            pending_revocation: TopicPartitions::new(),
        }
    }

    pub fn is_reconciled_to(&self, target_epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == target_epoch
    }

    pub fn current_assignment(&self) -> CurrentAssignmentValue {
        CurrentAssignmentValue {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            state: self.state,
            assigned: self.assigned.clone(),
            pending_revocation: self.pending_revocation.clone(),
        }
    }

    /// Sets a new member epoch, remembering the one before.
    pub fn update_epoch(&mut self, epoch: i32) {
        self.previous_member_epoch = self.member_epoch;
        self.member_epoch = epoch;
    }
}

/// A member's timers (not persisted; restarted when a coordinator loads the group).
#[derive(Debug, Clone, Copy)]
pub struct MemberTimers {
    pub session_deadline: Instant,
    /// The member must leave this epoch (revoke its partitions) by then.
    pub rebalance_deadline: Option<(Instant, i32)>,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// The subscribed topics that exist, by name: what the target assignment was computed on.
    pub subscription_metadata: BTreeMap<String, TopicMetadata>,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: HashMap<String, TopicPartitions>,
    /// Static members: instance id -> member id.
    pub static_members: HashMap<String, String>,
    /// Who holds each partition (assigned or pending revocation): the holder's member epoch.
    partition_epochs: HashMap<(Uuid, i32), i32>,
    pub timers: HashMap<String, MemberTimers>,
    /// Whether the group holds records in the log (a classic group id reused must tombstone).
    pub stored: bool,
}

impl ConsumerGroup {
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The epoch of the member holding a partition, or -1 when it is free.
    pub fn partition_epoch(&self, topic: Uuid, partition: i32) -> i32 {
        self.partition_epochs
            .get(&(topic, partition))
            .copied()
            .unwrap_or(-1)
    }

    fn remove_partition_epochs(&mut self, m: &ConsumerMember) {
        for tps in [&m.assigned, &m.pending_revocation] {
            for (t, parts) in tps {
                for p in parts {
                    self.partition_epochs.remove(&(*t, *p));
                }
            }
        }
    }

    fn add_partition_epochs(&mut self, m: &ConsumerMember) {
        for tps in [&m.assigned, &m.pending_revocation] {
            for (t, parts) in tps {
                for p in parts {
                    self.partition_epochs.insert((*t, *p), m.member_epoch);
                }
            }
        }
    }

    /// Puts a member in (replacing the one with its id), keeping the indexes right.
    pub fn put_member(&mut self, member: ConsumerMember) {
        if let Some(old) = self.members.remove(&member.member_id) {
            self.remove_partition_epochs(&old);
            if let Some(i) = &old.subscription.instance_id {
                if self.static_members.get(i) == Some(&old.member_id) {
                    self.static_members.remove(i);
                }
            }
        }
        self.add_partition_epochs(&member);
        if let Some(i) = &member.subscription.instance_id {
            self.static_members
                .insert(i.clone(), member.member_id.clone());
        }
        self.members.insert(member.member_id.clone(), member);
    }

    /// Takes a member out with its target assignment and timers.
    pub fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        let old = self.members.remove(member_id)?;
        self.remove_partition_epochs(&old);
        if let Some(i) = &old.subscription.instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(member_id) {
                self.static_members.remove(i);
            }
        }
        self.target.remove(member_id);
        self.timers.remove(member_id);
        Some(old)
    }

    pub fn static_member(&self, instance: &str) -> Option<&ConsumerMember> {
        self.static_members
            .get(instance)
            .and_then(|id| self.members.get(id))
    }

    /// The server assignor most members ask for, if any (Kafka's preferredServerAssignor).
    pub fn preferred_assignor(&self) -> Option<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.subscription.server_assignor {
                *counts.entry(a).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(a, _)| a.to_string())
    }

    /// OffsetCommit by a member (KIP-848 rules: epoch -1 commits only to an empty group; a
    /// member must commit in its current epoch, with OffsetCommit v9 or later unless it is a
    /// classic member, whose generation is its epoch).
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
        transactional: bool,
    ) -> Result<(), ResponseError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if !transactional && !member.is_classic() && version < 9 {
            return Err(ResponseError::UnsupportedVersion);
        }
        Self::check_member_epoch(member, member_epoch)
    }

    /// A member asking in another epoch: STALE_MEMBER_EPOCH, or ILLEGAL_GENERATION for a
    /// classic member (whose generation is its member epoch).
    fn check_member_epoch(member: &ConsumerMember, epoch: i32) -> Result<(), ResponseError> {
        if epoch == member.member_epoch {
            Ok(())
        } else if member.is_classic() {
            Err(ResponseError::IllegalGeneration)
        } else {
            Err(ResponseError::StaleMemberEpoch)
        }
    }

    /// OffsetFetch v9+ with a member id and epoch.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(member_id) = member_id else {
            if member_epoch < 0 {
                return Ok(());
            }
            return Err(ResponseError::UnknownMemberId);
        };
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        Self::check_member_epoch(member, member_epoch)
    }

    /// The records that delete the whole group (DeleteGroups), as Kafka writes them.
    pub fn tombstones(&self) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        for id in self.members.keys() {
            out.push(ConsumerRecord::CurrentAssignment(id.clone(), None));
        }
        for id in self.members.keys() {
            out.push(ConsumerRecord::TargetMember(id.clone(), None));
        }
        out.push(ConsumerRecord::TargetEpoch(None));
        for id in self.members.keys() {
            out.push(ConsumerRecord::MemberMetadata(id.clone(), None));
        }
        out.push(ConsumerRecord::PartitionMetadata(None));
        out.push(ConsumerRecord::GroupEpoch(None));
        out
    }

    /// Replays one record (loading a `__consumer_offsets` partition). Returns false once the
    /// group is deleted (its group epoch tombstoned).
    pub fn replay(&mut self, record: ConsumerRecord) -> bool {
        self.stored = true;
        match record {
            ConsumerRecord::GroupEpoch(Some(e)) => self.group_epoch = e,
            ConsumerRecord::GroupEpoch(None) => return false,
            ConsumerRecord::PartitionMetadata(v) => {
                self.subscription_metadata = v
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect();
            }
            ConsumerRecord::MemberMetadata(id, Some(sub)) => {
                let mut m = self
                    .members
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| ConsumerMember::new(&id));
                m.subscription = sub;
                self.put_member(m);
            }
            ConsumerRecord::MemberMetadata(id, None) => {
                self.remove_member(&id);
            }
            ConsumerRecord::TargetEpoch(e) => self.assignment_epoch = e.unwrap_or(0),
            ConsumerRecord::TargetMember(id, Some(tps)) => {
                self.target.insert(id, tps);
            }
            ConsumerRecord::TargetMember(id, None) => {
                self.target.remove(&id);
            }
            ConsumerRecord::CurrentAssignment(id, Some(c)) => {
                let mut m = self
                    .members
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| ConsumerMember::new(&id));
                m.member_epoch = c.member_epoch;
                m.previous_member_epoch = c.previous_member_epoch;
                m.state = c.state;
                m.assigned = c.assigned;
                m.pending_revocation = c.pending_revocation;
                self.put_member(m);
            }
            ConsumerRecord::CurrentAssignment(id, None) => {
                if let Some(mut m) = self.members.get(&id).cloned() {
                    m.member_epoch = 0;
                    m.previous_member_epoch = 0;
                    m.state = MemberState::Stable;
                    m.assigned.clear();
                    m.pending_revocation.clear();
                    self.put_member(m);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
