//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and offset retention, as Kafka's
//! `GroupMetadataManager` runs them.
//!
//! A commit is appended to `__consumer_offsets` under the group's lock, and enters the group's
//! offsets only after it is replicated; a commit whose replication fails (timeout, lost
//! leadership) is dropped and never seen by OffsetFetch. Deleting (OffsetDelete, retention)
//! works the same way with tombstones. Each in-memory offset remembers the log offset of its
//! record, so that of two writes to the same partition that finish out of order, the later
//! record wins, as it does in the log.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::{OffsetValue, RecordKey};
use super::state::{GroupState, NONE};
use super::{GroupCoordinator, GroupEntry, Written};
use crate::meta::image::MetadataImage;
use crate::replica::now_ms;

/// An offset as the group holds it: the value, and where its record is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub value: OffsetValue,
    pub record_offset: i64,
}

/// One partition's offset in an OffsetCommit.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Committed offsets by topic: (partition, value if any), partitions ascending.
pub type Committed = BTreeMap<String, Vec<(i32, Option<OffsetValue>)>>;

/// What OffsetDelete did: an error for the whole request (0 for none) and one per partition.
pub struct OffsetDeleteResult {
    pub error: i16,
    pub topics: Vec<(String, Vec<(i32, i16)>)>,
}

pub(super) fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    RecordKey::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    }
    .encode()
}

impl GroupEntry {
    /// Takes in a replicated offset record, unless a later record for the same partition is
    /// already in.
    pub(super) fn commit_replicated(
        &mut self,
        topic: &str,
        partition: i32,
        committed: CommittedOffset,
    ) {
        let key = (topic.to_string(), partition);
        if self
            .offsets
            .get(&key)
            .is_none_or(|held| held.record_offset < committed.record_offset)
        {
            self.offsets.insert(key, committed);
        }
    }

    /// Takes in a replicated tombstone written at `record_offset`.
    fn delete_replicated(&mut self, topic: &str, partition: i32, record_offset: i64) {
        let key = (topic.to_string(), partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|held| held.record_offset < record_offset)
        {
            self.offsets.remove(&key);
        }
    }
}

