//! Committed offsets: OffsetCommit, OffsetFetch (batched groups from v8), OffsetDelete. These
//! handlers translate; the group coordinator (`group/offsets.rs`) commits, reads and deletes.

use std::collections::HashSet;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::group::records::OffsetValue;
use crate::group::state::NONE;
use crate::group::Committed;
use crate::group::OffsetCommit;
use crate::meta::acl::{AclOperation, ResourceType};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// READ on the group, and READ on each topic (TOPIC_AUTHORIZATION_FAILED for the partitions of
/// a topic without it; the others are committed).
pub async fn commit(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let image = broker.image();
    let partitions: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
    if !session.allowed(
        &image,
        AclOperation::Read,
        ResourceType::Group,
        &req.group_id,
    ) {
        return commit_response(
            &req,
            vec![code(ResponseError::GroupAuthorizationFailed); partitions],
        );
    }
    let denied: HashSet<&str> = req
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|t| !session.allowed(&image, AclOperation::Read, ResourceType::Topic, t))
        .collect();
    let commits: Vec<OffsetCommit> = req
        .topics
        .iter()
        .filter(|t| !denied.contains(t.name.0.as_str()))
        .flat_map(|t| {
            t.partitions.iter().map(|p| OffsetCommit {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let generation = if version >= 1 {
        req.generation_id_or_member_epoch
    } else {
        -1
    };
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let committed = broker
        .groups
        .commit_offsets(
            &req.group_id.0,
            &req.member_id,
            instance.as_deref(),
            generation,
            version,
            commits,
        )
        .await;
    let errors = match committed {
        Ok(errors) => {
            // Put the refused topics' errors back in request order.
            let mut errors = errors.into_iter();
            let mut all = Vec::with_capacity(partitions);
            for t in &req.topics {
                let refused = denied.contains(t.name.0.as_str());
                for _ in &t.partitions {
                    all.push(if refused {
                        code(ResponseError::TopicAuthorizationFailed)
                    } else {
                        errors.next().unwrap_or(NONE)
                    });
                }
            }
            all
        }
        Err(e) => vec![code(e); partitions],
    };
    commit_response(&req, errors)
}

/// An OffsetCommit response with `errors` for the request's partitions, in order.
fn commit_response(req: &OffsetCommitRequest, errors: Vec<i16>) -> OffsetCommitResponse {
    let mut errors = errors.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(errors.next().unwrap_or(NONE))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// What OffsetFetch reports for a partition: (offset, leader epoch, metadata), -1s when none.
fn reported(v: Option<OffsetValue>) -> (i64, i32, StrBytes) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, s(v.metadata)),
        None => (-1, -1, StrBytes::default()),
    }
}

fn wanted_topics<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>,
) -> Vec<(String, Vec<i32>)> {
    topics
        .map(|(name, partitions)| (name.0.to_string(), partitions.clone()))
        .collect()
}

/// The committed offsets a session may see: DESCRIBE on the group (else
/// GROUP_AUTHORIZATION_FAILED), and on each topic: a requested topic without it is answered
/// with TOPIC_AUTHORIZATION_FAILED (the second value), one without it is left out of an
/// all-offsets answer.
fn visible_offsets(
    broker: &Broker,
    session: &Session,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<(Committed, HashSet<String>), ResponseError> {
    let image = broker.image();
    if !session.allowed(&image, AclOperation::Describe, ResourceType::Group, group) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    let describe =
        |t: &str| session.allowed(&image, AclOperation::Describe, ResourceType::Topic, t);
    let denied: HashSet<String> = wanted
        .iter()
        .flatten()
        .map(|(t, _)| t.clone())
        .filter(|t| !describe(t))
        .collect();
    let all = wanted.is_none();
    let mut map = broker.groups.fetch_offsets(group, wanted)?;
    if all {
        map.retain(|t, _| describe(t));
    }
    Ok((map, denied))
}

/// A partition's answer: (offset, leader epoch, metadata, error). With `unstable` (the
/// request asked for stable offsets and a transaction has offsets pending for the partition)
/// the answer is UNSTABLE_OFFSET_COMMIT, which clients retry.
fn reported_in(
    topic: &str,
    v: Option<OffsetValue>,
    denied: &HashSet<String>,
    unstable: bool,
) -> (i64, i32, StrBytes, i16) {
    if denied.contains(topic) {
        return (
            -1,
            -1,
            StrBytes::default(),
            code(ResponseError::TopicAuthorizationFailed),
        );
    }
    if unstable {
        return (
            -1,
            -1,
            StrBytes::default(),
            code(ResponseError::UnstableOffsetCommit),
        );
    }
    let (offset, epoch, metadata) = reported(v);
    (offset, epoch, metadata, NONE)
}

pub fn fetch(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| fetch_group(broker, session, version, g, req.require_stable))
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req
        .topics
        .as_ref()
        .map(|ts| wanted_topics(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
    match visible_offsets(broker, session, &req.group_id, wanted) {
        Err(e) => fetch_error(version, &req, e),
        Ok((map, denied)) => OffsetFetchResponse::default().with_topics(
            map.into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, v)| {
                            let unstable = req.require_stable
                                && broker.groups.has_pending_offsets(&req.group_id, &t, p);
                            let (offset, epoch, metadata, error) =
                                reported_in(&t, v, &denied, unstable);
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(metadata))
                                .with_error_code(error);
                            if version >= 5 {
                                r.committed_leader_epoch = epoch;
                            }
                            r
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(partitions)
                })
                .collect(),
        ),
    }
}

