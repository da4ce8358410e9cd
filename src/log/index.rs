//! OffsetIndex and TimeIndex: sparse, memory-mapped, preallocated index files in Kafka's format.
//!
//! Both are caches that recovery can rebuild from the `.log` file. Entries are big-endian, as in
//! Kafka. The offset index maps a batch's *last* offset (relative to the segment's base offset)
//! to the file position where that batch starts; the time index maps the largest timestamp seen
//! so far to the last offset of the batch that carried it. The active segment's index files are
//! preallocated to `segment.index.bytes` and trimmed to their entries when sealed or closed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

/// The shape of one fixed-size index entry.
pub trait IndexEntry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, bytes: &mut [u8]);
    /// The value entries are sorted by and searched with.
    fn key(&self) -> i64;
}

/// An offset index entry, with the offset made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetPosition {
    const SIZE: usize = 8;
    fn read(b: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn write(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        b[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn key(&self) -> i64 {
        self.relative_offset as i64
    }
}

/// A time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimestampOffset {
    const SIZE: usize = 12;
    fn read(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn write(&self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn key(&self) -> i64 {
        self.timestamp
    }
}

/// A sorted, append-only index file of fixed-size entries behind a mutable mapping.
pub struct Index<E: IndexEntry> {
    path: PathBuf,
    file: File,
    /// `None` only while the file has zero length (a sealed, empty index).
    mmap: Option<MmapMut>,
    entries: usize,
    max_entries: usize,
    _entry: std::marker::PhantomData<E>,
}

pub type OffsetIndex = Index<OffsetPosition>;
pub type TimeIndex = Index<TimestampOffset>;

impl<E: IndexEntry> Index<E> {
    /// Opens (or creates) an index file. `entries` is how many leading entries are valid:
    /// `None` trusts the file length (a trimmed file from a clean shutdown). The file is then
    /// sized to `max_bytes` (rounded down to whole entries) when `writable`, or trimmed to its
    /// entries otherwise.
    pub fn open(
        path: &Path,
        entries: Option<usize>,
        max_bytes: usize,
        writable: bool,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len() as usize;
        let entries = entries.unwrap_or(len / E::SIZE).min(len / E::SIZE);
        let max_entries = if writable {
            (max_bytes / E::SIZE).max(entries)
        } else {
            entries
        };
        let mut index = Self {
            path: path.to_path_buf(),
            file,
            mmap: None,
            entries,
            max_entries,
            _entry: std::marker::PhantomData,
        };
        index.resize(max_entries * E::SIZE)?;
        Ok(index)
    }

    fn resize(&mut self, bytes: usize) -> io::Result<()> {
        self.mmap = None;
        self.file.set_len(bytes as u64)?;
        if bytes > 0 {
            // SAFETY: the file is owned by this index and only resized through it.
            self.mmap = Some(unsafe { MmapOptions::new().len(bytes).map_mut(&self.file)? });
        }
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    pub fn entry(&self, n: usize) -> E {
        assert!(n < self.entries, "index entry {n} out of {}", self.entries);
        let map = self.mmap.as_ref().expect("non-empty index has a mapping");
        E::read(&map[n * E::SIZE..(n + 1) * E::SIZE])
    }

    pub fn last_entry(&self) -> Option<E> {
        (self.entries > 0).then(|| self.entry(self.entries - 1))
    }

    /// Appends an entry. Keys must not decrease; returns false when the index is full.
    pub fn append(&mut self, entry: E) -> bool {
        if self.is_full() {
            return false;
        }
        if let Some(last) = self.last_entry() {
            assert!(
                entry.key() >= last.key(),
                "index entries out of order in {}: {last:?} then {entry:?}",
                self.path.display()
            );
        }
        let at = self.entries * E::SIZE;
        let map = self.mmap.as_mut().expect("writable index has a mapping");
        entry.write(&mut map[at..at + E::SIZE]);
        self.entries += 1;
        true
    }

    /// The last entry whose key is <= `key`, if any.
    pub fn floor(&self, key: i64) -> Option<E> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).key() <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo > 0).then(|| self.entry(lo - 1))
    }

    /// Drops every entry for which `keep` is false, from the first such entry on.
    pub fn truncate_where(&mut self, keep: impl Fn(&E) -> bool) {
        let mut n = self.entries;
        while n > 0 && !keep(&self.entry(n - 1)) {
            n -= 1;
        }
        self.entries = n;
    }

    pub fn clear(&mut self) {
        self.entries = 0;
    }

    /// Shrinks the file to exactly its entries (sealing a segment, or a clean close).
    pub fn trim(&mut self) -> io::Result<()> {
        self.flush()?;
        self.max_entries = self.entries;
        self.resize(self.entries * E::SIZE)
    }

    pub fn flush(&self) -> io::Result<()> {
        match &self.mmap {
            Some(map) => map.flush(),
            None => Ok(()),
        }
    }

    /// Flushes the entries and fsyncs the file, its length included.
    pub fn sync(&self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_floor_trim_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let mut idx = OffsetIndex::open(&path, Some(0), 80, true).expect("open");
        assert_eq!(idx.floor(5), None);
        for (o, p) in [(3u32, 0u32), (7, 100), (12, 250)] {
            assert!(idx.append(OffsetPosition {
                relative_offset: o,
                position: p
            }));
        }
        assert_eq!(idx.floor(2), None);
        assert_eq!(idx.floor(7).map(|e| e.position), Some(100));
        assert_eq!(idx.floor(11).map(|e| e.position), Some(100));
        assert_eq!(idx.floor(1000).map(|e| e.position), Some(250));
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 80);
        idx.trim().expect("trim");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 24);
        drop(idx);
        let idx = OffsetIndex::open(&path, None, 80, false).expect("reopen");
        assert_eq!(idx.entries(), 3);
        assert!(idx.is_full());
        assert_eq!(idx.last_entry().map(|e| e.relative_offset), Some(12));
    }

    #[test]
    fn full_index_refuses_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx =
            TimeIndex::open(&dir.path().join("t.timeindex"), Some(0), 24, true).expect("open");
        for ts in 0..2 {
            assert!(idx.append(TimestampOffset {
                timestamp: ts,
                relative_offset: ts as u32
            }));
        }
        assert!(!idx.append(TimestampOffset {
            timestamp: 9,
            relative_offset: 9
        }));
        assert_eq!(idx.entries(), 2);
    }
}
