//! The metadata image: the cluster state that every API handler reads.
//!
//! A `MetadataImage` is an immutable value. The state machine builds the next image by applying
//! one committed `MetadataRecord` to the current one, and publishes it as an `Arc` snapshot, so
//! readers never block on Raft and never see a half-applied change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A broker as registered in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// The advertised Kafka listener host.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Changes every time the broker process starts.
    pub incarnation_id: Uuid,
}

/// One partition's replica set and leadership, as the controller decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped on every change to this partition's state (leader or ISR).
    pub partition_epoch: i32,
}

/// A topic: its id, its partitions and its topic-level config overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionImage>,
    /// Topic-level overrides only; broker defaults are applied by the reader.
    pub configs: BTreeMap<String, String>,
}

/// A change to cluster state. Every change goes through the metadata log as one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Sets the cluster id once; later records of this kind are ignored.
    InitCluster { cluster_id: String },
    /// Registers a broker, or updates its endpoint after a restart.
    RegisterBroker(BrokerRegistration),
    /// Creates a topic with an explicit assignment chosen by the proposer.
    CreateTopic(TopicImage),
    /// Deletes a topic by id.
    DeleteTopic { topic_id: Uuid },
    /// Replaces a topic's config overrides (validated by the proposer).
    SetTopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Adds partitions to a topic; they must continue its partition numbering.
    AddPartitions {
        topic_id: Uuid,
        partitions: Vec<PartitionImage>,
    },
    /// Hands a block of producer ids to a broker. Ids are never reused.
    AllocateProducerIds { broker_id: i32, block_size: i64 },
}

/// What applying one record did. The proposer turns this into a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Ok,
    TopicAlreadyExists,
    UnknownTopic,
    /// The record conflicts with the current state (e.g. partitions added concurrently).
    Conflict,
    /// Producer ids `first..first + size` now belong to the proposing broker.
    ProducerIdBlock {
        first: i64,
        size: i64,
    },
}

/// Cluster state at one point of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names_by_id: BTreeMap<Uuid, String>,
    /// The first producer id not yet handed out.
    #[serde(default)]
    pub next_producer_id: i64,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names_by_id
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    /// Applies one committed record in place. Deterministic: every broker that applies the same
    /// records in the same order reaches the same image.
    pub fn apply(&mut self, record: &MetadataRecord) -> ApplyOutcome {
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                ApplyOutcome::Ok
            }
            MetadataRecord::RegisterBroker(reg) => {
                self.brokers.insert(reg.node_id, reg.clone());
                ApplyOutcome::Ok
            }
            MetadataRecord::CreateTopic(topic) => {
                if self.topics.contains_key(&topic.name)
                    || self.topic_names_by_id.contains_key(&topic.topic_id)
                {
                    return ApplyOutcome::TopicAlreadyExists;
                }
                self.topic_names_by_id
                    .insert(topic.topic_id, topic.name.clone());
                self.topics
                    .insert(topic.name.clone(), Arc::new(topic.clone()));
                ApplyOutcome::Ok
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                match self.topic_by_id(topic_id).cloned() {
                    Some(topic) => {
                        let mut t = (*topic).clone();
                        t.configs = configs.clone();
                        self.topics.insert(t.name.clone(), Arc::new(t));
                        ApplyOutcome::Ok
                    }
                    None => ApplyOutcome::UnknownTopic,
                }
            }
            MetadataRecord::AddPartitions {
                topic_id,
                partitions,
            } => match self.topic_by_id(topic_id).cloned() {
                Some(topic) => {
                    let continues = partitions
                        .iter()
                        .enumerate()
                        .all(|(i, p)| p.partition == (topic.partitions.len() + i) as i32);
                    if !continues || partitions.is_empty() {
                        return ApplyOutcome::Conflict;
                    }
                    let mut t = (*topic).clone();
                    t.partitions.extend(partitions.iter().cloned());
                    self.topics.insert(t.name.clone(), Arc::new(t));
                    ApplyOutcome::Ok
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::AllocateProducerIds { block_size, .. } => {
                let first = self.next_producer_id;
                let size = (*block_size).clamp(1, 1 << 20);
                self.next_producer_id = first + size;
                ApplyOutcome::ProducerIdBlock { first, size }
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                match self.topic_names_by_id.remove(topic_id) {
                    Some(name) => {
                        self.topics.remove(&name);
                        ApplyOutcome::Ok
                    }
                    None => ApplyOutcome::UnknownTopic,
                }
            }
        }
    }
}
