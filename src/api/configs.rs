//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topic and broker resources.
//! Topic overrides live in the metadata log; broker settings are static (from the config file
//! and environment), so they can be described but not altered.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::config::BROKER_SETTINGS;
use crate::log::config::{
    broker_synonyms, topic_config_def, validate_topic_overrides, SOURCE_DEFAULT_CONFIG,
    SOURCE_STATIC_BROKER_CONFIG, SOURCE_TOPIC_CONFIG, TOPIC_CONFIGS,
};
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::image::{ApplyOutcome, MetadataRecord};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Failure = (ResponseError, String);

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Whether the session may do `operation` on a config resource: the topic for a topic, the
/// cluster for a broker (Kafka's errors otherwise).
fn config_access(
    broker: &Broker,
    session: &Session,
    resource_type: i8,
    name: &str,
    operation: AclOperation,
) -> Result<(), Failure> {
    let image = broker.image();
    let (allowed, error) = match resource_type {
        RESOURCE_TOPIC => (
            session.allowed(&image, operation, ResourceType::Topic, name),
            ResponseError::TopicAuthorizationFailed,
        ),
        _ => (
            session.allowed_on_cluster(&image, operation),
            ResponseError::ClusterAuthorizationFailed,
        ),
    };
    if allowed {
        Ok(())
    } else {
        Err((error, error.to_string()))
    }
}

/// Needs DESCRIBE_CONFIGS on each topic, or on the cluster for brokers.
pub fn describe(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results =
        req.resources
            .into_iter()
            .map(|r| {
                let keys: Option<HashSet<String>> = r
                    .configuration_keys
                    .map(|k| k.iter().map(|k| k.to_string()).collect());
                let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.contains(name));
                let detail = Detail {
                    version,
                    synonyms: req.include_synonyms,
                    docs: req.include_documentation,
                };
                let access = config_access(
                    broker,
                    session,
                    r.resource_type,
                    &r.resource_name,
                    AclOperation::DescribeConfigs,
                );
                let configs = match r.resource_type {
                    _ if matches!(r.resource_type, RESOURCE_TOPIC | RESOURCE_BROKER)
                        && access.is_err() =>
                    {
                        access.map(|()| Vec::new())
                    }
                    RESOURCE_TOPIC => describe_topic(broker, &r.resource_name, detail),
                    RESOURCE_BROKER => describe_broker(broker, &r.resource_name, detail),
                    other => Err((
                        ResponseError::InvalidRequest,
                        format!("Unsupported resource type {other}"),
                    )),
                };
                let result = DescribeConfigsResult::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone());
                match configs {
                    Ok(configs) => result
                        .with_configs(configs.into_iter().filter(|c| wanted(&c.name)).collect()),
                    Err((e, m)) => result
                        .with_error_code(code(e))
                        .with_error_message(Some(s(m))),
                }
            })
            .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    name: &str,
    value: Option<&str>,
    source: i8,
    read_only: bool,
    (config_type, doc): (i8, &str),
    version: i16,
    with_doc: bool,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(name))
        .with_value(value.map(s))
        .with_read_only(read_only)
        .with_is_sensitive(false)
        .with_config_source(source);
    if version >= 3 {
        e.config_type = config_type;
        e.documentation = with_doc.then(|| s(doc));
    }
    e
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(s(name))
        .with_value(Some(s(value)))
        .with_source(source)
}

/// What a request asked to be included.
#[derive(Clone, Copy)]
struct Detail {
    version: i16,
    synonyms: bool,
    docs: bool,
}

fn describe_topic(
    broker: &Broker,
    name: &str,
    detail: Detail,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let image = broker.image();
    let topic = image.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )
    })?;
    let raw = &broker.config.kafka.raw;
    Ok(broker
        .config
        .topic_defaults
        .describe(&topic.configs)
        .into_iter()
        .filter_map(|(key, value, source)| {
            // `describe` lists only defined keys; an unknown one is skipped, never a panic.
            let def = topic_config_def(key)?;
            let kind = (def.config_type(), def.doc);
            let mut e = entry(
                key,
                Some(&value),
                source,
                false,
                kind,
                detail.version,
                detail.docs,
            );
            if detail.synonyms {
                if let Some(v) = topic.configs.get(key) {
                    e.synonyms.push(synonym(key, v, SOURCE_TOPIC_CONFIG));
                }
                for (broker_key, default) in broker_synonyms(def) {
                    if let Some(v) = raw.get(broker_key) {
                        e.synonyms
                            .push(synonym(broker_key, v, SOURCE_STATIC_BROKER_CONFIG));
                    }
                    if let Some(d) = default {
                        e.synonyms
                            .push(synonym(broker_key, d, SOURCE_DEFAULT_CONFIG));
                    }
                }
            }
            Some(e)
        })
        .collect())
}

