//! Reads one header of a batch's first record: how a produce finds the W3C `traceparent` its
//! producer put there, without materialising records.
//!
//! An uncompressed batch is read in place: a few varints are decoded and the key and value are
//! skipped, never copied. A compressed batch is read only when the caller allows it (the
//! topic's `gregor.trace.headers`): then just enough of the records section is decompressed,
//! as a stream, to reach the first record's headers; the value is skipped through a small
//! buffer, never held whole.

use std::io::Read;

use super::batch::{BatchView, Codec, HEADER_SIZE};

/// Longest header value returned (a traceparent is 55 bytes, a tracestate at most 512).
const MAX_HEADER_VALUE: usize = 1024;
/// The first record must fit in this many bytes to be read when decompressing.
const MAX_DECOMPRESSED_RECORD: usize = 16 << 20;

/// The value of header `name` on the batch's first record. `None` when it has no such header,
/// when the value is larger than we look at, or when the batch is compressed and
/// `decompress` is false.
pub fn first_record_header(
    batch: &BatchView<'_>,
    name: &[u8],
    decompress: bool,
) -> Option<Vec<u8>> {
    let body = batch.as_bytes().get(HEADER_SIZE..)?;
    if batch.records_count() < 1 {
        return None;
    }
    match batch.codec().ok()? {
        Codec::None => find_header(&mut SliceSource(body), name),
        _ if !decompress => None,
        Codec::Gzip => find_header(
            &mut ReadSource::new(flate2::read::GzDecoder::new(body)),
            name,
        ),
        Codec::Lz4 => find_header(&mut ReadSource::new(lz4::Decoder::new(body).ok()?), name),
        Codec::Zstd => find_header(
            &mut ReadSource::new(zstd::stream::read::Decoder::with_buffer(body).ok()?),
            name,
        ),
        Codec::Snappy => find_header(&mut ReadSource::new(SnappyReader::new(body)?), name),
    }
}

/// Bytes to parse a record from.
trait Source {
    fn byte(&mut self) -> Option<u8>;
    fn skip(&mut self, n: usize) -> Option<()>;
    fn take(&mut self, n: usize) -> Option<Vec<u8>>;

    /// A zig-zag varint, as Kafka's record fields use.
    fn varint(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        None
    }
}

/// A length-prefixed field: `None` for null (-1), an error for other negatives.
fn field_len(src: &mut impl Source) -> Option<Option<usize>> {
    match src.varint()? {
        -1 => Some(None),
        n if n < 0 => None,
        n => Some(Some(usize::try_from(n).ok()?)),
    }
}

/// Parses the first record (length, attributes, timestamp and offset deltas, key, value) and
/// returns the value of the first header named `name`.
fn find_header(src: &mut impl Source, name: &[u8]) -> Option<Vec<u8>> {
    let length = usize::try_from(src.varint()?).ok()?;
    if length > MAX_DECOMPRESSED_RECORD {
        return None;
    }
    src.byte()?; // attributes
    src.varint()?; // timestamp delta
    src.varint()?; // offset delta
    if let Some(n) = field_len(src)? {
        src.skip(n)?;
    }
    if let Some(n) = field_len(src)? {
        src.skip(n)?;
    }
    let count = src.varint()?;
    for _ in 0..count.clamp(0, 1024) {
        let key_len = field_len(src)??;
        let matches = if key_len == name.len() {
            src.take(key_len)? == name
        } else {
            src.skip(key_len)?;
            false
        };
        let value_len = field_len(src)?;
        match value_len {
            Some(n) if matches && n <= MAX_HEADER_VALUE => return src.take(n),
            Some(n) => src.skip(n)?,
            None if matches => return None,
            None => {}
        }
    }
    None
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        let v = self.0.get(..n)?.to_vec();
        self.0 = &self.0[n..];
        Some(v)
    }
}

/// A decompressing stream, read through a small buffer.
struct ReadSource<R: Read> {
    inner: std::io::BufReader<R>,
}

impl<R: Read> ReadSource<R> {
    fn new(r: R) -> Self {
        Self {
            inner: std::io::BufReader::with_capacity(8 * 1024, r),
        }
    }
}

