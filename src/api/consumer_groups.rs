//! The consumer group protocol's APIs (KIP-848): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. These handlers translate requests and responses; the group
//! coordinator (`group/consumer_coordinator.rs`) does the work.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTps,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as ResponseTps,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::{Session, GROUP_OPERATIONS};
use crate::broker::Broker;
use crate::group::consumer::heartbeat::Heartbeat;
use crate::group::consumer::TopicPartitions;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::group_configs::CONSUMER_HEARTBEAT_INTERVAL_MS;
use crate::meta::image::MetadataImage;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Member types in ConsumerGroupDescribe v1 (KIP-1099): the consumer and the classic protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;
const MEMBER_TYPE_CLASSIC: i8 = 0;

pub async fn heartbeat(
    broker: &Broker,
    session: &Session,
    version: i16,
    client: &crate::group::ClientInfo,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let fail = |e: ResponseError, msg: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(s(msg)))
    };
    let image = broker.image();
    if !session.allowed(
        &image,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    ) {
        let e = ResponseError::GroupAuthorizationFailed;
        return fail(e, e.to_string());
    }
    // Kafka checks DESCRIBE on every subscribed topic named.
    if let Some(names) = &req.subscribed_topic_names {
        if names
            .iter()
            .any(|t| !session.allowed(&image, AclOperation::Describe, ResourceType::Topic, t))
        {
            let e = ResponseError::TopicAuthorizationFailed;
            return fail(e, e.to_string());
        }
    }
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|a| a.to_string()),
        owned: req.topic_partitions.as_ref().map(|tps| {
            let mut owned = TopicPartitions::new();
            for t in tps {
                owned
                    .entry(t.topic_id)
                    .or_default()
                    .extend(t.partitions.iter().copied());
            }
            owned
        }),
        client_id: client.client_id.clone(),
        client_host: client.client_host.clone(),
    };
    match broker
        .groups
        .consumer_heartbeat(&req.group_id, hb, version)
        .await
    {
        Err((e, msg)) => fail(e, msg),
        Ok(reply) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(reply.member_id)))
            .with_member_epoch(reply.member_epoch)
            .with_heartbeat_interval_ms(
                broker
                    .image()
                    .group_configs
                    .int(&req.group_id, CONSUMER_HEARTBEAT_INTERVAL_MS)
                    .map_or(
                        broker.groups.config.consumer_heartbeat_interval.as_millis() as i32,
                        |v| v as i32,
                    ),
            )
            .with_assignment(reply.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, parts)| {
                            ResponseTps::default()
                                .with_topic_id(id)
                                .with_partitions(parts.into_iter().collect())
                        })
                        .collect(),
                )
            })),
    }
}

fn described(image: &MetadataImage, tps: &TopicPartitions) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        tps.iter()
            .map(|(id, parts)| {
                let name = image.topic_names_by_id.get(id).cloned().unwrap_or_default();
                DescribedTps::default()
                    .with_topic_id(*id)
                    .with_topic_name(TopicName(s(name)))
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

pub fn describe(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = broker.image();
    let groups = req
        .group_ids
        .iter()
        .map(|id| {
            let d = DescribedGroup::default().with_group_id(id.clone());
            if !session.allowed(&image, AclOperation::Describe, ResourceType::Group, id) {
                let e = ResponseError::GroupAuthorizationFailed;
                return d
                    .with_error_code(code(e))
                    .with_error_message(Some(s(e.to_string())));
            }
            let g = match broker.groups.describe_consumer_group(id) {
                Ok(g) => g,
                Err((e, msg)) => {
                    return d.with_error_code(code(e)).with_error_message(Some(s(msg)))
                }
            };
            let members = g
                .members
                .into_iter()
                .map(|(m, target)| {
                    let sub = &m.subscription;
                    let mut member = Member::default()
                        .with_member_id(s(m.member_id.clone()))
                        .with_instance_id(sub.instance_id.clone().map(s))
                        .with_rack_id(sub.rack_id.clone().map(s))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(s(sub.client_id.clone()))
                        .with_client_host(s(sub.client_host.clone()))
                        .with_subscribed_topic_names(
                            sub.subscribed_topic_names
                                .iter()
                                .map(|t| TopicName(s(t.clone())))
                                .collect(),
                        )
                        // Kafka reports no regex as an empty one.
                        .with_subscribed_topic_regex(Some(s(sub
                            .subscribed_topic_regex
                            .clone()
                            .unwrap_or_default())))
                        .with_assignment(described(&image, &m.assigned))
                        .with_target_assignment(described(&image, &target));
                    if version >= 1 {
                        // KIP-1099: 0 for a member that speaks the classic protocol.
                        member.member_type = if m.is_classic() {
                            MEMBER_TYPE_CLASSIC
                        } else {
                            MEMBER_TYPE_CONSUMER
                        };
                    }
                    member
                })
                .collect();
            let mut d = d
                .with_group_state(s(g.state))
                .with_group_epoch(g.group_epoch)
                .with_assignment_epoch(g.assignment_epoch)
                .with_assignor_name(s(g.assignor))
                .with_members(members);
            d.authorized_operations = if req.include_authorized_operations {
                session.authorized_operations(&image, ResourceType::Group, id, GROUP_OPERATIONS)
            } else {
                i32::MIN
            };
            d
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
