//! ElectLeaders (KIP-183, KIP-460): preferred and unclean leader elections on request, as
//! `kafka-leader-election.sh` asks for them. The elections themselves are the controller's
//! (`meta::elections`); the response is sent once this broker has applied the result.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::elections::{self, ElectionError};
use crate::meta::partition_change::Election;

fn error_code(e: &ElectionError) -> ResponseError {
    match e {
        ElectionError::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        ElectionError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        ElectionError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ElectionError::NotController(_) => ResponseError::NotController,
    }
}

/// The same error for every partition of the request (Kafka's error response).
fn refuse(req: &ElectLeadersRequest, e: ResponseError, message: String) -> ElectLeadersResponse {
    let results = req
        .topic_partitions
        .iter()
        .flatten()
        .map(|t| {
            ReplicaElectionResult::default()
                .with_topic(t.topic.clone())
                .with_partition_result(
                    t.partitions
                        .iter()
                        .map(|p| {
                            PartitionResult::default()
                                .with_partition_id(*p)
                                .with_error_code(code(e))
                                .with_error_message(Some(StrBytes::from_string(message.clone())))
                        })
                        .collect(),
                )
        })
        .collect();
    ElectLeadersResponse::default()
        .with_error_code(code(e))
        .with_replica_election_results(results)
}

/// Needs ALTER on the cluster. `election_type` 0 is preferred (the only kind in v0), 1 unclean.
/// Without a partition list every partition is elected, and those that already have the
/// wanted leader are left out of the response, as Kafka does.
pub async fn handle(
    broker: &Broker,
    session: &Session,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Alter) {
        let e = ResponseError::ClusterAuthorizationFailed;
        return refuse(&req, e, e.to_string());
    }
    let election = match req.election_type {
        0 => Election::Preferred,
        1 => Election::Unclean,
        other => {
            let message = format!("Unknown election type {other}");
            return refuse(&req, ResponseError::InvalidRequest, message);
        }
    };
    let listed = req.topic_partitions.is_some();
    let partitions: Vec<(String, i32)> = match &req.topic_partitions {
        Some(topics) => topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect(),
        None => elections::all_partitions(&image),
    };
    let results = elections::elect_leaders(&broker.meta, &partitions, election).await;
    if results.iter().any(|r| r.is_ok()) {
        broker.wait_hosted().await;
    }
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), result) in partitions.into_iter().zip(results) {
        if !listed && result == Err(ElectionError::ElectionNotNeeded) {
            // Still list the topic, as Kafka does for every topic it looked at.
            if topics.last().is_none_or(|t| t.topic.0.as_str() != topic) {
                topics.push(
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(StrBytes::from_string(topic))),
                );
            }
            continue;
        }
        let mut r = PartitionResult::default().with_partition_id(partition);
        match &result {
            Ok(()) => {
                tracing::info!(topic = %topic, partition, ?election, "leader elected on request");
            }
            Err(e) => {
                r.error_code = code(error_code(e));
                r.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == topic => t.partition_result.push(r),
            _ => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(vec![r]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}
