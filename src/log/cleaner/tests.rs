//! Tests for the log cleaner against real partition logs on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::{clean_once, clean_with, CleanStats, CleanerConfig, Hooks, Step};
use crate::log::batch::{check_batch, validate_produce_batch, BatchIter, Codec};
use crate::log::config::LogConfig;
use crate::log::partition_log::PartitionLog;
use crate::log::testing::{keyed_batch, TestProducer, TestRecord};

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    timestamp: i64,
    header: Option<String>,
}

fn config(segment_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 128,
        segment_index_bytes: 4096,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.5,
        delete_retention_ms: 5_000,
        ..LogConfig::default()
    }
}

/// A partition log plus every record appended to it.
struct Model {
    log: Arc<PartitionLog>,
    records: Vec<Rec>,
    filler: usize,
}

impl Model {
    fn open(dir: &Path, config: LogConfig) -> Self {
        let log = PartitionLog::open(dir, Arc::new(config), 0, 0, true, 0).expect("open");
        Self {
            log,
            records: Vec::new(),
            filler: 0,
        }
    }

    fn append(&mut self, records: &[TestRecord<'_>], compression: Compression) -> i64 {
        self.append_as(records, compression, None)
    }

    fn append_as(
        &mut self,
        records: &[TestRecord<'_>],
        compression: Compression,
        producer: Option<TestProducer>,
    ) -> i64 {
        let raw = keyed_batch(records, compression, producer);
        let view = validate_produce_batch(&raw).expect("valid");
        let base = self
            .log
            .append_as_leader(&view, 0, 0)
            .expect("append")
            .base_offset;
        for (i, (k, v, ts)) in records.iter().enumerate() {
            self.records.push(Rec {
                offset: base + i as i64,
                key: k.map(str::to_string),
                value: v.map(str::to_string),
                timestamp: *ts,
                header: k.map(str::to_string),
            });
        }
        base
    }

    /// Appends records with fresh keys until the active segment rolls, so that everything
    /// appended before is cleanable.
    fn roll(&mut self, ts: i64) {
        let segments = self.log.segment_bases().len();
        while self.log.segment_bases().len() == segments {
            let key = format!("filler-{}", self.filler);
            self.filler += 1;
            self.append(&[(Some(&key), Some("f"), ts)], Compression::None);
        }
    }

    fn active_base(&self) -> i64 {
        *self.log.segment_bases().last().expect("segment")
    }

    /// What a full compaction of everything below `end` leaves, with or without tombstones.
    fn expected(&self, end: i64, tombstones: bool) -> Vec<Rec> {
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for r in self.records.iter().filter(|r| r.offset < end) {
            if let Some(k) = &r.key {
                latest.insert(k, r.offset);
            }
        }
        self.records
            .iter()
            .filter(|r| {
                r.offset >= end
                    || r.key
                        .as_deref()
                        .is_some_and(|k| latest[k] == r.offset && (r.value.is_some() || tombstones))
            })
            .cloned()
            .collect()
    }
}

/// Reads the whole log as a consumer does: fetch, decode every batch, skip records below the
/// fetch offset, continue after the last batch. Every batch must pass the CRC check and
/// offsets must strictly increase.
fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    while offset < end {
        let r = log.read(offset, end, 1 << 20, true).expect("read");
        assert!(!r.records.is_empty(), "no batch at {offset} below {end}");
        let mut rest = &r.records[..];
        while !rest.is_empty() {
            let view = check_batch(rest).expect("every batch keeps a valid CRC");
            let mut bytes = Bytes::copy_from_slice(view.as_bytes());
            let set = RecordBatchDecoder::decode(&mut bytes).expect("decode");
            for rec in set.records.into_iter().filter(|r| r.offset >= offset) {
                if let Some(last) = out.last() {
                    assert!(rec.offset > last.offset, "offsets must increase");
                }
                let header = rec
                    .headers
                    .get(&StrBytes::from_string("h".into()))
                    .cloned()
                    .flatten();
                let text = |b: Option<Bytes>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
                out.push(Rec {
                    offset: rec.offset,
                    key: text(rec.key),
                    value: text(rec.value),
                    timestamp: rec.timestamp,
                    header: text(header),
                });
            }
            offset = view.last_offset() + 1;
            rest = &rest[view.size()..];
        }
    }
    out
}

fn clean(log: &PartitionLog, now_ms: i64) -> CleanStats {
    clean_once(log, log.log_end_offset(), now_ms, &CleanerConfig::default()).expect("clean")
}

fn k(i: usize) -> String {
    format!("key-{i}")
}

#[test]
fn latest_value_per_key_survives_with_offsets_timestamps_and_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(2048));
    for i in 0..150usize {
        let v = format!("v{i}");
        m.append(
            &[(Some(&k(i % 10)), Some(&v), 1_000 + i as i64)],
            Compression::None,
        );
        if i % 15 == 0 {
            // A batch mixing two keys and a record without a key.
            let (a, b) = (k(i % 7), k(i % 3));
            m.append(
                &[
                    (Some(&a), Some("x"), 2_000),
                    (None, Some("no key"), 2_001),
                    (Some(&b), Some("y"), 2_002),
                ],
                Compression::None,
            );
        }
    }
    m.roll(3_000);
    let end = m.active_base();
    let before_bytes = m.log.size_bytes();
    let before_segments = m.log.segment_bases().len();
    let held = m
        .log
        .read(0, end, 1 << 20, true)
        .expect("read before cleaning");

    let stats = clean(&m.log, 10_000);
    assert!(stats.cleaned, "{stats:?}");
    assert_eq!(stats.end_offset, end);
    assert!(!stats.map_full);
    assert!(stats.records_removed > 100, "{stats:?}");
    assert_eq!(m.log.cleaner_checkpoint(), Some(end));
    assert_eq!(read_all(&m.log), m.expected(end, true));
    assert!(m.log.size_bytes() * 3 < before_bytes);
    // Groups are formed by input size (as in Kafka): full segments are cleaned one by one.
    assert_eq!(m.log.segment_bases().len(), before_segments);
    assert_eq!(m.log.log_start_offset(), 0);

    // A reader holding a slice of a replaced segment keeps reading it.
    let view = check_batch(&held.records).expect("old mapping still valid");
    assert_eq!(view.base_offset(), 0);

    // A fetch at a removed offset returns the batch with the next surviving record.
    let survivors: Vec<i64> = m.expected(end, true).iter().map(|r| r.offset).collect();
    for removed in [0i64, 5, 40, 77] {
        assert!(!survivors.contains(&removed));
        let next = *survivors
            .iter()
            .find(|&&o| o > removed)
            .expect("a survivor");
        let r = m.log.read(removed, end, 1, true).expect("read");
        let mut bytes = Bytes::copy_from_slice(&r.records);
        let set = RecordBatchDecoder::decode(&mut bytes).expect("decode");
        let first = set
            .records
            .iter()
            .find(|r| r.offset >= removed)
            .expect("record");
        assert_eq!(first.offset, next, "fetch at {removed}");
    }

    // Appends continue at the same offset; the cleaned log reopens, cleanly or not.
    let leo = m.log.log_end_offset();
    assert_eq!(
        m.append(&[(Some("after"), Some("a"), 9)], Compression::None),
        leo
    );
    let expected = m.expected(end, true);
    m.log.close().expect("close");
    let Model { log, .. } = m;
    drop(log);
    let log = PartitionLog::open(dir.path(), Arc::new(config(2048)), 0, 0, true, 0).expect("open");
    assert_eq!(read_all(&log), expected);
    drop(log);
    let log =
        PartitionLog::open(dir.path(), Arc::new(config(2048)), 0, 0, false, 0).expect("recover");
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.log_end_offset(), leo + 1);
}

