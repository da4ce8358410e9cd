//! What `kafka-transactions` looks at (KIP-664): DescribeTransactions and ListTransactions on
//! the coordinators, DescribeProducers on partition leaders. Each answers only what the
//! session may describe, as Kafka's `KafkaApis` does.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::txn::metadata::TxnState;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn describe_transactions(
    broker: &Broker,
    session: &Session,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let image = broker.image();
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let base = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(s(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !session.allowed(
                &image,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                id,
            ) {
                return base
                    .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed));
            }
            match broker.txns.describe(id) {
                Err(e) => base.with_error_code(code(e)),
                Ok(t) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (topic, p) in t.partitions {
                        // Partitions of topics the session may not describe are left out.
                        if !session.allowed(
                            &image,
                            AclOperation::Describe,
                            ResourceType::Topic,
                            &topic,
                        ) {
                            continue;
                        }
                        match topics.iter_mut().find(|x| x.topic.0.as_str() == topic) {
                            Some(x) => x.partitions.push(p),
                            None => topics.push(
                                TopicData::default()
                                    .with_topic(TopicName(s(topic)))
                                    .with_partitions(vec![p]),
                            ),
                        }
                    }
                    base.with_transaction_state(s(t.state.name()))
                        .with_transaction_timeout_ms(t.timeout_ms)
                        .with_transaction_start_time_ms(t.start_ms)
                        .with_producer_id(ProducerId(t.producer_id))
                        .with_producer_epoch(t.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn list_transactions(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &req.state_filters {
        match TxnState::by_name(name) {
            Some(state) => states.push(state),
            None => unknown.push(name.clone()),
        }
    }
    let pattern = match req
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        Some(p) if version >= 2 => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(r) => Some(r),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(code(ResponseError::InvalidRegularExpression))
            }
        },
        _ => None,
    };
    let producer_ids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    let image = broker.image();
    let listed = broker
        .txns
        .list(&states, &producer_ids, duration)
        .into_iter()
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|r| r.is_match(&t.transactional_id))
        })
        .filter(|t| {
            session.allowed(
                &image,
                AclOperation::Describe,
                ResourceType::TransactionalId,
                &t.transactional_id,
            )
        })
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(s(t.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

pub fn describe_producers(
    broker: &Broker,
    session: &Session,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let image = broker.image();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = t.name.0.to_string();
            let readable = session.allowed(&image, AclOperation::Read, ResourceType::Topic, &topic);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let r = PartitionResponse::default().with_partition_index(p);
                    if !readable {
                        return r.with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    match broker.replicas.partition(&topic, p) {
                        Some(partition) if partition.is_leader() => r.with_active_producers(
                            partition
                                .log
                                .producers()
                                .into_iter()
                                .map(|ps| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(ps.producer_id))
                                        .with_producer_epoch(i32::from(ps.producer_epoch))
                                        .with_last_sequence(ps.last_sequence)
                                        .with_last_timestamp(ps.last_timestamp)
                                        .with_coordinator_epoch(ps.coordinator_epoch)
                                        .with_current_txn_start_offset(ps.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                        _ => {
                            let exists = image
                                .topic(&topic)
                                .is_some_and(|x| x.partitions.iter().any(|q| q.partition == p));
                            let e = if exists {
                                ResponseError::NotLeaderOrFollower
                            } else {
                                ResponseError::UnknownTopicOrPartition
                            };
                            r.with_error_code(code(e))
                        }
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
