//! The admin plane: the HTTP listener (health, readiness, Prometheus metrics, quorum
//! membership, the web console under `/console`), the request counters it exposes, and the
//! `gregor admin` command that talks to it.

pub mod cli;
pub mod console;
pub mod http;
pub mod metrics;
pub mod readiness;
