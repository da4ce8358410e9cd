//! Tests for PartitionLog: append, read, roll, indexes, recovery of torn tails.

use std::sync::Arc;

use kafka_protocol::records::Compression;

use super::batch::{check_batch, validate_produce_batch, BatchIter};
use super::config::{LogConfig, TimestampType};
use super::partition_log::{LogError, PartitionLog};
use super::testing;

fn batch(n: usize, first_ts: i64, value_len: usize) -> Vec<u8> {
    testing::encode_batch(n, first_ts, value_len, Compression::None)
}

fn small_config() -> Arc<LogConfig> {
    Arc::new(LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        segment_index_bytes: 1024,
        ..LogConfig::default()
    })
}

fn append(log: &PartitionLog, raw: &[u8], now: i64) -> i64 {
    let view = validate_produce_batch(raw).expect("valid");
    log.append_as_leader(&view, 3, now)
        .expect("append")
        .base_offset
}

#[test]
fn append_assigns_dense_offsets_and_reads_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
    assert_eq!(append(&log, &batch(3, 100, 10), 1), 0);
    assert_eq!(append(&log, &batch(2, 200, 10), 1), 3);
    assert_eq!(log.log_end_offset(), 5);
    // Reading offset 4 returns the whole batch that holds it (3..=4).
    let r = log.read(4, 5, 1 << 20, true).expect("read");
    let batches: Vec<_> = BatchIter::new(&r.records).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.base_offset(), 3);
    assert_eq!(batches[0].1.partition_leader_epoch(), 3);
    check_batch(&r.records).expect("crc still valid after rewrite");
    // Below the high watermark only.
    let r = log.read(0, 3, 1 << 20, true).expect("read");
    assert_eq!(BatchIter::new(&r.records).count(), 1);
    // At the log end: empty, not an error. Past it: out of range.
    assert!(log.read(5, 5, 100, true).expect("read").records.is_empty());
    assert!(matches!(
        log.read(6, 5, 100, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn max_bytes_limits_but_returns_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
    for _ in 0..3 {
        append(&log, &batch(1, 0, 100), 1);
    }
    let one = log.read(0, 3, 10, true).expect("read");
    assert_eq!(BatchIter::new(&one.records).count(), 1);
    let none = log.read(0, 3, 10, false).expect("read");
    assert!(none.records.is_empty());
    let all = log.read(0, 3, 1 << 20, false).expect("read");
    assert_eq!(BatchIter::new(&all.records).count(), 3);
}

#[test]
fn rolls_segments_and_reads_across_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
    let mut offsets = Vec::new();
    for i in 0..100 {
        offsets.push(append(&log, &batch(2, 1000 + i * 10, 50), 1));
    }
    assert!(
        log.segment_bases().len() > 3,
        "segments: {:?}",
        log.segment_bases()
    );
    for (i, &o) in offsets.iter().enumerate() {
        let r = log.read(o + 1, 200, 1, true).expect("read");
        let (_, b) = BatchIter::new(&r.records).next().expect("a batch");
        assert_eq!(b.base_offset(), o, "batch {i}");
    }
    // Timestamp lookup: the batch with first timestamp 1000+37*10.
    let (off, ts) = log.offset_for_timestamp(1370, 200).expect("found");
    assert_eq!((off, ts), (74, 1370));
    let (off, ts) = log.offset_for_timestamp(1371, 200).expect("found");
    assert_eq!((off, ts), (75, 1371));
    assert_eq!(log.offset_for_timestamp(99_999, 200), None);
    assert_eq!(log.offset_of_max_timestamp(200), Some((199, 1991)));
}

#[test]
fn clean_reopen_keeps_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
        for i in 0..40 {
            append(&log, &batch(1, i, 64), 1);
        }
        log.close().expect("close");
    }
    let log = PartitionLog::open(dir.path(), small_config(), 40, 0, true, 0).expect("reopen");
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(append(&log, &batch(1, 50, 64), 1), 40);
    let r = log.read(39, 41, 1 << 20, true).expect("read");
    assert_eq!(BatchIter::new(&r.records).count(), 2);
}

