//! CreateTopics, CreatePartitions and DeleteTopics: validated here and by the controller, then proposed to the
//! metadata log; the response is sent once this broker has applied the change.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::controller::{self, CreateTopicError, TopicSpec};
use crate::meta::image::ApplyOutcome;

fn create_error_code(e: &CreateTopicError) -> ResponseError {
    match e {
        CreateTopicError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        CreateTopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        CreateTopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        CreateTopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        CreateTopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        CreateTopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CreateTopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
        CreateTopicError::NotController(_) => ResponseError::NotController,
        CreateTopicError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        CreateTopicError::NotAuthorized(_) => ResponseError::TopicAuthorizationFailed,
    }
}

/// Needs CREATE on the cluster, or on each topic.
pub async fn create(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let image = broker.image();
    let on_cluster = session.allowed_on_cluster(&image, AclOperation::Create);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    // Each topic is refused here, or becomes a spec for the controller (one proposal for all).
    let mut specs: Vec<TopicSpec> = Vec::new();
    let checked: Vec<Result<usize, CreateTopicError>> = req
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            if !on_cluster
                && !session.allowed(&image, AclOperation::Create, ResourceType::Topic, &name)
            {
                return Err(CreateTopicError::NotAuthorized(
                    ResponseError::TopicAuthorizationFailed.to_string(),
                ));
            }
            if counts.get(&name).copied().unwrap_or(0) > 1 {
                return Err(CreateTopicError::InvalidRequest(format!(
                    "Create topics request from client contains multiple entries for the topic {name}"
                )));
            }
            let spec = topic_spec(topic)?;
            specs.push(spec);
            Ok(specs.len() - 1)
        })
        .collect();
    let created = broker.create_topics(&specs, req.validate_only).await;
    let results = req
        .topics
        .iter()
        .zip(checked)
        .map(|(topic, checked)| {
            let outcome = checked.and_then(|i| created[i].clone());
            topic_result(broker, version, req.validate_only, topic, outcome)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

/// A CreateTopics entry as the controller takes it, or why it cannot be one.
fn topic_spec(topic: &CreatableTopic) -> Result<TopicSpec, CreateTopicError> {
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        match &c.value {
            Some(v) => {
                configs.insert(c.name.to_string(), v.to_string());
            }
            None => {
                return Err(CreateTopicError::InvalidConfig(format!(
                    "Null value not supported for topic configs: {}",
                    c.name
                )))
            }
        }
    }
    check_assignment_indexes(&topic.assignments)?;
    Ok(TopicSpec {
        name: topic.name.0.to_string(),
        num_partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments: (!topic.assignments.is_empty()).then(|| {
            let mut a: Vec<_> = topic.assignments.iter().collect();
            a.sort_by_key(|x| x.partition_index);
            a.iter()
                .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        }),
        configs,
    })
}

fn topic_result(
    broker: &Broker,
    version: i16,
    validate_only: bool,
    topic: &CreatableTopic,
    outcome: controller::Created,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default()
        .with_name(topic.name.clone())
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    match outcome {
        Ok(created) => {
            if !validate_only {
                tracing::info!(topic = %created.name, partitions = created.partitions.len(), "created topic");
            }
            if version >= 7 && !validate_only {
                result.topic_id = created.topic_id;
            }
            if version >= 5 {
                result.num_partitions = created.partitions.len() as i32;
                result.replication_factor = created
                    .partitions
                    .first()
                    .map(|p| p.replicas.len() as i16)
                    .unwrap_or(0);
                result.configs = Some(
                    broker
                        .dynamic_config()
                        .describe_topic(&created.configs)
                        .into_iter()
                        .map(|(k, v, source, _)| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_config_source(source)
                        })
                        .collect(),
                );
            }
        }
        Err(e) => {
            result.error_code = code(create_error_code(&e));
            if version >= 1 {
                result.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
    }
    result
}

fn check_assignment_indexes(
    assignments: &[kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment],
) -> Result<(), CreateTopicError> {
    let mut indexes: Vec<i32> = assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, p)| *p != i as i32) {
        return Err(CreateTopicError::InvalidReplicaAssignment(
            "Partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(())
}

/// Needs DELETE on each topic.
pub async fn delete(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6+ names topics by name or id; earlier versions by name.
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let image = broker.image();
        let topic = match &name {
            Some(n) => image.topic(n),
            None => image.topic_by_id(&id),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))));
        if version >= 6 {
            r.topic_id = id;
        }
        let result: Result<(), (ResponseError, String)> = match topic {
            None if name.is_some() => Err((
                ResponseError::UnknownTopicOrPartition,
                "This server does not host this topic-partition.".into(),
            )),
            None => Err((
                ResponseError::UnknownTopicId,
                "This server does not host this topic ID.".into(),
            )),
            Some(t)
                if !session.allowed(&image, AclOperation::Delete, ResourceType::Topic, &t.name) =>
            {
                Err((
                    ResponseError::TopicAuthorizationFailed,
                    ResponseError::TopicAuthorizationFailed.to_string(),
                ))
            }
            Some(_) if !broker.config.kafka.delete_topic_enable => Err((
                ResponseError::TopicDeletionDisabled,
                "Topic deletion is disabled.".into(),
            )),
            Some(t) => {
                if version >= 6 {
                    r.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
                    r.topic_id = t.topic_id;
                }
                match controller::delete_topic(&broker.meta, t.topic_id).await {
                    Ok(ApplyOutcome::Ok) => {
                        broker.wait_hosted().await;
                        tracing::info!(topic = %t.name, "deleted topic");
                        Ok(())
                    }
                    Ok(_) => Err((
                        ResponseError::UnknownTopicOrPartition,
                        "This server does not host this topic-partition.".into(),
                    )),
                    Err(e) => Err((ResponseError::NotController, e.to_string())),
                }
            }
        };
        if let Err((error, message)) = result {
            r.error_code = code(error);
            if version >= 5 {
                r.error_message = Some(StrBytes::from_string(message));
            }
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Needs ALTER on each topic.
pub async fn create_partitions(
    broker: &Broker,
    session: &Session,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let image = broker.image();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome: Result<(), (ResponseError, String)> =
            if !session.allowed(&image, AclOperation::Alter, ResourceType::Topic, &name) {
                Err((
                    ResponseError::TopicAuthorizationFailed,
                    ResponseError::TopicAuthorizationFailed.to_string(),
                ))
            } else if counts[&name] > 1 {
                Err((
                    ResponseError::InvalidRequest,
                    format!("Duplicate topic {name} in the request"),
                ))
            } else {
                let assignments = t.assignments.as_ref().map(|a| {
                    a.iter()
                        .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                });
                match controller::plan_partitions(&broker.image(), &name, t.count, assignments) {
                    Err(e) => Err((create_error_code(&e), e.to_string())),
                    Ok(_) if req.validate_only => Ok(()),
                    Ok((topic_id, partitions)) => {
                        match controller::add_partitions(&broker.meta, topic_id, partitions).await {
                            Ok(()) => {
                                broker.wait_hosted().await;
                                tracing::info!(topic = %name, count = t.count, "added partitions");
                                Ok(())
                            }
                            Err(e) => Err((create_error_code(&e), e.to_string())),
                        }
                    }
                }
            };
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((e, m)) = outcome {
            r.error_code = code(e);
            r.error_message = Some(StrBytes::from_string(m));
        }
        results.push(r);
    }
    CreatePartitionsResponse::default().with_results(results)
}
