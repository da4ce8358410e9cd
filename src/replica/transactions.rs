//! A partition's part in transactions, on its leader: end-transaction markers written for the
//! coordinator (WriteTxnMarkers), KIP-890 verification of a producer's first transactional
//! write here, and writes a coordinator makes on a producer's behalf.

use std::sync::Arc;

use super::{Partition, PartitionError};
use crate::log::batch::BatchView;
use crate::log::producer_state::AppendOrigin;
use crate::log::txn::EndTxnMarker;
use crate::log::AppendInfo;

impl Partition {
    /// Writes an end-transaction marker as leader. Markers are written whatever the ISR size,
    /// as Kafka does: the transaction's outcome is already decided in the coordinator's log.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        let info = self.log.append_marker(
            producer_id,
            producer_epoch,
            marker,
            self.leader_epoch(),
            now_ms,
        )?;
        self.appended();
        Ok(info)
    }

    /// Appends a producer's batch as leader on behalf of `origin`; with acks=-1 the ISR must
    /// hold `min.insync.replicas` members.
    pub fn append_from(
        &self,
        batch: &BatchView<'_>,
        required_acks: i16,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        if required_acks == -1
            && (self.state.read().isr.len() as i32) < self.log.config().min_insync_replicas
        {
            return Err(PartitionError::NotEnoughReplicas);
        }
        let info = self
            .log
            .append_from(batch, self.leader_epoch(), now_ms, origin)?;
        self.counters
            .bytes_in
            .fetch_add(info.size as u64, std::sync::atomic::Ordering::Relaxed);
        self.appended();
        Ok(info)
    }

    /// Starts verifying `producer_id`'s transactional write (see `PartitionLog`).
    pub fn start_verification(&self, producer_id: i64) -> Option<u64> {
        self.log.start_verification(producer_id)
    }

    /// Whether this leader has an open transaction of `producer_id`.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.log
            .producers()
            .iter()
            .any(|p| p.producer_id == producer_id && p.current_txn_start_offset >= 0)
    }
}

/// Records a coordinator appended to its internal topic's partition, not yet known to be
/// replicated.
pub struct Written {
    pub partition: Arc<Partition>,
    /// The offset of the first record; the others follow densely.
    pub base_offset: i64,
    pub last_offset: i64,
    pub durable_after: Option<i64>,
}

/// Why a coordinator's write did not become durable and replicated in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailed {
    /// Leadership moved (or the log failed): another broker coordinates now.
    NotLeader,
    TimedOut,
}

impl Written {
    pub fn new(partition: Arc<Partition>, info: &AppendInfo) -> Self {
        Self {
            partition,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            durable_after: info.durable_after,
        }
    }

    /// The log offset of the `i`th record of the append.
    pub fn record_offset(&self, i: usize) -> i64 {
        self.base_offset + i as i64
    }

    /// Waits until the write is durable as the flush policy asks and replicated to the ISR
    /// (acks=-1 semantics for coordinator writes), up to `deadline`.
    pub async fn replicated(&self, deadline: tokio::time::Instant) -> Result<(), WriteFailed> {
        if let Some(offset) = self.durable_after {
            match tokio::time::timeout_at(deadline, self.partition.log.wait_durable(offset)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WriteFailed::NotLeader),
                Err(_) => return Err(WriteFailed::TimedOut),
            }
        }
        if self
            .partition
            .wait_for_high_watermark(self.last_offset, deadline)
            .await
        {
            Ok(())
        } else if self.partition.is_leader() {
            Err(WriteFailed::TimedOut)
        } else {
            Err(WriteFailed::NotLeader)
        }
    }
}
