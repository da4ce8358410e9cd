//! Committed offsets: OffsetCommit, OffsetFetch (batched groups from v8), OffsetDelete. These
//! handlers translate; the group coordinator (`group/offsets.rs`) commits, reads and deletes.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use crate::broker::Broker;
use crate::group::state::NONE;
use crate::group::{Committed, OffsetCommit};

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

fn committed(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Committed, ResponseError> {
    broker.groups.fetch_offsets(group_id, wanted)
}

pub fn fetch(broker: &Broker, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match committed(broker, &g.group_id, wanted) {
                    Err(e) => r.with_error_code(code(e)),
                    Ok(map) => r.with_topics(
                        map.into_iter()
                            .map(|(t, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(t)))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, v)| {
                                                let (offset, epoch, meta) = match v {
                                                    Some(v) => {
                                                        (v.offset, v.leader_epoch, v.metadata)
                                                    }
                                                    None => (-1, -1, String::new()),
                                                };
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(s(meta)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    match committed(broker, &req.group_id, wanted) {
        Err(e) => {
            let mut resp = OffsetFetchResponse::default();
            if version >= 2 {
                resp.error_code = code(e);
            }
            // Before v2 the error is reported on every requested partition.
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
                                            .with_error_code(if version < 2 {
                                                code(e)
                                            } else {
                                                NONE
                                            })
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
            }
            resp
        }
        Ok(map) => OffsetFetchResponse::default().with_topics(
            map.into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, v)| {
                                    let (offset, epoch, meta) = match v {
                                        Some(v) => (v.offset, v.leader_epoch, v.metadata),
                                        None => (-1, -1, String::new()),
                                    };
                                    let mut r = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_metadata(Some(s(meta)));
                                    if version >= 5 {
                                        r.committed_leader_epoch = epoch;
                                    }
                                    r
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
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
