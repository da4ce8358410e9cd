//! Consumer group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups. The protocol itself lives in
//! `group::state`; these handlers validate, route, persist and wait.

use std::time::{Duration, Instant};

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
use crate::broker::Broker;
use crate::group::records::RecordKey;
use crate::group::state::{JoinRequest, JoinResult, Reply, SyncRequest, SyncResult, NONE};
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::replica::now_ms;

const KEY_TYPE_GROUP: i8 = 0;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The caller's identity, for the group member record.
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// Finds (creating the offsets topic if needed) the coordinator node for a group.
async fn coordinator_for(
    broker: &Broker,
    key: &str,
    key_type: i8,
) -> Result<(i32, String, i32), (ResponseError, String)> {
    if key_type != KEY_TYPE_GROUP {
        return Err((
            ResponseError::CoordinatorNotAvailable,
            "Transactions are not supported by this broker".into(),
        ));
    }
    crate::group::topic::ensure_offsets_topic(broker).await?;
    let image = broker.image();
    let p = broker.groups.partition_for(key);
    let leader = image
        .topic(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
        .map(|x| x.leader)
        .unwrap_or(-1);
    match image.brokers.get(&leader) {
        Some(b) => Ok((b.node_id, b.host.clone(), b.port)),
        None => Err((
            ResponseError::CoordinatorNotAvailable,
            "The coordinator is not available.".into(),
        )),
    }
}

pub async fn find_coordinator(
    broker: &Broker,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if version < 4 {
        let mut resp = FindCoordinatorResponse::default();
        match coordinator_for(broker, &req.key, req.key_type).await {
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
        coordinators.push(match coordinator_for(broker, key, req.key_type).await {
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

fn session_timeout_ok(g: &GroupCoordinator, ms: i32) -> bool {
    let d = Duration::from_millis(ms.max(0) as u64);
    ms > 0 && d >= g.config.min_session_timeout && d <= g.config.max_session_timeout
}

pub async fn join(
    broker: &Broker,
    version: i16,
    client: &ClientInfo,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    let fail = |e: ResponseError| join_response(version, JoinResult::error(e, &member_id));
    if group_id.is_empty() {
        return fail(ResponseError::InvalidGroupId);
    }
    if let Err(e) = broker.check_coordinator(&group_id) {
        return fail(e);
    }
    if !session_timeout_ok(groups, req.session_timeout_ms) {
        return fail(ResponseError::InvalidSessionTimeout);
    }
    let handle = if member_id.is_empty() {
        groups.get_or_create(&group_id)
    } else {
        match groups.group(&group_id) {
            Some(h) => h,
            None => return fail(ResponseError::UnknownMemberId),
        }
    };
    let rebalance_ms = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let join = JoinRequest {
        member_id: member_id.clone(),
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
    let (reply, written) = {
        let mut entry = handle.lock();
        let (reply, persist) = entry
            .group
            .join(join, groups.timing(), Instant::now(), now_ms());
        let written = persist.map(|v| {
            groups.append(
                &broker.replicas,
                &group_id,
                &[GroupCoordinator::group_record(&group_id, &v)],
            )
        });
        (reply, written)
    };
    if let Some(Ok(w)) = written {
        let _ = groups.committed(w).await;
    }
    match reply {
        Reply::Now(r) => join_response(version, r),
        Reply::Later(rx) => {
            let wait = Duration::from_millis(rebalance_ms.max(0) as u64) + Duration::from_secs(5);
            tokio::select! {
                r = tokio::time::timeout(wait, rx) => match r {
                    Ok(Ok(r)) => join_response(version, r),
                    // Superseded by a newer JoinGroup from the same member, or the group moved.
                    _ => fail(ResponseError::RebalanceInProgress),
                },
                // A coordinator going away sends waiting members elsewhere.
                _ = broker.shutdown.cancelled() => fail(ResponseError::NotCoordinator),
            }
        }
    }
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

pub async fn sync(broker: &Broker, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
    let fail = |e: ResponseError| sync_response(version, SyncResult::error(e));
    if group_id.is_empty() {
        return fail(ResponseError::InvalidGroupId);
    }
    if let Err(e) = broker.check_coordinator(&group_id) {
        return fail(e);
    }
    let Some(handle) = groups.group(&group_id) else {
        return fail(ResponseError::UnknownMemberId);
    };
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let (reply, written) = {
        let mut entry = handle.lock();
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
        let (reply, persist) = entry.group.sync(sync, Instant::now(), now_ms());
        let written = persist.map(|v| {
            groups.append(
                &broker.replicas,
                &group_id,
                &[GroupCoordinator::group_record(&group_id, &v)],
            )
        });
        (reply, written)
    };
    if let Some(w) = written {
        // Kafka answers the sync only once the group's assignment is stored.
        if let Err(e) = match w {
            Ok(w) => groups.committed(w).await,
            Err(e) => Err(e),
        } {
            tracing::warn!(group = %group_id, error = ?e, "storing group assignment failed");
        }
    }
    match reply {
        Reply::Now(r) => sync_response(version, r),
        Reply::Later(rx) => match tokio::time::timeout(groups.config.max_session_timeout, rx).await
        {
            Ok(Ok(r)) => sync_response(version, r),
            _ => fail(ResponseError::RebalanceInProgress),
        },
    }
}

pub fn heartbeat(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
    let error = if let Err(e) = broker.check_coordinator(&group_id) {
        code(e)
    } else {
        match groups.group(&group_id) {
            None => code(ResponseError::UnknownMemberId),
            Some(h) => h.lock().group.heartbeat(
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
                Instant::now(),
            ),
        }
    };
    HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave(broker: &Broker, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
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
    if let Err(e) = broker.check_coordinator(&group_id) {
        return LeaveGroupResponse::default().with_error_code(code(e));
    }
    let Some(handle) = groups.group(&group_id) else {
        // Kafka: an unknown group has none of these members.
        if version < 3 {
            return LeaveGroupResponse::default()
                .with_error_code(code(ResponseError::UnknownMemberId));
        }
        return LeaveGroupResponse::default().with_members(
            identities
                .into_iter()
                .map(|(member, instance)| {
                    MemberResponse::default()
                        .with_member_id(s(member))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(code(ResponseError::UnknownMemberId))
                })
                .collect(),
        );
    };
    let mut results = Vec::with_capacity(identities.len());
    let mut written = Vec::new();
    {
        let mut entry = handle.lock();
        for (member, instance) in &identities {
            let (error, persist) = entry.group.leave(
                member,
                instance.as_deref(),
                groups.timing(),
                Instant::now(),
                now_ms(),
            );
            if let Some(v) = persist {
                written.push(groups.append(
                    &broker.replicas,
                    &group_id,
                    &[GroupCoordinator::group_record(&group_id, &v)],
                ));
            }
            results.push((member.clone(), instance.clone(), error));
        }
    }
    for w in written.into_iter().flatten() {
        let _ = groups.committed(w).await;
    }
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(results[0].2);
    }
    LeaveGroupResponse::default().with_members(
        results
            .into_iter()
            .map(|(member, instance, error)| {
                MemberResponse::default()
                    .with_member_id(s(member))
                    .with_group_instance_id(instance.map(s))
                    .with_error_code(error)
            })
            .collect(),
    )
}

pub fn list(broker: &Broker, version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut groups: Vec<ListedGroup> = broker
        .groups
        .all_groups()
        .into_iter()
        .filter_map(|(id, h)| {
            let e = h.lock();
            let g = &e.group;
            if g.state == crate::group::state::GroupState::Dead {
                return None;
            }
            let state = g.state.name();
            if version >= 4 && !states.is_empty() && !states.contains(&state.to_lowercase()) {
                return None;
            }
            if version >= 5 && !types.is_empty() && !types.contains(&"classic".to_string()) {
                return None;
            }
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s(g.protocol_type.clone().unwrap_or_default()));
            if version >= 4 {
                l.group_state = s(state);
            }
            if version >= 5 {
                l.group_type = s("classic");
            }
            Some(l)
        })
        .collect();
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe(
    broker: &Broker,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = &broker.groups;
    let described = req
        .groups
        .iter()
        .map(|id| {
            let d = DescribedGroup::default().with_group_id(id.clone());
            if let Err(e) = broker.check_coordinator(id) {
                return d.with_error_code(code(e));
            }
            let mut d = match groups.group(id) {
                // v6 reports a missing group as an error; earlier versions as Dead.
                None if version >= 6 => d
                    .with_group_state(s("Dead"))
                    .with_error_code(code(ResponseError::GroupIdNotFound))
                    .with_error_message(Some(s(format!("Group {} not found.", id.0)))),
                None => d.with_group_state(s("Dead")),
                Some(h) => {
                    let e = h.lock();
                    let g = &e.group;
                    let stable = g.state == crate::group::state::GroupState::Stable;
                    d.with_group_state(s(g.state.name()))
                        .with_protocol_type(s(g.protocol_type.clone().unwrap_or_default()))
                        .with_protocol_data(s(g.protocol.clone().unwrap_or_default()))
                        .with_members(
                            g.members()
                                .map(|m| {
                                    let meta = g
                                        .protocol
                                        .as_deref()
                                        .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                                        .map(|(_, b)| b.clone())
                                        .unwrap_or_default();
                                    let mut dm = DescribedGroupMember::default()
                                        .with_member_id(s(m.member_id.clone()))
                                        .with_client_id(s(m.client_id.clone()))
                                        .with_client_host(s(m.client_host.clone()))
                                        .with_member_metadata(meta)
                                        .with_member_assignment(if stable {
                                            m.assignment.clone()
                                        } else {
                                            Default::default()
                                        });
                                    if version >= 4 {
                                        dm.group_instance_id = m.group_instance_id.clone().map(s);
                                    }
                                    dm
                                })
                                .collect(),
                        )
                }
            };
            if version >= 3 {
                d.authorized_operations = if req.include_authorized_operations {
                    // READ, DELETE, DESCRIBE: everything a group supports, no authorizer here.
                    (1 << 3) | (1 << 6) | (1 << 8)
                } else {
                    i32::MIN
                };
            }
            d
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(described)
}

pub async fn delete(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let groups = &broker.groups;
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in &req.groups_names {
        let error = match broker.check_coordinator(id) {
            Err(e) => code(e),
            Ok(()) => match groups.group(id) {
                None => code(ResponseError::GroupIdNotFound),
                Some(h) => {
                    let written = {
                        let mut e = h.lock();
                        match e.group.mark_dead(now_ms()) {
                            Err(err) => Err(err),
                            Ok(()) => {
                                let mut tombstones: Vec<(bytes::Bytes, Option<bytes::Bytes>)> = e
                                    .offsets
                                    .keys()
                                    .map(|(t, p)| {
                                        (
                                            RecordKey::Offset {
                                                group: id.to_string(),
                                                topic: t.clone(),
                                                partition: *p,
                                            }
                                            .encode(),
                                            None,
                                        )
                                    })
                                    .collect();
                                tombstones.push((
                                    RecordKey::Group {
                                        group: id.to_string(),
                                    }
                                    .encode(),
                                    None,
                                ));
                                e.offsets.clear();
                                groups.append(&broker.replicas, id, &tombstones)
                            }
                        }
                    };
                    match written {
                        Ok(w) => {
                            groups.forget(id);
                            match groups.committed(w).await {
                                Ok(()) => NONE,
                                Err(e) => code(e),
                            }
                        }
                        Err(e) => code(e),
                    }
                }
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
