//! The Kafka listener: accepts client connections within the connection limits and runs each
//! one on its own task, all sharing one request memory budget.
//!
//! Files: `connection.rs` (framing, ordering, backpressure), `dispatch.rs` (decode and route
//! by API key), `frame.rs` (response frames, zero-copy for Fetch), `memory_pool.rs`
//! (`queued.max.request.bytes`), `connection_limits.rs` (`max.connections`,
//! `max.connections.per.ip`).

pub mod connection;
pub mod connection_limits;
pub mod dispatch;
pub mod frame;
pub mod memory_pool;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use connection_limits::ConnectionLimits;
use memory_pool::MemoryPool;

/// Accepts connections until shutdown, then waits for the open ones to finish their current
/// request and close.
pub async fn run(broker: Arc<Broker>, listener: TcpListener) {
    let settings = &broker.config.kafka.connections;
    let limits = ConnectionLimits::new(
        settings.max_connections,
        settings.max_connections_per_ip,
        settings.max_connections_per_ip_overrides.clone(),
    );
    let pool = MemoryPool::new(settings.queued_max_request_bytes);
    broker.metrics.set_request_memory(pool.clone());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept_within_limits(&listener, &limits) => match accepted {
                Ok((stream, peer)) => match limits.admit(peer.ip()) {
                    Ok(slot) => {
                        let (broker, pool) = (broker.clone(), pool.clone());
                        connections.spawn(async move {
                            connection::serve(broker, pool, stream, peer).await;
                            drop(slot);
                        });
                    }
                    Err(limit) => {
                        tracing::info!(%peer, limit,
                            "rejected connection: the address already has the maximum allowed (max.connections.per.ip)");
                        drop(stream);
                    }
                },
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = broker.shutdown.cancelled() => break,
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s; closing them");
        connections.abort_all();
    }
}

/// Waits for room under `max.connections`, then accepts.
async fn accept_within_limits(
    listener: &TcpListener,
    limits: &ConnectionLimits,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    limits.wait_for_room().await;
    listener.accept().await
}
