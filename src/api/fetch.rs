//! Fetch for consumers and follower replicas: whole batches (below the high watermark for
//! consumers, below the last stable offset with the aborted transactions among them for
//! read_committed ones, up to the log end for followers), sliced straight from segment
//! mappings. A fetch that has less than `min_bytes` waits (up to `max_wait_ms`) for an append
//! to any of its partitions to wake it; there is no polling timer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use tracing::Instrument as _;

use super::session::Session;
use super::tracing::Traced;
use super::{code, partition_error_code};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::replica::replication::FollowerRead;
use crate::replica::Partition;

/// One requested partition, resolved against what this broker hosts.
struct Wanted {
    topic: Option<String>,
    topic_id: Uuid,
    index: i32,
    fetch_offset: i64,
    current_leader_epoch: i32,
    max_bytes: usize,
    last_fetched_epoch: i32,
    /// isolation_level READ_COMMITTED: read up to the last stable offset and report aborted
    /// transactions.
    read_committed: bool,
    target: Result<Arc<Partition>, ResponseError>,
}

/// Kafka's session epochs: -1 closes (or skips) a session, 0 asks for a new one.
const FINAL_EPOCH: i32 = -1;
const READ_COMMITTED: i8 = 1;
const INITIAL_EPOCH: i32 = 0;

pub async fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: FetchRequest,
    traced: &Traced,
) -> FetchResponse {
    // Gregor does not keep fetch sessions: a full fetch is answered with session id 0 (no
    // session created), and an incremental fetch names a session that cannot exist.
    if req.session_epoch != FINAL_EPOCH && req.session_epoch != INITIAL_EPOCH {
        return FetchResponse::default()
            .with_error_code(code(ResponseError::FetchSessionIdNotFound))
            .with_session_id(0);
    }
    // A broker replica fetches with its id; consumers send -1.
    let replica_id = (req.replica_id.0 >= 0).then_some(req.replica_id.0);
    let wanted = resolve(broker, session, version, &req, replica_id.is_some());
    if traced.on() {
        if let (Some(first), true) = (wanted.first(), wanted.len() == 1) {
            traced.destination(first.topic.as_deref().unwrap_or(""), Some(first.index));
        } else if let Some(topic) = wanted.first().and_then(|w| w.topic.as_deref()) {
            if wanted.iter().all(|w| w.topic.as_deref() == Some(topic)) {
                traced.destination(topic, None);
            }
        }
    }
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    answer(broker, version, &req, &wanted, replica_id, max_wait, traced).await
}

/// The requested partitions, resolved against what this broker hosts and what the session may
/// read: a consumer needs READ on each topic, a follower CLUSTER_ACTION on the cluster (as in
/// Kafka, a refused follower gets TOPIC_AUTHORIZATION_FAILED on every partition).
fn resolve(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: &FetchRequest,
    follower: bool,
) -> Vec<Wanted> {
    let image = broker.image();
    let follower_allowed =
        follower && session.allowed_on_cluster(&image, AclOperation::ClusterAction);
    let mut wanted = Vec::new();
    for topic in &req.topics {
        let (name, known): (Option<String>, bool) = if version >= 13 {
            match image.topic_by_id(&topic.topic_id) {
                Some(t) => (Some(t.name.clone()), true),
                None => (None, false),
            }
        } else {
            let name = topic.topic.0.to_string();
            let known = image.topic(&name).is_some();
            (Some(name), known)
        };
        let authorized = match (&name, follower) {
            (_, true) => follower_allowed,
            (Some(n), false) => session.allowed(&image, AclOperation::Read, ResourceType::Topic, n),
            (None, false) => true,
        };
        for p in &topic.partitions {
            let target = match &name {
                _ if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                Some(n) if known => broker.replicas.partition(n, p.partition).ok_or_else(|| {
                    let exists = image
                        .topic(n)
                        .is_some_and(|t| t.partitions.iter().any(|x| x.partition == p.partition));
                    if exists {
                        ResponseError::NotLeaderOrFollower
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    }
                }),
                _ if version >= 13 => Err(ResponseError::UnknownTopicId),
                _ => Err(ResponseError::UnknownTopicOrPartition),
            };
            wanted.push(Wanted {
                topic: name.clone(),
                topic_id: topic.topic_id,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                current_leader_epoch: if version >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                max_bytes: p.partition_max_bytes.max(0) as usize,
                last_fetched_epoch: if version >= 12 {
                    p.last_fetched_epoch
                } else {
                    -1
                },
                read_committed: !follower && req.isolation_level == READ_COMMITTED,
                target,
            });
        }
    }
    wanted
}

