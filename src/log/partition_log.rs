//! PartitionLog: the ordered segments of one partition, its log start offset, log end offset
//! and recovery point, its leader epochs and its producers' state (Kafka's `UnifiedLog`).
//!
//! Appends are serialized by one per-partition writer lock (`append.rs`); reads take a brief
//! read lock on the segment map, clone the segment handles they need, and then work without
//! locks. Opening is `load.rs`, truncation at either end `truncate.rs`. Slow disk work
//! (fsyncs, seals) is owed to the log directory's flusher thread (`flusher.rs`) and never
//! done by an append.
//!
//! Invariants, asserted where they are maintained: log start offset <= high watermark (kept
//! by the replica layer) <= log end offset; offsets are dense (each batch starts at the log
//! end offset); the recovery point never passes the log end offset.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::batch::BatchView;
use super::cleaner::CleanerState;
use arc_swap::ArcSwap;

use super::config::LogConfig;
use super::flusher::LogFlusher;
use super::leader_epoch::LeaderEpochCache;
use super::producer_state::{ProducerError, ProducerStateManager};
use super::segment::LogSegment;
use super::txn::AbortedIndex;
use crate::durable::sync_dir;

mod append;
mod load;
mod transactions;
mod truncate;

pub use append::FollowerAppend;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
    pub size: usize,
    /// Set when the topic's flush policy (`flush.messages`, `flush.ms`) made this append due
    /// for an fsync: acknowledge it only once [`PartitionLog::wait_durable`] for this offset
    /// returns.
    pub durable_after: Option<i64>,
}

/// A fetch read: whole batches, possibly empty.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("Timestamp {timestamp} of message is out of range. The timestamp should be within [{earliest}, {latest}]")]
    InvalidTimestamp {
        timestamp: i64,
        earliest: i64,
        latest: i64,
    },
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// What only the appender touches, under the writer lock.
struct WriterState {
    unflushed_messages: i64,
    last_flush_ms: i64,
    /// Idempotent producers: checked and updated in the same step as the write.
    producers: ProducerStateManager,
}

/// Disk work appends have asked for and the flusher has not done yet.
#[derive(Default)]
struct OwedIo {
    /// fsync everything below this offset.
    flush_upto: i64,
    /// Segments rolled away from: seal, fsync, then move the recovery point past them.
    seals: Vec<Arc<LogSegment>>,
    /// A segment was created: fsync the directory.
    sync_dir: bool,
    /// The log is in the flusher's queue.
    queued: bool,
}

pub struct PartitionLog {
    dir: PathBuf,
    /// This log, for the flusher's queue.
    me: Weak<PartitionLog>,
    /// Swapped whole when the topic's or the broker's configs change; appends and reads
    /// take a lock-free snapshot.
    config: ArcSwap<LogConfig>,
    segments: RwLock<BTreeMap<i64, Arc<LogSegment>>>,
    writer: Mutex<WriterState>,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    /// Everything below this offset is known to be on disk (fsync'ed).
    recovery_point: AtomicI64,
    epochs: Mutex<LeaderEpochCache>,
    /// Where the log cleaner's dirty section starts (Kafka's `cleaner-offset-checkpoint`
    /// entry); -1 until the log is first cleaned or a checkpoint is loaded.
    cleaner_checkpoint: AtomicI64,
    /// The cleaner's working state; held for a whole cleaning pass, never by appends or reads.
    pub(crate) cleaner: Mutex<CleanerState>,
    /// Bumped (under the writer lock) by every truncation of the log's tail, so that a
    /// cleaner pass that read segments before a truncation does not swap its output in.
    truncations: AtomicU64,
    /// Where owed disk work goes; `None` does it inline (tests, tools).
    flusher: Option<Arc<LogFlusher>>,
    owed: Mutex<OwedIo>,
    /// Notified whenever the recovery point moves or a flush fails.
    durable: tokio::sync::Notify,
    /// A flush failed: appends can no longer be made durable (Kafka takes the log dir
    /// offline).
    io_failed: AtomicBool,
    /// Aborted transactions, by marker offset (the `.txnindex` files hold the same).
    aborted: Mutex<AbortedIndex>,
    /// The first offset of an open or unreplicated transaction (`i64::MAX` when none):
    /// read_committed readers stop there. Written under the writer lock.
    first_unstable: AtomicI64,
    /// The smallest marker offset still waiting for the high watermark (`i64::MAX` when none).
    first_unreplicated_marker: AtomicI64,
}

