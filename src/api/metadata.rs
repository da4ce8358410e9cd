//! Metadata: the live (unfenced) brokers, controller, topics and partition leadership, from the
//! metadata image; auto-creates topics for producers when `auto.create.topics.enable` is set.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::code;
use super::session::{Session, CLUSTER_OPERATIONS, TOPIC_OPERATIONS};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::meta::controller::{self, CreateTopicError, TopicSpec};
use crate::meta::image::{MetadataImage, TopicImage};
pub use crate::meta::topic_name::is_internal_topic;
use crate::meta::topic_name::validate_topic_name;

/// Topics the session may not DESCRIBE are left out of an all-topics answer and answered with
/// TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs CREATE on the cluster or the topic.
pub async fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let (requested, unknown_ids) = requested_topics(broker, version, &req);
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    let describe = |image: &MetadataImage, name: &str| {
        session.allowed(image, AclOperation::Describe, ResourceType::Topic, name)
    };
    let errors = match &requested {
        Some(names) => missing_topics(broker, session, names, allow_auto_create).await,
        None => BTreeMap::new(),
    };
    let image = broker.image();
    let mut topics: Vec<MetadataResponseTopic> = match &requested {
        None => image
            .topics
            .values()
            .filter(|t| describe(&image, &t.name))
            .map(|t| topic_metadata(&image, t, version, &session.listener))
            .collect(),
        Some(names) => {
            let mut seen = std::collections::BTreeSet::new();
            names
                .iter()
                .filter(|n| seen.insert((*n).clone()))
                .map(|name| match image.topic(name) {
                    Some(_) if !describe(&image, name) => MetadataResponseTopic::default()
                        .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone())))),
                    Some(t) => topic_metadata(&image, t, version, &session.listener),
                    None => MetadataResponseTopic::default()
                        .with_error_code(
                            errors
                                .get(name)
                                .copied()
                                .unwrap_or(code(ResponseError::UnknownTopicOrPartition)),
                        )
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone())))),
                })
                .collect()
        }
    };
    topics.extend(unknown_ids.into_iter().map(|id| {
        MetadataResponseTopic::default()
            .with_error_code(code(ResponseError::UnknownTopicId))
            .with_name(None)
            .with_topic_id(id)
    }));
    let mut resp = MetadataResponse::default()
        .with_brokers(
            // As Kafka's getAliveBrokerNodes: fenced brokers are left out.
            brokers(&image, &session.listener)
                .into_iter()
                .filter(|b| image.is_live(b.node_id.0))
                .collect(),
        )
        .with_topics(topics);
    if version >= 1 {
        resp.controller_id = BrokerId(broker.controller_id());
    }
    if version >= 2 {
        resp.cluster_id = image.cluster_id.clone().map(StrBytes::from_string);
    }
    if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        resp.cluster_authorized_operations = session.authorized_operations(
            &image,
            ResourceType::Cluster,
            CLUSTER_NAME,
            CLUSTER_OPERATIONS,
        );
    }
    if version >= 8 && req.include_topic_authorized_operations {
        for t in resp.topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.topic_authorized_operations =
                session.authorized_operations(&image, ResourceType::Topic, &name, TOPIC_OPERATIONS);
        }
    }
    resp
}

/// The topics a request names (`None`: all of them), and the ids it names that do not exist.
/// v0: an empty list means every topic; v1+: null does. v10+: a topic may be named by id
/// alone; a non-zero id names the topic, whatever the name field holds (the Java client sends
/// "" with an id).
fn requested_topics(
    broker: &Broker,
    version: i16,
    req: &MetadataRequest,
) -> (Option<Vec<String>>, Vec<Uuid>) {
    let mut unknown_ids = Vec::new();
    let requested = match &req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => {
            let image = broker.image();
            Some(
                t.iter()
                    .filter_map(|t| match &t.name {
                        Some(n) if t.topic_id.is_nil() => Some(n.to_string()),
                        _ => {
                            let name = image.topic_by_id(&t.topic_id).map(|t| t.name.clone());
                            if name.is_none() && !unknown_ids.contains(&t.topic_id) {
                                unknown_ids.push(t.topic_id);
                            }
                            name
                        }
                    })
                    .collect(),
            )
        }
    };
    (requested, unknown_ids)
}

