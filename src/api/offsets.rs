//! Committed offsets: OffsetCommit, OffsetFetch (batched groups from v8), OffsetDelete. These
//! handlers translate; the group coordinator (`group/offsets.rs`) commits, reads and deletes.

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
use crate::broker::Broker;
use crate::group::records::OffsetValue;
use crate::group::state::NONE;
use crate::group::OffsetCommit;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub async fn commit(
    broker: &Broker,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let commits: Vec<OffsetCommit> = req
        .topics
        .iter()
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
    let errors = match broker
        .groups
        .commit_offsets(
            &req.group_id.0,
            &req.member_id,
            instance.as_deref(),
            generation,
            commits,
        )
        .await
    {
        Ok(errors) => errors,
        Err(e) => vec![code(e); req.topics.iter().map(|t| t.partitions.len()).sum()],
    };
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

pub fn fetch(broker: &Broker, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req.groups.iter().map(|g| fetch_group(broker, g)).collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req
        .topics
        .as_ref()
        .map(|ts| wanted_topics(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
    match broker.groups.fetch_offsets(&req.group_id, wanted) {
        Err(e) => fetch_error(version, &req, e),
        Ok(map) => OffsetFetchResponse::default().with_topics(
            map.into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, metadata) = reported(v);
                            let mut r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(metadata));
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
fn fetch_group(broker: &Broker, g: &OffsetFetchRequestGroup) -> OffsetFetchResponseGroup {
    let wanted = g
        .topics
        .as_ref()
        .map(|ts| wanted_topics(ts.iter().map(|t| (&t.name, &t.partition_indexes))));
    let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
    match broker.groups.fetch_offsets(&g.group_id, wanted) {
        Err(e) => r.with_error_code(code(e)),
        Ok(map) => r.with_topics(
            map.into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, v)| {
                            let (offset, epoch, metadata) = reported(v);
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(metadata))
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

pub async fn delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    match broker.groups.delete_offsets(&req.group_id.0, topics).await {
        Err(e) => OffsetDeleteResponse::default().with_error_code(code(e)),
        Ok(result) => OffsetDeleteResponse::default()
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
            ),
    }
}