#[test]
fn tombstones_are_kept_for_delete_retention_then_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(1024));
    m.append(&[(Some("a"), Some("a1"), 100)], Compression::None);
    m.append(&[(Some("b"), Some("b1"), 101)], Compression::None);
    m.append(&[(Some("a"), Some("a2"), 102)], Compression::None);
    let tombstone = m.append(&[(Some("a"), None, 103)], Compression::None);
    m.append(&[(Some("c"), None, 104)], Compression::Gzip);
    m.roll(200);
    let end = m.active_base();

    let stats = clean(&m.log, 1_000);
    assert!(stats.cleaned);
    let after = read_all(&m.log);
    assert_eq!(after, m.expected(end, true));
    let a: Vec<&Rec> = after
        .iter()
        .filter(|r| r.key.as_deref() == Some("a"))
        .collect();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].offset, a[0].value.clone(), a[0].timestamp),
        (tombstone, None, 103)
    );
    // The batch now carries its delete horizon: now + delete.retention.ms.
    let r = m.log.read(tombstone, end, 1, true).expect("read");
    let view = check_batch(&r.records).expect("valid");
    assert_eq!(view.delete_horizon_ms(), Some(6_000));

    // Before the horizon nothing is due; at it the tombstones go, the values stay.
    let stats = clean(&m.log, 5_999);
    assert!(!stats.cleaned);
    assert_eq!(read_all(&m.log), m.expected(end, true));
    let stats = clean(&m.log, 6_000);
    assert!(stats.cleaned, "{stats:?}");
    assert_eq!(stats.tombstones_removed, 2);
    assert_eq!(read_all(&m.log), m.expected(end, false));
    assert!(read_all(&m.log)
        .iter()
        .all(|r| r.key.as_deref() != Some("a") && r.key.as_deref() != Some("c")));
}

