//! Consumer groups (KIP-848) on the coordinator: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, the members' session and rebalance timeouts, and the line between
//! classic and consumer groups sharing one id space. The state machine (`consumer/`) decides;
//! this file checks the coordinator, persists the records and waits for them to replicate.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::consumer::heartbeat::{self, Heartbeat, HeartbeatError, HeartbeatReply};
use super::consumer::records::ConsumerRecord;
use super::consumer::{
    ConsumerGroup, ConsumerGroupState, ConsumerMember, TopicPartitions, LEAVE_GROUP_MEMBER_EPOCH,
};
use super::records::RecordKey;
use super::state::GroupState;
use super::{GroupCoordinator, GroupEntry};

/// A consumer group as ConsumerGroupDescribe reports it.
pub struct DescribedConsumerGroup {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    /// Each member with its target assignment.
    pub members: Vec<(ConsumerMember, TopicPartitions)>,
}

/// A `__consumer_offsets` record: key and value (None: a tombstone).
type StoredRecord = (Bytes, Option<Bytes>);

fn encode(group: &str, records: &[ConsumerRecord]) -> Vec<StoredRecord> {
    records.iter().map(|r| r.encode(group)).collect()
}

impl GroupCoordinator {
    /// The assignors of `group.consumer.assignors`, by name.
    pub fn consumer_assignors(&self) -> &[&'static str] {
        &self.config.consumer_assignors
    }

    /// ConsumerGroupHeartbeat (request `version`).
    pub async fn consumer_heartbeat(
        &self,
        group_id: &str,
        hb: Heartbeat,
        version: i16,
    ) -> Result<HeartbeatReply, HeartbeatError> {
        heartbeat::validate(&hb, version, group_id, self.consumer_assignors())?;
        self.check_coordinator(group_id)
            .map_err(|e| (e, e.to_string()))?;
        let joining = hb.member_epoch == 0;
        let handle = if joining {
            self.get_or_create(group_id)
        } else {
            self.group(group_id).ok_or_else(|| {
                (
                    ResponseError::GroupIdNotFound,
                    format!("Consumer group {group_id} not found."),
                )
            })?
        };
        let image = self.meta.image();
        let settings = self.heartbeat_settings();
        let now = Instant::now();
        let (reply, written) = {
            let mut entry = handle.lock();
            let (reply, records) = self.consumer_heartbeat_locked(
                group_id,
                &mut entry,
                hb,
                joining,
                image.as_ref(),
                &settings,
                now,
            )?;
            let written = (!records.is_empty()).then(|| self.append(group_id, &records));
            (reply, written)
        };
        match written {
            None => Ok(reply),
            Some(Err(e)) => Err((e, e.to_string())),
            Some(Ok(w)) => match self.replicated(&w).await {
                Ok(()) => Ok(reply),
                Err(e) => Err((e, e.to_string())),
            },
        }
    }

    /// ConsumerGroupHeartbeat under the group's lock: the reply and the records to append.
    #[allow(clippy::too_many_arguments)]
    fn consumer_heartbeat_locked(
        &self,
        group_id: &str,
        entry: &mut GroupEntry,
        hb: Heartbeat,
        joining: bool,
        image: &crate::meta::image::MetadataImage,
        settings: &heartbeat::HeartbeatSettings<'_>,
        now: Instant,
    ) -> Result<(HeartbeatReply, Vec<StoredRecord>), HeartbeatError> {
        let mut records = Vec::new();
        if entry.consumer.is_none() {
            if !joining {
                return Err((
                    ResponseError::GroupIdNotFound,
                    format!("Consumer group {group_id} not found."),
                ));
            }
            if entry.group.state != GroupState::Empty || !entry.group.is_empty() {
                // A live classic group: upgraded if the policy and the group allow it, and
                // only if the joining heartbeat itself is accepted.
                let mut cg = self.upgraded(group_id, &entry.group, image, now)?;
                let (reply, changes) = cg.heartbeat(group_id, hb, image, settings, now)?;
                cg.stored = true;
                tracing::info!(group = %group_id, "upgraded classic group to a consumer group");
                let mut records = Self::upgrade_records(group_id, &cg);
                records.extend(encode(group_id, &changes));
                entry.group.abort_waiting();
                entry.group = super::state::Group::new(group_id, crate::replica::now_ms());
                entry.consumer = Some(cg);
                return Ok((reply, records));
            }
            if entry.group.generation > 0 || entry.group.protocol_type.is_some() {
                records.push(Self::classic_tombstone(group_id));
            }
            entry.group = super::state::Group::new(group_id, crate::replica::now_ms());
            entry.consumer = Some(ConsumerGroup::default());
        }
        let Some(group) = entry.consumer.as_mut() else {
            return Err((ResponseError::UnknownServerError, String::new()));
        };
        if hb.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            && group.members.contains_key(&hb.member_id)
            && self.downgrade_allowed(group, &hb.member_id)
        {
            let reply = HeartbeatReply {
                member_id: hb.member_id.clone(),
                member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
                assignment: None,
            };
            let records = self.downgrade(group_id, entry, &hb.member_id, image);
            return Ok((reply, records));
        }
        let (reply, changes) = group.heartbeat(group_id, hb, image, settings, now)?;
        if !changes.is_empty() {
            group.stored = true;
        }
        records.extend(encode(group_id, &changes));
        Ok((reply, records))
    }

