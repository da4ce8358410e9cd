//! Record-level work for the log cleaner: decompress a stored batch, walk its records in
//! place, and build the batch that replaces it.
//!
//! Records are never re-serialised field by field. A kept record is copied byte for byte
//! (key, value and headers untouched), and only its timestamp delta is rewritten when the batch
//! gets a delete horizon (then `baseTimestamp` holds the horizon and deltas are relative to it).
//! The rebuilt batch keeps the original base offset, `lastOffsetDelta`, leader epoch,
//! producer id, epoch and base sequence, and its codec.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::offset_map::OffsetMap;
use super::CleanStats;
use crate::log::batch::HEADER_SIZE;
use crate::log::batch::{build_batch, read_varint, write_varint, BatchView, Codec, HeaderFields};
use crate::log::txn::{self, AbortedIndex, MarkerType};

/// One record inside a (decompressed) records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The whole record: its length varint and body.
    pub raw: &'a [u8],
    pub attributes: u8,
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    /// The body after the offset delta: key length, key, value length, value, headers.
    pub tail: &'a [u8],
    pub key: Option<&'a [u8]>,
    /// False for a tombstone (null value).
    pub has_value: bool,
}

/// The records section of a batch, decompressed when the batch is compressed.
pub fn records_section<'a>(view: &BatchView<'a>) -> Result<Cow<'a, [u8]>, String> {
    let body = &view.as_bytes()[HEADER_SIZE..];
    let codec = view.codec().map_err(|e| e.to_string())?;
    let out = match codec {
        Codec::None => return Ok(Cow::Borrowed(body)),
        Codec::Gzip => inflate::<Gzip>(body),
        Codec::Snappy => inflate::<Snappy>(body),
        Codec::Lz4 => inflate::<Lz4>(body),
        Codec::Zstd => inflate::<Zstd>(body),
    };
    out.map(|b| Cow::Owned(b.to_vec()))
        .map_err(|e| format!("cannot decompress a {codec:?} batch: {e:#}"))
}

fn inflate<D: Decompressor<Bytes, Buf = Bytes>>(body: &[u8]) -> anyhow::Result<Bytes> {
    let mut input = Bytes::copy_from_slice(body);
    D::decompress(&mut input, |b| Ok(std::mem::take(b)))
}

/// Compresses a records section with `codec`.
pub fn compress(codec: Codec, raw: &[u8]) -> Result<Vec<u8>, String> {
    let out = match codec {
        Codec::None => return Ok(raw.to_vec()),
        Codec::Gzip => deflate::<Gzip>(raw),
        Codec::Snappy => deflate::<Snappy>(raw),
        Codec::Lz4 => deflate::<Lz4>(raw),
        Codec::Zstd => deflate::<Zstd>(raw),
    };
    out.map_err(|e| format!("cannot compress with {codec:?}: {e:#}"))
}

fn deflate<C: Compressor<BytesMut, BufMut = BytesMut>>(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    C::compress(&mut out, |tmp| {
        tmp.extend_from_slice(raw);
        Ok(())
    })?;
    Ok(out.to_vec())
}

/// Walks the `view.records_count()` records of a records section. Every record must be well
/// framed and its offset must lie in the batch's offset range, strictly increasing.
pub fn parse_records<'a>(
    view: &BatchView<'_>,
    data: &'a [u8],
) -> Result<Vec<RecordRef<'a>>, String> {
    let count = view.records_count();
    if count < 0 {
        return Err("negative record count".into());
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut previous_delta = -1i64;
    for _ in 0..count {
        let record = parse_one(&mut rest).ok_or("malformed record")?;
        if record.offset_delta <= previous_delta
            || record.offset_delta > view.last_offset_delta() as i64
        {
            return Err(format!(
                "record offset delta {} outside the batch's range",
                record.offset_delta
            ));
        }
        previous_delta = record.offset_delta;
        out.push(record);
    }
    Ok(out)
}