fn describe_broker(
    broker: &Broker,
    name: &str,
    detail: Detail,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    check_broker_resource(broker, name)?;
    let raw = &broker.config.kafka.raw;
    // name -> (default, (type, doc))
    let mut rows: BTreeMap<&str, (Option<&str>, (i8, &str))> = BTreeMap::new();
    for (key, default, config_type, doc) in BROKER_SETTINGS {
        rows.insert(key, (Some(default), (*config_type, doc)));
    }
    for def in TOPIC_CONFIGS {
        for (broker_key, default) in broker_synonyms(def) {
            let config_type = if broker_key.ends_with(".hours") || broker_key.ends_with(".minutes")
            {
                3
            } else {
                def.config_type()
            };
            rows.insert(broker_key, (default, (config_type, def.doc)));
        }
    }
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
    let fixed: [(&str, String); 5] = [
        ("broker.id", node.clone()),
        ("node.id", node),
        ("log.dirs", dirs),
        ("listeners", listener),
        ("advertised.listeners", advertised),
    ];
    let mut out: Vec<DescribeConfigsResourceResult> = rows
        .into_iter()
        .map(|(key, (default, kind))| {
            let (value, source) = match raw.get(key) {
                Some(v) => (Some(v.as_str()), SOURCE_STATIC_BROKER_CONFIG),
                None => (default, SOURCE_DEFAULT_CONFIG),
            };
            let mut e = entry(key, value, source, true, kind, detail.version, detail.docs);
            if detail.synonyms {
                if let Some(v) = raw.get(key) {
                    e.synonyms
                        .push(synonym(key, v, SOURCE_STATIC_BROKER_CONFIG));
                }
                if let Some(d) = default {
                    e.synonyms.push(synonym(key, d, SOURCE_DEFAULT_CONFIG));
                }
            }
            e
        })
        .collect();
    for (key, value) in fixed {
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
                .push(synonym(key, &value, SOURCE_STATIC_BROKER_CONFIG));
        }
        out.push(e);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn check_broker_resource(broker: &Broker, name: &str) -> Result<(), Failure> {
    if name.is_empty() || name == broker.node_id().to_string() {
        Ok(())
    } else {
        Err((
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                broker.node_id()
            ),
        ))
    }
}

/// Broker settings are static here: any change is refused, as Kafka refuses read-only ones.
fn refuse_broker_change(broker: &Broker, name: &str, keys: &[String]) -> Result<(), Failure> {
    check_broker_resource(broker, name)?;
    Err((
        ResponseError::InvalidConfig,
        format!("Cannot update these configs dynamically: {keys:?}"),
    ))
}

/// Validates and (unless `validate_only`) commits a topic's new override set.
async fn apply_topic_configs(
    broker: &Broker,
    name: &str,
    build: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Failure>,
    validate_only: bool,
) -> Result<(), Failure> {
    let image = broker.image();
    let topic = image.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )
    })?;
    let configs = build(&topic.configs)?;
    validate_topic_overrides(&configs).map_err(|m| (ResponseError::InvalidConfig, m))?;
    if validate_only {
        return Ok(());
    }
    let outcome = broker
        .meta
        .propose(MetadataRecord::SetTopicConfigs {
            topic_id: topic.topic_id,
            configs,
        })
        .await
        .map_err(|e| (ResponseError::NotController, e.to_string()))?;
    match outcome {
        ApplyOutcome::Ok => {
            broker.replicas.apply_image(&broker.image());
            Ok(())
        }
        _ => Err((
            ResponseError::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )),
    }
}

