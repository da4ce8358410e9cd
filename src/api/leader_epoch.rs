//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log, from the leader epoch
//! cache. Followers and clients use it to detect and truncate divergent logs.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use kafka_protocol::ResponseError;

use super::session::Session;
use super::{code, hosted_partition, partition_error_code};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};

/// A follower (replica id set) needs CLUSTER_ACTION on the cluster, a client DESCRIBE on the
/// topic.
pub fn handle(
    broker: &Broker,
    session: &Session,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    let follower_allowed =
        req.replica_id.0 >= 0 && session.allowed_on_cluster(&image, AclOperation::ClusterAction);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let authorized = if req.replica_id.0 >= 0 {
                follower_allowed
            } else {
                session.allowed(
                    &image,
                    AclOperation::Describe,
                    ResourceType::Topic,
                    &t.topic,
                )
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if !authorized {
                        return r.with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let partition = match hosted_partition(broker, &image, &t.topic, p.partition) {
                        Ok(x) => x,
                        Err(e) => return r.with_error_code(code(e)),
                    };
                    if let Err(e) = partition.check_leader_epoch(p.current_leader_epoch) {
                        return r.with_error_code(code(partition_error_code(&e)));
                    }
                    let (epoch, end) = partition.log.end_offset_for_epoch(p.leader_epoch);
                    r.with_leader_epoch(epoch).with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
