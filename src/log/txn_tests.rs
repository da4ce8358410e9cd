//! Transactions in a partition log: markers, the last stable offset, the aborted-transaction
//! index and its `.txnindex` files, recovery, truncation and the cleaner.

use std::sync::Arc;

use kafka_protocol::records::Compression;

use super::batch::{validate_produce_batch, BatchIter};
use super::cleaner::{clean_once, CleanerConfig};
use super::config::LogConfig;
use super::partition_log::{LogError, PartitionLog};
use super::producer_state::{AppendOrigin, ProducerError};
use super::segment::file_name;
use super::testing::{keyed_batch, transactional_batch};
use super::txn::{self, AbortedTxn, EndTxnMarker, MarkerType};

fn config() -> Arc<LogConfig> {
    Arc::new(LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        segment_index_bytes: 1024,
        ..LogConfig::default()
    })
}

fn open(dir: &std::path::Path, clean: bool) -> Arc<PartitionLog> {
    PartitionLog::open(dir, config(), 0, 0, clean, 0).expect("open")
}

/// Appends a transactional batch of `n` records from producer `pid` (epoch 0, sequence
/// `seq`); returns its base offset.
fn txn_append(log: &PartitionLog, pid: i64, seq: i32, n: usize) -> Result<i64, LogError> {
    let records: Vec<(Option<String>, Option<String>, i64)> = (0..n)
        .map(|i| (Some(format!("k{pid}-{i}")), Some(format!("v{seq}")), 100))
        .collect();
    let refs: Vec<_> = records
        .iter()
        .map(|(k, v, t)| (k.as_deref(), v.as_deref(), *t))
        .collect();
    let raw = transactional_batch(&refs, Compression::None, (pid, 0, seq));
    let view = validate_produce_batch(&raw).expect("valid");
    // As the produce path does: verify the partition with the coordinator (KIP-890) first.
    let verification = log.start_verification(pid);
    log.append_from(&view, 1, 100, AppendOrigin::Client { verification })
        .map(|i| i.base_offset)
}

fn plain_append(log: &PartitionLog, key: &str) -> i64 {
    let raw = keyed_batch(&[(Some(key), Some("x"), 100)], Compression::None, None);
    let view = validate_produce_batch(&raw).expect("valid");
    log.append_as_leader(&view, 1, 100)
        .expect("append")
        .base_offset
}

fn marker(log: &PartitionLog, pid: i64, kind: MarkerType) -> Result<i64, LogError> {
    let m = EndTxnMarker {
        kind,
        coordinator_epoch: 0,
    };
    log.append_marker(pid, 0, m, 1, 200).map(|i| i.base_offset)
}

#[test]
fn lso_stops_at_open_transactions_until_markers_are_replicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), true);
    plain_append(&log, "a"); // 0
    assert_eq!(txn_append(&log, 7, 0, 2).expect("append"), 1); // 1..=2
    plain_append(&log, "b"); // 3
    assert_eq!(txn_append(&log, 8, 0, 1).expect("append"), 4); // 4
    let hw = log.log_end_offset();
    log.on_high_watermark(hw);
    assert_eq!(
        log.last_stable_offset(hw),
        1,
        "producer 7's transaction is open"
    );
    assert_eq!(marker(&log, 7, MarkerType::Commit).expect("marker"), 5);
    assert_eq!(
        log.last_stable_offset(hw),
        1,
        "the marker is not below the high watermark yet"
    );
    log.on_high_watermark(6);
    assert_eq!(
        log.last_stable_offset(6),
        4,
        "producer 8's transaction is open"
    );
    marker(&log, 8, MarkerType::Abort).expect("marker"); // 6
    log.on_high_watermark(7);
    assert_eq!(log.last_stable_offset(7), 7);
    assert_eq!(
        log.aborted_transactions(0, 7),
        vec![AbortedTxn {
            producer_id: 8,
            first_offset: 4,
            last_offset: 6,
            last_stable_offset: 7,
        }]
    );
    assert!(log.aborted_transactions(0, 4).is_empty(), "ends before it");
    assert!(log.aborted_transactions(7, 8).is_empty(), "starts after it");
    // The .txnindex of the segment holding the ABORT marker has Kafka's 34-byte entry.
    let index = txn::read_txn_index(&dir.path().join(file_name(0, ".txnindex"))).expect("read");
    assert_eq!(index, log.aborted_transactions(0, 7));
}

