//! Producer state for idempotent producers: per producer id, its epoch and the sequence ranges
//! and offsets of its last five batches in this partition. Appends check against it so that a
//! retried batch is recognised (and answered with its original offsets) and a gap or a stale
//! epoch is refused, with Kafka's rules (`ProducerStateManager`, `ProducerAppendInfo`).

use std::collections::{HashMap, VecDeque};

use super::batch::{increment_sequence, BatchView};

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
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
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
        let entry = self.producers.entry(pid).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
            last_append_ms: now_ms,
        });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    /// Checks a producer's batch before it is written as leader. Batches without a producer
    /// id are not idempotent and always append.
    pub fn check_batch(&self, batch: &BatchView<'_>) -> Result<SequenceCheck, ProducerError> {
        if batch.producer_id() < 0 {
            return Ok(SequenceCheck::Append);
        }
        self.check(
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence(),
            batch.last_sequence(),
        )
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
        if batch.producer_id() < 0 {
            return;
        }
        let meta = batch_metadata(
            batch.base_sequence(),
            batch.last_offset_delta(),
            base_offset,
            log_append_time,
        );
        self.record(batch.producer_id(), batch.producer_epoch(), meta, now_ms);
    }

    /// Forgets producers idle for longer than `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_append_ms) < expiration_ms);
    }

    /// Forgets batches that are no longer in the log (below the new log start offset).
    pub fn truncate_head(&mut self, log_start_offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset >= log_start_offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
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
