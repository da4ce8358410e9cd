//! The metadata quorum: a Raft group (openraft) over the brokers' controller listeners whose
//! log holds every change to cluster state, and whose state machine builds the
//! [`MetadataImage`] that every API handler reads.
//!
//! [`MetadataQuorum`] is the whole public surface: start it, read the current image (cheap,
//! never blocks), subscribe to new images, and propose records. A proposal made on a node that
//! is not the Raft leader (the active controller) is forwarded to the leader.
//!
//! Files: `types.rs` (openraft type config), `wal.rs` + `log_store.rs` (durable Raft log),
//! `state_machine.rs` (image + snapshots), `wire.rs` (controller RPC format), `network.rs`
//! (RPC client), `rpc_server.rs` (controller listener), `controller_loop.rs` (the active
//! controller: broker fencing, leader elections), `membership.rs` (adding and removing quorum
//! members, status).

pub mod acl;
pub mod broker_configs;
mod change_proposal;
pub mod client_quotas;
pub mod controller;
mod controller_loop;
pub mod elections;
pub mod features;
pub mod group_configs;
pub mod image;
mod log_store;
mod membership;
mod network;
pub mod partition_change;
pub mod plane_security;
pub mod producer_ids;
pub mod reassignment;
mod rpc_server;
mod state_machine;
pub mod topic_name;
mod types;
mod wal;
mod wire;

#[cfg(test)]
mod controller_tests;
#[cfg(test)]
mod test_image;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, RaftError};
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub use controller_loop::ControllerSettings;
pub use image::{ApplyOutcome, MetadataImage, MetadataRecord};
pub use membership::{MembershipChange, MembershipError, QuorumStatus};

use log_store::LogStore;
use membership::{MembershipManager, MembershipReply};
use network::{CallError, NetworkFactory, PeerClient};
use rpc_server::RpcServer;
use state_machine::{MetaStateMachine, SnapshotStore};
use types::{ControllerNode, Raft};
use wire::{ProposalReply, Reply, RequestBody};

/// How a node joins the metadata quorum.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This node's id; also its Raft node id. Never reuse the id of a removed node.
    pub node_id: u64,
    /// Directory for the metadata log and snapshot, e.g. `<data-dir>/meta`; created if missing.
    pub dir: PathBuf,
    /// Where this node's controller listener binds.
    pub controller_listen: SocketAddr,
    /// Every voter: id -> `host:port` of its controller listener. Contains `node_id` itself.
    /// A node joining an existing cluster lists the current voters and itself; it does not
    /// initialize anything and waits to be added (`MetadataQuorum::add_learner`).
    pub voters: BTreeMap<u64, String>,
    /// What the active controller does while this node is the leader (fencing, elections).
    pub controller: ControllerSettings,
    /// TLS and authentication between controllers.
    pub security: plane_security::PlaneSecurity,
}

/// Why a proposal did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no controller available")]
    NoLeader,
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
    #[error("shutting down")]
    Shutdown,
}

/// Raft timing and log-compaction knobs (fixed in production; tests shrink them).
#[derive(Debug, Clone)]
struct Tuning {
    /// Build a snapshot after this many applied entries since the last one.
    snapshot_every: u64,
    /// Entries already in a snapshot that stay in the log, for slightly lagging followers.
    keep_after_snapshot: u64,
    /// Purge the log only when at least this many entries can go at once.
    purge_batch: u64,
    /// How long `propose` keeps trying (leader elections, forwarding).
    propose_timeout: Duration,
    /// How long membership changes keep trying (they wait for learners to catch up).
    membership_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            snapshot_every: 1024,
            keep_after_snapshot: 256,
            purge_batch: 64,
            propose_timeout: Duration::from_secs(15),
            membership_timeout: Duration::from_secs(30),
        }
    }
}

/// Pause between attempts while a leader is being elected or a forward target is unreachable.
const PROPOSE_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// A follower waits at least this long to apply an entry the leader reported committed.
const MIN_APPLY_WAIT: Duration = Duration::from_secs(5);
/// How long a fresh lowest-id node asks its peers whether they already form a cluster.
const INIT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const LOCK_FILE: &str = "LOCK";

