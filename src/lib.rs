//! Gregor: a Kafka-protocol message broker. The binary (`main.rs`) is a thin CLI over these
//! modules; the library form exists so that tests and fuzz targets can reach them.

pub mod admin;
pub mod alloc_guard;
pub mod api;
pub mod broker;
pub mod config;
pub mod durable;
pub mod group;
pub mod kafka_uuid;
pub mod log;
pub mod meta;
pub mod quota;
pub mod replica;
pub mod security;
pub mod serve;
pub mod server;
pub mod share;
pub mod txn;

/// Every binary and test that links Gregor uses the guarded allocator (see `alloc_guard`).
#[global_allocator]
static GLOBAL: alloc_guard::GuardedAllocator = alloc_guard::GuardedAllocator;
