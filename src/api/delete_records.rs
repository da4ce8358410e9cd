//! DeleteRecords: moves a partition's log start offset forward (whole segments below it are
//! deleted) and reports the new low watermark.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::session::Session;
use super::{code, hosted_partition};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};

/// `offset = -1` means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Needs DELETE on each topic.
pub fn handle(
    broker: &Broker,
    session: &Session,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let image = broker.image();
    let mut changed = false;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let authorized =
                session.allowed(&image, AclOperation::Delete, ResourceType::Topic, &t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    if !authorized {
                        return r.with_error_code(code(ResponseError::TopicAuthorizationFailed));
                    }
                    let partition = match hosted_partition(broker, &image, &t.name, p.partition_index) {
                        Ok(p) => p,
                        Err(e) => return r.with_error_code(code(e)),
                    };
                    let hw = partition.high_watermark();
                    let target = if p.offset == HIGH_WATERMARK { hw } else { p.offset };
                    if target < 0 || target > hw {
                        return r.with_error_code(code(ResponseError::OffsetOutOfRange));
                    }
                    match partition.delete_records_before(target) {
                        Ok(low) => {
                            changed = true;
                            r.with_low_watermark(low)
                        }
                        Err(e) => {
                            tracing::error!(topic = %t.name.0, partition = p.partition_index, error = %e, "DeleteRecords failed");
                            r.with_error_code(code(ResponseError::KafkaStorageError))
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    if changed {
        // The new log start offsets must survive a crash.
        if let Err(e) = broker.replicas.logs().write_checkpoints() {
            tracing::error!(error = %e, "writing log start offset checkpoint failed");
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