fn raft_config(tuning: &Tuning) -> anyhow::Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: "gregor-metadata".into(),
        heartbeat_interval: 200,
        election_timeout_min: 700,
        election_timeout_max: 1000,
        // A full snapshot (the whole image) is sent in one RPC.
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
        max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
        purge_batch_size: tuning.purge_batch,
        replication_lag_threshold: 5_000,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().context("openraft config")?))
}

/// Handle to this node's member of the metadata quorum. Cheap to clone.
#[derive(Clone)]
pub struct MetadataQuorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    raft: Raft,
    /// TLS and authentication between controllers.
    security: Arc<plane_security::PlaneSecurity>,
    voters: BTreeMap<u64, String>,
    controller_addr: SocketAddr,
    tuning: Tuning,
    image_rx: watch::Receiver<Arc<MetadataImage>>,
    applied_rx: watch::Receiver<Option<u64>>,
    log_store: LogStore,
    snapshots: Arc<SnapshotStore>,
    membership: Arc<MembershipManager>,
    /// When an active controller last reached this node (followers and learners).
    leader_contact: Arc<LeaderContact>,
    server: tokio::sync::Mutex<Option<RpcServer>>,
    /// Stops the controller loop.
    controller_stop: watch::Sender<bool>,
    controller_task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutting_down: AtomicBool,
    /// Held (set to true when finished) by `shutdown`, which runs once.
    shutdown_done: tokio::sync::Mutex<bool>,
    /// An exclusive lock on `<dir>/LOCK` while running.
    dir_lock: parking_lot::Mutex<Option<File>>,
}

enum Listen {
    Addr(SocketAddr),
    Bound(std::net::TcpListener),
}

impl MetadataQuorum {
    /// Opens the on-disk log/vote/snapshot, starts openraft and the controller RPC listener.
    /// Fresh start: the voter with the lowest id in `voters` calls raft.initialize(voters)
    /// (others wait to be contacted); a restart never re-initializes and recovers everything
    /// from disk.
    pub async fn start(cfg: MetaConfig) -> anyhow::Result<Self> {
        let addr = cfg.controller_listen;
        Self::start_inner(cfg, Listen::Addr(addr), Tuning::default()).await
    }

    /// Like [`MetadataQuorum::start`], serving an already bound controller listener (its
    /// address wins over `cfg.controller_listen`). Lets callers pick ephemeral ports race-free.
    #[allow(dead_code)] // API for tests and embedders; the broker binary binds by address.
    pub async fn start_with_listener(
        cfg: MetaConfig,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<Self> {
        Self::start_inner(cfg, Listen::Bound(listener), Tuning::default()).await
    }

    async fn start_inner(cfg: MetaConfig, listen: Listen, tuning: Tuning) -> anyhow::Result<Self> {
        let Some(&lowest_voter) = cfg.voters.keys().next() else {
            bail!("metadata quorum: no voters configured");
        };
        if !cfg.voters.contains_key(&cfg.node_id) {
            bail!(
                "metadata quorum: node {} is not among the voters",
                cfg.node_id
            );
        }
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating {}", cfg.dir.display()))?;
        let lock = lock_dir(&cfg.dir)?;

        let dir = cfg.dir.clone();
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            let log = LogStore::open(&dir).context("opening the metadata log")?;
            let sm = MetaStateMachine::open(&dir).context("opening the metadata snapshot")?;
            anyhow::Ok((log, sm))
        })
        .await??;

