//! Replicas hosted by this broker. The ReplicaManager follows the metadata image: it opens a
//! partition's log when the controller assigns the partition here, updates leadership and ISR
//! as they change, and removes the log when the topic is deleted. Produce and fetch look
//! partitions up through a lock-free snapshot of the partition map.
//!
//! One task applies metadata images (`serve.rs`, off the async workers: opening logs is file
//! I/O). Whoever changed the metadata and needs the change hosted here awaits
//! [`ReplicaManager::wait_for_image`] instead of applying it itself.
//!
//! This layer gets the narrow handles it needs (the log manager, the metadata quorum for ISR
//! proposals and leader addresses), never the broker.

pub mod broker_clients;
pub mod client;
pub mod fetcher;
pub mod isr;
pub mod partition;
pub mod replication;
pub mod throttle;
pub mod transactions;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::dynamic::DynamicConfig;
use crate::log::manager::LogManager;
pub use crate::log::now_ms;
use crate::meta::image::MetadataImage;
use crate::quota::rate::WindowConfig;
pub use partition::{partition_error_code, Partition, PartitionError, PartitionState};
pub use transactions::{WriteFailed, Written};

/// Bytes a topic took in and served here. Counters only grow: they live as long as the topic
/// exists, whichever of its partitions this broker hosts or leads at the moment.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Record bytes appended as leader (duplicates of idempotent retries excluded).
    pub bytes_in: AtomicU64,
    /// Record bytes sent in fetch responses, to consumers and followers, once per response.
    pub bytes_out: AtomicU64,
}

/// ISR changes this broker made as leader, counted once applied (Kafka's IsrShrinksPerSec and
/// IsrExpandsPerSec).
#[derive(Debug, Default)]
pub struct IsrChanges {
    pub shrinks: AtomicU64,
    pub expands: AtomicU64,
}

/// Replication settings, with Kafka's names.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max: Duration,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits on the leader.
    pub fetch_wait_max: Duration,
    /// `replica.fetch.max.bytes` and `replica.fetch.response.max.bytes`.
    pub fetch_max_bytes: i32,
    pub fetch_response_max_bytes: i32,
    /// `inter.broker.listener.name`: followers reach leaders on it.
    pub inter_broker_listener: String,
    /// TLS and SASL towards the inter-broker listener of other brokers.
    pub inter_broker_security: crate::security::client::ClientSecurity,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            lag_time_max: Duration::from_secs(30),
            fetch_wait_max: Duration::from_millis(500),
            fetch_max_bytes: 1 << 20,
            fetch_response_max_bytes: 10 << 20,
            inter_broker_listener: "PLAINTEXT".to_string(),
            inter_broker_security: Default::default(),
        }
    }
}

/// The partitions of one topic hosted here.
#[derive(Clone)]
pub struct HostedTopic {
    pub topic_id: Uuid,
    pub partitions: HashMap<i32, Arc<Partition>>,
}

/// How many partition logs are opened at once when many are assigned together (startup).
const OPEN_THREADS: usize = 8;

/// A partition assigned here that has no open log yet.
struct ToOpen {
    topic: String,
    topic_id: Uuid,
    index: i32,
    config: Arc<crate::log::config::LogConfig>,
    state: PartitionState,
    /// Leader- and follower-throttled (`throttle.rs`).
    throttled: (bool, bool),
}

pub struct ReplicaManager {
    node_id: i32,
    logs: LogManager,
    /// The broker settings in effect (static with the image's dynamic configs over them): the
    /// topic defaults every hosted log's config is resolved against.
    configs: Arc<DynamicConfig>,
    pub settings: ReplicaSettings,
    hosted: ArcSwap<HashMap<String, HostedTopic>>,
    /// Serializes applying metadata images (never taken on the produce or fetch path), and
    /// holds the version of the last image applied, so an older one is never applied after.
    apply_lock: Mutex<u64>,
    /// The version of the last image applied, for [`Self::wait_for_image`]; `u64::MAX` once
    /// images are no longer applied (shutdown), so that nobody waits for one in vain.
    applied: watch::Sender<u64>,
    /// Per-topic byte counters, by topic name.
    counters: Mutex<HashMap<String, Arc<TopicCounters>>>,
    /// Follower fetchers, one per leader followed.
    pub fetchers: fetcher::FetcherManager,
    pub isr_changes: IsrChanges,
    /// Connections to other brokers for the coordinators' requests.
    pub brokers: broker_clients::BrokerClients,
    /// Replication throttles (KIP-73): the leader- and follower-side byte-rate quotas, set
    /// from the broker configs in effect with each image.
    pub quotas: throttle::ReplicationQuotas,
}

