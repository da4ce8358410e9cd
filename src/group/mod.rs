//! The group coordinator: classic groups, consumer groups of the next-generation protocol
//! (KIP-848, `consumer/` and `consumer_coordinator.rs`) and their committed offsets, persisted the
//! way Kafka persists them, in the compacted internal topic `__consumer_offsets`. A group is
//! coordinated by the leader of partition `abs(hash(group)) % offsets.topic.num.partitions`;
//! that broker loads the partition's records when it becomes leader.
//!
//! [`GroupCoordinator`] is the entry point for every group API: `membership.rs` (join, sync,
//! heartbeat, leave, list, describe, delete), `offsets.rs` (commit, fetch, delete, expiry),
//! `topic.rs` (creating `__consumer_offsets`), `migration.rs` (the online upgrade and
//! downgrade between classic and consumer groups, `group.consumer.migration.policy`). The API
//! handlers only translate requests and responses. `state.rs` is the pure classic-protocol
//! state machine.
//!
//! A write to `__consumer_offsets` takes effect in memory only once it is replicated (the
//! high watermark passed it), as Kafka's pending offset commits do: what OffsetFetch returns
//! can never be lost by a coordinator failover.

pub mod consumer;
mod consumer_coordinator;
pub mod member;
mod membership;
mod migration;
mod offsets;
pub mod records;
pub mod state;
mod topic;
mod txn_offsets;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use crate::log::{batch, LogError};
use crate::meta::MetadataQuorum;
use crate::replica::{now_ms, Partition, PartitionError, ReplicaManager, WriteFailed, Written};
pub use membership::{ClientInfo, DescribedGroup, ListedGroup};
pub use offsets::{Committed, CommittedOffset, OffsetCommit, OffsetDeleteResult};
use records::{partition_for, GroupValue, OffsetValue, RecordKey};
use state::{Group, GroupTiming};
pub use topic::{coordinator_address, ensure_internal_topic, CoordinatorAddress};
pub use txn_offsets::TxnCommitter;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How recently the active controller must have reached this broker (or, on the controller,
/// a quorum acknowledged it) for it to act as a group coordinator: ten Raft heartbeats.
pub const COORDINATOR_CONTACT: Duration = Duration::from_secs(2);

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
    /// group.consumer.session.timeout.ms
    pub consumer_session_timeout: Duration,
    /// group.consumer.heartbeat.interval.ms
    pub consumer_heartbeat_interval: Duration,
    /// group.consumer.max.size
    pub consumer_max_size: usize,
    /// group.consumer.assignors (short names; the first is the default)
    pub consumer_assignors: Vec<&'static str>,
    /// group.consumer.migration.policy
    pub migration_policy: consumer::classic::MigrationPolicy,
}

/// One group, its committed offsets, and offsets committed inside transactions not yet
/// decided, by producer id.
pub struct GroupEntry {
    pub group: Group,
    /// Set when the group is a consumer group (KIP-848) rather than a classic one.
    pub consumer: Option<consumer::ConsumerGroup>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    pub pending_txn: HashMap<i64, txn_offsets::PendingOffsets>,
}

pub type GroupHandle = Arc<Mutex<GroupEntry>>;

pub struct GroupCoordinator {
    pub config: GroupConfig,
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    groups: Mutex<HashMap<String, GroupHandle>>,
    /// `__consumer_offsets` partitions this broker coordinates and has loaded, with the
    /// leader epoch they were loaded in.
    loaded: Mutex<HashMap<i32, i32>>,
}

/// How a coordinator's set of loaded state partitions (partition -> leader epoch) must change
/// to match the partitions it leads now: (those to unload, those to load). A partition led
/// again in a newer epoch is both: leadership left and came back between two images seen,
/// and what was loaded may miss what another coordinator wrote meanwhile.
pub fn leadership_changes(
    loaded: &HashMap<i32, i32>,
    led: &HashMap<i32, i32>,
) -> (Vec<i32>, Vec<(i32, i32)>) {
    let gone = loaded
        .iter()
        .filter(|(p, epoch)| led.get(p) != Some(epoch))
        .map(|(p, _)| *p)
        .collect();
    let new = led
        .iter()
        .filter(|(p, epoch)| loaded.get(p) != Some(epoch))
        .map(|(p, e)| (*p, *e))
        .collect();
    (gone, new)
}

