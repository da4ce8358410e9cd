//! Controller decisions that become metadata records: validating new topics, placing their
//! replicas on live (registered, unfenced) brokers, and proposing them through the metadata
//! log. [`create_topics`] is the one way a topic is created (CreateTopics, auto-creation,
//! `__consumer_offsets`, provisioning): one proposal per request, however many topics.
//!
//! Topic configs are checked by a validator the caller passes in (what a config may hold is
//! the log's business, as Kafka injects its `ConfigurationValidator` into the controller), so
//! the metadata layer depends on nothing below it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::image::{ApplyOutcome, MetadataImage, MetadataRecord, PartitionImage, TopicImage};
use super::topic_name::{collision_key, validate_topic_name};
use super::{MetadataQuorum, ProposeError};
use crate::kafka_uuid::random_kafka_uuid;

/// Checks a topic's config overrides; an error is Kafka's INVALID_CONFIG message.
pub type ConfigValidator = fn(&BTreeMap<String, String>) -> Result<(), String>;

/// A topic as a client asked for it; -1 means "use the broker default".
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// Explicit replica lists per partition, in partition order.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
}

/// Why a topic cannot be created; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateTopicError {
    #[error("{0}")]
    InvalidTopic(String),
    #[error("Topic '{0}' already exists.")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnknownTopic(String),
    #[error("{0}")]
    NotController(String),
    /// The requester may not create it (checked by the API layer before planning).
    #[error("{0}")]
    NotAuthorized(String),
}

/// Broker defaults that apply when a request leaves a setting at -1.
#[derive(Debug, Clone, Copy)]
pub struct CreateDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// Spreads partitions over brokers round robin from a random start, as Kafka's rack-unaware
/// assignment does: partition p's leader is broker (start + p) mod n, and its followers are
/// the next brokers in order.
pub fn place_replicas(
    brokers: &[i32],
    partitions: i32,
    replication_factor: i16,
    first: i32,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    (0..partitions)
        .map(|p| {
            (0..replication_factor as usize)
                .map(|r| brokers[(first as usize + p as usize + r) % n])
                .collect()
        })
        .collect()
}

/// Validates a topic against `image` and builds the record that creates it.
pub fn plan_topic(
    image: &MetadataImage,
    spec: &TopicSpec,
    defaults: CreateDefaults,
    validate_configs: ConfigValidator,
) -> Result<TopicImage, CreateTopicError> {
    validate_topic_name(&spec.name).map_err(CreateTopicError::InvalidTopic)?;
    if image.topics.contains_key(&spec.name) {
        return Err(CreateTopicError::AlreadyExists(spec.name.clone()));
    }
    let key = collision_key(&spec.name);
    if let Some(other) = image.topics.keys().find(|t| collision_key(t) == key) {
        return Err(CreateTopicError::InvalidTopic(format!(
            "Topic '{}' collides with existing topic: {other}",
            spec.name
        )));
    }
    validate_configs(&spec.configs).map_err(CreateTopicError::InvalidConfig)?;
    let brokers: Vec<i32> = image.brokers.keys().copied().collect();
    let live = live_brokers(image);
    let replicas: Vec<Vec<i32>> = match &spec.assignments {
        Some(assignments) => {
            if spec.num_partitions != -1 || spec.replication_factor != -1 {
                return Err(CreateTopicError::InvalidRequest(
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
            }
            validate_assignments(assignments, &brokers)?;
            assignments.clone()
        }
        None => {
            let partitions = if spec.num_partitions == -1 {
                defaults.num_partitions
            } else {
                spec.num_partitions
            };
            let rf = if spec.replication_factor == -1 {
                defaults.replication_factor
            } else {
                spec.replication_factor
            };
            if partitions <= 0 {
                return Err(CreateTopicError::InvalidPartitions(
                    "Number of partitions must be larger than 0.".into(),
                ));
            }
            if rf <= 0 {
                return Err(CreateTopicError::InvalidReplicationFactor(
                    "Replication factor must be larger than 0.".into(),
                ));
            }
            if rf as usize > live.len() {
                return Err(CreateTopicError::InvalidReplicationFactor(format!(
                    "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
                    live.len()
                )));
            }
            let first = rand::random::<u32>() as i32 & i32::MAX;
            place_replicas(&live, partitions, rf, first)
        }
    };
    Ok(TopicImage {
        name: spec.name.clone(),
        topic_id: random_kafka_uuid(),
        partitions: new_partitions(image, 0, replicas)?,
        configs: spec.configs.clone(),
    })
}

/// Registered brokers that are not fenced, in id order: where new replicas go.
fn live_brokers(image: &MetadataImage) -> Vec<i32> {
    image
        .brokers
        .keys()
        .copied()
        .filter(|b| image.is_live(*b))
        .collect()
}

/// Partitions `first..` with the given replica lists. The ISR is the live replicas and the
/// leader the first of them (an explicit assignment may name fenced brokers).
fn new_partitions(
    image: &MetadataImage,
    first: i32,
    replicas: Vec<Vec<i32>>,
) -> Result<Vec<PartitionImage>, CreateTopicError> {
    replicas
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            let partition = first + i as i32;
            let isr: Vec<i32> = replicas
                .iter()
                .copied()
                .filter(|b| image.is_live(*b))
                .collect();
            let Some(&leader) = isr.first() else {
                return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                    "All brokers specified in the partition assignment for partition {partition} are fenced."
                )));
            };
            Ok(PartitionImage {
                partition,
                leader,
                leader_epoch: 0,
                isr,
                replicas,
                partition_epoch: 0,
                ..PartitionImage::default()
            })
        })
        .collect()
}

