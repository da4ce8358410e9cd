//! Replicas hosted by this broker. The ReplicaManager follows the metadata image: it opens a
//! partition's log when the controller assigns the partition here, updates leadership and ISR
//! as they change, and removes the log when the topic is deleted. Produce and fetch look
//! partitions up through a lock-free snapshot of the partition map.

pub mod client;
pub mod fetcher;
pub mod isr;
pub mod partition;
pub mod producer_state;
pub mod replication;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::log::manager::LogManager;
use crate::log::TopicDefaults;
use crate::meta::image::MetadataImage;
pub use partition::{Partition, PartitionError, PartitionState};

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
}

pub struct ReplicaManager {
    node_id: i32,
    logs: LogManager,
    topic_defaults: TopicDefaults,
    hosted: ArcSwap<HashMap<String, HostedTopic>>,
    /// Serializes applying metadata images (never taken on the produce or fetch path), and
    /// holds the version of the last image applied, so an older one is never applied after.
    apply_lock: Mutex<u64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ReplicaManager {
    pub fn new(node_id: i32, logs: LogManager, topic_defaults: TopicDefaults) -> Self {
        Self {
            node_id,
            logs,
            topic_defaults,
            hosted: ArcSwap::from_pointee(HashMap::new()),
            apply_lock: Mutex::new(0),
        }
    }

    pub fn logs(&self) -> &LogManager {
        &self.logs
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

    /// Brings the hosted partitions in line with `image`: drops partitions of deleted (or
    /// re-created) topics, opens newly assigned ones, and updates leadership, ISR and configs.
    /// Idempotent; safe to call from several places.
    pub fn apply_image(&self, image: &MetadataImage) {
        let mut applied = self.apply_lock.lock();
        if image.version < *applied {
            return;
        }
        *applied = image.version;
        let current = self.hosted.load_full();
        let assigned_here = |name: &str, topic_id: Uuid, index: i32| {
            image.topics.get(name).is_some_and(|t| {
                t.topic_id == topic_id
                    && t.partitions
                        .iter()
                        .any(|p| p.partition == index && p.replicas.contains(&self.node_id))
            })
        };
        // First drop what is gone, so a re-created topic never reuses the old log.
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
        let now = now_ms();
        let mut next = kept;
        let mut to_open = Vec::new();
        for (name, topic) in &image.topics {
            let config = Arc::new(self.topic_defaults.resolve(&topic.configs));
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
                let hosted = next.get(name).and_then(|t| t.partitions.get(&p.partition));
                if let Some(hosted) = hosted {
                    if *hosted.log.config() != *config {
                        hosted.log.set_config(config.clone());
                    }
                    if hosted.state() != state {
                        hosted.update_state(state);
                    }
                    continue;
                }
                to_open.push(ToOpen {
                    topic: name.clone(),
                    topic_id: topic.topic_id,
                    index: p.partition,
                    config: config.clone(),
                    state,
                });
            }
        }
        // Opening a log is file I/O (files, index maps, producer state from the batches):
        // done in parallel, so a restart with many partitions does not wait on each in turn.
        for (o, opened) in self.open_all(to_open, now) {
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
            Ok(Arc::new(Partition::new(
                Arc::from(o.topic.as_str()),
                o.topic_id,
                o.index,
                log,
                self.node_id,
                o.state.clone(),
            )))
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
