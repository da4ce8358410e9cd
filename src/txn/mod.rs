//! The transaction coordinator, as Kafka's: every transactional id belongs to the partition
//! `abs(hash(id)) % transaction.state.log.num.partitions` of the compacted internal topic
//! `__transaction_state`, and the leader of that partition coordinates it, with the
//! partition's leader epoch as its coordinator epoch. Its state (producer id and epoch, the
//! partitions in the transaction, the transaction's state) is written there before it takes
//! effect, and loaded by the next leader.
//!
//! [`TransactionCoordinator`] is the entry point of InitProducerId (with a transactional id),
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions and ListTransactions
//! (`handlers.rs`). EndTxn's markers go to the partition leaders (`markers.rs`, which also
//! writes the markers WriteTxnMarkers brings to this broker); transactions left open past
//! their timeout are aborted and idle ids expire (`timeouts.rs`). `metadata.rs` is the pure
//! state machine, `records.rs` the log's record formats, `topic.rs` creating the topic and
//! FindCoordinator.

mod handlers;
pub mod markers;
pub mod metadata;
pub mod records;
mod timeouts;
mod topic;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::group::GroupCoordinator;
use crate::log::batch;
use crate::log::LogError;
use crate::meta::producer_ids::ProducerIdAllocator;
use crate::meta::MetadataQuorum;
use crate::replica::{now_ms, Partition, PartitionError, ReplicaManager, WriteFailed, Written};
pub use handlers::{DescribedTxn, ListedTxn, VerifyOutcome};
use metadata::TxnMetadata;

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// How long a write to `__transaction_state` may take to replicate (Kafka's request timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The coordinator's settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// transaction.state.log.num.partitions (50)
    pub state_partitions: i32,
    /// transaction.state.log.replication.factor (3, capped at the number of brokers)
    pub state_replication_factor: i16,
    /// transaction.state.log.min.isr (2, capped as the replication factor is)
    pub state_min_isr: i32,
    /// transaction.state.log.segment.bytes (100 MiB)
    pub state_segment_bytes: i64,
    /// transaction.max.timeout.ms (15 minutes)
    pub max_timeout_ms: i32,
    /// transactional.id.expiration.ms (7 days)
    pub id_expiration_ms: i64,
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms (10 s)
    pub abort_check_interval: Duration,
    /// transaction.remove.expired.transaction.cleanup.interval.ms (1 h)
    pub expiration_check_interval: Duration,
    /// transaction.partition.verification.enable (true): KIP-890 part 1.
    pub verification_enable: bool,
}

/// One transactional id: its state, and whether a transition is being written.
struct TxnEntry {
    meta: TxnMetadata,
    busy: bool,
}

type TxnHandle = Arc<Mutex<TxnEntry>>;

/// Where a transactional id is coordinated here: its `__transaction_state` partition and the
/// coordinator epoch it was loaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    partition: i32,
    coordinator_epoch: i32,
}

pub struct TransactionCoordinator {
    pub config: TxnConfig,
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    groups: Arc<GroupCoordinator>,
    producer_ids: Arc<ProducerIdAllocator>,
    txns: Mutex<HashMap<String, TxnHandle>>,
    /// `__transaction_state` partitions led and loaded here, with their coordinator epoch.
    loaded: Mutex<HashMap<i32, i32>>,
    shutdown: CancellationToken,
}

