//! The metadata image: the cluster state that every API handler reads.
//!
//! A `MetadataImage` is an immutable value. The state machine builds the next image by applying
//! one committed `MetadataRecord` to the current one, and publishes it as an `Arc` snapshot, so
//! readers never block on Raft and never see a half-applied change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::acl::{AclBinding, AclBindingFilter, AclStore};
use super::broker_configs::DynamicBrokerConfigs;
use super::client_quotas::{ClientQuotaRecord, ClientQuotaStore};
use super::group_configs::GroupConfigs;
use super::partition_change::PartitionChange;

/// One advertised listener of a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener name (`PLAINTEXT`, `SASL_SSL`, ...).
    pub listener: String,
    pub host: String,
    pub port: i32,
    /// Kafka's security protocol id.
    pub security_protocol: i16,
}

/// A broker as registered in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// The inter-broker listener's advertised host and port.
    pub host: String,
    pub port: i32,
    /// Every advertised listener. Registrations from before listeners were recorded have none:
    /// then `host`/`port` serve every listener.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// Changes every time the broker process starts.
    pub incarnation_id: Uuid,
    /// A fenced broker missed its session: it leads nothing and is in no ISR.
    #[serde(default)]
    pub fenced: bool,
    /// The broker fenced itself to stop (Kafka's controlled shutdown): it stays fenced, whatever
    /// heartbeats it still acknowledges, until it registers again.
    #[serde(default)]
    pub shutting_down: bool,
}

/// One partition's replica set and leadership, as the controller decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    /// While a reassignment is in progress: the target replicas followed by
    /// `removing_replicas` (Kafka's KRaft model).
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped on every change to this partition's state (leader, ISR or replicas).
    pub partition_epoch: i32,
    /// Replicas a reassignment in progress adds (they catch up, then join the ISR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment in progress removes once the targets are all in the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

/// A partition's next replicas, ISR, leader and reassignment state, computed by the proposer
/// from the partition as it was at `expected_partition_epoch` (Kafka's PartitionChangeRecord).
/// The state machine sets the epochs itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChangeRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    pub expected_partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
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
    /// Creates several topics at once (one CreateTopics request): each is applied as
    /// `CreateTopic`, in order, with its own outcome.
    CreateTopics(Vec<TopicImage>),
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
    /// The broker missed its session: it leaves every ISR it is not the last member of, and
    /// each partition it led gets a new leader from the rest of its ISR (or none).
    FenceBroker { node_id: i32 },
    /// A broker stopping (SIGTERM) fences itself for good: its leaderships move now, and only
    /// its next registration unfences it.
    ShutDownBroker { node_id: i32 },
    /// The broker is back: partitions without a leader whose ISR it is in get it as leader.
    UnfenceBroker { node_id: i32 },
    /// A leader or ISR change for one partition, applied only if the partition epoch is still
    /// `expected_partition_epoch` (so concurrent changes cannot overwrite each other). A new
    /// leader bumps the leader epoch. Only live (registered, unfenced) brokers may join the ISR.
    UpdatePartition {
        topic_id: Uuid,
        partition: i32,
        expected_partition_epoch: i32,
        leader: i32,
        isr: Vec<i32>,
    },
    /// The node is being removed from the metadata quorum. Its id is retired for good (a
    /// removed id coming back with an empty log could split the quorum), and its broker, if
    /// registered, is fenced.
    RetireNode { node_id: u64 },
    /// Adds ACL bindings (validated by the proposer); each has its own outcome.
    CreateAcls(Vec<AclBinding>),
    /// Removes the ACL bindings each filter matches.
    DeleteAcls(Vec<AclBindingFilter>),
    /// Sets a user's SCRAM credential for one mechanism (salted and hashed, never a password).
    UpsertScramCredential {
        user: String,
        mechanism: String,
        credential: ScramCredential,
    },
    /// Removes a user's SCRAM credential for one mechanism.
    DeleteScramCredential { user: String, mechanism: String },
    /// Sets (`Some`) or removes (`None`) dynamic broker configs (validated by the proposer) of
    /// one broker, or with `broker_id: None` of the cluster-wide default.
    AlterBrokerConfigs {
        broker_id: Option<i32>,
        changes: BTreeMap<String, Option<String>>,
    },
    /// Sets (`Some`) or removes (`None`) one group's configs (`kafka-configs --entity-type
    /// groups`, validated by the proposer).
    AlterGroupConfigs {
        group: String,
        changes: BTreeMap<String, Option<String>>,
    },
    /// Finalizes feature levels (UpdateFeatures, validated by the proposer), all at once, as
    /// Kafka's FeatureLevelRecords of one request; level 0 removes a feature.
    FeatureLevels(BTreeMap<String, i16>),
    /// Sets or removes client quota values (one AlterClientQuotas request's validated
    /// changes, applied together as Kafka applies its ClientQuotaRecords atomically).
    ClientQuotas(Vec<ClientQuotaRecord>),
    /// Partition changes decided by the controller's callers (ElectLeaders, reassignments),
    /// each applied only if its partition epoch is still the expected one; one outcome each.
    ChangePartitions(Vec<PartitionChangeRecord>),
}

