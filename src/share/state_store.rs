//! The share coordinator's durable store (KIP-932's persister): the state of every
//! share-partition, kept as Kafka keeps it, in the compacted internal topic
//! `__share_group_state`, one `ShareSnapshot` record per (group, topic id, partition), in the
//! partition `abs(hash("group:topicId:partition")) % share.coordinator.state.topic.num.partitions`.
//! Each write is a whole snapshot (Kafka's ShareSnapshotKey/ShareSnapshotValue, record type 0),
//! so compaction keeps exactly the latest state. The topic is replicated like
//! `__consumer_offsets`, and a write counts once the ISR holds it (acks=-1).
//!
//! The leader of a state partition is the share coordinator of its keys: it replays the
//! partition on first use in its leader epoch and then keeps the snapshots in memory; that is
//! the ReadShareGroupState answer. Writes are fenced as Kafka's ShareCoordinatorShard fences
//! them: a snapshot from a leader epoch or a state epoch older than the stored one is refused
//! (FENCED_LEADER_EPOCH, FENCED_STATE_EPOCH), and a read by a newer share-partition leader
//! records its epoch. Other brokers reach it through `persister.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use uuid::Uuid;

use super::partition::StateBatch;
use super::ShareConfig;
use crate::group::records::partition_for;
use crate::group::{coordinator_address, ensure_internal_topic, CoordinatorAddress};
use crate::log::batch;
use crate::meta::controller::TopicSpec;
use crate::meta::MetadataQuorum;
use crate::replica::{now_ms, Partition, ReplicaManager, WriteFailed, Written};

pub const SHARE_STATE_TOPIC: &str = "__share_group_state";

/// How long a state read waits for this broker's replicas to catch up with the metadata.
const LEADERSHIP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kafka's coordinator record type of ShareSnapshotKey/ShareSnapshotValue.
const SHARE_SNAPSHOT: i16 = 0;

/// Which share-partition: (group, topic id, partition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub group: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// The persisted state of a share-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    pub batches: Vec<StateBatch>,
}

pub struct StateStore {
    config: ShareConfig,
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    /// State partitions loaded here, with the leader epoch they were loaded in.
    loaded: Mutex<HashMap<i32, i32>>,
    /// Serialises loads, so a replay never overwrites a newer write.
    loading: tokio::sync::Mutex<()>,
    states: Mutex<HashMap<StateKey, Snapshot>>,
}

