//! Storage: partition logs made of segments in Kafka's on-disk format.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod index;
pub mod leader_epoch;
pub mod manager;
pub mod partition_log;
pub mod records;
pub mod retention;
pub mod segment;

pub use config::TopicDefaults;
pub use partition_log::{AppendInfo, LogError, PartitionLog, ReadResult};

#[cfg(test)]
mod partition_log_tests;
#[cfg(test)]
pub mod testing;
