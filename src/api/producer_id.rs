//! InitProducerId: hands idempotent producers a new producer id (epoch 0) from this broker's
//! block of ids; a transactional producer's request goes to the transaction coordinator,
//! which bumps its epoch and fences its zombies.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};

/// A transactional producer needs WRITE on its transactional id; an idempotent one
/// IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
pub async fn handle(
    broker: &Broker,
    session: &Session,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code(e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = &req.transactional_id {
        if id.is_empty() {
            return failed(ResponseError::InvalidRequest);
        }
        if !session.allowed(
            &broker.image(),
            AclOperation::Write,
            ResourceType::TransactionalId,
            id,
        ) {
            return failed(ResponseError::TransactionalIdAuthorizationFailed);
        }
        // KIP-360: a producer recovering from an error names its id and epoch.
        let expected = match (req.producer_id.0, req.producer_epoch) {
            (-1, -1) => None,
            (pid, epoch) if pid >= 0 && epoch >= 0 => Some((pid, epoch)),
            _ => return failed(ResponseError::InvalidRequest),
        };
        return match broker
            .txns
            .init_producer_id(id, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(e) => failed(e),
        };
    }
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::IdempotentWrite)
        && !session.allowed_on_any(&image, AclOperation::Write, ResourceType::Topic)
    {
        return failed(ResponseError::ClusterAuthorizationFailed);
    }
    // Without a transactional id Kafka always hands out a fresh producer id with epoch 0,
    // whatever id and epoch the request carries (KIP-360 bumps apply to transactions).
    match broker.producer_ids.next(&broker.meta).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "allocating a producer id block failed");
            failed(ResponseError::CoordinatorLoadInProgress)
        }
    }
}
