//! Transactional produce: a request holding transactional batches needs WRITE on its
//! transactional id (else every partition gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as
//! Kafka answers), and a producer's first transactional write to a partition is verified
//! with its coordinator first (KIP-890 part 1, `transaction.partition.verification.enable`).
//! What this decides per partition is how its append goes: with the verification guard, or
//! not at all.

use std::collections::HashMap;

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::ResponseError;

use super::session::Session;
use crate::broker::Broker;
use crate::log::batch;
use crate::log::producer_state::AppendOrigin;
use crate::meta::acl::{AclOperation, ResourceType};

/// How each partition of a produce request is appended.
pub enum TxnProduce {
    /// No transactional batch: every append is an ordinary client append.
    Plain,
    /// The whole request is refused with this error.
    Refused(ResponseError),
    /// Per partition: the origin to append with, or the error verification gave.
    Verified(HashMap<(String, i32), Result<AppendOrigin, ResponseError>>),
}

impl TxnProduce {
    /// How `topic`/`partition` is appended (or why it is not).
    pub fn origin(&self, topic: &str, partition: i32) -> Result<AppendOrigin, ResponseError> {
        match self {
            TxnProduce::Plain => Ok(AppendOrigin::Client { verification: None }),
            TxnProduce::Refused(e) => Err(*e),
            TxnProduce::Verified(map) => map
                .get(&(topic.to_string(), partition))
                .copied()
                .unwrap_or(Ok(AppendOrigin::Client { verification: None })),
        }
    }
}

/// Checks the transactional batches of a produce request before anything is appended.
pub async fn prepare(broker: &Broker, session: &Session, req: &ProduceRequest) -> TxnProduce {
    // (topic, partition, producer id, epoch) of every transactional batch.
    let mut transactional = Vec::new();
    for topic in &req.topic_data {
        for pd in &topic.partition_data {
            if let Some((pid, epoch, true)) = pd.records.as_deref().and_then(batch::peek_producer) {
                transactional.push((topic.name.0.to_string(), pd.index, pid, epoch));
            }
        }
    }
    if transactional.is_empty() {
        return TxnProduce::Plain;
    }
    let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) else {
        return TxnProduce::Refused(ResponseError::TransactionalIdAuthorizationFailed);
    };
    if !session.allowed(
        &broker.image(),
        AclOperation::Write,
        ResourceType::TransactionalId,
        &id,
    ) {
        return TxnProduce::Refused(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let mut origins = HashMap::new();
    let mut to_verify = Vec::new();
    let (mut producer_id, mut producer_epoch) = (-1, -1);
    for (topic, index, pid, epoch) in transactional {
        let Some(partition) = broker.replicas.partition(&topic, index) else {
            continue; // the append reports the partition's error
        };
        (producer_id, producer_epoch) = (pid, epoch);
        let verification = partition.start_verification(pid);
        if verification.is_some() && broker.txns.config.verification_enable {
            to_verify.push((topic.clone(), index));
        }
        origins.insert((topic, index), Ok(AppendOrigin::Client { verification }));
    }
    if !to_verify.is_empty() {
        let failed = broker
            .txns
            .verify_for_produce(&id, producer_id, producer_epoch, &to_verify)
            .await;
        for (tp, e) in failed {
            origins.insert(tp, Err(e));
        }
    }
    TxnProduce::Verified(origins)
}
