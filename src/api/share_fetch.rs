//! ShareFetch and ShareAcknowledge (KIP-932) on the partition leader: a share consumer's
//! session step, its acknowledgements (ACCEPT, RELEASE, REJECT; on ShareFetch they ride along),
//! then for ShareFetch the records it acquires: whole batches as read from the log, with the
//! acquired offset ranges that say which of their records are this member's. A ShareFetch
//! that acquires nothing waits up to `max_wait_ms` for an append, a release or an expiring
//! acquisition lock.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Future;
use kafka_protocol::messages::share_acknowledge_response as ack;
use kafka_protocol::messages::share_fetch_response as fetch;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::session::Session;
use super::{code, hosted_partition};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::image::MetadataImage;
use crate::replica::{now_ms, Partition};
use crate::share::session::{SessionContext, SessionPartition, INITIAL_EPOCH};
use crate::share::StateKey;

/// ShareFetch's MaxRecords when the client leaves it unset (the consumer's max.poll.records
/// default).
const DEFAULT_MAX_RECORDS: usize = 500;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// A share request's group and member ids, or why it is invalid.
fn ids(
    group: Option<&GroupId>,
    member: Option<&StrBytes>,
) -> Result<(String, Arc<str>), ResponseError> {
    let group = group
        .map(|g| g.0.to_string())
        .filter(|g| !g.is_empty())
        .ok_or(ResponseError::InvalidRequest)?;
    let member = member
        .map(|m| m.to_string())
        .filter(|m| !m.is_empty())
        .ok_or(ResponseError::UnknownMemberId)?;
    Ok((group, Arc::from(member)))
}

/// A partition of the request resolved: its topic name and leader here, or the error.
fn resolve(
    broker: &Broker,
    session: &Session,
    image: &MetadataImage,
    topic_id: &Uuid,
    index: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let Some(topic) = image.topic_by_id(topic_id) else {
        return Err(ResponseError::UnknownTopicId);
    };
    if !session.allowed(image, AclOperation::Read, ResourceType::Topic, &topic.name) {
        return Err(ResponseError::TopicAuthorizationFailed);
    }
    hosted_partition(broker, image, &topic.name, index)
}

fn key(group: &str, (topic_id, partition): SessionPartition) -> StateKey {
    StateKey {
        group: group.to_string(),
        topic_id,
        partition,
    }
}

/// One partition's acknowledgement batches: (first offset, last offset, ack types).
type AckBatches = Vec<(i64, i64, Vec<i8>)>;

/// The acknowledgements of a request's partitions, applied: (topic id, partition) -> error.
async fn acknowledge_all(
    broker: &Broker,
    session: &Session,
    group: &str,
    member: &str,
    acks: Vec<(SessionPartition, AckBatches)>,
) -> HashMap<SessionPartition, Option<ResponseError>> {
    let image = broker.image();
    let mut out = HashMap::new();
    for (tp, batches) in acks {
        let result = match resolve(broker, session, &image, &tp.0, tp.1) {
            Ok(partition) => {
                broker
                    .shares
                    .acknowledge(&key(group, tp), member, &partition, &batches)
                    .await
            }
            Err(e) => Err(e),
        };
        out.insert(tp, result.err());
    }
    out
}

/// The leader of a partition as the response's CurrentLeader names it.
fn leader_of(image: &MetadataImage, (topic_id, index): SessionPartition) -> (i32, i32) {
    image
        .topic_by_id(&topic_id)
        .and_then(|t| t.partitions.iter().find(|p| p.partition == index))
        .map_or((-1, -1), |p| (p.leader, p.leader_epoch))
}

