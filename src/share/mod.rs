//! Share groups (KIP-932, Kafka's queues): many consumers read one partition cooperatively,
//! acknowledging record by record.
//!
//! - `group.rs`: share groups' membership and assignment (ShareGroupHeartbeat,
//!   ShareGroupDescribe), on the group's coordinator (the same broker as for any group: the
//!   leader of its `__consumer_offsets` partition).
//! - `partition.rs`: one share-partition's in-flight records, acquisition locks and delivery
//!   counts (pure).
//! - `manager.rs`: the share-partitions of the partitions this broker leads (Kafka's
//!   SharePartitionManager): ShareFetch acquires, ShareAcknowledge acknowledges.
//! - `session.rs`: share sessions (ShareFetch session epochs).
//! - `state_store.rs`: the share coordinator's durable state in `__share_group_state`.
//! - `persister.rs`: the share-partition leader's client of the share coordinator, local or
//!   over the network (Read/Write/Initialize/DeleteShareGroupState).

pub mod group;
pub mod manager;
pub mod partition;
pub mod persister;
pub mod session;
pub mod state_store;

use std::time::Duration;

pub use manager::SharePartitionManager;
pub use state_store::{StateKey, StateStore, SHARE_STATE_TOPIC};

/// Share group settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// group.share.record.lock.duration.ms
    pub record_lock_duration_ms: i64,
    /// group.share.delivery.count.limit
    pub delivery_count_limit: i16,
    /// group.share.partition.max.record.locks
    pub max_record_locks: usize,
    /// group.share.session.timeout.ms
    pub session_timeout: Duration,
    /// group.share.heartbeat.interval.ms
    pub heartbeat_interval_ms: i32,
    /// group.share.max.size
    pub max_size: usize,
    /// share.coordinator.state.topic.num.partitions
    pub state_partitions: i32,
    /// share.coordinator.state.topic.replication.factor
    pub state_replication_factor: i16,
    /// share.coordinator.state.topic.min.isr
    pub state_min_isr: i16,
    /// share.coordinator.state.topic.segment.bytes
    pub state_segment_bytes: i64,
    /// share.coordinator.write.timeout.ms
    pub write_timeout: Duration,
    /// max.share.session.cache.size (Kafka's share session cache bound)
    pub max_sessions: usize,
}

impl ShareConfig {
    pub fn limits(&self) -> partition::Limits {
        partition::Limits {
            lock_duration_ms: self.record_lock_duration_ms,
            delivery_count_limit: self.delivery_count_limit,
            max_record_locks: self.max_record_locks,
        }
    }
}
