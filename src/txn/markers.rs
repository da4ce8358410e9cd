//! Transaction markers: once EndTxn's PrepareCommit or PrepareAbort is in the log, the
//! coordinator writes a COMMIT or ABORT marker to every partition of the transaction, on its
//! leader: directly when that is this broker, with WriteTxnMarkers otherwise. Failed
//! partitions are retried (leaders move) until every marker is written, the coordinator
//! moves, or a newer epoch takes over; then the transaction is complete. The same local
//! write serves WriteTxnMarkers requests that other coordinators (and `kafka-transactions
//! abort`) send here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::{TopicPartition, TxnMetadata, TxnState};
use super::{Owner, TransactionCoordinator};
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::log::producer_state::ProducerError;
use crate::log::txn::{EndTxnMarker, MarkerType};
use crate::log::LogError;
use crate::meta::image::MetadataImage;
use crate::replica::{now_ms, PartitionError, ReplicaManager, WriteFailed, Written};

/// What a marker says, for one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerWrite {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
}

/// How long one round of marker writes may wait for replication.
const MARKER_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);

fn marker_error(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::NotLeader => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        PartitionError::Log(LogError::Producer(ProducerError::InvalidProducerEpoch(_))) => {
            ResponseError::InvalidProducerEpoch
        }
        PartitionError::Log(LogError::Producer(ProducerError::CoordinatorFenced(_))) => {
            ResponseError::TransactionCoordinatorFenced
        }
        PartitionError::Log(LogError::Io(_)) => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

/// Writes `marker` to these partitions, led here, and waits until each is replicated (acks=-1,
/// as Kafka appends markers). The producer's pending offsets in `__consumer_offsets`
/// partitions are then committed or dropped. Returns each partition's error, if any.
pub async fn write_local(
    replicas: &ReplicaManager,
    groups: &GroupCoordinator,
    image: &MetadataImage,
    marker: MarkerWrite,
    partitions: &[TopicPartition],
) -> Vec<(TopicPartition, Option<ResponseError>)> {
    let end = EndTxnMarker {
        kind: if marker.commit {
            MarkerType::Commit
        } else {
            MarkerType::Abort
        },
        coordinator_epoch: marker.coordinator_epoch,
    };
    let mut results = Vec::with_capacity(partitions.len());
    let mut written = Vec::new();
    for tp in partitions {
        let Some(partition) = replicas.partition(&tp.0, tp.1) else {
            let exists = image
                .topic(&tp.0)
                .is_some_and(|t| t.partitions.iter().any(|p| p.partition == tp.1));
            let error = if exists {
                ResponseError::NotLeaderOrFollower
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            results.push((tp.clone(), Some(error)));
            continue;
        };
        match partition.append_marker(marker.producer_id, marker.producer_epoch, end, now_ms()) {
            Ok(info) => written.push((tp.clone(), Written::new(partition, &info))),
            Err(e) => results.push((tp.clone(), Some(marker_error(&e)))),
        }
    }
    let deadline = tokio::time::Instant::now() + MARKER_TIMEOUT;
    let mut offsets_partitions = Vec::new();
    for (tp, w) in written {
        let error = match w.replicated(deadline).await {
            Ok(()) => {
                if tp.0 == OFFSETS_TOPIC {
                    offsets_partitions.push(tp.1);
                }
                None
            }
            Err(WriteFailed::NotLeader) => Some(ResponseError::NotLeaderOrFollower),
            Err(WriteFailed::TimedOut) => Some(ResponseError::RequestTimedOut),
        };
        results.push((tp, error));
    }
    if !offsets_partitions.is_empty() {
        groups.complete_transaction(marker.producer_id, &offsets_partitions, marker.commit);
    }
    results
}

/// The WriteTxnMarkers request for one producer's marker on some partitions.
fn marker_request(marker: MarkerWrite, partitions: &[TopicPartition]) -> WriteTxnMarkersRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partition_indexes(ps)
        })
        .collect();
    WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.producer_epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(topics)])
}

/// What to do with a partition after a marker write.
enum Next {
    Done,
    Retry,
    /// A newer producer epoch or coordinator took over: stop sending.
    Abandon,
}

fn next_step(image: &MetadataImage, tp: &TopicPartition, error: Option<ResponseError>) -> Next {
    match error {
        None => Next::Done,
        Some(ResponseError::InvalidProducerEpoch | ResponseError::TransactionCoordinatorFenced) => {
            Next::Abandon
        }
        Some(_) => {
            let exists = image
                .topic(&tp.0)
                .is_some_and(|t| t.partitions.iter().any(|p| p.partition == tp.1));
            if exists {
                Next::Retry
            } else {
                // Deleted: nothing left to mark.
                Next::Done
            }
        }
    }
}

