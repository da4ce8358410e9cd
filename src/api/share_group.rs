//! Share group APIs on the group coordinator (KIP-932): ShareGroupHeartbeat,
//! ShareGroupDescribe, DescribeShareGroupOffsets, AlterShareGroupOffsets and
//! DeleteShareGroupOffsets. They translate requests and responses; `share/` does the work.

use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::share_group_describe_response as describe;
use kafka_protocol::messages::share_group_heartbeat_response as heartbeat;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::{Session, GROUP_OPERATIONS};
use crate::broker::Broker;
use crate::group::ClientInfo;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::group_configs::SHARE_HEARTBEAT_INTERVAL_MS;
use crate::meta::image::MetadataImage;
use crate::share::group::{Heartbeat, LEAVE_EPOCH};
use crate::share::StateKey;

/// Kafka's share group assignor (every member may get every partition).
const ASSIGNOR: &str = "simple";

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn group_allowed(broker: &Broker, session: &Session, op: AclOperation, group: &str) -> bool {
    session.allowed(&broker.image(), op, ResourceType::Group, group)
}

pub fn heartbeat(
    broker: &Broker,
    session: &Session,
    client: &ClientInfo,
    req: ShareGroupHeartbeatRequest,
) -> ShareGroupHeartbeatResponse {
    let fail = |e: ResponseError, msg: &str| {
        ShareGroupHeartbeatResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(msg)))
            .with_member_epoch(0)
    };
    let group = req.group_id.0.to_string();
    let member_id = req.member_id.to_string();
    if group.is_empty() {
        return fail(ResponseError::InvalidRequest, "GroupId can't be empty.");
    }
    if member_id.is_empty() {
        return fail(ResponseError::InvalidRequest, "MemberId can't be empty.");
    }
    if req.member_epoch < LEAVE_EPOCH {
        return fail(ResponseError::InvalidRequest, "MemberEpoch is invalid.");
    }
    let subscribed: Option<Vec<String>> = req
        .subscribed_topic_names
        .as_ref()
        .map(|t| t.iter().map(|n| n.0.to_string()).collect());
    if req.member_epoch == 0 && subscribed.as_ref().is_none_or(|t| t.is_empty()) {
        return fail(
            ResponseError::InvalidRequest,
            "SubscribedTopicNames must be set in first request.",
        );
    }
    if !group_allowed(broker, session, AclOperation::Read, &group) {
        return fail(
            ResponseError::GroupAuthorizationFailed,
            &ResponseError::GroupAuthorizationFailed.to_string(),
        );
    }
    let image = broker.image();
    if let Some(topics) = &subscribed {
        if topics
            .iter()
            .any(|t| !session.allowed(&image, AclOperation::Describe, ResourceType::Topic, t))
        {
            return fail(
                ResponseError::TopicAuthorizationFailed,
                &ResponseError::TopicAuthorizationFailed.to_string(),
            );
        }
    }
    if let Err(e) = broker.groups.check_coordinator(&group) {
        return fail(e, &e.to_string());
    }
    let hb = Heartbeat {
        group: &group,
        member_id: &member_id,
        member_epoch: req.member_epoch,
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        subscribed,
        client_id: client.client_id.clone(),
        client_host: client.client_host.clone(),
    };
    let partitions = |t: &str| image.topic(t).map(|t| t.partitions.len() as i32);
    match broker.shares.groups.heartbeat(hb, partitions) {
        Ok(r) => ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(s(member_id)))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(
                image
                    .group_configs
                    .int(&group, SHARE_HEARTBEAT_INTERVAL_MS)
                    .map_or(broker.shares.config.heartbeat_interval_ms, |v| v as i32),
            )
            .with_assignment(r.assignment.map(|a| {
                heartbeat::Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .filter_map(|(topic, parts)| {
                            Some(
                                heartbeat::TopicPartitions::default()
                                    .with_topic_id(image.topic(&topic)?.topic_id)
                                    .with_partitions(parts),
                            )
                        })
                        .collect(),
                )
            })),
        Err(e) => fail(e, &e.to_string()),
    }
}