/// One group of a v8+ OffsetFetch.
fn fetch_group(
    broker: &Broker,
    session: &Session,
    version: i16,
    g: &OffsetFetchRequestGroup,
    require_stable: bool,
) -> OffsetFetchResponseGroup {
    let wanted = g
        .topics
        .as_ref()
        .map(|ts| wanted_topics(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
    let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
    if version >= 9 {
        let member = g.member_id.as_deref();
        if let Err(e) = broker
            .groups
            .validate_offset_fetch(&g.group_id, member, g.member_epoch)
        {
            return r.with_error_code(code(e));
        }
    }
    match visible_offsets(broker, session, &g.group_id, wanted) {
        Err(e) => r.with_error_code(code(e)),
        Ok((map, denied)) => r.with_topics(
            map.into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, v)| {
                            let unstable = require_stable
                                && broker.groups.has_pending_offsets(&g.group_id, &t, p);
                            let (offset, epoch, metadata, error) =
                                reported_in(&t, v, &denied, unstable);
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(metadata))
                                .with_error_code(error)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(partitions)
                })
                .collect(),
        ),
    }
}

/// A failed OffsetFetch before v8: the error at the top from v2, on every requested
/// partition before.
fn fetch_error(version: i16, req: &OffsetFetchRequest, e: ResponseError) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version >= 2 {
        resp.error_code = code(e);
    }
    let partition_error = if version < 2 { code(e) } else { NONE };
    if let Some(ts) = &req.topics {
        resp.topics = ts
            .iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(-1)
                                    .with_metadata(Some(StrBytes::default()))
                                    .with_error_code(partition_error)
                            })
                            .collect(),
                    )
            })
            .collect();
    }
    resp
}

/// DELETE on the group, and READ on each topic (TOPIC_AUTHORIZATION_FAILED for its partitions).
pub async fn delete(
    broker: &Broker,
    session: &Session,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let image = broker.image();
    if !session.allowed(
        &image,
        AclOperation::Delete,
        ResourceType::Group,
        &req.group_id,
    ) {
        return OffsetDeleteResponse::default()
            .with_error_code(code(ResponseError::GroupAuthorizationFailed));
    }
    let read = |t: &str| session.allowed(&image, AclOperation::Read, ResourceType::Topic, t);
    let refused: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .filter(|t| !read(&t.name))
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .filter(|t| read(&t.name))
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let refused = refused.into_iter().map(|(t, ps)| {
        let errors = ps
            .into_iter()
            .map(|p| (p, code(ResponseError::TopicAuthorizationFailed)))
            .collect();
        (t, errors)
    });
    match broker.groups.delete_offsets(&req.group_id.0, topics).await {
        Err(e) => OffsetDeleteResponse::default().with_error_code(code(e)),
        Ok(mut result) => {
            result.topics.extend(refused);
            OffsetDeleteResponse::default()
                .with_error_code(result.error)
                .with_topics(
                    result
                        .topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetDeleteResponseTopic::default()
                                .with_name(TopicName(s(name)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(p, error)| {
                                            OffsetDeleteResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_error_code(error)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        }
    }
}
