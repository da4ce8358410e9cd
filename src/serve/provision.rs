//! Topic provisioning: the config's `[[provisioning.topics]]` that do not exist yet are created
//! at startup, in one proposal, and retried until the cluster can host them (brokers that start
//! together register one by one). A topic that exists with other settings is reported, never
//! changed.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::config::TopicToProvision;
use crate::meta::controller::{CreateTopicError, TopicSpec};
use crate::meta::image::TopicImage;

/// How often provisioning tries again while the cluster cannot host a topic yet.
const PROVISION_RETRY: Duration = Duration::from_secs(1);

/// Creates the provisioned topics that do not exist yet. Returns those to try again later.
pub(super) async fn provision_topics(
    broker: &Broker,
    topics: Vec<TopicToProvision>,
) -> Vec<TopicToProvision> {
    let image = broker.image();
    let (existing, missing): (Vec<_>, Vec<_>) = topics
        .into_iter()
        .partition(|(name, ..)| image.topic(name).is_some());
    for topic in &existing {
        if let Some(t) = image.topic(&topic.0) {
            report_differences(t, topic);
        }
    }
    if missing.is_empty() {
        return Vec::new();
    }
    let specs: Vec<TopicSpec> = missing
        .iter()
        .map(|(name, partitions, rf, configs)| TopicSpec {
            name: name.clone(),
            num_partitions: *partitions,
            replication_factor: *rf,
            assignments: None,
            configs: configs.clone(),
        })
        .collect();
    let created = broker.create_topics(&specs, false).await;
    let mut retry = Vec::new();
    for (topic, created) in missing.into_iter().zip(created) {
        let name = &topic.0;
        match created {
            Ok(t) => {
                tracing::info!(topic = %name, partitions = t.partitions.len(), "provisioned topic")
            }
            // Another broker provisioned it first.
            Err(CreateTopicError::AlreadyExists(_)) => {}
            // Not enough brokers registered yet, or no controller: the cluster is still forming.
            Err(
                e @ (CreateTopicError::InvalidReplicationFactor(_)
                | CreateTopicError::NotController(_)),
            ) => {
                tracing::info!(topic = %name, reason = %e, "provisioning topic: waiting for the cluster");
                retry.push(topic);
            }
            Err(e) => tracing::error!(topic = %name, error = %e, "provisioning topic failed"),
        }
    }
    retry
}

/// Retries the provisioned topics the cluster could not host at startup, until it can.
pub(super) async fn keep_provisioning(broker: Arc<Broker>, mut pending: Vec<TopicToProvision>) {
    while !pending.is_empty() {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROVISION_RETRY) => {}
        }
        pending = provision_topics(&broker, pending).await;
    }
}

/// Warns when a provisioned topic exists with other settings than the config's.
fn report_differences(existing: &TopicImage, (name, partitions, rf, configs): &TopicToProvision) {
    let have_partitions = existing.partitions.len() as i32;
    let have_rf = existing
        .partitions
        .first()
        .map(|p| p.replicas.len() as i16)
        .unwrap_or(0);
    let mut differences = Vec::new();
    if *partitions != -1 && *partitions != have_partitions {
        differences.push(format!(
            "partitions {have_partitions} (config says {partitions})"
        ));
    }
    if *rf != -1 && *rf != have_rf {
        differences.push(format!("replication factor {have_rf} (config says {rf})"));
    }
    if existing.configs != *configs {
        differences.push(format!(
            "configs {:?} (config says {configs:?})",
            existing.configs
        ));
    }
    if !differences.is_empty() {
        tracing::warn!(topic = %name, differences = %differences.join("; "),
            "provisioned topic exists with other settings; leaving it unchanged");
    }
}
