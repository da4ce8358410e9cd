//! The read side of a log's transactions: the last stable offset, the aborted transactions a
//! read_committed fetch reports, the producers DescribeProducers lists, and the bookkeeping
//! that keeps them (replaying markers when the log is opened, following the high watermark,
//! and writing the `.txnindex` files). Markers themselves are written by `append.rs`.

use std::io;
use std::sync::atomic::Ordering;

use super::{PartitionLog, WriterState};
use crate::log::batch::BatchView;
use crate::log::producer_state::{ProducerSnapshot, ProducerStateManager};
use crate::log::txn::{self, AbortedIndex, AbortedTxn, CompletedTxn};

/// Replays one batch's marker, if it is one, into producer state and the aborted index (the
/// rebuild when a log is opened or truncated).
pub(super) fn replay_marker(
    producers: &mut ProducerStateManager,
    aborted: &mut AbortedIndex,
    batch: &BatchView<'_>,
    now_ms: i64,
) {
    if !batch.is_control() || batch.producer_id() < 0 {
        return;
    }
    let Some(marker) = txn::parse_marker(batch) else {
        return;
    };
    if let Some((completed, lso)) = producers.record_marker(
        batch.producer_id(),
        batch.producer_epoch(),
        marker,
        batch.base_offset(),
        batch.max_timestamp(),
        now_ms,
    ) {
        if completed.aborted {
            aborted.add(aborted_entry(&completed, lso));
        }
    }
}

pub(super) fn aborted_entry(completed: &CompletedTxn, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: completed.producer_id,
        first_offset: completed.first_offset,
        last_offset: completed.last_offset,
        last_stable_offset: lso,
    }
}

impl PartitionLog {
    /// The last stable offset for a high watermark `high_watermark`: read_committed readers
    /// see no further. Lock-free.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        high_watermark.min(self.first_unstable.load(Ordering::Acquire))
    }

    /// Follows the high watermark: completed transactions whose marker it passed no longer
    /// hold the last stable offset back. Takes the writer lock only when one is waiting.
    pub fn on_high_watermark(&self, high_watermark: i64) {
        if self.first_unreplicated_marker.load(Ordering::Acquire) >= high_watermark {
            return;
        }
        let mut writer = self.writer.lock();
        writer.producers.txns.replicated_below(high_watermark);
        self.refresh_unstable(&writer);
    }

    /// Republishes the open transactions' bounds for lock-free readers (writer lock held).
    pub(super) fn refresh_unstable(&self, writer: &WriterState) {
        let txns = &writer.producers.txns;
        self.first_unstable.store(
            txns.first_unstable_offset().unwrap_or(i64::MAX),
            Ordering::Release,
        );
        self.first_unreplicated_marker.store(
            txns.first_unreplicated_marker().unwrap_or(i64::MAX),
            Ordering::Release,
        );
    }

    /// The aborted transactions that a read of `[start, upper)` must report.
    pub fn aborted_transactions(&self, start: i64, upper: i64) -> Vec<AbortedTxn> {
        if upper <= start {
            return Vec::new();
        }
        let aborted = self.aborted.lock();
        if aborted.is_empty() {
            return Vec::new();
        }
        aborted.overlapping(start, upper)
    }

    /// A copy of the aborted transactions (for a cleaner pass).
    pub(crate) fn aborted_snapshot(&self) -> AbortedIndex {
        self.aborted.lock().clone()
    }

    /// The producers that wrote to this log and are still tracked.
    pub fn producers(&self) -> Vec<ProducerSnapshot> {
        self.writer.lock().producers.describe()
    }

    /// Records an aborted transaction whose marker was just written to the active segment
    /// (writer lock held).
    pub(super) fn record_abort(&self, entry: AbortedTxn, segment_base: i64) -> io::Result<()> {
        self.aborted.lock().add(entry);
        txn::append_txn_index(&self.dir, segment_base, &entry)
    }

    /// Writes the `.txnindex` of the segment at `base` from the aborted transactions whose
    /// marker lies in `[base, end)` (after a cleaner swap put one segment there).
    pub(crate) fn write_txn_index_for(&self, base: i64, end: i64) -> io::Result<()> {
        let entries = self.aborted.lock().markers_in(base, end);
        txn::write_txn_index(&self.dir, base, &entries)
    }

    /// Rewrites every segment's `.txnindex` from the aborted index.
    pub(super) fn rewrite_txn_indexes(&self) -> io::Result<()> {
        let bases: Vec<i64> = self.segments.read().keys().copied().collect();
        for (i, base) in bases.iter().enumerate() {
            let end = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            self.write_txn_index_for(*base, end)?;
        }
        Ok(())
    }

    /// Forgets aborted transactions whose marker the log start offset passed.
    pub(super) fn forget_aborted_before(&self, log_start: i64) {
        self.aborted.lock().truncate_before(log_start);
    }
}