impl PartitionLog {
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.load_full()
    }

    pub fn set_config(&self, config: Arc<LogConfig>) {
        self.config.store(config);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size() as u64).sum()
    }

    /// Asserts 0 <= log start offset <= log end offset. Called after every change to either
    /// end.
    fn check_offsets(&self) {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        assert!(
            0 <= start && start <= end,
            "log start offset {start} must not pass the log end offset {end} ({})",
            self.dir.display()
        );
    }

    fn active_segment(&self) -> Arc<LogSegment> {
        self.segments
            .read()
            .values()
            .next_back()
            .cloned()
            .expect("a log always has an active segment")
    }

    /// Reads whole batches starting with the one that holds `offset`, stopping before
    /// `max_offset` (exclusive: the high watermark for consumers) and after `max_bytes`,
    /// except that the first batch is returned whole when `min_one` is set.
    pub fn read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, LogError> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let empty = ReadResult {
            records: Bytes::new(),
        };
        if offset >= max_offset {
            return Ok(empty);
        }
        let candidates: Vec<Arc<LogSegment>> = {
            let segs = self.segments.read();
            let floor = segs.range(..=offset).next_back().map(|(b, _)| *b);
            let from = floor.unwrap_or(i64::MIN);
            segs.range(from..).map(|(_, s)| s.clone()).collect()
        };
        for seg in candidates {
            let Some(first) = seg.find_batch(offset) else {
                continue;
            };
            if first.base_offset >= max_offset {
                return Ok(empty);
            }
            let mut end = first.position;
            for b in seg.batches_from(first.position) {
                if b.base_offset >= max_offset {
                    break;
                }
                let taken = end - first.position;
                if taken + b.size > max_bytes && !(taken == 0 && min_one) {
                    break;
                }
                end = b.position + b.size;
            }
            return Ok(ReadResult {
                records: seg.slice(first.position, end),
            });
        }
        Ok(empty)
    }

    /// Finds the first offset whose record timestamp is >= `timestamp`, below `max_offset`.
    /// Returns (offset, record timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64, max_offset: i64) -> Option<(i64, i64)> {
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        let log_start = self.log_start_offset();
        for seg in segments {
            if seg.largest_timestamp() < timestamp {
                continue;
            }
            let start = seg.time_lookup_position(timestamp);
            for loc in seg.batches_from(start) {
                if loc.base_offset >= max_offset {
                    return None;
                }
                if loc.max_timestamp < timestamp || loc.last_offset < log_start {
                    continue;
                }
                let view = seg.batch_at(&loc);
                if let Some(found) =
                    super::records::first_record_at_or_after(&view, timestamp, log_start)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP), as Kafka finds it:
    /// the first segment holding the largest timestamp, the batch its time tracking points at,
    /// and the first record in it with that timestamp. `None` when the log has no timestamps
    /// or that record is at or above `max_offset`. Reads one batch, not the log.
    pub fn offset_of_max_timestamp(&self, max_offset: i64) -> Option<(i64, i64)> {
        let segments = self.segments_snapshot();
        let mut best: Option<(i64, i64, &Arc<LogSegment>)> = None;
        for seg in &segments {
            let (ts, offset) = seg.max_timestamp_and_offset();
            if ts >= 0 && best.is_none_or(|(best_ts, _, _)| ts > best_ts) {
                best = Some((ts, offset, seg));
            }
        }
        let (ts, offset, seg) = best?;
        let loc = seg.find_batch(offset)?;
        let view = seg.batch_at(&loc);
        let found = super::records::first_record_at_or_after(&view, ts, self.log_start_offset())
            .map(|(o, _)| o)
            .unwrap_or(loc.last_offset);
        (found < max_offset).then_some((found, ts))
    }

    /// The largest epoch <= `epoch` and the offset where it ends (OffsetForLeaderEpoch).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs
            .lock()
            .end_offset_for(epoch, self.log_end_offset())
    }

    /// Calls `f` with every batch at or after the log start offset, oldest first.
    pub fn for_each_batch(&self, mut f: impl FnMut(&BatchView<'_>)) {
        let start = self.log_start_offset();
        let segments: Vec<Arc<LogSegment>> = self.segments.read().values().cloned().collect();
        for seg in segments {
            for (_, b) in super::batch::BatchIter::new(seg.bytes()) {
                if b.last_offset() >= start {
                    f(&b);
                }
            }
        }
    }

    /// Records disk work an append owes and hands the log to the flusher (once: a queued log
    /// collects more work until the flusher takes it). Without a flusher the work is done now;
    /// the caller holds the writer lock.
    fn request_io(&self, owe: impl FnOnce(&mut OwedIo)) -> io::Result<()> {
        let mut owed = self.owed.lock();
        owe(&mut owed);
        match &self.flusher {
            Some(flusher) => {
                if !owed.queued {
                    owed.queued = true;
                    flusher.enqueue(self.me.clone());
                }
                Ok(())
            }
            None => {
                let work = std::mem::take(&mut *owed);
                drop(owed);
                self.perform_io(work, true)
            }
        }
    }

    /// The flusher's entry point: does what is owed, off the append path.
    pub(super) fn do_owed_io(&self) {
        let work = {
            let mut owed = self.owed.lock();
            std::mem::take(&mut *owed)
        };
        if let Err(e) = self.perform_io(work, false) {
            tracing::error!(dir = %self.dir.display(), error = %e,
                "flushing the log failed; its appends can no longer be made durable");
            self.io_failed.store(true, Ordering::Release);
            self.durable.notify_waiters();
        }
    }

    /// Seals rolled segments, fsyncs them, the directory and the active data owed, and moves
    /// the recovery point. `writer_held`: the caller holds the writer lock already.
    fn perform_io(&self, work: OwedIo, writer_held: bool) -> io::Result<()> {
        for seg in work.seals {
            let next_base = {
                let _writer = (!writer_held).then(|| self.writer.lock());
                // A truncation may have made it the active segment again, or deleted it.
                let map = self.segments.read();
                let still_sealed = map
                    .get(&seg.base_offset())
                    .is_some_and(|held| Arc::ptr_eq(held, &seg))
                    && map.keys().next_back() != Some(&seg.base_offset());
                if !still_sealed {
                    continue;
                }
                let next = map.range(seg.base_offset() + 1..).next().map(|(b, _)| *b);
                drop(map);
                seg.seal()?;
                next
            };
            seg.flush()?;
            if let Some(next) = next_base {
                self.advance_recovery_point(next);
            }
        }
        if work.sync_dir {
            sync_dir(&self.dir)?;
        }
        if work.flush_upto > self.recovery_point() {
            self.flush_upto(work.flush_upto)?;
        }
        self.durable.notify_waiters();
        Ok(())
    }

    /// Moves the recovery point up to `offset` (never past the log end) and wakes waiters.
    fn advance_recovery_point(&self, offset: i64) {
        let offset = offset.min(self.log_end_offset());
        self.recovery_point.fetch_max(offset, Ordering::AcqRel);
        self.durable.notify_waiters();
    }

    /// fsyncs the segments that may hold data not yet durable (from the one holding the
    /// recovery point on), so that everything below `upto` is on disk.
    fn flush_upto(&self, upto: i64) -> io::Result<()> {
        let from = self.recovery_point();
        // Everything written before the fsyncs start is durable after them.
        let end = self.log_end_offset();
        let segments: Vec<Arc<LogSegment>> = {
            let segs = self.segments.read();
            let floor = segs
                .range(..=from)
                .next_back()
                .map(|(b, _)| *b)
                .unwrap_or(i64::MIN);
            segs.range(floor..).map(|(_, s)| s.clone()).collect()
        };
        for seg in segments {
            seg.flush()?;
        }
        self.advance_recovery_point(end.max(upto));
        Ok(())
    }

    /// Waits until everything below `offset` is on disk (see [`AppendInfo::durable_after`]).
    pub async fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        loop {
            let notified = self.durable.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.recovery_point() >= offset {
                return Ok(());
            }
            if self.io_failed.load(Ordering::Acquire) {
                return Err(LogError::Io(io::Error::other(
                    "the log could not be flushed to disk",
                )));
            }
            notified.await;
        }
    }

    /// fsyncs every segment that may hold unflushed data and advances the recovery point.
    /// Blocking: for the flush scheduler's and shutdown's threads.
    pub fn flush(&self) -> io::Result<()> {
        self.flush_upto(self.log_end_offset())?;
        self.writer.lock().unflushed_messages = 0;
        Ok(())
    }

    /// Flushes when `flush.ms` has passed since the last flush and data is pending.
    pub fn flush_if_due(&self, now_ms: i64) -> io::Result<()> {
        let config = self.config();
        let due = {
            let w = self.writer.lock();
            w.unflushed_messages > 0 && now_ms.saturating_sub(w.last_flush_ms) >= config.flush_ms
        };
        if due {
            self.flush()?;
            self.writer.lock().last_flush_ms = now_ms;
        }
        Ok(())
    }

    /// Rebuilds idempotent producers' state from the batch headers at or after the log
    /// start offset (at open, and after a truncation of the tail).
    /// Replays every batch header into producer state, open transactions and the aborted
    /// transaction index (whose `.txnindex` files are rewritten to match).
    fn rebuild_producer_state(&self, writer: &mut WriterState, now_ms: i64) {
        let mut producers = ProducerStateManager::default();
        let mut aborted = AbortedIndex::default();
        self.for_each_batch(|b| {
            let append_time = if b.is_log_append_time() {
                b.max_timestamp()
            } else {
                -1
            };
            producers.record_batch(b, b.base_offset(), append_time, now_ms);
            transactions::replay_marker(&mut producers, &mut aborted, b, now_ms);
        });
        writer.producers = producers;
        *self.aborted.lock() = aborted;
        self.refresh_unstable(writer);
        if let Err(e) = self.rewrite_txn_indexes() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "rewriting .txnindex files");
        }
    }

    /// Drops idle producers (`producer.id.expiration.ms`).
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) {
        self.writer.lock().producers.expire(now_ms, expiration_ms);
    }

    /// Flushes everything and trims the active segment's indexes, for a clean shutdown.
    pub fn close(&self) -> io::Result<()> {
        self.flush()?;
        self.epochs.lock().sync()?;
        self.active_segment().seal()
    }

    /// Removes the whole partition directory.
    pub fn delete(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments, oldest first; the last is the active segment.
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<LogSegment>> {
        self.segments.read().values().cloned().collect()
    }

    /// The log cleaner's checkpoint: where the dirty section starts, if known.
    pub fn cleaner_checkpoint(&self) -> Option<i64> {
        let c = self.cleaner_checkpoint.load(Ordering::Acquire);
        (c >= 0).then_some(c)
    }

    /// Sets the cleaner checkpoint (from the `cleaner-offset-checkpoint` file at startup, or
    /// by the cleaner after a pass). Offsets outside the log are ignored.
    pub fn set_cleaner_checkpoint(&self, offset: i64) {
        if offset >= self.log_start_offset() && offset <= self.log_end_offset() {
            self.cleaner_checkpoint.store(offset, Ordering::Release);
        }
    }

    /// How many times the log's tail was truncated since it was opened. Every truncation
    /// (follower truncation to a leader's epoch end, truncate-fully) must call
    /// `note_truncation` while it holds the writer lock.
    pub(crate) fn truncation_count(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }

    /// Records a truncation of the log's tail to `new_log_end` (call with the writer lock
    /// held): a cleaner pass that started before it will not swap its output in, and the
    /// cleaner checkpoint does not stay past the new end (Kafka's
    /// `maybeTruncateCleanerCheckpoint`).
    fn note_truncation(&self, new_log_end: i64) {
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.cleaner_checkpoint
            .fetch_min(new_log_end, Ordering::AcqRel);
    }

    /// Replaces `old` (consecutive segments, oldest first) with the segment `install`
    /// returns, under the writer lock. `install` performs the file operations of the swap.
    /// Returns `Ok(false)`, without calling `install`, when `old` is no longer exactly what
    /// the log holds (retention or DeleteRecords removed some meanwhile), or when the log
    /// was truncated after `truncations` was read. Readers that still hold an old segment keep
    /// reading its mapping.
    pub(crate) fn replace_segments(
        &self,
        old: &[Arc<LogSegment>],
        truncations: u64,
        install: impl FnOnce() -> io::Result<LogSegment>,
    ) -> io::Result<bool> {
        let _writer = self.writer.lock();
        if self.truncation_count() != truncations {
            return Ok(false);
        }
        {
            let map = self.segments.read();
            let intact = old.iter().all(|s| {
                map.get(&s.base_offset())
                    .is_some_and(|held| Arc::ptr_eq(held, s))
            });
            if !intact || old.is_empty() {
                return Ok(false);
            }
        }
        let new = Arc::new(install()?);
        let mut map = self.segments.write();
        for seg in old {
            map.remove(&seg.base_offset());
        }
        map.insert(new.base_offset(), new);
        Ok(true)
    }

    /// Segment base offsets, oldest first.
    #[cfg(test)]
    pub fn segment_bases(&self) -> Vec<i64> {
        self.segments.read().keys().copied().collect()
    }
}