/// A SCRAM credential as stored (RFC 5802): salt, StoredKey, ServerKey, iterations.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
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
    /// The outcome of each part of a record that does several things (`CreateTopics`).
    Each(Vec<ApplyOutcome>),
    /// What each DeleteAcls filter removed.
    DeletedAcls(Vec<Vec<AclBinding>>),
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
    /// How many records this image has applied: a later image has a larger version.
    #[serde(default)]
    pub version: u64,
    /// Node ids removed from the metadata quorum; never used again.
    #[serde(default)]
    pub retired_node_ids: BTreeSet<u64>,
    /// Every ACL binding.
    #[serde(default)]
    pub acls: Arc<AclStore>,
    /// Bumped by every change to `acls`: connections drop their cached decisions.
    #[serde(default)]
    pub acl_version: u64,
    /// SCRAM credentials: user → mechanism name → credential.
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, BTreeMap<String, ScramCredential>>,
    /// Dynamic broker configs (`kafka-configs --entity-type brokers`); shared until changed.
    #[serde(default)]
    pub broker_configs: Arc<DynamicBrokerConfigs>,
    /// Group configs (`kafka-configs --entity-type groups`); shared until changed.
    #[serde(default)]
    pub group_configs: Arc<GroupConfigs>,
    /// Finalized feature levels set by UpdateFeatures (above 0); see `meta::features` for
    /// the levels in effect.
    #[serde(default)]
    pub features: BTreeMap<String, i16>,
    /// Client quotas (users, client ids and their defaults).
    #[serde(default)]
    pub client_quotas: Arc<ClientQuotaStore>,
}

impl BrokerRegistration {
    /// Where clients of `listener` reach this broker, if it has that listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, i32)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.as_str(), e.port))
    }
}

impl PartitionImage {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// Sets leader and ISR; a new leader bumps the leader epoch, any change the partition
    /// epoch.
    pub fn set_leader_and_isr(&mut self, leader: i32, isr: Vec<i32>) {
        if leader != self.leader {
            self.leader_epoch += 1;
        }
        if leader != self.leader || isr != self.isr {
            self.partition_epoch += 1;
        }
        self.leader = leader;
        self.isr = isr;
    }
}

impl MetadataImage {
    /// Whether `node_id` was removed from the metadata quorum (and may never come back).
    pub fn is_retired(&self, node_id: i32) -> bool {
        u64::try_from(node_id).is_ok_and(|id| self.retired_node_ids.contains(&id))
    }

