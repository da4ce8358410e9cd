//! The admin HTTP endpoints against the real binary: health, readiness and the Prometheus
//! metrics after real traffic.

mod common;

use std::io::{Read, Write};

use common::requests::*;
use common::Broker;
use kafka_protocol::records::Compression;

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    let status = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn health_and_metrics_reflect_traffic() {
    let broker = Broker::start();
    assert_eq!(http_get(broker.admin_port, "/health/live").0, 200);
    assert_eq!(http_get(broker.admin_port, "/health/ready").0, 200);
    let mut c = broker.client();
    create_topic(&mut c, "metered", 1, &[]);
    for i in 0..5 {
        produce(
            &mut c,
            "metered",
            0,
            batch(&["some bytes"], i, Compression::None),
        );
    }
    let resp = c.call(12, &fetch_req("metered", 0, 0, 0, 1 << 20));
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);

    let (status, text) = http_get(broker.admin_port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "gregor_up"), Some(1.0));
    assert_eq!(
        metric(&text, "gregor_requests_total{api=\"Produce\"}"),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &text,
            "gregor_request_duration_seconds_count{api=\"Produce\"}"
        ),
        Some(5.0)
    );
    assert!(metric(&text, "gregor_topic_bytes_in_total{topic=\"metered\"}").unwrap_or(0.0) > 0.0);
    assert!(metric(&text, "gregor_topic_bytes_out_total{topic=\"metered\"}").unwrap_or(0.0) > 0.0);
    assert_eq!(
        metric(
            &text,
            "gregor_partition_log_end_offset{topic=\"metered\",partition=\"0\"}"
        ),
        Some(5.0)
    );
    assert_eq!(metric(&text, "gregor_raft_leader"), Some(1.0));
    assert_eq!(
        metric(&text, "gregor_under_replicated_partitions"),
        Some(0.0)
    );
    assert!(metric(&text, "gregor_connections").unwrap_or(0.0) >= 1.0);
    assert!(metric(&text, "gregor_process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
}

#[test]
fn json_logs_at_the_configured_level() {
    let broker = Broker::start_with_env(&[
        ("GREGOR_LOG_FORMAT", "json"),
        ("GREGOR_LOG_LEVEL", "warn,gregor::serve=debug"),
    ]);
    let log = std::fs::read_to_string(broker.log_path()).expect("log");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = events
        .iter()
        .find(|e| e["fields"]["message"] == "gregor ready")
        .expect("a JSON `gregor ready` event");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["target"], "gregor::serve");
    // `warn` elsewhere: no info events from other modules.
    let chatty: Vec<_> = events
        .iter()
        .filter(|e| e["level"] == "INFO" && e["target"] != "gregor::serve")
        .collect();
    assert!(chatty.is_empty(), "info events despite warn: {chatty:?}");
}

/// A fetch that waits for `min_bytes` re-reads the log at every append that wakes it; only the
/// response that goes out is counted (issue 11: it used to count every re-read).
#[test]
fn bytes_out_count_each_response_once() {
    let broker = Broker::start();
    let mut c = broker.client();
    create_topic(&mut c, "counted", 1, &[]);
    let one = batch(&["a value of some length"], 0, Compression::None);
    let waiting = {
        let mut fetcher = broker.client();
        let min_bytes = (3 * one.len()) as i32;
        std::thread::spawn(move || {
            fetcher.call(12, &fetch_req("counted", 0, 10_000, min_bytes, 1 << 20))
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 0..3 {
        produce(
            &mut c,
            "counted",
            0,
            batch(&["a value of some length"], i, Compression::None),
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let resp = waiting.join().expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let sent = p.records.as_ref().map(|r| r.len()).unwrap_or(0);
    assert_eq!(
        sent,
        3 * one.len(),
        "the fetch waited for all three batches"
    );
    let (_, text) = http_get(broker.admin_port, "/metrics");
    assert_eq!(
        metric(&text, "gregor_topic_bytes_out_total{topic=\"counted\"}"),
        Some(sent as f64)
    );
    assert_eq!(
        metric(&text, "gregor_topic_bytes_in_total{topic=\"counted\"}"),
        Some(sent as f64)
    );
}