fn parse_one<'a>(rest: &mut &'a [u8]) -> Option<RecordRef<'a>> {
    let start = *rest;
    let len = read_varint(rest)?;
    if len < 1 || len as usize > rest.len() {
        return None;
    }
    let prefix = start.len() - rest.len();
    let raw = &start[..prefix + len as usize];
    let mut body = &rest[..len as usize];
    *rest = &rest[len as usize..];
    let attributes = body[0];
    body = &body[1..];
    let timestamp_delta = read_varint(&mut body)?;
    let offset_delta = read_varint(&mut body)?;
    let tail = body;
    let key_len = read_varint(&mut body)?;
    let key = match key_len {
        -1 => None,
        n if n >= 0 && n as usize <= body.len() => {
            let (k, after) = body.split_at(n as usize);
            body = after;
            Some(k)
        }
        _ => return None,
    };
    let value_len = read_varint(&mut body)?;
    if value_len < -1 || value_len > body.len() as i64 {
        return None;
    }
    Some(RecordRef {
        raw,
        attributes,
        timestamp_delta,
        offset_delta,
        tail,
        key,
        has_value: value_len >= 0,
    })
}

/// Builds the batch that keeps only `kept` of `view`'s records, compressed with the batch's
/// codec. With `new_horizon`, the batch gets the delete-horizon attribute and `baseTimestamp`
/// becomes the horizon. For CreateTime batches the max timestamp is that of the kept records.
pub fn rebuild(
    view: &BatchView<'_>,
    kept: &[RecordRef<'_>],
    new_horizon: Option<i64>,
) -> Result<Vec<u8>, String> {
    let codec = view.codec().map_err(|e| e.to_string())?;
    let mut header = HeaderFields::of(view);
    let old_base = view.base_timestamp();
    let new_base = new_horizon.unwrap_or(old_base);
    if new_horizon.is_some() {
        header.set_delete_horizon(true);
        header.base_timestamp = new_base;
    }
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut max_timestamp = i64::MIN;
    for r in kept {
        let timestamp = old_base
            .checked_add(r.timestamp_delta)
            .ok_or("record timestamp overflows")?;
        max_timestamp = max_timestamp.max(timestamp);
        if new_base == old_base {
            raw.extend_from_slice(r.raw);
        } else {
            let delta = timestamp
                .checked_sub(new_base)
                .ok_or("record timestamp delta overflows")?;
            body.clear();
            body.push(r.attributes);
            write_varint(&mut body, delta);
            write_varint(&mut body, r.offset_delta);
            body.extend_from_slice(r.tail);
            write_varint(&mut raw, body.len() as i64);
            raw.extend_from_slice(&body);
        }
    }
    if !view.is_log_append_time() && !kept.is_empty() {
        header.max_timestamp = max_timestamp;
    }
    header.records_count = i32::try_from(kept.len()).map_err(|_| "too many records")?;
    let payload = compress(codec, &raw)?;
    build_batch(&header, &payload).map_err(|e| e.to_string())
}

/// A batch with no records that keeps `view`'s offset range and producer fields: what the
/// cleaner leaves when every record of a producer's last batch was removed, so that producer
/// state rebuilt from the log still finds the producer's last sequence (Kafka does the same).
pub fn empty_batch(view: &BatchView<'_>) -> Result<Vec<u8>, String> {
    let mut header = HeaderFields::of(view);
    header.set_codec_none();
    header.set_delete_horizon(false);
    header.base_timestamp = view.max_timestamp();
    header.records_count = 0;
    build_batch(&header, &[]).map_err(|e| e.to_string())
}

/// A batch's records, or why they cannot be read. A batch the cleaner cannot read was
/// accepted from a producer that way (its CRC is valid); it is kept as it is and not mapped.
pub(super) fn decode<'a>(view: &BatchView<'_>, data: &'a [u8]) -> Option<Vec<RecordRef<'a>>> {
    match parse_records(view, data) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(base_offset = view.base_offset(), error = %e,
                "the cleaner cannot read a batch's records; keeping it as it is");
            None
        }
    }
}

/// What the cleaner does with one batch.
pub(super) enum Outcome {
    Verbatim,
    Rewritten(Vec<u8>),
    Dropped,
}

pub(super) struct Filter<'a> {
    pub map: &'a mut OffsetMap,
    pub map_end: i64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub last_of_producer: &'a HashMap<i64, i64>,
    /// The earliest delete horizon among the tombstones kept so far.
    pub next_expiry: Option<i64>,
    pub stats: &'a mut CleanStats,
    pub txns: TxnCleaning,
}

/// What a pass learns about transactions as it walks the log from its start (Kafka's
/// `CleanedTransactionMetadata`): aborted transactions' data goes; a marker may go, once its
/// delete horizon has passed, when no batch of its transaction is left before it.
#[derive(Debug, Default)]
pub(super) struct TxnCleaning {
    pub aborted: AbortedIndex,
    /// ABORT markers (by offset) whose transaction still had a batch in this pass.
    aborted_seen: HashSet<i64>,
    /// Producers whose committed transactional data this pass kept, up to their marker.
    committed_seen: HashSet<i64>,
}

