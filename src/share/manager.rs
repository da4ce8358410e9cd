//! The share-partitions of the partitions this broker leads (Kafka's SharePartitionManager):
//! each is loaded from the share coordinator (through the persister, wherever the coordinator
//! is) on first use in a leader epoch of its partition, so a new leader after a failover
//! continues from the persisted state (or, the first time the group reads the partition,
//! started where the group's `share.auto.offset.reset` says: the high watermark by default,
//! the log start, or the first offset of a time). The group's lock duration, delivery count
//! limit and record lock limit override the broker's too. Then ShareFetch
//! acquires records from it and ShareAcknowledge (or acknowledgements riding on ShareFetch)
//! settle them. Every change of state that must survive (acknowledgements, releases, expired
//! locks, archived records) is written to the share coordinator before the request is
//! answered.
//!
//! Writes of one share-partition are ordered by its writer lock: whoever holds it writes the
//! newest snapshot, which covers every change made before, so concurrent requests share one
//! write instead of racing older snapshots past newer ones. A write the coordinator fences
//! (a newer leader epoch or state epoch is stored) drops the cached state, to be read again.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use super::group::ShareGroups;
use super::partition::{AckError, Acquired, Limits, SharePartition, ACK_RELEASE};
use super::persister::Persister;
use super::session::ShareSessions;
use super::state_store::{Snapshot, StateKey, StateStore};
use super::ShareConfig;
use crate::log::batch::BatchIter;
use crate::meta::group_configs::{
    ShareOffsetReset, SHARE_DELIVERY_COUNT_LIMIT, SHARE_PARTITION_MAX_RECORD_LOCKS,
    SHARE_RECORD_LOCK_DURATION_MS,
};
use crate::meta::MetadataQuorum;
use crate::replica::partition_error_code;
use crate::replica::{now_ms, Partition, ReplicaManager};

struct Loaded {
    sp: SharePartition,
    leader_epoch: i32,
}

/// A share-partition's cached state and the version of its last change.
#[derive(Default)]
struct Cached {
    loaded: Option<Loaded>,
    /// Bumped on every change to persist (never reset, across reloads too).
    version: u64,
}

#[derive(Default)]
struct ShareEntry {
    state: Mutex<Cached>,
    /// Held while writing; the version the last successful write covered.
    writer: tokio::sync::Mutex<u64>,
}

type Entry = Arc<ShareEntry>;

/// What one ShareFetch got from one partition: the batches read, and which of their records
/// this member acquired (a client delivers only those).
#[derive(Default)]
pub struct Fetched {
    pub records: Bytes,
    pub acquired: Vec<Acquired>,
}

pub struct SharePartitionManager {
    pub config: ShareConfig,
    /// The share coordinator's side: the state partitions this broker leads.
    pub store: Arc<StateStore>,
    /// The share-partition leader's side: reads and writes state wherever it is kept.
    pub persister: Persister,
    pub groups: ShareGroups,
    pub sessions: ShareSessions,
    /// The metadata, for the group configs (`share.auto.offset.reset`, lock duration, ...).
    meta: MetadataQuorum,
    partitions: Mutex<HashMap<StateKey, Entry>>,
    /// Woken when records become available again (released, or their lock expired), for
    /// ShareFetches waiting for records.
    pub released: tokio::sync::Notify,
}

fn snapshot_of(l: &Loaded) -> Snapshot {
    Snapshot {
        state_epoch: l.sp.state_epoch(),
        leader_epoch: l.leader_epoch,
        start_offset: l.sp.start_offset(),
        batches: l.sp.snapshot(),
    }
}

/// The batches of `records` that hold an acquired offset (Kafka's
/// `ShareFetchUtils.maybeSliceFetchRecords`). A client delivers only the acquired records, so
/// a whole read of `max_bytes` around a few hundred acquired records would be sent, decoded
/// and dropped: with the Java client's 500-record polls that cost more than the records did.
/// The batches are contiguous, so this is one zero-copy slice.
fn slice_to_acquired(records: &Bytes, acquired: &[Acquired]) -> Bytes {
    let first = acquired.iter().map(|a| a.first_offset).min();
    let last = acquired.iter().map(|a| a.last_offset).max();
    let (Some(first), Some(last)) = (first, last) else {
        return Bytes::new();
    };
    let mut span: Option<(usize, usize)> = None;
    for (at, b) in BatchIter::new(records) {
        if b.last_offset() >= first && b.base_offset() <= last {
            let end = at + b.as_bytes().len();
            span = Some(span.map_or((at, end), |(start, _)| (start, end)));
        }
    }
    span.map_or_else(Bytes::new, |(start, end)| records.slice(start..end))
}