#[test]
fn active_segment_and_high_watermark_bound_the_dirty_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(1 << 20));
    for i in 0..50usize {
        m.append(&[(Some(&k(i % 3)), Some("v"), i as i64)], Compression::None);
    }
    // Everything is in the active segment: nothing is cleaned.
    let files_before: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let stats = clean(&m.log, 10_000);
    assert!(!stats.cleaned);
    assert_eq!(read_all(&m.log), m.records);
    let files_after: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(files_before, files_after);

    // With small segments, a high watermark below the active segment ends the section.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(1024));
    for i in 0..80usize {
        m.append(&[(Some(&k(i % 3)), Some("v"), i as i64)], Compression::None);
    }
    m.roll(100);
    let hw = 40;
    let stats = clean_once(&m.log, hw, 10_000, &CleanerConfig::default()).expect("clean");
    assert!(stats.cleaned);
    assert_eq!(stats.end_offset, hw);
    assert_eq!(read_all(&m.log), m.expected(hw, true));
}

#[test]
fn min_compaction_lag_leaves_recent_segments_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(
        dir.path(),
        LogConfig {
            min_compaction_lag_ms: 10_000,
            ..config(1024)
        },
    );
    for i in 0..40usize {
        m.append(&[(Some(&k(i % 4)), Some("old"), 1_000)], Compression::None);
    }
    m.roll(1_000);
    let recent = m.active_base();
    for i in 0..40usize {
        m.append(&[(Some(&k(i % 4)), Some("new"), 95_000)], Compression::None);
    }
    m.roll(95_000);
    let stats = clean(&m.log, 100_000);
    assert!(stats.cleaned);
    assert_eq!(stats.end_offset, recent);
    assert_eq!(read_all(&m.log), m.expected(recent, true));
    // Once the lag has passed, the recent segments are cleaned too.
    let stats = clean(&m.log, 200_000);
    assert!(stats.cleaned);
    let end = m.active_base();
    assert_eq!(stats.end_offset, end);
    assert_eq!(read_all(&m.log), m.expected(end, true));
}

