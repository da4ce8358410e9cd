//! Fetch for consumers: whole batches below the high watermark, sliced straight from segment
//! mappings. A fetch that has less than `min_bytes` waits (up to `max_wait_ms`) for an append
//! to any of its partitions to wake it; there is no polling timer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{code, partition_error_code};
use crate::broker::Broker;
use crate::replica::Partition;

/// One requested partition, resolved against what this broker hosts.
struct Wanted {
    topic: Option<String>,
    topic_id: Uuid,
    index: i32,
    fetch_offset: i64,
    current_leader_epoch: i32,
    max_bytes: usize,
    target: Result<Arc<Partition>, ResponseError>,
}

/// Kafka's session epochs: -1 closes (or skips) a session, 0 asks for a new one.
const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

pub async fn handle(broker: &Broker, version: i16, req: FetchRequest) -> FetchResponse {
    // Gregor does not keep fetch sessions: a full fetch is answered with session id 0 (no
    // session created), and an incremental fetch names a session that cannot exist.
    if req.session_epoch != FINAL_EPOCH && req.session_epoch != INITIAL_EPOCH {
        return FetchResponse::default()
            .with_error_code(code(ResponseError::FetchSessionIdNotFound))
            .with_session_id(0);
    }
    let image = broker.image();
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
        for p in &topic.partitions {
            let target = match &name {
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
                target,
            });
        }
    }

    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let response_max_bytes = req.max_bytes.max(0) as usize;
    let min_bytes = req.min_bytes.max(0) as usize;
    let hosted: Vec<Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.target.as_ref().ok().cloned())
        .collect();
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            hosted.iter().map(|p| Box::pin(p.data_arrived())).collect();
        for w in wakeups.iter_mut() {
            w.as_mut().enable();
        }
        let (topics, bytes, errors) = read_all(&wanted, version, response_max_bytes);
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes || errors || now >= deadline || wakeups.is_empty() {
            return FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics);
        }
        tokio::select! {
            _ = futures::future::select_all(wakeups) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = broker.shutdown.cancelled() => {}
        }
    }
}

/// Reads every wanted partition once. Returns the topics, the bytes of records, and whether
/// any partition had an error (which makes Kafka answer at once).
fn read_all(
    wanted: &[Wanted],
    version: i16,
    response_max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let remaining = response_max_bytes.saturating_sub(total);
        let data = match &w.target {
            Err(e) => {
                any_error = true;
                error_partition(w.index, *e)
            }
            Ok(partition) => {
                let min_one = total == 0;
                match partition.read(
                    w.fetch_offset,
                    w.current_leader_epoch,
                    w.max_bytes.min(remaining),
                    min_one,
                ) {
                    Ok(read) => {
                        total += read.result.records.len();
                        PartitionData::default()
                            .with_partition_index(w.index)
                            .with_high_watermark(read.high_watermark)
                            .with_last_stable_offset(read.last_stable_offset)
                            .with_log_start_offset(read.log_start_offset)
                            .with_preferred_read_replica((-1).into())
                            .with_records(Some(read.result.records))
                    }
                    Err(e) => {
                        any_error = true;
                        error_partition(w.index, partition_error_code(&e))
                    }
                }
            }
        };
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
    (topics, total, any_error)
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