fn validate_assignments(assignments: &[Vec<i32>], brokers: &[i32]) -> Result<(), CreateTopicError> {
    if assignments.is_empty() {
        return Err(CreateTopicError::InvalidReplicaAssignment(
            "Replica assignment must not be empty.".into(),
        ));
    }
    let rf = assignments[0].len();
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                "Partition {p} has no replicas."
            )));
        }
        if replicas.len() != rf {
            return Err(CreateTopicError::InvalidReplicaAssignment(
                "All partitions must have the same number of replicas.".into(),
            ));
        }
        let unique: BTreeSet<i32> = replicas.iter().copied().collect();
        if unique.len() != replicas.len() {
            return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                "Duplicate replica assignment for partition {p}: {replicas:?}"
            )));
        }
        if let Some(b) = replicas.iter().find(|b| !brokers.contains(b)) {
            return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            )));
        }
    }
    Ok(())
}

/// Validates growing `topic` to `count` partitions and places the new ones (or checks the
/// explicit assignment for them). Returns the topic id and the new partitions.
pub fn plan_partitions(
    image: &MetadataImage,
    topic: &str,
    count: i32,
    assignments: Option<Vec<Vec<i32>>>,
) -> Result<(Uuid, Vec<PartitionImage>), CreateTopicError> {
    let Some(t) = image.topic(topic) else {
        return Err(CreateTopicError::UnknownTopic(format!(
            "The topic '{topic}' does not exist."
        )));
    };
    let current = t.partitions.len() as i32;
    if count < current {
        return Err(CreateTopicError::InvalidPartitions(format!(
            "Topic currently has {current} partitions, which is higher than the requested {count}."
        )));
    }
    if count == current {
        return Err(CreateTopicError::InvalidPartitions(format!(
            "Topic already has {current} partitions."
        )));
    }
    let brokers: Vec<i32> = image.brokers.keys().copied().collect();
    let live = live_brokers(image);
    let rf = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(1);
    let added = (count - current) as usize;
    let replicas = match assignments {
        Some(a) => {
            if a.len() != added {
                return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    a.len()
                )));
            }
            validate_assignments(&a, &brokers)?;
            if a[0].len() != rf {
                return Err(CreateTopicError::InvalidReplicaAssignment(format!(
                    "Inconsistent replication factor between partitions, partition 0 has {rf} while partitions [{current}] have replication factors [{}], respectively.",
                    a[0].len()
                )));
            }
            a
        }
        None => {
            if rf > live.len() {
                return Err(CreateTopicError::InvalidReplicationFactor(format!(
                    "Unable to replicate the partition {rf} time(s): only {} broker(s) are registered.",
                    live.len()
                )));
            }
            place_replicas(
                &live,
                count,
                rf as i16,
                rand::random::<u32>() as i32 & i32::MAX,
            )
            .split_off(current as usize)
        }
    };
    Ok((t.topic_id, new_partitions(image, current, replicas)?))
}

/// Proposes adding planned partitions.
pub async fn add_partitions(
    meta: &MetadataQuorum,
    topic_id: Uuid,
    partitions: Vec<PartitionImage>,
) -> Result<(), CreateTopicError> {
    match meta
        .propose(MetadataRecord::AddPartitions {
            topic_id,
            partitions,
        })
        .await
    {
        Ok(ApplyOutcome::Ok) => Ok(()),
        Ok(ApplyOutcome::UnknownTopic) => Err(CreateTopicError::UnknownTopic(
            "The topic was deleted meanwhile.".into(),
        )),
        Ok(_) => Err(CreateTopicError::InvalidPartitions(
            "The topic's partitions changed meanwhile; retry.".into(),
        )),
        Err(e) => Err(CreateTopicError::NotController(e.to_string())),
    }
}

/// What [`create_topics`] did for one topic: the topic as created (or, with `validate_only`,
/// as it would be), or why not.
pub type Created = Result<Arc<TopicImage>, CreateTopicError>;