#[test]
fn unclean_reopen_truncates_torn_tail_and_rebuilds_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last_base;
    {
        let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
        for i in 0..30 {
            append(&log, &batch(1, i, 64), 1);
        }
        last_base = *log.segment_bases().last().expect("segment");
        // Simulate a crash: no close; a half-written batch at the tail.
    }
    let path = dir.path().join(format!("{last_base:020}.log"));
    let good_len = std::fs::metadata(&path).expect("meta").len();
    let torn = batch(1, 99, 64);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open log");
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).expect("write");
    drop(f);
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, false, 0).expect("recover");
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
    for o in 0..30 {
        let r = log.read(o, 30, 1, true).expect("read");
        let (_, b) = BatchIter::new(&r.records).next().expect("batch");
        assert_eq!(b.base_offset(), o);
    }
    assert_eq!(append(&log, &batch(1, 100, 64), 1), 30);
}

#[test]
fn corrupt_middle_segment_drops_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bases;
    {
        let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
        for i in 0..150 {
            append(&log, &batch(1, i, 64), 1);
        }
        bases = log.segment_bases();
    }
    assert!(bases.len() >= 3);
    // Flip a byte inside the second segment's last batch.
    let path = dir.path().join(format!("{:020}.log", bases[1]));
    let mut data = std::fs::read(&path).expect("read");
    let n = data.len();
    data[n - 5] ^= 0xff;
    std::fs::write(&path, &data).expect("write");
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, false, 0).expect("recover");
    assert_eq!(log.segment_bases(), bases[..2].to_vec());
    let end = log.log_end_offset();
    assert!(end < bases[2] && end > bases[1]);
    assert_eq!(append(&log, &batch(1, 0, 64), 1), end);
}

#[test]
fn log_append_time_and_size_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Arc::new(LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        max_message_bytes: 300,
        ..LogConfig::default()
    });
    let log = PartitionLog::open(dir.path(), config, 0, 0, true, 0).expect("open");
    let raw = batch(2, 5, 10);
    let view = validate_produce_batch(&raw).expect("valid");
    let info = log.append_as_leader(&view, 0, 777_000).expect("append");
    assert_eq!(info.log_append_time, 777_000);
    let r = log.read(0, 2, 1 << 20, true).expect("read");
    let stored = check_batch(&r.records).expect("crc recomputed");
    assert!(stored.is_log_append_time());
    assert_eq!(stored.max_timestamp(), 777_000);
    assert_eq!(log.offset_for_timestamp(777_000, 2), Some((0, 777_000)));
    let big = batch(1, 0, 400);
    let view = validate_produce_batch(&big).expect("valid");
    assert!(matches!(
        log.append_as_leader(&view, 0, 1),
        Err(LogError::MessageTooLarge { .. })
    ));
}

