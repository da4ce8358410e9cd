//! The log cleaner's output side: writing a cleaned segment next to the ones it replaces, the
//! swap under the partition's writer lock, and the completion of a swap a crash interrupted.
//! The sequence and its crash rules are described in `cleaner.rs`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::records::{Filter, Outcome};
use super::{checked_batches, corrupt, is_simulated_crash, Hooks, Step};
use crate::durable::sync_dir;
use crate::log::batch::{check_batch, BatchIter};
use crate::log::partition_log::PartitionLog;
use crate::log::segment::{file_name, LogSegment};

pub(super) struct GroupParams<'a> {
    pub dir: &'a Path,
    /// Where the group's segments end: the base offset of the segment after them.
    pub end: i64,
    pub index_bytes: usize,
    pub index_interval: usize,
    pub now_ms: i64,
    pub hooks: Hooks,
    /// The log's truncation count when the pass took its segment snapshot.
    pub truncations: u64,
}

/// The name of a committed swap: the cleaned segment's base offset and where the segments it
/// replaces end.
pub fn swap_file_name(base: i64, end: i64) -> String {
    format!("{base:020}.log.{end:020}.swap")
}

fn parse_swap_file_name(name: &str) -> Option<(i64, i64)> {
    let (base, end) = name.strip_suffix(".swap")?.split_once(".log.")?;
    let base: i64 = base.parse().ok()?;
    let end: i64 = end.parse().ok()?;
    (base >= 0 && end > base).then_some((base, end))
}

const CLEANED: &str = ".cleaned";

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_cleaned_files(dir: &Path, base: i64) -> io::Result<()> {
    for ext in [".log", ".index", ".timeindex"] {
        remove_if_present(&dir.join(file_name(base, ext) + CLEANED))?;
    }
    Ok(())
}

/// Appends one batch to the cleaned segment, refusing what would break its invariants.
fn append_batch(out: &LogSegment, bytes: &[u8], next: &mut i64, interval: usize) -> io::Result<()> {
    let view = check_batch(bytes).map_err(|e| corrupt(format!("rewritten batch: {e}")))?;
    if view.base_offset() < *next
        || view.last_offset() < view.base_offset()
        || !out.can_hold_offset(view.last_offset())
    {
        return Err(corrupt(format!(
            "batch at offset {} out of order in the cleaned segment {}",
            view.base_offset(),
            out.base_offset()
        )));
    }
    if out.size() + bytes.len() > out.capacity() {
        return Err(io::Error::other("the cleaned segment outgrew its capacity"));
    }
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&bytes[..16]);
    out.append(
        &prefix,
        &bytes[16..],
        view.last_offset(),
        view.max_timestamp(),
        interval,
    )?;
    *next = view.last_offset() + 1;
    Ok(())
}

/// Cleans one group of consecutive segments into one and swaps it in. Returns false when the
/// log changed underneath (nothing was swapped).
pub(super) fn clean_group(
    log: &PartitionLog,
    group: &[Arc<LogSegment>],
    p: &GroupParams<'_>,
    filter: &mut Filter<'_>,
) -> io::Result<bool> {
    let base = group[0].base_offset();
    let input: usize = group.iter().map(|s| s.size()).sum();
    filter.stats.segments_read += group.len();
    filter.stats.bytes_read += input as u64;
    remove_cleaned_files(p.dir, base)?;
    let result = write_and_swap(log, group, p, filter);
    match &result {
        Err(e) if is_simulated_crash(e) => {}
        Err(_) | Ok(false) => remove_cleaned_files(p.dir, base)?,
        Ok(true) => {}
    }
    result
}

