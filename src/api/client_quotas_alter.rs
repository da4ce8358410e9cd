//! AlterClientQuotas (KIP-546): `kafka-configs --alter --entity-type users|clients`. Each entry
//! is checked as Kafka's ClientQuotaControlManager checks it (entity types and names, known
//! keys, positive values, integral values for the byte rates, no duplicate keys or entities);
//! the changed values of every valid entry become one `ClientQuotas` metadata record, unless
//! the request only validates. Needs ALTER_CONFIGS on the cluster.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::alter_client_quotas_request::EntryData as RequestEntry;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::client_quotas::{
    key_type, ClientQuotaRecord, ClientQuotaStore, EntityName, QuotaEntity, QuotaKeyType,
    QuotaValue,
};
use crate::meta::image::{ApplyOutcome, MetadataRecord};

type Failure = (ResponseError, String);

fn invalid(message: impl Into<String>) -> Failure {
    (ResponseError::InvalidRequest, message.into())
}

/// The entity as Kafka prints it in messages (`ClientQuotaEntity(entries={user=alice})`).
fn entity_text(entry: &RequestEntry) -> String {
    let parts: Vec<String> = entry
        .entity
        .iter()
        .map(|e| {
            format!(
                "{}={}",
                e.entity_type.as_str(),
                e.entity_name.as_deref().unwrap_or("null")
            )
        })
        .collect();
    format!("ClientQuotaEntity(entries={{{}}})", parts.join(", "))
}

/// The entity of a request entry (a later component of the same type wins, as in Kafka's
/// map of them), checked as Kafka's validateEntity and configKeysForEntityType do.
fn entity(entry: &RequestEntry) -> Result<QuotaEntity, Failure> {
    let mut types: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for e in &entry.entity {
        types.insert(e.entity_type.as_str(), e.entity_name.as_deref());
    }
    if types.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    let mut out = QuotaEntity::default();
    for (entity_type, name) in &types {
        let name = EntityName::from_protocol(*name);
        match *entity_type {
            "user" => out.user = Some(name.clone()),
            "client-id" => out.client_id = Some(name.clone()),
            "ip" => {}
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )))
            }
        }
        if name == EntityName::Named(String::new()) {
            return Err(invalid(format!("Empty {entity_type} not supported")));
        }
    }
    if types.contains_key("ip") {
        if out.user.is_some() || out.client_id.is_some() {
            return Err(invalid(
                "Invalid quota entity combination, IP entity shouldnot be combined with User or \
                 ClientId",
            ));
        }
        // Kafka's IP entities carry `connection_creation_rate`, which Gregor does not enforce.
        return Err(invalid(
            "IP quotas (connection_creation_rate) are not supported by this broker",
        ));
    }
    Ok(out)
}

/// Checks one key and value (Kafka's validateQuotaKeyValue).
fn check_value(key: &str, value: f64) -> Result<(), Failure> {
    let Some(kind) = key_type(key) else {
        return Err(invalid(format!("Invalid configuration key {key}")));
    };
    if value.is_nan() || value <= 0.0 {
        return Err(invalid(format!("Quota {key} must be greater than 0")));
    }
    if kind == QuotaKeyType::Long {
        if value > i64::MAX as f64 {
            return Err(invalid(format!(
                "Proposed value for {key} is too large for a LONG."
            )));
        }
        if (value % 1.0).abs() > 1e-6 {
            return Err(invalid(format!("{key} cannot be a fractional value.")));
        }
    }
    Ok(())
}

/// The records that make one entry's changes, against the current quotas.
fn entry_records(
    entry: &RequestEntry,
    current: &ClientQuotaStore,
) -> Result<(QuotaEntity, Vec<ClientQuotaRecord>), Failure> {
    let mut ops: HashMap<&str, Option<f64>> = HashMap::new();
    for op in &entry.ops {
        let value = (!op.remove).then_some(op.value);
        if ops.insert(op.key.as_str(), value).is_some() {
            return Err(invalid(format!(
                "Duplicate quota key {} not updating quota for this entity {}",
                op.key.as_str(),
                entity_text(entry)
            )));
        }
    }
    let entity = entity(entry)?;
    let existing = current.get(&entity);
    let mut records = Vec::new();
    for (key, value) in ops {
        let now = existing.and_then(|q| q.get(key)).map(|v| v.0);
        match value {
            None if now.is_some() => records.push(ClientQuotaRecord {
                entity: entity.clone(),
                key: key.to_string(),
                value: None,
            }),
            None => {}
            Some(v) => {
                check_value(key, v)?;
                if now != Some(v) {
                    records.push(ClientQuotaRecord {
                        entity: entity.clone(),
                        key: key.to_string(),
                        value: Some(QuotaValue(v)),
                    });
                }
            }
        }
    }
    Ok((entity, records))
}

