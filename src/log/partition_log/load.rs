//! Opening a partition log, as Kafka's `LogLoader` does: finish an interrupted cleaner swap,
//! find the segments, re-validate those a crash may have torn (from the recovery point on),
//! cut a torn tail, rebuild indexes and leader epochs that cannot be trusted, and replay the
//! batch headers into producer state.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{OwedIo, PartitionLog, WriterState};
use crate::log::batch::BatchIter;
use crate::log::cleaner::CleanerState;
use crate::log::config::LogConfig;
use crate::log::flusher::LogFlusher;
use crate::log::leader_epoch::LeaderEpochCache;
use crate::log::producer_state::ProducerStateManager;
use crate::log::segment::{file_name, LogSegment};

/// The segments found on disk and where the log ends.
struct Loaded {
    segments: BTreeMap<i64, Arc<LogSegment>>,
    log_end: i64,
}

impl PartitionLog {
    /// Opens (or creates) a partition directory. With `clean` false, every segment from the
    /// one holding `recovery_point` on is re-validated, indexes are rebuilt and a torn tail is
    /// truncated. Disk work of later appends runs inline (see [`Self::open_with_flusher`]).
    pub fn open(
        dir: &Path,
        config: Arc<LogConfig>,
        recovery_point: i64,
        log_start_checkpoint: i64,
        clean: bool,
        now_ms: i64,
    ) -> io::Result<Arc<Self>> {
        Self::open_with_flusher(
            dir,
            config,
            recovery_point,
            log_start_checkpoint,
            clean,
            now_ms,
            None,
        )
    }

    /// Like [`Self::open`]; fsyncs and segment seals owed by appends go to `flusher`.
    pub fn open_with_flusher(
        dir: &Path,
        config: Arc<LogConfig>,
        recovery_point: i64,
        log_start_checkpoint: i64,
        clean: bool,
        now_ms: i64,
        flusher: Option<Arc<LogFlusher>>,
    ) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        // A cleaner swap interrupted by a crash is completed first; the segments it produced
        // get their indexes rebuilt below.
        let swapped = crate::log::cleaner::complete_interrupted_swaps(dir)?;
        let bases = segment_bases(dir, log_start_checkpoint)?;
        let loaded = load_segments(
            dir,
            &config,
            &bases,
            &swapped,
            recovery_point,
            clean,
            now_ms,
        )?;
        let first_base = *loaded.segments.keys().next().expect("a segment");
        let log_end = loaded.log_end;
        let log_start = log_start_checkpoint.max(first_base).min(log_end);
        let epochs = load_epochs(dir, &loaded.segments, clean, log_start, log_end)?;
        let log = Arc::new_cyclic(|me| Self {
            dir: dir.to_path_buf(),
            me: me.clone(),
            config: arc_swap::ArcSwap::new(config),
            segments: RwLock::new(loaded.segments),
            writer: Mutex::new(WriterState {
                unflushed_messages: 0,
                last_flush_ms: now_ms,
                producers: ProducerStateManager::default(),
            }),
            log_start_offset: AtomicI64::new(log_start),
            log_end_offset: AtomicI64::new(log_end),
            recovery_point: AtomicI64::new(if clean {
                log_end
            } else {
                recovery_point.min(log_end)
            }),
            epochs: Mutex::new(epochs),
            cleaner_checkpoint: AtomicI64::new(-1),
            cleaner: Mutex::new(CleanerState::default()),
            truncations: AtomicU64::new(0),
            flusher,
            owed: Mutex::new(OwedIo::default()),
            durable: tokio::sync::Notify::new(),
            io_failed: AtomicBool::new(false),
            aborted: Mutex::new(Default::default()),
            first_unstable: AtomicI64::new(i64::MAX),
            first_unreplicated_marker: AtomicI64::new(i64::MAX),
        });
        log.check_offsets();
        {
            let mut writer = log.writer.lock();
            log.rebuild_producer_state(&mut writer, now_ms);
        }
        if !clean {
            log.flush()?;
        }
        Ok(log)
    }
}

