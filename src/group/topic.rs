//! The internal `__consumer_offsets` topic: created on first use with Kafka's settings
//! (compacted, `offsets.topic.num.partitions` partitions), then loaded by its leaders; and
//! FindCoordinator, which is where a group learns whose it is.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::ResponseError;

use super::{GroupCoordinator, OFFSETS_TOPIC};
use crate::meta::controller::{self, CreateDefaults, CreateTopicError, TopicSpec};
use crate::meta::image::MetadataImage;
use crate::meta::MetadataQuorum;
use crate::replica::ReplicaManager;

/// How long FindCoordinator waits for a just-created `__consumer_offsets` to be hosted here.
const HOSTED_WAIT: Duration = Duration::from_secs(10);

/// A coordinator's address: (node id, host, port).
pub type CoordinatorAddress = (i32, String, i32);

impl GroupCoordinator {
    /// The broker that coordinates `group` (creating `__consumer_offsets` if needed), or the
    /// error and message FindCoordinator answers with.
    /// The coordinator's endpoint is the one on `listener`, the listener the client came in
    /// on.
    pub async fn find_coordinator(
        &self,
        group: &str,
        listener: &str,
    ) -> Result<CoordinatorAddress, (ResponseError, String)> {
        self.ensure_offsets_topic().await?;
        let p = self.partition_for(group);
        coordinator_address(&self.meta.image(), OFFSETS_TOPIC, p, listener)
    }

    /// Creates `__consumer_offsets` if it does not exist yet. The replication factor is
    /// `offsets.topic.replication.factor`, capped at the number of registered brokers so that
    /// a single broker works out of the box.
    async fn ensure_offsets_topic(&self) -> Result<(), (ResponseError, String)> {
        let image = self.meta.image();
        if image.topic(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let config = &self.config;
        let brokers = image.brokers.len().max(1) as i16;
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
        ensure_internal_topic(&self.meta, &self.replicas, spec).await
    }
}

/// Where the coordinator of a key whose state lives in `partition` of the internal `topic` is:
/// that partition's leader, at its endpoint on `listener`. Shared with the transaction
/// coordinator, whose `__transaction_state` works the same way.
pub fn coordinator_address(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    listener: &str,
) -> Result<CoordinatorAddress, (ResponseError, String)> {
    let leader = image
        .topic(topic)
        .and_then(|t| t.partitions.iter().find(|x| x.partition == partition))
        .map_or(-1, |x| x.leader);
    match image
        .brokers
        .get(&leader)
        .and_then(|b| b.endpoint(listener))
    {
        Some((host, port)) => Ok((leader, host.to_string(), port)),
        None => Err((
            ResponseError::CoordinatorNotAvailable,
            "The coordinator is not available.".into(),
        )),
    }
}

/// Creates the internal topic `spec` describes (one Raft proposal, as CreateTopics), unless it
/// exists already, and waits until this broker's replicas know it. Shared with the transaction
/// coordinator.
pub async fn ensure_internal_topic(
    meta: &MetadataQuorum,
    replicas: &ReplicaManager,
    spec: TopicSpec,
) -> Result<(), (ResponseError, String)> {
    let name = spec.name.clone();
    let defaults = CreateDefaults {
        num_partitions: spec.num_partitions,
        replication_factor: 1,
    };
    let created = controller::create_topics(
        meta,
        &[spec],
        defaults,
        crate::log::config::validate_topic_overrides,
        false,
    )
    .await
    .pop()
    .expect("one result per topic");
    match created {
        Ok(_) | Err(CreateTopicError::AlreadyExists(_)) => {
            replicas
                .wait_for_image(meta.image().version, HOSTED_WAIT)
                .await;
            tracing::info!("created {name}");
            Ok(())
        }
        Err(e) => Err((ResponseError::CoordinatorNotAvailable, e.to_string())),
    }
}
