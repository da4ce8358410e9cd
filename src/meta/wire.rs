//! The controller RPC wire format, shared by the client (`network.rs`) and the listener
//! (`rpc_server.rs`).
//!
//! A connection carries request/reply pairs, one at a time. Every message is a frame:
//! a `u32` big-endian length, then that many bytes of JSON. A snapshot install request is
//! followed by one more frame holding the raw snapshot data.

use std::io;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::image::{ApplyOutcome, MetadataRecord};
use super::membership::{MembershipChange, MembershipReply};
use super::types::{NodeId, SnapshotMeta, TypeConfig, Vote};

/// Upper bound of one JSON message frame.
pub(super) const MAX_MESSAGE_LEN: usize = 64 << 20;

/// A request, addressed to one node id so a node reached at a stale address can refuse it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    /// The node the sender means to reach.
    pub target: NodeId,
    /// The sender's node id (for logs).
    pub from: NodeId,
    pub body: RequestBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum RequestBody {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// Followed by one raw frame with the snapshot data.
    InstallSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A proposal from a node that is not the leader.
    ForwardProposal(MetadataRecord),
    /// A membership change from a node that is not the leader.
    Membership(MembershipChange),
    /// "Do you belong to a cluster?", asked by a fresh node before it initializes one.
    Probe,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    InstallSnapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Proposal(ProposalReply),
    Membership(MembershipReply),
    Probe {
        /// The receiver has a membership (it was initialized or added to a cluster).
        initialized: bool,
        leader: Option<NodeId>,
    },
    /// The receiver is not the addressed node.
    WrongNode {
        actual: NodeId,
    },
    /// The receiver's Raft could not serve the request (e.g. it is shutting down).
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ProposalReply {
    /// Committed at `index` and applied on the leader.
    Applied { index: u64, outcome: ApplyOutcome },
    /// The receiver is not the leader; nothing was proposed.
    NotLeader { leader_id: Option<NodeId> },
    /// The proposal may or may not have been committed.
    Failed(String),
}

pub(super) fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(msg).map_err(io::Error::other)
}

pub(super) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(payload).await
}

/// Reads one frame. `Ok(None)` on a clean end of stream before the frame starts.
/// A length above `max_len` is an `InvalidData` error; the buffer grows only as bytes arrive.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let n = r.read(&mut header).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut header[n..]).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max_len}"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated frame",
        ));
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_roundtrip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"abc").await.unwrap();
        write_frame(&mut a, &[7u8; 100]).await.unwrap();
        assert_eq!(read_frame(&mut b, 10).await.unwrap().unwrap(), b"abc");
        let err = read_frame(&mut b, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(a);
        let err = read_frame(&mut b, 100).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let (a, mut b) = tokio::io::duplex(1024);
        drop(a);
        assert!(read_frame(&mut b, 100).await.unwrap().is_none());
    }

    #[test]
    fn malformed_request_is_an_error() {
        assert!(decode::<Request>(b"{\"target\":1}").is_err());
        assert!(decode::<Request>(&[0xff, 0xfe]).is_err());
    }
}