fn write_and_swap(
    log: &PartitionLog,
    group: &[Arc<LogSegment>],
    p: &GroupParams<'_>,
    filter: &mut Filter<'_>,
) -> io::Result<bool> {
    let base = group[0].base_offset();
    let input: usize = group.iter().map(|s| s.size()).sum();
    // Re-compression can grow a batch a little; the mapping is only address space.
    let capacity = input.saturating_mul(2).max(1 << 20);
    let open = || {
        LogSegment::open_with_suffix(
            p.dir,
            base,
            CLEANED,
            capacity,
            p.index_bytes,
            true,
            p.now_ms,
        )
    };
    // A lone segment that nothing changes is left alone; it is written only from the first
    // batch that changes.
    let mut out: Option<LogSegment> = if group.len() > 1 { Some(open()?) } else { None };
    let mut next = i64::MIN;
    for seg in group {
        for item in checked_batches(seg) {
            let (pos, view) = item?;
            let outcome = filter.batch(&view);
            if matches!(outcome, Outcome::Verbatim) {
                if let Some(out) = &out {
                    append_batch(out, view.as_bytes(), &mut next, p.index_interval)?;
                }
                continue;
            }
            if out.is_none() {
                let fresh = open()?;
                for (_, earlier) in BatchIter::new(&seg.bytes()[..pos]) {
                    append_batch(&fresh, earlier.as_bytes(), &mut next, p.index_interval)?;
                }
                out = Some(fresh);
            }
            if let (Outcome::Rewritten(bytes), Some(out)) = (&outcome, &out) {
                append_batch(out, bytes, &mut next, p.index_interval)?;
            }
        }
    }
    let Some(mut out) = out else {
        return Ok(true);
    };
    out.seal()?;
    let newest_mtime = group
        .iter()
        .map(|s| s.last_modified_ms())
        .max()
        .unwrap_or(p.now_ms);
    out.set_last_modified(newest_mtime)?;
    out.sync_all()?;
    filter.stats.bytes_written += out.size() as u64;
    p.hooks.reached(Step::CleanedWritten)?;

    let dir = p.dir;
    let named = |ext: &str| dir.join(file_name(base, ext));
    let cleaned = |ext: &str| dir.join(file_name(base, ext) + CLEANED);
    let swap = dir.join(swap_file_name(base, p.end));
    let mut committed = false;
    let swapped = log.replace_segments(group, p.truncations, || {
        std::fs::rename(cleaned(".log"), &swap)?;
        sync_dir(dir)?;
        committed = true;
        p.hooks.reached(Step::SwapCommitted)?;
        for (i, old) in group.iter().enumerate() {
            old.delete_files()?;
            if i == 0 {
                p.hooks.reached(Step::OldPartlyDeleted)?;
            }
        }
        sync_dir(dir)?;
        p.hooks.reached(Step::OldDeleted)?;
        std::fs::rename(cleaned(".index"), named(".index"))?;
        std::fs::rename(cleaned(".timeindex"), named(".timeindex"))?;
        p.hooks.reached(Step::IndexesRenamed)?;
        std::fs::rename(&swap, named(".log"))?;
        p.hooks.reached(Step::LogRenamed)?;
        out.set_log_path(named(".log"));
        // The replaced segments' aborted-transaction entries now belong to the cleaned one.
        log.write_txn_index_for(base, p.end)?;
        Ok(out)
    });
    match swapped {
        Err(e) if committed && !is_simulated_crash(&e) => {
            // The swap completes at the next start; until then the old segments serve reads
            // and the log is not cleaned again (InvalidData marks it uncleanable).
            Err(corrupt(format!(
                "swap of segment {base} failed after its commit point: {e}"
            )))
        }
        Err(e) => Err(e),
        Ok(done) => {
            if done {
                filter.stats.segments_written += 1;
            }
            Ok(done)
        }
    }
}

/// Finishes cleaner swaps a crash interrupted, before a partition log is opened: for each
/// `<base>.log.<end>.swap`, every segment file with a base offset in `[base, end)` is deleted
/// and the swap file becomes `<base>.log`. Returns the base offsets of those segments, whose
/// indexes must be rebuilt.
pub fn complete_interrupted_swaps(dir: &Path) -> io::Result<Vec<i64>> {
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some((base, end)) = parse_swap_file_name(&name.to_string_lossy()) {
            swaps.push((base, end));
        }
    }
    if swaps.is_empty() {
        return Ok(Vec::new());
    }
    swaps.sort_unstable();
    let mut done = Vec::new();
    for (base, end) in swaps {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            for ext in [".log", ".index", ".timeindex", ".txnindex"] {
                let Some(stem) = name.strip_suffix(ext) else {
                    continue;
                };
                if stem.len() != 20 {
                    continue;
                }
                if let Ok(b) = stem.parse::<i64>() {
                    if (base..end).contains(&b) {
                        std::fs::remove_file(dir.join(name.as_ref()))?;
                    }
                }
            }
        }
        std::fs::rename(
            dir.join(swap_file_name(base, end)),
            dir.join(file_name(base, ".log")),
        )?;
        tracing::info!(dir = %dir.display(), base, end, "completed an interrupted log cleaner swap");
        done.push(base);
    }
    sync_dir(dir)?;
    Ok(done)
}
