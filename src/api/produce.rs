//! Produce: validate each partition's record batch (framing, CRC32C, size), append it to the
//! leader's log as received, and answer per partition. acks=0 gets no response. Transactional
//! batches are authorized and verified first (`produce_txn.rs`).
//!
//! Every partition is appended first, in request order; then the request waits, with one
//! deadline (`timeout_ms` from when the appends finished, as Kafka's DelayedProduce), for the
//! fsyncs the topics' flush policy asked for and, with acks=-1, for the ISR to hold each
//! batch. A partition this broker does not lead names its current leader (KIP-951, v10+).

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use tracing::Instrument as _;

use super::code;
use super::leader_hints::LeaderHints;
use super::session::Session;
use super::tracing::Traced;
use crate::broker::Broker;
use crate::log::batch::{self, BatchError};
use crate::log::producer_state::AppendOrigin;
use crate::log::LogError;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::replica::{now_ms, PartitionError};

/// What the connection should do with the outcome.
pub enum ProduceOutcome {
    Respond(ProduceResponse),
    /// acks=0 and everything was appended: send nothing.
    NoResponse,
    /// acks=0 and something failed: Kafka closes the connection so the client notices.
    CloseConnection,
}

/// A partition's append, or the error code and message to answer with.
type PartitionResult = Result<Appended, (ResponseError, Option<String>)>;

struct Appended {
    partition: std::sync::Arc<crate::replica::Partition>,
    last_offset: i64,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// Acknowledge only once everything below this offset is on disk.
    durable_after: Option<i64>,
}

pub async fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    mut req: ProduceRequest,
    traced: &Traced,
) -> ProduceOutcome {
    // v13 names topics by id (KIP-516): resolve them first, so that transaction checks,
    // authorization and the log lookups below work by name as for older versions.
    broker.metrics.produce_version(version);
    let ids = resolve_topic_ids(broker, version, &mut req);
    let acks = req.acks;
    let valid_acks = matches!(acks, -1..=1);
    let txn = super::produce_txn::prepare(broker, session, &req).await;
    let image = broker.image();
    if traced.on() {
        name_destination(&req, traced);
    }
    // Append everything first, in request order; only then wait for replication.
    let mut appended: Vec<(String, Vec<(i32, PartitionResult)>)> = Vec::new();
    for (topic, topic_id) in req.topic_data.into_iter().zip(&ids) {
        let name = topic.name.0.to_string();
        // A v13 topic id that names no topic: UNKNOWN_TOPIC_ID, as Kafka answers.
        let unknown_id = topic_id.is_some_and(|_| name.is_empty());
        // Kafka checks WRITE before anything else: an unauthorized topic writes nothing and
        // says nothing about whether it exists.
        let authorized = session.allowed(&image, AclOperation::Write, ResourceType::Topic, &name);
        let results = topic
            .partition_data
            .into_iter()
            .map(|pd| {
                let origin = txn.origin(&name, pd.index);
                let result = match origin {
                    _ if unknown_id => Err((ResponseError::UnknownTopicId, None)),
                    _ if !authorized => Err((ResponseError::TopicAuthorizationFailed, None)),
                    Err(e) => Err((e, None)),
                    Ok(origin) if valid_acks => produce_partition(
                        broker,
                        version,
                        acks,
                        (&name, pd.index),
                        pd.records.as_deref(),
                        origin,
                        traced,
                    ),
                    Ok(_) => Err((ResponseError::InvalidRequiredAcks, None)),
                };
                (pd.index, result)
            })
            .collect();
        appended.push((name, results));
    }
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    for (_, results) in appended.iter_mut() {
        for (_, result) in results.iter_mut() {
            if let Ok(a) = result {
                if let Err(e) = acknowledged(a, acks, deadline, traced).await {
                    *result = Err((e, None));
                }
            }
        }
    }
    let any_error = appended
        .iter()
        .any(|(_, results)| results.iter().any(|(_, r)| r.is_err()));
    if acks == 0 {
        return if any_error {
            ProduceOutcome::CloseConnection
        } else {
            ProduceOutcome::NoResponse
        };
    }
    // KIP-951 (v10+): NOT_LEADER_OR_FOLLOWER names the leader the metadata has now.
    let image = broker.image();
    let mut hints = LeaderHints::new(&image);
    let responses = appended
        .into_iter()
        .zip(ids)
        .map(|((name, results), topic_id)| {
            let partitions = results
                .into_iter()
                .map(|(index, r)| {
                    let mut resp = partition_response(version, index, r);
                    if version >= 10 && resp.error_code == code(ResponseError::NotLeaderOrFollower)
                    {
                        if let Some((leader, epoch)) = hints.leader_of(&name, index) {
                            resp.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(epoch);
                        }
                    }
                    resp
                })
                .collect();
            let topic = TopicProduceResponse::default().with_partition_responses(partitions);
            match topic_id {
                Some(id) => topic.with_topic_id(id),
                None => topic.with_name(TopicName(StrBytes::from_string(name))),
            }
        })
        .collect();
    let node_endpoints = hints
        .endpoints(&session.listener)
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.node_id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect();
    ProduceOutcome::Respond(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
    )
}

