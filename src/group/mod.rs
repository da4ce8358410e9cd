//! The group coordinator: classic consumer groups and their committed offsets, persisted the
//! way Kafka persists them, in the compacted internal topic `__consumer_offsets`. A group is
//! coordinated by the leader of partition `abs(hash(group)) % offsets.topic.num.partitions`;
//! that broker loads the partition's records when it becomes leader.

pub mod member;
pub mod records;
pub mod state;
pub mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use crate::log::batch;
use crate::replica::{now_ms, Partition, ReplicaManager};
use records::{partition_for, GroupValue, OffsetValue, RecordKey};
use state::{Group, GroupState, GroupTiming};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Coordinator settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// offsets.topic.num.partitions
    pub offsets_partitions: i32,
    /// offsets.topic.replication.factor
    pub offsets_replication_factor: i16,
    /// offsets.topic.segment.bytes
    pub offsets_segment_bytes: i64,
    /// group.min.session.timeout.ms / group.max.session.timeout.ms
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// group.max.size
    pub max_size: usize,
    /// offsets.retention.minutes
    pub offsets_retention: Duration,
    /// offsets.retention.check.interval.ms
    pub offsets_retention_check_interval: Duration,
    /// offset.metadata.max.bytes
    pub offset_metadata_max_bytes: usize,
    /// offsets.commit.timeout.ms
    pub commit_timeout: Duration,
}

/// One group and its committed offsets.
pub struct GroupEntry {
    pub group: Group,
    pub offsets: HashMap<(String, i32), OffsetValue>,
}

pub type GroupHandle = Arc<Mutex<GroupEntry>>;

pub struct GroupCoordinator {
    pub config: GroupConfig,
    groups: Mutex<HashMap<String, GroupHandle>>,
    /// `__consumer_offsets` partitions this broker coordinates and has loaded, with the
    /// leader epoch they were loaded in.
    loaded: Mutex<HashMap<i32, i32>>,
}