impl StateStore {
    pub fn new(config: ShareConfig, replicas: Arc<ReplicaManager>, meta: MetadataQuorum) -> Self {
        Self {
            config,
            replicas,
            meta,
            loaded: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// share.coordinator.write.timeout.ms
    pub fn write_timeout(&self) -> std::time::Duration {
        self.config.write_timeout
    }

    pub fn partition_for(&self, key: &StateKey) -> i32 {
        partition_for(
            &format!("{}:{}:{}", key.group, key.topic_id, key.partition),
            self.config.state_partitions,
        )
    }

    /// The share coordinator of `key`: the leader of its state partition (Kafka's
    /// FindCoordinator key type SHARE), creating the topic if needed.
    pub async fn coordinator(
        &self,
        key: &StateKey,
        listener: &str,
    ) -> Result<CoordinatorAddress, (ResponseError, String)> {
        self.ensure_topic().await?;
        coordinator_address(
            &self.meta.image(),
            SHARE_STATE_TOPIC,
            self.partition_for(key),
            listener,
        )
    }

    pub async fn ensure_topic(&self) -> Result<(), (ResponseError, String)> {
        let image = self.meta.image();
        if image.topic(SHARE_STATE_TOPIC).is_some() {
            return Ok(());
        }
        let brokers = image.brokers.len().max(1) as i16;
        let rf = self.config.state_replication_factor.min(brokers);
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("compression.type".to_string(), "producer".to_string());
        configs.insert(
            "segment.bytes".to_string(),
            self.config.state_segment_bytes.to_string(),
        );
        configs.insert(
            "min.insync.replicas".to_string(),
            self.config.state_min_isr.min(rf).max(1).to_string(),
        );
        let spec = TopicSpec {
            name: SHARE_STATE_TOPIC.to_string(),
            num_partitions: self.config.state_partitions,
            replication_factor: rf,
            assignments: None,
            configs,
        };
        ensure_internal_topic(&self.meta, &self.replicas, spec).await
    }

    /// The state partition of `key`, if this broker leads it (else NOT_COORDINATOR).
    async fn led_partition(&self, key: &StateKey) -> Result<Arc<Partition>, ResponseError> {
        self.ensure_topic().await.map_err(|(e, _)| e)?;
        let p = self.partition_for(key);
        let led = || {
            self.replicas
                .partition(SHARE_STATE_TOPIC, p)
                .filter(|p| p.is_leader())
        };
        if led().is_none() {
            // Just created, or leadership just moved here: wait until the replicas applied
            // the metadata this broker has seen.
            self.replicas
                .wait_for_image(self.meta.image().version, LEADERSHIP_WAIT)
                .await;
        }
        match led() {
            Some(p) => Ok(p),
            // Another broker is the share coordinator of `key` (the persister asks it).
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    /// Replays the state partition of `key` if it was not loaded in its current leader epoch.
    async fn ensure_loaded(
        self: &Arc<Self>,
        key: &StateKey,
    ) -> Result<Arc<Partition>, ResponseError> {
        let partition = self.led_partition(key).await?;
        let p = self.partition_for(key);
        let epoch = partition.leader_epoch();
        if self.loaded.lock().get(&p) == Some(&epoch) {
            return Ok(partition);
        }
        let _guard = self.loading.lock().await;
        if self.loaded.lock().get(&p) == Some(&epoch) {
            return Ok(partition);
        }
        let part = partition.clone();
        let replayed = tokio::task::spawn_blocking(move || replay(&part))
            .await
            .map_err(|_| ResponseError::CoordinatorLoadInProgress)?;
        let n = self.config.state_partitions;
        let mut states = self.states.lock();
        states.retain(|k, _| {
            partition_for(&format!("{}:{}:{}", k.group, k.topic_id, k.partition), n) != p
        });
        states.extend(replayed);
        drop(states);
        self.loaded.lock().insert(p, epoch);
        Ok(partition)
    }

    /// ReadShareGroupState from the share-partition leader of `leader_epoch` (-1: no
    /// leader, as for a describe): the latest snapshot of `key`, None if it has none. A
    /// leader of an older epoch than the state records is fenced (FENCED_LEADER_EPOCH); a
    /// newer one is recorded, so that the old leader's writes are fenced from now on.
    pub async fn read(
        self: &Arc<Self>,
        key: &StateKey,
        leader_epoch: i32,
    ) -> Result<Option<Snapshot>, ResponseError> {
        self.ensure_loaded(key).await?;
        let written = {
            let mut states = self.states.lock();
            let Some(current) = states.get(key).cloned() else {
                return Ok(None);
            };
            if leader_epoch < 0 || leader_epoch == current.leader_epoch {
                return Ok(Some(current));
            }
            if leader_epoch < current.leader_epoch {
                return Err(ResponseError::FencedLeaderEpoch);
            }
            let bumped = Snapshot {
                leader_epoch,
                ..current
            };
            let w = self.append_locked(&mut states, key, Some(&bumped))?;
            (w, bumped)
        };
        self.replicated(&written.0).await?;
        Ok(Some(written.1))
    }

    /// WriteShareGroupState: stores `snapshot` as the state of `key`, unless the writer is
    /// fenced: a leader epoch or a state epoch older than the stored one.
    pub async fn write(
        self: &Arc<Self>,
        key: &StateKey,
        snapshot: &Snapshot,
    ) -> Result<(), ResponseError> {
        self.ensure_loaded(key).await?;
        let written = {
            let mut states = self.states.lock();
            if let Some(current) = states.get(key) {
                if current.leader_epoch > snapshot.leader_epoch {
                    return Err(ResponseError::FencedLeaderEpoch);
                }
                if current.state_epoch > snapshot.state_epoch {
                    return Err(ResponseError::FencedStateEpoch);
                }
            }
            self.append_locked(&mut states, key, Some(snapshot))?
        };
        self.replicated(&written).await
    }

    /// InitializeShareGroupState: starts the state of `key` anew at `start_offset` with
    /// nothing in flight, in `state_epoch` (which must not be older than the stored one), so
    /// that leaders holding the previous state are fenced at their next write.
    pub async fn initialize(
        self: &Arc<Self>,
        key: &StateKey,
        state_epoch: i32,
        start_offset: i64,
    ) -> Result<(), ResponseError> {
        self.ensure_loaded(key).await?;
        let written = {
            let mut states = self.states.lock();
            if states.get(key).is_some_and(|c| c.state_epoch > state_epoch) {
                return Err(ResponseError::FencedStateEpoch);
            }
            let fresh = Snapshot {
                state_epoch,
                leader_epoch: -1,
                start_offset,
                batches: Vec::new(),
            };
            self.append_locked(&mut states, key, Some(&fresh))?
        };
        self.replicated(&written).await
    }

    /// DeleteShareGroupState: a tombstone for `key`.
    pub async fn delete(self: &Arc<Self>, key: &StateKey) -> Result<(), ResponseError> {
        self.ensure_loaded(key).await?;
        let written = {
            let mut states = self.states.lock();
            self.append_locked(&mut states, key, None)?
        };
        self.replicated(&written).await
    }

    /// Appends the snapshot of `key` (None deletes it: a tombstone) to its state partition,
    /// and updates the cache, under the cache's lock so that appends and the cache agree.
    fn append_locked(
        &self,
        states: &mut HashMap<StateKey, Snapshot>,
        key: &StateKey,
        snapshot: Option<&Snapshot>,
    ) -> Result<Written, ResponseError> {
        let partition = match self
            .replicas
            .partition(SHARE_STATE_TOPIC, self.partition_for(key))
        {
            Some(p) if p.is_leader() => p,
            _ => return Err(ResponseError::NotCoordinator),
        };
        let k = encode_key(key);
        let v = snapshot.map(encode_value);
        let raw = batch::encode_uncompressed_batch(&[(Some(&k[..]), v.as_deref())], now_ms());
        let view =
            batch::validate_produce_batch(&raw).map_err(|_| ResponseError::UnknownServerError)?;
        let info = partition
            .append_as_leader(&view, -1, now_ms())
            .map_err(|_| ResponseError::NotCoordinator)?;
        match snapshot {
            Some(s) => states.insert(key.clone(), s.clone()),
            None => states.remove(key),
        };
        Ok(Written::new(partition, &info))
    }

    /// Waits until a write is replicated to the ISR, up to `share.coordinator.write.timeout.ms`.
    async fn replicated(&self, written: &Written) -> Result<(), ResponseError> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout;
        written.replicated(deadline).await.map_err(|e| match e {
            WriteFailed::NotLeader => ResponseError::NotCoordinator,
            WriteFailed::TimedOut => ResponseError::RequestTimedOut,
        })
    }

    /// The snapshots held here of `group`'s share-partitions (ReadShareGroupStateSummary).
    pub fn group_states(&self, group: &str) -> Vec<(StateKey, Snapshot)> {
        let mut out: Vec<(StateKey, Snapshot)> = self
            .states
            .lock()
            .iter()
            .filter(|(k, _)| k.group == group)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Every snapshot a state partition holds, the latest per key.
fn replay(partition: &Partition) -> HashMap<StateKey, Snapshot> {
    let mut out = HashMap::new();
    partition.log.for_each_batch(|b| {
        if b.is_control() {
            return;
        }
        let mut bytes = Bytes::copy_from_slice(b.as_bytes());
        let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes) else {
            tracing::warn!("{SHARE_STATE_TOPIC}: skipping an undecodable batch");
            return;
        };
        for r in set.records {
            let Some(key) = r.key.as_deref().and_then(decode_key) else {
                continue;
            };
            match r.value.as_deref() {
                None => {
                    out.remove(&key);
                }
                Some(v) => {
                    if let Some(s) = decode_value(v) {
                        out.insert(key, s);
                    }
                }
            }
        }
    });
    out
}

/// ShareSnapshotKey v0 behind its record type: GroupId (string), TopicId (uuid), Partition.
pub fn encode_key(key: &StateKey) -> Bytes {
    let mut out = BytesMut::with_capacity(24 + key.group.len());
    out.put_i16(SHARE_SNAPSHOT);
    out.put_i16(key.group.len().min(i16::MAX as usize) as i16);
    out.put_slice(&key.group.as_bytes()[..key.group.len().min(i16::MAX as usize)]);
    out.put_slice(key.topic_id.as_bytes());
    out.put_i32(key.partition);
    out.freeze()
}

/// ShareSnapshotValue v0 (flexible): SnapshotEpoch, StateEpoch, LeaderEpoch, StartOffset,
/// StateBatches.
pub fn encode_value(s: &Snapshot) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + 24 * s.batches.len());
    out.put_i16(0);
    out.put_u16(0);
    out.put_i32(s.state_epoch);
    out.put_i32(s.leader_epoch);
    out.put_i64(s.start_offset);
    put_uvarint(&mut out, s.batches.len() as u64 + 1);
    for b in &s.batches {
        out.put_i64(b.first_offset);
        out.put_i64(b.last_offset);
        out.put_i8(b.delivery_state);
        out.put_i16(b.delivery_count);
        out.put_u8(0); // no tagged fields
    }
    out.put_u8(0);
    out.freeze()
}

fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A bounds-checked reader: malformed records are skipped, never a panic.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// Skips a tagged-field section.
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len)?;
        }
        Some(())
    }
}

