//! Consumer group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. These handlers translate requests and
//! responses; the group coordinator (`group/`) does the work.

use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::{Session, GROUP_OPERATIONS};
use crate::broker::Broker;
use crate::group::state::{JoinRequest, JoinResult, SyncRequest, SyncResult};
use crate::meta::acl::{AclOperation, ResourceType};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub use crate::group::ClientInfo;

pub async fn find_coordinator(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let lookup = |key: &str| {
        let key = key.to_string();
        async move {
            if req.key_type == KEY_TYPE_TRANSACTION {
                // Kafka checks DESCRIBE on the transactional id before anything else.
                if !session.allowed(
                    &broker.image(),
                    AclOperation::Describe,
                    ResourceType::TransactionalId,
                    &key,
                ) {
                    return Err((
                        ResponseError::TransactionalIdAuthorizationFailed,
                        ResponseError::TransactionalIdAuthorizationFailed.to_string(),
                    ));
                }
                return broker.txns.find_coordinator(&key, &session.listener).await;
            }
            if req.key_type != KEY_TYPE_GROUP {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown coordinator key type {}", req.key_type),
                ));
            }
            if !group_allowed(broker, session, AclOperation::Describe, &key) {
                return Err((
                    ResponseError::GroupAuthorizationFailed,
                    ResponseError::GroupAuthorizationFailed.to_string(),
                ));
            }
            broker
                .groups
                .find_coordinator(&key, &session.listener)
                .await
        }
    };
    if version < 4 {
        let mut resp = FindCoordinatorResponse::default();
        match lookup(&req.key).await {
            Ok((id, host, port)) => {
                resp.node_id = BrokerId(id);
                resp.host = s(host);
                resp.port = port;
            }
            Err((e, m)) => {
                resp.error_code = code(e);
                resp.node_id = BrokerId(-1);
                resp.port = -1;
                if version >= 1 {
                    resp.error_message = Some(s(m));
                }
            }
        }
        return resp;
    }
    let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
    for key in &req.coordinator_keys {
        let c = Coordinator::default().with_key(key.clone());
        coordinators.push(match lookup(key).await {
            Ok((id, host, port)) => c
                .with_node_id(BrokerId(id))
                .with_host(s(host))
                .with_port(port),
            Err((e, m)) => c
                .with_error_code(code(e))
                .with_error_message(Some(s(m)))
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        });
    }
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

/// Whether the session may do `operation` on the group.
fn group_allowed(broker: &Broker, session: &Session, operation: AclOperation, group: &str) -> bool {
    session.allowed(&broker.image(), operation, ResourceType::Group, group)
}

fn join_response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_metadata(metadata);
                    if version >= 5 {
                        m.group_instance_id = instance.map(s);
                    }
                    m
                })
                .collect(),
        );
    // protocol_name is nullable only from v7; before, an empty string.
    resp.protocol_name = match (r.protocol, version >= 7) {
        (Some(p), _) => Some(s(p)),
        (None, true) => None,
        (None, false) => Some(StrBytes::default()),
    };
    if version >= 7 {
        resp.protocol_type = r.protocol_type.map(s);
    }
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    resp
}

pub async fn join(
    broker: &Broker,
    session: &Session,
    version: i16,
    client: &ClientInfo,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    if !group_allowed(broker, session, AclOperation::Read, &req.group_id) {
        let refused = JoinResult::error(ResponseError::GroupAuthorizationFailed, &req.member_id);
        return join_response(version, refused);
    }
    let rebalance_ms = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client.client_id.clone(),
        client_host: client.client_host.clone(),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
        rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
        require_known_member_id: version >= 4,
    };
    let result = broker
        .groups
        .join(&req.group_id.0, join, &broker.shutdown)
        .await;
    join_response(version, result)
}

fn sync_response(version: i16, r: SyncResult) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.protocol_type = r.protocol_type.map(s);
        resp.protocol_name = r.protocol.map(s);
    }
    resp
}

