//! Test fixtures for the controller's pure logic: a metadata image with registered, unfenced
//! brokers and one topic `t`, and partitions described by replicas, leader and ISR.

use super::image::{BrokerRegistration, MetadataImage, MetadataRecord, PartitionImage, TopicImage};
use std::collections::BTreeMap;
use uuid::Uuid;

/// An image where `brokers` are registered and topic `t` has `partitions`; with `t`'s id.
pub fn image_with(brokers: &[i32], partitions: Vec<PartitionImage>) -> (MetadataImage, Uuid) {
    let mut image = MetadataImage::default();
    for &id in brokers {
        image.apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: id,
            host: "h".into(),
            port: 9092,
            endpoints: vec![],
            rack: None,
            incarnation_id: Uuid::new_v4(),
            fenced: false,
            shutting_down: false,
        }));
    }
    let topic_id = Uuid::new_v4();
    image.apply(&MetadataRecord::CreateTopic(TopicImage {
        name: "t".into(),
        topic_id,
        partitions,
        configs: BTreeMap::new(),
    }));
    (image, topic_id)
}

/// Partition `i` at epoch 0.
pub fn partition(i: i32, replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionImage {
    PartitionImage {
        partition: i,
        replicas: replicas.to_vec(),
        isr: isr.to_vec(),
        leader,
        ..PartitionImage::default()
    }
}