    /// Whether a broker is registered and not fenced.
    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Takes a fenced broker out of every ISR (unless it is the last member, which keeps the
    /// partition electable only by it: no unclean election) and moves its leaderships to the
    /// first live ISR member in replica order.
    fn fence(&mut self, node_id: i32) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let Some(topic) = self.topics.get(&name).cloned() else {
                continue;
            };
            if !topic
                .partitions
                .iter()
                .any(|p| p.replicas.contains(&node_id))
            {
                continue;
            }
            let mut t = (*topic).clone();
            for p in t
                .partitions
                .iter_mut()
                .filter(|p| p.replicas.contains(&node_id))
            {
                let isr: Vec<i32> = if p.isr.len() > 1 {
                    p.isr.iter().copied().filter(|r| *r != node_id).collect()
                } else {
                    p.isr.clone()
                };
                let leader = if p.leader == node_id || p.leader == -1 {
                    p.replicas
                        .iter()
                        .copied()
                        .find(|r| {
                            *r != node_id
                                && isr.contains(r)
                                && self.brokers.get(r).is_some_and(|b| !b.fenced)
                        })
                        .unwrap_or(-1)
                } else {
                    p.leader
                };
                p.set_leader_and_isr(leader, isr);
                self.complete_reassignment(p);
            }
            self.topics.insert(name, Arc::new(t));
        }
    }

    /// Gives leaderless partitions whose ISR includes the returning broker a leader again.
    fn unfence(&mut self, node_id: i32) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let Some(topic) = self.topics.get(&name).cloned() else {
                continue;
            };
            if !topic
                .partitions
                .iter()
                .any(|p| p.leader == -1 && p.isr.contains(&node_id))
            {
                continue;
            }
            let mut t = (*topic).clone();
            for p in t
                .partitions
                .iter_mut()
                .filter(|p| p.leader == -1 && p.isr.contains(&node_id))
            {
                let isr = p.isr.clone();
                p.set_leader_and_isr(node_id, isr);
            }
            self.topics.insert(name, Arc::new(t));
        }
    }

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
        self.version += 1;
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                ApplyOutcome::Ok
            }
            MetadataRecord::RegisterBroker(reg) => self.register_broker(reg),
            MetadataRecord::FenceBroker { node_id } => self.set_fenced(*node_id, true),
            MetadataRecord::ShutDownBroker { node_id } => {
                if let Some(b) = self.brokers.get_mut(node_id) {
                    b.shutting_down = true;
                }
                self.set_fenced(*node_id, true)
            }
            MetadataRecord::UnfenceBroker { node_id } => self.set_fenced(*node_id, false),
            MetadataRecord::RetireNode { node_id } => self.retire_node(*node_id),
            MetadataRecord::UpdatePartition {
                topic_id,
                partition,
                expected_partition_epoch,
                leader,
                isr,
            } => self.update_partition(
                topic_id,
                *partition,
                *expected_partition_epoch,
                *leader,
                isr,
            ),
            MetadataRecord::CreateTopic(topic) => self.create_topic(topic),
            MetadataRecord::CreateTopics(topics) => {
                ApplyOutcome::Each(topics.iter().map(|t| self.create_topic(t)).collect())
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
            } => self.add_partitions(topic_id, partitions),
            MetadataRecord::AllocateProducerIds { block_size, .. } => {
                let first = self.next_producer_id;
                let size = (*block_size).clamp(1, 1 << 20);
                self.next_producer_id = first + size;
                ApplyOutcome::ProducerIdBlock { first, size }
            }
            MetadataRecord::CreateAcls(bindings) => {
                let acls = Arc::make_mut(&mut self.acls);
                for b in bindings {
                    acls.add(b.clone());
                }
                self.acl_version += 1;
                ApplyOutcome::Each(bindings.iter().map(|_| ApplyOutcome::Ok).collect())
            }
            MetadataRecord::DeleteAcls(filters) => {
                let acls = Arc::make_mut(&mut self.acls);
                let removed = filters.iter().map(|f| acls.remove_matching(f)).collect();
                self.acl_version += 1;
                ApplyOutcome::DeletedAcls(removed)
            }
            MetadataRecord::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                self.scram_credentials
                    .entry(user.clone())
                    .or_default()
                    .insert(mechanism.clone(), credential.clone());
                ApplyOutcome::Ok
            }
            MetadataRecord::DeleteScramCredential { user, mechanism } => {
                let removed = self
                    .scram_credentials
                    .get_mut(user)
                    .and_then(|m| m.remove(mechanism));
                self.scram_credentials.retain(|_, m| !m.is_empty());
                if removed.is_some() {
                    ApplyOutcome::Ok
                } else {
                    ApplyOutcome::Conflict
                }
            }
            MetadataRecord::AlterBrokerConfigs { broker_id, changes } => {
                Arc::make_mut(&mut self.broker_configs).alter(*broker_id, changes);
                ApplyOutcome::Ok
            }
            MetadataRecord::AlterGroupConfigs { group, changes } => {
                Arc::make_mut(&mut self.group_configs).alter(group, changes);
                ApplyOutcome::Ok
            }
            MetadataRecord::FeatureLevels(levels) => {
                for (name, level) in levels {
                    if *level > 0 {
                        self.features.insert(name.clone(), *level);
                    } else {
                        self.features.remove(name);
                    }
                }
                ApplyOutcome::Ok
            }
            MetadataRecord::ClientQuotas(records) => {
                let store = Arc::make_mut(&mut self.client_quotas);
                for r in records {
                    store.apply(r);
                }
                ApplyOutcome::Ok
            }
            MetadataRecord::ChangePartitions(changes) => {
                ApplyOutcome::Each(changes.iter().map(|c| self.change_partition(c)).collect())
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

    fn register_broker(&mut self, reg: &BrokerRegistration) -> ApplyOutcome {
        if self.is_retired(reg.node_id) {
            return ApplyOutcome::Conflict;
        }
        let previous = self.brokers.get(&reg.node_id).cloned();
        // A restarted broker (new incarnation) may have lost unflushed data: like Kafka, treat
        // its old session as over, so its leaderships move to replicas in sync, and it rejoins
        // ISRs only after catching up.
        if previous
            .as_ref()
            .is_some_and(|p| !p.fenced && p.incarnation_id != reg.incarnation_id)
        {
            self.fence(reg.node_id);
        }
        let mut reg = reg.clone();
        reg.fenced = false;
        reg.shutting_down = false;
        let node_id = reg.node_id;
        self.brokers.insert(node_id, reg);
        if previous.is_some() {
            self.unfence(node_id);
        }
        ApplyOutcome::Ok
    }

    fn set_fenced(&mut self, node_id: i32, fenced: bool) -> ApplyOutcome {
        match self.brokers.get_mut(&node_id) {
            Some(b) if b.fenced != fenced => {
                b.fenced = fenced;
                if fenced {
                    self.fence(node_id);
                } else {
                    self.unfence(node_id);
                }
                ApplyOutcome::Ok
            }
            Some(_) => ApplyOutcome::Ok,
            None => ApplyOutcome::Conflict,
        }
    }

    fn retire_node(&mut self, node_id: u64) -> ApplyOutcome {
        self.retired_node_ids.insert(node_id);
        if let Ok(id) = i32::try_from(node_id) {
            if let Some(b) = self.brokers.get_mut(&id) {
                if !b.fenced {
                    b.fenced = true;
                    self.fence(id);
                }
            }
        }
        ApplyOutcome::Ok
    }

    fn update_partition(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        expected_partition_epoch: i32,
        leader: i32,
        isr: &[i32],
    ) -> ApplyOutcome {
        let Some(topic) = self.topic_by_id(topic_id).cloned() else {
            return ApplyOutcome::UnknownTopic;
        };
        let mut t = (*topic).clone();
        let Some(p) = t.partitions.iter_mut().find(|p| p.partition == partition) else {
            return ApplyOutcome::UnknownTopic;
        };
        let valid = leader == -1 || (p.replicas.contains(&leader) && isr.contains(&leader));
        if p.partition_epoch != expected_partition_epoch
            || !valid
            || isr.is_empty()
            || !isr.iter().all(|r| p.replicas.contains(r))
            // A fenced broker may not join the ISR (Kafka: INELIGIBLE_REPLICA); a dead
            // follower looks caught up to its leader when nothing is produced.
            || isr
                .iter()
                .any(|r| !p.isr.contains(r) && !self.is_live(*r))
        {
            return ApplyOutcome::Conflict;
        }
        p.set_leader_and_isr(leader, isr.to_vec());
        self.complete_reassignment(p);
        self.topics.insert(t.name.clone(), Arc::new(t));
        ApplyOutcome::Ok
    }

    /// Finishes `p`'s reassignment if its ISR now holds every target replica (Kafka completes
    /// it in the same change that grows the ISR).
    fn complete_reassignment(&self, p: &mut PartitionImage) {
        if p.is_reassigning() {
            if let Some(next) = PartitionChange::of(p).build(p, |r| self.is_live(r)) {
                *p = next;
            }
        }
    }

    /// Applies one `PartitionChangeRecord` (checked against the current state).
    fn change_partition(&mut self, c: &PartitionChangeRecord) -> ApplyOutcome {
        let Some(topic) = self.topic_by_id(&c.topic_id).cloned() else {
            return ApplyOutcome::UnknownTopic;
        };
        let mut t = (*topic).clone();
        let Some(p) = t.partitions.iter_mut().find(|p| p.partition == c.partition) else {
            return ApplyOutcome::UnknownTopic;
        };
        let unique = |v: &[i32]| v.iter().collect::<BTreeSet<_>>().len() == v.len();
        let valid = p.partition_epoch == c.expected_partition_epoch
            && !c.replicas.is_empty()
            && unique(&c.replicas)
            && !c.isr.is_empty()
            && unique(&c.isr)
            && c.isr.iter().all(|r| c.replicas.contains(r))
            && c.adding_replicas.iter().all(|r| c.replicas.contains(r))
            && c.removing_replicas.iter().all(|r| c.replicas.contains(r))
            && (c.leader == -1 || (c.isr.contains(&c.leader) && self.is_live(c.leader)))
            && c.replicas.iter().all(|r| self.brokers.contains_key(r))
            // Only the leader of an unclean election joins the ISR from outside it.
            && c
                .isr
                .iter()
                .all(|r| p.isr.contains(r) || (*r == c.leader && c.isr.len() == 1));
        if !valid {
            return ApplyOutcome::Conflict;
        }
        let lost_replicas = p.replicas.iter().any(|r| !c.replicas.contains(r));
        if c.leader != p.leader || lost_replicas {
            p.leader_epoch += 1;
        }
        p.partition_epoch += 1;
        p.replicas = c.replicas.clone();
        p.isr = c.isr.clone();
        p.leader = c.leader;
        p.adding_replicas = c.adding_replicas.clone();
        p.removing_replicas = c.removing_replicas.clone();
        self.topics.insert(t.name.clone(), Arc::new(t));
        ApplyOutcome::Ok
    }

    fn create_topic(&mut self, topic: &TopicImage) -> ApplyOutcome {
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

    fn add_partitions(&mut self, topic_id: &Uuid, partitions: &[PartitionImage]) -> ApplyOutcome {
        let Some(topic) = self.topic_by_id(topic_id).cloned() else {
            return ApplyOutcome::UnknownTopic;
        };
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::test_image::{image_with, partition};

    fn cluster() -> (MetadataImage, Uuid) {
        image_with(
            &[1, 2, 3],
            vec![
                partition(0, &[1, 2, 3], 1, &[1, 2, 3]),
                partition(1, &[2, 3, 1], 2, &[2, 3, 1]),
                partition(2, &[1], 1, &[1]),
            ],
        )
    }

    #[test]
    fn fencing_moves_leadership_and_shrinks_isr() {
        let (mut image, _) = cluster();
        assert_eq!(
            image.apply(&MetadataRecord::FenceBroker { node_id: 1 }),
            ApplyOutcome::Ok
        );
        let t = image.topic("t").expect("topic").clone();
        assert_eq!(
            (t.partitions[0].leader, t.partitions[0].leader_epoch),
            (2, 1)
        );
        assert_eq!(t.partitions[0].isr, vec![2, 3]);
        assert_eq!(
            (t.partitions[1].leader, t.partitions[1].leader_epoch),
            (2, 0)
        );
        assert_eq!(t.partitions[1].isr, vec![2, 3]);
        // The sole replica: no leader, and it stays the only electable member.
        assert_eq!(
            (t.partitions[2].leader, t.partitions[2].isr.clone()),
            (-1, vec![1])
        );
        assert!(!image.is_live(1));
        // Back: the leaderless partition gets its leader again.
        image.apply(&MetadataRecord::UnfenceBroker { node_id: 1 });
        let t = image.topic("t").expect("topic").clone();
        assert_eq!(
            (t.partitions[2].leader, t.partitions[2].leader_epoch),
            (1, 2)
        );
        assert_eq!(
            t.partitions[0].leader, 2,
            "leadership moves back only by preferred election"
        );
    }

    #[test]
    fn update_partition_is_compare_and_set() {
        let (mut image, id) = cluster();
        let update = |epoch, leader, isr: Vec<i32>| MetadataRecord::UpdatePartition {
            topic_id: id,
            partition: 0,
            expected_partition_epoch: epoch,
            leader,
            isr,
        };
        assert_eq!(image.apply(&update(0, 1, vec![1, 2])), ApplyOutcome::Ok);
        assert_eq!(
            image.apply(&update(0, 1, vec![1])),
            ApplyOutcome::Conflict,
            "stale epoch"
        );
        assert_eq!(
            image.apply(&update(1, 3, vec![1, 2])),
            ApplyOutcome::Conflict,
            "leader outside ISR"
        );
        assert_eq!(image.apply(&update(1, 2, vec![1, 2])), ApplyOutcome::Ok);
        let p = &image.topic("t").expect("topic").partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    }

    #[test]
    fn fenced_brokers_cannot_join_the_isr() {
        let (mut image, id) = cluster();
        image.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        let p = image.topic("t").expect("topic").partitions[0].clone();
        assert_eq!(p.isr, vec![1, 2]);
        let rejoin = |epoch| MetadataRecord::UpdatePartition {
            topic_id: id,
            partition: 0,
            expected_partition_epoch: epoch,
            leader: 1,
            isr: vec![1, 2, 3],
        };
        assert_eq!(
            image.apply(&rejoin(p.partition_epoch)),
            ApplyOutcome::Conflict
        );
        image.apply(&MetadataRecord::UnfenceBroker { node_id: 3 });
        assert_eq!(image.apply(&rejoin(p.partition_epoch)), ApplyOutcome::Ok);
    }

    #[test]
    fn retired_nodes_are_fenced_and_cannot_register() {
        let (mut image, _) = cluster();
        let retire = MetadataRecord::RetireNode { node_id: 1 };
        assert_eq!(image.apply(&retire), ApplyOutcome::Ok);
        assert!(image.is_retired(1) && !image.is_live(1));
        assert_eq!(image.topic("t").expect("topic").partitions[0].leader, 2);
        let back = MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: 1,
            host: "h".into(),
            port: 9092,
            endpoints: vec![],
            rack: None,
            incarnation_id: Uuid::new_v4(),
            fenced: false,
            shutting_down: false,
        });
        assert_eq!(image.apply(&back), ApplyOutcome::Conflict);
        assert!(!image.is_live(1));
        // Idempotent, and ids that never registered can be retired too.
        assert_eq!(image.apply(&retire), ApplyOutcome::Ok);
        assert_eq!(
            image.apply(&MetadataRecord::RetireNode { node_id: 7 }),
            ApplyOutcome::Ok
        );
        assert_eq!(
            image.retired_node_ids.iter().copied().collect::<Vec<_>>(),
            vec![1, 7]
        );
    }
}
