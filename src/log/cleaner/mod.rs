//! The log cleaner: compaction of logs whose `cleanup.policy` contains `compact`, as Kafka's
//! `LogCleaner` does it.
//!
//! # Entry point
//! [`clean_once`] runs one pass over one partition log. The broker calls it for every hosted
//! partition, one pass at a time, every `log.cleaner.backoff.ms` (15 s, [`CleanerConfig`]), on
//! a blocking thread: a pass reads and rewrites segments. A log that is not compacted, not dirty
//! enough, or already being cleaned returns at once.
//!
//! # One pass
//! 1. The dirty section runs from the cleaner checkpoint (Kafka's `cleaner-offset-checkpoint`,
//!    kept by the `LogManager`) to the first uncleanable offset: the smallest of the last
//!    stable offset (which the broker passes as `high_watermark`), the active segment's base offset (the active segment is never cleaned) and the
//!    base offset of the first segment holding a record newer than `min.compaction.lag.ms`.
//! 2. The log is cleaned when dirty bytes / (clean + dirty bytes) reaches
//!    `min.cleanable.dirty.ratio`, when a dirty segment is older than `max.compaction.lag.ms`,
//!    or when tombstones it kept have passed their delete horizon.
//! 3. An offset map (key -> latest offset, bounded memory: `offset_map.rs`) is built over the
//!    dirty section. When it fills up, the pass cleans only up to the last offset it mapped;
//!    the next pass continues from there.
//! 4. Every segment from the log start up to the end of the mapped range is rewritten, in
//!    groups that fit one segment (`segment.bytes`). A record stays iff it is the latest for
//!    its key; a record without a key goes; a tombstone stays until its batch's delete horizon
//!    (set to now + `delete.retention.ms` the first time the cleaner keeps it, in the batch's
//!    `baseTimestamp` with the delete-horizon attribute, as Kafka 3 does). Offsets never
//!    change; a rewritten batch keeps its base offset, `lastOffsetDelta`, producer fields and
//!    codec, and gets a new CRC. A batch emptied of records is dropped, except the last batch of
//!    each producer id, which is kept as an empty batch for producer state. Transactions, as
//!    Kafka's `CleanedTransactionMetadata` treats them: the records of aborted transactions go
//!    (and are never mapped); a COMMIT or ABORT marker stays while a batch of its transaction
//!    is left before it, then gets a delete horizon like a tombstone and goes after it.
//! 5. Each group is written to `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`),
//!    fsync'ed, then swapped in under the partition's writer lock: renamed to
//!    `<base>.log.<end>.swap` (the commit point; `end` is where the replaced segments end),
//!    the old segments' files deleted, the new files renamed to their final names and the
//!    segment map updated. Readers holding an old segment keep its mapping. The writer lock is
//!    held only for this swap, never while reading or rewriting.
//! 6. The cleaner checkpoint moves to the end of the mapped range.
//!
//! At startup, [`complete_interrupted_swaps`] finishes a swap a crash interrupted: every
//! segment file in `[base, end)` goes and the `.swap` file becomes `<base>.log`, whose indexes
//! are then rebuilt. `.cleaned` files are deleted (`PartitionLog::open`).

mod offset_map;
mod records;
mod swap;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::log::batch::{check_batch, BatchIter, BatchView};
use crate::log::config::LogConfig;
use crate::log::partition_log::PartitionLog;
use crate::log::segment::LogSegment;
use crate::log::txn::AbortedIndex;
use offset_map::OffsetMap;
use records::{decode, records_section, Filter, TxnCleaning};
use swap::{clean_group, GroupParams};

pub use swap::{complete_interrupted_swaps, swap_file_name};

/// Broker-wide cleaner settings (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable` (true).
    pub enable: bool,
    /// `log.cleaner.dedupe.buffer.size` (128 MiB): the most memory one pass's offset map may
    /// take, at 24 bytes per key. A pass allocates only what its dirty section can need.
    pub dedupe_buffer_size: usize,
    /// `log.cleaner.io.buffer.load.factor` (0.9): how full the offset map may get.
    pub load_factor: f64,
    /// `log.cleaner.backoff.ms` (15000): the suggested pause between cleaning rounds.
    pub backoff_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            enable: true,
            dedupe_buffer_size: 128 << 20,
            load_factor: 0.9,
            backoff_ms: 15_000,
        }
    }
}

