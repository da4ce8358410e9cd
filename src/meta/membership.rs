//! Changes to the metadata quorum's membership (add a learner, promote it to voter, remove a
//! node) and the quorum status report.
//!
//! Changes run on the leader, one at a time (a lock, plus openraft's compare-and-set on the
//! membership log id). A node that is not the leader forwards the change over the controller
//! RPC (see `MetadataQuorum::change_membership`). Every change is idempotent, so a retry after
//! a lost reply is safe.
//!
//! Node ids are never reused: removing a node first commits `RetireNode`, which records the id
//! in the image for good, and adding a retired id is refused. Promotion waits for the learner
//! to catch up, and neither promotion nor removal is allowed to leave the voters without a live
//! majority.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Instant as _, Precondition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::image::{ApplyOutcome, MetadataImage, MetadataRecord};
use super::types::{ControllerNode, NodeId, Raft, StoredMembership, TypeConfig};

/// A change of the metadata quorum's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a node as a learner: it receives the metadata log but does not vote.
    AddLearner { node_id: u64, address: String },
    /// Promotes a learner to voter once it has caught up with the metadata log.
    PromoteVoter { node_id: u64 },
    /// Removes a voter or learner for good; its id is retired and never used again.
    RemoveNode { node_id: u64 },
}

/// Why a membership change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("no controller available")]
    NoLeader,
    /// The change is not allowed (a removed id, an unknown node, a learner that has not caught
    /// up, no live majority afterwards, ...). Nothing changed.
    #[error("{0}")]
    Refused(String),
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
    #[error("shutting down")]
    Shutdown,
}

/// The leader's answer to a membership change.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum MembershipReply {
    /// Done (or already so); a human-readable description.
    Done(String),
    /// The receiver is not the leader; nothing changed.
    NotLeader { leader_id: Option<NodeId> },
    /// Not allowed; nothing changed.
    Refused(String),
    /// Failed part way or timed out; retrying is safe.
    Failed(String),
}

/// One node's view of the metadata quorum, for `GET /raft/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: u64,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    /// The active controller as this node knows it.
    pub leader: Option<u64>,
    pub term: u64,
    /// Voter id -> controller address.
    pub voters: BTreeMap<u64, String>,
    /// Learner id -> controller address.
    pub learners: BTreeMap<u64, String>,
    /// True while a membership change is in its joint configuration.
    pub joint: bool,
    /// Whether the current membership has been committed.
    pub membership_committed: bool,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Ids removed from the quorum; never used again.
    pub retired_node_ids: Vec<u64>,
    /// Registered brokers that are fenced.
    pub fenced_brokers: Vec<i32>,
    /// Only on the leader: per node, the last log index known to be replicated to it.
    pub matched_index: Option<BTreeMap<u64, Option<u64>>>,
    /// Only on the leader: per node, milliseconds since it last acknowledged the leader.
    pub last_ack_ms: Option<BTreeMap<u64, Option<u64>>>,
}

/// How long promotion waits for a learner to catch up before refusing.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// A voter that acknowledged the leader within this long counts as live for majority checks.
const LIVE_ACK: Duration = Duration::from_secs(3);

/// Runs membership changes on this node while it is the leader.
pub(super) struct MembershipManager {
    node_id: NodeId,
    raft: Raft,
    images: watch::Receiver<Arc<MetadataImage>>,
    lock: tokio::sync::Mutex<()>,
}

