//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for BROKER resources: this
//! broker (`--entity-name <id>`) and the cluster-wide default (`--entity-default`, name "").
//! Changes are validated here, as Kafka's broker does before forwarding them, and committed
//! as `AlterBrokerConfigs` metadata records, which every broker applies
//! (`config::dynamic` layers them over the static settings).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::ResponseError;

use super::configs::{
    entry, list_op, list_op_refused, synonym, Detail, Failure, OP_APPEND, OP_DELETE, OP_SET,
    OP_SUBTRACT,
};
use crate::broker::Broker;
use crate::config::dynamic::{
    self, dynamic_key, dynamic_key_type, is_dynamic, is_known, is_list, kafka_default, Refusal,
    DYNAMIC_KEYS,
};
use crate::config::BROKER_SETTINGS;
use crate::log::config::{
    broker_synonyms, SOURCE_DEFAULT_CONFIG, SOURCE_STATIC_BROKER_CONFIG, TOPIC_CONFIGS,
};
use crate::meta::broker_configs::changes_between;
use crate::meta::image::MetadataRecord;

/// Kafka's UNKNOWN config type, for custom keys.
const TYPE_UNKNOWN: i8 = 0;

fn invalid_request(m: impl Into<String>) -> Failure {
    (ResponseError::InvalidRequest, m.into())
}

/// The resource a change targets: `None` for the cluster default, else this broker (Kafka's
/// broker refuses another broker's id: the admin client sends it to that broker).
fn alter_target(broker: &Broker, name: &str) -> Result<Option<i32>, Failure> {
    if name.is_empty() {
        return Ok(None);
    }
    let id: i32 = name
        .parse()
        .map_err(|_| invalid_request(format!("Node id must be an integer, but it is: {name}")))?;
    if id != broker.node_id() {
        return Err(invalid_request(format!(
            "Unexpected broker id, expected {}, but received {name}",
            broker.node_id()
        )));
    }
    Ok(Some(id))
}