/// The base offsets of the segments in `dir`, oldest first, after removing leftovers (files
/// of a half-deleted or half-cleaned segment, indexes without a log). An empty directory gets
/// one segment at the log start checkpoint.
fn segment_bases(dir: &Path, log_start_checkpoint: i64) -> io::Result<Vec<i64>> {
    let mut bases: Vec<i64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        } else if name.ends_with(".deleted") || name.ends_with(".cleaned") {
            let _ = std::fs::remove_file(dir.join(name.as_ref()));
        }
    }
    bases.sort_unstable();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        for suffix in [".index", ".timeindex", ".txnindex"] {
            if let Some(stem) = name.strip_suffix(suffix) {
                if let Ok(base) = stem.parse::<i64>() {
                    if bases.binary_search(&base).is_err() {
                        let _ = std::fs::remove_file(dir.join(name.as_ref()));
                    }
                }
            }
        }
    }
    if bases.is_empty() {
        bases.push(log_start_checkpoint.max(0));
    }
    Ok(bases)
}

/// Opens every segment, recovering those at or after the recovery point when the shutdown was
/// not clean. A torn segment that is not the last ends the log: the segments after it are
/// deleted. The last remaining segment is the active one, opened writable.
fn load_segments(
    dir: &Path,
    config: &LogConfig,
    bases: &[i64],
    swapped: &[i64],
    recovery_point: i64,
    clean: bool,
    now_ms: i64,
) -> io::Result<Loaded> {
    let mut segments = BTreeMap::new();
    let last = *bases.last().expect("at least one segment");
    let mut next_offset: Option<i64> = None;
    let mut truncated_at: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let active = base == last;
        let capacity = if active { config.segment_bytes } else { 0 };
        let needs_recovery = swapped.contains(&base)
            || (!clean && bases.get(i + 1).is_none_or(|n| *n > recovery_point));
        // A segment being recovered gets writable indexes so that the rebuild is not
        // limited by the size of the index files found (a swapped-in segment has none).
        let seg = LogSegment::open(
            dir,
            base,
            capacity,
            config.segment_index_bytes,
            active || needs_recovery,
            now_ms,
        )?;
        if needs_recovery {
            let before = seg.size();
            let end = seg.recover(config.index_interval_bytes)?;
            if !active {
                seg.seal()?;
            }
            if let Some(end) = end {
                next_offset = Some(end);
            }
            if seg.size() < before && !active {
                // A torn segment that is not the last: everything after it is suspect.
                segments.insert(base, Arc::new(seg));
                truncated_at = Some(i);
                break;
            }
        } else if let Some(end) = seg.next_offset() {
            next_offset = Some(end);
        }
        segments.insert(base, Arc::new(seg));
    }
    if let Some(i) = truncated_at {
        for &base in &bases[i + 1..] {
            for suffix in [".log", ".index", ".timeindex", ".txnindex"] {
                let _ = std::fs::remove_file(dir.join(file_name(base, suffix)));
            }
        }
    }
    // The last remaining segment becomes the active one; reopen it writable if it was
    // opened sealed because later segments were dropped.
    let (&last_base, last_seg) = segments.iter().next_back().expect("segment");
    if last_seg.capacity() < config.segment_bytes && last_base != last {
        let seg = LogSegment::open(
            dir,
            last_base,
            config.segment_bytes,
            config.segment_index_bytes,
            true,
            now_ms,
        )?;
        segments.insert(last_base, Arc::new(seg));
    }
    Ok(Loaded {
        log_end: next_offset.unwrap_or(last_base).max(last_base),
        segments,
    })
}

/// The leader epoch cache: the checkpoint as written at a clean shutdown, else rebuilt from
/// the epochs in the batch headers.
fn load_epochs(
    dir: &Path,
    segments: &BTreeMap<i64, Arc<LogSegment>>,
    clean: bool,
    log_start: i64,
    log_end: i64,
) -> io::Result<LeaderEpochCache> {
    let (mut epochs, found) = LeaderEpochCache::load(dir);
    let mut changed = if clean && found {
        // An epoch that starts right at the log end (a leadership that has not written
        // yet) stays: dropping it only to assign it again would rewrite the checkpoint of
        // every partition at every start. A follower drops it when its leader says so.
        epochs.truncate_from_end(log_end + 1)
    } else {
        epochs.clear();
        for seg in segments.values() {
            for (_, b) in BatchIter::new(seg.bytes()) {
                epochs.assign(b.partition_leader_epoch(), b.base_offset());
            }
        }
        true
    };
    changed |= epochs.truncate_from_start(log_start);
    if changed {
        epochs.persist()?;
    }
    Ok(epochs)
}