/// Creates topics, in one proposal to the metadata log. Each spec is planned against the
/// current image plus the topics planned before it in the same call (so two names that
/// collide are caught within one request). With `validate_only` nothing is proposed. The
/// results come back in the order of `specs`.
pub async fn create_topics(
    meta: &MetadataQuorum,
    specs: &[TopicSpec],
    defaults: CreateDefaults,
    validate_configs: ConfigValidator,
    validate_only: bool,
) -> Vec<Created> {
    let mut scratch = (*meta.image()).clone();
    let mut planned: Vec<Result<TopicImage, CreateTopicError>> = Vec::with_capacity(specs.len());
    for spec in specs {
        let plan = plan_topic(&scratch, spec, defaults, validate_configs);
        if let Ok(t) = &plan {
            scratch.apply(&MetadataRecord::CreateTopic(t.clone()));
        }
        planned.push(plan);
    }
    let to_create: Vec<TopicImage> = planned.iter().filter_map(|p| p.clone().ok()).collect();
    if validate_only || to_create.is_empty() {
        return planned.into_iter().map(|p| p.map(Arc::new)).collect();
    }
    let outcomes = match meta.propose(MetadataRecord::CreateTopics(to_create)).await {
        Ok(ApplyOutcome::Each(outcomes)) => outcomes,
        Ok(other) => {
            let e = CreateTopicError::NotController(format!("unexpected outcome {other:?}"));
            return planned.into_iter().map(|p| p.and(Err(e.clone()))).collect();
        }
        Err(e) => {
            let e = CreateTopicError::NotController(e.to_string());
            return planned.into_iter().map(|p| p.and(Err(e.clone()))).collect();
        }
    };
    let image = meta.image();
    let mut outcomes = outcomes.into_iter();
    planned
        .into_iter()
        .map(|p| {
            let t = p?;
            match outcomes.next() {
                Some(ApplyOutcome::Ok) => image.topic(&t.name).cloned().ok_or_else(|| {
                    CreateTopicError::NotController("the topic was deleted meanwhile".into())
                }),
                Some(ApplyOutcome::TopicAlreadyExists) => {
                    Err(CreateTopicError::AlreadyExists(t.name))
                }
                other => Err(CreateTopicError::NotController(format!(
                    "unexpected outcome {other:?}"
                ))),
            }
        })
        .collect()
}

/// Proposes deleting a topic by id.
pub async fn delete_topic(
    meta: &MetadataQuorum,
    topic_id: Uuid,
) -> Result<ApplyOutcome, ProposeError> {
    meta.propose(MetadataRecord::DeleteTopic { topic_id }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::image::BrokerRegistration;

    fn image_with_brokers(ids: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &id in ids {
            image.apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: id,
                host: "127.0.0.1".into(),
                port: 9092,
                endpoints: vec![],
                rack: None,
                incarnation_id: Uuid::new_v4(),
                fenced: false,
                shutting_down: false,
            }));
        }
        image
    }

    fn spec(name: &str, partitions: i32, rf: i16) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            assignments: None,
            configs: BTreeMap::new(),
        }
    }

    fn no_config_check(configs: &BTreeMap<String, String>) -> Result<(), String> {
        match configs.get("flush.messages").map(String::as_str) {
            Some("zero") => Err("flush.messages: not a number".into()),
            _ => Ok(()),
        }
    }

    const DEFAULTS: CreateDefaults = CreateDefaults {
        num_partitions: 3,
        replication_factor: 1,
    };

    #[test]
    fn placement_spreads_leaders() {
        let p = place_replicas(&[1, 2, 3], 6, 3, 0);
        let leaders: Vec<i32> = p.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        assert!(p.iter().all(|r| r.len() == 3));
    }

    #[test]
    fn plan_validates() {
        let mut image = image_with_brokers(&[1]);
        let t = plan_topic(
            &image,
            &spec("chat-topic", -1, -1),
            DEFAULTS,
            no_config_check,
        )
        .expect("valid");
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[0].replicas, vec![1]);
        image.apply(&MetadataRecord::CreateTopic(t));
        assert!(matches!(
            plan_topic(&image, &spec("chat-topic", 1, 1), DEFAULTS, no_config_check),
            Err(CreateTopicError::AlreadyExists(_))
        ));
        assert!(plan_topic(&image, &spec("chat_topic", 1, 1), DEFAULTS, no_config_check).is_ok());
        assert!(matches!(
            plan_topic(&image, &spec("bad name", 1, 1), DEFAULTS, no_config_check),
            Err(CreateTopicError::InvalidTopic(_))
        ));
        assert!(matches!(
            plan_topic(&image, &spec("t", 0, 1), DEFAULTS, no_config_check),
            Err(CreateTopicError::InvalidPartitions(_))
        ));
        assert!(matches!(
            plan_topic(&image, &spec("t", 1, 2), DEFAULTS, no_config_check),
            Err(CreateTopicError::InvalidReplicationFactor(_))
        ));
        let mut bad = spec("t", 1, 1);
        bad.configs.insert("flush.messages".into(), "zero".into());
        assert!(matches!(
            plan_topic(&image, &bad, DEFAULTS, no_config_check),
            Err(CreateTopicError::InvalidConfig(_))
        ));
    }

    #[test]
    fn dotted_names_collide() {
        let mut image = image_with_brokers(&[1]);
        let t = plan_topic(&image, &spec("a.b", 1, 1), DEFAULTS, no_config_check).expect("valid");
        image.apply(&MetadataRecord::CreateTopic(t));
        assert!(matches!(
            plan_topic(&image, &spec("a_b", 1, 1), DEFAULTS, no_config_check),
            Err(CreateTopicError::InvalidTopic(_))
        ));
    }
}