/// From v13, fills in each topic's name from its id (left empty for an unknown id); the ids,
/// to answer with (`None` before v13).
fn resolve_topic_ids(
    broker: &Broker,
    version: i16,
    req: &mut ProduceRequest,
) -> Vec<Option<uuid::Uuid>> {
    if version < 13 {
        return vec![None; req.topic_data.len()];
    }
    let image = broker.image();
    req.topic_data
        .iter_mut()
        .map(|topic| {
            let name = image
                .topic_by_id(&topic.topic_id)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            topic.name = TopicName(StrBytes::from_string(name));
            Some(topic.topic_id)
        })
        .collect()
}

/// Names the destination of a traced single-topic request (and partition).
fn name_destination(req: &ProduceRequest, traced: &Traced) {
    if let [topic] = req.topic_data.as_slice() {
        let partition = match topic.partition_data.as_slice() {
            [one] => Some(one.index),
            _ => None,
        };
        traced.destination(topic.name.0.as_str(), partition);
    }
}

/// The distinct W3C `traceparent` values on the first record of the request's batches, for
/// the request's span (its parent and links), looked up only while tracing is on.
/// Uncompressed batches are read in place; compressed ones only for topics with
/// `gregor.trace.headers=true`.
pub fn traceparents(broker: &Broker, req: &ProduceRequest) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    let image = broker.image();
    for topic in &req.topic_data {
        // v13 names the topic by id only.
        let name = match image.topic_by_id(&topic.topic_id) {
            Some(t) if topic.name.0.is_empty() => t.name.as_str(),
            _ => topic.name.0.as_str(),
        };
        for pd in &topic.partition_data {
            let Some(records) = pd.records.as_deref() else {
                continue;
            };
            let Some((_, view)) = batch::BatchIter::new(records).next() else {
                continue;
            };
            let decompress = view.codec().is_ok_and(|c| c != batch::Codec::None)
                && broker
                    .replicas
                    .partition(name, pd.index)
                    .is_some_and(|p| p.log.config().trace_headers);
            if let Some(value) =
                crate::log::trace_header::first_record_header(&view, b"traceparent", decompress)
            {
                if !found.contains(&value) {
                    found.push(value);
                }
            }
        }
    }
    found
}

