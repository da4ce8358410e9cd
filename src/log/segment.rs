//! LogSegment: one `.log` file of record batches plus its offset and time indexes.
//!
//! Writes use positional writes (`pwritev`) so a batch goes to disk exactly as received, with the
//! broker's 16-byte prefix in front of the unchanged body. Reads go through a read-only shared
//! mapping sized to the segment's capacity; only bytes below `size` are ever touched, so the
//! mapping never reaches past the end of the file. Fetch responses slice that mapping without
//! copying (`Bytes::from_owner`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use parking_lot::{Mutex, RwLock};

use super::batch::{self, BatchIter, BatchView};
use super::index::{OffsetIndex, OffsetPosition, TimeIndex, TimestampOffset};

/// Kafka's file names: the base offset as 20 zero-padded digits.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The read-only mapping of a segment's `.log` file, shared by every fetch response that
/// slices it.
struct SegmentMap {
    map: Mmap,
}

/// A slice of a segment mapping that keeps the mapping alive.
struct MapSlice {
    map: Arc<SegmentMap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map.map[self.start..self.end]
    }
}

/// State only the appender touches (appends to a partition are serialized by its log).
struct WriteState {
    bytes_since_last_index_entry: usize,
    max_timestamp_so_far: i64,
    offset_of_max_timestamp: i64,
    /// Wall-clock time of the segment's creation or first append, for `segment.ms`.
    created_ms: i64,
}

pub struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    map: Arc<SegmentMap>,
    capacity: usize,
    /// Bytes of whole batches written; readers never look past this.
    size: AtomicUsize,
    offset_index: RwLock<OffsetIndex>,
    time_index: RwLock<TimeIndex>,
    write: Mutex<WriteState>,
}