impl TxnCleaning {
    pub fn new(aborted: AbortedIndex) -> Self {
        Self {
            aborted,
            ..Self::default()
        }
    }

    /// Whether a transactional data batch belongs to an aborted transaction (noting that its
    /// transaction still had data), else noting the producer's committed data.
    fn data_is_aborted(&mut self, view: &BatchView<'_>) -> bool {
        match self
            .aborted
            .containing(view.producer_id(), view.base_offset())
        {
            Some(t) => {
                self.aborted_seen.insert(t.last_offset);
                true
            }
            None => {
                self.committed_seen.insert(view.producer_id());
                false
            }
        }
    }

    /// Whether a marker's transaction has no batch left before it.
    fn marker_is_alone(&mut self, view: &BatchView<'_>) -> bool {
        match txn::parse_marker(view).map(|m| m.kind) {
            Some(MarkerType::Abort) => !self.aborted_seen.remove(&view.base_offset()),
            Some(MarkerType::Commit) => !self.committed_seen.remove(&view.producer_id()),
            None => false,
        }
    }
}

impl Filter<'_> {
    pub fn batch(&mut self, view: &BatchView<'_>) -> Outcome {
        if view.base_offset() >= self.map_end {
            return Outcome::Verbatim;
        }
        if view.is_control() {
            return self.control_batch(view);
        }
        if view.is_transactional() && self.txns.data_is_aborted(view) {
            return self.aborted_batch(view);
        }
        let data = match records_section(view) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(base_offset = view.base_offset(), error = %e,
                    "the cleaner cannot read a batch; keeping it as it is");
                return Outcome::Verbatim;
            }
        };
        let Some(records) = decode(view, &data) else {
            return Outcome::Verbatim;
        };
        self.stats.records_read += records.len() as u64;
        let horizon = view.delete_horizon_ms();
        let retain_tombstones = horizon.is_none_or(|h| self.now_ms < h);
        let mut kept = Vec::with_capacity(records.len());
        let (mut kept_tombstones, mut cleaned_tombstones) = (false, false);
        for r in &records {
            let offset = view.base_offset() + r.offset_delta;
            let keep = if offset >= self.map_end {
                true
            } else {
                match r.key {
                    None => false,
                    Some(key) => {
                        let latest = self.map.get(key).is_none_or(|m| offset >= m);
                        latest && (r.has_value || retain_tombstones)
                    }
                }
            };
            if keep {
                kept.push(*r);
                if !r.has_value {
                    kept_tombstones = true;
                    cleaned_tombstones |= offset < self.map_end;
                }
            } else {
                self.stats.records_removed += 1;
                if !r.has_value {
                    self.stats.tombstones_removed += 1;
                }
            }
        }
        let new_horizon = (horizon.is_none() && cleaned_tombstones)
            .then(|| self.now_ms.saturating_add(self.delete_retention_ms));
        if kept_tombstones {
            if let Some(h) = new_horizon.or(horizon) {
                self.next_expiry = Some(self.next_expiry.map_or(h, |e| e.min(h)));
            }
        }
        let built = if kept.is_empty() {
            // Emptied now, or an empty batch left by an earlier pass: it stays only while it
            // is its producer's last batch.
            let pid = view.producer_id();
            if pid < 0 || self.last_of_producer.get(&pid) != Some(&view.last_offset()) {
                self.stats.batches_removed += 1;
                return Outcome::Dropped;
            }
            if records.is_empty() {
                return Outcome::Verbatim;
            }
            empty_batch(view)
        } else if kept.len() == records.len() && new_horizon.is_none() {
            return Outcome::Verbatim;
        } else {
            rebuild(view, &kept, new_horizon)
        };
        match built {
            Ok(bytes) => Outcome::Rewritten(bytes),
            Err(e) => {
                tracing::warn!(base_offset = view.base_offset(), error = %e,
                    "the cleaner cannot rebuild a batch; keeping it as it is");
                Outcome::Verbatim
            }
        }
    }
}