/// Auto-creates the named topics that do not exist (when allowed), and returns the error
/// code for each that still does not.
async fn missing_topics(
    broker: &Broker,
    session: &Session,
    names: &[String],
    allow_auto_create: bool,
) -> BTreeMap<String, i16> {
    let image = broker.image();
    let may_create = |name: &str| {
        session.allowed_on_cluster(&image, AclOperation::Create)
            || session.allowed(&image, AclOperation::Create, ResourceType::Topic, name)
    };
    let mut errors: BTreeMap<String, i16> = BTreeMap::new();
    let mut to_create: Vec<&String> = Vec::new();
    for name in names {
        if image.topic(name).is_some() || errors.contains_key(name) || to_create.contains(&name) {
            continue;
        }
        if !session.allowed(&image, AclOperation::Describe, ResourceType::Topic, name) {
            errors.insert(name.clone(), code(ResponseError::TopicAuthorizationFailed));
        } else if let Err(e) = validate_topic_name(name) {
            tracing::debug!(topic = %name, error = %e, "metadata for an invalid topic name");
            errors.insert(name.clone(), code(ResponseError::InvalidTopicException));
        } else if !(allow_auto_create && broker.config.kafka.auto_create_topics_enable) {
            errors.insert(name.clone(), code(ResponseError::UnknownTopicOrPartition));
        } else if !may_create(name) {
            errors.insert(name.clone(), code(ResponseError::TopicAuthorizationFailed));
        } else {
            to_create.push(name);
        }
    }
    if to_create.is_empty() {
        return errors;
    }
    for (name, created) in to_create.iter().zip(auto_create(broker, &to_create).await) {
        let error = match created {
            Ok(_) | Err(CreateTopicError::AlreadyExists(_)) => continue,
            Err(CreateTopicError::InvalidTopic(_)) => ResponseError::InvalidTopicException,
            Err(e) => {
                tracing::warn!(topic = %name, error = %e, "auto-creating topic failed");
                ResponseError::LeaderNotAvailable
            }
        };
        errors.insert((*name).clone(), code(error));
    }
    errors
}

/// Creates the named topics with the broker defaults (`auto.create.topics.enable`), in one
/// proposal, and waits until they are hosted here.
async fn auto_create(broker: &Broker, names: &[&String]) -> Vec<controller::Created> {
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|name| TopicSpec {
            name: (*name).clone(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: None,
            configs: BTreeMap::new(),
        })
        .collect();
    let created = broker.create_topics(&specs, false).await;
    for (name, _) in names.iter().zip(&created).filter(|(_, c)| c.is_ok()) {
        tracing::info!(topic = %name, "auto-created topic");
    }
    created
}

/// The brokers that have `listener`, with their endpoint on it (Kafka leaves out brokers
/// without the listener a client connected through).
fn brokers(image: &MetadataImage, listener: &str) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.node_id))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(port)
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect()
}

/// A topic's partitions. Offline replicas are those on brokers that are unknown, fenced or
/// without the client's listener, as Kafka's `getOfflineReplicas`.
fn topic_metadata(
    image: &MetadataImage,
    topic: &Arc<TopicImage>,
    version: i16,
    listener: &str,
) -> MetadataResponseTopic {
    let online = |r: &i32| {
        image
            .brokers
            .get(r)
            .is_some_and(|b| !b.fenced && b.endpoint(listener).is_some())
    };
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !online(r))
                .map(|r| BrokerId(*r))
                .collect();
            let error = if p.leader < 0 {
                code(ResponseError::LeaderNotAvailable)
            } else {
                0
            };
            let mut m = MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect());
            if version >= 7 {
                m.leader_epoch = p.leader_epoch;
            }
            if version >= 5 {
                m.offline_replicas = offline;
            }
            m
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
}

/// DescribeCluster: the cluster id, the active controller and the unfenced brokers (with
/// `include_fenced_brokers`, v2, the fenced ones too), as Kafka's broker answers.
pub fn describe_cluster(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: kafka_protocol::messages::DescribeClusterRequest,
) -> kafka_protocol::messages::DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::DescribeClusterResponse;
    const BROKERS_ENDPOINT: i8 = 1;
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::Describe) {
        return DescribeClusterResponse::default()
            .with_error_code(code(ResponseError::ClusterAuthorizationFailed))
            .with_endpoint_type(req.endpoint_type);
    }
    if version >= 1 && req.endpoint_type != BROKERS_ENDPOINT {
        return DescribeClusterResponse::default()
            .with_error_code(code(ResponseError::UnsupportedEndpointType))
            .with_error_message(Some(StrBytes::from_static_str(
                "The broker listener only serves the brokers endpoint type",
            )))
            .with_endpoint_type(req.endpoint_type);
    }
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(
            image.cluster_id.clone().unwrap_or_default(),
        ))
        .with_controller_id(BrokerId(broker.controller_id()))
        .with_brokers(
            brokers(&image, &session.listener)
                .into_iter()
                .filter_map(|b| {
                    // v2 (KIP-1073): fenced brokers only when asked for, marked as such.
                    let fenced = !image.is_live(b.node_id.0);
                    if fenced && !(version >= 2 && req.include_fenced_brokers) {
                        return None;
                    }
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(b.node_id)
                            .with_host(b.host)
                            .with_port(b.port)
                            .with_rack(b.rack)
                            .with_is_fenced(fenced),
                    )
                })
                .collect(),
        );
    if version >= 1 {
        resp.endpoint_type = BROKERS_ENDPOINT;
    }
    resp.cluster_authorized_operations = if req.include_cluster_authorized_operations {
        session.authorized_operations(
            &image,
            ResourceType::Cluster,
            CLUSTER_NAME,
            CLUSTER_OPERATIONS,
        )
    } else {
        i32::MIN
    };
    resp
}