pub async fn share_fetch(
    broker: &Broker,
    session: &Session,
    req: ShareFetchRequest,
) -> ShareFetchResponse {
    let lock_ms = broker
        .shares
        .config
        .record_lock_duration_ms
        .min(i32::MAX as i64) as i32;
    let top = |e: ResponseError| {
        ShareFetchResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(e.to_string())))
            .with_acquisition_lock_timeout_ms(lock_ms)
    };
    let (group, member) = match ids(req.group_id.as_ref(), req.member_id.as_ref()) {
        Ok(x) => x,
        Err(e) => return top(e),
    };
    let image = broker.image();
    if !session.allowed(&image, AclOperation::Read, ResourceType::Group, &group) {
        return top(ResponseError::GroupAuthorizationFailed);
    }
    let mut acks = Vec::new();
    let mut add = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let tp = (t.topic_id, p.partition_index);
            add.push(tp);
            if !p.acknowledgement_batches.is_empty() {
                let batches = p
                    .acknowledgement_batches
                    .iter()
                    .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                    .collect();
                acks.push((tp, batches));
            }
        }
    }
    if req.share_session_epoch == INITIAL_EPOCH && !acks.is_empty() {
        return top(ResponseError::InvalidRequest);
    }
    let forget: Vec<SessionPartition> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    let step =
        match broker
            .shares
            .sessions
            .fetch(&group, &member, req.share_session_epoch, &add, &forget)
        {
            Ok(step) => step,
            Err(e) => return top(e),
        };
    if let Some(replaced) = &step.replaced {
        let keys: Vec<StateKey> = replaced.iter().map(|tp| key(&group, *tp)).collect();
        broker.shares.release_member(&keys, &member).await;
    }
    let acked = acknowledge_all(broker, session, &group, &member, acks).await;
    let mut results: BTreeMap<SessionPartition, PartitionResult> = BTreeMap::new();
    if step.context == SessionContext::Final {
        let keys: Vec<StateKey> = step.partitions.iter().map(|tp| key(&group, *tp)).collect();
        broker.shares.release_member(&keys, &member).await;
    } else {
        let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let max_records = usize::try_from(req.max_records)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_MAX_RECORDS);
        let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0).max(1);
        results = fetch_records(
            broker,
            session,
            &group,
            &member,
            &step.partitions,
            max_bytes,
            max_records,
            if acked.is_empty() {
                max_wait
            } else {
                Duration::ZERO
            },
        )
        .await;
    }
    let full = step.context == SessionContext::Full;
    for (tp, e) in &acked {
        let r = results.entry(*tp).or_default();
        r.acked = true;
        r.ack_error = *e;
    }
    let image = broker.image();
    let mut topics: BTreeMap<Uuid, Vec<fetch::PartitionData>> = BTreeMap::new();
    for (tp, r) in results {
        let news = r.error.is_some() || r.acked || !r.acquired.is_empty();
        if !(full || news) {
            continue;
        }
        let (leader_id, leader_epoch) = leader_of(&image, tp);
        let data = fetch::PartitionData::default()
            .with_partition_index(tp.1)
            .with_error_code(r.error.map_or(0, code))
            .with_acknowledge_error_code(r.ack_error.map_or(0, code))
            .with_current_leader(
                fetch::LeaderIdAndEpoch::default()
                    .with_leader_id(leader_id)
                    .with_leader_epoch(leader_epoch),
            )
            .with_records(Some(r.records))
            .with_acquired_records(
                r.acquired
                    .iter()
                    .map(|a| {
                        fetch::AcquiredRecords::default()
                            .with_first_offset(a.first_offset)
                            .with_last_offset(a.last_offset)
                            .with_delivery_count(a.delivery_count)
                    })
                    .collect(),
            );
        topics.entry(tp.0).or_default().push(data);
    }
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    fetch::ShareFetchableTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// A share-partition whose state cannot be read or written now (its state partition is
/// not led here yet, or a write timed out) is answered REPLICA_NOT_AVAILABLE, which share
/// consumers retry after refreshing metadata; Kafka's coordinator errors would end them.
fn retriable_for_consumer(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::CoordinatorNotAvailable
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::NotCoordinator
        | ResponseError::RequestTimedOut => ResponseError::ReplicaNotAvailable,
        other => other,
    }
}

/// One partition's part of a ShareFetch response.
#[derive(Default)]
struct PartitionResult {
    records: Bytes,
    acquired: Vec<crate::share::partition::Acquired>,
    error: Option<ResponseError>,
    /// Whether the request acknowledged records of this partition, and how that went.
    acked: bool,
    ack_error: Option<ResponseError>,
}