#[test]
fn producer_rules_for_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), true);
    txn_append(&log, 7, 0, 1).expect("append");
    // A non-transactional write inside the producer's open transaction is refused.
    let raw = keyed_batch(
        &[(Some("k"), Some("v"), 1)],
        Compression::None,
        Some((7, 0, 1)),
    );
    let view = validate_produce_batch(&raw).expect("valid");
    assert!(matches!(
        log.append_as_leader(&view, 1, 100),
        Err(LogError::Producer(ProducerError::InvalidTxnState(_)))
    ));
    // A marker from a newer coordinator, then one from an older: fenced.
    let newer = EndTxnMarker {
        kind: MarkerType::Commit,
        coordinator_epoch: 5,
    };
    log.append_marker(7, 0, newer, 1, 200).expect("marker");
    let older = EndTxnMarker {
        kind: MarkerType::Abort,
        coordinator_epoch: 4,
    };
    assert!(matches!(
        log.append_marker(7, 0, older, 1, 200),
        Err(LogError::Producer(ProducerError::CoordinatorFenced(_)))
    ));
    // A marker with a bumped epoch fences the old epoch's writes.
    let bumped = EndTxnMarker {
        kind: MarkerType::Abort,
        coordinator_epoch: 5,
    };
    log.append_marker(7, 1, bumped, 1, 200).expect("marker");
    assert!(matches!(
        txn_append(&log, 7, 1, 1),
        Err(LogError::Producer(ProducerError::InvalidProducerEpoch(_)))
    ));
    let producers = log.producers();
    assert_eq!(producers.len(), 1);
    assert_eq!(
        (producers[0].producer_epoch, producers[0].coordinator_epoch),
        (1, 5)
    );
    assert_eq!(producers[0].current_txn_start_offset, -1);
}

#[test]
fn a_transaction_starts_only_with_a_verification_no_marker_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), true);
    let raw = transactional_batch(&[(Some("k"), Some("v"), 1)], Compression::None, (9, 0, 0));
    let view = validate_produce_batch(&raw).expect("valid");
    // Unverified: refused.
    assert!(matches!(
        log.append_as_leader(&view, 1, 100),
        Err(LogError::Producer(ProducerError::InvalidTxnState(_)))
    ));
    // Verified, but a marker for the producer lands in between (the transaction ended while
    // the produce was in flight): refused, so it cannot open a hanging transaction.
    let verification = log.start_verification(9);
    marker(&log, 9, MarkerType::Abort).expect("marker");
    assert!(matches!(
        log.append_from(&view, 1, 100, AppendOrigin::Client { verification }),
        Err(LogError::Producer(ProducerError::InvalidTxnState(_)))
    ));
    // Verified and undisturbed: it opens the transaction; later writes need no verification.
    let verification = log.start_verification(9);
    log.append_from(&view, 1, 100, AppendOrigin::Client { verification })
        .expect("append");
    assert_eq!(log.start_verification(9), None);
    let raw = transactional_batch(&[(Some("k"), Some("v"), 1)], Compression::None, (9, 0, 1));
    let view = validate_produce_batch(&raw).expect("valid");
    log.append_as_leader(&view, 1, 100).expect("append");
}

