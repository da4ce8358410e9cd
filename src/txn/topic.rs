//! The internal `__transaction_state` topic: created on a transactional id's first
//! FindCoordinator with Kafka's settings (compacted, `transaction.state.log.*`), then loaded by
//! its leaders; and FindCoordinator for transactions.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::{TransactionCoordinator, TRANSACTION_STATE_TOPIC};
use crate::group::{coordinator_address, ensure_internal_topic, CoordinatorAddress};
use crate::meta::controller::TopicSpec;

impl TransactionCoordinator {
    /// The broker that coordinates `transactional_id` (creating `__transaction_state` if
    /// needed), at its endpoint on `listener`: (node id, host, port).
    pub async fn find_coordinator(
        &self,
        transactional_id: &str,
        listener: &str,
    ) -> Result<CoordinatorAddress, (ResponseError, String)> {
        self.ensure_state_topic().await?;
        let p = self.partition_for(transactional_id);
        coordinator_address(&self.meta.image(), TRANSACTION_STATE_TOPIC, p, listener)
    }

    /// Where `transactional_id` is coordinated, on the inter-broker listener (-1 when the
    /// topic or its leader is not known yet).
    pub fn coordinator_of(&self, transactional_id: &str) -> i32 {
        let image = self.meta.image();
        let p = self.partition_for(transactional_id);
        image
            .topic(TRANSACTION_STATE_TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map_or(-1, |x| x.leader)
    }

    /// Creates `__transaction_state` if it does not exist yet. Its replication factor and
    /// `min.insync.replicas` are capped at the number of registered brokers, so that a single
    /// broker works out of the box.
    async fn ensure_state_topic(&self) -> Result<(), (ResponseError, String)> {
        let image = self.meta.image();
        if image.topic(TRANSACTION_STATE_TOPIC).is_some() {
            return Ok(());
        }
        let config = &self.config;
        let brokers = image.brokers.len().max(1) as i16;
        let replication_factor = config.state_replication_factor.min(brokers);
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("compression.type".to_string(), "uncompressed".to_string());
        configs.insert(
            "unclean.leader.election.enable".to_string(),
            "false".to_string(),
        );
        configs.insert(
            "min.insync.replicas".to_string(),
            config
                .state_min_isr
                .min(i32::from(replication_factor))
                .to_string(),
        );
        configs.insert(
            "segment.bytes".to_string(),
            config.state_segment_bytes.to_string(),
        );
        let spec = TopicSpec {
            name: TRANSACTION_STATE_TOPIC.to_string(),
            num_partitions: config.state_partitions,
            replication_factor,
            assignments: None,
            configs,
        };
        ensure_internal_topic(&self.meta, &self.replicas, spec).await
    }
}
