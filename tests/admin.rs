//! End-to-end tests of the idempotent producer and the admin APIs against the real binary:
//! InitProducerId and sequence checks, configs, CreatePartitions, DeleteRecords,
//! OffsetForLeaderEpoch, DescribeLogDirs, DescribeCluster.

mod common;

use common::requests::*;
use common::{Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn init_producer_id(c: &mut Client) -> (i64, i16) {
    let resp = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

#[test]
fn idempotent_producer_duplicates_gaps_and_epochs() {
    let mut broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "idem", 1, &[]);
    let (pid, epoch) = init_producer_id(&mut c);
    assert!(pid >= 0);
    assert_eq!(epoch, 0);
    let (pid2, _) = init_producer_id(&mut c);
    assert_ne!(pid, pid2, "producer ids are never reused");

    let first = idempotent_batch(&["a", "b"], 1, Compression::None, pid, 0, 0);
    assert_eq!(produce(&mut c, "idem", 0, first.clone()), (0, 0));
    let second = idempotent_batch(&["c"], 1, Compression::None, pid, 0, 2);
    assert_eq!(produce(&mut c, "idem", 0, second.clone()), (0, 2));
    // Retries of either batch return the original offsets and write nothing.
    assert_eq!(produce(&mut c, "idem", 0, first), (0, 0));
    assert_eq!(produce(&mut c, "idem", 0, second), (0, 2));
    assert_eq!(list_offset(&mut c, "idem", -1).1, 3);
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing written.
    let gap = idempotent_batch(&["x"], 1, Compression::None, pid, 0, 10);
    assert_eq!(produce(&mut c, "idem", 0, gap).0, 45);
    // A newer epoch must start at sequence 0; then the old epoch is fenced.
    let bumped = idempotent_batch(&["d"], 1, Compression::None, pid, 1, 0);
    assert_eq!(produce(&mut c, "idem", 0, bumped), (0, 3));
    let stale = idempotent_batch(&["e"], 1, Compression::None, pid, 0, 3);
    assert_eq!(produce(&mut c, "idem", 0, stale).0, 47);
    assert_eq!(list_offset(&mut c, "idem", -1).1, 4);

    // Producer state is rebuilt from the log after a restart.
    broker.restart();
    let mut c = broker.client();
    let retry = idempotent_batch(&["d"], 1, Compression::None, pid, 1, 0);
    assert_eq!(produce(&mut c, "idem", 0, retry), (0, 3));
    let next = idempotent_batch(&["f"], 1, Compression::None, pid, 1, 1);
    assert_eq!(produce(&mut c, "idem", 0, next), (0, 4));
    let (pid3, _) = init_producer_id(&mut c);
    assert!(pid3 > pid2, "ids keep increasing across restarts");
}

#[test]
fn transactional_init_validates_the_timeout() {
    let broker = Broker::start();
    let mut c = broker.client();
    let resp = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(resp.error_code, 50, "INVALID_TRANSACTION_TIMEOUT");
}

fn describe_topic_configs(c: &mut Client, topic: &str) -> Vec<(String, String, i8)> {
    let resp = c.call(
        4,
        &DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_resources(vec![
                kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))
                    .with_configuration_keys(None),
            ]),
    );
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
            )
        })
        .collect()
}

fn config<'a>(all: &'a [(String, String, i8)], key: &str) -> (&'a str, i8) {
    let e = all
        .iter()
        .find(|(k, _, _)| k == key)
        .expect("config present");
    (&e.1, e.2)
}

#[test]
fn topic_configs_describe_and_alter() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "cfg", 1, &[("retention.ms", "3600000")]);
    let all = describe_topic_configs(&mut c, "cfg");
    assert_eq!(config(&all, "retention.ms"), ("3600000", 1));
    assert_eq!(config(&all, "max.message.bytes"), ("1048588", 5));
    assert_eq!(config(&all, "cleanup.policy"), ("delete", 5));

    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let alter = |ops: Vec<(&str, i8, Option<&str>)>| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("cfg"))
                .with_configs(
                    ops.into_iter()
                        .map(|(k, op, v)| {
                            AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(op)
                                .with_value(v.map(s))
                        })
                        .collect(),
                ),
        ])
    };
    let resp = c.call(
        1,
        &alter(vec![
            ("retention.ms", 1, None),
            ("max.message.bytes", 0, Some("5000")),
        ]),
    );
    assert_eq!(
        resp.responses[0].error_code, 0,
        "{:?}",
        resp.responses[0].error_message
    );
    let all = describe_topic_configs(&mut c, "cfg");
    assert_eq!(config(&all, "retention.ms"), ("604800000", 5));
    assert_eq!(config(&all, "max.message.bytes"), ("5000", 1));
    // The new limit applies to produce at once.
    let big = batch(&[&"x".repeat(6000)], 1, Compression::None);
    assert_eq!(produce(&mut c, "cfg", 0, big).0, 10, "MESSAGE_TOO_LARGE");

    let resp = c.call(1, &alter(vec![("flush.messages", 0, Some("zero"))]));
    assert_eq!(resp.responses[0].error_code, 40, "INVALID_CONFIG");
    let resp = c.call(1, &alter(vec![("retention.ms", 2, Some("5"))]));
    assert_eq!(
        resp.responses[0].error_code, 40,
        "APPEND on a non-list config"
    );

    // Broker resources are described, with their sources.
    let resp = c.call(
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s("1"))
                .with_configuration_keys(Some(vec![s("num.partitions"), s("log.retention.ms")])),
        ]),
    );
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0);
    let names: Vec<String> = r.configs.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names, vec!["log.retention.ms", "num.partitions"]);
}

#[test]
fn partitions_records_epochs_log_dirs_cluster() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "grow", 1, &[]);
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    let grow = |count: i32| {
        CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("grow"))
            .with_count(count)
            .with_assignments(None)])
    };
    assert_eq!(c.call(3, &grow(3)).results[0].error_code, 0);
    assert_eq!(
        c.call(3, &grow(2)).results[0].error_code,
        37,
        "INVALID_PARTITIONS"
    );
    assert_eq!(
        produce(&mut c, "grow", 2, batch(&["p2"], 1, Compression::None)),
        (0, 0)
    );

    for i in 0..5 {
        produce(
            &mut c,
            "grow",
            0,
            batch(&[&format!("v{i}")], 1, Compression::None),
        );
    }
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let del = |offset: i64| {
        DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name("grow"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])])
    };
    let resp = c.call(2, &del(3));
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 3));
    assert_eq!(c.call(2, &del(99)).topics[0].partitions[0].error_code, 1);
    assert_eq!(list_offset(&mut c, "grow", -2).1, 3);
    let resp = c.call(12, &fetch_req("grow", 1, 0, 0, 1 << 20));
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 1,
        "below the log start offset"
    );

    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let resp = c.call(
        4,
        &OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(name("grow"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(0)])]),
    );
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 5));

    let resp = c.call(4, &DescribeLogDirsRequest::default().with_topics(None));
    let dir = &resp.results[0];
    assert!(dir.log_dir.ends_with("logs"));
    assert!(dir.total_bytes > 0);
    let t = dir
        .topics
        .iter()
        .find(|t| t.name == name("grow"))
        .expect("topic");
    assert_eq!(t.partitions.len(), 3);
    assert!(t.partitions[0].partition_size > 0);

    let resp = c.call(1, &DescribeClusterRequest::default().with_endpoint_type(1));
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.controller_id, BrokerId(1));
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!(resp.brokers[0].port, broker.port as i32);
}
