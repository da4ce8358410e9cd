//! KIP-890 part 1, the partition leader's side: before a producer's first transactional write
//! to a partition, the leader asks the producer's transaction coordinator (here, or with an
//! AddPartitionsToTxn v4 `verify_only` request on another broker) whether the partition is in
//! the ongoing transaction. The answers become produce errors as Kafka's
//! `AddPartitionsToTxnManager` and `ReplicaManager` map them.

use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::TopicPartition;
use super::TransactionCoordinator;

const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// The AddPartitionsToTxn version for verify-only requests between brokers.
const VERIFY_VERSION: i16 = 4;

/// The produce error for a failed verification: "not in the transaction" as INVALID_TXN_STATE
/// (produce below v12), coordinator trouble as the retriable NOT_ENOUGH_REPLICAS, a fenced
/// producer as INVALID_PRODUCER_EPOCH.
fn produce_error(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::TransactionAbortable | ResponseError::ClusterAuthorizationFailed => {
            ResponseError::InvalidTxnState
        }
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::ConcurrentTransactions
        | ResponseError::NetworkException
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator => ResponseError::NotEnoughReplicas,
        other => other,
    }
}

impl TransactionCoordinator {
    /// Verifies that `partitions` are in the ongoing transaction of `transactional_id`'s
    /// producer. Returns the produce error of each partition that is not (or could not be
    /// verified).
    pub async fn verify_for_produce(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, ResponseError)> {
        let all = |e: ResponseError| {
            partitions
                .iter()
                .map(|tp| (tp.clone(), produce_error(e)))
                .collect()
        };
        let coordinator = self.coordinator_of(transactional_id);
        let outcome = if coordinator == self.replicas.node_id() {
            self.verify_partitions(transactional_id, producer_id, producer_epoch, partitions)
        } else if coordinator < 0 {
            Err(ResponseError::CoordinatorNotAvailable)
        } else {
            self.verify_remote(
                coordinator,
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            )
            .await
        };
        match outcome {
            Err(e) => all(e),
            Ok(results) => results
                .into_iter()
                .filter_map(|(tp, e)| e.map(|e| (tp, produce_error(e))))
                .collect(),
        }
    }

    async fn verify_remote(
        &self,
        coordinator: i32,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<ResponseError>)>, ResponseError> {
        let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
        for (t, p) in partitions {
            match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                Some(x) => x.partitions.push(*p),
                None => topics.push(
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(vec![*p]),
                ),
            }
        }
        let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    transactional_id.to_string(),
                )))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_verify_only(true)
                .with_topics(topics),
        ]);
        let image = self.meta.image();
        let response = self
            .replicas
            .brokers
            .call(
                &image,
                coordinator,
                VERIFY_VERSION,
                &request,
                VERIFY_TIMEOUT,
            )
            .await
            .map_err(|e| {
                tracing::debug!(coordinator, error = %e, "transaction verification request failed");
                ResponseError::NetworkException
            })?;
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            return Err(e);
        }
        let mut out = Vec::with_capacity(partitions.len());
        for result in response.results_by_transaction {
            for topic in result.topic_results {
                for p in topic.results_by_partition {
                    out.push((
                        (topic.name.0.to_string(), p.partition_index),
                        ResponseError::try_from_code(p.partition_error_code),
                    ));
                }
            }
        }
        for tp in partitions {
            if !out.iter().any(|(x, _)| x == tp) {
                out.push((tp.clone(), Some(ResponseError::InvalidTxnState)));
            }
        }
        Ok(out)
    }
}
