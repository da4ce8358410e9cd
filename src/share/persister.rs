//! The share-partition leader's way to the share coordinator (Kafka's `DefaultStatePersister`
//! and `PersisterStateManager`): every read and write of a share-partition's state goes to
//! the share coordinator of its key, the leader of the `__share_group_state` partition
//! `hash("group:topicId:partition")` picks. When that is this broker the store is called
//! directly; otherwise the request goes over the inter-broker listener as
//! ReadShareGroupState, WriteShareGroupState, InitializeShareGroupState,
//! DeleteShareGroupState or ReadShareGroupStateSummary (v0), through the connections the
//! coordinators already share (`replica::broker_clients`).
//!
//! NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a timed-out
//! replication and a failed connection are retried, looking the coordinator up again in the
//! newest metadata each time, with a backoff (50 ms doubling to 1 s), until
//! `share.coordinator.write.timeout.ms` twice over has passed. Every write carries a whole
//! snapshot, so a retried write that had in fact landed changes nothing.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_share_group_state_request as delete_req;
use kafka_protocol::messages::initialize_share_group_state_request as init_req;
use kafka_protocol::messages::read_share_group_state_request as read_req;
use kafka_protocol::messages::read_share_group_state_summary_request as summary_req;
use kafka_protocol::messages::write_share_group_state_request as write_req;
use kafka_protocol::messages::{
    DeleteShareGroupStateRequest, InitializeShareGroupStateRequest, ReadShareGroupStateRequest,
    ReadShareGroupStateSummaryRequest, WriteShareGroupStateRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::partition::StateBatch;
use super::state_store::{Snapshot, StateKey, StateStore, SHARE_STATE_TOPIC};
use crate::meta::MetadataQuorum;
use crate::replica::ReplicaManager;

/// The version of the share state RPCs (the only one Kafka 4.1 defines).
const STATE_RPC_VERSION: i16 = 0;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One request to the share coordinator.
#[derive(Debug, Clone)]
pub enum StateOp {
    /// ReadShareGroupState by the share-partition leader of this leader epoch.
    Read {
        leader_epoch: i32,
    },
    /// ReadShareGroupStateSummary (start offset and epochs, no batches).
    Summary,
    Write(Snapshot),
    Initialize {
        state_epoch: i32,
        start_offset: i64,
    },
    Delete,
}

pub struct Persister {
    store: Arc<StateStore>,
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    deadline: Duration,
}

/// Errors after which the coordinator is looked up again and the request retried.
fn retriable(e: ResponseError) -> bool {
    matches!(
        e,
        ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::RequestTimedOut
            | ResponseError::NetworkException
    )
}

fn error_of(code: i16) -> Result<(), ResponseError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

impl Persister {
    pub fn new(
        store: Arc<StateStore>,
        replicas: Arc<ReplicaManager>,
        meta: MetadataQuorum,
        write_timeout: Duration,
    ) -> Self {
        Self {
            store,
            replicas,
            meta,
            deadline: write_timeout * 2,
        }
    }

    /// ReadShareGroupState: the state of `key` (None: never initialized), as the leader of
    /// the user partition in `leader_epoch`.
    pub async fn read(
        &self,
        key: &StateKey,
        leader_epoch: i32,
    ) -> Result<Option<Snapshot>, ResponseError> {
        self.call(key, StateOp::Read { leader_epoch }).await
    }

    /// ReadShareGroupStateSummary: the state of `key` without its batches.
    pub async fn summary(&self, key: &StateKey) -> Result<Option<Snapshot>, ResponseError> {
        self.call(key, StateOp::Summary).await
    }

    pub async fn write(&self, key: &StateKey, snapshot: &Snapshot) -> Result<(), ResponseError> {
        self.call(key, StateOp::Write(snapshot.clone()))
            .await
            .map(|_| ())
    }

    pub async fn initialize(
        &self,
        key: &StateKey,
        state_epoch: i32,
        start_offset: i64,
    ) -> Result<(), ResponseError> {
        self.call(
            key,
            StateOp::Initialize {
                state_epoch,
                start_offset,
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, key: &StateKey) -> Result<(), ResponseError> {
        self.call(key, StateOp::Delete).await.map(|_| ())
    }

    /// Sends `op` to the share coordinator of `key`, retrying as the module says.
    async fn call(&self, key: &StateKey, op: StateOp) -> Result<Option<Snapshot>, ResponseError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = match self.coordinator(key).await {
                Ok(node) if node == self.replicas.node_id() => self.local(key, &op).await,
                Ok(node) => self.remote(node, key, &op).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if retriable(e) && tokio::time::Instant::now() + backoff < deadline => {
                    tracing::debug!(group = %key.group, partition = key.partition, error = ?e, "share state request retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    /// The node id of the share coordinator of `key` in the newest metadata.
    async fn coordinator(&self, key: &StateKey) -> Result<i32, ResponseError> {
        self.store.ensure_topic().await.map_err(|(e, _)| e)?;
        let p = self.store.partition_for(key);
        self.meta
            .image()
            .topic(SHARE_STATE_TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map(|x| x.leader)
            .filter(|l| *l >= 0)
            .ok_or(ResponseError::CoordinatorNotAvailable)
    }

    async fn local(&self, key: &StateKey, op: &StateOp) -> Result<Option<Snapshot>, ResponseError> {
        match op {
            StateOp::Read { leader_epoch } => self.store.read(key, *leader_epoch).await,
            StateOp::Summary => self.store.read(key, -1).await,
            StateOp::Write(s) => self.store.write(key, s).await.map(|()| None),
            StateOp::Initialize {
                state_epoch,
                start_offset,
            } => self
                .store
                .initialize(key, *state_epoch, *start_offset)
                .await
                .map(|()| None),
            StateOp::Delete => self.store.delete(key).await.map(|()| None),
        }
    }

    async fn remote(
        &self,
        node: i32,
        key: &StateKey,
        op: &StateOp,
    ) -> Result<Option<Snapshot>, ResponseError> {
        let image = self.meta.image();
        let group = StrBytes::from_string(key.group.clone());
        let timeout = self.store.write_timeout() + Duration::from_secs(1);
        let net = |e: std::io::Error| {
            tracing::debug!(coordinator = node, error = %e, "share state request failed");
            ResponseError::NetworkException
        };
        let clients = &self.replicas.brokers;
        match op {
            StateOp::Read { leader_epoch } => {
                let req = ReadShareGroupStateRequest::default()
                    .with_group_id(group)
                    .with_topics(vec![read_req::ReadStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![read_req::PartitionData::default()
                            .with_partition(key.partition)
                            .with_leader_epoch(*leader_epoch)])]);
                let resp = clients
                    .call(&image, node, STATE_RPC_VERSION, &req, timeout)
                    .await
                    .map_err(net)?;
                let p = resp
                    .results
                    .into_iter()
                    .flat_map(|r| r.partitions)
                    .find(|p| p.partition == key.partition)
                    .ok_or(ResponseError::UnknownServerError)?;
                error_of(p.error_code)?;
                // Kafka's answer for a share-partition without state: start offset -1.
                if p.start_offset < 0 {
                    return Ok(None);
                }
                Ok(Some(Snapshot {
                    state_epoch: p.state_epoch,
                    leader_epoch: *leader_epoch,
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
                }))
            }
            StateOp::Summary => {
                let req = ReadShareGroupStateSummaryRequest::default()
                    .with_group_id(group)
                    .with_topics(vec![summary_req::ReadStateSummaryData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![summary_req::PartitionData::default()
                            .with_partition(key.partition)
                            .with_leader_epoch(-1)])]);
                let resp = clients
                    .call(&image, node, STATE_RPC_VERSION, &req, timeout)
                    .await
                    .map_err(net)?;
                let p = resp
                    .results
                    .into_iter()
                    .flat_map(|r| r.partitions)
                    .find(|p| p.partition == key.partition)
                    .ok_or(ResponseError::UnknownServerError)?;
                error_of(p.error_code)?;
                if p.start_offset < 0 {
                    return Ok(None);
                }
                Ok(Some(Snapshot {
                    state_epoch: p.state_epoch,
                    leader_epoch: p.leader_epoch,
                    start_offset: p.start_offset,
                    batches: Vec::new(),
                }))
            }
            StateOp::Write(s) => {
                let req = WriteShareGroupStateRequest::default()
                    .with_group_id(group)
                    .with_topics(vec![write_req::WriteStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![write_req::PartitionData::default()
                            .with_partition(key.partition)
                            .with_state_epoch(s.state_epoch)
                            .with_leader_epoch(s.leader_epoch)
                            .with_start_offset(s.start_offset)
                            .with_state_batches(
                                s.batches
                                    .iter()
                                    .map(|b| {
                                        write_req::StateBatch::default()
                                            .with_first_offset(b.first_offset)
                                            .with_last_offset(b.last_offset)
                                            .with_delivery_state(b.delivery_state)
                                            .with_delivery_count(b.delivery_count)
                                    })
                                    .collect(),
                            )])]);
                let resp = clients
                    .call(&image, node, STATE_RPC_VERSION, &req, timeout)
                    .await
                    .map_err(net)?;
                let p = resp
                    .results
                    .into_iter()
                    .flat_map(|r| r.partitions)
                    .find(|p| p.partition == key.partition)
                    .ok_or(ResponseError::UnknownServerError)?;
                error_of(p.error_code).map(|()| None)
            }
            StateOp::Initialize {
                state_epoch,
                start_offset,
            } => {
                let req = InitializeShareGroupStateRequest::default()
                    .with_group_id(group)
                    .with_topics(vec![init_req::InitializeStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![init_req::PartitionData::default()
                            .with_partition(key.partition)
                            .with_state_epoch(*state_epoch)
                            .with_start_offset(*start_offset)])]);
                let resp = clients
                    .call(&image, node, STATE_RPC_VERSION, &req, timeout)
                    .await
                    .map_err(net)?;
                let p = resp
                    .results
                    .into_iter()
                    .flat_map(|r| r.partitions)
                    .find(|p| p.partition == key.partition)
                    .ok_or(ResponseError::UnknownServerError)?;
                error_of(p.error_code).map(|()| None)
            }
            StateOp::Delete => {
                let req = DeleteShareGroupStateRequest::default()
                    .with_group_id(group)
                    .with_topics(vec![delete_req::DeleteStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![
                            delete_req::PartitionData::default().with_partition(key.partition)
                        ])]);
                let resp = clients
                    .call(&image, node, STATE_RPC_VERSION, &req, timeout)
                    .await
                    .map_err(net)?;
                let p = resp
                    .results
                    .into_iter()
                    .flat_map(|r| r.partitions)
                    .find(|p| p.partition == key.partition)
                    .ok_or(ResponseError::UnknownServerError)?;
                error_of(p.error_code).map(|()| None)
            }
        }
    }
}
