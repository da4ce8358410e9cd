//! The partition side of transactions, in Kafka's formats: end-transaction markers (control
//! batches holding one COMMIT or ABORT control record), which transactions are open in this
//! log and so where the last stable offset (LSO) stands, and the aborted-transaction index
//! (`<base>.txnindex`, Kafka's 34-byte `AbortedTxn` entries) from which a read_committed fetch
//! learns which producers' records to drop.
//!
//! The index is kept in memory per log (it is rebuilt from the batch headers whenever the log
//! is opened, as producer state is) and written to each segment's `.txnindex` file in Kafka's
//! layout, so that Kafka's tools read it.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::batch::{self, read_varint, BatchView, HeaderFields};
use super::segment::file_name;

/// Kafka's control record types for transaction markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerType {
    Abort = 0,
    Commit = 1,
}

/// An end-transaction marker (Kafka's `EndTransactionMarker`, value version 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub kind: MarkerType,
    pub coordinator_epoch: i32,
}

const CONTROL_KEY_VERSION: i16 = 0;
const MARKER_VALUE_VERSION: i16 = 0;
const TRANSACTIONAL_AND_CONTROL: i16 = (1 << 4) | (1 << 5);

/// A control batch holding `marker` for producer `producer_id` at `producer_epoch`, with base
/// offset 0 and leader epoch 0 (the append rewrites both), as Kafka writes it: transactional
/// and control attributes, no sequence, one record.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    key.extend_from_slice(&(marker.kind as i16).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&MARKER_VALUE_VERSION.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut record = vec![0u8]; // attributes
    batch::write_varint(&mut record, 0); // timestamp delta
    batch::write_varint(&mut record, 0); // offset delta
    batch::write_varint(&mut record, key.len() as i64);
    record.extend_from_slice(&key);
    batch::write_varint(&mut record, value.len() as i64);
    record.extend_from_slice(&value);
    batch::write_varint(&mut record, 0); // headers
    let mut records = Vec::with_capacity(record.len() + 2);
    batch::write_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);
    let header = HeaderFields {
        base_offset: 0,
        partition_leader_epoch: 0,
        attributes: TRANSACTIONAL_AND_CONTROL,
        last_offset_delta: 0,
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        producer_id,
        producer_epoch,
        base_sequence: -1,
        records_count: 1,
    };
    batch::build_batch(&header, &records).expect("a control batch is small")
}

/// The marker in a control batch, if it holds a well-formed COMMIT or ABORT record. Control
/// batches are never compressed.
pub fn parse_marker(view: &BatchView<'_>) -> Option<EndTxnMarker> {
    if !view.is_control() || view.records_count() < 1 {
        return None;
    }
    let mut buf = &view.as_bytes()[batch::HEADER_SIZE..];
    let _length = read_varint(&mut buf)?;
    let (_attributes, rest) = buf.split_first()?;
    buf = rest;
    let _timestamp_delta = read_varint(&mut buf)?;
    let _offset_delta = read_varint(&mut buf)?;
    let key = take(&mut buf)?;
    let value = take(&mut buf)?;
    if key.len() < 4 || value.len() < 6 {
        return None;
    }
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => MarkerType::Abort,
        1 => MarkerType::Commit,
        _ => return None,
    };
    Some(EndTxnMarker {
        kind,
        coordinator_epoch: i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
    })
}

/// A length-prefixed field of a record (`None` for a null or truncated one).
fn take<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf)?).ok()?;
    let (field, rest) = (buf.get(..len)?, buf.get(len..)?);
    *buf = rest;
    Some(field)
}

