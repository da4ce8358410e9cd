//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455, KIP-860), as
//! `kafka-reassign-partitions.sh` uses them. The reassignment model is the controller's
//! (`meta::reassignment`); AlterPartitionReassignments answers once the reassignment has
//! started (its replicas are hosted here), not once it completed, as Kafka does.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::reassignment::{self, ReassignmentError, ReassignmentRequest};

fn error_code(e: &ReassignmentError) -> ResponseError {
    match e {
        ReassignmentError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        ReassignmentError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
        ReassignmentError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ReassignmentError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ReassignmentError::NotController(_) => ResponseError::NotController,
    }
}

fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().map(|b| BrokerId(*b)).collect()
}

/// Needs ALTER on the cluster. `replicas: null` cancels a partition's reassignment.
/// Version 0 requests always allow a replication factor change.
pub async fn alter(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Alter) {
        let e = ResponseError::ClusterAuthorizationFailed;
        return response
            .with_error_code(code(e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())));
    }
    let requests: Vec<ReassignmentRequest> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignmentRequest {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                target: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    let results = reassignment::alter_reassignments(
        &broker.meta,
        &requests,
        allow_rf_change,
        broker
            .config
            .kafka
            .controller
            .unclean_leader_election_enable,
    )
    .await;
    if results.iter().any(|r| r.is_ok()) {
        broker.wait_hosted().await;
    }
    let mut results = results.into_iter();
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match results.next() {
                        Some(Ok(())) => {
                            tracing::info!(topic = %t.name.0, partition = p.partition_index,
                                target = ?p.replicas, "partition reassignment altered");
                        }
                        Some(Err(e)) => {
                            r.error_code = code(error_code(&e));
                            r.error_message = Some(StrBytes::from_string(e.to_string()));
                        }
                        None => r.error_code = code(ResponseError::UnknownServerError),
                    }
                    r
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    response.with_responses(responses)
}

/// Needs DESCRIBE on the cluster. Without a topic list, every reassignment in progress.
pub fn list(
    broker: &Broker,
    session: &Session,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Describe) {
        let e = ResponseError::ClusterAuthorizationFailed;
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(StrBytes::from_string(e.to_string())));
    }
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = reassignment::ongoing(&image, wanted.as_deref())
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            OngoingPartitionReassignment::default()
                                .with_partition_index(p.partition)
                                .with_replicas(broker_ids(&p.replicas))
                                .with_adding_replicas(broker_ids(&p.adding))
                                .with_removing_replicas(broker_ids(&p.removing))
                        })
                        .collect(),
                )
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
