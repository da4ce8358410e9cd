//! The write-ahead file under the metadata log store: record framing (length + CRC32C),
//! replay at open with torn-tail repair, one writer thread that orders and fsyncs every write,
//! and compaction of the file once most of it is dead.
//!
//! Every log store mutation (append, truncate, purge, vote, committed) is one framed record
//! appended to `raft-log.wal`. Replaying the records in order rebuilds the log. The single
//! writer thread gives vote and log writes one total order, which Raft requires, and lets
//! several queued writes share one `fdatasync`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, TypeConfig, Vote};

pub(super) const WAL_FILE: &str = "raft-log.wal";
const WAL_COMPACT_FILE: &str = "raft-log.wal.compact";
/// `len: u32 LE` then `crc32c(payload): u32 LE`.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// Upper bound of one WAL record; a larger length field means a corrupt frame.
const MAX_RECORD_LEN: usize = 64 << 20;
/// Compaction only runs once the file is at least this large (and mostly dead).
const COMPACT_MIN_BYTES: u64 = 4 << 20;
/// At most this many queued writes share one fsync.
const GROUP_COMMIT_MAX_JOBS: usize = 512;

// ---------------------------------------------------------------------------------------------
// Framing, shared with the snapshot file.

/// Frames `payload` as `len, crc32c, payload`.
pub(super) fn encode_frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Why the bytes at some offset are not a whole, valid frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FrameError {
    /// Fewer bytes than the header or the announced payload.
    Truncated,
    /// The length field exceeds the allowed maximum.
    TooLong(usize),
    /// The payload does not match its CRC.
    BadCrc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "truncated frame"),
            FrameError::TooLong(n) => write!(f, "frame length {n} exceeds the limit"),
            FrameError::BadCrc => write!(f, "frame CRC mismatch"),
        }
    }
}

/// Decodes the frame at the start of `buf`: returns its payload and the frame's total length.
pub(super) fn decode_frame(buf: &[u8], max_len: usize) -> Result<(&[u8], usize), FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > max_len {
        return Err(FrameError::TooLong(len));
    }
    let end = FRAME_HEADER_LEN + len;
    let payload = buf
        .get(FRAME_HEADER_LEN..end)
        .ok_or(FrameError::Truncated)?;
    if crc32c::crc32c(payload) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok((payload, end))
}

pub(super) use crate::durable::sync_dir;

// ---------------------------------------------------------------------------------------------
// Records.