#[test]
fn follower_appends_as_is_and_truncates_divergent_tails() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader =
        PartitionLog::open(leader_dir.path(), small_config(), 0, 0, true, 0).expect("open");
    let follower =
        PartitionLog::open(follower_dir.path(), small_config(), 0, 0, true, 0).expect("open");
    for i in 0..60 {
        let raw = batch(2, 1000 + i, 50);
        let view = validate_produce_batch(&raw).expect("valid");
        leader
            .append_as_leader(&view, if i < 30 { 1 } else { 2 }, 1)
            .expect("append");
    }
    // Replicate everything in chunks, as fetch responses would carry it.
    while follower.log_end_offset() < leader.log_end_offset() {
        let r = leader
            .read(
                follower.log_end_offset(),
                leader.log_end_offset(),
                700,
                true,
            )
            .expect("read");
        let appended = follower
            .append_as_follower(&r.records, 1)
            .expect("append replicated");
        assert!(appended.batches > 0);
    }
    assert_eq!(follower.log_end_offset(), 120);
    assert_eq!(follower.latest_epoch(), Some(2));
    assert_eq!(follower.end_offset_for_epoch(1), (1, 60));
    // Same bytes, same offsets, same epochs.
    let a = leader.read(0, 120, 1 << 20, true).expect("read").records;
    let b = follower.read(0, 120, 1 << 20, true).expect("read").records;
    assert_eq!(a, b);
    // Re-sending what the follower has is skipped; a gap is refused.
    let again = leader.read(100, 120, 1 << 20, true).expect("read");
    assert_eq!(
        follower
            .append_as_follower(&again.records, 1)
            .expect("skip")
            .batches,
        0
    );

    // Truncate a divergent tail inside a segment, then append anew at the cut.
    follower.truncate_to(75).expect("truncate");
    assert_eq!(
        follower.log_end_offset(),
        74,
        "the batch holding 75 starts at 74"
    );
    follower.truncate_to(74).expect("no-op");
    assert_eq!(follower.end_offset_for_epoch(2), (2, 74));
    // An epoch this replica began as leader but never wrote to starts at the log end; a
    // truncation to the log end must drop it, or fetches keep diverging on it forever.
    follower.assign_leader_epoch(5, 74).expect("assign");
    assert_eq!(follower.latest_epoch(), Some(5));
    follower.truncate_to(74).expect("truncate to the log end");
    assert_eq!(follower.latest_epoch(), Some(2));
    let raw = batch(1, 5000, 10);
    let view = validate_produce_batch(&raw).expect("valid");
    assert_eq!(
        follower
            .append_as_leader(&view, 3, 1)
            .expect("append")
            .base_offset,
        74
    );
    let r = follower.read(70, 75, 1 << 20, true).expect("read");
    let offsets: Vec<i64> = BatchIter::new(&r.records)
        .map(|(_, b)| b.base_offset())
        .collect();
    assert_eq!(offsets, vec![70, 72, 74]);
    // A clean close and reopen keeps exactly that.
    follower.close().expect("close");
    drop(follower);
    let reopened =
        PartitionLog::open(follower_dir.path(), small_config(), 75, 0, true, 0).expect("reopen");
    assert_eq!(reopened.log_end_offset(), 75);
    assert_eq!(reopened.latest_epoch(), Some(3));

    // Behind the leader's log start: start over there.
    reopened.truncate_fully_and_start_at(500).expect("reset");
    assert_eq!(
        (reopened.log_start_offset(), reopened.log_end_offset()),
        (500, 500)
    );
    assert_eq!(reopened.segment_bases(), vec![500]);
}

#[test]
fn truncated_tail_is_not_resurrected_by_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
        for i in 0..10 {
            append(&log, &batch(1, i, 64), 1);
        }
        log.truncate_to(6).expect("truncate");
        // Crash without a clean close.
    }
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, false, 0).expect("recover");
    assert_eq!(log.log_end_offset(), 6);
}

#[test]
fn max_timestamp_is_found_from_the_segments_tracked_maximum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config(), 0, 0, true, 0).expect("open");
    let append_records = |records: &[testing::TestRecord<'_>]| {
        let raw = testing::keyed_batch(records, Compression::None, None);
        let view = validate_produce_batch(&raw).expect("valid");
        log.append_as_leader(&view, 0, 1)
            .expect("append")
            .base_offset
    };
    // Several segments; the largest timestamp sits inside a batch of the second one, on two
    // records, and is not the batch's last record.
    for i in 0..20 {
        append_records(&[(Some("k"), Some(&"v".repeat(100)), 1_000 + i)]);
    }
    let base = append_records(&[
        (Some("a"), Some("x"), 5_000),
        (Some("b"), Some("x"), 9_000),
        (Some("c"), Some("x"), 9_000),
        (Some("d"), Some("x"), 7_000),
    ]);
    for i in 0..40 {
        append_records(&[(Some("k"), Some(&"v".repeat(100)), 2_000 + i)]);
    }
    assert!(log.segment_bases().len() >= 3, "{:?}", log.segment_bases());
    let end = log.log_end_offset();
    assert_eq!(log.offset_of_max_timestamp(end), Some((base + 1, 9_000)));
    // Not visible below the high watermark (Kafka filters by the last fetchable offset).
    assert_eq!(log.offset_of_max_timestamp(base + 1), None);
    // After a restart the segments' maxima come from their time indexes.
    log.close().expect("close");
    drop(log);
    let log = PartitionLog::open(dir.path(), small_config(), end, 0, true, 0).expect("reopen");
    assert_eq!(log.offset_of_max_timestamp(end), Some((base + 1, 9_000)));
}
