//! End-to-end protocol tests against the real binary: ApiVersions (KIP-511), topic admin,
//! produce/fetch semantics (whole batches, max bytes, long poll), ListOffsets, restarts.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::requests::*;
use common::{Broker, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

#[test]
fn api_versions_and_kip511_fallback() {
    let broker = Broker::start();
    let mut c = broker.client();
    let resp = c.call(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("gregor-it"))
            .with_client_software_version(StrBytes::from_static_str("1.0")),
    );
    assert_eq!(resp.error_code, 0);
    let produce = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == 0)
        .expect("produce");
    assert_eq!(
        produce.min_version, 0,
        "librdkafka needs Produce from v0 (KAFKA-18659)"
    );
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == 1 && k.max_version >= 12));
    let end_txn = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == 26)
        .expect("EndTxn is advertised");
    assert_eq!(
        end_txn.max_version, 4,
        "EndTxn v5 (KIP-890 part 2) is not offered"
    );

    // A version from the future: v0-layout answer with UNSUPPORTED_VERSION and the ranges.
    let frame = c.encode(3, &ApiVersionsRequest::default());
    let mut raw = frame.to_vec();
    raw[6..8].copy_from_slice(&99i16.to_be_bytes());
    c.send_raw(&raw);
    let mut body = c.read_frame().expect("response");
    let _header = ResponseHeader::decode(&mut body, 0).expect("header v0");
    let v0 = ApiVersionsResponse::decode(&mut body, 0).expect("v0 layout");
    assert_eq!(v0.error_code, 35);
    assert!(v0.api_keys.iter().any(|k| k.api_key == 18));
}

use kafka_protocol::protocol::Decodable;

#[test]
fn fetch_returns_whole_batches_and_respects_max_bytes() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "whole", 1, &[]);
    assert_eq!(
        produce(
            &mut c,
            "whole",
            0,
            batch(&["a", "b", "c"], 1000, Compression::None)
        ),
        (0, 0)
    );
    assert_eq!(
        produce(
            &mut c,
            "whole",
            0,
            batch(&["d", "e"], 2000, Compression::Gzip)
        ),
        (0, 3)
    );
    assert_eq!(
        produce(&mut c, "whole", 0, batch(&["f"], 3000, Compression::None)),
        (0, 5)
    );

    // Offset 1 lies inside the first batch: the whole batch comes back.
    let resp = c.call(12, &fetch_req("whole", 1, 0, 1, 1 << 20));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 6);
    assert_eq!(p.log_start_offset, 0);
    assert_eq!(
        offsets_of(p.records.as_ref().expect("records")),
        vec![0, 1, 2, 3, 4, 5]
    );

    // max_bytes smaller than one batch still returns exactly one whole batch.
    let resp = c.call(12, &fetch_req("whole", 3, 0, 1, 10));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(offsets_of(p.records.as_ref().expect("records")), vec![3, 4]);

    // At the log end: empty records, not null.
    let resp = c.call(12, &fetch_req("whole", 6, 0, 0, 1 << 20));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.records.as_ref().map(|r| r.len()), Some(0));

    // Past the log end: OFFSET_OUT_OF_RANGE.
    let resp = c.call(12, &fetch_req("whole", 7, 0, 0, 1 << 20));
    assert_eq!(resp.responses[0].partitions[0].error_code, 1);

    // An incremental fetch on a session that does not exist: FETCH_SESSION_ID_NOT_FOUND.
    let mut incremental = fetch_req("whole", 0, 0, 0, 1 << 20);
    incremental.session_id = 5;
    incremental.session_epoch = 1;
    assert_eq!(c.call(12, &incremental).error_code, 70);
}

#[test]
fn long_poll_wakes_on_append_and_times_out_empty() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "poll", 1, &[]);

    // Nothing arrives: the fetch waits about max_wait_ms and returns empty.
    let started = Instant::now();
    let resp = c.call(12, &fetch_req("poll", 0, 300, 1, 1 << 20));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .map(|r| r.len()),
        Some(0)
    );

    // A produce from another connection wakes a waiting fetch long before its max wait.
    let port = broker.port;
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut p = Client::connect(port);
        produce(&mut p, "poll", 0, batch(&["wake"], 1, Compression::None))
    });
    let started = Instant::now();
    let resp = c.call(12, &fetch_req("poll", 0, 20_000, 1, 1 << 20));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not woken by the append"
    );
    assert_eq!(producer.join().expect("producer"), (0, 0));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(offsets_of(p.records.as_ref().expect("records")), vec![0]);
}

#[test]
fn list_offsets_by_kind_and_time() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "times", 1, &[]);
    assert_eq!(list_offset(&mut c, "times", -3), (0, -1, -1));
    produce(
        &mut c,
        "times",
        0,
        batch(&["a", "b"], 1_000, Compression::None),
    );
    produce(
        &mut c,
        "times",
        0,
        batch(&["c", "d"], 5_000, Compression::Lz4),
    );
    produce(&mut c, "times", 0, batch(&["e"], 3_000, Compression::None));
    assert_eq!(list_offset(&mut c, "times", -2), (0, 0, -1));
    assert_eq!(list_offset(&mut c, "times", -1), (0, 5, -1));
    assert_eq!(list_offset(&mut c, "times", 1_001), (0, 1, 1_001));
    assert_eq!(list_offset(&mut c, "times", 4_000), (0, 2, 5_000));
    assert_eq!(list_offset(&mut c, "times", 5_001), (0, 3, 5_001));
    assert_eq!(list_offset(&mut c, "times", 9_999), (0, -1, -1));
    assert_eq!(list_offset(&mut c, "times", -3), (0, 3, 5_001));
    assert_eq!(list_offset(&mut c, "nope", -1).0, 3);
}

