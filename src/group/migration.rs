//! Online migration on the coordinator (`group.consumer.migration.policy`): the upgrade of a
//! live classic group when a ConsumerGroupHeartbeat joins it, the classic APIs (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup) of classic members inside a consumer group, and the
//! downgrade back to a classic group when the last member of the consumer protocol leaves.
//! The rules are in `consumer/classic.rs`; this file checks the policy, swaps the group's
//! kind under its lock and persists the records (Kafka's: the classic group's tombstone and the
//! consumer group's records on upgrade; the consumer group's tombstones and a classic
//! GroupMetadata record on downgrade).

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::consumer::classic::CONSUMER_PROTOCOL_TYPE;
use super::consumer::heartbeat::{HeartbeatError, HeartbeatSettings, Topics};
use super::consumer::records::ConsumerRecord;
use super::consumer::{ConsumerGroup, MemberTimers};
use super::member::{JoinRequest, JoinResult, SyncRequest, SyncResult};
use super::state::{Group, GroupState};
use super::{GroupCoordinator, GroupEntry};
use crate::replica::{now_ms, Written};

fn encode(group: &str, records: &[ConsumerRecord]) -> Vec<(Bytes, Option<Bytes>)> {
    records.iter().map(|r| r.encode(group)).collect()
}

impl GroupCoordinator {
    pub(super) fn heartbeat_settings(&self) -> HeartbeatSettings<'_> {
        HeartbeatSettings {
            session_timeout: self.config.consumer_session_timeout,
            max_size: self.config.consumer_max_size,
            default_assignor: self
                .consumer_assignors()
                .first()
                .copied()
                .unwrap_or("uniform"),
        }
    }

    /// The consumer group a live classic group becomes (Kafka's `validateOnlineUpgrade` and
    /// `ConsumerGroup.fromClassicGroup`), with its members' session timers started; or the
    /// error a ConsumerGroupHeartbeat joining it gets. Changes nothing.
    pub(super) fn upgraded(
        &self,
        group_id: &str,
        classic: &Group,
        topics: &dyn Topics,
        now: Instant,
    ) -> Result<ConsumerGroup, HeartbeatError> {
        let refuse = |why: &str| {
            (
                ResponseError::GroupIdNotFound,
                format!("Cannot upgrade classic group {group_id} to consumer group because {why}."),
            )
        };
        if !self.config.migration_policy.upgrade_enabled() {
            return Err(refuse("online upgrade is disabled"));
        }
        if classic.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return Err(refuse(
                "the group does not use the consumer embedded protocol",
            ));
        }
        if classic.members().count() > self.config.consumer_max_size {
            return Err(refuse(
                "the group size exceeds the consumer group maximum size",
            ));
        }
        if classic.state == GroupState::Dead {
            return Err(refuse("the group is dead"));
        }
        let mut cg = ConsumerGroup::from_classic(classic, topics).map_err(|e| {
            refuse(&format!(
                "the embedded consumer protocol is malformed ({e})"
            ))
        })?;
        for m in classic.members() {
            cg.timers.insert(
                m.member_id.clone(),
                MemberTimers {
                    session_deadline: now + m.session_timeout,
                    rebalance_deadline: None,
                },
            );
        }
        Ok(cg)
    }

    /// The records of an upgrade: the classic group's tombstone, then the consumer group.
    pub(super) fn upgrade_records(
        group_id: &str,
        cg: &ConsumerGroup,
    ) -> Vec<(Bytes, Option<Bytes>)> {
        let mut out = vec![Self::classic_tombstone(group_id)];
        out.extend(encode(group_id, &cg.creation_records()));
        out
    }

    /// Whether a consumer group turns back into a classic group once `member_id` (of the
    /// consumer protocol) is gone (Kafka's `validateOnlineDowngradeWithFencedMember`).
    pub(super) fn downgrade_allowed(&self, cg: &ConsumerGroup, member_id: &str) -> bool {
        cg.all_classic_except(member_id)
            && cg.members.len() > 1
            && self.config.migration_policy.downgrade_enabled()
            && cg.members.len() - 1 <= self.config.max_size
    }

    /// Downgrades the entry's consumer group to a classic group without `leaving`, and starts
    /// a rebalance of its members: the records to append (Kafka's `convertToClassicGroup`).
    pub(super) fn downgrade(
        &self,
        group_id: &str,
        entry: &mut GroupEntry,
        leaving: &str,
        topics: &dyn Topics,
    ) -> Vec<(Bytes, Option<Bytes>)> {
        let Some(cg) = entry.consumer.take() else {
            return Vec::new();
        };
        let now = Instant::now();
        let now_wall = now_ms();
        let mut records = encode(group_id, &cg.tombstones());
        let mut classic = cg.to_classic(group_id, leaving, topics, now, now_wall);
        records.push(Self::group_record(group_id, &classic.to_value()));
        tracing::info!(group = %group_id, "downgraded consumer group to a classic group");
        if let Some(v) = classic.start_rebalance(self.timing(), now, now_wall) {
            records.push(Self::group_record(group_id, &v));
        }
        entry.group = classic;
        records
    }

    /// JoinGroup by a classic member of a non-empty consumer group.
    pub(super) fn classic_join_to_consumer(
        &self,
        group_id: &str,
        entry: &mut GroupEntry,
        join: &JoinRequest,
    ) -> (JoinResult, Option<Result<Written, ResponseError>>) {
        let image = self.meta.image();
        let settings = self.heartbeat_settings();
        let Some(cg) = entry.consumer.as_mut() else {
            return (
                JoinResult::error(ResponseError::UnknownServerError, ""),
                None,
            );
        };
        match cg.classic_join(join, image.as_ref(), &settings, Instant::now()) {
            Err(e) => (JoinResult::error(e, &join.member_id), None),
            Ok((result, records)) => {
                let written = (!records.is_empty())
                    .then(|| self.append(group_id, &encode(group_id, &records)));
                (result, written)
            }
        }
    }

    /// SyncGroup by a classic member of a consumer group.
    pub(super) fn classic_sync_to_consumer(
        &self,
        cg: &mut ConsumerGroup,
        sync: &SyncRequest<'_>,
    ) -> SyncResult {
        let image = self.meta.image();
        cg.classic_sync(
            sync.member_id,
            sync.instance,
            sync.generation,
            (sync.protocol_type, sync.protocol),
            image.as_ref(),
            Instant::now(),
        )
        .unwrap_or_else(SyncResult::error)
    }

    /// LeaveGroup of classic members of a consumer group: an error code per member, and the
    /// records (each leaver fenced, as Kafka's `classicGroupLeaveToConsumerGroup`).
    pub(super) fn classic_leave_from_consumer(
        &self,
        cg: &mut ConsumerGroup,
        members: &[(String, Option<String>)],
    ) -> (Vec<i16>, Vec<ConsumerRecord>) {
        let image = self.meta.image();
        let mut codes = Vec::with_capacity(members.len());
        let mut records = Vec::new();
        for (member, instance) in members {
            match cg.classic_leave(member, instance.as_deref()) {
                Ok(id) => {
                    records.extend(cg.fence(&id, image.as_ref()));
                    codes.push(0);
                }
                Err(e) => codes.push(e.code()),
            }
        }
        (codes, records)
    }
}
