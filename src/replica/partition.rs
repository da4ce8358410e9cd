//! Partition: one partition replica hosted by this broker: its log, its role (leader or not),
//! leader epoch, high watermark, and the wake-up for fetches waiting on new data. The
//! replication-specific parts (followers' progress on a leader, fetching on a follower) are
//! in `replication.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use super::replication::FollowerState;
use super::TopicCounters;
use crate::log::batch::BatchView;
use crate::log::txn::AbortedTxn;
use crate::log::{AppendInfo, LogError, PartitionLog, ReadResult};

/// What the controller decided about this partition, as last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Arc<PartitionLog>,
    pub(super) node_id: i32,
    pub(super) state: RwLock<PartitionState>,
    is_leader: AtomicBool,
    leader_epoch: AtomicI32,
    pub(super) high_watermark: AtomicI64,
    pub(super) data_arrived: Notify,
    /// Notified on every append as leader (log end offset moved): followers' fetches wait on
    /// this, since the high watermark moves only after they fetch.
    appended: Notify,
    /// On a leader: each follower's progress, from its fetches.
    pub(super) followers: Mutex<HashMap<i32, FollowerState>>,
    /// An ISR change this leader proposed and is waiting to see applied.
    pub(super) isr_change_pending: AtomicBool,
    /// The topic's byte counters (shared by its partitions, outliving leadership moves).
    pub counters: Arc<TopicCounters>,
    /// Named with this broker by the topic's `leader.replication.throttled.replicas` (bit 0)
    /// and `follower.replication.throttled.replicas` (bit 1); see `throttle.rs`.
    throttled: AtomicU8,
}

/// A read from a partition for a fetch, with the offsets the response reports.
pub struct PartitionRead {
    pub result: ReadResult,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For a read_committed read: the aborted transactions among the records returned.
    pub aborted: Option<Vec<AbortedTxn>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("this broker is not the leader")]
    NotLeader,
    #[error("leader epoch {0} is older than the current one")]
    FencedLeaderEpoch(i32),
    #[error("leader epoch {0} is newer than the current one")]
    UnknownLeaderEpoch(i32),
    #[error("the in-sync replica set is smaller than min.insync.replicas")]
    NotEnoughReplicas,
    #[error(transparent)]
    Log(#[from] LogError),
}