/// A WAL record as written. Mirrors [`WalRecord`] variant for variant.
#[derive(Serialize)]
enum WalRecordRef<'a> {
    Entry(&'a Entry),
    /// Keeps the entries up to this index, drops the later ones; `None` drops all.
    TruncateAfter(Option<u64>),
    Purge(&'a LogId),
    Vote(&'a Vote),
    Committed(Option<&'a LogId>),
}

/// A WAL record as read back.
#[derive(Deserialize)]
enum WalRecord {
    Entry(Entry),
    TruncateAfter(Option<u64>),
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
}

/// What a record does to the file layout (the writer does not decode records).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Entry(u64),
    TruncateAfter(Option<u64>),
    Purge(u64),
    Vote,
    Committed,
}

/// One record, framed and ready for the writer.
pub(super) struct Encoded {
    kind: Kind,
    frame: Vec<u8>,
}

impl Encoded {
    fn new(kind: Kind, record: &WalRecordRef<'_>) -> io::Result<Self> {
        let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
        Ok(Self {
            kind,
            frame: encode_frame(&payload)?,
        })
    }

    pub(super) fn entry(entry: &Entry) -> io::Result<Self> {
        Self::new(Kind::Entry(entry.log_id.index), &WalRecordRef::Entry(entry))
    }

    pub(super) fn truncate_after(index: Option<u64>) -> io::Result<Self> {
        Self::new(
            Kind::TruncateAfter(index),
            &WalRecordRef::TruncateAfter(index),
        )
    }

    pub(super) fn purge(log_id: &LogId) -> io::Result<Self> {
        Self::new(Kind::Purge(log_id.index), &WalRecordRef::Purge(log_id))
    }

    pub(super) fn vote(vote: &Vote) -> io::Result<Self> {
        Self::new(Kind::Vote, &WalRecordRef::Vote(vote))
    }

    pub(super) fn committed(log_id: Option<&LogId>) -> io::Result<Self> {
        Self::new(Kind::Committed, &WalRecordRef::Committed(log_id))
    }
}

// ---------------------------------------------------------------------------------------------
// Replay.

/// The log state rebuilt from the WAL at open.
#[derive(Default)]
pub(super) struct Recovered {
    pub entries: BTreeMap<u64, Entry>,
    pub last_purged: Option<LogId>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    /// Bytes cut off the end of the file because they were not a whole, valid record.
    pub torn_bytes: u64,
}

impl Recovered {
    fn apply(&mut self, record: WalRecord) {
        match record {
            WalRecord::Entry(entry) => {
                let index = entry.log_id.index;
                self.entries.split_off(&index);
                self.entries.insert(index, entry);
            }
            WalRecord::TruncateAfter(Some(index)) => {
                self.entries.split_off(&(index + 1));
            }
            WalRecord::TruncateAfter(None) => self.entries.clear(),
            WalRecord::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                if self.last_purged.as_ref() < Some(&log_id) {
                    self.last_purged = Some(log_id);
                }
            }
            WalRecord::Vote(vote) => self.vote = Some(vote),
            WalRecord::Committed(committed) => self.committed = committed,
        }
    }
}

/// Where the live records sit in the file, kept by the writer to compact without decoding.
#[derive(Default)]
struct Layout {
    /// Entry index -> (offset, frame length).
    entries: BTreeMap<u64, (u64, u64)>,
    live_entry_bytes: u64,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    /// The last purge: its index and frame.
    purge: Option<(u64, Vec<u8>)>,
    file_len: u64,
}

impl Layout {
    fn record(&mut self, kind: Kind, frame: &[u8], offset: u64) {
        let len = frame.len() as u64;
        match kind {
            Kind::Entry(index) => {
                let dropped = self.entries.split_off(&index);
                self.drop_entries(dropped);
                self.entries.insert(index, (offset, len));
                self.live_entry_bytes += len;
            }
            Kind::TruncateAfter(Some(index)) => {
                let dropped = self.entries.split_off(&(index + 1));
                self.drop_entries(dropped);
            }
            Kind::TruncateAfter(None) => {
                let dropped = std::mem::take(&mut self.entries);
                self.drop_entries(dropped);
            }
            Kind::Purge(index) => {
                let kept = self.entries.split_off(&(index + 1));
                let dropped = std::mem::replace(&mut self.entries, kept);
                self.drop_entries(dropped);
                self.purge = Some((index, frame.to_vec()));
            }
            Kind::Vote => self.vote = Some(frame.to_vec()),
            Kind::Committed => self.committed = Some(frame.to_vec()),
        }
        self.file_len = offset + len;
    }

    fn drop_entries(&mut self, dropped: BTreeMap<u64, (u64, u64)>) {
        for (_, (_, len)) in dropped {
            self.live_entry_bytes -= len;
        }
    }

    fn live_bytes(&self) -> u64 {
        let small = [&self.vote, &self.committed]
            .iter()
            .map(|f| f.as_ref().map_or(0, |f| f.len() as u64))
            .sum::<u64>();
        let purge = self.purge.as_ref().map_or(0, |(_, f)| f.len() as u64);
        self.live_entry_bytes + small + purge
    }
}

/// Opens (or creates) the WAL in `dir`, replays it, repairs a torn tail, and starts the writer.
pub(super) fn open(dir: &Path) -> io::Result<(Recovered, WalWriter)> {
    open_with(dir, COMPACT_MIN_BYTES)
}

fn open_with(dir: &Path, compact_min: u64) -> io::Result<(Recovered, WalWriter)> {
    let path = dir.join(WAL_FILE);
    // A compaction that did not reach its rename left the original intact.
    match fs::remove_file(dir.join(WAL_COMPACT_FILE)) {
        Ok(()) => tracing::warn!("removed an unfinished metadata log compaction"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if !existed {
        file.sync_all()?;
        sync_dir(dir)?;
    }

    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;

    let mut recovered = Recovered::default();
    let mut layout = Layout::default();
    let mut offset = 0usize;
    while offset < buf.len() {
        let (payload, frame_len) = match decode_frame(&buf[offset..], MAX_RECORD_LEN) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(offset, error = %e, "metadata log: invalid record at the tail");
                break;
            }
        };
        let record: WalRecord = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(offset, error = %e, "metadata log: undecodable record at the tail");
                break;
            }
        };
        let frame = &buf[offset..offset + frame_len];
        layout.record(kind_of(&record), frame, offset as u64);
        recovered.apply(record);
        offset += frame_len;
    }

    if offset < buf.len() {
        recovered.torn_bytes = (buf.len() - offset) as u64;
        tracing::warn!(
            valid_bytes = offset,
            dropped_bytes = recovered.torn_bytes,
            "metadata log: truncating a torn tail"
        );
        file.set_len(offset as u64)?;
        file.sync_all()?;
    }
    layout.file_len = offset as u64;

    let writer = WalWriter::spawn(Writer {
        dir: dir.to_path_buf(),
        file,
        layout,
        compact_min,
        failed: None,
    })?;
    Ok((recovered, writer))
}