impl GroupCoordinator {
    /// OffsetCommit. Returns an error code per entry, in order, or the error for the whole
    /// request (an invalid group id, or not the coordinator).
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        version: i16,
        commits: Vec<OffsetCommit>,
    ) -> Result<Vec<i16>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.check_coordinator(group_id)?;
        let image = self.meta.image();
        let handle = self.get_or_create(group_id);
        let (mut errors, accepted) = self.screen_commits(&image, &commits, now_ms());
        let written = {
            let entry = handle.lock();
            let valid = match &entry.consumer {
                Some(c) => c.validate_offset_commit(member_id, generation, version, false),
                None => entry
                    .group
                    .validate_offset_commit(member_id, instance, generation),
            };
            if let Err(e) = valid {
                return Ok(vec![e.code(); commits.len()]);
            }
            if accepted.is_empty() {
                None
            } else {
                Some(self.append(group_id, &offset_records(group_id, &commits, &accepted)))
            }
        };
        let stored = match written {
            None => return Ok(errors),
            Some(Err(e)) => Err(e),
            Some(Ok(w)) => self.replicated(&w).await.map(|()| w),
        };
        match stored {
            Ok(w) => {
                let mut entry = handle.lock();
                for (n, (i, value)) in accepted.into_iter().enumerate() {
                    let c = &commits[i];
                    let committed = CommittedOffset {
                        value,
                        record_offset: w.record_offset(n),
                    };
                    entry.commit_replicated(&c.topic, c.partition, committed);
                }
            }
            Err(e) => {
                for (i, _) in &accepted {
                    errors[*i] = e.code();
                }
            }
        }
        Ok(errors)
    }

    /// Screens a commit's entries: an error code per entry (UNKNOWN_TOPIC_OR_PARTITION,
    /// OFFSET_METADATA_TOO_LARGE, else NONE) and, by index, the values of those to write.
    pub(super) fn screen_commits(
        &self,
        image: &MetadataImage,
        commits: &[OffsetCommit],
        now: i64,
    ) -> (Vec<i16>, Vec<(usize, OffsetValue)>) {
        let mut errors = Vec::with_capacity(commits.len());
        let mut accepted = Vec::new();
        for (i, c) in commits.iter().enumerate() {
            let known = image
                .topic(&c.topic)
                .is_some_and(|t| t.partitions.iter().any(|p| p.partition == c.partition));
            let too_large = c
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes);
            errors.push(if !known {
                ResponseError::UnknownTopicOrPartition.code()
            } else if too_large {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                accepted.push((
                    i,
                    OffsetValue {
                        offset: c.offset,
                        leader_epoch: c.leader_epoch,
                        metadata: c.metadata.clone().unwrap_or_default(),
                        commit_timestamp: now,
                    },
                ));
                NONE
            });
        }
        (errors, accepted)
    }

    /// OffsetFetch v9+ names the member asking: a consumer group member must ask in its
    /// current epoch (STALE_MEMBER_EPOCH), a member id unknown to the group is refused.
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(handle) = self.group(group_id) else {
            return Ok(());
        };
        let entry = handle.lock();
        match &entry.consumer {
            Some(c) => c.validate_offset_fetch(member_id, member_epoch),
            None => Ok(()),
        }
    }

    /// OffsetFetch: the committed offsets of `group_id` (all of them when `wanted` is None).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Committed, ResponseError> {
        self.check_coordinator(group_id)?;
        let handle = self.group(group_id);
        let entry = handle.as_ref().map(|h| h.lock());
        let offsets = entry.as_ref().map(|e| &e.offsets);
        let mut out = Committed::new();
        match wanted {
            Some(topics) => {
                for (t, parts) in topics {
                    let list = out.entry(t.clone()).or_default();
                    for p in parts {
                        let value = offsets
                            .and_then(|o| o.get(&(t.clone(), p)))
                            .map(|c| c.value.clone());
                        list.push((p, value));
                    }
                }
            }
            None => {
                for ((t, p), c) in offsets.into_iter().flatten() {
                    out.entry(t.clone())
                        .or_default()
                        .push((*p, Some(c.value.clone())));
                }
                for list in out.values_mut() {
                    list.sort_by_key(|(p, _)| *p);
                }
            }
        }
        Ok(out)
    }

    /// OffsetDelete: removes a group's offsets for partitions of topics it does not
    /// subscribe to. The offsets go from memory only once the tombstones are replicated.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<OffsetDeleteResult, ResponseError> {
        self.check_coordinator(group_id)?;
        let handle = self.group(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        let mut result = Vec::with_capacity(topics.len());
        let mut doomed: Vec<(String, i32)> = Vec::new();
        let written = {
            let entry = handle.lock();
            if entry.group.state == GroupState::Dead {
                return Err(ResponseError::GroupIdNotFound);
            }
            let subscribed: HashSet<String> = entry
                .group
                .subscribed_topics()
                .unwrap_or_default()
                .into_iter()
                .collect();
            let active = !entry.group.is_empty();
            if active && entry.group.protocol_type.as_deref() != Some("consumer") {
                return Err(ResponseError::NonEmptyGroup);
            }
            for (topic, partitions) in topics {
                let blocked = active && subscribed.contains(&topic);
                let errors = partitions
                    .into_iter()
                    .map(|p| {
                        if blocked {
                            return (p, ResponseError::GroupSubscribedToTopic.code());
                        }
                        if entry.offsets.contains_key(&(topic.clone(), p)) {
                            doomed.push((topic.clone(), p));
                        }
                        (p, NONE)
                    })
                    .collect();
                result.push((topic, errors));
            }
            let tombstones: Vec<(Bytes, Option<Bytes>)> = doomed
                .iter()
                .map(|(t, p)| (offset_key(group_id, t, *p), None))
                .collect();
            (!tombstones.is_empty()).then(|| self.append(group_id, &tombstones))
        };
        let error = match written {
            None => NONE,
            Some(Err(e)) => e.code(),
            Some(Ok(w)) => self.forget_after_replication(&handle, &w, &doomed).await,
        };
        Ok(OffsetDeleteResult {
            error,
            topics: result,
        })
    }

    /// Waits for tombstones to replicate, then drops the offsets they delete. Returns the
    /// error code (0 when replicated).
    async fn forget_after_replication(
        &self,
        handle: &super::GroupHandle,
        w: &Written,
        doomed: &[(String, i32)],
    ) -> i16 {
        match self.replicated(w).await {
            Ok(()) => {
                let mut entry = handle.lock();
                for (n, (t, p)) in doomed.iter().enumerate() {
                    entry.delete_replicated(t, *p, w.record_offset(n));
                }
                NONE
            }
            Err(e) => e.code(),
        }
    }

    /// Offset retention (`offsets.retention.minutes`), as Kafka applies it: an empty group's
    /// offsets expire once the group has been empty that long; a group with members only loses
    /// offsets of topics it no longer subscribes to; a group without a protocol (manual
    /// assignment) loses offsets by commit time. Groups left with nothing are forgotten.
    pub async fn expire_offsets(&self) {
        let now = now_ms();
        let retention = self.config.offsets_retention.as_millis() as i64;
        for (id, handle) in self.all_groups() {
            let (expired, written) = {
                let entry = handle.lock();
                let expired = expired_offsets(&entry, now, retention);
                let tombstones: Vec<(Bytes, Option<Bytes>)> = expired
                    .iter()
                    .map(|(t, p)| (offset_key(&id, t, *p), None))
                    .collect();
                let written = (!tombstones.is_empty()).then(|| self.append(&id, &tombstones));
                (expired, written)
            };
            match written {
                Some(Ok(w)) => match self.forget_after_replication(&handle, &w, &expired).await {
                    NONE => {
                        tracing::info!(group = %id, count = expired.len(), "expired committed offsets")
                    }
                    e => tracing::warn!(group = %id, error = e, "expiring offsets failed"),
                },
                Some(Err(e)) => tracing::warn!(group = %id, error = ?e, "expiring offsets failed"),
                None => {}
            }
            let entry = handle.lock();
            let forget = entry.group.state == GroupState::Dead
                || (entry.group.state == GroupState::Empty
                    && entry.offsets.is_empty()
                    && entry.group.is_empty());
            drop(entry);
            if forget {
                self.groups.lock().remove(&id);
            }
        }
    }
}