/// A log with a large clean section (many distinct keys) and then a small dirty one.
fn mostly_clean_log(dir: &Path, config: LogConfig) -> Model {
    let mut m = Model::open(dir, config);
    for i in 0..120usize {
        m.append(&[(Some(&k(i)), Some("v"), 1_000)], Compression::None);
    }
    m.roll(1_000);
    let stats = clean(&m.log, 2_000);
    assert!(stats.cleaned);
    for i in 0..8usize {
        m.append(&[(Some(&k(i % 2)), Some("w"), 1_000)], Compression::None);
    }
    m.roll(1_000);
    m
}

#[test]
fn dirty_ratio_threshold_is_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mostly_clean_log(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.75,
            ..config(1024)
        },
    );
    let stats = clean(&m.log, 3_000);
    assert!(!stats.cleaned);
    assert_eq!(stats.skipped, Some("not dirty enough"));
    assert!(
        stats.dirty_ratio > 0.0 && stats.dirty_ratio < 0.75,
        "{stats:?}"
    );
    assert_eq!(read_all(&m.log), m.records);
    m.log.set_config(Arc::new(LogConfig {
        min_cleanable_dirty_ratio: stats.dirty_ratio,
        ..config(1024)
    }));
    let stats = clean(&m.log, 3_000);
    assert!(stats.cleaned);
    assert_eq!(read_all(&m.log), m.expected(m.active_base(), true));
}

#[test]
fn max_compaction_lag_forces_cleaning_below_the_ratio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mostly_clean_log(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.99,
            max_compaction_lag_ms: 50_000,
            ..config(1024)
        },
    );
    assert!(!clean(&m.log, 40_000).cleaned);
    let stats = clean(&m.log, 60_000);
    assert!(stats.cleaned, "{stats:?}");
    assert!(stats.dirty_ratio < 0.99);
    assert_eq!(read_all(&m.log), m.expected(m.active_base(), true));
}

#[test]
fn compressed_batches_keep_their_codec() {
    for (compression, codec) in [
        (Compression::Gzip, Codec::Gzip),
        (Compression::Snappy, Codec::Snappy),
        (Compression::Lz4, Codec::Lz4),
        (Compression::Zstd, Codec::Zstd),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Model::open(dir.path(), config(2048));
        for b in 0..30usize {
            let keys: Vec<String> = (0..4).map(|i| k((b * 4 + i) % 9)).collect();
            let values: Vec<String> = (0..4).map(|i| format!("value {b} {i}")).collect();
            let records: Vec<TestRecord<'_>> = (0..4)
                .map(|i| (Some(keys[i].as_str()), Some(values[i].as_str()), b as i64))
                .collect();
            m.append(&records, compression);
        }
        let end = m.log.log_end_offset();
        m.roll(100);
        let stats = clean(&m.log, 1_000);
        assert!(stats.cleaned);
        assert!(stats.batches_removed > 0, "{compression:?}: {stats:?}");
        assert_eq!(read_all(&m.log), m.expected(m.active_base(), true));
        let r = m.log.read(0, end, 1 << 20, true).expect("read");
        let mut batches = 0;
        for (_, b) in BatchIter::new(&r.records) {
            if b.base_offset() < end {
                assert_eq!(b.codec(), Ok(codec), "{compression:?}");
                batches += 1;
            }
        }
        assert!(batches > 0);
    }
}

