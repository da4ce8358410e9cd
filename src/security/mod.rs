//! Security: who a connection is and how it proves it. TLS from PEM files (`tls`),
//! principals (`principal`), SASL mechanisms, pure and I/O-free (`sasl`), Kafka's JAAS config
//! lines (`jaas`), and the listener and security settings with Kafka's keys (`listeners`).
//! Pure: no broker state; the ACL bindings and the authorizer's decisions are metadata
//! (`meta::acl`).

pub mod client;
pub mod jaas;
pub mod listeners;
pub mod principal;
pub mod sasl;
pub mod tls;