/// The offsets of `entry` that retention removes at `now`.
fn expired_offsets(entry: &GroupEntry, now: i64, retention: i64) -> Vec<(String, i32)> {
    let g = &entry.group;
    let subscribed = g.subscribed_topics();
    let empty_since = (g.state == GroupState::Empty).then_some(g.state_timestamp_ms);
    let has_protocol = g.protocol_type.is_some();
    entry
        .offsets
        .iter()
        .filter(|((topic, _), c)| {
            let committed_at = c.value.commit_timestamp;
            if let Some(since) = empty_since.filter(|_| has_protocol) {
                now - since.max(committed_at) >= retention
            } else if let Some(topics) = &subscribed {
                !topics.contains(topic) && now - committed_at >= retention
            } else {
                !has_protocol && now - committed_at >= retention
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The `__consumer_offsets` records of the accepted entries of a commit.
pub(super) fn offset_records(
    group_id: &str,
    commits: &[OffsetCommit],
    accepted: &[(usize, OffsetValue)],
) -> Vec<(Bytes, Option<Bytes>)> {
    accepted
        .iter()
        .map(|(i, v)| {
            let c = &commits[*i];
            (
                offset_key(group_id, &c.topic, c.partition),
                Some(v.encode()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::state::Group;

    fn committed(offset: i64, record_offset: i64) -> CommittedOffset {
        CommittedOffset {
            value: OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            },
            record_offset,
        }
    }

    #[test]
    fn the_later_record_wins_whatever_order_replication_finishes_in() {
        let mut entry = GroupEntry {
            consumer: None,
            group: Group::new("g", 0),
            offsets: Default::default(),
            pending_txn: std::collections::HashMap::new(),
        };
        // Two commits to one partition, written at log offsets 10 and 11, whose replication
        // waits finish in the opposite order.
        entry.commit_replicated("t", 0, committed(200, 11));
        entry.commit_replicated("t", 0, committed(100, 10));
        assert_eq!(entry.offsets[&("t".to_string(), 0)].value.offset, 200);
        // A tombstone older than the offset held leaves it; a newer one removes it.
        entry.delete_replicated("t", 0, 9);
        assert!(entry.offsets.contains_key(&("t".to_string(), 0)));
        entry.delete_replicated("t", 0, 12);
        assert!(entry.offsets.is_empty());
    }
}
