//! The openraft type configuration of the metadata quorum, and short aliases for the openraft
//! types the other `meta/` files use. Openraft types stay inside `meta/`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::image::{ApplyOutcome, MetadataRecord};
use super::state_machine::MetaStateMachine;

/// A voter of the metadata quorum as stored in the Raft membership: its controller address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    /// `host:port` of the node's controller listener.
    pub addr: String,
}

impl ControllerNode {
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

openraft::declare_raft_types!(
    /// Type configuration of the metadata Raft group.
    pub TypeConfig:
        D = MetadataRecord,
        R = ApplyOutcome,
        NodeId = u64,
        Node = ControllerNode,
);

/// Raft node id of a voter. It is the broker's node id.
pub type NodeId = u64;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot travels and rests as one serialized blob (see `state_machine.rs`).
pub type SnapshotData = Vec<u8>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Raft = openraft::Raft<TypeConfig, MetaStateMachine>;

/// `AppData` must be `Display`; used in openraft's logs.
impl fmt::Display for MetadataRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataRecord::InitCluster { cluster_id } => write!(f, "InitCluster({cluster_id})"),
            MetadataRecord::RegisterBroker(reg) => {
                write!(f, "RegisterBroker({} at {}:{})", reg.node_id, reg.host, reg.port)
            }
            MetadataRecord::CreateTopic(topic) => write!(
                f,
                "CreateTopic({}, {}, {} partitions)",
                topic.name,
                topic.topic_id,
                topic.partitions.len()
            ),
            MetadataRecord::DeleteTopic { topic_id } => write!(f, "DeleteTopic({topic_id})"),
        }
    }
}
