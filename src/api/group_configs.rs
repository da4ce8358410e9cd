//! DescribeConfigs and IncrementalAlterConfigs for GROUP resources (ConfigResource type 32,
//! `kafka-configs --entity-type groups`, what franz-go's and the Java admin's share-group setups
//! use for `share.auto.offset.reset`). Values are checked as Kafka's GroupConfig checks them,
//! against the broker's own bounds, and committed as `AlterGroupConfigs` metadata records. An
//! unset key is described with the broker's value of its synonym (DEFAULT_CONFIG), a set one
//! with source GROUP_CONFIG.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::ResponseError;

use super::configs::{
    entry, list_op_refused, synonym, Detail, Failure, OP_APPEND, OP_DELETE, OP_SET, OP_SUBTRACT,
};
use crate::broker::Broker;
use crate::log::config::SOURCE_DEFAULT_CONFIG;
use crate::meta::broker_configs::changes_between;
use crate::meta::group_configs::{
    group_config_def, validate, GroupConfigType, CONSUMER_HEARTBEAT_INTERVAL_MS,
    CONSUMER_SESSION_TIMEOUT_MS, GROUP_CONFIGS, SHARE_DELIVERY_COUNT_LIMIT,
    SHARE_HEARTBEAT_INTERVAL_MS, SHARE_ISOLATION_LEVEL, SHARE_RECORD_LOCK_DURATION_MS,
    SHARE_SESSION_TIMEOUT_MS,
};
use crate::meta::image::MetadataRecord;

pub const RESOURCE_GROUP: i8 = 32;
/// DescribeConfigs' GROUP_CONFIG source.
const SOURCE_GROUP_CONFIG: i8 = 8;

/// DescribeConfigs config types.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;