impl SharePartitionManager {
    pub fn new(config: ShareConfig, replicas: Arc<ReplicaManager>, meta: MetadataQuorum) -> Self {
        let store = Arc::new(StateStore::new(
            config.clone(),
            replicas.clone(),
            meta.clone(),
        ));
        let persister = Persister::new(store.clone(), replicas, meta.clone(), config.write_timeout);
        Self {
            groups: ShareGroups::new(config.session_timeout, config.max_size),
            sessions: ShareSessions::new(config.max_sessions),
            config,
            store,
            persister,
            meta,
            partitions: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
        }
    }

    /// The record limits of `group`: the broker's, with the group's own configs over them.
    fn limits(&self, group: &str) -> Limits {
        let mut limits = self.config.limits();
        let image = self.meta.image();
        let configs = &image.group_configs;
        if let Some(v) = configs.int(group, SHARE_RECORD_LOCK_DURATION_MS) {
            limits.lock_duration_ms = v;
        }
        if let Some(v) = configs.int(group, SHARE_DELIVERY_COUNT_LIMIT) {
            limits.delivery_count_limit = v.clamp(2, i16::MAX as i64) as i16;
        }
        if let Some(v) = configs.int(group, SHARE_PARTITION_MAX_RECORD_LOCKS) {
            limits.max_record_locks = v.max(1) as usize;
        }
        limits
    }

    /// Where a new share-partition of `key` starts (`share.auto.offset.reset`).
    fn initial_offset(&self, key: &StateKey, partition: &Partition) -> i64 {
        let high_watermark = partition.high_watermark();
        match ShareOffsetReset::of(&self.meta.image().group_configs, &key.group) {
            ShareOffsetReset::Latest => high_watermark,
            ShareOffsetReset::Earliest => partition.log.log_start_offset(),
            ShareOffsetReset::ByDurationMs(ms) => partition
                .log
                .offset_for_timestamp(now_ms().saturating_sub(ms), high_watermark)
                .map_or(high_watermark, |(offset, _)| offset),
        }
    }

