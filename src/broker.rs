//! Broker: the shared state every connection and handler works through — configuration, the
//! metadata quorum (and its image), the replicas hosted here, and the shutdown signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::meta::image::MetadataImage;
use crate::meta::producer_ids::ProducerIdAllocator;
use crate::meta::MetadataQuorum;
use crate::metrics::Metrics;
use crate::replica::fetcher::FetcherManager;
use crate::replica::ReplicaManager;

pub struct Broker {
    pub config: Config,
    pub meta: MetadataQuorum,
    pub replicas: ReplicaManager,
    pub producer_ids: ProducerIdAllocator,
    pub groups: GroupCoordinator,
    pub fetchers: FetcherManager,
    pub metrics: Metrics,
    /// Cancelled when the broker starts shutting down.
    pub shutdown: CancellationToken,
    ready: AtomicBool,
}

impl Broker {
    pub fn new(config: Config, meta: MetadataQuorum, replicas: ReplicaManager) -> Arc<Self> {
        Arc::new(Self {
            producer_ids: ProducerIdAllocator::new(config.node_id),
            groups: GroupCoordinator::new(config.kafka.group.clone()),
            fetchers: FetcherManager::default(),
            metrics: Metrics::default(),
            config,
            meta,
            replicas,
            shutdown: CancellationToken::new(),
            ready: AtomicBool::new(false),
        })
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The latest applied metadata image. Never blocks on Raft.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.meta.image()
    }

    /// The active controller's id, or -1 while there is none.
    pub fn controller_id(&self) -> i32 {
        self.meta.leader_id().map(|id| id as i32).unwrap_or(-1)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