/// Maps a failed `__transaction_state` append to what Kafka answers (its
/// `TransactionStateManager.appendTransactionToLog` mapping).
fn append_error(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::NotLeader | PartitionError::Log(LogError::Io(_)) => {
            ResponseError::NotCoordinator
        }
        PartitionError::Log(LogError::MessageTooLarge { .. }) => ResponseError::UnknownServerError,
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

impl TransactionCoordinator {
    pub fn new(
        config: TxnConfig,
        replicas: Arc<ReplicaManager>,
        meta: MetadataQuorum,
        groups: Arc<GroupCoordinator>,
        producer_ids: Arc<ProducerIdAllocator>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            replicas,
            meta,
            groups,
            producer_ids,
            txns: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    /// The `__transaction_state` partition of a transactional id (Java's String hash, as
    /// Kafka computes it).
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        crate::group::records::partition_for(transactional_id, self.config.state_partitions)
    }

    /// Where `transactional_id` is coordinated, if here.
    fn owner(&self, transactional_id: &str) -> Result<Owner, ResponseError> {
        let partition = self.partition_for(transactional_id);
        match self.loaded.lock().get(&partition) {
            Some(epoch) => Ok(Owner {
                partition,
                coordinator_epoch: *epoch,
            }),
            None => Err(ResponseError::NotCoordinator),
        }
    }

    fn entry(&self, transactional_id: &str) -> Option<TxnHandle> {
        self.txns.lock().get(transactional_id).cloned()
    }

    /// Whether `owner` still holds: the partition is loaded in the same coordinator epoch.
    fn still_owner(&self, owner: Owner) -> bool {
        self.loaded.lock().get(&owner.partition) == Some(&owner.coordinator_epoch)
    }

    /// Writes `next` (or a tombstone) for `transactional_id` to its partition and waits until
    /// it is replicated. The caller marked the entry busy.
    async fn write(
        &self,
        transactional_id: &str,
        owner: Owner,
        next: Option<&TxnMetadata>,
    ) -> Result<(), ResponseError> {
        let partition: Arc<Partition> = self
            .replicas
            .partition(TRANSACTION_STATE_TOPIC, owner.partition)
            .filter(|p| p.leader_epoch() == owner.coordinator_epoch)
            .ok_or(ResponseError::NotCoordinator)?;
        let key = Bytes::from(records::encode_key(transactional_id));
        let value = next.map(|m| Bytes::from(records::encode_value(m)));
        let raw = batch::encode_uncompressed_batch(&[(Some(&key[..]), value.as_deref())], now_ms());
        let view = batch::check_batch(&raw).map_err(|_| ResponseError::UnknownServerError)?;
        let info = partition
            .append_as_leader(&view, -1, now_ms())
            .map_err(|e| append_error(&e))?;
        let written = Written::new(partition, &info);
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        written.replicated(deadline).await.map_err(|e| match e {
            WriteFailed::NotLeader => ResponseError::NotCoordinator,
            WriteFailed::TimedOut => ResponseError::CoordinatorNotAvailable,
        })
    }

    /// Persists a transition the caller prepared (with the entry marked busy), then makes it
    /// take effect, unless the coordinator moved meanwhile.
    async fn transition(
        &self,
        transactional_id: &str,
        handle: &TxnHandle,
        owner: Owner,
        next: TxnMetadata,
    ) -> Result<(), ResponseError> {
        let written = self.write(transactional_id, owner, Some(&next)).await;
        let mut entry = handle.lock();
        entry.busy = false;
        written?;
        if !self.still_owner(owner) {
            return Err(ResponseError::NotCoordinator);
        }
        entry.meta = next;
        Ok(())
    }

    /// Loads newly led `__transaction_state` partitions and forgets those no longer led; for
    /// loaded transactions that were preparing to commit or abort, the markers go out again.
    /// Blocking: it reads whole partitions (called with the metadata, off the async workers).
    pub fn sync_partitions(self: &Arc<Self>) {
        let led = self.replicas.led_partitions(TRANSACTION_STATE_TOPIC);
        let current = self.loaded.lock().clone();
        let (gone, new) = crate::group::leadership_changes(&current, &led);
        for p in gone {
            self.unload(p);
        }
        for (p, epoch) in new {
            if let Some(partition) = self.replicas.partition(TRANSACTION_STATE_TOPIC, p) {
                self.load(p, epoch, &partition);
            }
        }
    }

    fn unload(&self, p: i32) {
        let n = self.config.state_partitions;
        self.loaded.lock().remove(&p);
        self.txns
            .lock()
            .retain(|id, _| crate::group::records::partition_for(id, n) != p);
        tracing::debug!(
            partition = p,
            "stopped coordinating transactions of {TRANSACTION_STATE_TOPIC} partition"
        );
    }

    fn load(self: &Arc<Self>, p: i32, epoch: i32, partition: &Partition) {
        let started = Instant::now();
        let mut found: HashMap<String, TxnMetadata> = HashMap::new();
        partition.log.for_each_batch(|b| {
            if b.is_control() {
                return;
            }
            let mut bytes = Bytes::copy_from_slice(b.as_bytes());
            let Ok(set) = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes) else {
                tracing::warn!(
                    partition = p,
                    "skipping an undecodable batch of {TRANSACTION_STATE_TOPIC}"
                );
                return;
            };
            for r in set.records {
                let Some(id) = r.key.as_deref().and_then(records::decode_key) else {
                    continue;
                };
                match r.value.as_deref().map(records::decode_value) {
                    None => {
                        found.remove(&id);
                    }
                    Some(Some(m)) => {
                        found.insert(id, m);
                    }
                    Some(None) => {
                        tracing::warn!(partition = p, "skipping a malformed transaction state");
                    }
                }
            }
        });
        let owner = Owner {
            partition: p,
            coordinator_epoch: epoch,
        };
        let mut resume = Vec::new();
        {
            let mut txns = self.txns.lock();
            for (id, meta) in found {
                if matches!(
                    meta.state,
                    metadata::TxnState::PrepareCommit | metadata::TxnState::PrepareAbort
                ) {
                    resume.push((id.clone(), meta.clone()));
                }
                txns.insert(id, Arc::new(Mutex::new(TxnEntry { meta, busy: false })));
            }
        }
        let count = resume.len();
        self.loaded.lock().insert(p, epoch);
        for (id, meta) in resume {
            self.send_markers(id, meta, owner);
        }
        tracing::debug!(
            partition = p,
            resumed = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded {TRANSACTION_STATE_TOPIC} partition"
        );
    }
}
