//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: the requests, access checks and
//! topic resources (overrides in the metadata log). BROKER resources are `broker_configs`'.

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
use crate::log::config::{topic_config_def, validate_topic_overrides};
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::image::{ApplyOutcome, MetadataRecord};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
use super::group_configs::RESOURCE_GROUP;

/// IncrementalAlterConfigs operation types.
pub(super) const OP_SET: i8 = 0;
pub(super) const OP_DELETE: i8 = 1;
pub(super) const OP_APPEND: i8 = 2;
pub(super) const OP_SUBTRACT: i8 = 3;

pub(super) type Failure = (ResponseError, String);

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
        RESOURCE_GROUP => (
            session.allowed(&image, operation, ResourceType::Group, name),
            ResponseError::GroupAuthorizationFailed,
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
    let results = req
        .resources
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
                _ if matches!(
                    r.resource_type,
                    RESOURCE_TOPIC | RESOURCE_BROKER | RESOURCE_GROUP
                ) && access.is_err() =>
                {
                    access.map(|()| Vec::new())
                }
                RESOURCE_TOPIC => describe_topic(broker, &r.resource_name, detail),
                RESOURCE_BROKER => {
                    super::broker_configs::describe(broker, &r.resource_name, detail)
                }
                RESOURCE_GROUP => super::group_configs::describe(broker, &r.resource_name, detail),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match configs {
                Ok(configs) => {
                    result.with_configs(configs.into_iter().filter(|c| wanted(&c.name)).collect())
                }
                Err((e, m)) => result
                    .with_error_code(code(e))
                    .with_error_message(Some(s(m))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub(super) fn entry(
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

pub(super) fn synonym(name: &str, value: Option<&str>, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(s(name))
        .with_value(value.map(s))
        .with_source(source)
}

/// What a request asked to be included.
#[derive(Clone, Copy)]
pub(super) struct Detail {
    pub version: i16,
    pub synonyms: bool,
    pub docs: bool,
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
    Ok(broker
        .dynamic_config()
        .describe_topic(&topic.configs)
        .into_iter()
        .filter_map(|(key, value, source, synonyms)| {
            // `describe_topic` lists only defined keys; an unknown one is skipped, never a panic.
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
                e.synonyms = synonyms
                    .iter()
                    .map(|(n, v, src)| synonym(n, Some(v), *src))
                    .collect();
            }
            Some(e)
        })
        .collect())
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

/// Kafka's APPEND and SUBTRACT on a list config, for topics and brokers alike
/// (`prepareIncrementalConfigs`): the current value's items, with the value's items appended
/// when absent, or removed; items are trimmed and empty ones dropped.
pub(super) fn list_op(current: &str, op: i8, value: &str) -> String {
    let items = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    let mut out = items(current);
    let given = items(value);
    if op == OP_APPEND {
        for item in given {
            if !out.contains(&item) {
                out.push(item);
            }
        }
    } else {
        out.retain(|i| !given.contains(i));
    }
    out.join(",")
}

/// The refusal of APPEND or SUBTRACT on a key that is not a list.
pub(super) fn list_op_refused(op: i8, key: &str) -> Failure {
    let verb = if op == OP_APPEND {
        "append"
    } else {
        "subtract"
    };
    (
        ResponseError::InvalidConfig,
        format!("Config value {verb} is not allowed for config key: {key}"),
    )
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
                super::broker_configs::alter(broker, &r.resource_name, &pairs, req.validate_only)
                    .await
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
        match (*op, value) {
            (OP_SET, Some(v)) => {
                out.insert(key.clone(), v.clone());
            }
            (OP_DELETE, _) => {
                out.remove(key);
            }
            (OP_APPEND | OP_SUBTRACT, _) if !def.is_list() => {
                return Err(list_op_refused(*op, key));
            }
            (OP_APPEND | OP_SUBTRACT, Some(v)) => {
                let current = out.get(key).map(String::as_str).unwrap_or(def.default);
                let next = list_op(current, *op, v);
                out.insert(key.clone(), next);
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
            (None, RESOURCE_TOPIC | RESOURCE_BROKER | RESOURCE_GROUP) if access.is_err() => access,
            (None, RESOURCE_TOPIC) => {
                let build = |current: &BTreeMap<String, String>| incremental(current, &ops);
                apply_topic_configs(broker, &r.resource_name, build, req.validate_only).await
            }
            (None, RESOURCE_GROUP) => {
                super::group_configs::incremental_alter(
                    broker,
                    &r.resource_name,
                    &ops,
                    req.validate_only,
                )
                .await
            }
            (None, RESOURCE_BROKER) => {
                super::broker_configs::incremental_alter(
                    broker,
                    &r.resource_name,
                    &ops,
                    req.validate_only,
                )
                .await
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
