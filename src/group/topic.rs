//! The internal `__consumer_offsets` topic: created on first use with Kafka's settings
//! (compacted, `offsets.topic.num.partitions` partitions), then loaded by its leaders.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::OFFSETS_TOPIC;
use crate::broker::Broker;
use crate::meta::controller::{self, CreateDefaults, CreateTopicError, TopicSpec};

/// Creates `__consumer_offsets` if it does not exist yet. The replication factor is
/// `offsets.topic.replication.factor`, capped at the number of registered brokers so that a
/// single broker works out of the box.
pub async fn ensure_offsets_topic(broker: &Broker) -> Result<(), (ResponseError, String)> {
    if broker.image().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let config = &broker.groups.config;
    let brokers = broker.image().brokers.len().max(1) as i16;
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert("compression.type".to_string(), "producer".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        config.offsets_segment_bytes.to_string(),
    );
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: config.offsets_partitions,
        replication_factor: config.offsets_replication_factor.min(brokers),
        assignments: None,
        configs,
    };
    let defaults = CreateDefaults {
        num_partitions: config.offsets_partitions,
        replication_factor: 1,
    };
    let created = match controller::plan_topic(&broker.image(), &spec, defaults) {
        Ok(t) => controller::create_topic(&broker.meta, t).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(_) | Err(CreateTopicError::AlreadyExists(_)) => {
            broker.replicas.apply_image(&broker.image());
            broker.groups.sync_partitions(&broker.replicas);
            tracing::info!("created {OFFSETS_TOPIC}");
            Ok(())
        }
        Err(e) => Err((ResponseError::CoordinatorNotAvailable, e.to_string())),
    }
}