fn kind_of(record: &WalRecord) -> Kind {
    match record {
        WalRecord::Entry(e) => Kind::Entry(e.log_id.index),
        WalRecord::TruncateAfter(i) => Kind::TruncateAfter(*i),
        WalRecord::Purge(l) => Kind::Purge(l.index),
        WalRecord::Vote(_) => Kind::Vote,
        WalRecord::Committed(_) => Kind::Committed,
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

/// What to do once a write is durable (or has failed).
pub(super) enum Done {
    /// Nobody waits; the write becomes durable with this or a later fsync.
    Nothing,
    /// An openraft `append` callback.
    Flushed(IOFlushed<TypeConfig>),
    /// A caller awaiting the fsync.
    Reply(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self, result: &Result<(), String>) {
        let result = result.clone().map_err(io::Error::other);
        match self {
            Done::Nothing => {}
            Done::Flushed(cb) => cb.io_completed(result),
            Done::Reply(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Job {
    records: Vec<Encoded>,
    done: Done,
}

/// Handle to the writer thread. Writes are applied in submission order.
pub(super) struct WalWriter {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WalWriter {
    fn spawn(writer: Writer) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("meta-wal".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues records; `done` runs after they are durable. Fails once the writer is closed.
    pub(super) fn submit(&self, records: Vec<Encoded>, done: Done) -> io::Result<()> {
        let tx = self.tx.lock();
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "metadata log is closed");
        let tx = tx.as_ref().ok_or_else(closed)?;
        tx.send(Job { records, done }).map_err(|_| closed())
    }

    /// Closes the queue, waits for queued writes to be flushed and the thread to exit.
    /// Blocking; idempotent.
    pub(super) fn close(&self) {
        drop(self.tx.lock().take());
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("metadata log writer thread panicked");
            }
        }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    dir: PathBuf,
    file: File,
    layout: Layout,
    compact_min: u64,
    /// Set after a failed write or fsync: the file state is unknown, so every later write fails.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < GROUP_COMMIT_MAX_JOBS {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = self.write_batch(&batch);
            if let Err(e) = &result {
                tracing::error!(error = %e, "metadata log write failed; the log is now read-only");
            }
            for job in batch {
                job.done.complete(&result);
            }
            if result.is_ok() {
                self.maybe_compact();
            }
        }
        if self.failed.is_none() {
            if let Err(e) = self.file.sync_data() {
                tracing::error!(error = %e, "metadata log: final fsync failed");
            }
        }
    }

    fn write_batch(&mut self, batch: &[Job]) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = (|| -> io::Result<()> {
            for record in batch.iter().flat_map(|job| job.records.iter()) {
                let offset = self.layout.file_len;
                self.file.write_all_at(&record.frame, offset)?;
                self.layout.record(record.kind, &record.frame, offset);
            }
            self.file.sync_data()
        })();
        result.map_err(|e| {
            let msg = format!("metadata log write failed: {e}");
            self.failed = Some(msg.clone());
            msg
        })
    }

    fn maybe_compact(&mut self) {
        let live = self.layout.live_bytes();
        let len = self.layout.file_len;
        if len < self.compact_min || len - live <= live {
            return;
        }
        match self.compact() {
            Ok(()) => tracing::debug!(
                before = len,
                after = self.layout.file_len,
                "metadata log compacted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "metadata log compaction failed; keeping the old file");
                let _ = fs::remove_file(self.dir.join(WAL_COMPACT_FILE));
            }
        }
    }

    /// Rewrites the live records into a new file and renames it over the WAL.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.dir.join(WAL_COMPACT_FILE);
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut new = Layout::default();
        {
            let mut w = BufWriter::new(&out);
            let mut offset = 0u64;
            let mut put = |w: &mut BufWriter<&File>, kind: Kind, frame: &[u8], new: &mut Layout| {
                w.write_all(frame)?;
                new.record(kind, frame, offset);
                offset += frame.len() as u64;
                io::Result::Ok(())
            };
            if let Some((index, frame)) = &self.layout.purge {
                put(&mut w, Kind::Purge(*index), frame, &mut new)?;
            }
            if let Some(frame) = &self.layout.vote {
                put(&mut w, Kind::Vote, frame, &mut new)?;
            }
            let mut buf = Vec::new();
            for (&index, &(at, len)) in &self.layout.entries {
                buf.resize(len as usize, 0);
                self.file.read_exact_at(&mut buf, at)?;
                put(&mut w, Kind::Entry(index), &buf, &mut new)?;
            }
            if let Some(frame) = &self.layout.committed {
                put(&mut w, Kind::Committed, frame, &mut new)?;
            }
            w.flush()?;
        }
        out.sync_all()?;
        fs::rename(&tmp, self.dir.join(WAL_FILE))?;
        sync_dir(&self.dir)?;
        self.file = out;
        self.layout = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry::new_blank(log_id(term, index))
    }

    async fn write(w: &WalWriter, records: Vec<Encoded>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        w.submit(records, Done::Reply(tx))?;
        rx.await.map_err(io::Error::other)?
    }

    #[test]
    fn frame_roundtrip_and_errors() {
        let frame = encode_frame(b"hello").unwrap();
        assert_eq!(
            decode_frame(&frame, 100).unwrap(),
            (&b"hello"[..], frame.len())
        );
        assert_eq!(decode_frame(&frame[..5], 100), Err(FrameError::Truncated));
        assert_eq!(decode_frame(&frame[..10], 100), Err(FrameError::Truncated));
        assert_eq!(decode_frame(&frame, 3), Err(FrameError::TooLong(5)));
        let mut bad = frame.clone();
        bad[9] ^= 0xff;
        assert_eq!(decode_frame(&bad, 100), Err(FrameError::BadCrc));
    }

    #[tokio::test]
    async fn replay_applies_truncate_purge_vote_committed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (rec, w) = open(dir.path()).unwrap();
            assert!(rec.entries.is_empty());
            let mut records = Vec::new();
            for i in 1..=10 {
                records.push(Encoded::entry(&blank(1, i)).unwrap());
            }
            write(&w, records).await.unwrap();
            write(&w, vec![Encoded::truncate_after(Some(7)).unwrap()])
                .await
                .unwrap();
            write(&w, vec![Encoded::entry(&blank(2, 8)).unwrap()])
                .await
                .unwrap();
            write(&w, vec![Encoded::purge(&log_id(1, 3)).unwrap()])
                .await
                .unwrap();
            let vote = Vote::new_committed(2, 1);
            write(&w, vec![Encoded::vote(&vote).unwrap()])
                .await
                .unwrap();
            write(&w, vec![Encoded::committed(Some(&log_id(2, 8))).unwrap()])
                .await
                .unwrap();
            w.close();
        }
        let (rec, w) = open(dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(
            rec.entries.keys().copied().collect::<Vec<_>>(),
            vec![4, 5, 6, 7, 8]
        );
        assert_eq!(rec.entries[&8].log_id, log_id(2, 8));
        assert_eq!(rec.last_purged, Some(log_id(1, 3)));
        assert_eq!(rec.committed, Some(log_id(2, 8)));
        assert!(rec.vote.is_some_and(|v| v.is_committed()));
        w.close();
    }

    #[tokio::test]
    async fn compaction_keeps_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (_, w) = open_with(dir.path(), 1024).unwrap();
        for i in 1..=200 {
            write(&w, vec![Encoded::entry(&blank(1, i)).unwrap()])
                .await
                .unwrap();
        }
        write(&w, vec![Encoded::committed(Some(&log_id(1, 200))).unwrap()])
            .await
            .unwrap();
        let before = fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        write(&w, vec![Encoded::purge(&log_id(1, 190)).unwrap()])
            .await
            .unwrap();
        // Compaction runs after the purge is acknowledged; this write queues behind it and
        // lands in the new file.
        write(&w, vec![Encoded::entry(&blank(1, 201)).unwrap()])
            .await
            .unwrap();
        let after = fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        assert!(after * 5 < before, "compacted {before} -> {after}");
        w.close();

        let (rec, w) = open(dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(
            rec.entries.keys().copied().collect::<Vec<_>>(),
            (191..=201).collect::<Vec<_>>()
        );
        assert_eq!(rec.last_purged, Some(log_id(1, 190)));
        assert_eq!(rec.committed, Some(log_id(1, 200)));
        w.close();
    }

    #[tokio::test]
    async fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, w) = open(dir.path()).unwrap();
            for i in 1..=3 {
                write(&w, vec![Encoded::entry(&blank(1, i)).unwrap()])
                    .await
                    .unwrap();
            }
            w.close();
        }
        let path = dir.path().join(WAL_FILE);
        let good_len = fs::metadata(&path).unwrap().len();
        // A partial fourth record: a header announcing more bytes than follow.
        let partial = encode_frame(b"{\"Entry\":{}}").unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&partial[..partial.len() - 3]).unwrap();
        drop(f);

        let (rec, w) = open(dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, (partial.len() - 3) as u64);
        assert_eq!(rec.entries.len(), 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        write(&w, vec![Encoded::entry(&blank(1, 4)).unwrap()])
            .await
            .unwrap();
        w.close();
        let (rec, w) = open(dir.path()).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(rec.entries.len(), 4);
        w.close();
    }

    #[tokio::test]
    async fn closed_writer_rejects_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, w) = open(dir.path()).unwrap();
        w.close();
        let err = write(&w, vec![Encoded::entry(&blank(1, 1)).unwrap()])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