impl ReplicaManager {
    pub fn new(
        node_id: i32,
        logs: LogManager,
        configs: Arc<DynamicConfig>,
        settings: ReplicaSettings,
    ) -> Self {
        Self {
            brokers: broker_clients::BrokerClients::new(node_id, settings.clone()),
            node_id,
            logs,
            configs,
            settings,
            hosted: ArcSwap::from_pointee(HashMap::new()),
            apply_lock: Mutex::new(0),
            applied: watch::Sender::new(0),
            counters: Mutex::new(HashMap::new()),
            fetchers: fetcher::FetcherManager::default(),
            isr_changes: IsrChanges::default(),
            quotas: throttle::ReplicationQuotas::default(),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn logs(&self) -> &LogManager {
        &self.logs
    }

    /// The broker settings in effect with the latest image's dynamic configs.
    pub fn configs(&self) -> &Arc<DynamicConfig> {
        &self.configs
    }

    /// Waits (up to `timeout`) until an image of at least `version` has been applied here:
    /// the partitions it assigns to this broker are open and their leadership current.
    /// Returns whether it was; false at once after [`Self::stop_applying`].
    pub async fn wait_for_image(&self, version: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|v| *v >= version)).await;
        matches!(reached, Ok(Ok(v)) if *v != u64::MAX)
    }

    /// Images are no longer applied (the broker shuts down): waiters stop waiting.
    pub fn stop_applying(&self) {
        self.applied.send_replace(u64::MAX);
    }

