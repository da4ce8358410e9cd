//! Storage: partition logs made of segments in Kafka's on-disk format.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod flusher;
pub mod index;
pub mod leader_epoch;
pub mod manager;
pub mod partition_log;
pub mod producer_state;
pub mod records;
pub mod retention;
pub mod segment;
pub mod trace_header;
pub mod txn;

pub use config::TopicDefaults;
pub use partition_log::{AppendInfo, FollowerAppend, LogError, PartitionLog, ReadResult};

/// Wall-clock milliseconds since the epoch: the time the log stamps LogAppendTime batches and
/// producer activity with.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod partition_log_tests;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod txn_tests;