pub fn describe(
    broker: &Broker,
    session: &Session,
    req: ShareGroupDescribeRequest,
) -> ShareGroupDescribeResponse {
    let image = broker.image();
    let groups = req
        .group_ids
        .iter()
        .map(|id| {
            let id = id.0.to_string();
            let d = describe::DescribedGroup::default()
                .with_group_id(GroupId(s(id.clone())))
                .with_authorized_operations(i32::MIN);
            let failed = |e: ResponseError, msg: String| {
                d.clone()
                    .with_error_code(code(e))
                    .with_error_message(Some(s(msg)))
            };
            if !group_allowed(broker, session, AclOperation::Describe, &id) {
                return failed(
                    ResponseError::GroupAuthorizationFailed,
                    ResponseError::GroupAuthorizationFailed.to_string(),
                );
            }
            if let Err(e) = broker.groups.check_coordinator(&id) {
                return failed(e, e.to_string());
            }
            let Some(g) = broker.shares.groups.describe(&id) else {
                return failed(
                    ResponseError::GroupIdNotFound,
                    format!("Group {id} not found."),
                );
            };
            let members = g
                .members
                .values()
                .map(|m| {
                    describe::Member::default()
                        .with_member_id(s(m.member_id.clone()))
                        .with_rack_id(m.rack_id.clone().map(s))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed
                                .iter()
                                .map(|t| TopicName(s(t.clone())))
                                .collect(),
                        )
                        .with_assignment(
                            describe::Assignment::default().with_topic_partitions(
                                m.assignment
                                    .iter()
                                    .filter_map(|(t, parts)| {
                                        Some(
                                            describe::TopicPartitions::default()
                                                .with_topic_id(image.topic(t)?.topic_id)
                                                .with_topic_name(TopicName(s(t.clone())))
                                                .with_partitions(parts.clone()),
                                        )
                                    })
                                    .collect(),
                            ),
                        )
                })
                .collect();
            let ops = if req.include_authorized_operations {
                session.authorized_operations(&image, ResourceType::Group, &id, GROUP_OPERATIONS)
            } else {
                i32::MIN
            };
            d.with_group_state(s(g.state()))
                .with_group_epoch(g.group_epoch)
                .with_assignment_epoch(g.assignment_epoch)
                .with_assignor_name(s(ASSIGNOR))
                .with_members(members)
                .with_authorized_operations(ops)
        })
        .collect();
    ShareGroupDescribeResponse::default().with_groups(groups)
}

/// The partitions of a topic named in an offsets request: (topic id, partition count).
fn topic_of(image: &MetadataImage, name: &str) -> Option<(uuid::Uuid, i32)> {
    image
        .topic(name)
        .map(|t| (t.topic_id, t.partitions.len() as i32))
}

/// A topic whose share offsets the session may change (READ on it, as Kafka checks): its id and
/// partition count.
fn readable_topic(
    image: &MetadataImage,
    session: &Session,
    name: &str,
) -> Result<(uuid::Uuid, i32), ResponseError> {
    if !session.allowed(image, AclOperation::Read, ResourceType::Topic, name) {
        return Err(ResponseError::TopicAuthorizationFailed);
    }
    topic_of(image, name).ok_or(ResponseError::UnknownTopicOrPartition)
}

pub async fn describe_offsets(
    broker: &Broker,
    session: &Session,
    req: DescribeShareGroupOffsetsRequest,
) -> DescribeShareGroupOffsetsResponse {
    let image = broker.image();
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let id = g.group_id.0.to_string();
        let out =
            DescribeShareGroupOffsetsResponseGroup::default().with_group_id(g.group_id.clone());
        if !group_allowed(broker, session, AclOperation::Describe, &id) {
            let e = ResponseError::GroupAuthorizationFailed;
            groups.push(
                out.with_error_code(code(e))
                    .with_error_message(Some(s(e.to_string()))),
            );
            continue;
        }
        if let Err(e) = broker.groups.check_coordinator(&id) {
            groups.push(
                out.with_error_code(code(e))
                    .with_error_message(Some(s(e.to_string()))),
            );
            continue;
        }
        // The topics asked for, or those the group subscribes to or has state for.
        let wanted: Vec<(String, Option<Vec<i32>>)> = match &g.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.topic_name.0.to_string(), Some(t.partitions.clone())))
                .collect(),
            None => {
                let mut names = broker.shares.groups.subscribed_topics(&id);
                for (key, _) in broker.shares.store.group_states(&id) {
                    if let Some(t) = image.topic_by_id(&key.topic_id) {
                        names.push(t.name.clone());
                    }
                }
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .filter(|t| {
                        session.allowed(&image, AclOperation::Describe, ResourceType::Topic, t)
                    })
                    .map(|t| (t, None))
                    .collect()
            }
        };
        let mut topics = Vec::with_capacity(wanted.len());
        for (name, parts) in wanted {
            let topic = DescribeShareGroupOffsetsResponseTopic::default()
                .with_topic_name(TopicName(s(name.clone())));
            let allowed =
                session.allowed(&image, AclOperation::Describe, ResourceType::Topic, &name);
            let Some((topic_id, count)) = topic_of(&image, &name).filter(|_| allowed) else {
                let e = if allowed {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::TopicAuthorizationFailed
                };
                let partitions = parts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        DescribeShareGroupOffsetsResponsePartition::default()
                            .with_partition_index(p)
                            .with_start_offset(-1)
                            .with_leader_epoch(-1)
                            .with_error_code(code(e))
                            .with_error_message(Some(s(e.to_string())))
                    })
                    .collect();
                topics.push(topic.with_partitions(partitions));
                continue;
            };
            let mut partitions = Vec::new();
            for p in parts.unwrap_or_else(|| (0..count).collect()) {
                let key = StateKey {
                    group: id.clone(),
                    topic_id,
                    partition: p,
                };
                let out = DescribeShareGroupOffsetsResponsePartition::default()
                    .with_partition_index(p)
                    .with_start_offset(-1)
                    .with_leader_epoch(-1);
                partitions.push(match broker.shares.persister.summary(&key).await {
                    Ok(Some(snap)) => out
                        .with_start_offset(snap.start_offset)
                        .with_leader_epoch(snap.leader_epoch),
                    Ok(None) => out,
                    Err(e) => out
                        .with_error_code(code(e))
                        .with_error_message(Some(s(e.to_string()))),
                });
            }
            topics.push(topic.with_topic_id(topic_id).with_partitions(partitions));
        }
        groups.push(out.with_topics(topics));
    }
    DescribeShareGroupOffsetsResponse::default().with_groups(groups)
}