#[test]
fn bounded_offset_map_makes_progress_in_several_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(
        dir.path(),
        LogConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..config(1024)
        },
    );
    for i in 0..90usize {
        let v = format!("v{i}");
        m.append(
            &[(Some(&k((i * 7) % 15)), Some(&v), i as i64)],
            Compression::None,
        );
    }
    m.roll(100);
    let end = m.active_base();
    // Six slots: at most five keys per pass.
    let tiny = CleanerConfig {
        dedupe_buffer_size: 6 * super::offset_map::BYTES_PER_ENTRY,
        ..CleanerConfig::default()
    };
    let mut passes = 0;
    loop {
        let stats = clean_once(&m.log, end, 1_000, &tiny).expect("clean");
        if !stats.cleaned {
            break;
        }
        passes += 1;
        assert!(
            stats.map_entries <= 5 && stats.map_memory_bytes <= 6 * 24,
            "{stats:?}"
        );
        let checkpoint = m.log.cleaner_checkpoint().expect("checkpoint");
        assert_eq!(stats.end_offset, checkpoint);
        // After every pass, each key's latest value is still there.
        let now = read_all(&m.log);
        for key in 0..15 {
            let want = m.records.iter().rev().find(|r| r.key == Some(k(key)));
            let got = now.iter().rev().find(|r| r.key == Some(k(key)));
            assert_eq!(want, got);
        }
        assert!(passes < 50, "no progress");
    }
    assert!(passes >= 3, "passes: {passes}");
    assert_eq!(read_all(&m.log), m.expected(end, true));
}

#[test]
fn last_batch_of_each_producer_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(1024));
    let p7 = Some((7, 0, 0));
    m.append_as(
        &[(Some("x"), Some("1"), 1), (Some("y"), Some("1"), 1)],
        Compression::None,
        p7,
    );
    m.append_as(
        &[(Some("x"), Some("2"), 2)],
        Compression::Gzip,
        Some((7, 0, 2)),
    );
    let last7 = m.append_as(
        &[(Some("y"), Some("2"), 3)],
        Compression::None,
        Some((7, 0, 3)),
    );
    let only8 = m.append_as(
        &[(Some("x"), Some("3"), 4)],
        Compression::Zstd,
        Some((8, 2, 10)),
    );
    let part9 = m.append_as(
        &[(Some("z"), Some("1"), 5), (Some("w"), Some("1"), 5)],
        Compression::Lz4,
        Some((9, 0, 0)),
    );
    m.append(
        &[
            (Some("x"), Some("4"), 6),
            (Some("y"), Some("4"), 6),
            (Some("z"), Some("4"), 6),
        ],
        Compression::None,
    );
    m.roll(7);
    assert!(clean(&m.log, 100).cleaned);
    assert_eq!(read_all(&m.log), m.expected(m.active_base(), true));
    let mut producers = BTreeMap::new();
    m.log.for_each_batch(|b| {
        if b.producer_id() >= 0 {
            producers
                .entry(b.producer_id())
                .or_insert_with(Vec::new)
                .push((
                    b.base_offset(),
                    b.last_offset(),
                    b.producer_epoch(),
                    b.base_sequence(),
                    b.records_count(),
                ));
        }
    });
    // Producer 7: only its last batch remains, emptied; producer 8 likewise.
    assert_eq!(producers[&7], vec![(last7, last7, 0, 3, 0)]);
    assert_eq!(producers[&8], vec![(only8, only8, 2, 10, 0)]);
    // Producer 9: its batch keeps its range and sequence with the one surviving record.
    assert_eq!(producers[&9], vec![(part9, part9 + 1, 0, 0, 1)]);

    // Once producer 7 writes again, its emptied batch is no longer its last and goes.
    let newer7 = m.append_as(
        &[(Some("q"), Some("1"), 8)],
        Compression::None,
        Some((7, 0, 4)),
    );
    m.roll(9);
    m.log.set_config(Arc::new(LogConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..config(1024)
    }));
    assert!(clean(&m.log, 100).cleaned);
    let mut batches7 = Vec::new();
    m.log.for_each_batch(|b| {
        if b.producer_id() == 7 {
            batches7.push((b.base_offset(), b.records_count()));
        }
    });
    assert_eq!(batches7, vec![(newer7, 1)]);
    assert_eq!(read_all(&m.log), m.expected(m.active_base(), true));
}