impl CleanerConfig {
    /// Reads Kafka's `log.cleaner.*` keys from the broker settings; missing keys keep Kafka's
    /// defaults.
    pub fn from_broker_settings(
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, String> {
        fn get<T: std::str::FromStr>(
            settings: &std::collections::BTreeMap<String, String>,
            key: &str,
            default: T,
        ) -> Result<T, String> {
            match settings.get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("Invalid value {v} for configuration {key}")),
            }
        }
        let d = Self::default();
        let c = Self {
            enable: get(settings, "log.cleaner.enable", d.enable)?,
            dedupe_buffer_size: get(
                settings,
                "log.cleaner.dedupe.buffer.size",
                d.dedupe_buffer_size,
            )?,
            load_factor: get(settings, "log.cleaner.io.buffer.load.factor", d.load_factor)?,
            backoff_ms: get(settings, "log.cleaner.backoff.ms", d.backoff_ms)?,
        };
        if c.dedupe_buffer_size < 1024 {
            return Err("log.cleaner.dedupe.buffer.size must be at least 1024 bytes".into());
        }
        if !(c.load_factor > 0.0 && c.load_factor <= 1.0) {
            return Err("log.cleaner.io.buffer.load.factor must be in (0, 1]".into());
        }
        Ok(c)
    }
}

/// The cleaner's per-log state, held in the `PartitionLog` for the length of a pass.
#[derive(Debug, Default)]
pub struct CleanerState {
    /// The earliest delete horizon of a tombstone the last pass kept: once it passes, the log
    /// is cleaned again even if it is not dirty (Kafka's `latestDeleteHorizon`).
    next_tombstone_expiry: Option<i64>,
    /// Set when the log cannot be cleaned (a corrupt batch, or a swap that failed after its
    /// commit point); cleaning resumes after the log is reopened.
    uncleanable: Option<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// A pass ran and the cleaner checkpoint moved to `end_offset`.
    pub cleaned: bool,
    /// Why no pass ran or why it stopped early, when it did.
    pub skipped: Option<&'static str>,
    pub dirty_ratio: f64,
    pub first_dirty_offset: i64,
    pub end_offset: i64,
    /// The offset map filled up before the end of the dirty section.
    pub map_full: bool,
    pub map_entries: usize,
    pub map_memory_bytes: usize,
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub batches_removed: u64,
}

/// Runs one cleaning pass over `log` at `now_ms`, never past `high_watermark`.
pub fn clean_once(
    log: &PartitionLog,
    high_watermark: i64,
    now_ms: i64,
    config: &CleanerConfig,
) -> io::Result<CleanStats> {
    clean_with(log, high_watermark, now_ms, config, Hooks::default())
}

/// The steps of a swap, for tests that simulate a crash after each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    CleanedWritten,
    SwapCommitted,
    OldPartlyDeleted,
    OldDeleted,
    IndexesRenamed,
    LogRenamed,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Hooks {
    /// Stop at this step as if the process died there: return at once, clean nothing up.
    pub crash_at: Option<Step>,
}

#[derive(Debug)]
struct SimulatedCrash;

impl std::fmt::Display for SimulatedCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated crash")
    }
}

impl std::error::Error for SimulatedCrash {}

impl Hooks {
    pub(super) fn reached(&self, step: Step) -> io::Result<()> {
        if self.crash_at == Some(step) {
            return Err(io::Error::other(SimulatedCrash));
        }
        Ok(())
    }
}

pub(super) fn is_simulated_crash(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<SimulatedCrash>())
}

pub(super) fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The largest record timestamp of a segment, or its file's modification time.
fn newest_ms(seg: &LogSegment) -> i64 {
    match seg.largest_timestamp() {
        ts if ts >= 0 => ts,
        _ => seg.last_modified_ms(),
    }
}

