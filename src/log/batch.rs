//! RecordBatch (magic v2) header view and validation.
//!
//! Gregor stores batches exactly as producers send them. This module reads the fixed 61-byte
//! header in place, checks framing and the CRC32C, and rewrites only the fields the broker owns
//! (`baseOffset`, `partitionLeaderEpoch`, and for LogAppendTime topics `maxTimestamp`). It never
//! decompresses or materialises records.

use bytes::{Buf, Bytes};

/// Bytes before `batchLength` ends: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD: usize = 12;
/// The full fixed header of a v2 batch.
pub const HEADER_SIZE: usize = 61;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// Set by the log cleaner on batches whose tombstones have a delete horizon: `baseTimestamp`
/// then holds that horizon (Kafka 3's KIP-534 layout), and record timestamp deltas are relative
/// to it.
const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// Why a batch was refused. Each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Framing or checksum is wrong: CORRUPT_MESSAGE.
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
    /// Well-framed but semantically invalid: INVALID_RECORD.
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
    /// A compression codec id that does not exist: UNSUPPORTED_COMPRESSION_TYPE.
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
}

/// Compression codec named in a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A read-only view of one complete batch (header plus records) in a byte slice.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchView<'a> {
    /// Wraps a slice that holds exactly one batch whose framing was already checked.
    fn new(bytes: &'a [u8]) -> Self {
        debug_assert!(bytes.len() >= HEADER_SIZE);
        Self { bytes }
    }

    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, BASE_OFFSET)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, PARTITION_LEADER_EPOCH)
    }
    pub fn stored_crc(&self) -> u32 {
        u32::from_be_bytes([
            self.bytes[CRC],
            self.bytes[CRC + 1],
            self.bytes[CRC + 2],
            self.bytes[CRC + 3],
        ])
    }
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, ATTRIBUTES)
    }
    pub fn codec(&self) -> Result<Codec, BatchError> {
        match self.attributes() & COMPRESSION_MASK {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    /// The time after which the cleaner may drop this batch's tombstones, if it set one.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & DELETE_HORIZON_BIT != 0).then(|| self.base_timestamp())
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, BASE_SEQUENCE)
    }
    /// The sequence of the batch's last record, wrapping past i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence(), self.last_offset_delta())
    }
    pub fn records_count(&self) -> i32 {
        be_i32(self.bytes, RECORDS_COUNT)
    }
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from i32::MAX to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Reads the size of the batch that starts at `buf[0]` from its 12-byte prefix, or `None` when
/// fewer than 12 bytes remain. The size includes the prefix. A negative length yields `Err`.
pub fn peek_batch_size(buf: &[u8]) -> Option<Result<usize, BatchError>> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, BATCH_LENGTH);
    if len < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Some(Err(BatchError::Corrupt(
            "batch length below the v2 header size",
        )));
    }
    Some(Ok(LOG_OVERHEAD + len as usize))
}

/// Checks the framing of the first batch in `buf`: the size prefix, the whole batch present,
/// magic 2, and the CRC32C. Returns a view of exactly that batch.
pub fn check_batch(buf: &[u8]) -> Result<BatchView<'_>, BatchError> {
    let size = match peek_batch_size(buf) {
        None => return Err(BatchError::Corrupt("truncated batch header")),
        Some(size) => size?,
    };
    if buf.len() < size {
        return Err(BatchError::Corrupt(
            "batch length exceeds the available bytes",
        ));
    }
    if buf[MAGIC] != 2 {
        return Err(BatchError::Invalid(
            "only record batch magic v2 is supported",
        ));
    }
    let view = BatchView::new(&buf[..size]);
    if view.stored_crc() != view.computed_crc() {
        return Err(BatchError::Corrupt("record batch CRC32C mismatch"));
    }
    Ok(view)
}

/// Validates a produce request's records for one partition, as Kafka does for produce v3 and
/// later: exactly one well-formed v2 batch, a known codec, and a consistent record count.
pub fn validate_produce_batch(records: &[u8]) -> Result<BatchView<'_>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid(
            "produce requests must have at least one record batch per partition",
        ));
    }
    let view = check_batch(records)?;
    if view.size() != records.len() {
        return Err(BatchError::Invalid(
            "produce requests may only contain exactly one record batch",
        ));
    }
    view.codec()?;
    let count = view.records_count();
    if count <= 0 {
        return Err(BatchError::Invalid("record batch has no records"));
    }
    if view.last_offset_delta() < 0 || view.last_offset_delta() as i64 + 1 != count as i64 {
        return Err(BatchError::Invalid(
            "inconsistent batch offset range and record count",
        ));
    }
    if view.is_control() {
        return Err(BatchError::Invalid(
            "clients may not produce control batches",
        ));
    }
    Ok(view)
}

/// The producer fields of a batch's header, read without validating the batch: (producer
/// id, producer epoch, transactional). `None` when `buf` is shorter than a header.
pub fn peek_producer(buf: &[u8]) -> Option<(i64, i16, bool)> {
    if buf.len() < HEADER_SIZE {
        return None;
    }
    let view = BatchView::new(&buf[..HEADER_SIZE]);
    Some((
        view.producer_id(),
        view.producer_epoch(),
        view.is_transactional(),
    ))
}