/// Where a batch sits in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLocation {
    pub position: usize,
    pub size: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl LogSegment {
    /// Opens a segment's files. `capacity` bounds how large the `.log` may grow (the mapping's
    /// length); it is at least the current file size. Index entries are trusted as stored:
    /// callers rebuild them (`rebuild_indexes`) when the shutdown was not clean.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        capacity: usize,
        max_index_bytes: usize,
        active: bool,
        now_ms: i64,
    ) -> io::Result<Self> {
        Self::open_with_suffix(
            dir,
            base_offset,
            "",
            capacity,
            max_index_bytes,
            active,
            now_ms,
        )
    }

    /// Opens a segment whose three files carry `suffix` after Kafka's names: the log cleaner
    /// writes `<base>.log.cleaned`, `<base>.index.cleaned` and `<base>.timeindex.cleaned`.
    pub fn open_with_suffix(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        capacity: usize,
        max_index_bytes: usize,
        active: bool,
        now_ms: i64,
    ) -> io::Result<Self> {
        let named = |ext: &str| dir.join(file_name(base_offset, ext) + suffix);
        let log_path = named(".log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)?;
        let size = file.metadata()?.len() as usize;
        let capacity = capacity.max(size).max(1);
        // SAFETY: the mapping is read-only and only bytes below `size` (written, never
        // truncated while mapped) are read.
        let map = unsafe { MmapOptions::new().len(capacity).map(&file)? };
        let offset_index = OffsetIndex::open(&named(".index"), None, max_index_bytes, active)?;
        let time_index = TimeIndex::open(&named(".timeindex"), None, max_index_bytes, active)?;
        let (max_ts, max_ts_offset) = match time_index.last_entry() {
            Some(e) => (e.timestamp, base_offset + e.relative_offset as i64),
            None => (-1, base_offset),
        };
        let segment = Self {
            base_offset,
            log_path,
            file,
            map: Arc::new(SegmentMap { map }),
            capacity,
            size: AtomicUsize::new(size),
            offset_index: RwLock::new(offset_index),
            time_index: RwLock::new(time_index),
            write: Mutex::new(WriteState {
                bytes_since_last_index_entry: 0,
                max_timestamp_so_far: max_ts,
                offset_of_max_timestamp: max_ts_offset,
                created_ms: now_ms,
            }),
        };
        if active {
            segment.catch_up_tail_state();
        }
        Ok(segment)
    }

    /// After opening an active segment, folds the batches after the last time index entry into
    /// the writer's timestamp state, so that `largest_timestamp` is exact.
    fn catch_up_tail_state(&self) {
        let start = self
            .offset_index
            .read()
            .last_entry()
            .map(|e| e.position as usize)
            .unwrap_or(0);
        let mut w = self.write.lock();
        for (_, b) in BatchIter::new(&self.bytes()[start..]) {
            if b.max_timestamp() > w.max_timestamp_so_far {
                w.max_timestamp_so_far = b.max_timestamp();
                w.offset_of_max_timestamp = b.last_offset();
            }
        }
        if let Some((_, first)) = BatchIter::new(self.bytes()).next() {
            if first.max_timestamp() > 0 {
                w.created_ms = w.created_ms.min(first.max_timestamp());
            }
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn created_ms(&self) -> i64 {
        self.write.lock().created_ms
    }

    /// The `.log` file's modification time in ms, Kafka's stand-in for a segment without
    /// timestamps.
    pub fn last_modified_ms(&self) -> i64 {
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Sets the `.log` file's modification time. The cleaner gives a cleaned segment the time
    /// of the newest segment it replaces, as Kafka does, so that time-based retention of
    /// segments without timestamps is unchanged.
    pub fn set_last_modified(&self, ms: i64) -> io::Result<()> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        self.file.set_modified(t)
    }

    /// Records the `.log` file's new name after a rename (used in messages only).
    pub fn set_log_path(&mut self, path: PathBuf) {
        self.log_path = path;
    }

    /// The largest batch max timestamp in this segment, or -1.
    pub fn largest_timestamp(&self) -> i64 {
        self.write.lock().max_timestamp_so_far
    }

    /// The largest batch max timestamp in this segment and the last offset of the batch that
    /// carries it: (-1, base offset) when the segment has no timestamps.
    pub fn max_timestamp_and_offset(&self) -> (i64, i64) {
        let w = self.write.lock();
        (w.max_timestamp_so_far, w.offset_of_max_timestamp)
    }

    /// The written bytes of the segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map.map[..self.size()]
    }

    /// A zero-copy slice of the written bytes.
    pub fn slice(&self, start: usize, end: usize) -> Bytes {
        assert!(start <= end && end <= self.size(), "slice past segment end");
        if start == end {
            return Bytes::new();
        }
        Bytes::from_owner(MapSlice {
            map: self.map.clone(),
            start,
            end,
        })
    }

    pub fn offset_index_full(&self) -> bool {
        self.offset_index.read().is_full() || self.time_index.read().is_full()
    }

    /// Appends one validated batch whose first 16 bytes are replaced by `prefix`. The caller
    /// (the partition log) serializes appends and has checked that it fits.
    pub fn append(
        &self,
        prefix: &[u8; 16],
        body: &[u8],
        last_offset: i64,
        max_timestamp: i64,
        index_interval_bytes: usize,
    ) -> io::Result<()> {
        let position = self.size();
        let len = prefix.len() + body.len();
        assert!(
            position + len <= self.capacity,
            "append past segment capacity"
        );
        write_all_at(&self.file, &[prefix.as_slice(), body], position as u64)?;
        let mut w = self.write.lock();
        if max_timestamp > w.max_timestamp_so_far {
            w.max_timestamp_so_far = max_timestamp;
            w.offset_of_max_timestamp = last_offset;
        }
        if w.bytes_since_last_index_entry > index_interval_bytes {
            self.offset_index.write().append(OffsetPosition {
                relative_offset: self.relative(last_offset),
                position: position as u32,
            });
            self.append_time_entry(&w, false);
            w.bytes_since_last_index_entry = 0;
        }
        w.bytes_since_last_index_entry += len;
        self.size.store(position + len, Ordering::Release);
        Ok(())
    }

    fn relative(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        assert!(
            (0..=u32::MAX as i64).contains(&rel),
            "offset {offset} not relative to segment base {}",
            self.base_offset
        );
        rel as u32
    }

    /// Whether `offset` can be stored relative to this segment's base offset.
    pub fn can_hold_offset(&self, offset: i64) -> bool {
        let rel = offset - self.base_offset;
        (0..=i32::MAX as i64).contains(&rel)
    }

    fn append_time_entry(&self, w: &WriteState, force: bool) {
        if w.max_timestamp_so_far < 0 {
            return;
        }
        let mut ti = self.time_index.write();
        let newer = ti
            .last_entry()
            .map(|e| w.max_timestamp_so_far > e.timestamp)
            .unwrap_or(true);
        if newer || (force && ti.entries() == 0) {
            ti.append(TimestampOffset {
                timestamp: w.max_timestamp_so_far,
                relative_offset: self.relative(w.offset_of_max_timestamp),
            });
        }
    }

    /// Finds the batch containing `offset` (or the first batch after it), scanning from the
    /// closest offset index entry. Returns `None` when every batch in this segment ends below
    /// `offset`.
    pub fn find_batch(&self, offset: i64) -> Option<BatchLocation> {
        let start = self
            .offset_index
            .read()
            .floor(offset - self.base_offset)
            .map(|e| e.position as usize)
            .unwrap_or(0);
        let bytes = self.bytes();
        if start > bytes.len() {
            return None;
        }
        BatchIter::new(&bytes[start..])
            .find(|(_, b)| b.last_offset() >= offset)
            .map(|(pos, b)| location(start + pos, &b))
    }

    /// Iterates batches starting at a byte position.
    pub fn batches_from(&self, position: usize) -> impl Iterator<Item = BatchLocation> + '_ {
        let bytes = self.bytes();
        let start = position.min(bytes.len());
        BatchIter::new(&bytes[start..]).map(move |(pos, b)| location(start + pos, &b))
    }

    /// The first byte position whose batch reaches `timestamp`, via the time index.
    pub fn time_lookup_position(&self, timestamp: i64) -> usize {
        let offset = self
            .time_index
            .read()
            .floor(timestamp)
            .map(|e| self.base_offset + e.relative_offset as i64)
            .unwrap_or(self.base_offset);
        self.offset_index
            .read()
            .floor(offset - self.base_offset)
            .map(|e| e.position as usize)
            .unwrap_or(0)
    }

    /// The batch view at a known-good location.
    pub fn batch_at(&self, loc: &BatchLocation) -> BatchView<'_> {
        let bytes = &self.bytes()[loc.position..loc.position + loc.size];
        batch::check_batch(bytes).expect("stored batch stays valid")
    }

    /// fdatasync of the `.log` file.
    pub fn flush_log(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Flushes the log and both indexes.
    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()?;
        self.offset_index.read().flush()?;
        self.time_index.read().flush()
    }

    /// fsyncs the `.log` file and both index files, sizes included, so that a segment written
    /// off to the side (by the cleaner) is durable before it is renamed into place.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()?;
        self.offset_index.read().sync()?;
        self.time_index.read().sync()
    }

    /// Seals the segment when a newer one takes over: records the final time index entry and
    /// trims both index files to their entries.
    pub fn seal(&self) -> io::Result<()> {
        let w = self.write.lock();
        // Drop a zeroed tail left by `truncate_to` (readers never look past `size`).
        let size = self.size() as u64;
        if self.file.metadata()?.len() > size {
            self.file.set_len(size)?;
        }
        self.append_time_entry(&w, true);
        self.offset_index.write().trim()?;
        self.time_index.write().trim()
    }

    /// Rebuilds both indexes from the `.log` file, validating every batch's length, CRC and
    /// offset order. Truncates the file after the last valid batch and returns the next offset
    /// after it (or `None` if the segment holds no valid batch). Used by recovery only, before
    /// any reader exists.
    pub fn recover(&self, index_interval_bytes: usize) -> io::Result<Option<i64>> {
        self.offset_index.write().clear();
        self.time_index.write().clear();
        {
            let mut w = self.write.lock();
            w.bytes_since_last_index_entry = 0;
            w.max_timestamp_so_far = -1;
            w.offset_of_max_timestamp = self.base_offset;
        }
        let file_len = self.file.metadata()?.len() as usize;
        self.size
            .store(file_len.min(self.capacity), Ordering::Release);
        let bytes = self.bytes();
        let mut position = 0usize;
        let mut next_offset: Option<i64> = None;
        while position < bytes.len() {
            let Ok(view) = batch::check_batch(&bytes[position..]) else {
                break;
            };
            let expected_min = next_offset.unwrap_or(self.base_offset);
            if view.base_offset() < expected_min
                || view.last_offset() < view.base_offset()
                || !self.can_hold_offset(view.last_offset())
            {
                break;
            }
            let mut w = self.write.lock();
            if view.max_timestamp() > w.max_timestamp_so_far {
                w.max_timestamp_so_far = view.max_timestamp();
                w.offset_of_max_timestamp = view.last_offset();
            }
            if w.bytes_since_last_index_entry > index_interval_bytes {
                let entry = OffsetPosition {
                    relative_offset: self.relative(view.last_offset()),
                    position: position as u32,
                };
                if !self.offset_index.write().append(entry) {
                    break;
                }
                self.append_time_entry(&w, false);
                w.bytes_since_last_index_entry = 0;
            }
            w.bytes_since_last_index_entry += view.size();
            next_offset = Some(view.last_offset() + 1);
            position += view.size();
        }
        if position < file_len {
            tracing::warn!(
                segment = %self.log_path.display(),
                valid_bytes = position,
                file_bytes = file_len,
                "truncating an invalid or torn tail found during recovery"
            );
            self.file.set_len(position as u64)?;
            self.file.sync_all()?;
        }
        self.size.store(position, Ordering::Release);
        Ok(next_offset)
    }

    /// Discards every batch from `offset` on. The discarded bytes are overwritten with zeros
    /// rather than cut off the file, so a reader still slicing them sees zeros, never a torn
    /// mapping, and recovery after a crash stops at the zeros. Sealing trims the file.
    /// Whole batches go (the one holding `offset` included); returns the new next offset.
    pub fn truncate_to(&self, offset: i64) -> io::Result<i64> {
        let kept = self
            .batches_from(0)
            .take_while(|b| b.last_offset < offset)
            .last();
        let keep = kept.map(|b| b.position + b.size).unwrap_or(0);
        let next = kept.map(|b| b.last_offset + 1).unwrap_or(self.base_offset);
        let old = self.size();
        if keep >= old {
            return Ok(next);
        }
        let mut w = self.write.lock();
        self.size.store(keep, Ordering::Release);
        let zeros = vec![0u8; (old - keep).min(1 << 20)];
        let mut at = keep;
        while at < old {
            let n = (old - at).min(zeros.len());
            write_all_at(&self.file, &[&zeros[..n]], at as u64)?;
            at += n;
        }
        self.file.sync_data()?;
        let base = self.base_offset;
        self.offset_index
            .write()
            .truncate_where(|e| base + (e.relative_offset as i64) < offset);
        self.time_index
            .write()
            .truncate_where(|e| base + (e.relative_offset as i64) < offset);
        w.bytes_since_last_index_entry = 0;
        w.max_timestamp_so_far = -1;
        w.offset_of_max_timestamp = base;
        for b in self.batches_from(0) {
            if b.max_timestamp > w.max_timestamp_so_far {
                w.max_timestamp_so_far = b.max_timestamp;
                w.offset_of_max_timestamp = b.last_offset;
            }
        }
        Ok(next)
    }

    /// The offset after the last batch (scanning from the last index entry), if any batch.
    pub fn next_offset(&self) -> Option<i64> {
        let start = self
            .offset_index
            .read()
            .last_entry()
            .map(|e| e.position as usize)
            .unwrap_or(0);
        self.batches_from(start).last().map(|b| b.last_offset + 1)
    }

    /// Removes this segment's files (the mapping stays valid for readers that still hold it).
    pub fn delete_files(&self) -> io::Result<()> {
        let base = self.base_offset;
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        for suffix in [".log", ".index", ".timeindex", ".txnindex"] {
            match std::fs::remove_file(dir.join(file_name(base, suffix))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn location(position: usize, b: &BatchView<'_>) -> BatchLocation {
    BatchLocation {
        position,
        size: b.size(),
        base_offset: b.base_offset(),
        last_offset: b.last_offset(),
        max_timestamp: b.max_timestamp(),
    }
}

/// Writes every buffer, in order, at `offset` with `pwritev`, retrying short writes.
fn write_all_at(file: &File, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice borrowed for this call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote 0 bytes",
            ));
        }
        let mut written = n as usize;
        offset += written as u64;
        while written > 0 {
            if written >= parts[0].len() {
                written -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][written..];
                written = 0;
            }
        }
    }
    Ok(())
}