impl MembershipManager {
    pub(super) fn new(
        node_id: NodeId,
        raft: Raft,
        images: watch::Receiver<Arc<MetadataImage>>,
    ) -> Self {
        Self {
            node_id,
            raft,
            images,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn membership(&self) -> Arc<StoredMembership> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone()
    }

    fn not_leader(&self) -> Option<MembershipReply> {
        let leader = self.raft.metrics().borrow_watched().current_leader;
        (leader != Some(self.node_id)).then_some(MembershipReply::NotLeader { leader_id: leader })
    }

    /// Applies `change`, which must be valid input (see `validate`), if this node is the leader.
    pub(super) async fn apply(
        &self,
        change: &MembershipChange,
        deadline: Instant,
    ) -> MembershipReply {
        let Ok(_serial) = tokio::time::timeout_at(deadline, self.lock.lock()).await else {
            return MembershipReply::Failed("another membership change is still running".into());
        };
        if let Some(reply) = self.not_leader() {
            return reply;
        }
        let reply = match change {
            MembershipChange::AddLearner { node_id, address } => {
                self.add_learner(*node_id, address, deadline).await
            }
            MembershipChange::PromoteVoter { node_id } => self.promote(*node_id, deadline).await,
            MembershipChange::RemoveNode { node_id } => self.remove(*node_id, deadline).await,
        };
        match &reply {
            MembershipReply::Done(what) => tracing::info!(change = ?change, "{what}"),
            other => tracing::warn!(change = ?change, reply = ?other, "membership change not done"),
        }
        reply
    }

    async fn add_learner(&self, id: NodeId, address: &str, deadline: Instant) -> MembershipReply {
        if self.images.borrow().retired_node_ids.contains(&id) {
            return MembershipReply::Refused(retired_message(id));
        }
        let m = self.membership();
        if let Some(node) = m.get_node(&id) {
            let role = if is_voter(&m, id) { "voter" } else { "learner" };
            return if node.addr == address {
                MembershipReply::Done(format!("node {id} is already a {role} at {address}"))
            } else {
                MembershipReply::Refused(format!(
                    "node {id} is already a {role} at {}; a node's address cannot be changed",
                    node.addr
                ))
            };
        }
        let node = ControllerNode::new(address);
        match tokio::time::timeout_at(deadline, self.raft.add_learner(id, node, false)).await {
            Ok(Ok(_)) => {
                MembershipReply::Done(format!("node {id} added as a learner at {address}"))
            }
            Ok(Err(e)) => write_error(e),
            Err(_) => MembershipReply::Failed("timed out adding the learner".into()),
        }
    }

    async fn promote(&self, id: NodeId, deadline: Instant) -> MembershipReply {
        let m = self.membership();
        if is_voter(&m, id) {
            return MembershipReply::Done(format!("node {id} is already a voter"));
        }
        let Some(node) = m.get_node(&id).cloned() else {
            if self.images.borrow().retired_node_ids.contains(&id) {
                return MembershipReply::Refused(retired_message(id));
            }
            return MembershipReply::Refused(format!(
                "node {id} is not a learner; add it as a learner first"
            ));
        };
        if let Err(why) = self.wait_caught_up(id, deadline).await {
            return MembershipReply::Refused(format!(
                "learner {id} has not caught up with the metadata log ({why}); is it running and reachable at {}?",
                node.addr
            ));
        }
        let mut voters: BTreeSet<NodeId> = m.voter_ids().collect();
        voters.insert(id);
        if let Err(why) = self.check_live_majority(&voters, Some(id)) {
            return MembershipReply::Refused(why);
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        match self.change(change, &m, deadline).await {
            None => MembershipReply::Done(format!("node {id} promoted to voter")),
            Some(reply) => reply,
        }
    }

    async fn remove(&self, id: NodeId, deadline: Instant) -> MembershipReply {
        let m = self.membership();
        let voter = is_voter(&m, id);
        if m.get_node(&id).is_none() {
            return if self.images.borrow().retired_node_ids.contains(&id) {
                MembershipReply::Done(format!("node {id} was already removed"))
            } else {
                MembershipReply::Refused(format!(
                    "node {id} is not a member of the metadata quorum"
                ))
            };
        }
        if voter {
            let remaining: BTreeSet<NodeId> = m.voter_ids().filter(|v| *v != id).collect();
            if remaining.is_empty() {
                return MembershipReply::Refused(format!("node {id} is the last voter"));
            }
            if let Err(why) = self.check_live_majority(&remaining, None) {
                return MembershipReply::Refused(format!("removing node {id}: {why}"));
            }
        }
        // Retire the id first: once the membership no longer lists the node, nothing else
        // would remember that the id was used.
        let retire = self
            .raft
            .client_write(MetadataRecord::RetireNode { node_id: id });
        match tokio::time::timeout_at(deadline, retire).await {
            Ok(Ok(resp)) if resp.data == ApplyOutcome::Ok => {}
            Ok(Ok(resp)) => {
                return MembershipReply::Failed(format!("retiring node {id}: {:?}", resp.data))
            }
            Ok(Err(e)) => return write_error(e),
            Err(_) => return MembershipReply::Failed(format!("timed out retiring node {id}")),
        }
        let ids = BTreeSet::from([id]);
        let change = if voter {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        match self.change(change, &m, deadline).await {
            None => MembershipReply::Done(format!(
                "node {id} removed from the metadata quorum; its id is retired (stop that node now)"
            )),
            // The id is retired already, so something did change: retrying finishes the job.
            Some(MembershipReply::Refused(why)) => MembershipReply::Failed(format!(
                "node {id} is retired but still a member ({why}); retry the removal"
            )),
            Some(reply) => reply,
        }
    }

    /// Proposes a membership change based on the observed membership `m`; None when done.
    async fn change(
        &self,
        change: ChangeMembers<NodeId, ControllerNode>,
        m: &StoredMembership,
        deadline: Instant,
    ) -> Option<MembershipReply> {
        let precondition = Precondition::<TypeConfig>::LastMembershipLogId {
            last_membership_log_id: *m.log_id(),
        };
        let write = self
            .raft
            .change_membership_if(change, false, [precondition]);
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(write_error(e)),
            Err(_) => Some(MembershipReply::Failed(
                "timed out waiting for the membership change to commit".into(),
            )),
        }
    }

    /// Waits until the leader has replicated its current log to learner `id`.
    async fn wait_caught_up(&self, id: NodeId, deadline: Instant) -> Result<(), String> {
        let until = deadline.min(Instant::now() + CATCH_UP_WAIT);
        let metrics = self.raft.metrics();
        let target = metrics.borrow_watched().last_log_index;
        loop {
            let matched = {
                let m = metrics.borrow_watched();
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned())
                    .flatten()
                    .map(|l| l.index)
            };
            if matched >= target {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "replicated up to {} of {}",
                    matched.map_or("nothing".to_string(), |i| i.to_string()),
                    target.map_or("-".to_string(), |i| i.to_string())
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses a voter set without a live majority: the leader itself, nodes that acknowledged
    /// the leader recently, and `known_live` (a learner that just caught up).
    fn check_live_majority(
        &self,
        voters: &BTreeSet<NodeId>,
        known_live: Option<NodeId>,
    ) -> Result<(), String> {
        let acked = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.heartbeat.clone().unwrap_or_default()
        };
        let live: BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| {
                *v == self.node_id
                    || Some(*v) == known_live
                    || acked
                        .get(v)
                        .and_then(|a| a.as_ref())
                        .is_some_and(|at| at.elapsed() < LIVE_ACK)
            })
            .collect();
        if live.len() * 2 > voters.len() {
            Ok(())
        } else {
            Err(format!(
                "the voters would be {voters:?} with only {live:?} live: no majority"
            ))
        }
    }

    /// This node's view of the quorum.
    pub(super) fn status(&self) -> QuorumStatus {
        let image = self.images.borrow().clone();
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = &m.membership_config;
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.addr.clone());
            } else {
                learners.insert(*id, node.addr.clone());
            }
        }
        let is_leader = m.current_leader == Some(self.node_id);
        QuorumStatus {
            node_id: self.node_id,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            voters,
            learners,
            joint: membership.get_joint_config().len() > 1,
            membership_committed: m.committed_membership_config.log_id() == membership.log_id(),
            last_log_index: m.last_log_index,
            commit_index: m.local_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            retired_node_ids: image.retired_node_ids.iter().copied().collect(),
            fenced_brokers: image
                .brokers
                .values()
                .filter(|b| b.fenced)
                .map(|b| b.node_id)
                .collect(),
            matched_index: m.replication.as_ref().filter(|_| is_leader).map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                    .collect()
            }),
            last_ack_ms: m.heartbeat.as_ref().filter(|_| is_leader).map(|h| {
                h.iter()
                    .map(|(id, at)| (*id, at.as_ref().map(|at| at.elapsed().as_millis() as u64)))
                    .collect()
            }),
        }
    }
}

fn is_voter(m: &StoredMembership, id: NodeId) -> bool {
    m.voter_ids().any(|v| v == id)
}

fn retired_message(id: NodeId) -> String {
    format!("node id {id} was removed from the metadata quorum and is never reused; give the new node a new id")
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> MembershipReply {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipReply::NotLeader {
            leader_id: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipReply::Refused(e.to_string())
        }
        other => MembershipReply::Failed(other.to_string()),
    }
}

/// Checks a change's input before it goes anywhere: ids are broker ids (0..=i32::MAX) and the
/// address is `host:port`.
pub(super) fn validate(change: &MembershipChange) -> Result<(), String> {
    let id = match change {
        MembershipChange::AddLearner { node_id, .. }
        | MembershipChange::PromoteVoter { node_id }
        | MembershipChange::RemoveNode { node_id } => *node_id,
    };
    if i32::try_from(id).is_err() {
        return Err(format!("node id {id} is out of range (0..={})", i32::MAX));
    }
    if let MembershipChange::AddLearner { address, .. } = change {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("address {address:?} is not HOST:PORT"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().is_err() {
            return Err(format!("address {address:?} is not HOST:PORT"));
        }
    }
    Ok(())
}
