//! OffsetForLeaderEpoch: where a leader epoch ends in a partition's log, from the leader epoch
//! cache. Followers and clients use it to detect and truncate divergent logs.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{code, hosted_partition, partition_error_code};
use crate::broker::Broker;

pub fn handle(broker: &Broker, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
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
