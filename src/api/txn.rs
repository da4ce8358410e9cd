//! The transactional producer's APIs: AddPartitionsToTxn (and its broker-to-broker
//! verify-only form, v4+), AddOffsetsToTxn, EndTxn and TxnOffsetCommit, and WriteTxnMarkers
//! between brokers. The handlers authorize as Kafka's `KafkaApis` does and translate; the
//! transaction coordinator (`txn/`) and the group coordinator do the work.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::group::{OffsetCommit, TxnCommitter};
use crate::meta::acl::{AclOperation, ResourceType};
use crate::txn::markers::{self, MarkerWrite};
use crate::txn::metadata::{TopicPartition, TxnResult};

/// KIP-588: before these versions clients know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
fn fenced_for(version: i16, first_with_fenced: i16, e: ResponseError) -> ResponseError {
    if e == ResponseError::ProducerFenced && version < first_with_fenced {
        ResponseError::InvalidProducerEpoch
    } else {
        e
    }
}

fn may_write_txn(broker: &Broker, session: &Session, transactional_id: &str) -> bool {
    session.allowed(
        &broker.image(),
        AclOperation::Write,
        ResourceType::TransactionalId,
        transactional_id,
    )
}

/// Per-partition results of one transaction: each partition's error code.
fn topic_results(results: &[(TopicPartition, i16)]) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), error) in results {
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(*partition)
            .with_partition_error_code(*error);
        match out.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(topic.clone().into()))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    out
}

