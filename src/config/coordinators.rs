//! The coordinators' settings: the group coordinator's `group.*` and `offsets.*`, and the
//! transaction coordinator's `transaction.*` keys, with Kafka's names.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use super::get;
use crate::group::consumer::classic::MigrationPolicy;

/// The group coordinator's settings (`group.*`, `offsets.*`).
pub(super) fn group_config(raw: &BTreeMap<String, String>) -> Result<crate::group::GroupConfig> {
    let ms = |key: &str| get::<u64>(raw, key).map(Duration::from_millis);
    check_consumer_timeouts(raw)?;
    Ok(crate::group::GroupConfig {
        offsets_partitions: get(raw, "offsets.topic.num.partitions")?,
        offsets_replication_factor: get(raw, "offsets.topic.replication.factor")?,
        offsets_segment_bytes: get(raw, "offsets.topic.segment.bytes")?,
        min_session_timeout: ms("group.min.session.timeout.ms")?,
        max_session_timeout: ms("group.max.session.timeout.ms")?,
        initial_rebalance_delay: ms("group.initial.rebalance.delay.ms")?,
        max_size: get(raw, "group.max.size")?,
        offsets_retention: Duration::from_secs(60 * get::<u64>(raw, "offsets.retention.minutes")?),
        offsets_retention_check_interval: ms("offsets.retention.check.interval.ms")?,
        offset_metadata_max_bytes: get(raw, "offset.metadata.max.bytes")?,
        commit_timeout: ms("offsets.commit.timeout.ms")?,
        consumer_session_timeout: ms("group.consumer.session.timeout.ms")?,
        consumer_heartbeat_interval: ms("group.consumer.heartbeat.interval.ms")?,
        consumer_max_size: get(raw, "group.consumer.max.size")?,
        consumer_assignors: consumer_assignors(raw)?,
        migration_policy: MigrationPolicy::parse(&get::<String>(
            raw,
            "group.consumer.migration.policy",
        )?)
        .ok_or_else(|| {
            anyhow::anyhow!("[kafka] group.consumer.migration.policy must be disabled, upgrade, downgrade or bidirectional")
        })?,
    })
}

/// Kafka's checks of the consumer group session timeout and heartbeat interval against their
/// bounds, and of the migration policy's value.
fn check_consumer_timeouts(raw: &BTreeMap<String, String>) -> Result<()> {
    let v = |key: &str| get::<u64>(raw, key);
    let (session, min_s, max_s) = (
        v("group.consumer.session.timeout.ms")?,
        v("group.consumer.min.session.timeout.ms")?,
        v("group.consumer.max.session.timeout.ms")?,
    );
    let (beat, min_b, max_b) = (
        v("group.consumer.heartbeat.interval.ms")?,
        v("group.consumer.min.heartbeat.interval.ms")?,
        v("group.consumer.max.heartbeat.interval.ms")?,
    );
    if session < min_s || session > max_s {
        bail!("[kafka] group.consumer.session.timeout.ms must be between group.consumer.min.session.timeout.ms and group.consumer.max.session.timeout.ms");
    }
    if beat < min_b || beat > max_b {
        bail!("[kafka] group.consumer.heartbeat.interval.ms must be between group.consumer.min.heartbeat.interval.ms and group.consumer.max.heartbeat.interval.ms");
    }
    if beat >= session {
        bail!("[kafka] group.consumer.heartbeat.interval.ms must be less than group.consumer.session.timeout.ms");
    }
    let policy: String = get(raw, "group.consumer.migration.policy")?;
    if MigrationPolicy::parse(&policy).is_none() {
        bail!("[kafka] group.consumer.migration.policy must be disabled, upgrade, downgrade or bidirectional");
    }
    Ok(())
}

/// `group.consumer.assignors`: each must be one this broker has.
fn consumer_assignors(raw: &BTreeMap<String, String>) -> Result<Vec<&'static str>> {
    let list: String = get(raw, "group.consumer.assignors")?;
    let mut out = Vec::new();
    for a in list.split(',').filter(|a| !a.trim().is_empty()) {
        match crate::group::consumer::assignor::assignor_name(a) {
            Some(name) => out.push(name),
            None => bail!("[kafka] group.consumer.assignors: unknown assignor {a}"),
        }
    }
    if out.is_empty() {
        bail!("[kafka] group.consumer.assignors must name at least one assignor");
    }
    Ok(out)
}

