//! DescribeClientQuotas and AlterClientQuotas (KIP-546), which `kafka-configs --entity-type
//! users|clients` sends (alongside the SCRAM credential requests for users). Quotas are
//! metadata records (`meta::client_quotas`); describing matches filters and altering validates
//! entities, keys and values as Kafka's ClientQuotasImage and ClientQuotaControlManager do,
//! with their errors. `quota` enforces them.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_client_quotas_response as describe_response;
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;
use crate::meta::client_quotas::QuotaEntity;

pub use super::client_quotas_alter::alter;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

const MATCH_TYPE_EXACT: i8 = 0;
const MATCH_TYPE_DEFAULT: i8 = 1;
const MATCH_TYPE_SPECIFIED: i8 = 2;
const ENTITY_TYPES: [&str; 3] = ["user", "client-id", "ip"];

/// Checks a filter as Kafka does; the error and its message on a bad one.
fn validate(req: &DescribeClientQuotasRequest) -> Result<(), (ResponseError, String)> {
    let invalid = |m: String| Err((ResponseError::InvalidRequest, m));
    let mut seen = BTreeSet::new();
    for component in &req.components {
        let entity_type = component.entity_type.as_str();
        if entity_type.is_empty() {
            return invalid("Invalid empty entity type.".into());
        }
        if !seen.insert(entity_type) {
            return invalid(format!(
                "Entity type {entity_type} cannot appear more than once in the filter."
            ));
        }
        if !ENTITY_TYPES.contains(&entity_type) {
            return Err((
                ResponseError::UnsupportedVersion,
                format!("Unsupported entity type {entity_type}"),
            ));
        }
        match (component.match_type, component._match.is_some()) {
            (MATCH_TYPE_EXACT, false) => {
                return invalid(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                )
            }
            (MATCH_TYPE_DEFAULT, true) => {
                return invalid(
                    "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                        .into(),
                )
            }
            (MATCH_TYPE_SPECIFIED, true) => {
                return invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )
            }
            (MATCH_TYPE_EXACT | MATCH_TYPE_DEFAULT | MATCH_TYPE_SPECIFIED, _) => {}
            (other, _) => return invalid(format!("Unknown match type {other}")),
        }
    }
    if seen.contains("ip") && (seen.contains("user") || seen.contains("client-id")) {
        return invalid(
            "Invalid entity filter component combination. IP filter component should not be \
             used with user or clientId filter component."
                .into(),
        );
    }
    Ok(())
}

/// Whether an entity passes a filter (Kafka's ClientQuotasImage.matches): every exact
/// component names the entity's name of that type (null: the default), every specified
/// component's type is present, and with `strict` the entity has no other types.
fn matches(entity: &QuotaEntity, req: &DescribeClientQuotasRequest) -> bool {
    let components = entity.components();
    if req.strict && components.len() != req.components.len() {
        return false;
    }
    req.components.iter().all(|filter| {
        let found = components
            .iter()
            .find(|(t, _)| *t == filter.entity_type.as_str());
        match (found, filter.match_type) {
            (None, _) => false,
            (Some(_), MATCH_TYPE_SPECIFIED) => true,
            (Some((_, name)), _) => *name == filter._match.as_deref(),
        }
    })
}

/// Needs DESCRIBE_CONFIGS on the cluster.
pub fn describe(
    broker: &Broker,
    session: &Session,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let failed = |e: ResponseError, message: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_entries(None)
    };
    let image = broker.image();
    if !session.allowed_on_cluster(&image, AclOperation::DescribeConfigs) {
        return failed(
            ResponseError::ClusterAuthorizationFailed,
            ResponseError::ClusterAuthorizationFailed.to_string(),
        );
    }
    if let Err((e, message)) = validate(&req) {
        return failed(e, message);
    }
    let entries = image
        .client_quotas
        .iter()
        .filter(|(entity, _)| matches(entity, &req))
        .map(|(entity, values)| {
            describe_response::EntryData::default()
                .with_entity(
                    entity
                        .components()
                        .into_iter()
                        .map(|(t, name)| {
                            describe_response::EntityData::default()
                                .with_entity_type(s(t))
                                .with_entity_name(name.map(s))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            describe_response::ValueData::default()
                                .with_key(s(k))
                                .with_value(v.0)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;

    use super::*;

    fn component(entity_type: &str, match_type: i8, m: Option<&str>) -> ComponentData {
        ComponentData::default()
            .with_entity_type(StrBytes::from_string(entity_type.into()))
            .with_match_type(match_type)
            .with_match(m.map(|m| StrBytes::from_string(m.into())))
    }

    fn check(components: Vec<ComponentData>) -> Result<(), ResponseError> {
        validate(&DescribeClientQuotasRequest::default().with_components(components))
            .map_err(|(e, _)| e)
    }

    #[test]
    fn filters_are_validated_as_kafka_does() {
        assert_eq!(check(vec![component("user", 0, Some("alice"))]), Ok(()));
        assert_eq!(
            check(vec![
                component("user", 1, None),
                component("client-id", 2, None)
            ]),
            Ok(())
        );
        assert_eq!(check(vec![]), Ok(()));
        let invalid = Err(ResponseError::InvalidRequest);
        assert_eq!(check(vec![component("user", 0, None)]), invalid);
        assert_eq!(check(vec![component("user", 1, Some("x"))]), invalid);
        assert_eq!(check(vec![component("user", 2, Some("x"))]), invalid);
        assert_eq!(check(vec![component("user", 7, None)]), invalid);
        assert_eq!(check(vec![component("", 2, None)]), invalid);
        assert_eq!(
            check(vec![component("user", 2, None), component("user", 1, None)]),
            invalid
        );
        assert_eq!(
            check(vec![component("ip", 2, None), component("user", 2, None)]),
            invalid
        );
        assert_eq!(
            check(vec![component("topic", 2, None)]),
            Err(ResponseError::UnsupportedVersion)
        );
    }
}
