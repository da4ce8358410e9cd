//! The share coordinator's inter-broker APIs (KIP-932): ReadShareGroupState,
//! WriteShareGroupState, InitializeShareGroupState, DeleteShareGroupState and
//! ReadShareGroupStateSummary, which share-partition leaders on other brokers send (see
//! `share::persister`). Each needs CLUSTER_ACTION on the cluster, as in Kafka; a key whose
//! state partition this broker does not lead gets NOT_COORDINATOR, and the sender looks the
//! coordinator up again.

use kafka_protocol::messages::delete_share_group_state_response as delete;
use kafka_protocol::messages::initialize_share_group_state_response as init;
use kafka_protocol::messages::read_share_group_state_response as read;
use kafka_protocol::messages::read_share_group_state_summary_response as summary;
use kafka_protocol::messages::write_share_group_state_response as write;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::share::partition::StateBatch;
use crate::share::state_store::Snapshot;
use crate::share::StateKey;

fn message(e: ResponseError) -> Option<StrBytes> {
    Some(StrBytes::from_string(e.to_string()))
}

/// Why a request for `key` cannot be served at all: not authorized, or a topic or partition
/// that does not exist (as Kafka's shard checks against its metadata image).
fn refused(broker: &Broker, authorized: bool, key: &StateKey) -> Option<ResponseError> {
    if !authorized {
        return Some(ResponseError::ClusterAuthorizationFailed);
    }
    if key.partition < 0 || key.group.is_empty() {
        return Some(ResponseError::InvalidRequest);
    }
    let image = broker.image();
    let exists = image
        .topic_by_id(&key.topic_id)
        .is_some_and(|t| t.partitions.iter().any(|p| p.partition == key.partition));
    (!exists).then_some(ResponseError::UnknownTopicOrPartition)
}

fn key(group: &StrBytes, topic_id: Uuid, partition: i32) -> StateKey {
    StateKey {
        group: group.to_string(),
        topic_id,
        partition,
    }
}

pub async fn read_state(
    broker: &Broker,
    session: &Session,
    req: ReadShareGroupStateRequest,
) -> ReadShareGroupStateResponse {
    let authorized = session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let k = key(&req.group_id, t.topic_id, p.partition);
            let out = read::PartitionResult::default()
                .with_partition(p.partition)
                .with_start_offset(-1);
            let result = match refused(broker, authorized, &k) {
                Some(e) => Err(e),
                None => broker.shares.store.read(&k, p.leader_epoch).await,
            };
            partitions.push(match result {
                Ok(None) => out,
                Ok(Some(s)) => out
                    .with_state_epoch(s.state_epoch)
                    .with_start_offset(s.start_offset)
                    .with_state_batches(
                        s.batches
                            .iter()
                            .map(|b| {
                                read::StateBatch::default()
                                    .with_first_offset(b.first_offset)
                                    .with_last_offset(b.last_offset)
                                    .with_delivery_state(b.delivery_state)
                                    .with_delivery_count(b.delivery_count)
                            })
                            .collect(),
                    ),
                Err(e) => out.with_error_code(code(e)).with_error_message(message(e)),
            });
        }
        results.push(
            read::ReadStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    ReadShareGroupStateResponse::default().with_results(results)
}

pub async fn read_state_summary(
    broker: &Broker,
    session: &Session,
    req: ReadShareGroupStateSummaryRequest,
) -> ReadShareGroupStateSummaryResponse {
    let authorized = session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let k = key(&req.group_id, t.topic_id, p.partition);
            let out = summary::PartitionResult::default()
                .with_partition(p.partition)
                .with_start_offset(-1)
                .with_leader_epoch(-1);
            let result = match refused(broker, authorized, &k) {
                Some(e) => Err(e),
                None => broker.shares.store.read(&k, -1).await,
            };
            partitions.push(match result {
                Ok(None) => out,
                Ok(Some(s)) => out
                    .with_state_epoch(s.state_epoch)
                    .with_leader_epoch(s.leader_epoch)
                    .with_start_offset(s.start_offset),
                Err(e) => out.with_error_code(code(e)).with_error_message(message(e)),
            });
        }
        results.push(
            summary::ReadStateSummaryResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    ReadShareGroupStateSummaryResponse::default().with_results(results)
}

pub async fn write_state(
    broker: &Broker,
    session: &Session,
    req: WriteShareGroupStateRequest,
) -> WriteShareGroupStateResponse {
    let authorized = session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let k = key(&req.group_id, t.topic_id, p.partition);
            let result = match refused(broker, authorized, &k) {
                Some(e) => Err(e),
                None if p.start_offset < 0 => Err(ResponseError::InvalidRequest),
                None => {
                    let snapshot = Snapshot {
                        state_epoch: p.state_epoch,
                        leader_epoch: p.leader_epoch,
                        start_offset: p.start_offset,
                        batches: p
                            .state_batches
                            .iter()
                            .map(|b| StateBatch {
                                first_offset: b.first_offset,
                                last_offset: b.last_offset,
                                delivery_state: b.delivery_state,
                                delivery_count: b.delivery_count,
                            })
                            .collect(),
                    };
                    broker.shares.store.write(&k, &snapshot).await
                }
            };
            let out = write::PartitionResult::default().with_partition(p.partition);
            partitions.push(match result {
                Ok(()) => out,
                Err(e) => out.with_error_code(code(e)).with_error_message(message(e)),
            });
        }
        results.push(
            write::WriteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    WriteShareGroupStateResponse::default().with_results(results)
}

pub async fn initialize_state(
    broker: &Broker,
    session: &Session,
    req: InitializeShareGroupStateRequest,
) -> InitializeShareGroupStateResponse {
    let authorized = session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let k = key(&req.group_id, t.topic_id, p.partition);
            let result = match refused(broker, authorized, &k) {
                Some(e) => Err(e),
                None if p.start_offset < 0 => Err(ResponseError::InvalidRequest),
                None => {
                    broker
                        .shares
                        .store
                        .initialize(&k, p.state_epoch, p.start_offset)
                        .await
                }
            };
            let out = init::PartitionResult::default().with_partition(p.partition);
            partitions.push(match result {
                Ok(()) => out,
                Err(e) => out.with_error_code(code(e)).with_error_message(message(e)),
            });
        }
        results.push(
            init::InitializeStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    InitializeShareGroupStateResponse::default().with_results(results)
}

pub async fn delete_state(
    broker: &Broker,
    session: &Session,
    req: DeleteShareGroupStateRequest,
) -> DeleteShareGroupStateResponse {
    let authorized = session.allowed_on_cluster(&broker.image(), AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let k = key(&req.group_id, t.topic_id, p.partition);
            // A deleted topic's state may still be deleted.
            let result = match refused(broker, authorized, &k) {
                Some(ResponseError::UnknownTopicOrPartition) | None => {
                    broker.shares.store.delete(&k).await
                }
                Some(e) => Err(e),
            };
            let out = delete::PartitionResult::default().with_partition(p.partition);
            partitions.push(match result {
                Ok(()) => out,
                Err(e) => out.with_error_code(code(e)).with_error_message(message(e)),
            });
        }
        results.push(
            delete::DeleteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    DeleteShareGroupStateResponse::default().with_results(results)
}