/// One transaction of an AddPartitionsToTxn request: authorization (the producer's versions
/// only), unknown topics, then the coordinator.
async fn add_partitions_for(
    broker: &Broker,
    session: &Session,
    version: i16,
    id: &str,
    (producer_id, producer_epoch): (i64, i16),
    verify_only: bool,
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> Vec<(TopicPartition, i16)> {
    let partitions: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let all = |e: ResponseError| partitions.iter().map(|tp| (tp.clone(), code(e))).collect();
    if version < 4 && !may_write_txn(broker, session, id) {
        return all(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let image = broker.image();
    let mut refused: Vec<(TopicPartition, i16)> = Vec::new();
    for tp in &partitions {
        let error = if version < 4
            && !session.allowed(&image, AclOperation::Write, ResourceType::Topic, &tp.0)
        {
            Some(ResponseError::TopicAuthorizationFailed)
        } else if !image
            .topic(&tp.0)
            .is_some_and(|t| t.partitions.iter().any(|p| p.partition == tp.1))
        {
            Some(ResponseError::UnknownTopicOrPartition)
        } else {
            None
        };
        if let Some(e) = error {
            refused.push((tp.clone(), code(e)));
        }
    }
    if !refused.is_empty() {
        // Kafka attempts nothing when any partition is refused.
        for tp in &partitions {
            if !refused.iter().any(|(x, _)| x == tp) {
                refused.push((tp.clone(), code(ResponseError::OperationNotAttempted)));
            }
        }
        return refused;
    }
    if verify_only {
        return match broker
            .txns
            .verify_partitions(id, producer_id, producer_epoch, &partitions)
        {
            Ok(results) => results
                .into_iter()
                .map(|(tp, e)| (tp, e.map_or(0, code)))
                .collect(),
            Err(e) => all(e),
        };
    }
    match broker
        .txns
        .add_partitions(id, producer_id, producer_epoch, &partitions)
        .await
    {
        Ok(()) => partitions.iter().map(|tp| (tp.clone(), 0)).collect(),
        Err(e) => all(fenced_for(version, 2, e)),
    }
}

pub async fn add_partitions(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if version < 4 {
        let results = add_partitions_for(
            broker,
            session,
            version,
            &req.v3_and_below_transactional_id.0,
            (
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
            ),
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(topic_results(&results));
    }
    // v4+ come from brokers verifying partitions (KIP-890).
    if !session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed));
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = add_partitions_for(
            broker,
            session,
            version,
            &t.transactional_id.0,
            (t.producer_id.0, t.producer_epoch),
            t.verify_only,
            &t.topics,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results(&results)),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(out)
}

pub async fn add_offsets(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = req.transactional_id.0.as_str();
    let result = if !may_write_txn(broker, session, id) {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !session.allowed(
        &broker.image(),
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id.0,
    ) {
        Err(ResponseError::GroupAuthorizationFailed)
    } else {
        broker
            .txns
            .add_offsets(id, req.producer_id.0, req.producer_epoch, &req.group_id.0)
            .await
    };
    let error = result.err().map_or(0, |e| code(fenced_for(version, 2, e)));
    AddOffsetsToTxnResponse::default().with_error_code(error)
}

pub async fn end(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: EndTxnRequest,
) -> EndTxnResponse {
    let id = req.transactional_id.0.as_str();
    let result = if !may_write_txn(broker, session, id) {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else {
        let outcome = if req.committed {
            TxnResult::Commit
        } else {
            TxnResult::Abort
        };
        broker
            .txns
            .end_transaction(id, req.producer_id.0, req.producer_epoch, outcome)
            .await
    };
    let mut resp = EndTxnResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match result {
        Ok(()) => {
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch;
        }
        Err(e) => resp.error_code = code(fenced_for(version, 2, e)),
    }
    resp
}

pub async fn txn_offset_commit(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let image = broker.image();
    let whole_request = if !may_write_txn(broker, session, &req.transactional_id.0) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !session.allowed(
        &image,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id.0,
    ) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    // Partitions the session may not read, or that do not exist, are answered without
    // being committed.
    let mut answers: Vec<(String, i32, Option<ResponseError>)> = Vec::new();
    let mut commits = Vec::new();
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let readable = session.allowed(&image, AclOperation::Read, ResourceType::Topic, &topic);
        for p in &t.partitions {
            let refused = whole_request.or(if !readable {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if image.topic(&topic).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            });
            if refused.is_none() {
                commits.push(OffsetCommit {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
            answers.push((topic.clone(), p.partition_index, refused));
        }
    }
    let committer = TxnCommitter {
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: req.generation_id,
    };
    let committed = if commits.is_empty() {
        Ok(Vec::new())
    } else {
        broker
            .groups
            .txn_commit_offsets(&req.group_id.0, &committer, commits)
            .await
    };
    let mut codes = committed.as_ref().ok().map(|c| c.iter());
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, refused) in answers {
        let error = match (refused, &committed) {
            (Some(e), _) => code(e),
            (None, Err(e)) => code(fenced_for(version, 3, *e)),
            (None, Ok(_)) => {
                let c = codes.as_mut().and_then(|c| c.next()).copied().unwrap_or(0);
                match ResponseError::try_from_code(c) {
                    Some(e) => code(fenced_for(version, 3, e)),
                    None => c,
                }
            }
        };
        let r = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(error);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(r),
            None => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(topic.into()))
                    .with_partitions(vec![r]),
            ),
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// WriteTxnMarkers, from a transaction coordinator (or `kafka-transactions abort`): needs
/// CLUSTER_ACTION on the cluster.
pub async fn write_markers(
    broker: &Broker,
    session: &Session,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let image = broker.image();
    let allowed = session.allowed_on_cluster(&image, AclOperation::ClusterAction);
    let mut out = Vec::with_capacity(req.markers.len());
    for m in req.markers {
        let partitions: Vec<TopicPartition> = m
            .topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| (t.name.0.to_string(), *p))
            })
            .collect();
        let results: Vec<(TopicPartition, i16)> = if !allowed {
            partitions
                .into_iter()
                .map(|tp| (tp, code(ResponseError::ClusterAuthorizationFailed)))
                .collect()
        } else {
            let marker = MarkerWrite {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                coordinator_epoch: m.coordinator_epoch,
                commit: m.transaction_result,
            };
            markers::write_local(
                &broker.replicas,
                &broker.groups,
                &image,
                marker,
                &partitions,
            )
            .await
            .into_iter()
            .map(|(tp, e)| (tp, e.map_or(0, code)))
            .collect()
        };
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for ((topic, partition), error) in results {
            let r = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(partition)
                .with_error_code(error);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(r),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(TopicName(topic.into()))
                        .with_partitions(vec![r]),
                ),
            }
        }
        out.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(out)
}
