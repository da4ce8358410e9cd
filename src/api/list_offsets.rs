//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset whose
//! record timestamp is at or after a given time (through the time index); and the tiered
//! storage specials answered as Kafka does with remote storage off: earliest local (-4, v8+)
//! is the log start offset, latest tiered (-5, v9+) is offset -1 with leader epoch -1
//! (UnifiedLog.fetchOffsetByTimestamp). Earliest pending upload (-6) needs v11, past what the
//! codec knows: below it Kafka 4.3 answers UNSUPPORTED_VERSION, as for any timestamp a
//! version does not know.

use std::collections::HashSet;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::session::Session;
use super::{code, partition_error_code};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;
const READ_COMMITTED: i8 = 1;

pub fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let image = broker.image();
    let mut seen = HashSet::new();
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let authorized =
                session.allowed(&image, AclOperation::Describe, ResourceType::Topic, &name);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if !seen.insert((name.clone(), p.partition_index)) {
                        return r.with_error_code(code(ResponseError::InvalidRequest));
                    }
                    if !authorized {
                        return r.with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let Some(partition) = broker.replicas.partition(&name, p.partition_index)
                    else {
                        let exists = image.topic(&name).is_some_and(|t| {
                            t.partitions
                                .iter()
                                .any(|x| x.partition == p.partition_index)
                        });
                        let error = if exists {
                            ResponseError::NotLeaderOrFollower
                        } else {
                            ResponseError::UnknownTopicOrPartition
                        };
                        return r.with_error_code(code(error));
                    };
                    if !partition.is_leader() {
                        return r.with_error_code(code(ResponseError::NotLeaderOrFollower));
                    }
                    let epoch = if version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    if let Err(e) = partition.check_leader_epoch(epoch) {
                        return r.with_error_code(code(partition_error_code(&e)));
                    }
                    let leader_epoch = partition.leader_epoch();
                    let visible = if req.isolation_level == READ_COMMITTED {
                        partition.last_stable_offset()
                    } else {
                        partition.high_watermark()
                    };
                    let found: Option<(i64, i64)> = match p.timestamp {
                        LATEST => Some((visible, -1)),
                        EARLIEST => Some((partition.log.log_start_offset(), -1)),
                        // Without tiered storage the local log is the whole log.
                        EARLIEST_LOCAL_TIMESTAMP if version >= 8 => {
                            Some((partition.log.log_start_offset(), -1))
                        }
                        // Nothing is tiered: Kafka answers offset -1 and leader epoch -1.
                        LATEST_TIERED_TIMESTAMP if version >= 9 => {
                            return no_tiered_offset(r, version)
                        }
                        MAX_TIMESTAMP if version >= 7 => {
                            partition.log.offset_of_max_timestamp(visible)
                        }
                        ts if ts >= 0 => partition.log.offset_for_timestamp(ts, visible),
                        _ => {
                            return r.with_error_code(code(ResponseError::UnsupportedVersion));
                        }
                    };
                    let mut r = match found {
                        Some((offset, timestamp)) => {
                            r.with_offset(offset).with_timestamp(timestamp)
                        }
                        None => r,
                    };
                    if version >= 4 {
                        r.leader_epoch = if found.is_some() { leader_epoch } else { -1 };
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The answer for a tiered-storage position on a broker without tiered storage.
fn no_tiered_offset(r: ListOffsetsPartitionResponse, version: i16) -> ListOffsetsPartitionResponse {
    let mut r = r.with_offset(-1).with_timestamp(-1);
    if version >= 4 {
        r.leader_epoch = -1;
    }
    r
}