/// One aborted transaction (Kafka's `AbortedTxn`): its producer, the offsets of its first
/// record and of its ABORT marker, and the LSO once it was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// The size of one `.txnindex` entry.
pub const ABORTED_TXN_SIZE: usize = 34;
const ABORTED_TXN_VERSION: i16 = 0;

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ABORTED_TXN_SIZE] {
        let mut out = [0u8; ABORTED_TXN_SIZE];
        out[0..2].copy_from_slice(&ABORTED_TXN_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    pub fn decode(entry: &[u8]) -> Option<Self> {
        if entry.len() < ABORTED_TXN_SIZE || i16::from_be_bytes([entry[0], entry[1]]) != 0 {
            return None;
        }
        let long = |at: usize| i64::from_be_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
        Some(Self {
            producer_id: long(2),
            first_offset: long(10),
            last_offset: long(18),
            last_stable_offset: long(26),
        })
    }
}

/// A transaction a marker just ended in this log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// The transactions of one log that readers at read_committed must still wait for: those
/// open (no marker yet) and those whose marker is written but not yet below the high
/// watermark, each by the offset of its first record (Kafka's `ongoingTxns` and
/// `unreplicatedTxns`).
#[derive(Debug, Default, Clone)]
pub struct OpenTxns {
    /// First offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// First offset -> the marker's offset.
    unreplicated: BTreeMap<i64, i64>,
}

impl OpenTxns {
    pub fn begin(&mut self, producer_id: i64, first_offset: i64) {
        self.ongoing.insert(first_offset, producer_id);
    }

    /// Ends the transaction that starts at `txn.first_offset`; returns the LSO Kafka records
    /// with an abort: the first offset of the next open transaction of another producer, else
    /// the offset after the marker.
    pub fn complete(&mut self, txn: &CompletedTxn) -> i64 {
        self.ongoing.remove(&txn.first_offset);
        self.unreplicated.insert(txn.first_offset, txn.last_offset);
        self.ongoing
            .iter()
            .find(|(_, pid)| **pid != txn.producer_id)
            .map(|(first, _)| *first)
            .unwrap_or(txn.last_offset + 1)
    }

    /// Forgets completed transactions whose marker is below the high watermark.
    pub fn replicated_below(&mut self, high_watermark: i64) {
        self.unreplicated
            .retain(|_, marker| *marker >= high_watermark);
    }

    /// The first offset that a read_committed reader may not pass, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing.keys().next();
        let unreplicated = self.unreplicated.keys().next();
        ongoing.into_iter().chain(unreplicated).min().copied()
    }

    /// The smallest marker offset still waiting for the high watermark.
    pub fn first_unreplicated_marker(&self) -> Option<i64> {
        self.unreplicated.values().min().copied()
    }

    /// The open transactions (first offset, producer id), oldest first.
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ongoing.iter().map(|(first, pid)| (*first, *pid))
    }

    /// Drops transactions that begin at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        self.ongoing.retain(|first, _| *first < offset);
        self.unreplicated
            .retain(|first, marker| *first < offset && *marker < offset);
    }
}

/// The aborted transactions of a log, by the offset of their ABORT marker.
#[derive(Debug, Default, Clone)]
pub struct AbortedIndex {
    by_marker: BTreeMap<i64, AbortedTxn>,
}

impl AbortedIndex {
    pub fn add(&mut self, txn: AbortedTxn) {
        self.by_marker.insert(txn.last_offset, txn);
    }

    /// The aborted transactions a read of `[start, upper)` must report: those whose marker is
    /// at or after `start` and whose first record is before `upper`.
    pub fn overlapping(&self, start: i64, upper: i64) -> Vec<AbortedTxn> {
        self.by_marker
            .range(start..)
            .map(|(_, t)| *t)
            .filter(|t| t.first_offset < upper)
            .collect()
    }

    /// The aborted transaction of producer `pid` that holds `offset`, if any.
    pub fn containing(&self, pid: i64, offset: i64) -> Option<AbortedTxn> {
        self.by_marker
            .range(offset..)
            .map(|(_, t)| *t)
            .find(|t| t.producer_id == pid)
            .filter(|t| t.first_offset <= offset)
    }

    /// The entries whose marker is in `[from, to)`, oldest first (one segment's index).
    pub fn markers_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.by_marker.range(from..to).map(|(_, t)| *t).collect()
    }

    /// Drops entries whose marker is at or after `offset` (truncated away).
    pub fn truncate_from(&mut self, offset: i64) {
        self.by_marker.split_off(&offset);
    }

    /// Drops entries whose marker is below `offset` (the log start moved past them).
    pub fn truncate_before(&mut self, offset: i64) {
        self.by_marker = self.by_marker.split_off(&offset);
    }

    pub fn is_empty(&self) -> bool {
        self.by_marker.is_empty()
    }
}