impl<R: Read> Source for ReadSource<R> {
    fn byte(&mut self) -> Option<u8> {
        let mut b = [0u8; 1];
        self.inner.read_exact(&mut b).ok()?;
        Some(b[0])
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        let copied =
            std::io::copy(&mut (&mut self.inner).take(n as u64), &mut std::io::sink()).ok()?;
        (copied == n as u64).then_some(())
    }
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.inner.read_exact(&mut v).ok()?;
        Some(v)
    }
}

/// Kafka's snappy: xerial's framing (a magic header, then length-prefixed raw blocks of at
/// most 32 KiB uncompressed), decompressed one block at a time; or one raw block without it.
struct SnappyReader<'a> {
    rest: &'a [u8],
    block: Vec<u8>,
    at: usize,
    framed: bool,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8]) -> Option<Self> {
        if body.starts_with(XERIAL_MAGIC) && body.len() >= XERIAL_HEADER {
            return Some(Self {
                rest: &body[XERIAL_HEADER..],
                block: Vec::new(),
                at: 0,
                framed: true,
            });
        }
        let block = snap::raw::Decoder::new().decompress_vec(body).ok()?;
        Some(Self {
            rest: &[],
            block,
            at: 0,
            framed: false,
        })
    }

    fn next_block(&mut self) -> std::io::Result<bool> {
        if !self.framed || self.rest.len() < 4 {
            return Ok(false);
        }
        let len =
            u32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]) as usize;
        let compressed = self
            .rest
            .get(4..4 + len)
            .ok_or_else(|| std::io::Error::other("truncated snappy block"))?;
        self.rest = &self.rest[4 + len..];
        self.block = snap::raw::Decoder::new()
            .decompress_vec(compressed)
            .map_err(std::io::Error::other)?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::check_batch;
    use bytes::Bytes;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn batch(compression: Compression, headers: &[(&str, &str)], value_len: usize) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..3 {
            let mut h = indexmap::IndexMap::new();
            if i == 0 {
                for (k, v) in headers {
                    h.insert(
                        StrBytes::from_string(k.to_string()),
                        Some(Bytes::from(v.to_string())),
                    );
                }
            }
            records.push(Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::from(vec![b'v'; value_len])),
                headers: h,
                delete_horizon: false,
            });
        }
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.to_vec()
    }

    #[test]
    fn finds_the_first_records_header_in_place() {
        let b = batch(
            Compression::None,
            &[("a", "1"), ("traceparent", TRACEPARENT)],
            100,
        );
        let view = check_batch(&b).unwrap();
        let found = first_record_header(&view, b"traceparent", false).unwrap();
        assert_eq!(found, TRACEPARENT.as_bytes());
        assert_eq!(first_record_header(&view, b"tracestate", false), None);
        let plain = batch(Compression::None, &[], 100);
        assert_eq!(
            first_record_header(&check_batch(&plain).unwrap(), b"traceparent", false),
            None
        );
    }

    #[test]
    fn compressed_batches_are_read_only_when_allowed() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            // A value larger than a snappy block and the read buffer: it is skipped, streamed.
            let b = batch(compression, &[("traceparent", TRACEPARENT)], 100_000);
            let view = check_batch(&b).unwrap();
            assert_eq!(
                first_record_header(&view, b"traceparent", false),
                None,
                "{compression:?}"
            );
            let found = first_record_header(&view, b"traceparent", true);
            assert_eq!(
                found.as_deref(),
                Some(TRACEPARENT.as_bytes()),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let b = batch(Compression::None, &[("traceparent", TRACEPARENT)], 10);
        for cut in HEADER_SIZE..b.len() {
            let mut damaged = b.clone();
            for byte in &mut damaged[cut..] {
                *byte = 0xff;
            }
            let _ = find_header(&mut SliceSource(&damaged[HEADER_SIZE..]), b"traceparent");
            let _ = find_header(&mut SliceSource(&b[HEADER_SIZE..cut]), b"traceparent");
        }
    }
}
