//! The Raft network client of the metadata quorum (openraft `RaftNetworkV2`): sends
//! AppendEntries, Vote, snapshot and leader-transfer RPCs, and forwarded proposals, to a
//! peer's controller listener over TCP (framing in `wire.rs`).
//!
//! A client owns at most one connection to its peer, opened on first use and dropped after any
//! error or timeout (a late reply can then never be mistaken for the next one).

use std::future::Future;
use std::io;
use std::time::Duration;

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RPCTypes};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::plane_security::{Conn, PlaneSecurity};

use super::types::{ControllerNode, NodeId, Snapshot, SnapshotData, TypeConfig, Vote};
use super::wire::{self, Reply, Request, RequestBody, MAX_MESSAGE_LEN};

/// Creates one [`PeerClient`] per replication target.
pub struct NetworkFactory {
    node_id: NodeId,
    security: Arc<PlaneSecurity>,
}

impl NetworkFactory {
    pub fn new(node_id: NodeId, security: Arc<PlaneSecurity>) -> Self {
        Self { node_id, security }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ControllerNode) -> PeerClient {
        PeerClient::new(
            self.node_id,
            target,
            node.addr.clone(),
            self.security.clone(),
        )
    }
}

/// Why a call failed, before it is mapped onto openraft's error types.
#[derive(Debug)]
pub(super) enum CallError {
    /// The peer could not be reached; the request was not sent.
    Connect(io::Error),
    /// The connection failed after the request may have been sent.
    Io(io::Error),
    /// No reply within the deadline.
    Timeout,
    /// The peer answered, but not as the addressed node or not with a usable reply.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect failed: {e}"),
            CallError::Io(e) => write!(f, "connection failed: {e}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Refused(msg) => write!(f, "refused: {msg}"),
        }
    }
}

/// A client of one peer's controller listener.
pub struct PeerClient {
    from: NodeId,
    target: NodeId,
    addr: String,
    security: Arc<PlaneSecurity>,
    conn: Option<Conn>,
}

impl PeerClient {
    pub(super) fn new(
        from: NodeId,
        target: NodeId,
        addr: String,
        security: Arc<PlaneSecurity>,
    ) -> Self {
        Self {
            from,
            target,
            addr,
            security,
            conn: None,
        }
    }

    /// Sends one request (plus the snapshot data frame, if any) and reads its reply.
    pub(super) async fn call(
        &mut self,
        body: RequestBody,
        snapshot_data: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Reply, CallError> {
        let deadline = Instant::now() + ttl;
        let request = wire::encode(&Request {
            target: self.target,
            from: self.from,
            body,
        })
        .map_err(CallError::Io)?;

        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let stream = tokio::time::timeout_at(deadline, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| {
                        CallError::Connect(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connect timed out",
                        ))
                    })?
                    .map_err(CallError::Connect)?;
                stream.set_nodelay(true).map_err(CallError::Connect)?;
                let host = self
                    .addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(&self.addr);
                tokio::time::timeout_at(deadline, self.security.connect(stream, host))
                    .await
                    .map_err(|_| {
                        CallError::Connect(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS or authentication timed out",
                        ))
                    })?
                    .map_err(CallError::Connect)?
            }
        };

        let exchange = async {
            wire::write_frame(&mut conn, &request).await?;
            if let Some(data) = snapshot_data {
                wire::write_frame(&mut conn, data).await?;
            }
            conn.flush().await?;
            wire::read_frame(&mut conn, MAX_MESSAGE_LEN).await
        };
        let reply = match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(e)) => return Err(CallError::Io(e)),
            Ok(Ok(None)) => {
                return Err(CallError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by peer",
                )))
            }
            Ok(Ok(Some(bytes))) => wire::decode::<Reply>(&bytes).map_err(CallError::Io)?,
        };
        match reply {
            Reply::WrongNode { actual } => Err(CallError::Refused(format!(
                "{} is node {actual}, not node {}",
                self.addr, self.target
            ))),
            Reply::Failed(msg) => {
                self.conn = Some(conn);
                Err(CallError::Refused(msg))
            }
            reply => {
                self.conn = Some(conn);
                Ok(reply)
            }
        }
    }

    fn to_rpc_error(&self, e: CallError, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        match e {
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Refused(msg) => RPCError::Unreachable(Unreachable::from_string(msg)),
        }
    }

    async fn rpc(
        &mut self,
        body: RequestBody,
        snapshot_data: Option<&[u8]>,
        action: RPCTypes,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<TypeConfig>> {
        let ttl = option.soft_ttl();
        self.call(body, snapshot_data, ttl)
            .await
            .map_err(|e| self.to_rpc_error(e, action, ttl))
    }
}

fn unexpected(reply: &Reply) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "unexpected controller reply: {reply:?}"
    )))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = RequestBody::AppendEntries(rpc);
        match self
            .rpc(body, None, RPCTypes::AppendEntries, &option)
            .await?
        {
            Reply::AppendEntries(resp) => Ok(resp),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(RequestBody::Vote(rpc), None, RPCTypes::Vote, &option)
            .await?
        {
            Reply::Vote(resp) => Ok(resp),
            other => Err(unexpected(&other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(RequestBody::PreVote(rpc), None, RPCTypes::Vote, &option)
            .await?
        {
            Reply::Vote(resp) => Ok(resp),
            other => Err(unexpected(&other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let body = RequestBody::InstallSnapshot {
            vote,
            meta: snapshot.meta,
        };
        let data = snapshot.snapshot;
        let send = self.rpc(body, Some(&data), RPCTypes::InstallSnapshot, &option);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => match reply? {
                Reply::InstallSnapshot(resp) => Ok(resp),
                other => Err(unexpected(&other).into()),
            },
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = RequestBody::TransferLeader(req);
        match self
            .rpc(body, None, RPCTypes::TransferLeader, &option)
            .await?
        {
            Reply::TransferLeader(resp) => Ok(resp),
            other => Err(unexpected(&other)),
        }
    }
}