    pub(super) fn classic_tombstone(group_id: &str) -> (Bytes, Option<Bytes>) {
        (
            RecordKey::Group {
                group: group_id.to_string(),
            }
            .encode(),
            None,
        )
    }

    /// A classic JoinGroup reached a group: if it is an empty consumer group, the classic
    /// group takes the id over (its records are deleted). A non-empty consumer group takes
    /// classic members in (`migration.rs`) unless migration is disabled: then it refuses
    /// them (INCONSISTENT_GROUP_PROTOCOL, as Kafka).
    pub(super) fn claim_for_classic(
        &self,
        group_id: &str,
        entry: &mut GroupEntry,
    ) -> Result<(), ResponseError> {
        let Some(cg) = &entry.consumer else {
            return Ok(());
        };
        if !cg.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        if cg.stored {
            let tombstones = encode(group_id, &cg.tombstones());
            self.append(group_id, &tombstones)?;
        }
        entry.consumer = None;
        Ok(())
    }

    /// ConsumerGroupDescribe for one group.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Result<DescribedConsumerGroup, (ResponseError, String)> {
        self.check_coordinator(group_id)
            .map_err(|e| (e, e.to_string()))?;
        let not_found = || {
            (
                ResponseError::GroupIdNotFound,
                format!("Group {group_id} not found."),
            )
        };
        let handle = self.group(group_id).ok_or_else(not_found)?;
        let entry = handle.lock();
        let Some(g) = &entry.consumer else {
            if entry.group.state == GroupState::Dead {
                return Err(not_found());
            }
            return Err((
                ResponseError::GroupIdNotFound,
                format!("Group {group_id} is not a consumer group."),
            ));
        };
        let default = self
            .consumer_assignors()
            .first()
            .copied()
            .unwrap_or("uniform");
        Ok(DescribedConsumerGroup {
            state: g.state().name(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g
                .preferred_assignor()
                .unwrap_or_else(|| default.to_string()),
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.clone(),
                        g.target.get(&m.member_id).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        })
    }

    /// Fences consumer group members whose session or rebalance timeout passed.
    pub(super) fn tick_consumer_groups(&self) {
        let now = Instant::now();
        let image = self.meta.image();
        for (id, handle) in self.all_groups() {
            let mut entry = handle.lock();
            let Some(g) = entry.consumer.as_ref() else {
                continue;
            };
            let expired = g.expired_members(now);
            if expired.is_empty() {
                continue;
            }
            let mut records = Vec::new();
            for member in expired {
                tracing::info!(group = %id, member = %member, "fencing consumer group member: session or rebalance timeout");
                let Some(g) = entry.consumer.as_mut() else {
                    break;
                };
                if self.downgrade_allowed(g, &member) {
                    records.extend(self.downgrade(&id, &mut entry, &member, image.as_ref()));
                    break;
                }
                records.extend(encode(&id, &g.fence(&member, image.as_ref())));
            }
            if let Err(e) = self.append(&id, &records) {
                tracing::warn!(group = %id, error = ?e, "storing consumer group records failed");
            }
        }
    }

    /// The state of a consumer group for ListGroups.
    pub(super) fn consumer_state(entry: &GroupEntry) -> Option<ConsumerGroupState> {
        entry.consumer.as_ref().map(ConsumerGroup::state)
    }
}