pub(crate) fn clean_with(
    log: &PartitionLog,
    high_watermark: i64,
    now_ms: i64,
    cleaner: &CleanerConfig,
    hooks: Hooks,
) -> io::Result<CleanStats> {
    let mut stats = CleanStats::default();
    let config = log.config();
    if !config.compact || !cleaner.enable {
        stats.skipped = Some("not a compacted log");
        return Ok(stats);
    }
    let Some(mut state) = log.cleaner.try_lock() else {
        stats.skipped = Some("already being cleaned");
        return Ok(stats);
    };
    if state.uncleanable.is_some() {
        stats.skipped = Some("marked uncleanable");
        return Ok(stats);
    }
    let truncations = log.truncation_count();
    let Some(pass) = Pass::plan(log, &config, high_watermark, now_ms) else {
        return Ok(stats);
    };
    stats.first_dirty_offset = pass.first_dirty;
    stats.end_offset = pass.first_dirty;
    if !pass.due(&config, &state, now_ms, &mut stats) {
        stats.skipped = Some("not dirty enough");
        return Ok(stats);
    }
    let aborted = log.aborted_snapshot();
    let (mut map, mapped) = pass.offset_map(cleaner, &aborted);
    let map_end = match mapped {
        Ok(end) => end,
        Err(e) => return invalid_data(log, truncations, &mut state, stats, e),
    };
    stats.map_full = map_end < pass.first_uncleanable;
    stats.map_entries = map.len();
    stats.map_memory_bytes = map.memory_bytes();
    stats.end_offset = map_end;
    let last_of_producer = last_batch_of_each_producer(&pass.segments);
    let mut filter = Filter {
        map: &mut map,
        map_end,
        now_ms,
        delete_retention_ms: config.delete_retention_ms,
        last_of_producer: &last_of_producer,
        next_expiry: None,
        stats: &mut stats,
        txns: TxnCleaning::new(aborted),
    };
    // Segments to rewrite: from the log start to the end of the mapped range, in groups that
    // fit one segment.
    for (start, end) in pass.groups(map_end, &config) {
        let params = GroupParams {
            dir: log.dir(),
            end: pass.ends[end - 1],
            index_bytes: config.segment_index_bytes,
            index_interval: config.index_interval_bytes,
            now_ms,
            hooks,
            truncations,
        };
        match clean_group(log, &pass.segments[start..end], &params, &mut filter) {
            Ok(true) => {}
            Ok(false) => {
                filter.stats.skipped = Some("segments changed during the pass");
                return Ok(stats);
            }
            Err(e) if is_simulated_crash(&e) => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return invalid_data(log, truncations, &mut state, stats, e);
            }
            Err(e) => return Err(e),
        }
    }
    let next_expiry = filter.next_expiry;
    log.set_cleaner_checkpoint(map_end);
    state.next_tombstone_expiry = next_expiry;
    stats.cleaned = true;
    Ok(stats)
}

/// One cleaning pass's view of the log: its segments as they were when the pass began, and
/// where the dirty section starts and the uncleanable part begins.
struct Pass {
    segments: Vec<Arc<LogSegment>>,
    /// Where each segment ends: the next segment's base offset (or the log end offset).
    ends: Vec<i64>,
    /// Segments that may be cleaned: all but the active one.
    inactive: usize,
    first_dirty: i64,
    first_uncleanable: i64,
}