/// A bound: the broker setting that sets it, and Kafka 4.3's default for it.
type Bound = (&'static str, i64);

/// The bounds Kafka's GroupConfig.validateValues puts on a group's value: the broker's setting
/// when Gregor has it, else Kafka 4.3's default for that bound.
const BOUNDS: &[(&str, Bound, Bound)] = &[
    (
        CONSUMER_SESSION_TIMEOUT_MS,
        ("group.consumer.min.session.timeout.ms", 45_000),
        ("group.consumer.max.session.timeout.ms", 60_000),
    ),
    (
        CONSUMER_HEARTBEAT_INTERVAL_MS,
        ("group.consumer.min.heartbeat.interval.ms", 5_000),
        ("group.consumer.max.heartbeat.interval.ms", 15_000),
    ),
    (
        SHARE_SESSION_TIMEOUT_MS,
        ("group.share.min.session.timeout.ms", 45_000),
        ("group.share.max.session.timeout.ms", 60_000),
    ),
    (
        SHARE_HEARTBEAT_INTERVAL_MS,
        ("group.share.min.heartbeat.interval.ms", 5_000),
        ("group.share.max.heartbeat.interval.ms", 15_000),
    ),
    (
        SHARE_RECORD_LOCK_DURATION_MS,
        ("group.share.min.record.lock.duration.ms", 15_000),
        ("group.share.max.record.lock.duration.ms", 60_000),
    ),
    (
        SHARE_DELIVERY_COUNT_LIMIT,
        ("group.share.min.delivery.count.limit", 2),
        ("group.share.max.delivery.count.limit", 10),
    ),
];

fn invalid_request(m: impl Into<String>) -> Failure {
    (ResponseError::InvalidRequest, m.into())
}

fn invalid_config(m: impl Into<String>) -> Failure {
    (ResponseError::InvalidConfig, m.into())
}

/// The broker's value of a setting (its default when unset), as an integer.
fn broker_int(broker: &Broker, name: &str, fallback: i64) -> i64 {
    broker.dynamic_config().get(name, fallback)
}

/// The value in effect for `group` when it does not set `key`.
fn default_value(broker: &Broker, key: &str) -> String {
    let Some(def) = group_config_def(key) else {
        return String::new();
    };
    def.synonym
        .and_then(|s| broker.dynamic_config().value(s).map(str::to_string))
        .unwrap_or_else(|| def.default.to_string())
}

/// DescribeConfigs on a GROUP resource: every group config, set or not.
pub(super) fn describe(
    broker: &Broker,
    group: &str,
    detail: Detail,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    if group.is_empty() {
        return Err(invalid_request("Group name must not be empty"));
    }
    let image = broker.image();
    let set = image.group_configs.group(group);
    Ok(GROUP_CONFIGS
        .iter()
        .map(|def| {
            let kind = match def.kind {
                GroupConfigType::Int { .. } => TYPE_INT,
                GroupConfigType::Boolean => TYPE_BOOLEAN,
                GroupConfigType::Choice(_) => TYPE_STRING,
            };
            let default = default_value(broker, def.name);
            let (value, source) = match set.get(def.name) {
                Some(v) => (v.clone(), SOURCE_GROUP_CONFIG),
                None => (default.clone(), SOURCE_DEFAULT_CONFIG),
            };
            let mut e = entry(
                def.name,
                Some(&value),
                source,
                false,
                (kind, def.doc),
                detail.version,
                detail.docs,
            );
            if detail.synonyms {
                if source == SOURCE_GROUP_CONFIG {
                    e.synonyms.push(synonym(def.name, Some(&value), source));
                }
                e.synonyms
                    .push(synonym(def.name, Some(&default), SOURCE_DEFAULT_CONFIG));
            }
            e
        })
        .collect())
}

/// IncrementalAlterConfigs on a GROUP resource.
pub(super) async fn incremental_alter(
    broker: &Broker,
    group: &str,
    ops: &[(String, i8, Option<String>)],
    validate_only: bool,
) -> Result<(), Failure> {
    if group.is_empty() {
        return Err(invalid_request("Group name must not be empty"));
    }
    let current = broker.image().group_configs.group(group).clone();
    let mut new = current.clone();
    for (key, op, value) in ops {
        if group_config_def(key).is_none() {
            return Err(invalid_config(format!("Unknown group config name: {key}")));
        }
        match (*op, value) {
            (OP_SET, Some(v)) => {
                new.insert(key.clone(), v.clone());
            }
            (OP_DELETE, _) => {
                new.remove(key);
            }
            (OP_APPEND | OP_SUBTRACT, _) => return Err(list_op_refused(*op, key)),
            (OP_SET, None) => {
                return Err(invalid_request(format!(
                    "Null value not supported for : {key}"
                )))
            }
            (other, _) => return Err(invalid_request(format!("Unknown operations type {other}"))),
        }
    }
    check(broker, &new)?;
    let changes = changes_between(&current, &new);
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    broker
        .meta
        .propose(MetadataRecord::AlterGroupConfigs {
            group: group.to_string(),
            changes,
        })
        .await
        .map_err(|e| (ResponseError::NotController, e.to_string()))?;
    Ok(())
}

/// A group's whole config set, as Kafka's GroupConfig.validate checks it: each value, its
/// bounds from the broker's settings, and heartbeat intervals below session timeouts.
fn check(broker: &Broker, configs: &BTreeMap<String, String>) -> Result<(), Failure> {
    for (key, value) in configs {
        validate(key, value).map_err(invalid_config)?;
    }
    // Share fetches read uncommitted: refused rather than stored without effect.
    if configs.get(SHARE_ISOLATION_LEVEL).map(String::as_str) == Some("read_committed") {
        return Err(invalid_config(
            "Invalid value read_committed for configuration share.isolation.level: Gregor's \
             share groups read uncommitted only",
        ));
    }
    let value = |key: &str| -> i64 {
        configs
            .get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| default_value(broker, key).parse().unwrap_or(0))
    };
    for (key, (min_key, min_default), (max_key, max_default)) in BOUNDS {
        if !configs.contains_key(*key) {
            continue;
        }
        let v = value(key);
        if v < broker_int(broker, min_key, *min_default) {
            return Err(invalid_config(format!(
                "{key} must be greater than or equal to {min_key}"
            )));
        }
        if v > broker_int(broker, max_key, *max_default) {
            return Err(invalid_config(format!(
                "{key} must be less than or equal to {max_key}"
            )));
        }
    }
    for (beat, session) in [
        (CONSUMER_HEARTBEAT_INTERVAL_MS, CONSUMER_SESSION_TIMEOUT_MS),
        (SHARE_HEARTBEAT_INTERVAL_MS, SHARE_SESSION_TIMEOUT_MS),
    ] {
        if (configs.contains_key(beat) || configs.contains_key(session))
            && value(beat) >= value(session)
        {
            return Err(invalid_config(format!(
                "{beat} must be less than {session}"
            )));
        }
    }
    Ok(())
}
