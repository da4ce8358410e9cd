//! DescribeTopicPartitions (KIP-966; the Java AdminClient 4.x's `describeTopics`): topic and
//! partition metadata in name order, at most `response_partition_limit` partitions per answer
//! (capped by `max.request.partition.size.limit`), resumed from a cursor (topic name and
//! partition index) that the answer's `next_cursor` gives. Authorization as Metadata: topics
//! the session may not DESCRIBE are left out of an all-topics answer and answered with
//! TOPIC_AUTHORIZATION_FAILED when named. Gregor has no eligible leader replicas, so the ELR
//! and last known ELR are always empty.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::metadata::is_internal_topic;
use super::session::{Session, TOPIC_OPERATIONS};
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::image::{MetadataImage, PartitionImage, TopicImage};
use crate::meta::topic_name::validate_topic_name;

fn topic_name(name: &str) -> Option<TopicName> {
    Some(TopicName(StrBytes::from_string(name.to_string())))
}

/// What Kafka answers a request it rejects (InvalidRequestException): every named topic with
/// the error.
fn rejected(req: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    DescribeTopicPartitionsResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(t.name.clone()))
                    .with_error_code(code(ResponseError::InvalidRequest))
            })
            .collect(),
    )
}

pub fn handle(
    broker: &Broker,
    session: &Session,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.image();
    let fetch_all = req.topics.is_empty();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (c.topic_name.0.to_string(), c.partition_index),
        None => (String::new(), 0),
    };
    // Topics at or after the cursor's, in name order.
    let topics: BTreeSet<String> = if fetch_all {
        image
            .topics
            .keys()
            .filter(|n| **n >= cursor_topic)
            .cloned()
            .collect()
    } else {
        req.topics
            .iter()
            .map(|t| t.name.0.to_string())
            .filter(|n| *n >= cursor_topic)
            .collect()
    };
    // A named-topics request must name the cursor's topic; the cursor's partition is valid.
    if req.cursor.is_some()
        && ((!fetch_all && !topics.contains(&cursor_topic)) || cursor_partition < 0)
    {
        return rejected(&req);
    }
    let mut unauthorized = Vec::new();
    let authorized = topics.into_iter().filter(|name| {
        let ok = session.allowed(&image, AclOperation::Describe, ResourceType::Topic, name);
        if !ok && !fetch_all {
            // The id stays zero: the existence of the topic is not disclosed.
            unauthorized.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                    .with_name(topic_name(name)),
            );
        }
        ok
    });
    let limit = broker
        .config
        .kafka
        .max_request_partition_size_limit
        .min(req.response_partition_limit)
        .max(1);
    let start = |name: &str| {
        if name == cursor_topic {
            cursor_partition
        } else {
            0
        }
    };
    let mut resp = describe_topics(
        &image,
        &session.listener,
        authorized,
        start,
        limit,
        fetch_all,
    );
    for t in &mut resp.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        t.topic_authorized_operations =
            session.authorized_operations(&image, ResourceType::Topic, &name, TOPIC_OPERATIONS);
    }
    resp.topics.extend(unauthorized);
    resp
}

/// Kafka's paging: topics in order, each from its start partition, until `limit` partitions
/// are in the answer; the cursor then names the first partition left out. A topic that
/// cannot contribute a partition is not included (the cursor points at its partition 0).
/// Named topics that do not exist are answered with their error unless `fetch_all`.
fn describe_topics(
    image: &MetadataImage,
    listener: &str,
    topics: impl Iterator<Item = String>,
    start: impl Fn(&str) -> i32,
    limit: i32,
    fetch_all: bool,
) -> DescribeTopicPartitionsResponse {
    let mut remaining = limit;
    let mut resp = DescribeTopicPartitionsResponse::default();
    for name in topics {
        if remaining == 0 {
            resp.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(0),
            );
            break;
        }
        let Some(topic) = image.topic(&name) else {
            if !fetch_all {
                let error = match validate_topic_name(&name) {
                    Ok(()) => ResponseError::UnknownTopicOrPartition,
                    Err(_) => ResponseError::InvalidTopicException,
                };
                resp.topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(code(error))
                        .with_name(topic_name(&name))
                        .with_is_internal(is_internal_topic(&name)),
                );
            }
            continue;
        };
        let count = topic.partitions.len() as i32;
        let first = start(&name);
        let upper = count.min(first.saturating_add(remaining));
        let partitions: Vec<_> = (first..upper)
            .filter_map(|i| partition(topic, i))
            .map(|p| partition_metadata(image, listener, p))
            .collect();
        let taken = partitions.len() as i32;
        resp.topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(topic_name(&name))
                .with_topic_id(topic.topic_id)
                .with_is_internal(is_internal_topic(&name))
                .with_partitions(partitions),
        );
        if upper < count {
            resp.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(upper),
            );
            break;
        }
        remaining -= taken;
    }
    resp
}