    fn entry(&self, key: &StateKey) -> Entry {
        self.partitions
            .lock()
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The share-partition of `key`, loaded in the partition's current leader epoch.
    async fn load(&self, key: &StateKey, partition: &Partition) -> Result<Entry, ResponseError> {
        let entry = self.entry(key);
        let epoch = partition.leader_epoch();
        let current = |c: &Cached| c.loaded.as_ref().is_some_and(|l| l.leader_epoch == epoch);
        if current(&entry.state.lock()) {
            return Ok(entry);
        }
        let snapshot = self
            .persister
            .read(key, epoch)
            .await
            .map_err(fenced_as_not_leader)?;
        let (sp, fresh) = match snapshot {
            Some(s) => (
                SharePartition::restore(s.start_offset, s.state_epoch, &s.batches),
                false,
            ),
            None => (
                SharePartition::new(self.initial_offset(key, partition), 0),
                true,
            ),
        };
        let version = {
            let mut guard = entry.state.lock();
            if current(&guard) {
                return Ok(entry.clone());
            }
            guard.loaded = Some(Loaded {
                sp,
                leader_epoch: epoch,
            });
            // A new share-partition's start is written at once, so that a restart does not
            // move it to a later high watermark.
            guard.version += 1;
            fresh.then_some(guard.version)
        };
        if let Some(v) = version {
            self.persist(key, &entry, v).await?;
        }
        Ok(entry)
    }

    /// Makes sure the change of version `version` (or a later one) of `key`'s state is
    /// stored by the share coordinator.
    async fn persist(
        &self,
        key: &StateKey,
        entry: &Entry,
        version: u64,
    ) -> Result<(), ResponseError> {
        let mut persisted = entry.writer.lock().await;
        if *persisted >= version {
            return Ok(());
        }
        let (snapshot, newest) = {
            let guard = entry.state.lock();
            let Some(l) = guard.loaded.as_ref() else {
                // Dropped after a fenced write: nothing of it may be stored any more.
                return Err(ResponseError::NotLeaderOrFollower);
            };
            (snapshot_of(l), guard.version)
        };
        match self.persister.write(key, &snapshot).await {
            Ok(()) => {
                *persisted = newest;
                Ok(())
            }
            Err(e @ (ResponseError::FencedLeaderEpoch | ResponseError::FencedStateEpoch)) => {
                tracing::info!(group = %key.group, partition = key.partition, error = ?e, "share-partition state fenced by the share coordinator; reloading");
                let mut guard = entry.state.lock();
                if guard
                    .loaded
                    .as_ref()
                    .is_some_and(|l| l.leader_epoch == snapshot.leader_epoch)
                {
                    guard.loaded = None;
                }
                Err(fenced_as_not_leader(e))
            }
            Err(e) => Err(e),
        }
    }

    /// ShareFetch on one partition: acquires for `member` up to `max_records` available
    /// records from what a read of `max_bytes` returns.
    pub async fn fetch(
        &self,
        key: &StateKey,
        member: &Arc<str>,
        partition: &Partition,
        max_bytes: usize,
        max_records: usize,
    ) -> Result<Fetched, ResponseError> {
        let entry = self.load(key, partition).await?;
        let now = now_ms();
        let limits = self.limits(&key.group);
        let mut out = Fetched::default();
        let (version, expired) = {
            let mut guard = entry.state.lock();
            let cached = &mut *guard;
            let l = cached
                .loaded
                .as_mut()
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            let expired = l.sp.expire_locks(now, &limits);
            let mut changed = expired | l.sp.skip_below(partition.log.log_start_offset());
            if let Some(offset) = l.sp.next_fetch_offset(&limits) {
                if offset < partition.high_watermark() && max_records > 0 {
                    let read = partition
                        .read(offset, -1, max_bytes, true, false, true)
                        .map_err(|e| partition_error_code(&e))?;
                    let below = read.high_watermark;
                    let mut to = offset - 1;
                    let mut skipped = Vec::new();
                    for (_, b) in BatchIter::new(&read.result.records) {
                        let last = b.last_offset().min(below - 1);
                        if b.is_control() {
                            skipped.push((b.base_offset(), last));
                        }
                        to = to.max(last);
                    }
                    out.acquired =
                        l.sp.acquire(member, offset..=to, max_records, &skipped, now, &limits);
                    changed |= !skipped.is_empty();
                    out.records = slice_to_acquired(&read.result.records, &out.acquired);
                }
            }
            if changed {
                cached.version += 1;
            }
            (changed.then_some(cached.version), expired)
        };
        if let Some(v) = version {
            self.persist(key, &entry, v).await?;
        }
        if expired {
            self.released.notify_waiters();
        }
        Ok(out)
    }

    /// Acknowledges `member`'s records of one partition: batches of (first offset, last
    /// offset, acknowledge types). INVALID_RECORD_STATE when a record is not acquired by it.
    pub async fn acknowledge(
        &self,
        key: &StateKey,
        member: &str,
        partition: &Partition,
        batches: &[(i64, i64, Vec<i8>)],
    ) -> Result<(), ResponseError> {
        let entry = self.load(key, partition).await?;
        let limits = self.limits(&key.group);
        let (version, result) = {
            let mut guard = entry.state.lock();
            let cached = &mut *guard;
            let l = cached
                .loaded
                .as_mut()
                .ok_or(ResponseError::NotLeaderOrFollower)?;
            let expired = l.sp.expire_locks(now_ms(), &limits);
            let result = l.sp.acknowledge(member, batches, &limits);
            let changed = expired || result.is_ok();
            if changed {
                cached.version += 1;
            }
            (changed.then_some(cached.version), result)
        };
        if let Some(v) = version {
            self.persist(key, &entry, v).await?;
        }
        match result {
            Ok(()) => {
                if batches.iter().any(|(_, _, t)| t.contains(&ACK_RELEASE)) {
                    self.released.notify_waiters();
                }
                Ok(())
            }
            Err(AckError::InvalidRequest(why)) => {
                tracing::debug!(group = %key.group, member, %why, "refused acknowledgement");
                Err(ResponseError::InvalidRequest)
            }
            Err(AckError::InvalidRecordState(why)) => {
                tracing::debug!(group = %key.group, member, %why, "refused acknowledgement");
                Err(ResponseError::InvalidRecordState)
            }
        }
    }

    /// Releases the records `member` holds in these share-partitions (its share session
    /// closed or was replaced).
    pub async fn release_member(&self, keys: &[StateKey], member: &str) {
        let mut writes = Vec::new();
        for key in keys {
            let limits = self.limits(&key.group);
            let Some(entry) = self.partitions.lock().get(key).cloned() else {
                continue;
            };
            let mut guard = entry.state.lock();
            let cached = &mut *guard;
            let Some(l) = cached.loaded.as_mut() else {
                continue;
            };
            if l.sp.release_member(member, &limits) {
                cached.version += 1;
                writes.push((key, entry.clone(), cached.version));
            }
        }
        for (key, entry, version) in writes {
            if let Err(e) = self.persist(key, &entry, version).await {
                tracing::warn!(group = %key.group, error = ?e, "releasing a closed session's records was not persisted");
            }
        }
        self.released.notify_waiters();
    }

    /// When the earliest acquisition lock among these share-partitions expires (ms).
    pub fn next_lock_deadline(&self, keys: &[StateKey]) -> Option<i64> {
        let partitions = self.partitions.lock();
        keys.iter()
            .filter_map(|k| partitions.get(k))
            .filter_map(|e| {
                e.state
                    .lock()
                    .loaded
                    .as_ref()
                    .and_then(|l| l.sp.next_lock_deadline())
            })
            .min()
    }

    /// AlterShareGroupOffsets (a new start offset, nothing in flight: InitializeShareGroupState
    /// in the next state epoch, which fences the share-partition leader's cached state) or
    /// DeleteShareGroupOffsets (None: DeleteShareGroupState, and the next fetch starts anew).
    /// The group must have no members, so nothing is acquired.
    pub async fn reset(
        &self,
        key: &StateKey,
        start_offset: Option<i64>,
    ) -> Result<(), ResponseError> {
        let previous = self.persister.summary(key).await?;
        let result = match start_offset {
            Some(start) => {
                let state_epoch = previous.as_ref().map_or(0, |s| s.state_epoch + 1);
                self.persister.initialize(key, state_epoch, start).await
            }
            None if previous.is_none() => Ok(()),
            None => self.persister.delete(key).await,
        };
        // Reloaded from the share coordinator on next use, if this broker leads the partition.
        if let Some(entry) = self.partitions.lock().get(key) {
            entry.state.lock().loaded = None;
        }
        result
    }
}

/// A share-partition leader fenced by the share coordinator is not the leader any more (or
/// holds state from before an offsets reset): the client looks for the leader again.
fn fenced_as_not_leader(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::FencedLeaderEpoch | ResponseError::FencedStateEpoch => {
            ResponseError::NotLeaderOrFollower
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::encode_batch;
    use kafka_protocol::records::Compression;

    /// Three batches of 10 records, at offsets 0, 10 and 20.
    fn batches() -> Bytes {
        let mut out = Vec::new();
        for base in [0i64, 10, 20] {
            let mut b = encode_batch(10, 0, 5, Compression::None);
            b[..8].copy_from_slice(&base.to_be_bytes());
            out.extend(b);
        }
        Bytes::from(out)
    }

    fn acquired(first_offset: i64, last_offset: i64) -> Acquired {
        Acquired {
            first_offset,
            last_offset,
            delivery_count: 1,
        }
    }

    #[test]
    fn a_fetch_sends_only_the_batches_holding_acquired_records() {
        let all = batches();
        let one = all.len() / 3;
        assert_eq!(
            slice_to_acquired(&all, &[acquired(12, 14)]),
            all.slice(one..2 * one)
        );
        assert_eq!(
            slice_to_acquired(&all, &[acquired(5, 9), acquired(10, 25)]),
            all
        );
        assert_eq!(
            slice_to_acquired(&all, &[acquired(25, 40)]),
            all.slice(2 * one..)
        );
        assert!(slice_to_acquired(&all, &[]).is_empty());
        assert!(slice_to_acquired(&all, &[acquired(31, 40)]).is_empty());
    }
}