/// Kafka's `prepareIncrementalConfigs` over a resource's current dynamic configs.
fn apply_ops(
    current: &BTreeMap<String, String>,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, String>, Failure> {
    let nulls: Vec<&str> = ops
        .iter()
        .filter(|(_, op, v)| *op != OP_DELETE && v.is_none())
        .map(|(k, _, _)| k.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(invalid_request(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    let mut out = current.clone();
    for (key, op, value) in ops {
        let value = value.as_deref().unwrap_or("");
        match *op {
            OP_SET => {
                out.insert(key.clone(), value.to_string());
            }
            OP_DELETE => {
                out.remove(key);
            }
            OP_APPEND | OP_SUBTRACT => {
                if !is_known(key) {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("Unknown config name: {key}"),
                    ));
                }
                if !is_list(key) {
                    return Err(list_op_refused(*op, key));
                }
                let current = out
                    .get(key)
                    .map(String::as_str)
                    .or_else(|| kafka_default(key))
                    .unwrap_or("");
                let next = list_op(current, *op, value);
                out.insert(key.clone(), next);
            }
            other => {
                return Err(invalid_request(format!("Unknown operations type {other}")));
            }
        }
    }
    Ok(out)
}

/// Validates a resource's new config set and (unless `validate_only`) commits what changed.
async fn commit(
    broker: &Broker,
    target: Option<i32>,
    current: &BTreeMap<String, String>,
    new: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), Failure> {
    dynamic::validate(&new).map_err(|r| match r {
        Refusal::InvalidRequest(m) => (ResponseError::InvalidRequest, m),
        Refusal::InvalidConfig(m) => (ResponseError::InvalidConfig, m),
    })?;
    let changes = changes_between(current, &new);
    if validate_only || changes.is_empty() {
        return Ok(());
    }
    broker
        .meta
        .propose(MetadataRecord::AlterBrokerConfigs {
            broker_id: target,
            changes,
        })
        .await
        .map_err(|e| (ResponseError::NotController, e.to_string()))?;
    // Answer once the change is in effect here (the hosted logs' configs resolved anew).
    broker.wait_hosted().await;
    Ok(())
}

/// IncrementalAlterConfigs on a BROKER resource.
pub(super) async fn incremental_alter(
    broker: &Broker,
    name: &str,
    ops: &[(String, i8, Option<String>)],
    validate_only: bool,
) -> Result<(), Failure> {
    let target = alter_target(broker, name)?;
    let current = broker.image().broker_configs.resource(target).clone();
    let new = apply_ops(&current, ops)?;
    commit(broker, target, &current, new, validate_only).await
}

/// AlterConfigs on a BROKER resource: the given set replaces the resource's dynamic configs.
pub(super) async fn alter(
    broker: &Broker,
    name: &str,
    pairs: &[(String, Option<String>)],
    validate_only: bool,
) -> Result<(), Failure> {
    let target = alter_target(broker, name)?;
    let nulls: Vec<&str> = pairs
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(invalid_request(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    let new: BTreeMap<String, String> = pairs
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    let current = broker.image().broker_configs.resource(target).clone();
    commit(broker, target, &current, new, validate_only).await
}

/// The type and documentation of a broker key Gregor describes.
fn describe_kind(key: &str) -> Option<(i8, &'static str)> {
    if let Some((_, _, t, doc)) = BROKER_SETTINGS.iter().find(|(n, _, _, _)| *n == key) {
        return Some((*t, doc));
    }
    if let Some(k) = dynamic_key(key) {
        return Some((dynamic_key_type(k), k.doc));
    }
    TOPIC_CONFIGS.iter().find_map(|def| {
        broker_synonyms(def)
            .into_iter()
            .any(|(k, _)| k == key)
            .then(|| {
                let t = if key.ends_with(".hours") || key.ends_with(".minutes") {
                    3
                } else {
                    def.config_type()
                };
                (t, def.doc)
            })
    })
}

/// DescribeConfigs of a BROKER resource: everything in effect on this broker, or for "" only
/// the cluster-wide dynamic defaults (as Kafka).
pub(super) fn describe(
    broker: &Broker,
    name: &str,
    detail: Detail,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let effective = broker.dynamic_config();
    let row = |key: &str, value: Option<&str>, per_broker: bool| {
        let synonyms = effective.synonyms(key, per_broker);
        let source = synonyms.first().map_or(SOURCE_DEFAULT_CONFIG, |s| s.2);
        let kind = describe_kind(key);
        let sensitive = kind.is_none();
        let (config_type, doc) = kind.unwrap_or((TYPE_UNKNOWN, ""));
        let mut e = entry(
            key,
            if sensitive { None } else { value },
            source,
            !is_dynamic(key),
            (config_type, doc),
            detail.version,
            detail.docs,
        );
        e.is_sensitive = sensitive;
        if detail.synonyms {
            e.synonyms = synonyms
                .iter()
                .map(|(n, v, src)| synonym(n, if sensitive { None } else { Some(v) }, *src))
                .collect();
        }
        e
    };
    if name.is_empty() {
        return Ok(effective
            .cluster_default
            .iter()
            .map(|(k, v)| row(k, Some(v), false))
            .collect());
    }
    let id: i32 = name
        .parse()
        .map_err(|_| invalid_request(format!("Broker id must be an integer, but it is: {name}")))?;
    if id != broker.node_id() {
        return Err(invalid_request(format!(
            "Unexpected broker id, expected {} or empty string, but received {name}",
            broker.node_id()
        )));
    }
    let mut keys: std::collections::BTreeSet<&str> = BROKER_SETTINGS
        .iter()
        .map(|(k, _, _, _)| *k)
        .chain(TOPIC_CONFIGS.iter().flat_map(|d| {
            broker_synonyms(d)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        }))
        .chain(DYNAMIC_KEYS.iter().filter(|k| k.listed).map(|k| k.name))
        .collect();
    // Set keys Kafka lists only once set (replication quotas) and custom keys.
    keys.extend(effective.cluster_default.keys().map(String::as_str));
    keys.extend(effective.broker.keys().map(String::as_str));
    let mut out: Vec<DescribeConfigsResourceResult> = keys
        .into_iter()
        .map(|k| row(k, effective.value(k), true))
        .collect();
    for (key, value) in fixed_settings(broker) {
        let mut e = entry(
            key,
            Some(&value),
            SOURCE_STATIC_BROKER_CONFIG,
            true,
            (2, ""),
            detail.version,
            detail.docs,
        );
        if detail.synonyms {
            e.synonyms
                .push(synonym(key, Some(&value), SOURCE_STATIC_BROKER_CONFIG));
        }
        out.push(e);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Settings that come from Gregor's own flags rather than the `[kafka]` table.
fn fixed_settings(broker: &Broker) -> [(&'static str, String); 5] {
    let node = broker.node_id().to_string();
    let dirs = broker.config.data_dir.join("logs").display().to_string();
    let listeners = &broker.config.listeners.listeners;
    let listener = listeners
        .iter()
        .map(|l| format!("{}://{}", l.name, l.bind))
        .collect::<Vec<_>>()
        .join(",");
    let advertised = listeners
        .iter()
        .map(|l| format!("{}://{}:{}", l.name, l.advertised_host, l.advertised_port))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("broker.id", node.clone()),
        ("node.id", node),
        ("log.dirs", dirs),
        ("listeners", listener),
        ("advertised.listeners", advertised),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(v: &[(&str, i8, Option<&str>)]) -> Vec<(String, i8, Option<String>)> {
        v.iter()
            .map(|(k, o, v)| (k.to_string(), *o, v.map(String::from)))
            .collect()
    }

    #[test]
    fn incremental_operations_follow_kafka() {
        let cur = BTreeMap::from([("log.retention.ms".to_string(), "1000".to_string())]);
        let out = apply_ops(
            &cur,
            &ops(&[
                ("log.retention.ms", OP_DELETE, None),
                ("message.max.bytes", OP_SET, Some("5000")),
                ("log.cleanup.policy", OP_APPEND, Some("compact")),
            ]),
        )
        .expect("valid");
        assert_eq!(out.get("log.retention.ms"), None);
        assert_eq!(
            out.get("log.cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let out = apply_ops(
            &out,
            &ops(&[("log.cleanup.policy", OP_SUBTRACT, Some("delete"))]),
        )
        .expect("valid");
        assert_eq!(
            out.get("log.cleanup.policy").map(String::as_str),
            Some("compact")
        );
        let err = apply_ops(&cur, &ops(&[("message.max.bytes", OP_APPEND, Some("1"))]))
            .expect_err("not a list");
        assert_eq!(
            err,
            (
                ResponseError::InvalidConfig,
                "Config value append is not allowed for config key: message.max.bytes".into()
            )
        );
        assert_eq!(
            apply_ops(&cur, &ops(&[("message.max.bytes", OP_SET, None)]))
                .expect_err("null")
                .0,
            ResponseError::InvalidRequest
        );
    }
}
