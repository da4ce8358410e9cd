//! Requests from this broker to another one, for the coordinators: WriteTxnMarkers from a
//! transaction coordinator to partition leaders, and AddPartitionsToTxn (verify only, KIP-890)
//! from a partition leader to a transaction coordinator. One connection per broker, kept
//! between requests and made again after a failure, over the inter-broker listener with its
//! TLS and SASL.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::protocol::Request;
use parking_lot::Mutex;

use super::client::KafkaClient;
use super::ReplicaSettings;
use crate::meta::image::MetadataImage;

/// Connections to other brokers, by node id.
pub struct BrokerClients {
    node_id: i32,
    settings: ReplicaSettings,
    connections: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<KafkaClient>>>>>,
}

impl BrokerClients {
    pub fn new(node_id: i32, settings: ReplicaSettings) -> Self {
        Self {
            node_id,
            settings,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to broker `broker` (reached at its inter-broker endpoint in `image`) and
    /// returns its response; a failed exchange drops the connection.
    pub async fn call<R: Request>(
        &self,
        image: &MetadataImage,
        broker: i32,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> io::Result<R::Response> {
        let (host, port) = image
            .brokers
            .get(&broker)
            .and_then(|b| b.endpoint(&self.settings.inter_broker_listener))
            .map(|(h, p)| (h.to_string(), p))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no endpoint for broker {broker}"),
                )
            })?;
        let slot = self.connections.lock().entry(broker).or_default().clone();
        let mut conn = slot.lock().await;
        if conn.is_none() {
            *conn = Some(
                KafkaClient::connect(
                    (&host, port),
                    &self.settings.inter_broker_security,
                    format!("broker-{}-coordinator", self.node_id),
                    timeout,
                )
                .await?,
            );
        }
        let client = conn.as_mut().expect("connected above");
        let result = client.call(version, req, timeout).await;
        if result.is_err() {
            *conn = None;
        }
        result
    }
}