impl Pass {
    /// The dirty section runs from the cleaner checkpoint to the first uncleanable offset:
    /// the smallest of the high watermark, the active segment's base offset and the first
    /// segment holding a record newer than `min.compaction.lag.ms`.
    fn plan(
        log: &PartitionLog,
        config: &LogConfig,
        high_watermark: i64,
        now_ms: i64,
    ) -> Option<Self> {
        let segments = log.segments_snapshot();
        let log_start = log.log_start_offset();
        let log_end = log.log_end_offset();
        let active = segments.last()?.base_offset();
        let ends: Vec<i64> = (0..segments.len())
            .map(|i| {
                segments
                    .get(i + 1)
                    .map(|s| s.base_offset())
                    .unwrap_or(log_end)
            })
            .collect();
        let inactive = segments.len() - 1;
        let first_dirty = match log.cleaner_checkpoint() {
            Some(c) if c >= log_start && c <= log_end => c,
            _ => log_start,
        };
        let mut first_uncleanable = high_watermark.min(active);
        if config.min_compaction_lag_ms > 0 {
            let newest_allowed = now_ms.saturating_sub(config.min_compaction_lag_ms);
            if let Some(seg) = (0..inactive)
                .filter(|&i| ends[i] > first_dirty)
                .map(|i| &segments[i])
                .find(|s| newest_ms(s) > newest_allowed)
            {
                first_uncleanable = first_uncleanable.min(seg.base_offset());
            }
        }
        Some(Self {
            first_uncleanable: first_uncleanable.max(first_dirty),
            segments,
            ends,
            inactive,
            first_dirty,
        })
    }

    /// Whether the log is due: its dirty ratio reaches `min.cleanable.dirty.ratio`, a dirty
    /// segment is older than `max.compaction.lag.ms`, or kept tombstones have expired.
    fn due(
        &self,
        config: &LogConfig,
        state: &CleanerState,
        now_ms: i64,
        stats: &mut CleanStats,
    ) -> bool {
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut earliest_dirty_ms = i64::MAX;
        for (seg, &end) in self.segments[..self.inactive].iter().zip(&self.ends) {
            if end <= self.first_dirty {
                clean_bytes += seg.size() as u64;
            } else if seg.base_offset() < self.first_uncleanable {
                dirty_bytes += seg.size() as u64;
            }
            if end > self.first_dirty {
                if let Some(first) = seg.batches_from(0).next() {
                    if first.max_timestamp > 0 {
                        earliest_dirty_ms = earliest_dirty_ms.min(first.max_timestamp);
                    }
                }
            }
        }
        let total = clean_bytes + dirty_bytes;
        stats.dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        let ratio_due = dirty_bytes > 0 && stats.dirty_ratio >= config.min_cleanable_dirty_ratio;
        let lag_due = dirty_bytes > 0
            && earliest_dirty_ms < now_ms.saturating_sub(config.max_compaction_lag_ms);
        let tombstones_due = state.next_tombstone_expiry.is_some_and(|h| h <= now_ms);
        ratio_due || lag_due || tombstones_due
    }

    /// The offset map over the dirty section, sized for the records it can hold at most, and
    /// the offset up to which it maps (less than the dirty section when it fills up).
    fn offset_map(
        &self,
        cleaner: &CleanerConfig,
        aborted: &AbortedIndex,
    ) -> (OffsetMap, io::Result<i64>) {
        let dirty: Vec<&Arc<LogSegment>> = (0..self.inactive)
            .filter(|&i| {
                self.ends[i] > self.first_dirty
                    && self.segments[i].base_offset() < self.first_uncleanable
            })
            .map(|i| &self.segments[i])
            .collect();
        let mut estimate = 0u64;
        for seg in &dirty {
            for (_, b) in BatchIter::new(seg.bytes()) {
                if b.last_offset() >= self.first_dirty && b.base_offset() < self.first_uncleanable {
                    estimate += b.records_count().max(0) as u64;
                }
            }
        }
        let max_slots = OffsetMap::slots_for_memory(cleaner.dedupe_buffer_size);
        let wanted = (estimate as f64 / cleaner.load_factor).ceil() as usize + 1;
        let mut map = OffsetMap::with_slots(wanted.min(max_slots), cleaner.load_factor);
        let mapped = build_offset_map(
            &dirty,
            self.first_dirty,
            self.first_uncleanable,
            aborted,
            &mut map,
        );
        (map, mapped)
    }

