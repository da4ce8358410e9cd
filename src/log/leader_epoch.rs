//! The leader epoch cache: for each leader epoch, the first offset written in it. Answers
//! OffsetForLeaderEpoch ("where does epoch E end?") and lets followers truncate divergent
//! tails. Persisted in Kafka's `leader-epoch-checkpoint` format (version, count, then
//! `epoch start-offset` lines) in the partition directory, rewritten atomically on change.
//!
//! The checkpoint is only trusted after a clean shutdown (otherwise it is rebuilt from the
//! batches' epochs), so changes are not fsynced one by one: `sync` makes the latest one
//! durable when the log is closed. Restarting 600 idle partitions no longer costs 600 fsyncs.

use std::io;
use std::path::{Path, PathBuf};

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Offset and epoch Kafka reports when an epoch is unknown.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
    /// Written since the last `sync`.
    unsynced: bool,
}

impl LeaderEpochCache {
    /// Loads the checkpoint (a missing or malformed one yields an empty cache, which the caller
    /// rebuilds from the log).
    pub fn load(dir: &Path) -> (Self, bool) {
        let path = dir.join(CHECKPOINT_FILE);
        let parsed = std::fs::read_to_string(&path).ok().and_then(|t| parse(&t));
        let found = parsed.is_some();
        (
            Self {
                path,
                entries: parsed.unwrap_or_default(),
                unsynced: false,
            },
            found,
        )
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `offset`, if it is newer than the latest epoch. Earlier
    /// epochs that start at or after `offset` held no records and are dropped, as Kafka's
    /// `LeaderEpochFileCache.assign` does (each restart bumps the epoch of an idle partition).
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(last, _)) if epoch <= last => false,
            _ => {
                self.entries.retain(|(_, start)| *start < offset);
                self.entries.push((epoch, offset));
                true
            }
        }
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the largest epoch <= `requested` and the
    /// offset where it ends (the start of the next epoch, or the log end offset for the
    /// latest epoch). An epoch newer than any known is undefined; one older than the first
    /// known ends where the first known starts.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(&(_, higher_start)) = self.entries.iter().find(|(e, _)| *e > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|(e, _)| *e <= requested) {
            Some(&(floor, _)) => (floor, higher_start),
            None => (requested, higher_start),
        }
    }

    /// Drops epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < offset);
        before != self.entries.len()
    }

    /// Moves the first epoch's start up to the new log start offset, dropping older ones.
    pub fn truncate_from_start(&mut self, offset: i64) -> bool {
        let Some(keep_from) = self.entries.iter().rposition(|(_, start)| *start <= offset) else {
            return false;
        };
        let changed = keep_from > 0 || self.entries[keep_from].1 != offset;
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            first.1 = offset;
        }
        changed
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Rewrites the checkpoint (atomically, by rename; durable only after `sync`).
    pub fn persist(&mut self) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, offset) in &self.entries {
            text.push_str(&format!("{epoch} {offset}\n"));
        }
        crate::durable::replace_deferred(&self.path, text.as_bytes())?;
        self.unsynced = true;
        Ok(())
    }

    /// Makes the last `persist` durable (file and directory entry).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            crate::durable::sync(&self.path)?;
            self.unsynced = false;
        }
        Ok(())
    }
}

fn parse(text: &str) -> Option<Vec<(i32, i64)>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out: Vec<(i32, i64)> = Vec::with_capacity(count.min(1024));
    for line in lines.take(count) {
        let (e, o) = line.trim().split_once(' ')?;
        let entry = (e.parse().ok()?, o.parse().ok()?);
        if out.last().is_some_and(|l| l.0 >= entry.0 || l.1 > entry.1) {
            return None;
        }
        out.push(entry);
    }
    (out.len() == count).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut c, found) = LeaderEpochCache::load(dir.path());
        assert!(!found);
        assert_eq!(c.end_offset_for(0, 10), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5));
        assert!(c.assign(2, 10));
        assert!(c.assign(5, 20));
        assert_eq!(c.end_offset_for(0, 30), (0, 10));
        assert_eq!(c.end_offset_for(1, 30), (0, 10));
        assert_eq!(c.end_offset_for(4, 30), (2, 20));
        assert_eq!(c.end_offset_for(5, 30), (5, 30));
        assert_eq!(c.end_offset_for(9, 30), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        c.persist().expect("persist");
        let (loaded, found) = LeaderEpochCache::load(dir.path());
        assert!(found);
        assert_eq!(loaded.entries(), c.entries());
        assert!(c.truncate_from_end(20));
        assert_eq!(c.latest_epoch(), Some(2));
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(2, 12)]);
        // Epochs that never wrote (restarts of an idle partition) do not pile up.
        assert!(c.assign(3, 30));
        assert!(c.assign(4, 30));
        assert!(c.assign(6, 30));
        assert_eq!(c.entries(), &[(2, 12), (6, 30)]);
    }
}
