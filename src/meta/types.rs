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
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot travels and rests as one serialized blob (see `state_machine.rs`).
pub type SnapshotData = Vec<u8>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Raft = openraft::Raft<TypeConfig, MetaStateMachine>;

/// `AppData` must be `Display`; openraft uses it in its logs. The `Debug` form, cut short so a
/// large record (a topic with many partitions) does not flood the log. Written without naming
/// the variants, so adding a record kind needs no change here.
impl fmt::Display for MetadataRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 200;
        let full = format!("{self:?}");
        if full.len() <= MAX {
            return f.write_str(&full);
        }
        let mut end = MAX;
        while !full.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}...", &full[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::{MetadataRecord, PartitionImage, TopicImage};
    use std::collections::BTreeMap;

    #[test]
    fn record_display_is_bounded() {
        let short = MetadataRecord::InitCluster {
            cluster_id: "c1".into(),
        };
        assert_eq!(short.to_string(), format!("{short:?}"));
        let partition = PartitionImage {
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            ..PartitionImage::default()
        };
        let big = MetadataRecord::CreateTopic(TopicImage {
            name: "é".repeat(300),
            topic_id: uuid::Uuid::nil(),
            partitions: vec![partition; 100],
            configs: BTreeMap::new(),
        });
        let shown = big.to_string();
        assert!(shown.len() <= 203 && shown.ends_with("..."), "{shown}");
    }
}
