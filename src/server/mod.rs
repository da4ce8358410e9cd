//! The Kafka listeners: accept client connections within the connection limits, do each
//! listener's security handshake (TLS; SASL happens in-band, in `dispatch`), and run each
//! connection on its own task, all sharing one request memory budget.
//!
//! Files: `connection.rs` (framing, ordering, backpressure), `dispatch.rs` (decode and route
//! by API key), `frame.rs` (response frames, zero-copy for Fetch), `memory_pool.rs`
//! (`queued.max.request.bytes`), `connection_limits.rs` (`max.connections`,
//! `max.connections.per.ip`), `listener.rs` (a listener's security, TLS accept), `throttle.rs`
//! (a request's cost against its client's quotas, and the throttle time).

pub mod connection;
pub mod connection_limits;
pub mod dispatch;
pub mod frame;
pub mod listener;
pub mod memory_pool;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::broker::Broker;
use connection_limits::{ConnectionLimits, Slot};
use listener::ListenerRuntime;
use memory_pool::MemoryPool;

/// How often TLS certificate files are checked for rotation.
const TLS_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Accepts connections on every listener until shutdown, then waits for the open ones to
/// finish their current request and close.
pub async fn run(broker: Arc<Broker>, listeners: Vec<(TcpListener, Arc<ListenerRuntime>)>) {
    let settings = &broker.config.kafka.connections;
    // Dynamic broker configs of these keys (stored in the metadata) apply from startup.
    let effective = broker.dynamic_config();
    let overrides = effective
        .settings()
        .get("max.connections.per.ip.overrides")
        .and_then(|text| ConnectionLimits::parse_overrides(text).ok())
        .unwrap_or_else(|| settings.max_connections_per_ip_overrides.clone());
    let limits = ConnectionLimits::new(
        effective.get("max.connections", settings.max_connections),
        effective.get("max.connections.per.ip", settings.max_connections_per_ip),
        overrides,
    );
    let pool = MemoryPool::new(settings.queued_max_request_bytes);
    broker.metrics.set_request_memory(pool.clone());
    let runtimes: Vec<Arc<ListenerRuntime>> = listeners.iter().map(|(_, r)| r.clone()).collect();
    // Each listener accepts on a task of its own; admitted connections come here.
    let (tx, mut accepted) =
        mpsc::channel::<(TcpStream, SocketAddr, Slot, Arc<ListenerRuntime>)>(64);
    let mut acceptors = JoinSet::new();
    for (socket, runtime) in listeners {
        acceptors.spawn(accept_loop(socket, runtime, limits.clone(), tx.clone()));
    }
    drop(tx);
    let mut connections = JoinSet::new();
    let mut reload = tokio::time::interval(TLS_RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some((stream, peer, slot, runtime)) = accepted.recv() => {
                let (broker, pool) = (broker.clone(), pool.clone());
                connections.spawn(async move {
                    runtime.serve(broker, pool, stream, peer).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = reload.tick() => {
                for r in &runtimes {
                    r.reload_tls_if_changed();
                }
            }
            _ = broker.shutdown.cancelled() => break,
        }
    }
    acceptors.abort_all();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
        connections.abort_all();
    }
}

/// Accepts on one listener: waits for room under `max.connections`, admits by
/// `max.connections.per.ip` (closing what is over it), and hands the rest on.
async fn accept_loop(
    socket: TcpListener,
    runtime: Arc<ListenerRuntime>,
    limits: Arc<ConnectionLimits>,
    tx: mpsc::Sender<(TcpStream, SocketAddr, Slot, Arc<ListenerRuntime>)>,
) {
    loop {
        limits.wait_for_room().await;
        match socket.accept().await {
            Ok((stream, peer)) => match limits.admit(peer.ip()) {
                Ok(slot) => {
                    if tx
                        .send((stream, peer, slot, runtime.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(limit) => {
                    tracing::info!(%peer, limit, listener = %runtime.name(),
                        "rejected connection: the address already has the maximum allowed (max.connections.per.ip)");
                }
            },
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
