//! Producer state for idempotent and transactional producers: per producer id, its epoch, the
//! sequence ranges and offsets of its last five batches in this partition, its coordinator
//! epoch and the first offset of its open transaction. Appends check against it so that a
//! retried batch is recognised (and answered with its original offsets) and a gap, a stale
//! epoch, a zombie coordinator's marker or a non-transactional write inside a transaction is
//! refused, with Kafka's rules (`ProducerStateManager`, `ProducerAppendInfo`). The open
//! transactions (`txn::OpenTxns`) decide the last stable offset.

use std::collections::{HashMap, VecDeque};

use super::batch::{increment_sequence, BatchView};
use super::txn::{self, CompletedTxn, EndTxnMarker, OpenTxns};

/// Kafka keeps the last five batches per producer (max.in.flight.requests.per.connection).
pub const BATCHES_TO_RETAIN: usize = 5;
const NO_PRODUCER_EPOCH: i16 = -1;

/// Where an idempotent batch was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The log append time given to the batch, or -1 for CreateTime topics.
    pub log_append_time: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    /// Wall-clock time of the last append, for `producer.id.expiration.ms`.
    last_append_ms: i64,
    /// The largest record timestamp of the producer's last batch or marker.
    last_timestamp: i64,
    /// The epoch of the transaction coordinator that wrote this producer's last marker.
    coordinator_epoch: i32,
    /// Where the producer's open transaction starts, if one is open.
    current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> Self {
        Self {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
            last_append_ms: now_ms,
            last_timestamp: -1,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
        }
    }

    /// A new epoch starts a new sequence: the old batches no longer say anything.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// -1 when no transaction is open.
    pub current_txn_start_offset: i64,
}

/// What an append of an idempotent batch should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already written: answer with the original offsets, write nothing.
    Duplicate(BatchMetadata),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("{0}")]
    InvalidProducerEpoch(String),
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A non-transactional write from a producer with an open transaction.
    #[error("{0}")]
    InvalidTxnState(String),
    /// A marker from a coordinator older than one that already wrote for this producer.
    #[error("{0}")]
    CoordinatorFenced(String),
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// The open and not yet replicated transactions (for the LSO).
    pub txns: OpenTxns,
    /// KIP-890 verification guards: a producer whose first transactional write here is being
    /// verified with its coordinator. A marker for the producer clears its guard, so a write
    /// verified before the transaction ended cannot start a new one.
    verifying: HashMap<i64, u64>,
    next_guard: u64,
}

/// Where an append comes from, as Kafka's `AppendOrigin` distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer; a transactional batch that does not continue an open transaction here
    /// needs the verification guard its verification was started with.
    Client { verification: Option<u64> },
    /// A coordinator writing on a producer's behalf (TxnOffsetCommit): only the producer
    /// epoch is checked.
    Coordinator,
}