pub async fn sync(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    if !group_allowed(broker, session, AclOperation::Read, &req.group_id) {
        return sync_response(
            version,
            SyncResult::error(ResponseError::GroupAuthorizationFailed),
        );
    }
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let sync = SyncRequest {
        member_id: &req.member_id,
        instance: instance.as_deref(),
        generation: req.generation_id,
        protocol_type: req.protocol_type.as_deref(),
        protocol: req.protocol_name.as_deref(),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let result = broker.groups.sync(&req.group_id.0, sync).await;
    sync_response(version, result)
}

pub fn heartbeat(broker: &Broker, session: &Session, req: HeartbeatRequest) -> HeartbeatResponse {
    if !group_allowed(broker, session, AclOperation::Read, &req.group_id) {
        return HeartbeatResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    let error = broker.groups.heartbeat(
        &req.group_id.0,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if !group_allowed(broker, session, AclOperation::Read, &req.group_id) {
        return LeaveGroupResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    let identities: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let errors = match broker.groups.leave(&req.group_id.0, &identities).await {
        Ok(errors) => errors,
        Err(e) => return LeaveGroupResponse::default().with_error_code(code(e)),
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(errors[0]);
    }
    LeaveGroupResponse::default().with_members(
        identities
            .into_iter()
            .zip(errors)
            .map(|((member, instance), error)| {
                MemberResponse::default()
                    .with_member_id(s(member))
                    .with_group_instance_id(instance.map(s))
                    .with_error_code(error)
            })
            .collect(),
    )
}

/// Every group with DESCRIBE on the cluster; otherwise the groups the session may DESCRIBE.
pub fn list(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let image = broker.image();
    let all = session.allowed_on_cluster(&image, AclOperation::Describe);
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if version >= 5 {
        req.types_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    let mut listed = broker.groups.list(&states, &types);
    // Share groups (KIP-932) too, as Kafka lists them: protocol type and group type "share".
    listed.extend(
        broker
            .shares
            .groups
            .list()
            .into_iter()
            .filter(|(_, state)| states.is_empty() || states.contains(&state.to_lowercase()))
            .filter(|_| types.is_empty() || types.iter().any(|t| t == "share"))
            .map(|(group_id, state)| crate::group::ListedGroup {
                group_id,
                protocol_type: "share".to_string(),
                state,
                group_type: "share",
            }),
    );
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let groups = listed
        .into_iter()
        .filter(|g| {
            all || session.allowed(
                &image,
                AclOperation::Describe,
                ResourceType::Group,
                &g.group_id,
            )
        })
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(s(g.group_id)))
                .with_protocol_type(s(g.protocol_type));
            if version >= 4 {
                l.group_state = s(g.state);
            }
            if version >= 5 {
                l.group_type = s(g.group_type);
            }
            l
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let image = broker.image();
    let described = req
        .groups
        .iter()
        .map(|id| {
            let d = DescribedGroup::default().with_group_id(id.clone());
            if !session.allowed(&image, AclOperation::Describe, ResourceType::Group, id) {
                return d.with_error_code(code(ResponseError::GroupAuthorizationFailed));
            }
            let mut d = match broker.groups.describe(id) {
                // A consumer group (KIP-848) is not described by the classic API.
                Err(ResponseError::GroupIdNotFound) if version >= 6 => d
                    .with_group_state(s("Dead"))
                    .with_error_code(code(ResponseError::GroupIdNotFound))
                    .with_error_message(Some(s(format!("Group {} is not a classic group.", id.0)))),
                Err(ResponseError::GroupIdNotFound) => d.with_group_state(s("Dead")),
                Err(e) => return d.with_error_code(code(e)),
                // v6 reports a missing group as an error; earlier versions as Dead.
                Ok(None) if version >= 6 => d
                    .with_group_state(s("Dead"))
                    .with_error_code(code(ResponseError::GroupIdNotFound))
                    .with_error_message(Some(s(format!("Group {} not found.", id.0)))),
                Ok(None) => d.with_group_state(s("Dead")),
                Ok(Some(g)) => d
                    .with_group_state(s(g.state))
                    .with_protocol_type(s(g.protocol_type))
                    .with_protocol_data(s(g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                let mut dm = DescribedGroupMember::default()
                                    .with_member_id(s(m.member_id))
                                    .with_client_id(s(m.client_id))
                                    .with_client_host(s(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if version >= 4 {
                                    dm.group_instance_id = m.group_instance_id.map(s);
                                }
                                dm
                            })
                            .collect(),
                    ),
            };
            if version >= 3 {
                d.authorized_operations = if req.include_authorized_operations {
                    session.authorized_operations(&image, ResourceType::Group, id, GROUP_OPERATIONS)
                } else {
                    i32::MIN
                };
            }
            d
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(described)
}

pub async fn delete(
    broker: &Broker,
    session: &Session,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in &req.groups_names {
        let error = if group_allowed(broker, session, AclOperation::Delete, id) {
            broker.groups.delete_group(id).await
        } else {
            code(ResponseError::GroupAuthorizationFailed)
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