    /// The segments below `map_end`, as (start, end) index ranges of consecutive segments that
    /// fit one segment of `segment.bytes` (and offsets relative to the first).
    fn groups(&self, map_end: i64, config: &LogConfig) -> Vec<(usize, usize)> {
        let count = (0..self.inactive)
            .take_while(|&i| self.segments[i].base_offset() < map_end)
            .count();
        let mut groups = Vec::new();
        let mut i = 0;
        while i < count {
            let start = i;
            let mut size = self.segments[i].size();
            i += 1;
            while i < count
                && size + self.segments[i].size() <= config.segment_bytes
                && self.segments[start].can_hold_offset(self.ends[i] - 1)
            {
                size += self.segments[i].size();
                i += 1;
            }
            groups.push((start, i));
        }
        groups
    }
}

/// The last batch of every producer id, which stays even when emptied (producer state).
fn last_batch_of_each_producer(segments: &[Arc<LogSegment>]) -> HashMap<i64, i64> {
    let mut last_of_producer: HashMap<i64, i64> = HashMap::new();
    for seg in segments {
        for (_, b) in BatchIter::new(seg.bytes()) {
            if b.producer_id() >= 0 && !b.is_control() {
                let last = last_of_producer.entry(b.producer_id()).or_insert(i64::MIN);
                *last = (*last).max(b.last_offset());
            }
        }
    }
    last_of_producer
}

/// Marks the log uncleanable after an invalid batch, unless the log's tail was truncated
/// during the pass (a follower's truncation zeroes bytes the pass may have been reading): then
/// the pass just stops.
fn invalid_data(
    log: &PartitionLog,
    truncations: u64,
    state: &mut CleanerState,
    stats: CleanStats,
    e: io::Error,
) -> io::Result<CleanStats> {
    if log.truncation_count() != truncations {
        return Ok(CleanStats {
            cleaned: false,
            skipped: Some("the log was truncated during the pass"),
            ..stats
        });
    }
    Err(mark_uncleanable(state, e))
}

fn mark_uncleanable(state: &mut CleanerState, e: io::Error) -> io::Error {
    tracing::error!(error = %e, "log marked uncleanable until it is reopened");
    state.uncleanable = Some(e.to_string());
    e
}

/// Checks the CRC of every batch it yields; a mismatch is disk corruption.
pub(super) fn checked_batches(
    seg: &LogSegment,
) -> impl Iterator<Item = io::Result<(usize, BatchView<'_>)>> {
    BatchIter::new(seg.bytes()).map(move |(pos, b)| match check_batch(b.as_bytes()) {
        Ok(v) => Ok((pos, v)),
        Err(e) => Err(corrupt(format!(
            "segment {}: batch at position {pos}: {e}",
            seg.base_offset()
        ))),
    })
}

/// Maps every keyed record in `[first_dirty, first_uncleanable)` to its latest offset, until
/// the map is full; records of aborted transactions are not mapped (they never were values).
/// Returns the end of the mapped range.
fn build_offset_map(
    dirty: &[&Arc<LogSegment>],
    first_dirty: i64,
    first_uncleanable: i64,
    aborted: &AbortedIndex,
    map: &mut OffsetMap,
) -> io::Result<i64> {
    for seg in dirty {
        for item in checked_batches(seg) {
            let (_, b) = item?;
            if b.last_offset() < first_dirty || b.is_control() {
                continue;
            }
            if b.is_transactional()
                && aborted
                    .containing(b.producer_id(), b.base_offset())
                    .is_some()
            {
                continue;
            }
            if b.base_offset() >= first_uncleanable {
                return Ok(first_uncleanable);
            }
            let Ok(data) = records_section(&b) else {
                continue;
            };
            let Some(records) = decode(&b, &data) else {
                continue;
            };
            for r in records {
                let offset = b.base_offset() + r.offset_delta;
                if offset < first_dirty {
                    continue;
                }
                if offset >= first_uncleanable {
                    return Ok(first_uncleanable);
                }
                if let Some(key) = r.key {
                    if !map.put(key, offset) {
                        // Full: clean up to here; the next pass starts at this record.
                        return Ok(offset);
                    }
                }
            }
        }
    }
    Ok(first_uncleanable)
}