    /// Every topic's byte counters, by name.
    pub fn topic_counters(&self) -> Vec<(String, Arc<TopicCounters>)> {
        let mut all: Vec<_> = self
            .counters
            .lock()
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn counters_for(&self, topic: &str) -> Arc<TopicCounters> {
        self.counters
            .lock()
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.hosted
            .load()
            .get(topic)
            .and_then(|t| t.partitions.get(&index))
            .cloned()
    }

    pub fn hosted(&self) -> Arc<HashMap<String, HostedTopic>> {
        self.hosted.load_full()
    }

    /// The partitions of `topic` this broker leads, with their leader epochs.
    pub fn led_partitions(&self, topic: &str) -> HashMap<i32, i32> {
        self.hosted
            .load()
            .get(topic)
            .map(|t| {
                t.partitions
                    .iter()
                    .filter(|(_, p)| p.is_leader())
                    .map(|(i, p)| (*i, p.leader_epoch()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Brings the hosted partitions in line with `image`: drops partitions of deleted (or
    /// re-created) topics, opens newly assigned ones, and updates leadership, ISR and configs.
    /// Blocking (file I/O): called by the one task that follows the metadata, on a blocking
    /// thread, and once at startup.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut applied = self.apply_lock.lock();
        if image.version < *applied {
            return;
        }
        *applied = image.version;
        self.apply_image_locked(image);
        self.counters
            .lock()
            .retain(|topic, _| image.topics.contains_key(topic));
        self.applied.send_if_modified(|v| {
            let changed = *v != u64::MAX;
            if changed {
                *v = image.version;
            }
            changed
        });
    }

    fn apply_image_locked(&self, image: &MetadataImage) {
        // First drop what is gone, so a re-created topic never reuses the old log.
        let mut next = self.drop_unassigned(image);
        let to_open = self.update_hosted(image, &next);
        // Opening a log is file I/O (files, index maps, producer state from the batches):
        // done in parallel, so a restart with many partitions does not wait on each in turn.
        for (o, opened) in self.open_all(to_open, now_ms()) {
            match opened {
                Ok(partition) => {
                    next.entry(o.topic)
                        .or_insert_with(|| HostedTopic {
                            topic_id: o.topic_id,
                            partitions: HashMap::new(),
                        })
                        .partitions
                        .insert(o.index, partition);
                }
                Err(e) => {
                    tracing::error!(topic = %o.topic, partition = o.index, error = %e,
                        "cannot open partition log; the partition stays offline here");
                }
            }
        }
        self.hosted.store(Arc::new(next));
    }

    /// Stops hosting partitions the image no longer assigns here (deleted or re-created
    /// topics, moved replicas) and deletes their logs. Returns what stays hosted.
    fn drop_unassigned(&self, image: &MetadataImage) -> HashMap<String, HostedTopic> {
        let current = self.hosted.load_full();
        let assigned_here = |name: &str, topic_id: Uuid, index: i32| {
            image.topics.get(name).is_some_and(|t| {
                t.topic_id == topic_id
                    && t.partitions
                        .iter()
                        .any(|p| p.partition == index && p.replicas.contains(&self.node_id))
            })
        };
        let mut kept: HashMap<String, HostedTopic> = HashMap::new();
        let mut removed = Vec::new();
        for (name, topic) in current.iter() {
            for (index, partition) in &topic.partitions {
                if assigned_here(name, topic.topic_id, *index) {
                    kept.entry(name.clone())
                        .or_insert_with(|| HostedTopic {
                            topic_id: topic.topic_id,
                            partitions: HashMap::new(),
                        })
                        .partitions
                        .insert(*index, partition.clone());
                } else {
                    removed.push(partition.clone());
                }
            }
        }
        if !removed.is_empty() {
            self.hosted.store(Arc::new(kept.clone()));
        }
        for partition in removed {
            partition.update_state(PartitionState {
                leader: -1,
                leader_epoch: partition.leader_epoch(),
                replicas: vec![],
                isr: vec![],
                partition_epoch: -1,
            });
            let tp = (partition.topic.to_string(), partition.index);
            if let Err(e) = self.logs.delete(&tp) {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "deleting partition log failed");
            }
        }
        kept
    }

    /// Brings the partitions hosted in `hosted` up to date with the image (configs,
    /// leadership, ISR) and returns those the image assigns here that are not open yet.
    fn update_hosted(
        &self,
        image: &MetadataImage,
        hosted: &HashMap<String, HostedTopic>,
    ) -> Vec<ToOpen> {
        let mut to_open = Vec::new();
        // A dynamic broker config change reaches every topic without an override of its own.
        let effective = self.configs.current(&image.broker_configs);
        // So do the replication throttle rates.
        let (leader_rate, follower_rate) = effective.replication_throttled_rates();
        let window = WindowConfig {
            samples: effective
                .get("replication.quota.window.num", 11usize)
                .max(1),
            window_ms: effective
                .get("replication.quota.window.size.seconds", 1i64)
                .clamp(1, i64::MAX / 1000)
                * 1000,
        };
        self.quotas.configure(leader_rate, follower_rate, window);
        for (name, topic) in &image.topics {
            let config = Arc::new(effective.topic_defaults.resolve(&topic.configs));
            for p in topic
                .partitions
                .iter()
                .filter(|p| p.replicas.contains(&self.node_id))
            {
                let state = PartitionState {
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    partition_epoch: p.partition_epoch,
                };
                let throttled = |key: &str| {
                    topic.configs.get(key).is_some_and(|spec| {
                        throttle::names_replica(spec, p.partition, self.node_id)
                    })
                };
                let (leader_throttled, follower_throttled) = (
                    throttled("leader.replication.throttled.replicas"),
                    throttled("follower.replication.throttled.replicas"),
                );
                match hosted
                    .get(name)
                    .and_then(|t| t.partitions.get(&p.partition))
                {
                    Some(partition) => {
                        partition.set_throttled(leader_throttled, follower_throttled);
                        if *partition.log.config() != *config {
                            partition.log.set_config(config.clone());
                        }
                        if partition.state() != state {
                            partition.update_state(state);
                        }
                    }
                    None => to_open.push(ToOpen {
                        topic: name.clone(),
                        topic_id: topic.topic_id,
                        index: p.partition,
                        config: config.clone(),
                        state,
                        throttled: (leader_throttled, follower_throttled),
                    }),
                }
            }
        }
        to_open
    }

    /// Opens partitions on up to `OPEN_THREADS` threads; results come back in input order.
    fn open_all(
        &self,
        to_open: Vec<ToOpen>,
        now: i64,
    ) -> Vec<(ToOpen, std::io::Result<Arc<Partition>>)> {
        let open_one = |o: &ToOpen| -> std::io::Result<Arc<Partition>> {
            let tp = (o.topic.clone(), o.index);
            let log = self
                .logs
                .get_or_open(&tp, o.topic_id, o.config.clone(), now)?;
            let partition = Partition::new(
                Arc::from(o.topic.as_str()),
                o.topic_id,
                o.index,
                log,
                self.node_id,
                o.state.clone(),
                self.counters_for(&o.topic),
            );
            partition.set_throttled(o.throttled.0, o.throttled.1);
            Ok(Arc::new(partition))
        };
        let threads = OPEN_THREADS.min(to_open.len());
        if threads <= 1 {
            return to_open
                .into_iter()
                .map(|o| {
                    let r = open_one(&o);
                    (o, r)
                })
                .collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<parking_lot::Mutex<Option<std::io::Result<Arc<Partition>>>>> = to_open
            .iter()
            .map(|_| parking_lot::Mutex::new(None))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(o) = to_open.get(i) else { break };
                    *results[i].lock() = Some(open_one(o));
                });
            }
        });
        to_open
            .into_iter()
            .zip(results)
            .map(|(o, r)| {
                let r = r
                    .into_inner()
                    .unwrap_or_else(|| Err(std::io::Error::other("partition was not opened")));
                (o, r)
            })
            .collect()
    }

    /// Removes partition directories that the image does not assign to this broker (topics
    /// deleted while it was down). Called once at startup, after `apply_image`.
    pub fn remove_stray_logs(&self) {
        let hosted = self.hosted.load_full();
        let on_disk = match self.logs.partitions_on_disk() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot list log directory");
                return;
            }
        };
        for tp in on_disk {
            let known = hosted
                .get(&tp.0)
                .is_some_and(|t| t.partitions.contains_key(&tp.1));
            if !known {
                tracing::info!(topic = %tp.0, partition = tp.1, "removing stray partition log");
                if let Err(e) = self.logs.delete(&tp) {
                    tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "removing stray log failed");
                }
            }
        }
    }
}