impl TransactionCoordinator {
    /// Writes the markers of a transaction that `meta` says is PrepareCommit or PrepareAbort,
    /// then completes it. Runs in the background; the client already has its answer.
    pub(super) fn send_markers(
        self: &Arc<Self>,
        transactional_id: String,
        meta: TxnMetadata,
        owner: Owner,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let marker = MarkerWrite {
                producer_id: meta.producer_id,
                producer_epoch: meta.producer_epoch,
                coordinator_epoch: owner.coordinator_epoch,
                commit: meta.state == TxnState::PrepareCommit,
            };
            let mut pending: Vec<TopicPartition> = meta.partitions.iter().cloned().collect();
            let mut backoff = RETRY_BACKOFF;
            while !pending.is_empty() {
                if !me.still_owner(owner) || me.shutdown.is_cancelled() {
                    return;
                }
                let (retry, abandoned) = me.write_markers_once(marker, &pending).await;
                if abandoned {
                    tracing::info!(
                        transactional_id,
                        "a newer producer epoch or coordinator took over; not sending its markers"
                    );
                    return;
                }
                if retry.is_empty() {
                    break;
                }
                tracing::debug!(
                    transactional_id,
                    partitions = retry.len(),
                    "retrying transaction markers"
                );
                pending = retry;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = me.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
            me.complete(&transactional_id, &meta, owner).await;
        });
    }

    /// One round: markers to every pending partition, by leader. Returns the partitions to
    /// retry, and whether sending was abandoned.
    async fn write_markers_once(
        &self,
        marker: MarkerWrite,
        pending: &[TopicPartition],
    ) -> (Vec<TopicPartition>, bool) {
        let image = self.meta.image();
        let me = self.replicas.node_id();
        let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        let mut retry = Vec::new();
        for tp in pending {
            let leader = image
                .topic(&tp.0)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == tp.1))
                .map(|p| p.leader);
            match leader {
                None => {} // deleted
                Some(l) if l < 0 => retry.push(tp.clone()),
                Some(l) => by_leader.entry(l).or_default().push(tp.clone()),
            }
        }
        let mut abandoned = false;
        for (leader, partitions) in by_leader {
            let results = if leader == me {
                write_local(&self.replicas, &self.groups, &image, marker, &partitions).await
            } else {
                self.write_remote(&image, leader, marker, &partitions).await
            };
            for (tp, error) in results {
                match next_step(&image, &tp, error) {
                    Next::Done => {}
                    Next::Retry => retry.push(tp),
                    Next::Abandon => abandoned = true,
                }
            }
        }
        (retry, abandoned)
    }

    /// WriteTxnMarkers to another broker; a failed exchange fails every partition.
    async fn write_remote(
        &self,
        image: &MetadataImage,
        leader: i32,
        marker: MarkerWrite,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let request = marker_request(marker, partitions);
        let response = self
            .replicas
            .brokers
            .call(image, leader, 1, &request, MARKER_TIMEOUT)
            .await;
        let failed = |e: ResponseError| partitions.iter().map(|tp| (tp.clone(), Some(e))).collect();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "WriteTxnMarkers to another broker failed");
                return failed(ResponseError::NetworkException);
            }
        };
        let mut out = Vec::with_capacity(partitions.len());
        for result in response.markers {
            for topic in result.topics {
                for p in topic.partitions {
                    let error = ResponseError::try_from_code(p.error_code);
                    out.push(((topic.name.0.to_string(), p.partition_index), error));
                }
            }
        }
        for tp in partitions {
            if !out.iter().any(|(x, _)| x == tp) {
                out.push((tp.clone(), Some(ResponseError::UnknownServerError)));
            }
        }
        out
    }

    /// Every marker is written: the transaction is CompleteCommit or CompleteAbort.
    async fn complete(&self, transactional_id: &str, sent: &TxnMetadata, owner: Owner) {
        let Some(handle) = self.entry(transactional_id) else {
            return;
        };
        let next = {
            let mut entry = handle.lock();
            let m = &entry.meta;
            let same = m.producer_id == sent.producer_id
                && m.producer_epoch == sent.producer_epoch
                && m.state == sent.state;
            if !same || entry.busy {
                return;
            }
            let next = m.complete(now_ms());
            entry.busy = true;
            next
        };
        if let Err(e) = self
            .transition(transactional_id, &handle, owner, next)
            .await
        {
            // The next coordinator loads the Prepare state and sends the markers again.
            tracing::info!(transactional_id, error = ?e, "completing a transaction failed");
        }
    }
}