/// Waits (up to the request's `max_wait_ms`) until `min_bytes` are readable or an error
/// makes Kafka answer at once, then answers with one final read.
async fn answer(
    broker: &Broker,
    version: i16,
    req: &FetchRequest,
    wanted: &[Wanted],
    replica_id: Option<i32>,
    max_wait: Duration,
    traced: &Traced,
) -> FetchResponse {
    let deadline = tokio::time::Instant::now() + max_wait;
    let response_max_bytes = req.max_bytes.max(0) as usize;
    let min_bytes = req.min_bytes.max(0) as usize;
    let hosted: Vec<Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.target.as_ref().ok().cloned())
        .collect();
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        // Consumers wait for the high watermark; followers for the log end offset.
        let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            hosted.iter().map(|p| Box::pin(p.data_arrived())).collect();
        if replica_id.is_some() {
            wakeups.extend(hosted.iter().map(|p| Box::pin(p.next_append())));
        }
        for w in wakeups.iter_mut() {
            w.as_mut().enable();
        }
        let read = read_all(wanted, version, replica_id, response_max_bytes);
        let now = tokio::time::Instant::now();
        if read.bytes >= min_bytes || read.errors || now >= deadline || wakeups.is_empty() {
            // Counted once, for the response that goes out (not for reads a wait discarded).
            for (w, n) in wanted.iter().zip(&read.bytes_by_partition) {
                if let (Ok(p), true) = (&w.target, *n > 0) {
                    p.counters
                        .bytes_out
                        .fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            return FetchResponse::default()
                .with_session_id(0)
                .with_responses(read.topics);
        }
        let waited = async {
            tokio::select! {
                _ = futures::future::select_all(wakeups) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = broker.shutdown.cancelled() => {}
            }
        };
        waited.instrument(traced.fetch_wait()).await;
    }
}

/// One pass over every wanted partition.
struct ReadAll {
    topics: Vec<FetchableTopicResponse>,
    /// Record bytes in the response.
    bytes: usize,
    /// Record bytes per wanted partition, in request order.
    bytes_by_partition: Vec<usize>,
    /// Some partition had an error (which makes Kafka answer at once).
    errors: bool,
}

/// Reads every wanted partition once.
fn read_all(
    wanted: &[Wanted],
    version: i16,
    replica_id: Option<i32>,
    response_max_bytes: usize,
) -> ReadAll {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut total = 0usize;
    let mut any_error = false;
    let mut bytes_by_partition = Vec::with_capacity(wanted.len());
    for w in wanted {
        let limit = w.max_bytes.min(response_max_bytes.saturating_sub(total));
        let min_one = total == 0;
        let (data, bytes) = match (&w.target, replica_id) {
            (Err(e), _) => (Err(error_partition(w.index, *e)), 0),
            (Ok(p), None) => consumer_read(p, w, limit, min_one, version),
            (Ok(p), Some(replica)) => follower_read(p, w, replica, limit, version),
        };
        total += bytes;
        bytes_by_partition.push(bytes);
        any_error |= data.is_err();
        let data = data.unwrap_or_else(|d| d);
        let same_topic = topics.last().is_some_and(|t| {
            if version >= 13 {
                t.topic_id == w.topic_id
            } else {
                Some(t.topic.0.as_str()) == w.topic.as_deref()
            }
        });
        if !same_topic {
            let mut t = FetchableTopicResponse::default();
            if version >= 13 {
                t.topic_id = w.topic_id;
            } else {
                t.topic = TopicName(StrBytes::from_string(w.topic.clone().unwrap_or_default()));
            }
            topics.push(t);
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(data);
        }
    }
    ReadAll {
        topics,
        bytes: total,
        bytes_by_partition,
        errors: any_error,
    }
}

/// A consumer's read: below the high watermark. `Err` holds an error partition.
fn consumer_read(
    partition: &Partition,
    w: &Wanted,
    limit: usize,
    min_one: bool,
    version: i16,
) -> (Result<PartitionData, PartitionData>, usize) {
    let read = partition.read(
        w.fetch_offset,
        w.current_leader_epoch,
        limit,
        min_one,
        w.read_committed,
    );
    match read {
        Ok(read) => {
            let bytes = read.result.records.len();
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
            (Ok(data), bytes)
        }
        Err(e) => (Err(partition_failure(partition, w.index, &e, version)), 0),
    }
}

/// A follower's read on the leader: up to the log end, or where the follower's log diverges.
fn follower_read(
    partition: &Partition,
    w: &Wanted,
    replica: i32,
    limit: usize,
    version: i16,
) -> (Result<PartitionData, PartitionData>, usize) {
    let read = partition.read_for_follower(
        replica,
        w.fetch_offset,
        w.current_leader_epoch,
        w.last_fetched_epoch,
        limit,
    );
    match read {
        Ok(FollowerRead::Records {
            result,
            high_watermark,
            log_start_offset,
        }) => {
            let bytes = result.records.len();
            let data = PartitionData::default()
                .with_partition_index(w.index)
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log_start_offset)
                .with_preferred_read_replica((-1).into())
                .with_records(Some(result.records));
            (Ok(data), bytes)
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
            (Err(d), 0)
        }
        Err(e) => {
            let mut d = partition_failure(partition, w.index, &e, version);
            // Followers need the leader's bounds to reset an out-of-range log.
            d.log_start_offset = partition.log.log_start_offset();
            d.high_watermark = partition.high_watermark();
            (Err(d), 0)
        }
    }
}

/// A failed partition read; NOT_LEADER and epoch errors carry the current leader (v12+), so
/// clients can go straight there.
fn partition_failure(
    partition: &Partition,
    index: i32,
    e: &crate::replica::PartitionError,
    version: i16,
) -> PartitionData {
    let error = partition_error_code(e);
    let mut d = error_partition(index, error);
    let leader_hint = matches!(
        error,
        ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch
    );
    if version >= 12 && leader_hint {
        let state = partition.state();
        d.current_leader = LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(state.leader))
            .with_leader_epoch(state.leader_epoch);
    }
    d
}

fn error_partition(index: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code(error))
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica((-1).into())
        .with_records(Some(Bytes::new()))
}