/// Why offsets of `group` may not be changed now, if they may not.
fn offsets_change_refused(
    broker: &Broker,
    session: &Session,
    group: &str,
) -> Option<ResponseError> {
    if !group_allowed(broker, session, AclOperation::Read, group) {
        return Some(ResponseError::GroupAuthorizationFailed);
    }
    if let Err(e) = broker.groups.check_coordinator(group) {
        return Some(e);
    }
    broker
        .shares
        .groups
        .has_members(group)
        .then_some(ResponseError::NonEmptyGroup)
}

pub async fn alter_offsets(
    broker: &Broker,
    session: &Session,
    req: AlterShareGroupOffsetsRequest,
) -> AlterShareGroupOffsetsResponse {
    let group = req.group_id.0.to_string();
    if let Some(e) = offsets_change_refused(broker, session, &group) {
        return AlterShareGroupOffsetsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(e.to_string())));
    }
    let image = broker.image();
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let known = readable_topic(&image, session, t.topic_name.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let result = match known {
                Err(e) => Err(e),
                Ok((_, count)) if p.partition_index < 0 || p.partition_index >= count => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Ok(_) if p.start_offset < 0 => Err(ResponseError::InvalidRequest),
                Ok((topic_id, _)) => {
                    let key = StateKey {
                        group: group.clone(),
                        topic_id,
                        partition: p.partition_index,
                    };
                    broker.shares.reset(&key, Some(p.start_offset)).await
                }
            };
            let out = AlterShareGroupOffsetsResponsePartition::default()
                .with_partition_index(p.partition_index);
            partitions.push(match result {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(code(e))
                    .with_error_message(Some(s(e.to_string()))),
            });
        }
        responses.push(
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_name(t.topic_name.clone())
                .with_topic_id(known.map_or_else(|_| Default::default(), |k| k.0))
                .with_partitions(partitions),
        );
    }
    AlterShareGroupOffsetsResponse::default().with_responses(responses)
}

pub async fn delete_offsets(
    broker: &Broker,
    session: &Session,
    req: DeleteShareGroupOffsetsRequest,
) -> DeleteShareGroupOffsetsResponse {
    let group = req.group_id.0.to_string();
    if let Some(e) = offsets_change_refused(broker, session, &group) {
        return DeleteShareGroupOffsetsResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(e.to_string())));
    }
    let image = broker.image();
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let known = readable_topic(&image, session, t.topic_name.0.as_str());
        let mut result = known.map(|_| ());
        if let Ok((topic_id, count)) = known {
            for partition in 0..count {
                let key = StateKey {
                    group: group.clone(),
                    topic_id,
                    partition,
                };
                if let Err(e) = broker.shares.reset(&key, None).await {
                    result = Err(e);
                }
            }
        }
        let out = DeleteShareGroupOffsetsResponseTopic::default()
            .with_topic_name(t.topic_name.clone())
            .with_topic_id(known.map_or_else(|_| Default::default(), |k| k.0));
        responses.push(match result {
            Ok(()) => out,
            Err(e) => out
                .with_error_code(code(e))
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    DeleteShareGroupOffsetsResponse::default().with_responses(responses)
}
