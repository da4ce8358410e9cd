//! CreateAcls, DescribeAcls and DeleteAcls (kafka-acls, the admin clients' ACL calls). The
//! bindings are metadata records, so every broker enforces what one was told. Creating and
//! deleting need ALTER on the cluster, describing DESCRIBE; with the authorizer off Kafka
//! answers SECURITY_DISABLED.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::{
    AclBinding, AclBindingFilter, AclOperation, PatternType, PermissionType, ResourceType,
};
use crate::meta::image::{ApplyOutcome, MetadataRecord};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// SECURITY_DISABLED without an authorizer, else CLUSTER_AUTHORIZATION_FAILED when the
/// session may not do `operation` on the cluster.
fn check(broker: &Broker, session: &Session, operation: AclOperation) -> Result<(), ResponseError> {
    if broker.config.authorizer.is_none() {
        return Err(ResponseError::SecurityDisabled);
    }
    if !session.allowed_on_cluster(&broker.image(), operation) {
        return Err(ResponseError::ClusterAuthorizationFailed);
    }
    Ok(())
}

/// A v0 request names no pattern type: it means LITERAL (creations) or LITERAL filters.
fn pattern_of(version: i16, code: i8) -> PatternType {
    if version == 0 {
        PatternType::Literal
    } else {
        PatternType::from_code(code)
    }
}

pub async fn create(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let failed = |e: ResponseError, m: String| {
        AclCreationResult::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(m)))
    };
    if let Err(e) = check(broker, session, AclOperation::Alter) {
        let results = req
            .creations
            .iter()
            .map(|_| failed(e, e.to_string()))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let bindings: Vec<Result<AclBinding, String>> = req
        .creations
        .iter()
        .map(|c| {
            let b = AclBinding {
                resource_type: ResourceType::from_code(c.resource_type),
                resource_name: c.resource_name.to_string(),
                pattern_type: pattern_of(version, c.resource_pattern_type),
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: AclOperation::from_code(c.operation),
                permission: PermissionType::from_code(c.permission_type),
            };
            b.validate().map(|()| b)
        })
        .collect();
    let valid: Vec<AclBinding> = bindings.iter().filter_map(|b| b.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        match broker.meta.propose(MetadataRecord::CreateAcls(valid)).await {
            Ok(ApplyOutcome::Each(_)) => Ok(()),
            Ok(other) => Err(format!("unexpected outcome {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    let results = bindings
        .into_iter()
        .map(|b| match (b, &stored) {
            (Err(m), _) => failed(ResponseError::InvalidRequest, m),
            (Ok(_), Err(m)) => failed(ResponseError::UnknownServerError, m.clone()),
            (Ok(b), Ok(())) => {
                tracing::info!(principal = %b.principal, resource = %b.resource_name,
                    operation = ?b.operation, permission = ?b.permission, "created ACL");
                AclCreationResult::default()
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// The filter a DescribeAcls request or a DeleteAcls filter carries (the same fields).
macro_rules! filter_of {
    ($version:expr, $f:expr) => {
        AclBindingFilter {
            resource_type: ResourceType::from_code($f.resource_type_filter),
            resource_name: $f.resource_name_filter.as_ref().map(|n| n.to_string()),
            pattern_type: pattern_of($version, $f.pattern_type_filter),
            principal: $f.principal_filter.as_ref().map(|p| p.to_string()),
            host: $f.host_filter.as_ref().map(|h| h.to_string()),
            operation: AclOperation::from_code($f.operation),
            permission: PermissionType::from_code($f.permission_type),
        }
    };
}

pub fn describe(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let failed = |e: ResponseError, m: String| {
        DescribeAclsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(m)))
    };
    if let Err(e) = check(broker, session, AclOperation::Describe) {
        return failed(e, e.to_string());
    }
    let filter = filter_of!(version, req);
    if let Err(m) = filter.validate() {
        return failed(ResponseError::InvalidRequest, m);
    }
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in broker.image().acls.matching(&filter) {
        by_resource
            .entry((
                b.resource_type.code(),
                b.resource_name.clone(),
                b.pattern_type.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(b.principal))
                    .with_host(s(b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((t, name, pattern), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(t)
                .with_resource_name(s(name))
                .with_pattern_type(pattern)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |e: ResponseError, m: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(m)))
    };
    if let Err(e) = check(broker, session, AclOperation::Alter) {
        let results = req
            .filters
            .iter()
            .map(|_| failed(e, e.to_string()))
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let filters: Vec<Result<AclBindingFilter, String>> = req
        .filters
        .iter()
        .map(|f| {
            let filter = filter_of!(version, f);
            filter.validate().map(|()| filter)
        })
        .collect();
    let valid: Vec<AclBindingFilter> = filters.iter().filter_map(|f| f.clone().ok()).collect();
    let removed = if valid.is_empty() {
        Ok(Vec::new())
    } else {
        match broker.meta.propose(MetadataRecord::DeleteAcls(valid)).await {
            Ok(ApplyOutcome::DeletedAcls(removed)) => Ok(removed),
            Ok(other) => Err(format!("unexpected outcome {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut removed_each = match &removed {
        Ok(r) => r.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = filters
        .into_iter()
        .map(|f| match (f, &removed) {
            (Err(m), _) => failed(ResponseError::InvalidRequest, m),
            (Ok(_), Err(m)) => failed(ResponseError::UnknownServerError, m.clone()),
            (Ok(_), Ok(_)) => {
                let matching = removed_each
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        tracing::info!(principal = %b.principal, resource = %b.resource_name,
                            operation = ?b.operation, "deleted ACL");
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type.code())
                            .with_resource_name(s(b.resource_name))
                            .with_pattern_type(b.pattern_type.code())
                            .with_principal(s(b.principal))
                            .with_host(s(b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect();
                DeleteAclsFilterResult::default().with_matching_acls(matching)
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