#[test]
fn replace_segments_refuses_segments_that_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Model::open(dir.path(), config(1024));
    for i in 0..40usize {
        m.append(&[(Some(&k(i)), Some("v"), 0)], Compression::None);
    }
    let snapshot = m.log.segments_snapshot();
    assert!(snapshot.len() > 2);
    m.log
        .advance_log_start_offset(snapshot[1].base_offset())
        .expect("delete records");
    let replaced = m
        .log
        .replace_segments(&snapshot[..2], 0, || {
            Err(std::io::Error::other("must not run"))
        })
        .expect("checked");
    assert!(!replaced);

    // A truncation of the tail after the pass read the segments also stops the swap, and
    // pulls the cleaner checkpoint back to the new log end.
    let truncations = m.log.truncation_count();
    let snapshot = m.log.segments_snapshot();
    let leo = m.log.log_end_offset();
    m.log.set_cleaner_checkpoint(leo);
    m.log.truncate_to(leo - 1).expect("truncate");
    assert_eq!(m.log.cleaner_checkpoint(), Some(leo - 1));
    let replaced = m
        .log
        .replace_segments(&snapshot[1..2], truncations, || {
            Err(std::io::Error::other("must not run"))
        })
        .expect("checked");
    assert!(!replaced);
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_crash_at_every_swap_step_leaves_a_readable_log() {
    let steps = [
        Step::CleanedWritten,
        Step::SwapCommitted,
        Step::OldPartlyDeleted,
        Step::OldDeleted,
        Step::IndexesRenamed,
        Step::LogRenamed,
    ];
    for step in steps {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Model::open(dir.path(), config(1024));
        for i in 0..120usize {
            let v = format!("v{i}");
            let value = (i % 11 != 0).then_some(v.as_str());
            m.append(&[(Some(&k(i % 8)), value, i as i64)], Compression::Gzip);
        }
        m.roll(200);
        let end = m.active_base();
        let leo = m.log.log_end_offset();
        let segments_before = m.log.segment_bases().len();
        // Segments much smaller than segment.bytes: one group replaces several segments.
        let big = LogConfig {
            segment_bytes: 1 << 20,
            ..config(1024)
        };
        m.log.set_config(Arc::new(big.clone()));
        let err = clean_with(
            &m.log,
            leo,
            1_000,
            &CleanerConfig::default(),
            Hooks {
                crash_at: Some(step),
            },
        )
        .expect_err("simulated crash");
        assert_eq!(err.to_string(), "simulated crash");
        let Model { log, records, .. } = m;
        drop(log);
        let log = PartitionLog::open(dir.path(), Arc::new(big.clone()), 0, 0, false, 1_000)
            .expect("recover");
        let names = dir_names(dir.path());
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".cleaned") && !n.ends_with(".swap")),
            "{step:?}: {names:?}"
        );
        let m = Model {
            log,
            records,
            filler: 1_000,
        };
        let after = read_all(&m.log);
        let expected = if step == Step::CleanedWritten {
            m.records.clone()
        } else {
            m.expected(end, true)
        };
        assert_eq!(after, expected, "{step:?}");
        assert_eq!(m.log.log_end_offset(), leo);
        let segments = m.log.segment_bases().len();
        if step == Step::CleanedWritten {
            assert_eq!(segments, segments_before);
        } else {
            // All inactive segments became one.
            assert_eq!(segments, 2, "{step:?}");
        }
        // The log cleans and appends normally afterwards.
        m.log.set_config(Arc::new(LogConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..big
        }));
        clean_once(&m.log, leo, 1_000, &CleanerConfig::default()).expect("clean");
        assert_eq!(read_all(&m.log), m.expected(end, true), "{step:?}");
        let raw = keyed_batch(&[(Some("after"), Some("a"), 5)], Compression::None, None);
        let view = validate_produce_batch(&raw).expect("valid");
        assert_eq!(
            m.log
                .append_as_leader(&view, 0, 0)
                .expect("append")
                .base_offset,
            leo
        );
    }
}