/// Waits, until `deadline`, for what must hold before an append is acknowledged: its fsync
/// when the flush policy asked for one, and with acks=-1 the high watermark passing it.
async fn acknowledged(
    a: &Appended,
    acks: i16,
    deadline: tokio::time::Instant,
    traced: &Traced,
) -> Result<(), ResponseError> {
    let (topic, index) = (&*a.partition.topic, a.partition.index);
    if let Some(offset) = a.durable_after {
        let durable = tokio::time::timeout_at(deadline, a.partition.log.wait_durable(offset))
            .instrument(traced.fsync(topic, index));
        match durable.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ResponseError::KafkaStorageError),
            Err(_) => return Err(ResponseError::RequestTimedOut),
        }
    }
    if acks == -1
        && !a
            .partition
            .wait_for_high_watermark(a.last_offset, deadline)
            .instrument(traced.replication_wait(topic, index))
            .await
    {
        return Err(if a.partition.is_leader() {
            ResponseError::RequestTimedOut
        } else {
            ResponseError::NotLeaderOrFollower
        });
    }
    Ok(())
}

fn partition_response(
    version: i16,
    index: i32,
    result: PartitionResult,
) -> PartitionProduceResponse {
    match result {
        Ok(a) => PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(a.base_offset)
            .with_log_append_time_ms(a.log_append_time)
            .with_log_start_offset(a.log_start_offset),
        Err((error, message)) => {
            let mut r = PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(code(error))
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if version >= 8 {
                let message = message.map(StrBytes::from_string);
                if error == ResponseError::InvalidRecord {
                    r.record_errors = vec![BatchIndexAndErrorMessage::default()
                        .with_batch_index(0)
                        .with_batch_index_error_message(message.clone())];
                }
                r.error_message = message;
            }
            r
        }
    }
}

fn produce_partition(
    broker: &Broker,
    version: i16,
    acks: i16,
    (topic, index): (&str, i32),
    records: Option<&[u8]>,
    origin: AppendOrigin,
    traced: &Traced,
) -> PartitionResult {
    let Some(partition) = broker.replicas.partition(topic, index) else {
        let image = broker.image();
        let known = image
            .topic(topic)
            .is_some_and(|t| t.partitions.iter().any(|p| p.partition == index));
        let error = if known {
            ResponseError::NotLeaderOrFollower
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        return Err((error, None));
    };
    if crate::meta::topic_name::is_internal_topic(topic) {
        return Err((
            ResponseError::InvalidTopicException,
            Some(format!("Cannot append to internal topic {topic}")),
        ));
    }
    let records = records.unwrap_or(&[]);
    let view = match batch::validate_produce_batch(records) {
        Ok(v) => v,
        Err(e) => {
            let error = match e {
                BatchError::Corrupt(_) => ResponseError::CorruptMessage,
                BatchError::Invalid(_) => ResponseError::InvalidRecord,
                BatchError::UnknownCompression(_) => ResponseError::UnsupportedCompressionType,
            };
            tracing::debug!(topic, partition = index, error = %e, "rejected produce batch");
            return Err((error, Some(e.to_string())));
        }
    };
    if version < 7 && view.codec() == Ok(batch::Codec::Zstd) {
        return Err((
            ResponseError::UnsupportedCompressionType,
            Some("zstd requires produce request version 7 or later".into()),
        ));
    }
    let span = traced.append(topic, index, view.size());
    let appended = span.in_scope(|| partition.append_from(&view, acks, now_ms(), origin));
    if let Ok(info) = &appended {
        span.record("messaging.kafka.offset", info.base_offset);
    }
    match appended {
        Ok(info) => Ok(Appended {
            partition: partition.clone(),
            last_offset: info.last_offset,
            base_offset: info.base_offset,
            log_append_time: info.log_append_time,
            log_start_offset: partition.log.log_start_offset(),
            durable_after: info.durable_after,
        }),
        Err(e) => {
            if let PartitionError::Log(LogError::Io(io)) = &e {
                tracing::error!(topic, partition = index, error = %io, "append failed");
            }
            let error = super::partition_error_code(&e);
            let message = (error != ResponseError::NotLeaderOrFollower).then(|| e.to_string());
            Err((error, message))
        }
    }
}
