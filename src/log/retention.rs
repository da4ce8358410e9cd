//! Time- and size-based retention (`retention.ms`, `retention.bytes`) and the log start
//! offset moved by DeleteRecords: whole segments below the high watermark are deleted, oldest
//! first. The active segment's unexpired data is never touched. Each pass costs O(segments),
//! whatever the number of messages.

use std::io;

use super::partition_log::PartitionLog;

/// One retention pass over a partition log. Returns how many segments were deleted.
pub fn enforce(log: &PartitionLog, high_watermark: i64, now_ms: i64) -> io::Result<usize> {
    let config = log.config();
    let log_start = log.log_start_offset();
    let mut deleted =
        log.delete_oldest_segments(high_watermark, now_ms, |_, end, _| end <= log_start)?;
    if !config.delete {
        // cleanup.policy=compact alone: the cleaner, not time or size, decides what goes.
        return Ok(deleted);
    }
    if config.retention_ms >= 0 {
        deleted += log.delete_oldest_segments(high_watermark, now_ms, |seg, _, _| {
            let newest = match seg.largest_timestamp() {
                ts if ts >= 0 => ts,
                _ => seg.last_modified_ms(),
            };
            now_ms.saturating_sub(newest) > config.retention_ms
        })?;
    }
    if config.retention_bytes >= 0 {
        let limit = config.retention_bytes as u64;
        deleted += log.delete_oldest_segments(high_watermark, now_ms, |seg, _, total| {
            total.saturating_sub(seg.size() as u64) >= limit && total > limit
        })?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::records::Compression;

    use super::*;
    use crate::log::batch::validate_produce_batch;
    use crate::log::config::LogConfig;
    use crate::log::testing::encode_batch;

    fn log_with(
        dir: &std::path::Path,
        config: LogConfig,
        batches: usize,
        ts: impl Fn(usize) -> i64,
    ) -> Arc<PartitionLog> {
        let log = PartitionLog::open(dir, Arc::new(config), 0, 0, true, 0).expect("open");
        for i in 0..batches {
            let raw = encode_batch(1, ts(i), 100, Compression::None);
            let view = validate_produce_batch(&raw).expect("valid");
            log.append_as_leader(&view, 0, 1).expect("append");
        }
        log
    }

    fn small(retention_ms: i64, retention_bytes: i64) -> LogConfig {
        LogConfig {
            segment_bytes: 1024,
            retention_ms,
            retention_bytes,
            ..LogConfig::default()
        }
    }

    #[test]
    fn time_retention_deletes_only_expired_segments_below_the_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Batches 0..20 are old (ts 1000), 20..40 are recent (ts 100_000).
        let log = log_with(dir.path(), small(10_000, -1), 40, |i| {
            if i < 20 {
                1_000
            } else {
                100_000
            }
        });
        let before = log.segment_bases();
        assert!(before.len() > 4);
        // Nothing above the high watermark may go.
        assert_eq!(enforce(&log, 0, 50_000).expect("pass"), 0);
        let deleted = enforce(&log, 40, 50_000).expect("pass");
        assert!(deleted > 0);
        let start = log.log_start_offset();
        assert!(start > 0 && start <= 20, "log start {start}");
        assert!(matches!(
            log.read(0, 40, 100, true),
            Err(crate::log::LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(start, 40, 100, true).is_ok());
        // Everything expired later: all segments go and an empty active one remains.
        enforce(&log, 40, 10_000_000).expect("pass");
        assert_eq!(log.log_start_offset(), 40);
        assert_eq!(log.log_end_offset(), 40);
        assert_eq!(log.segment_bases(), vec![40]);
    }

    #[test]
    fn compact_only_logs_are_not_deleted_by_time_or_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            compact: true,
            delete: false,
            ..small(10, 10)
        };
        let log = log_with(dir.path(), config, 30, |_| 5);
        let before = log.segment_bases();
        assert_eq!(enforce(&log, 30, 10_000_000).expect("pass"), 0);
        assert_eq!(log.segment_bases(), before);
        // DeleteRecords still moves the log start offset and drops what lies below it.
        log.advance_log_start_offset(20).expect("delete records");
        assert_eq!(log.log_start_offset(), 20);
        assert!(log.segment_bases().len() < before.len());
    }

    #[test]
    fn size_retention_and_delete_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_with(dir.path(), small(-1, 2048), 60, |_| 5);
        enforce(&log, 60, 10).expect("pass");
        assert!(log.size_bytes() <= 2048 + 1024, "size {}", log.size_bytes());
        assert!(log.log_start_offset() > 0);
        log.advance_log_start_offset(55).expect("delete records");
        assert_eq!(log.log_start_offset(), 55);
        assert!(log.segment_bases()[0] <= 55);
        assert!(matches!(
            log.read(54, 60, 100, true),
            Err(crate::log::LogError::OffsetOutOfRange { .. })
        ));
    }
}