impl Partition {
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        log: Arc<PartitionLog>,
        node_id: i32,
        state: PartitionState,
        counters: Arc<TopicCounters>,
    ) -> Self {
        let p = Self {
            topic,
            topic_id,
            index,
            high_watermark: AtomicI64::new(log.log_start_offset()),
            log,
            node_id,
            is_leader: AtomicBool::new(false),
            leader_epoch: AtomicI32::new(state.leader_epoch),
            state: RwLock::new(state.clone()),
            data_arrived: Notify::new(),
            appended: Notify::new(),
            followers: Mutex::new(HashMap::new()),
            isr_change_pending: AtomicBool::new(false),
            counters,
            throttled: AtomicU8::new(0),
        };
        p.update_state(state);
        p
    }

    /// DeleteRecords: moves the log start offset to `offset` (at most the high watermark,
    /// which the caller checks). Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> std::io::Result<i64> {
        let start = self.log.advance_log_start_offset(offset)?;
        self.check_offsets();
        Ok(start)
    }

    /// One retention pass (`retention.ms`, `retention.bytes`); returns segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> std::io::Result<usize> {
        crate::log::retention::enforce(&self.log, self.high_watermark(), now_ms)
    }

    /// Asserts log start offset <= high watermark <= log end offset (read in that order, as
    /// each only grows while this replica neither truncates nor starts over).
    pub(super) fn check_offsets(&self) {
        let start = self.log.log_start_offset();
        let hwm = self.high_watermark();
        let leo = self.log.log_end_offset();
        debug_assert!(
            start <= hwm && hwm <= leo,
            "{}-{}: log start {start} <= high watermark {hwm} <= log end {leo} broken",
            self.topic,
            self.index
        );
    }

    /// Applies the controller's latest decision for this partition.
    pub fn update_state(&self, state: PartitionState) {
        // Leader epochs only move forward: every leadership change bumps it in the metadata
        // log, and images are applied in order.
        assert!(
            state.leader_epoch >= self.leader_epoch(),
            "{}-{}: leader epoch {} after {}",
            self.topic,
            self.index,
            state.leader_epoch,
            self.leader_epoch()
        );
        let leader = state.leader == self.node_id;
        let new_leadership =
            leader && (!self.is_leader() || state.leader_epoch != self.leader_epoch());
        self.leader_epoch
            .store(state.leader_epoch, Ordering::Release);
        self.is_leader.store(leader, Ordering::Release);
        *self.state.write() = state;
        self.isr_change_pending.store(false, Ordering::Release);
        if new_leadership {
            // As Kafka's makeLeader: the new epoch starts at our log end offset, and followers'
            // progress is learnt afresh from their fetches; a follower in the ISR that never
            // fetches leaves it after `replica.lag.time.max.ms`.
            let now = std::time::Instant::now();
            let isr = self.state.read().isr.clone();
            let mut followers = self.followers.lock();
            followers.clear();
            for r in isr.into_iter().filter(|r| *r != self.node_id) {
                followers.insert(r, FollowerState::at_leadership_start(now));
            }
            drop(followers);
            if let Err(e) = self
                .log
                .assign_leader_epoch(self.leader_epoch(), self.log.log_end_offset())
            {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "recording the leader epoch failed");
            }
        }
        if leader {
            self.maybe_advance_high_watermark();
        }
        self.data_arrived.notify_waiters();
    }

    /// Sets whether this replica is leader- and follower-throttled (from the topic configs).
    pub fn set_throttled(&self, leader: bool, follower: bool) {
        let bits = u8::from(leader) | (u8::from(follower) << 1);
        self.throttled.store(bits, Ordering::Relaxed);
    }

    pub fn leader_throttled(&self) -> bool {
        self.throttled.load(Ordering::Relaxed) & 1 != 0
    }

    pub fn follower_throttled(&self) -> bool {
        self.throttled.load(Ordering::Relaxed) & 2 != 0
    }

    /// Whether `replica` is in this partition's ISR.
    pub fn in_isr(&self, replica: i32) -> bool {
        self.state.read().isr.contains(&replica)
    }

    pub fn state(&self) -> PartitionState {
        self.state.read().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The last stable offset: the high watermark, or the first offset of a transaction not
    /// yet decided (or whose marker is not yet replicated), whichever is smaller.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset(self.high_watermark())
    }

    /// Moves the high watermark up to `hwm` (never back); returns the previous one. Completed
    /// transactions it passes stop holding the last stable offset back.
    pub(super) fn raise_high_watermark(&self, hwm: i64) -> i64 {
        let before = self.high_watermark.fetch_max(hwm, Ordering::AcqRel);
        if hwm > before {
            self.log.on_high_watermark(hwm);
        }
        before
    }

    /// On a leader, the high watermark is the smallest log end offset across the ISR (its own
    /// for itself, the last fetch offset for each follower). It never moves back.
    pub(super) fn maybe_advance_high_watermark(&self) {
        if !self.is_leader() {
            return;
        }
        let isr = self.state.read().isr.clone();
        let followers = self.followers.lock();
        let mut hwm = self.log.log_end_offset();
        for r in isr.iter().filter(|r| **r != self.node_id) {
            match followers.get(r) {
                Some(f) => hwm = hwm.min(f.log_end_offset),
                // A follower not heard from since this leadership began holds it back.
                None => return,
            }
        }
        drop(followers);
        let before = self.raise_high_watermark(hwm);
        if hwm > before {
            self.data_arrived.notify_waiters();
        }
        self.check_offsets();
    }

    /// Checks a client-supplied current leader epoch (-1 means not given).
    pub fn check_leader_epoch(&self, epoch: i32) -> Result<(), PartitionError> {
        let current = self.leader_epoch();
        if epoch == -1 || epoch == current {
            Ok(())
        } else if epoch < current {
            Err(PartitionError::FencedLeaderEpoch(epoch))
        } else {
            Err(PartitionError::UnknownLeaderEpoch(epoch))
        }
    }

    /// Appends a producer's batch as leader. With acks=-1 the ISR must hold at least
    /// `min.insync.replicas` members, or nothing is written.
    pub fn append_as_leader(
        &self,
        batch: &BatchView<'_>,
        required_acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        let client = crate::log::producer_state::AppendOrigin::Client { verification: None };
        self.append_from(batch, required_acks, now_ms, client)
    }

    /// After an append as leader: wakes followers' fetches and moves the high watermark if
    /// the ISR is this broker alone.
    pub(super) fn appended(&self) {
        self.appended.notify_waiters();
        self.maybe_advance_high_watermark();
    }

    /// Waits until the high watermark passes `offset` (acks=-1), leadership is lost, or
    /// `deadline` passes. Returns whether the offset was committed.
    pub async fn wait_for_high_watermark(
        &self,
        offset: i64,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            let mut wakeup = std::pin::pin!(self.data_arrived.notified());
            wakeup.as_mut().enable();
            if self.high_watermark() > offset {
                return true;
            }
            if !self.is_leader() {
                return false;
            }
            if tokio::time::timeout_at(deadline, wakeup).await.is_err() {
                return self.high_watermark() > offset;
            }
        }
    }

    /// Reads for a consumer: below the high watermark, or with `read_committed` below the
    /// last stable offset, with the aborted transactions among what is returned. A follower
    /// serves it too (KIP-392) unless `leader_only`, up to its own high watermark (the
    /// leader's, as of its last fetch).
    pub fn read(
        &self,
        offset: i64,
        current_leader_epoch: i32,
        max_bytes: usize,
        min_one: bool,
        read_committed: bool,
        leader_only: bool,
    ) -> Result<PartitionRead, PartitionError> {
        if leader_only && !self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        self.check_leader_epoch(current_leader_epoch)?;
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.log.last_stable_offset(high_watermark);
        let upto = if read_committed {
            last_stable_offset
        } else {
            high_watermark
        };
        let result = self.log.read(offset, upto, max_bytes, min_one)?;
        let aborted = read_committed.then(|| {
            let end = crate::log::batch::BatchIter::new(&result.records)
                .last()
                .map_or(offset, |(_, b)| b.last_offset() + 1);
            self.log.aborted_transactions(offset, end)
        });
        Ok(PartitionRead {
            result,
            high_watermark,
            last_stable_offset,
            log_start_offset: self.log.log_start_offset(),
            aborted,
        })
    }

    /// A future that completes when new data may be readable. Create it (and `enable` it)
    /// before checking for data, so no wake-up is missed.
    pub fn data_arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.data_arrived.notified()
    }

    /// Completes on the next append as leader: what a follower's fetch waits for (the high
    /// watermark moves only after followers fetch). Enable it before checking, as above.
    pub fn next_append(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }
}