fn partition(topic: &TopicImage, index: i32) -> Option<&PartitionImage> {
    let at = usize::try_from(index).ok()?;
    match topic.partitions.get(at) {
        Some(p) if p.partition == index => Some(p),
        _ => topic.partitions.iter().find(|p| p.partition == index),
    }
}

/// One partition as Kafka's metadata cache describes it: the leader only when it is
/// registered with this listener, every replica and ISR member, the offline replicas
/// (unregistered, fenced or without the listener), and empty ELRs.
fn partition_metadata(
    image: &MetadataImage,
    listener: &str,
    p: &PartitionImage,
) -> DescribeTopicPartitionsResponsePartition {
    let reachable = |id: i32| {
        image
            .brokers
            .get(&id)
            .is_some_and(|b| b.endpoint(listener).is_some())
    };
    let offline = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !image.is_live(*r) || !reachable(*r))
        .map(BrokerId)
        .collect();
    let leader = if p.leader >= 0 && reachable(p.leader) {
        p.leader
    } else {
        -1
    };
    DescribeTopicPartitionsResponsePartition::default()
        .with_partition_index(p.partition)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
        .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        .with_eligible_leader_replicas(Some(Vec::new()))
        .with_last_known_elr(Some(Vec::new()))
        .with_offline_replicas(offline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use uuid::Uuid;

    fn image(topics: &[(&str, i32)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (name, n) in topics {
            let t = TopicImage {
                name: name.to_string(),
                topic_id: Uuid::new_v4(),
                partitions: (0..*n)
                    .map(|i| PartitionImage {
                        partition: i,
                        replicas: vec![1],
                        isr: vec![1],
                        leader: 1,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        adding_replicas: vec![],
                        removing_replicas: vec![],
                    })
                    .collect(),
                configs: BTreeMap::new(),
            };
            image.topics.insert(name.to_string(), Arc::new(t));
        }
        image
    }

    /// The topics of one answer (name, partition indexes) and its next cursor.
    type Page = (Vec<(String, Vec<i32>)>, Option<(String, i32)>);

    fn page(image: &MetadataImage, from: (&str, i32), limit: i32) -> Page {
        let names: Vec<String> = image
            .topics
            .keys()
            .filter(|n| n.as_str() >= from.0)
            .cloned()
            .collect();
        let start = |n: &str| if n == from.0 { from.1 } else { 0 };
        let r = describe_topics(image, "PLAINTEXT", names.into_iter(), start, limit, true);
        (
            r.topics
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().unwrap().0.to_string(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect(),
            r.next_cursor
                .map(|c| (c.topic_name.0.to_string(), c.partition_index)),
        )
    }

    #[test]
    fn pages_split_topics_and_resume_from_the_cursor() {
        let img = image(&[("a", 3), ("b", 2), ("c", 1)]);
        let (topics, next) = page(&img, ("", 0), 2);
        assert_eq!(topics, vec![("a".into(), vec![0, 1])]);
        assert_eq!(next, Some(("a".into(), 2)));
        let (topics, next) = page(&img, ("a", 2), 2);
        assert_eq!(topics, vec![("a".into(), vec![2]), ("b".into(), vec![0])]);
        assert_eq!(next, Some(("b".into(), 1)));
        let (topics, next) = page(&img, ("b", 1), 2);
        assert_eq!(topics, vec![("b".into(), vec![1]), ("c".into(), vec![0])]);
        assert_eq!(next, None);
        // A page that ends exactly at a topic's end points at the next topic's partition 0.
        let (topics, next) = page(&img, ("", 0), 3);
        assert_eq!(topics, vec![("a".into(), vec![0, 1, 2])]);
        assert_eq!(next, Some(("b".into(), 0)));
    }
}