pub async fn alter(
    broker: &Broker,
    session: &Session,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let image = broker.image();
    let respond_entity = |entry: &RequestEntry| -> Vec<EntityData> {
        entry
            .entity
            .iter()
            .map(|e| {
                EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect()
    };
    let result = |entry: &RequestEntry, outcome: &Result<(), Failure>| {
        let r = EntryData::default().with_entity(respond_entity(entry));
        match outcome {
            Ok(()) => r,
            Err((e, m)) => r
                .with_error_code(code(*e))
                .with_error_message(Some(StrBytes::from_string(m.clone()))),
        }
    };
    if !session.allowed_on_cluster(&image, AclOperation::AlterConfigs) {
        let denied = Err((
            ResponseError::ClusterAuthorizationFailed,
            ResponseError::ClusterAuthorizationFailed.to_string(),
        ));
        return AlterClientQuotasResponse::default()
            .with_entries(req.entries.iter().map(|e| result(e, &denied)).collect());
    }
    // One outcome per entity, in request order; a repeated entity fails (as in Kafka).
    let mut outcomes: Vec<(&RequestEntry, Result<(), Failure>)> = Vec::new();
    let mut seen: HashMap<QuotaEntity, usize> = HashMap::new();
    let mut records: Vec<(usize, Vec<ClientQuotaRecord>)> = Vec::new();
    for entry in &req.entries {
        match entry_records(entry, &image.client_quotas) {
            Ok((entity, recs)) => {
                if let Some(&i) = seen.get(&entity) {
                    outcomes[i].1 = Err(invalid(format!(
                        "Ignoring duplicate entity {}",
                        entity_text(entry)
                    )));
                    records.retain(|(at, _)| *at != i);
                    continue;
                }
                seen.insert(entity, outcomes.len());
                records.push((outcomes.len(), recs));
                outcomes.push((entry, Ok(())));
            }
            Err(f) => outcomes.push((entry, Err(f))),
        }
    }
    let all: Vec<ClientQuotaRecord> = records.into_iter().flat_map(|(_, r)| r).collect();
    if !req.validate_only && !all.is_empty() {
        let stored = match broker.meta.propose(MetadataRecord::ClientQuotas(all)).await {
            Ok(ApplyOutcome::Ok) => Ok(()),
            Ok(other) => Err((
                ResponseError::UnknownServerError,
                format!("the quota change was not applied: {other:?}"),
            )),
            Err(e) => Err((ResponseError::UnknownServerError, e.to_string())),
        };
        if let Err(f) = stored {
            for (_, outcome) in outcomes.iter_mut().filter(|(_, o)| o.is_ok()) {
                *outcome = Err(f.clone());
            }
        } else {
            tracing::info!("client quotas altered");
        }
    }
    AlterClientQuotasResponse::default().with_entries(
        outcomes
            .iter()
            .map(|(entry, outcome)| result(entry, outcome))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData as ReqEntity, OpData};

    use super::*;

    fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, f64, bool)]) -> RequestEntry {
        RequestEntry::default()
            .with_entity(
                entity
                    .iter()
                    .map(|(t, n)| {
                        ReqEntity::default()
                            .with_entity_type(StrBytes::from_string(t.to_string()))
                            .with_entity_name(n.map(|n| StrBytes::from_string(n.to_string())))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|(k, v, remove)| {
                        OpData::default()
                            .with_key(StrBytes::from_string(k.to_string()))
                            .with_value(*v)
                            .with_remove(*remove)
                    })
                    .collect(),
            )
    }

    fn check(e: RequestEntry) -> Result<usize, String> {
        entry_records(&e, &ClientQuotaStore::default())
            .map(|(_, r)| r.len())
            .map_err(|(_, m)| m)
    }

    #[test]
    fn entries_are_validated_as_kafka_does() {
        let user = [("user", Some("alice"))];
        assert_eq!(
            check(entry(&user, &[("producer_byte_rate", 1024.0, false)])),
            Ok(1)
        );
        assert_eq!(
            check(entry(
                &[("user", None), ("client-id", None)],
                &[("request_percentage", 12.5, false)]
            )),
            Ok(1)
        );
        // Removing what is not set changes nothing.
        assert_eq!(
            check(entry(&user, &[("consumer_byte_rate", 0.0, true)])),
            Ok(0)
        );
        let err = |e| check(e).expect_err("invalid");
        assert_eq!(
            err(entry(&user, &[("producer_byte_rate", -1.0, false)])),
            "Quota producer_byte_rate must be greater than 0"
        );
        assert_eq!(
            err(entry(&user, &[("producer_byte_rate", 1.5, false)])),
            "producer_byte_rate cannot be a fractional value."
        );
        assert_eq!(
            err(entry(&user, &[("bogus", 1.0, false)])),
            "Invalid configuration key bogus"
        );
        assert!(err(entry(
            &user,
            &[
                ("producer_byte_rate", 1.0, false),
                ("producer_byte_rate", 2.0, false)
            ]
        ))
        .starts_with("Duplicate quota key producer_byte_rate"));
        assert_eq!(
            err(entry(&[], &[("producer_byte_rate", 1.0, false)])),
            "Invalid empty client quota entity"
        );
        assert_eq!(
            err(entry(
                &[("user", Some(""))],
                &[("producer_byte_rate", 1.0, false)]
            )),
            "Empty user not supported"
        );
        assert_eq!(
            err(entry(
                &[("topic", Some("t"))],
                &[("producer_byte_rate", 1.0, false)]
            )),
            "Unhandled client quota entity type: topic"
        );
        assert!(err(entry(
            &[("ip", None), ("user", None)],
            &[("producer_byte_rate", 1.0, false)]
        ))
        .starts_with("Invalid quota entity combination"));
    }
}