impl Filter<'_> {
    /// A batch of an aborted transaction: its records go; the batch stays (empty) only while
    /// it is its producer's last.
    fn aborted_batch(&mut self, view: &BatchView<'_>) -> Outcome {
        self.stats.records_removed += view.records_count().max(0) as u64;
        let pid = view.producer_id();
        if self.last_of_producer.get(&pid) != Some(&view.last_offset()) {
            self.stats.batches_removed += 1;
            return Outcome::Dropped;
        }
        if view.records_count() == 0 {
            return Outcome::Verbatim;
        }
        match empty_batch(view) {
            Ok(bytes) => Outcome::Rewritten(bytes),
            Err(_) => Outcome::Verbatim,
        }
    }

    /// A marker stays while its transaction has data before it. Once alone it gets a delete
    /// horizon (`delete.retention.ms`, as a tombstone does) and goes in the first pass after.
    fn control_batch(&mut self, view: &BatchView<'_>) -> Outcome {
        if !self.txns.marker_is_alone(view) {
            return Outcome::Verbatim;
        }
        match view.delete_horizon_ms() {
            Some(h) if h <= self.now_ms => {
                self.stats.batches_removed += 1;
                Outcome::Dropped
            }
            Some(h) => {
                self.next_expiry = Some(self.next_expiry.map_or(h, |e| e.min(h)));
                Outcome::Verbatim
            }
            None => {
                let horizon = self.now_ms.saturating_add(self.delete_retention_ms);
                self.next_expiry = Some(self.next_expiry.map_or(horizon, |e| e.min(horizon)));
                let data = match records_section(view) {
                    Ok(d) => d,
                    Err(_) => return Outcome::Verbatim,
                };
                let Some(records) = decode(view, &data) else {
                    return Outcome::Verbatim;
                };
                match rebuild(view, &records, Some(horizon)) {
                    Ok(bytes) => Outcome::Rewritten(bytes),
                    Err(_) => Outcome::Verbatim,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    use super::*;
    use crate::log::batch::check_batch;
    use crate::log::testing;

    #[test]
    fn parse_and_rebuild_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = testing::encode_batch(5, 1_000, 20, compression);
            let view = check_batch(&b).expect("valid");
            let data = records_section(&view).expect("decompress");
            let records = parse_records(&view, &data).expect("parse");
            assert_eq!(records.len(), 5);
            assert_eq!(records[3].key, Some(&b"k3"[..]));
            assert!(records[3].has_value);
            // Keep records 1 and 3.
            let kept = [records[1], records[3]];
            let out = rebuild(&view, &kept, None).expect("rebuild");
            let v = check_batch(&out).expect("valid crc");
            assert_eq!(v.codec().expect("codec"), view.codec().expect("codec"));
            assert_eq!(v.base_offset(), view.base_offset());
            assert_eq!(v.last_offset_delta(), 4);
            assert_eq!(v.records_count(), 2);
            assert_eq!(v.max_timestamp(), 1_003);
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(out.clone()))
                .expect("the kafka-protocol decoder reads it");
            let offsets: Vec<(i64, i64)> = decoded
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp))
                .collect();
            assert_eq!(offsets, vec![(1, 1_001), (3, 1_003)], "{compression:?}");
            // With a delete horizon the timestamps stay the same.
            let out = rebuild(&view, &kept, Some(99_000)).expect("rebuild");
            let v = check_batch(&out).expect("valid crc");
            assert_eq!(v.delete_horizon_ms(), Some(99_000));
            let decoded =
                RecordBatchDecoder::decode(&mut Bytes::from(out.clone())).expect("decode");
            let ts: Vec<i64> = decoded.records.iter().map(|r| r.timestamp).collect();
            assert_eq!(ts, vec![1_001, 1_003]);
            assert!(decoded.records.iter().all(|r| r.delete_horizon));
        }
    }

    #[test]
    fn empty_batch_keeps_the_offset_range() {
        let b = testing::encode_batch(3, 50, 4, Compression::Gzip);
        let view = check_batch(&b).expect("valid");
        let out = empty_batch(&view).expect("empty");
        let v = check_batch(&out).expect("valid");
        assert_eq!(v.records_count(), 0);
        assert_eq!(v.last_offset(), 2);
        assert_eq!(v.codec().expect("codec"), Codec::None);
        assert_eq!(v.max_timestamp(), 52);
    }

    #[test]
    fn malformed_records_are_reported_not_panicked_on() {
        let b = testing::encode_batch(3, 50, 4, Compression::None);
        let view = check_batch(&b).expect("valid");
        let data = records_section(&view).expect("section");
        for cut in 0..data.len() {
            assert!(parse_records(&view, &data[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = data.to_vec();
        bad[0] = 0x7f; // a record length far past the end
        assert!(parse_records(&view, &bad).is_err());
    }
}
