//! Broker: the shared state every connection and handler works through — configuration, the
//! metadata quorum (and its image), the replicas hosted here, the group and transaction
//! coordinators, the request counters and the shutdown signal. Only the top of the stack (`server`, `api`,
//! `admin`, `serve`) sees it; the layers below get the narrow handles they need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::metrics::Metrics;
use crate::admin::readiness::NotReady;
use crate::api::fetch::session_cache::FetchSessionCache;
use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::meta::controller::{self, CreateDefaults, TopicSpec};
use crate::meta::image::MetadataImage;
use crate::meta::producer_ids::ProducerIdAllocator;
use crate::meta::MetadataQuorum;
use crate::replica::ReplicaManager;
use crate::share::SharePartitionManager;
use crate::txn::TransactionCoordinator;

/// How long a handler waits for a metadata change it made to be hosted here.
const HOSTED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Broker {
    pub config: Config,
    pub meta: MetadataQuorum,
    pub replicas: Arc<ReplicaManager>,
    pub producer_ids: Arc<ProducerIdAllocator>,
    pub groups: Arc<GroupCoordinator>,
    pub txns: Arc<TransactionCoordinator>,
    /// Share groups (KIP-932): their membership, the share-partitions led here, and the
    /// share coordinator's state store.
    pub shares: Arc<SharePartitionManager>,
    pub metrics: Metrics,
    /// KIP-227 incremental fetch sessions (`max.incremental.fetch.session.cache.slots`).
    pub fetch_sessions: FetchSessionCache,
    /// Client quotas in force here, and each client's usage (`quota`).
    pub quotas: crate::quota::QuotaManagers,
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
        replicas: Arc<ReplicaManager>,
        incarnation_id: uuid::Uuid,
    ) -> Arc<Self> {
        let producer_ids = Arc::new(ProducerIdAllocator::new(config.node_id));
        let groups = Arc::new(GroupCoordinator::new(
            config.kafka.group.clone(),
            replicas.clone(),
            meta.clone(),
        ));
        let shutdown = CancellationToken::new();
        let txns = Arc::new(TransactionCoordinator::new(
            config.kafka.txn.clone(),
            replicas.clone(),
            meta.clone(),
            groups.clone(),
            producer_ids.clone(),
            shutdown.clone(),
        ));
        let shares = Arc::new(SharePartitionManager::new(
            config.kafka.share.clone(),
            replicas.clone(),
            meta.clone(),
        ));
        Arc::new(Self {
            producer_ids,
            shares,
            groups,
            txns,
            metrics: Metrics::default(),
            fetch_sessions: FetchSessionCache::new(config.kafka.fetch_session_cache_slots),
            quotas: crate::quota::QuotaManagers::default(),
            config,
            meta,
            replicas,
            shutdown,
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

    /// The broker settings in effect: static ones with the image's dynamic broker configs
    /// over them. A lock-free snapshot, rebuilt only when those configs change.
    pub fn dynamic_config(&self) -> Arc<crate::config::dynamic::EffectiveConfig> {
        self.replicas
            .configs()
            .current(&self.image().broker_configs)
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

    /// Creates topics with the broker's defaults (`num.partitions`,
    /// `default.replication.factor`) and the log's config validation, in one proposal, and
    /// waits until those created are hosted here.
    pub async fn create_topics(
        &self,
        specs: &[TopicSpec],
        validate_only: bool,
    ) -> Vec<controller::Created> {
        let defaults = CreateDefaults {
            num_partitions: self.config.kafka.num_partitions,
            replication_factor: self.config.kafka.default_replication_factor,
        };
        let created = controller::create_topics(
            &self.meta,
            specs,
            defaults,
            crate::log::config::validate_topic_overrides,
            validate_only,
        )
        .await;
        if !validate_only && created.iter().any(|c| c.is_ok()) {
            self.wait_hosted().await;
        }
        created
    }

    /// Waits (bounded) until this broker hosts what the metadata says as of now: after a
    /// handler's proposal, so that its response reflects the change here.
    pub async fn wait_hosted(&self) -> bool {
        self.replicas
            .wait_for_image(self.meta.image().version, HOSTED_WAIT)
            .await
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }
}
