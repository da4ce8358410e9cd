//! Response frames: size prefix, response header, body. Most responses are encoded into one
//! buffer. A Fetch response is encoded around its record slices instead: the slices of the
//! segment mappings that the log handed out are kept as separate parts and written to the
//! socket with vectored writes, so record bytes are never copied in user space.

use bytes::{buf::UninitSlice, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

/// Record slices smaller than this are copied: a separate part costs more than the copy.
const ZERO_COPY_MIN_BYTES: usize = 4096;

/// A complete response frame (size prefix included), in one or more parts.
#[derive(Debug, Clone)]
pub enum ResponseFrame {
    One(Bytes),
    Parts(Vec<Bytes>),
}

impl ResponseFrame {
    pub fn len(&self) -> usize {
        match self {
            ResponseFrame::One(b) => b.len(),
            ResponseFrame::Parts(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (copies a multi-part frame; for tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            ResponseFrame::One(b) => b.clone(),
            ResponseFrame::Parts(parts) => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}

/// The size of header plus body, and the header, for `api_key` at `api_version`.
fn sized<R: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    header_version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<(ResponseHeader, usize), String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(api_version).map(|b| h + b))
        .map_err(|e| format!("sizing {api_key:?} v{api_version} response: {e}"))?;
    Ok((header, size))
}

/// Encodes a response frame into one buffer.
pub fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    header_version: Option<i16>,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, String> {
    let header_version =
        header_version.unwrap_or_else(|| api_key.response_header_version(api_version));
    let (header, size) = sized(api_key, api_version, header_version, correlation_id, body)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, api_version))
        .map_err(|e| format!("encoding {api_key:?} v{api_version} response: {e}"))?;
    debug_assert_eq!(buf.len(), 4 + size);
    Ok(buf.freeze())
}

/// Encodes a Fetch response with its record slices as parts of their own.
pub fn encode_fetch_frame(
    api_version: i16,
    correlation_id: i32,
    body: &FetchResponse,
) -> Result<ResponseFrame, String> {
    let records: Vec<Bytes> = body
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= ZERO_COPY_MIN_BYTES)
        .collect();
    if records.is_empty() {
        return encode_frame(ApiKey::Fetch, api_version, None, correlation_id, body)
            .map(ResponseFrame::One);
    }
    let header_version = ApiKey::Fetch.response_header_version(api_version);
    let (header, size) = sized(
        ApiKey::Fetch,
        api_version,
        header_version,
        correlation_id,
        body,
    )?;
    let mut buf = SegmentedBuf::new(records);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, api_version))
        .map_err(|e| format!("encoding Fetch v{api_version} response: {e}"))?;
    match buf.finish() {
        Some(parts) if parts.iter().map(Bytes::len).sum::<usize>() == 4 + size => {
            Ok(ResponseFrame::Parts(parts))
        }
        // The encoder used the buffer in a way parts cannot serve: copy after all.
        _ => encode_frame(ApiKey::Fetch, api_version, None, correlation_id, body)
            .map(ResponseFrame::One),
    }
}

/// A `BufMut` that copies what it is given, except the record slices it was told about,
/// which it keeps as parts of their own (by reference to the same memory).
struct SegmentedBuf {
    /// The known record slices, by address.
    records: std::collections::HashMap<usize, Bytes>,
    parts: Vec<Bytes>,
    current: BytesMut,
    /// Bytes in `parts`.
    done: usize,
    /// The encoder asked for something parts cannot do (seek back into a finished part).
    unusable: bool,
    scratch: Vec<u8>,
}

impl SegmentedBuf {
    fn new(records: Vec<Bytes>) -> Self {
        Self {
            records: records
                .into_iter()
                .map(|r| (r.as_ptr() as usize, r))
                .collect(),
            parts: Vec::new(),
            current: BytesMut::with_capacity(1024),
            done: 0,
            unusable: false,
            scratch: Vec::new(),
        }
    }

    fn known_record(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < ZERO_COPY_MIN_BYTES {
            return None;
        }
        self.records
            .get(&(src.as_ptr() as usize))
            .filter(|r| r.len() == src.len())
            .cloned()
    }

    fn finish(mut self) -> Option<Vec<Bytes>> {
        if self.unusable {
            return None;
        }
        if !self.current.is_empty() {
            self.parts.push(self.current.split().freeze());
        }
        Some(self.parts)
    }
}

// SAFETY: every method delegates to the `BytesMut` being filled, which upholds `BufMut`'s
// contract; finished parts are never written again.
unsafe impl BufMut for SegmentedBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, as the contract says.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.known_record(src) {
            Some(record) => {
                if !self.current.is_empty() {
                    let head = self.current.split().freeze();
                    self.done += head.len();
                    self.parts.push(head);
                }
                self.done += record.len();
                self.parts.push(record);
            }
            None => self.current.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for SegmentedBuf {
    fn offset(&self) -> usize {
        self.done + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.done) {
            Some(at) => self.current.resize(at, 0),
            None => self.unusable = true,
        }
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        match (r.start.checked_sub(self.done), r.end.checked_sub(self.done)) {
            (Some(start), Some(end)) if end <= self.current.len() => &mut self.current[start..end],
            _ => {
                self.unusable = true;
                self.scratch.resize(r.len(), 0);
                &mut self.scratch
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn response(records: Vec<Bytes>) -> FetchResponse {
        let partitions = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(7)
                    .with_records(Some(r))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("chat-topic")))
            .with_partitions(partitions)])
    }

    #[test]
    fn record_slices_are_parts_and_the_bytes_match_a_plain_encoding() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let other = Bytes::from(vec![3u8; 5_000]);
        for version in [4i16, 11, 12] {
            let resp = response(vec![big.clone(), small.clone(), other.clone()]);
            let plain = encode_frame(ApiKey::Fetch, version, None, 42, &resp).expect("plain");
            let frame = encode_fetch_frame(version, 42, &resp).expect("parts");
            let ResponseFrame::Parts(parts) = &frame else {
                panic!("v{version}: expected parts");
            };
            assert!(
                parts.iter().any(|p| p.as_ptr() == big.as_ptr()),
                "v{version}: the big record slice is shared, not copied"
            );
            assert!(parts.iter().any(|p| p.as_ptr() == other.as_ptr()));
            assert!(parts.iter().all(|p| p.as_ptr() != small.as_ptr()));
            assert_eq!(frame.to_bytes(), plain, "v{version}");
        }
        let resp = response(vec![small]);
        assert!(matches!(
            encode_fetch_frame(12, 1, &resp).expect("one"),
            ResponseFrame::One(_)
        ));
    }
}
