//! The append pipeline, one for both roles. A leader appends a producer's batch at the log end
//! offset (checked against producer state first, its base offset and leader epoch rewritten);
//! a follower appends the leader's batches exactly as the leader wrote them. Both then go
//! through [`PartitionLog::write_batch`]: roll if needed, write, move the log end offset,
//! record the leader epoch and producer state, and count towards `flush.messages`/`flush.ms`.
//!
//! Nothing here waits for the disk: a roll's seal and fsync and a due flush are owed to the
//! log's flusher (`request_io`), and the append reports the offset a caller must wait to be
//! durable (`durable_after`) before acknowledging.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{transactions, AppendInfo, LogError, PartitionLog, WriterState};
use crate::log::batch::{self, BatchView};
use crate::log::config::{LogConfig, TimestampType};
use crate::log::producer_state::{AppendOrigin, SequenceCheck};
use crate::log::segment::LogSegment;
use crate::log::txn::{self, EndTxnMarker};

/// What a follower's append of a fetched chunk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerAppend {
    /// Batches written (those the log already had are skipped).
    pub batches: usize,
    /// As in [`AppendInfo::durable_after`].
    pub durable_after: Option<i64>,
}

/// One batch on its way to the active segment.
struct Write<'a> {
    /// The batch's first 16 bytes as stored (base offset and leader epoch).
    prefix: [u8; 16],
    /// Everything after the prefix, unchanged.
    body: &'a [u8],
    batch: &'a BatchView<'a>,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    leader_epoch: i32,
    /// The broker's timestamp for LogAppendTime batches, else -1.
    log_append_time: i64,
}

impl PartitionLog {
    /// Appends one validated producer batch as leader, at the log end offset, in
    /// `leader_epoch`. An idempotent producer's batch is checked against its sequence first: a
    /// retry of a batch already written is answered with the original offsets and nothing is
    /// written; a gap or a stale epoch is refused.
    pub fn append_as_leader(
        &self,
        batch: &BatchView<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_from(
            batch,
            leader_epoch,
            now_ms,
            AppendOrigin::Client { verification: None },
        )
    }

    /// Starts KIP-890 verification of producer `pid`'s first transactional write here: the
    /// guard to append with once its coordinator confirmed the partition is in the
    /// transaction, or `None` when the producer already has a transaction open here.
    pub fn start_verification(&self, pid: i64) -> Option<u64> {
        self.writer.lock().producers.start_verification(pid)
    }

