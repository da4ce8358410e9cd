//! Kafka API handlers, one file per API family, and the table of what Gregor advertises.
//!
//! `ApiVersions` tells the truth: a key appears here only when its handler is implemented and
//! tested end to end with real clients, and only for the versions listed.

pub mod acls;
pub mod api_versions;
mod broker_configs;
pub mod client_quotas;
mod client_quotas_alter;
pub mod configs;
pub mod consumer_groups;
pub mod delete_records;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod features;
pub mod fetch;
pub mod group_configs;
pub mod groups;
pub mod leader_epoch;
mod leader_hints;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod produce_txn;
pub mod producer_id;
pub mod reassignments;
pub mod sasl;
pub mod scram;
pub mod session;
pub mod share_fetch;
pub mod share_group;
pub mod share_state;
pub mod topics;
pub mod tracing;
pub mod txn;
pub mod txn_admin;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use std::sync::Arc;

use crate::broker::Broker;
use crate::meta::image::MetadataImage;
pub use crate::replica::partition_error_code;
use crate::replica::Partition;

/// (api key, lowest advertised version, highest version).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    // Produce v0-2 are advertised but refused, as Kafka 4 does (KAFKA-18659): librdkafka
    // requires the advertised range to start at 0. v12 (KIP-890 part 2) has v11's layout; in
    // Kafka a transactional v12 request adds its partitions to the transaction implicitly
    // (a TV2 add), but clients send one only when transaction.version >= 2 is finalized (the
    // Java producer caps transactional produce at v11 otherwise; librdkafka 2.16 stops at
    // v10), which Gregor never finalizes (meta::features). So v12 is served as v11, with
    // KIP-890 part 1 verification. v13 names topics by id (KIP-516), as non-transactional Java
    // producers 4.x send it.
    (ApiKey::Produce, 0, 13),
    // Topic ids (v13), incremental fetch sessions, follower fetching, leader hints (v16).
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // The consumer group protocol (KIP-848); v1 has clients generate their member ids.
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
    // After v0 the SASL tokens come as bare frames (librdkafka needs v0 listed to use SASL).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // Transactions, with the classic (TV1) protocol: EndTxn v5 and the epoch bump on every
    // transaction (KIP-890 part 2) are not offered, nor is transaction.version 2.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    // Features (KIP-584): metadata.version only, at one level (see meta::features).
    (ApiKey::UpdateFeatures, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // Operator tools: kafka-leader-election.sh and kafka-reassign-partitions.sh.
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // Share groups (KIP-932), the versions kafka-protocol 0.18 has (Kafka 4.1's schemas).
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
    // The share coordinator's inter-broker APIs (share::persister sends them). Kafka lists
    // them on every broker listener, as it does WriteTxnMarkers; so does Gregor.
    (ApiKey::ReadShareGroupState, 0, 0),
    (ApiKey::WriteShareGroupState, 0, 0),
    (ApiKey::InitializeShareGroupState, 0, 0),
    (ApiKey::DeleteShareGroupState, 0, 0),
    (ApiKey::ReadShareGroupStateSummary, 0, 0),
];

/// The lowest Produce version actually served.
pub const PRODUCE_MIN_SERVED_VERSION: i16 = 3;

/// The advertised version range of an API, if Gregor implements it.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether a request of this key and version is served (not merely advertised).
pub fn is_served(key: ApiKey, version: i16) -> bool {
    match supported_range(key) {
        Some((min, max)) => {
            let min = if key == ApiKey::Produce {
                PRODUCE_MIN_SERVED_VERSION
            } else {
                min
            };
            (min..=max).contains(&version)
        }
        None => false,
    }
}

/// Shorthand for an error code.
pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// The partition this broker leads, or the error a client should get: NOT_LEADER_OR_FOLLOWER
/// when the partition exists elsewhere, UNKNOWN_TOPIC_OR_PARTITION when it does not exist.
pub fn hosted_partition(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
) -> Result<Arc<Partition>, ResponseError> {
    match broker.replicas.partition(topic, index) {
        Some(p) if p.is_leader() => Ok(p),
        Some(_) => Err(ResponseError::NotLeaderOrFollower),
        None => {
            let exists = image
                .topic(topic)
                .is_some_and(|t| t.partitions.iter().any(|p| p.partition == index));
            Err(if exists {
                ResponseError::NotLeaderOrFollower
            } else {
                ResponseError::UnknownTopicOrPartition
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_v0_to_2_advertised_not_served() {
        assert_eq!(supported_range(ApiKey::Produce), Some((0, 13)));
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert!(is_served(ApiKey::Produce, 13));
        assert!(!is_served(ApiKey::Produce, 14));
        assert!(is_served(ApiKey::AddPartitionsToTxn, 0));
        assert!(!is_served(ApiKey::EndTxn, 5));
    }

    #[test]
    fn advertised_versions_are_within_the_codec() {
        for (key, min, max) in SUPPORTED_APIS {
            let codec = key.valid_versions();
            assert!(
                *max <= codec.max,
                "{key:?} max {max} beyond codec {}",
                codec.max
            );
            assert!(*min <= *max);
        }
    }
}