/// Share groups' settings (`group.share.*`) and the share coordinator's
/// (`share.coordinator.*`), with Kafka's bounds.
pub(super) fn share_config(raw: &BTreeMap<String, String>) -> Result<crate::share::ShareConfig> {
    let config = crate::share::ShareConfig {
        record_lock_duration_ms: get(raw, "group.share.record.lock.duration.ms")?,
        delivery_count_limit: get(raw, "group.share.delivery.count.limit")?,
        max_record_locks: get(raw, "group.share.partition.max.record.locks")?,
        session_timeout: Duration::from_millis(get(raw, "group.share.session.timeout.ms")?),
        heartbeat_interval_ms: get(raw, "group.share.heartbeat.interval.ms")?,
        max_size: get(raw, "group.share.max.size")?,
        state_partitions: get(raw, "share.coordinator.state.topic.num.partitions")?,
        state_replication_factor: get(raw, "share.coordinator.state.topic.replication.factor")?,
        state_min_isr: get(raw, "share.coordinator.state.topic.min.isr")?,
        state_segment_bytes: get(raw, "share.coordinator.state.topic.segment.bytes")?,
        write_timeout: Duration::from_millis(get(raw, "share.coordinator.write.timeout.ms")?),
        max_sessions: get(raw, "max.share.session.cache.size")?,
    };
    if !(1000..=3_600_000).contains(&config.record_lock_duration_ms) {
        bail!("[kafka] group.share.record.lock.duration.ms must be between 1000 and 3600000");
    }
    if !(2..=10).contains(&config.delivery_count_limit) {
        bail!("[kafka] group.share.delivery.count.limit must be between 2 and 10");
    }
    if !(100..=10_000).contains(&config.max_record_locks) {
        bail!("[kafka] group.share.partition.max.record.locks must be between 100 and 10000");
    }
    if config.heartbeat_interval_ms < 1 || config.max_size < 1 || config.max_sessions < 1 {
        bail!("[kafka] group.share.heartbeat.interval.ms, group.share.max.size and max.share.session.cache.size must be at least 1");
    }
    if config.state_partitions < 1
        || config.state_replication_factor < 1
        || config.state_min_isr < 1
    {
        bail!("[kafka] share.coordinator.state.topic.* must be at least 1");
    }
    Ok(config)
}

/// The transaction coordinator's settings (`transaction.*`, `transactional.id.*`).
pub(super) fn txn_config(raw: &BTreeMap<String, String>) -> Result<crate::txn::TxnConfig> {
    let ms = |key: &str| get::<u64>(raw, key).map(Duration::from_millis);
    let config = crate::txn::TxnConfig {
        state_partitions: get(raw, "transaction.state.log.num.partitions")?,
        state_replication_factor: get(raw, "transaction.state.log.replication.factor")?,
        state_min_isr: get(raw, "transaction.state.log.min.isr")?,
        state_segment_bytes: get(raw, "transaction.state.log.segment.bytes")?,
        max_timeout_ms: get(raw, "transaction.max.timeout.ms")?,
        id_expiration_ms: get(raw, "transactional.id.expiration.ms")?,
        abort_check_interval: ms("transaction.abort.timed.out.transaction.cleanup.interval.ms")?,
        expiration_check_interval: ms(
            "transaction.remove.expired.transaction.cleanup.interval.ms",
        )?,
        verification_enable: get(raw, "transaction.partition.verification.enable")?,
    };
    if config.state_partitions < 1 {
        bail!("[kafka] transaction.state.log.num.partitions must be at least 1");
    }
    if config.state_replication_factor < 1 || config.state_min_isr < 1 {
        bail!("[kafka] transaction.state.log.replication.factor and min.isr must be at least 1");
    }
    if config.max_timeout_ms < 1 || config.id_expiration_ms < 1 {
        bail!("[kafka] transaction.max.timeout.ms and transactional.id.expiration.ms must be at least 1");
    }
    if config.abort_check_interval.is_zero() || config.expiration_check_interval.is_zero() {
        bail!("[kafka] the transaction cleanup intervals must be at least 1 ms");
    }
    Ok(config)
}