#[test]
fn reopening_rebuilds_open_transactions_and_the_aborted_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path(), true);
        txn_append(&log, 1, 0, 3).expect("append"); // 0..=2
        marker(&log, 1, MarkerType::Abort).expect("marker"); // 3
        txn_append(&log, 2, 0, 1).expect("append"); // 4, left open
                                                    // A stale .txnindex (as a crash could leave) is rewritten from the markers.
        std::fs::write(dir.path().join(file_name(0, ".txnindex")), [1u8; 10]).expect("write");
    }
    let log = open(dir.path(), false);
    let hw = log.log_end_offset();
    log.on_high_watermark(hw);
    assert_eq!(log.last_stable_offset(hw), 4);
    assert_eq!(log.aborted_transactions(0, hw).len(), 1);
    let index = txn::read_txn_index(&dir.path().join(file_name(0, ".txnindex"))).expect("read");
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].first_offset, 0);
    // Truncating away the marker reopens the aborted transaction.
    log.truncate_to(3).expect("truncate");
    assert!(log.aborted_transactions(0, 10).is_empty());
    assert_eq!(log.last_stable_offset(3), 0);
    assert!(!dir.path().join(file_name(0, ".txnindex")).exists());
}

#[test]
fn the_cleaner_removes_aborted_data_then_lone_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Arc::new(LogConfig {
        compact: true,
        segment_bytes: 1024,
        delete_retention_ms: 1_000,
        min_cleanable_dirty_ratio: 0.01,
        ..LogConfig::default()
    });
    let log = PartitionLog::open(dir.path(), config, 0, 0, true, 0).expect("open");
    txn_append(&log, 1, 0, 2).expect("append"); // keys k1-0, k1-1 aborted
    marker(&log, 1, MarkerType::Abort).expect("marker");
    // The producer's next transaction commits, so the aborted batch is not its last (the
    // last batch of a producer stays, emptied, for producer state, as in Kafka).
    txn_append(&log, 1, 2, 2).expect("append");
    marker(&log, 1, MarkerType::Commit).expect("marker");
    // Roll a few segments so that the above is not in the active one.
    for i in 0..40 {
        plain_append(&log, &format!("filler-{i}"));
    }
    let end = log.log_end_offset();
    log.on_high_watermark(end);
    let cleaner = CleanerConfig::default();
    let now = 10_000;
    let stats = clean_once(&log, log.last_stable_offset(end), now, &cleaner).expect("clean");
    assert!(stats.cleaned, "{stats:?}");
    let keys_and_markers = |log: &PartitionLog| {
        let mut out = Vec::new();
        log.for_each_batch(|b| {
            if b.is_control() {
                out.push(format!("marker-{}", b.producer_id()));
            } else if b.is_transactional() && b.records_count() > 0 {
                out.push(format!("txn-{}", b.producer_id()));
            }
        });
        out
    };
    // Aborted data is gone; the ABORT marker stays this pass (its data was just removed),
    // the COMMIT marker stays while its committed data does.
    assert_eq!(
        keys_and_markers(&log),
        vec!["marker-1", "txn-1", "marker-1"]
    );
    // The next pass that cleans the log (once it is dirty again) gives the lone ABORT
    // marker a delete horizon; the first pass after the horizon removes it.
    for i in 0..40 {
        plain_append(&log, &format!("more-{i}"));
    }
    let end = log.log_end_offset();
    log.on_high_watermark(end);
    let stats = clean_once(&log, log.last_stable_offset(end), now + 1, &cleaner).expect("clean");
    assert!(stats.cleaned, "{stats:?}");
    assert_eq!(
        keys_and_markers(&log),
        vec!["marker-1", "txn-1", "marker-1"]
    );
    let stats =
        clean_once(&log, log.last_stable_offset(end), now + 5_000, &cleaner).expect("clean");
    assert!(stats.cleaned, "{stats:?}");
    assert_eq!(keys_and_markers(&log), vec!["txn-1", "marker-1"]);
    // Reopened, the log has no open transaction left.
    drop(log);
    let log = open(dir.path(), true);
    let end = log.log_end_offset();
    log.on_high_watermark(end);
    assert_eq!(log.last_stable_offset(end), end);
    let mut data = 0;
    log.for_each_batch(|b| {
        if !b.is_control() {
            data += BatchIter::new(b.as_bytes()).count();
        }
    });
    assert!(data > 0);
}
