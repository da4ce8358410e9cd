//! Test helpers: builds real record batches with the kafka-protocol encoder.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One v2 batch of `n` records with timestamps `first_ts..`, keys `k<i>` and values of
/// `value_len` bytes.
pub fn encode_batch(
    n: usize,
    first_ts: i64,
    value_len: usize,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: first_ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'x'; value_len])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.to_vec()
}

/// One record for `keyed_batch`: key, value (None: a tombstone) and timestamp.
pub type TestRecord<'a> = (Option<&'a str>, Option<&'a str>, i64);

/// The producer fields of a test batch: producer id, epoch, base sequence.
pub type TestProducer = (i64, i16, i32);

/// One v2 batch of the given records, with a header `h=<key>` on every keyed record, written
/// by `producer` (or by no producer: id -1, sequence -1).
pub fn keyed_batch(
    records: &[TestRecord<'_>],
    compression: Compression,
    producer: Option<TestProducer>,
) -> Vec<u8> {
    producer_batch(records, compression, producer, false)
}

/// Like [`keyed_batch`], written by `producer` inside a transaction.
pub fn transactional_batch(
    records: &[TestRecord<'_>],
    compression: Compression,
    producer: TestProducer,
) -> Vec<u8> {
    producer_batch(records, compression, Some(producer), true)
}

fn producer_batch(
    records: &[TestRecord<'_>],
    compression: Compression,
    producer: Option<TestProducer>,
    transactional: bool,
) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value, ts))| {
            let mut headers = indexmap::IndexMap::new();
            if let Some(k) = key {
                headers.insert(
                    kafka_protocol::protocol::StrBytes::from_string("h".into()),
                    Some(Bytes::from(k.to_string())),
                );
            }
            Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: *ts,
                key: key.map(|k| Bytes::from(k.to_string())),
                value: value.map(|v| Bytes::from(v.to_string())),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.to_vec()
}