    /// Appends a batch as leader on behalf of `origin` (see [`AppendOrigin`]).
    pub fn append_from(
        &self,
        batch: &BatchView<'_>,
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        if batch.size() > config.max_message_bytes {
            return Err(LogError::MessageTooLarge {
                size: batch.size(),
                max: config.max_message_bytes,
            });
        }
        let stamped: Option<Bytes> = (config.timestamp_type == TimestampType::LogAppendTime)
            .then(|| batch::with_log_append_time(batch.as_bytes(), now_ms));
        let raw: &[u8] = stamped.as_deref().unwrap_or(batch.as_bytes());
        let mut writer = self.writer.lock();
        if let SequenceCheck::Duplicate(meta) = writer.producers.check_append(batch, origin)? {
            return Ok(AppendInfo {
                base_offset: meta.first_offset,
                last_offset: meta.last_offset,
                log_append_time: meta.log_append_time,
                size: 0,
                durable_after: None,
            });
        }
        debug_assert!(
            self.epochs
                .lock()
                .latest_epoch()
                .is_none_or(|e| e <= leader_epoch),
            "a leader appends in an epoch older than one already in its log"
        );
        let base_offset = self.log_end_offset();
        let write = Write {
            prefix: batch::rewritten_prefix(raw, base_offset, leader_epoch),
            body: &raw[16..],
            batch,
            base_offset,
            last_offset: base_offset + batch.last_offset_delta() as i64,
            max_timestamp: if stamped.is_some() {
                now_ms
            } else {
                batch.max_timestamp()
            },
            leader_epoch,
            log_append_time: if stamped.is_some() { now_ms } else { -1 },
        };
        let durable_after = self.write_batch(&mut writer, &config, write, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: base_offset + batch.last_offset_delta() as i64,
            log_append_time: if stamped.is_some() { now_ms } else { -1 },
            size: raw.len(),
            durable_after,
        })
    }

    /// Writes an end-transaction marker for producer `pid` as leader (WriteTxnMarkers): a
    /// control batch at the log end offset that ends the producer's open transaction here.
    /// A marker from an older producer epoch or an older coordinator is refused.
    pub fn append_marker(
        &self,
        pid: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let raw = txn::control_batch(pid, producer_epoch, marker, now_ms);
        let view = batch::check_batch(&raw).expect("a control batch we built is valid");
        let mut writer = self.writer.lock();
        writer
            .producers
            .check_marker(pid, producer_epoch, marker.coordinator_epoch)?;
        let base_offset = self.log_end_offset();
        let write = Write {
            prefix: batch::rewritten_prefix(&raw, base_offset, leader_epoch),
            body: &raw[16..],
            batch: &view,
            base_offset,
            last_offset: base_offset,
            max_timestamp: now_ms,
            leader_epoch,
            log_append_time: -1,
        };
        let durable_after = self.write_batch(&mut writer, &config, write, now_ms)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: base_offset,
            log_append_time: -1,
            size: raw.len(),
            durable_after,
        })
    }

    /// Appends batches a leader sent, exactly as they are (offsets, leader epochs,
    /// timestamps). Batches this log already has are skipped; a trailing partial batch is
    /// ignored. A batch that does not continue the log end offset is an error.
    pub fn append_as_follower(
        &self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<FollowerAppend, LogError> {
        let config = self.config();
        let mut writer = self.writer.lock();
        let mut out = FollowerAppend::default();
        let mut position = 0;
        while position < records.len() {
            let Ok(view) = batch::check_batch(&records[position..]) else {
                break;
            };
            position += view.size();
            let log_end = self.log_end_offset();
            if view.last_offset() < log_end {
                continue;
            }
            if view.base_offset() != log_end {
                return Err(LogError::Io(io::Error::other(format!(
                    "replicated batch at offset {} does not continue the log end offset {log_end}",
                    view.base_offset()
                ))));
            }
            let raw = view.as_bytes();
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&raw[..16]);
            let write = Write {
                prefix,
                body: &raw[16..],
                batch: &view,
                base_offset: view.base_offset(),
                last_offset: view.last_offset(),
                max_timestamp: view.max_timestamp(),
                leader_epoch: view.partition_leader_epoch(),
                log_append_time: if view.is_log_append_time() {
                    view.max_timestamp()
                } else {
                    -1
                },
            };
            if let Some(upto) = self.write_batch(&mut writer, &config, write, now_ms)? {
                out.durable_after = Some(upto);
            }
            out.batches += 1;
        }
        Ok(out)
    }

    /// The one write path: rolls the active segment when the batch does not fit it, writes the
    /// batch, moves the log end offset, records its leader epoch and producer, and counts it
    /// towards the flush policy. Returns the offset to wait for when a flush is now due.
    fn write_batch(
        &self,
        writer: &mut WriterState,
        config: &LogConfig,
        w: Write<'_>,
        now_ms: i64,
    ) -> Result<Option<i64>, LogError> {
        let log_end = self.log_end_offset();
        // Offsets are dense: every batch starts exactly at the log end offset.
        debug_assert_eq!(w.base_offset, log_end, "a batch must continue the log");
        debug_assert!(w.last_offset >= w.base_offset);
        let size = w.prefix.len() + w.body.len();
        let mut segment = self.active_segment();
        if self.should_roll(&segment, config, size, w.last_offset, now_ms) {
            segment = self.roll(w.base_offset, config, size, now_ms)?;
        }
        segment.append(
            &w.prefix,
            w.body,
            w.last_offset,
            w.max_timestamp,
            config.index_interval_bytes,
        )?;
        self.log_end_offset
            .store(w.last_offset + 1, Ordering::Release);
        {
            let mut epochs = self.epochs.lock();
            if epochs.assign(w.leader_epoch, w.base_offset) {
                epochs.persist()?;
            }
        }
        writer
            .producers
            .record_batch(w.batch, w.base_offset, w.log_append_time, now_ms);
        if w.batch.is_transactional() {
            self.record_transaction(writer, &w, segment.base_offset(), now_ms)?;
        }
        writer.unflushed_messages += w.batch.records_count() as i64;
        let due = writer.unflushed_messages >= config.flush_messages
            || now_ms.saturating_sub(writer.last_flush_ms) >= config.flush_ms;
        if !due {
            return Ok(None);
        }
        writer.unflushed_messages = 0;
        writer.last_flush_ms = now_ms;
        let upto = w.last_offset + 1;
        self.request_io(|owed| owed.flush_upto = owed.flush_upto.max(upto))?;
        Ok(Some(upto))
    }

    /// Follows a transactional batch: a marker ends its producer's transaction (an abort is
    /// indexed in the segment that holds the marker), data may begin one; either way the
    /// last stable offset is republished.
    fn record_transaction(
        &self,
        writer: &mut WriterState,
        w: &Write<'_>,
        segment_base: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        if w.batch.is_control() {
            if let Some(marker) = txn::parse_marker(w.batch) {
                let completed = writer.producers.record_marker(
                    w.batch.producer_id(),
                    w.batch.producer_epoch(),
                    marker,
                    w.base_offset,
                    w.max_timestamp,
                    now_ms,
                );
                if let Some((completed, lso)) = completed.filter(|(c, _)| c.aborted) {
                    self.record_abort(transactions::aborted_entry(&completed, lso), segment_base)?;
                }
            }
        }
        self.refresh_unstable(writer);
        Ok(())
    }

    fn should_roll(
        &self,
        segment: &LogSegment,
        config: &LogConfig,
        batch_size: usize,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        let size = segment.size();
        if size == 0 {
            return batch_size > segment.capacity();
        }
        size + batch_size > config.segment_bytes
            || size + batch_size > segment.capacity()
            || segment.offset_index_full()
            || !segment.can_hold_offset(last_offset)
            || now_ms.saturating_sub(segment.created_ms()) > config.max_segment_ms()
    }

    /// Starts a new active segment at `base_offset`. The old one is sealed and fsynced by the
    /// flusher, after which the recovery point moves past it.
    fn roll(
        &self,
        base_offset: i64,
        config: &LogConfig,
        first_batch: usize,
        now_ms: i64,
    ) -> io::Result<Arc<LogSegment>> {
        let old = self.active_segment();
        let sealed = if old.size() == 0 {
            // An empty active segment is replaced in place (e.g. capacity too small).
            old.delete_files()?;
            self.segments.write().remove(&old.base_offset());
            None
        } else {
            Some(old)
        };
        let capacity = config.segment_bytes.max(first_batch);
        let seg = Arc::new(LogSegment::open(
            &self.dir,
            base_offset,
            capacity,
            config.segment_index_bytes,
            true,
            now_ms,
        )?);
        self.segments.write().insert(base_offset, seg.clone());
        self.request_io(|owed| {
            owed.sync_dir = true;
            owed.seals.extend(sealed);
        })?;
        Ok(seg)
    }
}