pub fn decode_key(raw: &[u8]) -> Option<StateKey> {
    let mut c = Cursor(raw);
    if c.i16()? != SHARE_SNAPSHOT {
        return None;
    }
    let len = usize::try_from(c.i16()?).ok()?;
    let group = std::str::from_utf8(c.take(len)?).ok()?.to_string();
    let topic_id = Uuid::from_slice(c.take(16)?).ok()?;
    let partition = c.i32()?;
    Some(StateKey {
        group,
        topic_id,
        partition,
    })
}

pub fn decode_value(raw: &[u8]) -> Option<Snapshot> {
    let mut c = Cursor(raw);
    c.i16()?; // value version
    c.take(2)?; // snapshot epoch
    let state_epoch = c.i32()?;
    let leader_epoch = c.i32()?;
    let start_offset = c.i64()?;
    let n = c.uvarint()?.checked_sub(1)? as usize;
    let mut batches = Vec::with_capacity(n.min(raw.len() / 19 + 1));
    for _ in 0..n {
        batches.push(StateBatch {
            first_offset: c.i64()?,
            last_offset: c.i64()?,
            delivery_state: c.i8()?,
            delivery_count: c.i16()?,
        });
        c.skip_tags()?;
    }
    Some(Snapshot {
        state_epoch,
        leader_epoch,
        start_offset,
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_skipped() {
        let key = StateKey {
            group: "g".into(),
            topic_id: Uuid::new_v4(),
            partition: 3,
        };
        assert_eq!(decode_key(&encode_key(&key)), Some(key));
        let s = Snapshot {
            state_epoch: 1,
            leader_epoch: 4,
            start_offset: 17,
            batches: vec![StateBatch {
                first_offset: 17,
                last_offset: 20,
                delivery_state: 2,
                delivery_count: 3,
            }],
        };
        let v = encode_value(&s);
        assert_eq!(decode_value(&v), Some(s));
        for cut in 0..v.len() {
            let _ = decode_value(&v[..cut]);
        }
        assert_eq!(decode_key(&[0, 1, 0]), None);
    }
}
