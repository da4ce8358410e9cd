//! The controller listener: accepts peer connections, decodes framed requests (`wire.rs`) and
//! hands them to the local Raft: AppendEntries, Vote, PreVote, full snapshot install, leader
//! transfer, and proposals forwarded by non-leaders.
//!
//! A malformed or oversized frame closes that connection (logged once); nothing a peer sends
//! can panic the broker. Connections are bounded in number and each runs on its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::vote::RaftLeaderId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::image::MetadataRecord;
use super::membership::MembershipManager;
use super::state_machine::MAX_SNAPSHOT_LEN;
use super::types::{NodeId, Raft, Snapshot};
use super::wire::{self, ProposalReply, Reply, Request, RequestBody, MAX_MESSAGE_LEN};

/// At most this many controller connections are served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 256;
/// A connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the data frame of a snapshot install may take to arrive.
const SNAPSHOT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the leader works on a forwarded proposal before answering `Failed`.
const FORWARDED_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader works on a forwarded membership change before answering `Failed`.
const FORWARDED_MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a peer has for the TLS handshake and authentication.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection serves requests with.
#[derive(Clone)]
pub(super) struct Context {
    pub node_id: NodeId,
    pub raft: Raft,
    pub membership: Arc<MembershipManager>,
    pub leader_contact: Arc<super::LeaderContact>,
    /// TLS and authentication of the plane.
    pub security: Arc<super::plane_security::PlaneSecurity>,
}

/// The running listener. Dropping it does not stop it; call [`RpcServer::stop`].
pub(super) struct RpcServer {
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RpcServer {
    /// Serves `listener` for `ctx.raft` until stopped.
    pub(super) fn spawn(listener: TcpListener, ctx: Context) -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, ctx, stop_rx));
        Self { stop_tx, task }
    }

    /// Stops accepting, closes every connection, and waits for the tasks to end.
    pub(super) async fn stop(self) {
        self.stop_tx.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "controller listener task failed");
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Context, mut stop_rx: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connection tasks so the set stays bounded.
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                let stop_rx = stop_rx.clone();
                conns.spawn(async move {
                    serve_connection(stream, peer, ctx, stop_rx).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    conns.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Context,
    mut stop_rx: watch::Receiver<bool>,
) {
    let node_id = ctx.node_id;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "controller connection: set_nodelay failed");
    }
    let secured = tokio::select! {
        _ = stop_rx.wait_for(|stop| *stop) => return,
        secured = tokio::time::timeout(HANDSHAKE_TIMEOUT, ctx.security.accept(stream)) => secured,
    };
    let mut conn = match secured {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "controller connection refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "controller connection: TLS or authentication timed out");
            return;
        }
    };
    loop {
        let frame = tokio::select! {
            _ = stop_rx.wait_for(|stop| *stop) => return,
            frame = tokio::time::timeout(IDLE_TIMEOUT, wire::read_frame(&mut conn, MAX_MESSAGE_LEN)) => frame,
        };
        let bytes = match frame {
            Err(_) => {
                tracing::debug!(%peer, "controller connection idle; closing");
                return;
            }
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!(%peer, error = %e, "controller connection: bad frame; closing");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "controller connection lost");
                return;
            }
        };
        let request: Request = match wire::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "controller connection: malformed request; closing");
                return;
            }
        };
        // The snapshot data frame belongs to the request: read it even if it will be refused.
        let snapshot_data = if matches!(request.body, RequestBody::InstallSnapshot { .. }) {
            let read = wire::read_frame(&mut conn, MAX_SNAPSHOT_LEN);
            match tokio::time::timeout(SNAPSHOT_READ_TIMEOUT, read).await {
                Ok(Ok(Some(data))) => Some(data),
                Ok(Ok(None)) => return,
                Err(_) => {
                    tracing::warn!(%peer, "controller connection: snapshot data too slow; closing");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "controller connection: bad snapshot frame; closing");
                    return;
                }
            }
        } else {
            None
        };
        let reply = if request.target != node_id {
            tracing::warn!(%peer, from = request.from, target = request.target, "controller request for another node");
            Reply::WrongNode { actual: node_id }
        } else {
            dispatch(&ctx, request.body, snapshot_data).await
        };
        let written = async {
            wire::write_frame(&mut conn, &wire::encode(&reply)?).await?;
            conn.flush().await
        };
        if let Err(e) = written.await {
            tracing::debug!(%peer, error = %e, "controller connection: reply not sent; closing");
            return;
        }
    }
}

async fn dispatch(ctx: &Context, body: RequestBody, snapshot_data: Option<Vec<u8>>) -> Reply {
    let raft = &ctx.raft;
    let failed = |e: &dyn std::fmt::Display| Reply::Failed(e.to_string());
    match body {
        RequestBody::AppendEntries(req) => match raft.append_entries(req).await {
            Ok(resp) => {
                // Any answer but "your vote is stale" means a current leader reached us.
                if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                    ctx.leader_contact.record();
                }
                Reply::AppendEntries(resp)
            }
            Err(e) => failed(&e),
        },
        RequestBody::Vote(req) => match raft.vote(req).await {
            Ok(resp) => Reply::Vote(resp),
            Err(e) => failed(&e),
        },
        RequestBody::PreVote(req) => match raft.pre_vote(req).await {
            Ok(resp) => Reply::Vote(resp),
            Err(e) => failed(&e),
        },
        RequestBody::InstallSnapshot { vote, meta } => {
            let Some(data) = snapshot_data else {
                return Reply::Failed("snapshot data missing".into());
            };
            // Openraft treats a snapshot beyond the sender's own leadership as corruption and
            // panics; refuse such a request here instead.
            let beyond_vote = meta
                .last_log_id
                .as_ref()
                .is_some_and(|l| l.committed_leader_id() > &vote.leader_id().to_committed());
            if beyond_vote {
                return Reply::Failed("snapshot is newer than the sender's vote".into());
            }
            let snapshot = Snapshot {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(resp) => Reply::InstallSnapshot(resp),
                Err(e) => failed(&e),
            }
        }
        RequestBody::TransferLeader(req) => match raft.handle_transfer_leader(req).await {
            Ok(resp) => Reply::TransferLeader(resp),
            Err(e) => failed(&e),
        },
        RequestBody::ForwardProposal(record) => {
            Reply::Proposal(propose_locally(raft, record).await)
        }
        RequestBody::Membership(change) => {
            if let Err(why) = super::membership::validate(&change) {
                return Reply::Membership(super::membership::MembershipReply::Refused(why));
            }
            let deadline = tokio::time::Instant::now() + FORWARDED_MEMBERSHIP_TIMEOUT;
            Reply::Membership(ctx.membership.apply(&change, deadline).await)
        }
        RequestBody::Probe => match raft.is_initialized().await {
            Ok(initialized) => Reply::Probe {
                initialized,
                leader: raft.current_leader().await,
            },
            Err(e) => failed(&e),
        },
    }
}

/// Proposes a forwarded record on this node, which the sender believes is the leader.
async fn propose_locally(raft: &Raft, record: MetadataRecord) -> ProposalReply {
    match tokio::time::timeout(FORWARDED_PROPOSAL_TIMEOUT, raft.client_write(record)).await {
        Err(_) => ProposalReply::Failed("timed out waiting for the proposal to commit".into()),
        Ok(Ok(resp)) => ProposalReply::Applied {
            index: resp.log_id.index,
            outcome: resp.data,
        },
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            ProposalReply::NotLeader {
                leader_id: f.leader_id,
            }
        }
        Ok(Err(e)) => ProposalReply::Failed(e.to_string()),
    }
}