#[test]
fn metadata_auto_create_rules_and_topic_ids_survive_restart() {
    let mut broker = Broker::start_with_env(&[("GREGOR_KAFKA_NUM_PARTITIONS", "3")]);
    let mut c = broker.client();
    let consumer_req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("ghost")))
        ]))
        .with_allow_auto_topic_creation(false);
    let resp = c.call(12, &consumer_req);
    assert_eq!(
        resp.topics[0].error_code, 3,
        "a consumer must not create topics"
    );

    let producer_req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("made")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp = c.call(12, &producer_req);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0);
    assert_eq!(t.partitions.len(), 3);
    assert!(!t.topic_id.is_nil());
    let id = t.topic_id;
    let cluster = resp.cluster_id.clone();
    assert_eq!(resp.controller_id, BrokerId(1));

    broker.restart();
    let mut c = broker.client();
    let resp = c.call(12, &MetadataRequest::default().with_topics(None));
    assert_eq!(resp.cluster_id, cluster);
    let t = resp
        .topics
        .iter()
        .find(|t| t.name == Some(name("made")))
        .expect("kept");
    assert_eq!(t.topic_id, id);
}

#[test]
fn create_and_delete_topics() {
    let broker = Broker::start();
    let mut c = broker.client();
    let topic = |n: &str, p: i32| {
        CreatableTopic::default()
            .with_name(name(n))
            .with_num_partitions(p)
            .with_replication_factor(-1)
    };
    let req = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![topic("dry", 2)]);
    let resp = c.call(7, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 2);
    let resp = c.call(12, &MetadataRequest::default().with_topics(None));
    assert!(resp.topics.is_empty(), "validate_only must not create");

    let resp = c.call(
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            topic("a.b", 1),
            topic("bad name", 1),
            topic("zero", 0),
            topic(&"x".repeat(250), 1),
        ]),
    );
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![0, 17, 37, 17]);
    let resp = c.call(
        7,
        &CreateTopicsRequest::default().with_topics(vec![topic("a.b", 1), topic("a_b", 1)]),
    );
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![36, 17], "exists, then collides with a.b");

    produce(&mut c, "a.b", 0, batch(&["x"], 1, Compression::None));
    assert!(broker.partition_dir("a.b", 0).exists());
    let resp = c.call(
        6,
        &DeleteTopicsRequest::default().with_topics(vec![
            kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                .with_name(Some(name("a.b"))),
            kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                .with_name(Some(name("missing"))),
        ]),
    );
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[1].error_code, 3);
    let dir = broker.partition_dir("a.b", 0);
    assert!(
        !dir.exists(),
        "files removed: {:?}",
        std::fs::read_dir(&dir).map(|d| d.map(|e| e.map(|e| e.file_name())).collect::<Vec<_>>())
    );
}

#[test]
fn corrupt_batch_is_refused_and_nothing_is_written() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "crc", 1, &[]);
    let good = batch(&["ok"], 1, Compression::None);
    let mut bad = good.to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0x55;
    assert_eq!(produce(&mut c, "crc", 0, Bytes::from(bad)).0, 2);
    assert_eq!(list_offset(&mut c, "crc", -1).1, 0);
    assert_eq!(produce(&mut c, "crc", 0, good), (0, 0));
    assert_eq!(
        produce(&mut c, "nosuch", 0, batch(&["x"], 1, Compression::None)).0,
        3
    );
}

#[test]
fn flush_messages_topic_survives_kill9_at_the_same_offsets() {
    let mut broker = Broker::start();
    let mut c = broker.client();
    create_topic(
        &mut c,
        "durable",
        1,
        &[("flush.messages", "1"), ("internal.segment.bytes", "2048")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    for i in 0..50 {
        let v = format!("m{i}");
        assert_eq!(
            produce(
                &mut c,
                "durable",
                0,
                batch(&[&v], now + i, Compression::None)
            ),
            (0, i)
        );
    }
    broker.kill9();
    broker.launch();
    let mut c = broker.client();
    let resp = c.call(12, &fetch_req("durable", 0, 0, 0, 1 << 20));
    let p = &resp.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark),
        (0, 50),
        "{}",
        broker.log_tail()
    );
    let mut all = Vec::new();
    let mut offset = 0;
    while offset < 50 {
        let resp = c.call(12, &fetch_req("durable", offset, 0, 0, 1 << 20));
        let recs = resp.responses[0].partitions[0]
            .records
            .clone()
            .expect("records");
        let got = offsets_of(&recs);
        offset = got.last().expect("progress") + 1;
        all.extend(got);
    }
    assert_eq!(all, (0..50).collect::<Vec<i64>>());
    assert!(broker.is_running());
}

#[test]
fn metadata_by_topic_id() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "by-id", 2, &[]);
    let all = c.call(12, &MetadataRequest::default().with_topics(None));
    let id = all.topics[0].topic_id;
    let missing = uuid::Uuid::from_u128(12345);
    let req = MetadataRequest::default().with_topics(Some(vec![
        // The Java client sends an empty name alongside the id.
        MetadataRequestTopic::default()
            .with_name(Some(name("")))
            .with_topic_id(id),
        MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(missing),
    ]));
    let resp = c.call(12, &req);
    assert_eq!(resp.topics.len(), 2);
    assert_eq!(resp.topics[0].topic_id, id);
    assert_eq!(resp.topics[0].name, Some(name("by-id")));
    assert_eq!(resp.topics[0].partitions.len(), 2);
    assert_eq!(
        (resp.topics[1].error_code, resp.topics[1].topic_id),
        (100, missing)
    );
}