impl ProducerStateManager {
    /// How many producers are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.producers.len()
    }

    /// Checks a batch from producer `pid` before it is written.
    pub fn check(
        &self,
        pid: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, ProducerError> {
        let Some(entry) = self.producers.get(&pid) else {
            // Unknown producer (new, or its state expired or was deleted with the log):
            // Kafka accepts any sequence.
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch(format!(
                "Epoch of producer {pid} is {epoch}, which is smaller than the last seen epoch {}",
                entry.epoch
            )));
        }
        if epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            {
                return Ok(SequenceCheck::Duplicate(*dup));
            }
            let last = entry.batches.back().map(|b| b.last_seq);
            match last {
                Some(last) if !in_sequence(last, first_seq) => {
                    Err(ProducerError::OutOfOrderSequence(format!(
                        "Out of order sequence number for producer {pid}: {first_seq} (incoming seq. number), {last} (current end sequence number)"
                    )))
                }
                _ => Ok(SequenceCheck::Append),
            }
        } else if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
            Err(ProducerError::OutOfOrderSequence(format!(
                "Invalid sequence number for new epoch of producer {pid}: {epoch} (request epoch), {first_seq} (seq. number), {} (current producer epoch)",
                entry.epoch
            )))
        } else {
            Ok(SequenceCheck::Append)
        }
    }

    /// Records a batch that was written (or found while rebuilding from the log).
    pub fn record(&mut self, pid: i64, epoch: i16, batch: BatchMetadata, now_ms: i64) {
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(epoch, now_ms));
        entry.set_epoch(epoch);
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    /// Checks a producer's batch before it is written as leader. Batches without a producer
    /// id are not idempotent and always append.
    pub fn check_batch(&self, batch: &BatchView<'_>) -> Result<SequenceCheck, ProducerError> {
        let pid = batch.producer_id();
        if pid < 0 {
            return Ok(SequenceCheck::Append);
        }
        let check = self.check(
            pid,
            batch.producer_epoch(),
            batch.base_sequence(),
            batch.last_sequence(),
        )?;
        if check == SequenceCheck::Append && !batch.is_transactional() {
            if let Some(first) = self
                .producers
                .get(&pid)
                .and_then(|e| e.current_txn_first_offset)
            {
                return Err(ProducerError::InvalidTxnState(format!(
                    "Expected transactional write from producer {pid}, whose transaction \
                     started at offset {first}"
                )));
            }
        }
        Ok(check)
    }

    /// Checks a batch from `origin` before a leader writes it: as [`Self::check_batch`] for a
    /// client (plus KIP-890's verification of a transaction's first write here), the epoch
    /// alone for a coordinator.
    pub fn check_append(
        &self,
        batch: &BatchView<'_>,
        origin: AppendOrigin,
    ) -> Result<SequenceCheck, ProducerError> {
        let pid = batch.producer_id();
        match origin {
            AppendOrigin::Coordinator => {
                if let Some(entry) = self.producers.get(&pid) {
                    if batch.producer_epoch() < entry.epoch {
                        return Err(ProducerError::InvalidProducerEpoch(format!(
                            "Epoch of producer {pid} is {}, which is smaller than the last seen \
                             epoch {}",
                            batch.producer_epoch(),
                            entry.epoch
                        )));
                    }
                }
                Ok(SequenceCheck::Append)
            }
            AppendOrigin::Client { verification } => {
                let check = self.check_batch(batch)?;
                let opens_txn = batch.is_transactional()
                    && self
                        .producers
                        .get(&pid)
                        .is_none_or(|e| e.current_txn_first_offset.is_none());
                if check == SequenceCheck::Append
                    && opens_txn
                    && (verification.is_none() || self.verifying.get(&pid) != verification.as_ref())
                {
                    return Err(ProducerError::InvalidTxnState(
                        "Record was not part of an ongoing transaction".into(),
                    ));
                }
                Ok(check)
            }
        }
    }

    /// Starts verifying producer `pid`'s transactional write: `None` when it already has an
    /// open transaction here (no verification needed), else the guard its append must carry.
    pub fn start_verification(&mut self, pid: i64) -> Option<u64> {
        if self
            .producers
            .get(&pid)
            .is_some_and(|e| e.current_txn_first_offset.is_some())
        {
            return None;
        }
        self.next_guard += 1;
        self.verifying.insert(pid, self.next_guard);
        Some(self.next_guard)
    }

    /// Checks an end-transaction marker before a leader writes it: its producer epoch may not
    /// be older than the producer's, nor its coordinator epoch older than the last marker's.
    pub fn check_marker(
        &self,
        pid: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&pid) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch(format!(
                "Epoch of producer {pid} is {epoch}, which is smaller than the last seen epoch {}",
                entry.epoch
            )));
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced(format!(
                "Invalid coordinator epoch for producerId {pid}: {coordinator_epoch} (zombie), {} \
                 (current)",
                entry.coordinator_epoch
            )));
        }
        Ok(())
    }

    /// Records an end-transaction marker written at `offset`: the producer's open transaction
    /// (if any) is complete. Returns it, with the LSO Kafka records for an abort.
    pub fn record_marker(
        &mut self,
        pid: i64,
        epoch: i16,
        marker: EndTxnMarker,
        offset: i64,
        timestamp: i64,
        now_ms: i64,
    ) -> Option<(CompletedTxn, i64)> {
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(epoch, now_ms));
        entry.set_epoch(epoch);
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        self.verifying.remove(&pid);
        entry.last_timestamp = timestamp;
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        let first_offset = entry.current_txn_first_offset.take()?;
        let completed = CompletedTxn {
            producer_id: pid,
            first_offset,
            last_offset: offset,
            aborted: marker.kind == txn::MarkerType::Abort,
        };
        let lso = self.txns.complete(&completed);
        Some((completed, lso))
    }

    /// The producers DescribeProducers reports.
    pub fn describe(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .producers
            .iter()
            .map(|(pid, e)| ProducerSnapshot {
                producer_id: *pid,
                producer_epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Records a batch as written at `base_offset` (leader and follower appends, and the
    /// rebuild from the log). `log_append_time` is the broker's timestamp for LogAppendTime
    /// batches, else -1.
    pub fn record_batch(
        &mut self,
        batch: &BatchView<'_>,
        base_offset: i64,
        log_append_time: i64,
        now_ms: i64,
    ) {
        let pid = batch.producer_id();
        if pid < 0 {
            return;
        }
        if batch.is_control() {
            // A marker: the caller records it (`record_marker`) with its parsed content.
            return;
        }
        let meta = batch_metadata(
            batch.base_sequence(),
            batch.last_offset_delta(),
            base_offset,
            log_append_time,
        );
        self.record(pid, batch.producer_epoch(), meta, now_ms);
        let entry = self.producers.get_mut(&pid).expect("just recorded");
        entry.last_timestamp = if log_append_time >= 0 {
            log_append_time
        } else {
            batch.max_timestamp()
        };
        if batch.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(base_offset);
            self.txns.begin(pid, base_offset);
            self.verifying.remove(&pid);
        }
    }

    /// Forgets producers idle for longer than `expiration_ms`, except those with an open
    /// transaction.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_append_ms) < expiration_ms
        });
    }

    /// Forgets batches that are no longer in the log (below the new log start offset).
    pub fn truncate_head(&mut self, log_start_offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset >= log_start_offset);
        }
        self.producers
            .retain(|_, e| !e.batches.is_empty() || e.current_txn_first_offset.is_some());
    }
}

