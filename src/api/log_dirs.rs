//! DescribeLogDirs: the one log directory, its partitions' sizes, and the disk's capacity.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::ResponseError;

use super::code;
use super::session::Session;
use crate::broker::Broker;
use crate::meta::acl::AclOperation;

/// (total, usable) bytes of the filesystem holding `path`, or (-1, -1).
fn disk_space(path: &std::path::Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return (-1, -1);
        }
        let unit = s.f_frsize as i64;
        (s.f_blocks as i64 * unit, s.f_bavail as i64 * unit)
    }
}

/// Needs DESCRIBE on the cluster (Kafka answers CLUSTER_AUTHORIZATION_FAILED from v3, and no
/// directories before).
pub fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !session.allowed_on_cluster(&broker.image(), AclOperation::Describe) {
        let mut resp = DescribeLogDirsResponse::default();
        if version >= 3 {
            resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
        }
        return resp;
    }
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let hosted = broker.replicas.hosted();
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    let mut names: Vec<&String> = hosted.keys().collect();
    names.sort();
    for name in names {
        let topic = &hosted[name];
        let filter = match &wanted {
            None => None,
            Some(w) => match w.get(name) {
                Some(p) => Some(p),
                None => continue,
            },
        };
        let mut indexes: Vec<&i32> = topic.partitions.keys().collect();
        indexes.sort();
        let partitions: Vec<DescribeLogDirsPartition> = indexes
            .into_iter()
            .filter(|i| filter.is_none_or(|f| f.contains(i)))
            .map(|i| {
                let p = &topic.partitions[i];
                DescribeLogDirsPartition::default()
                    .with_partition_index(*i)
                    .with_partition_size(p.log.size_bytes() as i64)
                    .with_offset_lag((p.log.log_end_offset() - p.high_watermark()).max(0))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = broker.config.data_dir.join("logs");
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        let (total, usable) = disk_space(&dir);
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