/// Maps a failed `__consumer_offsets` append to what Kafka answers group clients.
fn append_error(e: &crate::replica::PartitionError) -> ResponseError {
    use crate::log::LogError;
    use crate::replica::PartitionError as P;
    match e {
        P::NotLeader | P::Log(LogError::Io(_)) => ResponseError::NotCoordinator,
        P::Log(LogError::MessageTooLarge { .. }) => ResponseError::InvalidCommitOffsetSize,
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            groups: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn timing(&self) -> GroupTiming {
        GroupTiming {
            initial_rebalance_delay: self.config.initial_rebalance_delay,
            max_size: self.config.max_size,
        }
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_partitions)
    }

    /// Whether this broker coordinates `group` now: NOT_COORDINATOR when another broker
    /// does, COORDINATOR_LOAD_IN_PROGRESS while its partition is being loaded.
    pub fn check_owner(&self, replicas: &ReplicaManager, group: &str) -> Result<(), ResponseError> {
        let p = self.partition_for(group);
        if self.loaded.lock().contains_key(&p) {
            return Ok(());
        }
        match replicas.partition(OFFSETS_TOPIC, p) {
            Some(part) if part.is_leader() => Err(ResponseError::CoordinatorLoadInProgress),
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    pub fn group(&self, id: &str) -> Option<GroupHandle> {
        self.groups.lock().get(id).cloned()
    }

    pub fn get_or_create(&self, id: &str) -> GroupHandle {
        self.groups
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(GroupEntry {
                    group: Group::new(id, now_ms()),
                    offsets: HashMap::new(),
                }))
            })
            .clone()
    }

    /// Drops a deleted group from memory (its tombstones are written).
    pub fn forget(&self, id: &str) {
        self.groups.lock().remove(id);
    }

    pub fn all_groups(&self) -> Vec<(String, GroupHandle)> {
        self.groups
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Appends records to the group's `__consumer_offsets` partition. Returns the partition and
    /// the last offset written, to wait for replication outside any group lock.
    pub fn append(
        &self,
        replicas: &ReplicaManager,
        group: &str,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<(Arc<Partition>, i64), ResponseError> {
        let p = self.partition_for(group);
        let partition = replicas
            .partition(OFFSETS_TOPIC, p)
            .ok_or(ResponseError::NotCoordinator)?;
        let refs: Vec<batch::KeyValue<'_>> = records
            .iter()
            .map(|(k, v)| (Some(&k[..]), v.as_deref()))
            .collect();
        let raw = batch::encode_uncompressed_batch(&refs, now_ms());
        let view =
            batch::validate_produce_batch(&raw).map_err(|_| ResponseError::UnknownServerError)?;
        let info = partition
            .append_as_leader(&view, -1, now_ms())
            .map_err(|e| append_error(&e))?;
        Ok((partition, info.last_offset))
    }

    /// Waits until an append is replicated (acks=-1 semantics for coordinator writes).
    pub async fn committed(&self, written: (Arc<Partition>, i64)) -> Result<(), ResponseError> {
        let (partition, last) = written;
        if partition
            .wait_for_high_watermark(last, self.config.commit_timeout)
            .await
        {
            Ok(())
        } else if partition.is_leader() {
            Err(ResponseError::RequestTimedOut)
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// The record that stores a group's metadata.
    pub fn group_record(group: &str, value: &GroupValue) -> (Bytes, Option<Bytes>) {
        (
            RecordKey::Group {
                group: group.to_string(),
            }
            .encode(),
            Some(value.encode()),
        )
    }

    /// Loads newly led `__consumer_offsets` partitions and forgets those no longer led.
    pub fn sync_partitions(&self, replicas: &ReplicaManager) {
        let hosted = replicas.hosted();
        let led: HashMap<i32, i32> = hosted
            .get(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, p)| p.is_leader())
                    .map(|(i, p)| (*i, p.leader_epoch()))
                    .collect()
            })
            .unwrap_or_default();
        let current: HashMap<i32, i32> = self.loaded.lock().clone();
        for (p, epoch) in &current {
            // Gone, or led again in a newer epoch (leadership left and came back between two
            // images we saw): what we hold may miss what another coordinator wrote meanwhile.
            if led.get(p) != Some(epoch) {
                self.unload(*p);
            }
        }
        for (p, epoch) in &led {
            if current.get(p) != Some(epoch) {
                if let Some(partition) = replicas.partition(OFFSETS_TOPIC, *p) {
                    self.load(*p, *epoch, &partition);
                }
            }
        }
    }

    fn unload(&self, p: i32) {
        let n = self.config.offsets_partitions;
        self.groups.lock().retain(|id, _| partition_for(id, n) != p);
        self.loaded.lock().remove(&p);
        tracing::debug!(
            partition = p,
            "stopped coordinating groups of {OFFSETS_TOPIC} partition"
        );
    }

    /// Replays a `__consumer_offsets` partition into groups and offsets.
    fn load(&self, p: i32, leader_epoch: i32, partition: &Partition) {
        let started = Instant::now();
        let mut offsets: HashMap<(String, String, i32), OffsetValue> = HashMap::new();
        let mut metadata: HashMap<String, GroupValue> = HashMap::new();
        let mut tombstoned: HashSet<String> = HashSet::new();
        partition.log.for_each_batch(|b| {
            let mut bytes = Bytes::copy_from_slice(b.as_bytes());
            let set = match kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes) {
                Ok(set) => set,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "skipping an undecodable batch");
                    return;
                }
            };
            for r in set.records {
                let Some(key) = r.key.as_deref() else {
                    continue;
                };
                let key = match RecordKey::decode(key) {
                    Ok(Some(k)) => k,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "skipping a malformed key");
                        continue;
                    }
                };
                match (key, r.value.as_deref()) {
                    (
                        RecordKey::Offset {
                            group,
                            topic,
                            partition,
                        },
                        None,
                    ) => {
                        offsets.remove(&(group, topic, partition));
                    }
                    (
                        RecordKey::Offset {
                            group,
                            topic,
                            partition,
                        },
                        Some(v),
                    ) => {
                        if let Ok(v) = OffsetValue::decode(v) {
                            offsets.insert((group, topic, partition), v);
                        }
                    }
                    (RecordKey::Group { group }, None) => {
                        metadata.remove(&group);
                        tombstoned.insert(group);
                    }
                    (RecordKey::Group { group }, Some(v)) => {
                        if let Ok(v) = GroupValue::decode(v) {
                            tombstoned.remove(&group);
                            metadata.insert(group, v);
                        }
                    }
                }
            }
        });
        let now = Instant::now();
        let now_wall = now_ms();
        let mut entries: HashMap<String, GroupEntry> = HashMap::new();
        for (id, value) in &metadata {
            entries.insert(
                id.clone(),
                GroupEntry {
                    group: Group::restore(id, value, now, now_wall),
                    offsets: HashMap::new(),
                },
            );
        }
        for ((group, topic, partition), v) in offsets {
            entries
                .entry(group.clone())
                .or_insert_with(|| GroupEntry {
                    group: Group::new(&group, now_wall),
                    offsets: HashMap::new(),
                })
                .offsets
                .insert((topic, partition), v);
        }
        let count = entries.len();
        {
            let mut groups = self.groups.lock();
            for (id, e) in entries {
                groups.insert(id, Arc::new(Mutex::new(e)));
            }
        }
        self.loaded.lock().insert(p, leader_epoch);
        tracing::debug!(
            partition = p,
            groups = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded {OFFSETS_TOPIC} partition"
        );
    }

    /// Timeouts of every group (sessions, join and sync phases), persisting what changed.
    pub fn tick(&self, replicas: &ReplicaManager) {
        let now = Instant::now();
        let now_wall = now_ms();
        let timing = self.timing();
        for (id, handle) in self.all_groups() {
            let mut entry = handle.lock();
            if let Some(value) = entry.group.tick(timing, now, now_wall) {
                if let Err(e) = self.append(replicas, &id, &[Self::group_record(&id, &value)]) {
                    tracing::warn!(group = %id, error = ?e, "storing group metadata failed");
                }
            }
        }
    }

    /// Offset retention (`offsets.retention.minutes`), as Kafka applies it: an empty group's
    /// offsets expire once the group has been empty that long; a group with members only loses
    /// offsets of topics it no longer subscribes to; a group without a protocol (manual
    /// assignment) loses offsets by commit time. Groups left with nothing are forgotten.
    pub fn expire_offsets(&self, replicas: &ReplicaManager) {
        let now = now_ms();
        let retention = self.config.offsets_retention.as_millis() as i64;
        for (id, handle) in self.all_groups() {
            let mut entry = handle.lock();
            let g = &entry.group;
            let subscribed = g.subscribed_topics();
            let empty_since = (g.state == GroupState::Empty).then_some(g.state_timestamp_ms);
            let has_protocol = g.protocol_type.is_some();
            let expired: Vec<(String, i32)> = entry
                .offsets
                .iter()
                .filter(|((topic, _), v)| {
                    if let Some(since) = empty_since.filter(|_| has_protocol) {
                        now - since.max(v.commit_timestamp) >= retention
                    } else if let Some(topics) = &subscribed {
                        !topics.contains(topic) && now - v.commit_timestamp >= retention
                    } else {
                        !has_protocol && now - v.commit_timestamp >= retention
                    }
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !expired.is_empty() {
                let tombstones: Vec<(Bytes, Option<Bytes>)> = expired
                    .iter()
                    .map(|(t, p)| {
                        (
                            RecordKey::Offset {
                                group: id.clone(),
                                topic: t.clone(),
                                partition: *p,
                            }
                            .encode(),
                            None,
                        )
                    })
                    .collect();
                match self.append(replicas, &id, &tombstones) {
                    Ok(_) => {
                        for k in &expired {
                            entry.offsets.remove(k);
                        }
                        tracing::info!(group = %id, count = expired.len(), "expired committed offsets");
                    }
                    Err(e) => tracing::warn!(group = %id, error = ?e, "expiring offsets failed"),
                }
            }
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