        let listener = match listen {
            Listen::Addr(addr) => TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the controller listener on {addr}"))?,
            Listen::Bound(l) => {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)?
            }
        };
        let controller_addr = listener.local_addr()?;
        let security = Arc::new(cfg.security.clone());

        let image_rx = state_machine.subscribe_image();
        let applied_rx = state_machine.subscribe_applied();
        let snapshots = state_machine.snapshot_store();
        let raft = Raft::build(
            cfg.node_id,
            raft_config(&tuning)?,
            NetworkFactory::new(cfg.node_id, security.clone()),
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| anyhow!("starting the metadata Raft: {e}"))?;
        let membership = Arc::new(MembershipManager::new(
            cfg.node_id,
            raft.clone(),
            image_rx.clone(),
        ));
        let leader_contact = Arc::new(LeaderContact::new());
        let server = RpcServer::spawn(
            listener,
            rpc_server::Context {
                node_id: cfg.node_id,
                raft: raft.clone(),
                membership: membership.clone(),
                leader_contact: leader_contact.clone(),
                security: security.clone(),
            },
        );
        raft.run();
        let (controller_stop, stop_rx) = watch::channel(false);
        let controller_task = controller_loop::spawn(
            raft.clone(),
            cfg.node_id,
            image_rx.clone(),
            cfg.controller.clone(),
            stop_rx,
        );

        let quorum = Self {
            inner: Arc::new(Inner {
                node_id: cfg.node_id,
                security: security.clone(),
                raft,
                voters: cfg.voters.clone(),
                controller_addr,
                tuning,
                image_rx,
                applied_rx,
                log_store,
                snapshots,
                membership,
                leader_contact,
                server: tokio::sync::Mutex::new(Some(server)),
                controller_stop,
                controller_task: tokio::sync::Mutex::new(Some(controller_task)),
                shutting_down: AtomicBool::new(false),
                shutdown_done: tokio::sync::Mutex::new(false),
                dir_lock: parking_lot::Mutex::new(Some(lock)),
            }),
        };
        if let Err(e) = quorum.initialize_if_fresh(&cfg, lowest_voter).await {
            if let Err(stop) = quorum.shutdown().await {
                tracing::warn!(error = %stop, "metadata quorum: shutdown after failed start");
            }
            return Err(e);
        }
        tracing::info!(
            node_id = cfg.node_id,
            %controller_addr,
            voters = ?cfg.voters,
            "metadata quorum started"
        );
        Ok(quorum)
    }

    async fn initialize_if_fresh(&self, cfg: &MetaConfig, lowest_voter: u64) -> anyhow::Result<()> {
        let raft = &self.inner.raft;
        if raft.is_initialized().await? {
            let metrics = raft.metrics();
            let membership = metrics.borrow_watched().membership_config.clone();
            let known: BTreeMap<u64, String> = membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect();
            if !known.is_empty() && known != cfg.voters {
                tracing::warn!(
                    stored = ?known,
                    configured = ?cfg.voters,
                    "metadata quorum: configured voters differ from the stored membership; using the stored one"
                );
            }
            return Ok(());
        }
        if cfg.node_id != lowest_voter {
            tracing::info!(
                "metadata quorum: fresh node; waiting for node {lowest_voter} to form the cluster, or to be added to a running one (gregor admin add-learner {} {})",
                cfg.node_id,
                self.inner.controller_addr
            );
            return Ok(());
        }
        if let Some(peer) = self.probe_for_cluster(cfg).await {
            tracing::warn!(
                "metadata quorum: node {peer} already belongs to a cluster; not initializing a new one. This node waits to be added (gregor admin add-learner {} {})",
                cfg.node_id,
                self.inner.controller_addr
            );
            return Ok(());
        }
        let members: BTreeMap<u64, ControllerNode> = cfg
            .voters
            .iter()
            .map(|(id, addr)| (*id, ControllerNode::new(addr.clone())))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!("metadata quorum: initialized a new cluster");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(anyhow!("initializing the metadata quorum: {e}")),
        }
    }

    /// Asks every other configured voter, briefly, whether it already belongs to a cluster.
    /// Returns one that does. Unreachable or fresh peers do not count.
    async fn probe_for_cluster(&self, cfg: &MetaConfig) -> Option<u64> {
        let probes = cfg
            .voters
            .iter()
            .filter(|(id, _)| **id != cfg.node_id)
            .map(|(id, addr)| {
                let mut client =
                    PeerClient::new(cfg.node_id, *id, addr.clone(), self.inner.security.clone());
                async move {
                    match client
                        .call(RequestBody::Probe, None, INIT_PROBE_TIMEOUT)
                        .await
                    {
                        Ok(Reply::Probe {
                            initialized: true, ..
                        }) => Some(*id),
                        _ => None,
                    }
                }
            });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .next()
    }

    /// This node's id.
    #[allow(dead_code)] // API for tests and embedders.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The address the controller listener is bound to.
    #[allow(dead_code)] // API for tests and embedders.
    pub fn controller_addr(&self) -> SocketAddr {
        self.inner.controller_addr
    }

    /// The current metadata image. Cheap; never blocks on Raft.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image_rx.borrow().clone()
    }

    /// A receiver that sees every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image_rx.clone()
    }

    /// Proposes a record; returns once it is committed AND applied locally (so `self.image()`
    /// reflects it). If this node is not the Raft leader, forwards the proposal to the leader
    /// over the controller RPC and then waits until the local state machine has applied at
    /// least that log index.
    ///
    /// A proposal is retried while no leader is known or the leader cannot be reached, for up to
    /// 15 s. It is never resent once it may have reached a leader: if that exchange fails, the
    /// result is `Unavailable` and the record may or may not have been applied.
    pub async fn propose(&self, record: MetadataRecord) -> Result<ApplyOutcome, ProposeError> {
        let deadline = Instant::now() + self.inner.tuning.propose_timeout;
        let mut last_problem: Option<String>;
        loop {
            if self.is_shutting_down() {
                return Err(ProposeError::Shutdown);
            }
            match self.inner.raft.client_write(record.clone()).await {
                Ok(resp) => {
                    self.wait_applied(resp.log_id.index, deadline).await?;
                    return Ok(resp.data);
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    match fwd.leader_id {
                        Some(leader) if leader != self.inner.node_id => {
                            let addr = fwd.leader_node.map(|n| n.addr);
                            match self.forward(leader, addr, &record, deadline).await {
                                Forwarded::Applied { index, outcome } => {
                                    self.wait_applied(index, deadline).await?;
                                    return Ok(outcome);
                                }
                                Forwarded::NotDelivered(why) => last_problem = Some(why),
                                Forwarded::Failed(why) => {
                                    return Err(ProposeError::Unavailable(why))
                                }
                            }
                        }
                        _ => last_problem = None,
                    }
                }
                Err(RaftError::APIError(e)) => {
                    return Err(ProposeError::Unavailable(e.to_string()));
                }
                Err(RaftError::Fatal(e)) => {
                    return Err(if self.is_shutting_down() {
                        ProposeError::Shutdown
                    } else {
                        ProposeError::Unavailable(e.to_string())
                    });
                }
            }
            if Instant::now() + PROPOSE_RETRY_INTERVAL >= deadline {
                return Err(match last_problem {
                    None => ProposeError::NoLeader,
                    Some(why) => ProposeError::Unavailable(why),
                });
            }
            tokio::time::sleep(PROPOSE_RETRY_INTERVAL).await;
        }
    }

    /// Sends `record` to `leader`'s controller listener.
    async fn forward(
        &self,
        leader: u64,
        addr: Option<String>,
        record: &MetadataRecord,
        deadline: Instant,
    ) -> Forwarded {
        let Some(addr) = addr.or_else(|| self.inner.voters.get(&leader).cloned()) else {
            return Forwarded::NotDelivered(format!("no address known for leader {leader}"));
        };
        let mut client = PeerClient::new(
            self.inner.node_id,
            leader,
            addr,
            self.inner.security.clone(),
        );
        let ttl = deadline.saturating_duration_since(Instant::now());
        let body = RequestBody::ForwardProposal(record.clone());
        match client.call(body, None, ttl).await {
            Ok(Reply::Proposal(ProposalReply::Applied { index, outcome })) => {
                Forwarded::Applied { index, outcome }
            }
            Ok(Reply::Proposal(ProposalReply::NotLeader { .. })) => {
                Forwarded::NotDelivered(format!("node {leader} is no longer the leader"))
            }
            Ok(Reply::Proposal(ProposalReply::Failed(why))) => Forwarded::Failed(why),
            Ok(other) => Forwarded::Failed(format!("unexpected reply from the leader: {other:?}")),
            Err(e @ (CallError::Connect(_) | CallError::Refused(_))) => {
                Forwarded::NotDelivered(format!("leader {leader}: {e}"))
            }
            Err(e @ (CallError::Io(_) | CallError::Timeout)) => Forwarded::Failed(format!(
                "forwarding to leader {leader}: {e}; the proposal may or may not have been applied"
            )),
        }
    }

    /// Waits until the local state machine has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ProposeError> {
        let deadline = deadline.max(Instant::now() + MIN_APPLY_WAIT);
        let mut applied = self.inner.applied_rx.clone();
        let reached = async move {
            applied
                .wait_for(|a| a.is_some_and(|a| a >= index))
                .await
                .map(|_| ())
        };
        match tokio::time::timeout_at(deadline, reached).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ProposeError::Shutdown),
            Err(_) => Err(ProposeError::Unavailable(format!(
                "entry {index} committed but not applied locally in time"
            ))),
        }
    }

    /// The current Raft leader, i.e. the active controller, as this node knows it.
    pub fn leader_id(&self) -> Option<u64> {
        self.inner
            .raft
            .server_metrics()
            .borrow_watched()
            .current_leader
    }

    /// Whether this node's metadata is known to be current: it is the active controller and a
    /// quorum acknowledged it within `max_age`, or it is a single-node quorum, or an active
    /// controller reached it within `max_age` and it has applied everything it knows to be
    /// committed. A node that was paused or cut off fails this until the controller reaches it
    /// again, so it stops answering as a coordinator from a stale view.
    pub fn in_contact(&self, max_age: Duration) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader.is_none() {
            return false;
        }
        if m.current_leader == Some(self.inner.node_id) {
            let single = m.membership_config.membership().voter_ids().count() <= 1;
            return single
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|at| openraft::Instant::elapsed(&**at) <= max_age);
        }
        let caught_up = match (&m.last_applied, &m.local_committed) {
            (_, None) => true,
            (Some(applied), Some(committed)) => applied.index >= committed.index,
            (None, Some(_)) => false,
        };
        caught_up && self.inner.leader_contact.age() <= max_age
    }

    /// Waits until some leader is known and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a metadata leader is known")
            .await
            .map_err(|e| anyhow!("no metadata quorum leader within {timeout:?}: {e}"))?;
        metrics
            .current_leader
            .ok_or_else(|| anyhow!("no metadata quorum leader"))
    }

    /// Adds `node_id` (controller listener at `address`) to the quorum as a learner.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: String,
    ) -> Result<String, MembershipError> {
        self.change_membership(MembershipChange::AddLearner { node_id, address })
            .await
    }

    /// Promotes learner `node_id` to voter, once it has caught up.
    pub async fn promote_voter(&self, node_id: u64) -> Result<String, MembershipError> {
        self.change_membership(MembershipChange::PromoteVoter { node_id })
            .await
    }

    /// Removes voter or learner `node_id` from the quorum for good (its id is retired).
    pub async fn remove_node(&self, node_id: u64) -> Result<String, MembershipError> {
        self.change_membership(MembershipChange::RemoveNode { node_id })
            .await
    }

    /// Runs a membership change on the leader (forwarding it there over the controller RPC if
    /// this node is not the leader) and returns what was done. Changes are idempotent, so they
    /// are retried while no leader is known or the leader cannot be reached.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<String, MembershipError> {
        membership::validate(&change).map_err(MembershipError::Refused)?;
        let deadline = Instant::now() + self.inner.tuning.membership_timeout;
        let mut last_problem: Option<String> = None;
        loop {
            if self.is_shutting_down() {
                return Err(MembershipError::Shutdown);
            }
            let reply = match self.leader_id() {
                Some(leader) if leader == self.inner.node_id => {
                    Some(self.inner.membership.apply(&change, deadline).await)
                }
                Some(leader) => {
                    let ttl = deadline.saturating_duration_since(Instant::now());
                    match self.leader_addr(leader) {
                        None => {
                            last_problem = Some(format!("no address known for leader {leader}"));
                            None
                        }
                        Some(addr) => {
                            let mut client = PeerClient::new(
                                self.inner.node_id,
                                leader,
                                addr,
                                self.inner.security.clone(),
                            );
                            let body = RequestBody::Membership(change.clone());
                            match client.call(body, None, ttl).await {
                                Ok(Reply::Membership(reply)) => Some(reply),
                                Ok(other) => Some(MembershipReply::Failed(format!(
                                    "unexpected reply from the leader: {other:?}"
                                ))),
                                Err(e) => {
                                    last_problem = Some(format!("leader {leader}: {e}"));
                                    None
                                }
                            }
                        }
                    }
                }
                None => None,
            };
            match reply {
                Some(MembershipReply::Done(what)) => return Ok(what),
                Some(MembershipReply::Refused(why)) => return Err(MembershipError::Refused(why)),
                Some(MembershipReply::Failed(why)) => last_problem = Some(why),
                Some(MembershipReply::NotLeader { .. }) | None => {}
            }
            if Instant::now() + PROPOSE_RETRY_INTERVAL >= deadline {
                return Err(match last_problem {
                    None => MembershipError::NoLeader,
                    Some(why) => MembershipError::Unavailable(why),
                });
            }
            tokio::time::sleep(PROPOSE_RETRY_INTERVAL).await;
        }
    }

    /// The controller address of `leader`: from the Raft membership, else the configuration.
    fn leader_addr(&self, leader: u64) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let from_membership = metrics
            .borrow_watched()
            .membership_config
            .get_node(&leader)
            .map(|n| n.addr.clone());
        from_membership.or_else(|| self.inner.voters.get(&leader).cloned())
    }

    /// This node's view of the quorum: leader, term, voters, learners, log indexes, and on the
    /// leader the replication progress of every member.
    pub fn status(&self) -> QuorumStatus {
        self.inner.membership.status()
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Stops Raft and the controller listener, flushes and closes the log. Idempotent.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let mut done = self.inner.shutdown_done.lock().await;
        if *done {
            return Ok(());
        }
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.controller_stop.send_replace(true);
        if let Some(task) = self.inner.controller_task.lock().await.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "controller loop failed");
            }
        }
        let raft_result = self.inner.raft.shutdown().await;
        if let Some(server) = self.inner.server.lock().await.take() {
            server.stop().await;
        }
        self.inner.snapshots.close().await;
        let log = self.inner.log_store.clone();
        tokio::task::spawn_blocking(move || log.close()).await?;
        drop(self.inner.dir_lock.lock().take());
        *done = true;
        tracing::info!(node_id = self.inner.node_id, "metadata quorum stopped");
        raft_result.map_err(|e| anyhow!("stopping the metadata Raft: {e}"))
    }
}

enum Forwarded {
    Applied {
        index: u64,
        outcome: ApplyOutcome,
    },
    /// The leader surely did not propose it; try again.
    NotDelivered(String),
    /// The leader may have proposed it; do not resend.
    Failed(String),
}

/// Takes an exclusive lock on `<dir>/LOCK`, so two processes never share a metadata log.
fn lock_dir(dir: &std::path::Path) -> anyhow::Result<File> {
    Ok(crate::durable::lock_dir(dir, LOCK_FILE)?)
}

/// When an active controller last reached this node over Raft (any AppendEntries it did not
/// reject as stale). Lock-free: written by the RPC server, read by request handlers.
pub(crate) struct LeaderContact {
    origin: Instant,
    /// Milliseconds after `origin`, plus one; 0 = never.
    last_ms: std::sync::atomic::AtomicU64,
}

impl LeaderContact {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.last_ms.fetch_max(ms, Ordering::Release);
    }

    /// How long ago the last contact was (`Duration::MAX` when there was none).
    fn age(&self) -> Duration {
        match self.last_ms.load(Ordering::Acquire) {
            0 => Duration::MAX,
            ms => self
                .origin
                .elapsed()
                .saturating_sub(Duration::from_millis(ms - 1)),
        }
    }
}