/// Writes the `.txnindex` file of the segment at `base` with `entries`, or removes it when
/// there are none. The file is a cache of what the log holds: a crash that tears it is
/// repaired when the log is next opened, which rebuilds it from the markers.
pub fn write_txn_index(dir: &Path, base: i64, entries: &[AbortedTxn]) -> io::Result<()> {
    let path = dir.join(file_name(base, ".txnindex"));
    if entries.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut bytes = Vec::with_capacity(entries.len() * ABORTED_TXN_SIZE);
    for e in entries {
        bytes.extend_from_slice(&e.encode());
    }
    std::fs::write(path, bytes)
}

/// Appends one entry to the `.txnindex` file of the segment at `base`.
pub fn append_txn_index(dir: &Path, base: i64, entry: &AbortedTxn) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(file_name(base, ".txnindex")))?;
    file.write_all(&entry.encode())
}

/// Reads a `.txnindex` file (for tools and tests); a torn last entry is ignored.
pub fn read_txn_index(path: &Path) -> io::Result<Vec<AbortedTxn>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(ABORTED_TXN_SIZE)
        .filter_map(AbortedTxn::decode)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::check_batch;

    #[test]
    fn control_batches_round_trip_in_kafkas_layout() {
        let marker = EndTxnMarker {
            kind: MarkerType::Commit,
            coordinator_epoch: 7,
        };
        let bytes = control_batch(42, 3, marker, 1_000);
        let view = check_batch(&bytes).expect("a valid batch");
        assert!(view.is_control() && view.is_transactional());
        assert_eq!((view.producer_id(), view.producer_epoch()), (42, 3));
        assert_eq!(view.base_sequence(), -1);
        assert_eq!(parse_marker(&view), Some(marker));
        // Kafka's record: key (length 4) = version 0, type 1; value (length 6) = version 0,
        // coordinator epoch 7; no headers.
        let tail = &bytes[bytes.len() - 13..];
        assert_eq!(tail, &[8, 0, 0, 0, 1, 12, 0, 0, 0, 0, 0, 7, 0]);
    }

    #[test]
    fn aborted_txn_entries_are_34_bytes() {
        let t = AbortedTxn {
            producer_id: 5,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let e = t.encode();
        assert_eq!(e.len(), 34);
        assert_eq!(AbortedTxn::decode(&e), Some(t));
    }

    #[test]
    fn lso_follows_open_and_unreplicated_transactions() {
        let mut txns = OpenTxns::default();
        txns.begin(1, 10);
        txns.begin(2, 12);
        assert_eq!(txns.first_unstable_offset(), Some(10));
        let lso = txns.complete(&CompletedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 15,
            aborted: true,
        });
        assert_eq!(lso, 12, "the other producer's transaction is still open");
        assert_eq!(
            txns.first_unstable_offset(),
            Some(10),
            "marker not replicated"
        );
        txns.replicated_below(16);
        assert_eq!(txns.first_unstable_offset(), Some(12));
        txns.complete(&CompletedTxn {
            producer_id: 2,
            first_offset: 12,
            last_offset: 16,
            aborted: false,
        });
        txns.replicated_below(17);
        assert_eq!(txns.first_unstable_offset(), None);
    }

    #[test]
    fn aborted_index_reports_overlapping_transactions() {
        let mut index = AbortedIndex::default();
        for (first, last) in [(0, 5), (8, 12), (20, 30)] {
            index.add(AbortedTxn {
                producer_id: first,
                first_offset: first,
                last_offset: last,
                last_stable_offset: last + 1,
            });
        }
        let firsts = |v: Vec<AbortedTxn>| v.iter().map(|t| t.first_offset).collect::<Vec<_>>();
        assert_eq!(firsts(index.overlapping(6, 21)), vec![8, 20]);
        assert_eq!(firsts(index.overlapping(0, 1)), vec![0]);
        index.truncate_from(12);
        assert_eq!(firsts(index.overlapping(0, 100)), vec![0]);
    }
}