/// Builds the metadata of a batch from its header.
pub fn batch_metadata(
    first_seq: i32,
    last_delta: i32,
    first_offset: i64,
    log_append_time: i64,
) -> BatchMetadata {
    BatchMetadata {
        first_seq,
        last_seq: increment_sequence(first_seq, last_delta),
        first_offset,
        last_offset: first_offset + last_delta as i64,
        log_append_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(first_seq: i32, n: i32, offset: i64) -> BatchMetadata {
        batch_metadata(first_seq, n - 1, offset, -1)
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut s = ProducerStateManager::default();
        assert_eq!(s.check(7, 0, 0, 2), Ok(SequenceCheck::Append));
        s.record(7, 0, meta(0, 3, 0), 1);
        assert_eq!(s.check(7, 0, 3, 4), Ok(SequenceCheck::Append));
        s.record(7, 0, meta(3, 2, 3), 1);
        // A retry of either retained batch is a duplicate with its original offsets.
        assert_eq!(
            s.check(7, 0, 0, 2),
            Ok(SequenceCheck::Duplicate(meta(0, 3, 0)))
        );
        assert_eq!(
            s.check(7, 0, 3, 4),
            Ok(SequenceCheck::Duplicate(meta(3, 2, 3)))
        );
        // A gap is out of order.
        assert!(matches!(
            s.check(7, 0, 9, 9),
            Err(ProducerError::OutOfOrderSequence(_))
        ));
        // A stale epoch is refused; a new epoch must start at 0.
        s.record(7, 2, meta(0, 1, 5), 1);
        assert!(matches!(
            s.check(7, 1, 1, 1),
            Err(ProducerError::InvalidProducerEpoch(_))
        ));
        assert!(matches!(
            s.check(7, 3, 5, 5),
            Err(ProducerError::OutOfOrderSequence(_))
        ));
        assert_eq!(s.check(7, 3, 0, 0), Ok(SequenceCheck::Append));
    }

    #[test]
    fn only_five_batches_are_retained_and_expiry() {
        let mut s = ProducerStateManager::default();
        for i in 0..7 {
            s.record(1, 0, meta(i, 1, i as i64), 10);
        }
        assert!(matches!(
            s.check(1, 0, 0, 0),
            Err(ProducerError::OutOfOrderSequence(_))
        ));
        assert_eq!(
            s.check(1, 0, 6, 6),
            Ok(SequenceCheck::Duplicate(meta(6, 1, 6)))
        );
        assert_eq!(s.check(1, 0, 7, 7), Ok(SequenceCheck::Append));
        s.expire(100, 50);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStateManager::default();
        s.record(1, 0, meta(i32::MAX - 1, 2, 0), 0);
        assert_eq!(s.check(1, 0, 0, 4), Ok(SequenceCheck::Append));
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
    }
}
