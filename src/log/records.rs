//! Record-level reads inside a stored batch, for the few paths that need them (ListOffsets by
//! timestamp). Compressed batches are decompressed here and only here; produce and fetch never
//! come this way.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::{read_varint, BatchView, Codec, HEADER_SIZE};

/// The first record in `batch` with timestamp >= `timestamp` and offset >= `min_offset`,
/// as (offset, timestamp). For LogAppendTime batches every record carries the batch's max
/// timestamp.
pub fn first_record_at_or_after(
    batch: &BatchView<'_>,
    timestamp: i64,
    min_offset: i64,
) -> Option<(i64, i64)> {
    if batch.is_log_append_time() {
        let ts = batch.max_timestamp();
        let offset = batch.base_offset().max(min_offset);
        return (ts >= timestamp && offset <= batch.last_offset()).then_some((offset, ts));
    }
    record_timestamps(batch)?
        .into_iter()
        .find(|(o, ts)| *ts >= timestamp && *o >= min_offset)
}

/// (offset, timestamp) of every record in the batch.
fn record_timestamps(batch: &BatchView<'_>) -> Option<Vec<(i64, i64)>> {
    match batch.codec().ok()? {
        Codec::None => uncompressed_timestamps(batch),
        _ => {
            let mut bytes = Bytes::copy_from_slice(batch.as_bytes());
            match RecordBatchDecoder::decode(&mut bytes) {
                Ok(set) => Some(
                    set.records
                        .iter()
                        .map(|r| (r.offset, r.timestamp))
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not decode a stored batch");
                    None
                }
            }
        }
    }
}

/// Walks uncompressed records: length, attributes, timestampDelta, offsetDelta, ...
fn uncompressed_timestamps(batch: &BatchView<'_>) -> Option<Vec<(i64, i64)>> {
    let mut rest = &batch.as_bytes()[HEADER_SIZE..];
    let mut out = Vec::with_capacity(batch.records_count().max(0) as usize);
    for _ in 0..batch.records_count() {
        let len = read_varint(&mut rest)?;
        if len < 0 || len as usize > rest.len() {
            return None;
        }
        let (mut record, tail) = rest.split_at(len as usize);
        rest = tail;
        if record.is_empty() {
            return None;
        }
        record = &record[1..]; // attributes
        let ts_delta = read_varint(&mut record)?;
        let offset_delta = read_varint(&mut record)?;
        out.push((
            batch.base_offset() + offset_delta,
            batch.base_timestamp() + ts_delta,
        ));
    }
    Some(out)
}
