//! Committed offsets: OffsetCommit, OffsetFetch (batched groups from v8), OffsetDelete.
//! Commits are written to `__consumer_offsets` before they are acknowledged.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
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
use crate::group::records::{OffsetValue, RecordKey};
use crate::group::state::{GroupState, NONE};
use crate::replica::now_ms;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// Kafka's `ClassicGroup.validateOffsetCommit`.
fn validate_commit(
    g: &crate::group::state::Group,
    member_id: &str,
    instance: Option<&str>,
    generation: i32,
) -> Result<(), ResponseError> {
    if g.state == GroupState::Dead {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    if generation < 0 && g.state == GroupState::Empty {
        // A simple consumer (assign()) or the admin client: allowed while no member is in.
        return Ok(());
    }
    if generation >= 0 || !member_id.is_empty() || instance.is_some() {
        let known = g.members().any(|m| m.member_id == member_id);
        if let Some(i) = instance {
            let current = g
                .members()
                .find(|m| m.group_instance_id.as_deref() == Some(i))
                .map(|m| m.member_id.as_str());
            match current {
                Some(c) if c != member_id => return Err(ResponseError::FencedInstanceId),
                None => return Err(ResponseError::UnknownMemberId),
                _ => {}
            }
        }
        if !known {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
    } else if g.state != GroupState::Empty {
        return Err(ResponseError::UnknownMemberId);
    }
    if g.state == GroupState::CompletingRebalance {
        // The member has its JoinGroup answer but not yet its assignment.
        return Err(ResponseError::RebalanceInProgress);
    }
    Ok(())
}

pub async fn commit(
    broker: &Broker,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
    let image = broker.image();
    let all =
        |topics: &[kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic],
         e: i16| {
            topics
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
                                        .with_error_code(e)
                                })
                                .collect(),
                        )
                })
                .collect::<Vec<_>>()
        };
    let top_error = if group_id.is_empty() {
        Some(ResponseError::InvalidGroupId)
    } else {
        broker.check_coordinator(&group_id).err()
    };
    if let Some(e) = top_error {
        return OffsetCommitResponse::default().with_topics(all(&req.topics, code(e)));
    }
    let handle = groups.get_or_create(&group_id);
    let instance = req.group_instance_id.as_ref().map(|i| i.to_string());
    let generation = if version >= 1 {
        req.generation_id_or_member_epoch
    } else {
        -1
    };
    let now = now_ms();
    let mut results: Vec<(usize, i32, i16)> = Vec::new();
    let mut accepted: Vec<(String, i32, OffsetValue)> = Vec::new();
    let written = {
        let mut entry = handle.lock();
        let check = validate_commit(
            &entry.group,
            &req.member_id,
            instance.as_deref(),
            generation,
        );
        for (ti, t) in req.topics.iter().enumerate() {
            let known_topic = image.topic(&t.name.0);
            for p in &t.partitions {
                let error = match (&check, known_topic) {
                    (Err(e), _) => code(*e),
                    (Ok(()), None) => code(ResponseError::UnknownTopicOrPartition),
                    (Ok(()), Some(topic))
                        if !topic
                            .partitions
                            .iter()
                            .any(|x| x.partition == p.partition_index) =>
                    {
                        code(ResponseError::UnknownTopicOrPartition)
                    }
                    (Ok(()), Some(_))
                        if p.committed_metadata
                            .as_ref()
                            .is_some_and(|m| m.len() > groups.config.offset_metadata_max_bytes) =>
                    {
                        code(ResponseError::OffsetMetadataTooLarge)
                    }
                    (Ok(()), Some(_)) => {
                        accepted.push((
                            t.name.0.to_string(),
                            p.partition_index,
                            OffsetValue {
                                offset: p.committed_offset,
                                leader_epoch: if version >= 6 {
                                    p.committed_leader_epoch
                                } else {
                                    -1
                                },
                                metadata: p
                                    .committed_metadata
                                    .as_ref()
                                    .map(|m| m.to_string())
                                    .unwrap_or_default(),
                                commit_timestamp: now,
                            },
                        ));
                        NONE
                    }
                };
                results.push((ti, p.partition_index, error));
            }
        }
        if accepted.is_empty() {
            None
        } else {
            let records: Vec<(Bytes, Option<Bytes>)> = accepted
                .iter()
                .map(|(t, p, v)| {
                    (
                        RecordKey::Offset {
                            group: group_id.clone(),
                            topic: t.clone(),
                            partition: *p,
                        }
                        .encode(),
                        Some(v.encode()),
                    )
                })
                .collect();
            let w = groups.append(&broker.replicas, &group_id, &records);
            if w.is_ok() {
                for (t, p, v) in &accepted {
                    entry.offsets.insert((t.clone(), *p), v.clone());
                }
            }
            Some(w)
        }
    };
    let store_error = match written {
        None => None,
        Some(Err(e)) => Some(e),
        Some(Ok(w)) => groups.committed(w).await.err(),
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = req
        .topics
        .iter()
        .map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for (ti, p, mut error) in results {
        if error == NONE {
            if let Some(e) = store_error {
                error = code(e);
            }
        }
        topics[ti].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(error),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// Committed offsets by topic: (partition, value if any), partitions ascending.
type Committed = BTreeMap<String, Vec<(i32, Option<OffsetValue>)>>;

/// The committed offsets of one group: (topic → [(partition, value)]); all when `wanted` is None.
fn committed(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Committed, ResponseError> {
    let groups = &broker.groups;
    broker.check_coordinator(group_id)?;
    let handle = groups.group(group_id);
    let entry = handle.as_ref().map(|h| h.lock());
    let offsets = entry.as_ref().map(|e| &e.offsets);
    let mut out = Committed::new();
    match wanted {
        Some(topics) => {
            for (t, parts) in topics {
                let list = out.entry(t.clone()).or_default();
                for p in parts {
                    list.push((p, offsets.and_then(|o| o.get(&(t.clone(), p)).cloned())));
                }
            }
        }
        None => {
            if let Some(o) = offsets {
                for ((t, p), v) in o {
                    out.entry(t.clone())
                        .or_default()
                        .push((*p, Some(v.clone())));
                }
                for list in out.values_mut() {
                    list.sort_by_key(|(p, _)| *p);
                }
            }
        }
    }
    Ok(out)
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
    let groups = &broker.groups;
    let group_id = req.group_id.0.to_string();
    if let Err(e) = broker.check_coordinator(&group_id) {
        return OffsetDeleteResponse::default().with_error_code(code(e));
    }
    let Some(handle) = groups.group(&group_id) else {
        return OffsetDeleteResponse::default()
            .with_error_code(code(ResponseError::GroupIdNotFound));
    };
    let mut topics = Vec::new();
    let written = {
        let mut entry = handle.lock();
        if entry.group.state == GroupState::Dead {
            return OffsetDeleteResponse::default()
                .with_error_code(code(ResponseError::GroupIdNotFound));
        }
        let subscribed: HashSet<String> = entry
            .group
            .subscribed_topics()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let active = !entry.group.is_empty();
        if active && entry.group.protocol_type.as_deref() != Some("consumer") {
            return OffsetDeleteResponse::default()
                .with_error_code(code(ResponseError::NonEmptyGroup));
        }
        let mut tombstones = Vec::new();
        for t in &req.topics {
            let name = t.name.0.to_string();
            let blocked = active && subscribed.contains(&name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if blocked {
                        code(ResponseError::GroupSubscribedToTopic)
                    } else {
                        if entry
                            .offsets
                            .remove(&(name.clone(), p.partition_index))
                            .is_some()
                        {
                            tombstones.push((
                                RecordKey::Offset {
                                    group: group_id.clone(),
                                    topic: name.clone(),
                                    partition: p.partition_index,
                                }
                                .encode(),
                                None,
                            ));
                        }
                        NONE
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        (!tombstones.is_empty()).then(|| groups.append(&broker.replicas, &group_id, &tombstones))
    };
    let error = match written {
        None => NONE,
        Some(Err(e)) => code(e),
        Some(Ok(w)) => groups.committed(w).await.err().map(code).unwrap_or(NONE),
    };
    OffsetDeleteResponse::default()
        .with_error_code(error)
        .with_topics(topics)
}