/// Acquires records from the session's partitions, waiting up to `max_wait` while there are
/// none.
#[allow(clippy::too_many_arguments)]
async fn fetch_records(
    broker: &Broker,
    session: &Session,
    group: &str,
    member: &Arc<str>,
    partitions: &[SessionPartition],
    max_bytes: usize,
    max_records: usize,
    max_wait: Duration,
) -> BTreeMap<SessionPartition, PartitionResult> {
    let deadline = tokio::time::Instant::now() + max_wait;
    let keys: Vec<StateKey> = partitions.iter().map(|tp| key(group, *tp)).collect();
    loop {
        let image = broker.image();
        let resolved: Vec<(SessionPartition, Result<Arc<Partition>, ResponseError>)> = partitions
            .iter()
            .map(|tp| (*tp, resolve(broker, session, &image, &tp.0, tp.1)))
            .collect();
        // Register for wake-ups before reading, so an append or release in between is not
        // missed.
        let mut wakeups: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = Vec::new();
        let mut released = Box::pin(broker.shares.released.notified());
        released.as_mut().enable();
        let mut arrived: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = resolved
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|p| Box::pin(p.data_arrived()))
            .collect();
        for a in arrived.iter_mut() {
            a.as_mut().enable();
        }
        let mut results = BTreeMap::new();
        let (mut bytes_left, mut records_left) = (max_bytes, max_records);
        let mut any = false;
        for (tp, target) in &resolved {
            let mut r = PartitionResult::default();
            match target {
                Err(e) => {
                    r.error = Some(*e);
                    any = true;
                }
                Ok(_) if bytes_left == 0 || records_left == 0 => {}
                Ok(partition) => {
                    match broker
                        .shares
                        .fetch(
                            &key(group, *tp),
                            member,
                            partition,
                            bytes_left,
                            records_left,
                        )
                        .await
                    {
                        Ok(f) => {
                            let n: i64 = f
                                .acquired
                                .iter()
                                .map(|a| a.last_offset - a.first_offset + 1)
                                .sum();
                            records_left = records_left.saturating_sub(n as usize);
                            bytes_left = bytes_left.saturating_sub(f.records.len());
                            any |= n > 0;
                            r.records = f.records;
                            r.acquired = f.acquired;
                        }
                        Err(e) => {
                            r.error = Some(retriable_for_consumer(e));
                            any = true;
                        }
                    }
                }
            }
            results.insert(*tp, r);
        }
        let now = tokio::time::Instant::now();
        if any || now >= deadline || resolved.is_empty() {
            return results;
        }
        // An acquisition lock expiring makes records available again.
        let wake_at = broker
            .shares
            .next_lock_deadline(&keys)
            .map(|ms| {
                let wait = (ms - now_ms()).max(1) as u64;
                (now + Duration::from_millis(wait)).min(deadline)
            })
            .unwrap_or(deadline);
        wakeups.push(Box::pin(async move {
            released.await;
        }));
        for a in arrived {
            wakeups.push(Box::pin(async move {
                a.await;
            }));
        }
        tokio::select! {
            _ = futures::future::select_all(wakeups) => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = broker.shutdown.cancelled() => return results,
        }
    }
}

pub async fn share_acknowledge(
    broker: &Broker,
    session: &Session,
    req: ShareAcknowledgeRequest,
) -> ShareAcknowledgeResponse {
    let top = |e: ResponseError| {
        ShareAcknowledgeResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(e.to_string())))
    };
    let (group, member) = match ids(req.group_id.as_ref(), req.member_id.as_ref()) {
        Ok(x) => x,
        Err(e) => return top(e),
    };
    let image = broker.image();
    if !session.allowed(&image, AclOperation::Read, ResourceType::Group, &group) {
        return top(ResponseError::GroupAuthorizationFailed);
    }
    let (context, partitions) =
        match broker
            .shares
            .sessions
            .acknowledge(&group, &member, req.share_session_epoch)
        {
            Ok(x) => x,
            Err(e) => return top(e),
        };
    let acks = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    (t.topic_id, p.partition_index),
                    p.acknowledgement_batches
                        .iter()
                        .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                        .collect(),
                )
            })
        })
        .collect();
    let acked = acknowledge_all(broker, session, &group, &member, acks).await;
    if context == SessionContext::Final {
        let keys: Vec<StateKey> = partitions.iter().map(|tp| key(&group, *tp)).collect();
        broker.shares.release_member(&keys, &member).await;
    }
    let mut topics: BTreeMap<Uuid, Vec<ack::PartitionData>> = BTreeMap::new();
    let image = broker.image();
    let mut acked: Vec<_> = acked.into_iter().collect();
    acked.sort_by_key(|(tp, _)| *tp);
    for (tp, e) in acked {
        let (leader_id, leader_epoch) = leader_of(&image, tp);
        topics.entry(tp.0).or_default().push(
            ack::PartitionData::default()
                .with_partition_index(tp.1)
                .with_error_code(e.map_or(0, code))
                .with_current_leader(
                    ack::LeaderIdAndEpoch::default()
                        .with_leader_id(leader_id)
                        .with_leader_epoch(leader_epoch),
                ),
        );
    }
    ShareAcknowledgeResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(topic_id, partitions)| {
                ack::ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