/// Iterates over the complete batches at the start of `buf`, checking only the size prefix.
/// Stops at the first incomplete batch. Used on data that was validated when it was written.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, position: 0 }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// (position within the buffer, batch)
    type Item = (usize, BatchView<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.position..];
        let size = peek_batch_size(rest)?.ok()?;
        if rest.len() < size || size < HEADER_SIZE {
            return None;
        }
        let at = self.position;
        self.position += size;
        Some((at, BatchView::new(&rest[..size])))
    }
}

/// The 16-byte prefix Gregor writes in front of an unchanged batch body: the new baseOffset,
/// the original batchLength, and the new partitionLeaderEpoch. Bytes 16.. of the batch follow
/// as received, so the CRC (which covers attributes onwards) stays valid.
pub fn rewritten_prefix(batch: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; 16] {
    let mut prefix = [0u8; 16];
    prefix[..8].copy_from_slice(&base_offset.to_be_bytes());
    prefix[8..12].copy_from_slice(&batch[BATCH_LENGTH..BATCH_LENGTH + 4]);
    prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    prefix
}

/// Copies a batch and stamps it with LogAppendTime: sets the timestamp-type attribute, writes
/// `max_timestamp`, and recomputes the CRC. Offset and epoch are left for the writer.
pub fn with_log_append_time(batch: &[u8], now_ms: i64) -> Bytes {
    let mut out = batch.to_vec();
    let attrs = be_i16(&out, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A record's key and value; `None` is null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds one uncompressed v2 batch (base offset 0, no producer) of `(key, value)` records,
/// all stamped `timestamp`; a `None` value is a tombstone. Used by the broker's own writes
/// (the coordinators' `__consumer_offsets` and `__transaction_state` records).
pub fn encode_uncompressed_batch(records: &[KeyValue<'_>], timestamp: i64) -> Vec<u8> {
    encode_records_batch(records, timestamp, None)
}

/// A coordinator's write on a producer's behalf: producer id and epoch, and whether the batch
/// is part of the producer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transactional: bool,
}

/// Like [`encode_uncompressed_batch`], written by `producer` when given (base sequence 0, as
/// Kafka's coordinators write it).
pub fn encode_records_batch(
    records: &[KeyValue<'_>],
    timestamp: i64,
    producer: Option<BatchProducer>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        let mut rec = vec![0u8]; // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, delta as i64);
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let header = HeaderFields {
        base_offset: 0,
        partition_leader_epoch: 0,
        attributes: if producer.is_some_and(|p| p.transactional) {
            TRANSACTIONAL_BIT
        } else {
            0
        },
        last_offset_delta: records.len() as i32 - 1,
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        producer_id: producer.map_or(-1, |p| p.producer_id),
        producer_epoch: producer.map_or(-1, |p| p.producer_epoch),
        base_sequence: if producer.is_some() { 0 } else { -1 },
        records_count: records.len() as i32,
    };
    build_batch(&header, &body).expect("a coordinator's batch fits")
}

/// The header fields of a v2 batch that a writer chooses (the log cleaner, when it rewrites a
/// batch). Length, magic and CRC are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl HeaderFields {
    /// The header of an existing batch.
    pub fn of(view: &BatchView<'_>) -> Self {
        Self {
            base_offset: view.base_offset(),
            partition_leader_epoch: view.partition_leader_epoch(),
            attributes: view.attributes(),
            last_offset_delta: view.last_offset_delta(),
            base_timestamp: view.base_timestamp(),
            max_timestamp: view.max_timestamp(),
            producer_id: view.producer_id(),
            producer_epoch: view.producer_epoch(),
            base_sequence: view.base_sequence(),
            records_count: view.records_count(),
        }
    }

    /// Sets or clears the delete-horizon attribute.
    pub fn set_delete_horizon(&mut self, on: bool) {
        if on {
            self.attributes |= DELETE_HORIZON_BIT;
        } else {
            self.attributes &= !DELETE_HORIZON_BIT;
        }
    }

    /// Replaces the compression codec in the attributes.
    pub fn set_codec_none(&mut self) {
        self.attributes &= !COMPRESSION_MASK;
    }
}

/// Builds a complete v2 batch from a header and its (possibly compressed) records section,
/// with the length and CRC32C computed.
pub fn build_batch(h: &HeaderFields, records: &[u8]) -> Result<Vec<u8>, BatchError> {
    let length = HEADER_SIZE - LOG_OVERHEAD + records.len();
    let length = i32::try_from(length).map_err(|_| BatchError::Invalid("batch too large"))?;
    let mut out = Vec::with_capacity(HEADER_SIZE + records.len());
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.records_count.to_be_bytes());
    debug_assert_eq!(out.len(), HEADER_SIZE);
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Appends one signed varint (zigzag), the inverse of `read_varint`.
pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one signed varint (zigzag) as used inside records.
pub fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        if !buf.has_remaining() || shift > 63 {
            return None;
        }
        let byte = buf.get_u8();
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing;
    use kafka_protocol::records::Compression;

    fn encode_batch(n: usize, compression: Compression) -> Vec<u8> {
        testing::encode_batch(n, 1_000, 8, compression)
    }

    #[test]
    fn valid_batch_is_accepted_and_read() {
        let b = encode_batch(3, Compression::None);
        let v = validate_produce_batch(&b).expect("valid");
        assert_eq!(v.records_count(), 3);
        assert_eq!(v.last_offset_delta(), 2);
        assert_eq!(v.base_timestamp(), 1_000);
        assert_eq!(v.max_timestamp(), 1_002);
        assert_eq!(v.codec(), Ok(Codec::None));
        assert_eq!(v.size(), b.len());
    }

    #[test]
    fn flipped_bit_fails_crc() {
        let mut b = encode_batch(2, Compression::None);
        let last = b.len() - 1;
        b[last] ^= 0x01;
        assert_eq!(
            validate_produce_batch(&b).err(),
            Some(BatchError::Corrupt("record batch CRC32C mismatch"))
        );
    }

    #[test]
    fn truncated_and_trailing_bytes_are_rejected() {
        let b = encode_batch(2, Compression::None);
        assert!(matches!(
            validate_produce_batch(&b[..b.len() - 1]),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            validate_produce_batch(&b[..5]),
            Err(BatchError::Corrupt(_))
        ));
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert!(matches!(
            validate_produce_batch(&two),
            Err(BatchError::Invalid(_))
        ));
    }

    #[test]
    fn rewritten_prefix_keeps_crc_valid() {
        let b = encode_batch(4, Compression::None);
        let prefix = rewritten_prefix(&b, 1234, 7);
        let mut stored = prefix.to_vec();
        stored.extend_from_slice(&b[16..]);
        let v = check_batch(&stored).expect("still valid");
        assert_eq!(v.base_offset(), 1234);
        assert_eq!(v.partition_leader_epoch(), 7);
        assert_eq!(v.last_offset(), 1237);
    }

    #[test]
    fn log_append_time_rewrites_timestamp_and_crc() {
        let b = encode_batch(2, Compression::None);
        let stamped = with_log_append_time(&b, 99_999);
        let v = check_batch(&stamped).expect("valid crc");
        assert!(v.is_log_append_time());
        assert_eq!(v.max_timestamp(), 99_999);
    }

    #[test]
    fn iterator_stops_at_partial_batch() {
        let b = encode_batch(2, Compression::None);
        let mut buf = b.clone();
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&b[..20]);
        let positions: Vec<usize> = BatchIter::new(&buf).map(|(p, _)| p).collect();
        assert_eq!(positions, vec![0, b.len()]);
    }

    #[test]
    fn broker_built_batches_decode() {
        let raw =
            encode_uncompressed_batch(&[(Some(b"k1"), Some(b"v1")), (Some(b"k2"), None)], 777);
        let v = validate_produce_batch(&raw).expect("valid");
        assert_eq!(v.records_count(), 2);
        let mut b = Bytes::from(raw.clone());
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).expect("decodes");
        assert_eq!(set.records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(set.records[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(set.records[1].offset, 1);
        assert_eq!(set.records[1].value, None);
        assert_eq!(set.records[1].timestamp, 777);
    }

    #[test]
    fn build_batch_reproduces_an_encoded_batch() {
        for compression in [Compression::None, Compression::Gzip] {
            let b = encode_batch(3, compression);
            let v = check_batch(&b).expect("valid");
            let rebuilt = build_batch(&HeaderFields::of(&v), &b[HEADER_SIZE..]).expect("build");
            assert_eq!(rebuilt, b);
        }
        let b = encode_batch(2, Compression::None);
        let v = check_batch(&b).expect("valid");
        let mut h = HeaderFields::of(&v);
        h.set_delete_horizon(true);
        h.base_timestamp = 5_000;
        let rebuilt = build_batch(&h, &b[HEADER_SIZE..]).expect("build");
        let r = check_batch(&rebuilt).expect("crc recomputed");
        assert_eq!(r.delete_horizon_ms(), Some(5_000));
        assert_eq!(v.delete_horizon_ms(), None);
        assert!(!r.is_transactional());
    }

    #[test]
    fn varint_write_read_roundtrip() {
        let values = [
            0i64,
            -1,
            1,
            63,
            -64,
            64,
            150,
            -150,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ];
        let mut buf = Vec::new();
        for v in values {
            write_varint(&mut buf, v);
        }
        let mut s: &[u8] = &buf;
        for v in values {
            assert_eq!(read_varint(&mut s), Some(v));
        }
        assert!(s.is_empty());
    }

    #[test]
    fn varint_roundtrip_examples() {
        let mut s: &[u8] = &[0x00, 0x01, 0x02, 0xac, 0x02];
        assert_eq!(read_varint(&mut s), Some(0));
        assert_eq!(read_varint(&mut s), Some(-1));
        assert_eq!(read_varint(&mut s), Some(1));
        assert_eq!(read_varint(&mut s), Some(150));
        assert_eq!(read_varint(&mut s), None);
    }
}