/// Maps a failed `__consumer_offsets` append to what Kafka answers group clients.
fn append_error(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::NotLeader | PartitionError::Log(LogError::Io(_)) => {
            ResponseError::NotCoordinator
        }
        PartitionError::Log(LogError::MessageTooLarge { .. }) => {
            ResponseError::InvalidCommitOffsetSize
        }
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, replicas: Arc<ReplicaManager>, meta: MetadataQuorum) -> Self {
        Self {
            config,
            replicas,
            meta,
            groups: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    fn timing(&self) -> GroupTiming {
        GroupTiming {
            initial_rebalance_delay: self.config.initial_rebalance_delay,
            max_size: self.config.max_size,
        }
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_partitions)
    }

    /// Whether this broker coordinates `group` now: NOT_COORDINATOR when another broker does,
    /// or when this broker's metadata may be stale (paused, or cut off from the controller
    /// for longer than `COORDINATOR_CONTACT`: coordination may have moved on without it, and
    /// clients should look the coordinator up again); COORDINATOR_LOAD_IN_PROGRESS while its
    /// partition is being loaded.
    pub fn check_coordinator(&self, group: &str) -> Result<(), ResponseError> {
        if !self.meta.in_contact(COORDINATOR_CONTACT) {
            return Err(ResponseError::NotCoordinator);
        }
        let p = self.partition_for(group);
        if self.loaded.lock().contains_key(&p) {
            return Ok(());
        }
        match self.replicas.partition(OFFSETS_TOPIC, p) {
            Some(part) if part.is_leader() => Err(ResponseError::CoordinatorLoadInProgress),
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    fn group(&self, id: &str) -> Option<GroupHandle> {
        self.groups.lock().get(id).cloned()
    }

    fn get_or_create(&self, id: &str) -> GroupHandle {
        self.groups
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(GroupEntry {
                    group: Group::new(id, now_ms()),
                    consumer: None,
                    offsets: HashMap::new(),
                    pending_txn: HashMap::new(),
                }))
            })
            .clone()
    }

    /// Every group coordinated here.
    pub fn all_groups(&self) -> Vec<(String, GroupHandle)> {
        self.groups
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Appends records to the group's `__consumer_offsets` partition. Call with the group's
    /// lock held (so a group's records are appended in the order its state changed), and wait
    /// with [`Self::replicated`] after releasing it.
    fn append(
        &self,
        group: &str,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<Written, ResponseError> {
        debug_assert!(!records.is_empty());
        let p = self.partition_for(group);
        let partition = self
            .replicas
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
        debug_assert_eq!(
            info.last_offset - info.base_offset + 1,
            records.len() as i64,
            "one offset per record"
        );
        Ok(Written::new(partition, &info))
    }

    /// Waits until an append is durable as the flush policy asks and replicated to the ISR
    /// (acks=-1 semantics for coordinator writes), up to `offsets.commit.timeout.ms`.
    async fn replicated(&self, written: &Written) -> Result<(), ResponseError> {
        let deadline = tokio::time::Instant::now() + self.config.commit_timeout;
        written.replicated(deadline).await.map_err(|e| match e {
            WriteFailed::NotLeader => ResponseError::NotCoordinator,
            WriteFailed::TimedOut => ResponseError::RequestTimedOut,
        })
    }

    /// The record that stores a group's metadata.
    fn group_record(group: &str, value: &GroupValue) -> (Bytes, Option<Bytes>) {
        (
            RecordKey::Group {
                group: group.to_string(),
            }
            .encode(),
            Some(value.encode()),
        )
    }

    /// Loads newly led `__consumer_offsets` partitions and forgets those no longer led.
    /// Blocking: it reads whole partitions (called with the metadata, off the async workers).
    pub fn sync_partitions(&self) {
        let led = self.replicas.led_partitions(OFFSETS_TOPIC);
        let current = self.loaded.lock().clone();
        let (gone, new) = leadership_changes(&current, &led);
        for p in gone {
            self.unload(p);
        }
        for (p, epoch) in new {
            if let Some(partition) = self.replicas.partition(OFFSETS_TOPIC, p) {
                self.load(p, epoch, &partition);
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
        let mut replay = Replay::of(p, partition);
        let now = Instant::now();
        let now_wall = now_ms();
        let mut entries: HashMap<String, GroupEntry> = HashMap::new();
        for (id, value) in &replay.metadata {
            entries.insert(
                id.clone(),
                GroupEntry {
                    group: Group::restore(id, value, now, now_wall),
                    consumer: None,
                    offsets: HashMap::new(),
                    pending_txn: HashMap::new(),
                },
            );
        }
        for (id, mut cg) in replay.consumer.drain() {
            cg.start_timers(now, self.config.consumer_session_timeout);
            entries
                .entry(id.clone())
                .or_insert_with(|| GroupEntry {
                    group: Group::new(&id, now_wall),
                    consumer: None,
                    offsets: HashMap::new(),
                    pending_txn: HashMap::new(),
                })
                .consumer = Some(cg);
        }
        let pending = replay.pending_by_group();
        for ((group, topic, partition), committed) in replay.offsets {
            entries
                .entry(group.clone())
                .or_insert_with(|| GroupEntry {
                    group: Group::new(&group, now_wall),
                    consumer: None,
                    offsets: HashMap::new(),
                    pending_txn: HashMap::new(),
                })
                .offsets
                .insert((topic, partition), committed);
        }
        for (group, pending) in pending {
            entries
                .entry(group.clone())
                .or_insert_with(|| GroupEntry {
                    group: Group::new(&group, now_wall),
                    consumer: None,
                    offsets: HashMap::new(),
                    pending_txn: HashMap::new(),
                })
                .pending_txn = pending;
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
}

/// What a `__consumer_offsets` partition holds, replayed record by record (the latest record
/// per key wins; a tombstone removes). A producer's transactional records wait for its
/// marker: a COMMIT applies them, an ABORT drops them, and those still undecided at the end
/// are the producers' pending offsets.
#[derive(Default)]
struct Replay {
    offsets: HashMap<(String, String, i32), CommittedOffset>,
    metadata: HashMap<String, GroupValue>,
    /// By producer id: its transactional records, in log order.
    pending: HashMap<i64, Vec<PendingRecord>>,
    /// Consumer groups (KIP-848), rebuilt from their records.
    consumer: HashMap<String, consumer::ConsumerGroup>,
}

/// A transactional record waiting for its marker: key, value, offset in the log.
type PendingRecord = (RecordKey, Option<Vec<u8>>, i64);

impl Replay {
    fn of(p: i32, partition: &Partition) -> Self {
        let mut replay = Replay::default();
        partition.log.for_each_batch(|b| {
            if b.is_control() {
                if let Some(marker) = crate::log::txn::parse_marker(b) {
                    let commit = marker.kind == crate::log::txn::MarkerType::Commit;
                    for (key, value, offset) in
                        replay.pending.remove(&b.producer_id()).unwrap_or_default()
                    {
                        if commit {
                            replay.apply(key, value.as_deref(), offset);
                        }
                    }
                }
                return;
            }
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
                if replay.consumer_record(key, r.value.as_deref()) {
                    continue;
                }
                match RecordKey::decode(key) {
                    Ok(Some(key)) if b.is_transactional() => {
                        replay.pending.entry(b.producer_id()).or_default().push((
                            key,
                            r.value.as_deref().map(<[u8]>::to_vec),
                            r.offset,
                        ));
                    }
                    Ok(Some(key)) => replay.apply(key, r.value.as_deref(), r.offset),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "skipping a malformed key");
                    }
                }
            }
        });
        replay
    }

    /// Applies a consumer group record (key versions 3 to 8); false for other records.
    fn consumer_record(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        use consumer::records::{ConsumerKey, ConsumerRecord};
        let Some(version) = key.get(..2).map(|v| i16::from_be_bytes([v[0], v[1]])) else {
            return false;
        };
        if !(consumer::records::GROUP_EPOCH_KEY..=consumer::records::CURRENT_ASSIGNMENT_KEY)
            .contains(&version)
        {
            return false;
        }
        let decoded = ConsumerKey::decode(version, &key[2..])
            .and_then(|k| ConsumerRecord::decode(&k, value).map(|r| (k, r)));
        match decoded {
            Ok((k, record)) => {
                let group = self.consumer.entry(k.group.clone()).or_default();
                if !group.replay(record) {
                    self.consumer.remove(&k.group);
                }
                // A classic group of the same id was replaced by this consumer group.
                self.metadata.remove(&k.group);
            }
            Err(e) => tracing::warn!(error = %e, "skipping a malformed consumer group record"),
        }
        true
    }

    /// The undecided transactional offsets, by group: producer id -> pending offsets.
    fn pending_by_group(&mut self) -> HashMap<String, HashMap<i64, txn_offsets::PendingOffsets>> {
        let mut out: HashMap<String, HashMap<i64, txn_offsets::PendingOffsets>> = HashMap::new();
        for (pid, records) in self.pending.drain() {
            for (key, value, record_offset) in records {
                let (
                    RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    },
                    Some(v),
                ) = (key, value)
                else {
                    continue;
                };
                if let Ok(value) = OffsetValue::decode(&v) {
                    out.entry(group)
                        .or_default()
                        .entry(pid)
                        .or_default()
                        .insert(
                            (topic, partition),
                            CommittedOffset {
                                value,
                                record_offset,
                            },
                        );
                }
            }
        }
        out
    }

    fn apply(&mut self, key: RecordKey, value: Option<&[u8]>, record_offset: i64) {
        match (key, value) {
            (
                RecordKey::Offset {
                    group,
                    topic,
                    partition,
                },
                None,
            ) => {
                self.offsets.remove(&(group, topic, partition));
            }
            (
                RecordKey::Offset {
                    group,
                    topic,
                    partition,
                },
                Some(v),
            ) => {
                if let Ok(value) = OffsetValue::decode(v) {
                    self.offsets.insert(
                        (group, topic, partition),
                        CommittedOffset {
                            value,
                            record_offset,
                        },
                    );
                }
            }
            (RecordKey::Group { group }, None) => {
                self.metadata.remove(&group);
            }
            (RecordKey::Group { group }, Some(v)) => {
                self.consumer.remove(&group);
                if let Ok(v) = GroupValue::decode(v) {
                    self.metadata.insert(group, v);
                }
            }
        }
    }
}
