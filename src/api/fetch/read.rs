//! One pass of a fetch over its partitions: whole batches sliced from the segment mappings
//! (below the high watermark for consumers, below the last stable offset with the aborted
//! transactions among them for read_committed ones, up to the log end for followers), or the
//! preferred read replica a rack-aware leader names instead (KIP-392), or the partition's error.
//! A follower's read of a throttled partition may come back empty (replication throttles).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, EpochEndOffset, PartitionData};
use kafka_protocol::messages::{BrokerId, ProducerId};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::preferred_replica::preferred_read_replica;
use super::session_cache::{FetchParams, PartitionKey};
use crate::api::{code, partition_error_code};
use crate::meta::image::MetadataImage;
use crate::replica::replication::{FollowerFetch, FollowerRead};
use crate::replica::throttle::ReplicationQuota;
use crate::replica::Partition;

/// One requested partition, resolved against what this broker hosts.
pub struct Wanted {
    pub key: PartitionKey,
    pub topic: Option<Arc<str>>,
    pub topic_id: Uuid,
    pub index: i32,
    pub params: FetchParams,
    /// isolation_level READ_COMMITTED: read up to the last stable offset and report aborted
    /// transactions.
    pub read_committed: bool,
    pub target: Result<Arc<Partition>, ResponseError>,
}

/// What a fetch reads with, the same for all its partitions.
pub struct ReadOptions<'a> {
    /// A follower broker's id; `None` for consumers.
    pub replica_id: Option<i32>,
    pub response_max_bytes: usize,
    /// Before Fetch v11 (no client metadata) consumers read from leaders only.
    pub leader_only: bool,
    /// With `replica.selector.class` set and Fetch v11+: the consumer's rack_id and the
    /// listener it came in on, to name a preferred read replica.
    pub rack: Option<(&'a str, &'a str)>,
    pub image: &'a MetadataImage,
    /// The leader side's replication throttle (KIP-73), for followers' reads.
    pub leader_quota: &'a ReplicationQuota,
}

/// One pass over every wanted partition.
pub struct ReadAll {
    /// One per wanted partition, in request order.
    pub partitions: Vec<PartitionData>,
    /// Record bytes in the response.
    pub bytes: usize,
    /// Some partition had an error, a diverging epoch or a preferred read replica (which make
    /// Kafka answer at once).
    pub respond_now: bool,
}

/// Reads every wanted partition once.
pub fn read_all(wanted: &[Wanted], opts: &ReadOptions<'_>) -> ReadAll {
    let mut partitions = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut respond_now = false;
    for w in wanted {
        let limit =
            (w.params.max_bytes.max(0) as usize).min(opts.response_max_bytes.saturating_sub(total));
        let min_one = total == 0;
        let (data, now) = match (&w.target, opts.replica_id) {
            (Err(e), _) => (error_partition(w.index, *e), true),
            (Ok(p), None) => consumer_read(p, w, limit, min_one, opts),
            (Ok(p), Some(replica)) => follower_read(p, w, replica, limit, opts.leader_quota),
        };
        total += data.records.as_ref().map_or(0, Bytes::len);
        respond_now |= now;
        partitions.push(data);
    }
    ReadAll {
        partitions,
        bytes: total,
        respond_now,
    }
}

/// A consumer's read: below the high watermark (or the last stable offset), or the preferred
/// read replica instead. The flag says the fetch should be answered at once.
fn consumer_read(
    partition: &Partition,
    w: &Wanted,
    limit: usize,
    min_one: bool,
    opts: &ReadOptions<'_>,
) -> (PartitionData, bool) {
    let p = &w.params;
    if let Some((rack, listener)) = opts.rack {
        let preferred =
            preferred_read_replica(opts.image, partition, rack, listener, p.fetch_offset);
        if let Some(replica) = preferred {
            if let Err(e) = partition.check_leader_epoch(p.current_leader_epoch) {
                return (error_partition(w.index, partition_error_code(&e)), true);
            }
            let hwm = partition.high_watermark();
            let data = PartitionData::default()
                .with_partition_index(w.index)
                .with_high_watermark(hwm)
                .with_last_stable_offset(partition.log.last_stable_offset(hwm))
                .with_log_start_offset(partition.log.log_start_offset())
                .with_preferred_read_replica(BrokerId(replica))
                .with_records(Some(Bytes::new()));
            return (data, true);
        }
    }
    let read = partition.read(
        p.fetch_offset,
        p.current_leader_epoch,
        limit,
        min_one,
        w.read_committed,
        opts.leader_only,
    );
    match read {
        Ok(read) => {
            let aborted = read.aborted.map(|txns| {
                txns.iter()
                    .map(|t| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(t.producer_id))
                            .with_first_offset(t.first_offset)
                    })
                    .collect()
            });
            let data = PartitionData::default()
                .with_partition_index(w.index)
                .with_high_watermark(read.high_watermark)
                .with_last_stable_offset(read.last_stable_offset)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(aborted)
                .with_preferred_read_replica((-1).into())
                .with_records(Some(read.result.records));
            (data, false)
        }
        Err(e) => (error_partition(w.index, partition_error_code(&e)), true),
    }
}

/// A follower's read on the leader: up to the log end, or where the follower's log diverges.
/// A leader-throttled partition gives a follower outside the ISR no records while the leader's
/// replication quota is used up (Kafka's shouldLeaderThrottle).
fn follower_read(
    partition: &Partition,
    w: &Wanted,
    replica: i32,
    limit: usize,
    quota: &ReplicationQuota,
) -> (PartitionData, bool) {
    let p = &w.params;
    let throttled =
        quota.should_throttle(partition.leader_throttled(), || partition.in_isr(replica));
    let fetch = FollowerFetch {
        fetch_offset: p.fetch_offset,
        current_leader_epoch: p.current_leader_epoch,
        last_fetched_epoch: p.last_fetched_epoch,
        log_start_offset: p.log_start_offset,
    };
    match partition.read_for_follower(replica, fetch, limit, throttled) {
        Ok(FollowerRead::Records {
            result,
            high_watermark,
            log_start_offset,
        }) => {
            let data = PartitionData::default()
                .with_partition_index(w.index)
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log_start_offset)
                .with_preferred_read_replica((-1).into())
                .with_records(Some(result.records));
            (data, false)
        }
        Ok(FollowerRead::Diverging { epoch, end_offset }) => {
            let mut d = PartitionData::default()
                .with_partition_index(w.index)
                .with_high_watermark(partition.high_watermark())
                .with_last_stable_offset(partition.high_watermark())
                .with_log_start_offset(partition.log.log_start_offset())
                .with_preferred_read_replica((-1).into())
                .with_records(Some(Bytes::new()));
            d.diverging_epoch = EpochEndOffset::default()
                .with_epoch(epoch)
                .with_end_offset(end_offset);
            (d, true)
        }
        Err(e) => {
            let mut d = error_partition(w.index, partition_error_code(&e));
            // Followers need the leader's bounds to reset an out-of-range log.
            d.log_start_offset = partition.log.log_start_offset();
            d.high_watermark = partition.high_watermark();
            (d, true)
        }
    }
}

pub fn error_partition(index: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code(error))
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica((-1).into())
        .with_records(Some(Bytes::new()))
}