/// The Kafka error code for a partition-level failure.
pub fn partition_error_code(e: &PartitionError) -> kafka_protocol::ResponseError {
    use kafka_protocol::ResponseError;
    match e {
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        PartitionError::UnknownLeaderEpoch(_) => ResponseError::UnknownLeaderEpoch,
        PartitionError::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        PartitionError::Log(LogError::Producer(
            crate::log::producer_state::ProducerError::InvalidProducerEpoch(_),
        )) => ResponseError::InvalidProducerEpoch,
        PartitionError::Log(LogError::Producer(
            crate::log::producer_state::ProducerError::OutOfOrderSequence(_),
        )) => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::Log(LogError::Producer(
            crate::log::producer_state::ProducerError::InvalidTxnState(_),
        )) => ResponseError::InvalidTxnState,
        PartitionError::Log(LogError::Producer(
            crate::log::producer_state::ProducerError::CoordinatorFenced(_),
        )) => ResponseError::TransactionCoordinatorFenced,
        PartitionError::Log(LogError::OffsetOutOfRange { .. }) => ResponseError::OffsetOutOfRange,
        PartitionError::Log(LogError::MessageTooLarge { .. }) => ResponseError::MessageTooLarge,
        PartitionError::Log(LogError::InvalidTimestamp { .. }) => ResponseError::InvalidTimestamp,
        PartitionError::Log(LogError::Io(_)) => ResponseError::KafkaStorageError,
    }
}