/// Needs ALTER_CONFIGS on each topic, or on the cluster for brokers.
pub async fn alter(
    broker: &Broker,
    session: &Session,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let access = config_access(
            broker,
            session,
            r.resource_type,
            &r.resource_name,
            AclOperation::AlterConfigs,
        );
        let pairs: Vec<(String, Option<String>)> = r
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let result = match r.resource_type {
            RESOURCE_TOPIC | RESOURCE_BROKER if access.is_err() => access,
            RESOURCE_TOPIC => {
                let build = |_: &BTreeMap<String, String>| {
                    // AlterConfigs replaces the whole override set.
                    let mut out = BTreeMap::new();
                    for (k, v) in &pairs {
                        match v {
                            Some(v) => {
                                out.insert(k.clone(), v.clone());
                            }
                            None => {
                                return Err((
                                    ResponseError::InvalidRequest,
                                    format!("Null value not supported for : {k}"),
                                ))
                            }
                        }
                    }
                    Ok(out)
                };
                apply_topic_configs(broker, &r.resource_name, build, req.validate_only).await
            }
            RESOURCE_BROKER => {
                let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
                refuse_broker_change(broker, &r.resource_name, &keys)
            }
            other => Err((
                ResponseError::InvalidRequest,
                format!("Unsupported resource type {other}"),
            )),
        };
        let mut resp = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err((e, m)) = result {
            resp.error_code = code(e);
            resp.error_message = Some(s(m));
        }
        responses.push(resp);
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// Applies IncrementalAlterConfigs operations to a topic's overrides.
fn incremental(
    current: &BTreeMap<String, String>,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = current.clone();
    for (key, op, value) in ops {
        let def = topic_config_def(key).ok_or_else(|| {
            (
                ResponseError::InvalidConfig,
                format!("Unknown topic config name: {key}"),
            )
        })?;
        let effective = || -> Vec<String> {
            out.get(key)
                .map(String::as_str)
                .unwrap_or(def.default)
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        };
        match (*op, value) {
            (OP_SET, Some(v)) => {
                out.insert(key.clone(), v.clone());
            }
            (OP_DELETE, _) => {
                out.remove(key);
            }
            (OP_APPEND | OP_SUBTRACT, _) if !def.is_list() => {
                let verb = if *op == OP_APPEND {
                    "append"
                } else {
                    "subtract"
                };
                return Err((
                    ResponseError::InvalidConfig,
                    format!("Config value {verb} is not allowed for config key: {key}"),
                ));
            }
            (OP_APPEND, Some(v)) => {
                let mut items = effective();
                for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                out.insert(key.clone(), items.join(","));
            }
            (OP_SUBTRACT, Some(v)) => {
                let remove: Vec<&str> = v.split(',').map(str::trim).collect();
                let items: Vec<String> = effective()
                    .into_iter()
                    .filter(|i| !remove.contains(&i.as_str()))
                    .collect();
                out.insert(key.clone(), items.join(","));
            }
            (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Null value not supported for : {key}"),
                ))
            }
            (other, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown config operation {other} for {key}"),
                ))
            }
        }
    }
    Ok(out)
}

/// Needs ALTER_CONFIGS on each topic, or on the cluster for brokers.
pub async fn incremental_alter(
    broker: &Broker,
    session: &Session,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let access = config_access(
            broker,
            session,
            r.resource_type,
            &r.resource_name,
            AclOperation::AlterConfigs,
        );
        let ops: Vec<(String, i8, Option<String>)> = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let mut seen = HashSet::new();
        let duplicate = ops.iter().find(|(k, _, _)| !seen.insert(k.clone()));
        let result = match (duplicate, r.resource_type) {
            (Some((k, _, _)), _) => Err((
                ResponseError::InvalidRequest,
                format!("Error due to duplicate config keys : {k}"),
            )),
            (None, RESOURCE_TOPIC | RESOURCE_BROKER) if access.is_err() => access,
            (None, RESOURCE_TOPIC) => {
                let build = |current: &BTreeMap<String, String>| incremental(current, &ops);
                apply_topic_configs(broker, &r.resource_name, build, req.validate_only).await
            }
            (None, RESOURCE_BROKER) => {
                let keys: Vec<String> = ops.iter().map(|(k, _, _)| k.clone()).collect();
                refuse_broker_change(broker, &r.resource_name, &keys)
            }
            (None, other) => Err((
                ResponseError::InvalidRequest,
                format!("Unsupported resource type {other}"),
            )),
        };
        let mut resp = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        if let Err((e, m)) = result {
            resp.error_code = code(e);
            resp.error_message = Some(s(m));
        }
        responses.push(resp);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
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
    fn incremental_operations() {
        let mut cur = BTreeMap::new();
        cur.insert("retention.ms".to_string(), "1000".to_string());
        let out = incremental(
            &cur,
            &ops(&[
                ("retention.ms", OP_DELETE, None),
                ("flush.messages", OP_SET, Some("1")),
            ]),
        )
        .expect("valid");
        assert_eq!(out.get("retention.ms"), None);
        assert_eq!(out.get("flush.messages").map(String::as_str), Some("1"));
        let out = incremental(
            &cur,
            &ops(&[("cleanup.policy", OP_APPEND, Some("compact"))]),
        )
        .expect("list");
        assert_eq!(
            out.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let out = incremental(
            &out,
            &ops(&[("cleanup.policy", OP_SUBTRACT, Some("compact"))]),
        )
        .expect("list");
        assert_eq!(
            out.get("cleanup.policy").map(String::as_str),
            Some("delete")
        );
        assert!(incremental(&cur, &ops(&[("retention.ms", OP_APPEND, Some("5"))])).is_err());
        assert!(incremental(&cur, &ops(&[("nope", OP_SET, Some("5"))])).is_err());
    }
}
