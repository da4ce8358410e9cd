//! Broker: the shared state every connection and handler works through — configuration, the
//! metadata quorum (and its image), the replicas hosted here, and the shutdown signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::meta::image::MetadataImage;
use crate::meta::producer_ids::ProducerIdAllocator;
use crate::meta::MetadataQuorum;
use crate::admin::metrics::Metrics;
use crate::admin::readiness::NotReady;
use crate::replica::fetcher::FetcherManager;
use crate::replica::ReplicaManager;

/// How recently the active controller must have reached a broker (or, on the controller, a
/// quorum acknowledged it) for the broker to act as a group coordinator: ten Raft heartbeats.
pub const COORDINATOR_CONTACT: Duration = Duration::from_secs(2);

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
    /// This process's registration: a restarted broker registers with a new one.
    pub incarnation_id: uuid::Uuid,
    /// Set once the listeners serve, cleared at shutdown (see `readiness`).
    serving: AtomicBool,
}

impl Broker {
    pub fn new(
        config: Config,
        meta: MetadataQuorum,
        replicas: ReplicaManager,
        incarnation_id: uuid::Uuid,
    ) -> Arc<Self> {
        Arc::new(Self {
            producer_ids: ProducerIdAllocator::new(config.node_id),
            groups: GroupCoordinator::new(config.kafka.group.clone()),
            fetchers: FetcherManager::default(),
            metrics: Metrics::default(),
            config,
            meta,
            replicas,
            shutdown: CancellationToken::new(),
            incarnation_id,
            serving: AtomicBool::new(false),
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

    /// Whether `/health/ready` should say yes, and if not why (see `readiness`).
    pub fn readiness(&self) -> Result<(), NotReady> {
        if !self.serving.load(Ordering::Acquire) {
            return Err(NotReady::Starting);
        }
        crate::admin::readiness::check(
            &self.image(),
            self.node_id(),
            self.incarnation_id,
            self.meta.leader_id().is_some(),
        )
    }

    /// Whether this broker coordinates `group` now (see `GroupCoordinator::check_owner`).
    /// A broker whose metadata may be stale (paused, or cut off from the controller for
    /// longer than `COORDINATOR_CONTACT`) answers NOT_COORDINATOR rather than serve a
    /// group whose coordination may have moved on without it: clients then look the
    /// coordinator up again.
    pub fn check_coordinator(&self, group: &str) -> Result<(), ResponseError> {
        if !self.meta.in_contact(COORDINATOR_CONTACT) {
            return Err(ResponseError::NotCoordinator);
        }
        self.groups.check_owner(&self.replicas, group)
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }
}
