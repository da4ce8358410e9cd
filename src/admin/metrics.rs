//! Metrics: lock-free counters on the request path, and the Prometheus text exposition that
//! `/metrics` serves. Hot-path counters are fixed arrays of atomics indexed by API key (no
//! registry lock); everything else (partition offsets, group lag, Raft state) is read at
//! scrape time from the broker's own state.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use crate::broker::Broker;
use crate::server::memory_pool::MemoryPool;

/// A per-partition gauge: metric name, help text and how to read it.
type PartitionGauge = (
    &'static str,
    &'static str,
    fn(&crate::replica::Partition) -> i64,
);

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// API keys are small integers; this covers every key Kafka 4 defines.
const MAX_API_KEY: usize = 96;

#[derive(Default)]
struct ApiCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Cumulative-free counts per bucket (the last slot is +Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

pub struct Metrics {
    apis: Vec<ApiCounters>,
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    /// Completed SASL authentications and mutual TLS handshakes, and failed ones (Kafka's
    /// `successful-authentication-total` and `failed-authentication-total`).
    authentications: AtomicU64,
    failed_authentications: AtomicU64,
    /// The request memory budget, once the listener runs.
    request_memory: std::sync::OnceLock<std::sync::Arc<MemoryPool>>,
    /// The console's sampled end offsets: group lag on partitions not hosted here.
    lag_offsets: std::sync::OnceLock<std::sync::Arc<crate::admin::console::sampler::History>>,
    /// Fetch and Produce requests by version (which versions clients negotiated).
    fetch_versions: [AtomicU64; FETCH_VERSIONS],
    produce_versions: [AtomicU64; PRODUCE_VERSIONS],
}

/// Fetch versions counted: 0 to 17.
const FETCH_VERSIONS: usize = 18;
/// Produce versions counted: 0 to 13.
const PRODUCE_VERSIONS: usize = 14;

impl Default for Metrics {
    fn default() -> Self {
        Self {
            apis: (0..MAX_API_KEY).map(|_| ApiCounters::default()).collect(),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            authentications: AtomicU64::new(0),
            failed_authentications: AtomicU64::new(0),
            request_memory: std::sync::OnceLock::new(),
            lag_offsets: std::sync::OnceLock::new(),
            fetch_versions: Default::default(),
            produce_versions: Default::default(),
        }
    }
}

impl Metrics {
    /// Reports this pool as the request memory (`queued.max.request.bytes`).
    pub fn set_request_memory(&self, pool: std::sync::Arc<MemoryPool>) {
        let _ = self.request_memory.set(pool);
    }

    /// Counts one authentication that succeeded or failed.
    pub fn authentication(&self, succeeded: bool) {
        let counter = if succeeded {
            &self.authentications
        } else {
            &self.failed_authentications
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one Fetch request of `version`.
    pub fn fetch_version(&self, version: i16) {
        count_version(&self.fetch_versions, version);
    }

    /// Counts one Produce request of `version`.
    pub fn produce_version(&self, version: i16) {
        count_version(&self.produce_versions, version);
    }

    /// Counts one request of `api_key`, its handling time, and whether it failed at the
    /// protocol level (the connection was closed instead of answered).
    pub fn observe(&self, api_key: i16, elapsed: Duration, failed: bool) {
        let Some(c) = usize::try_from(api_key).ok().and_then(|k| self.apis.get(k)) else {
            return;
        };
        c.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        c.buckets[slot].fetch_add(1, Ordering::Relaxed);
        c.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

fn api_name(key: usize) -> String {
    ApiKey::try_from(key as i16)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Process resident memory in bytes, from /proc/self/status.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Lets group lag use the console's sampled high watermarks for partitions not hosted here.
pub fn set_lag_offsets(
    broker: &Broker,
    history: std::sync::Arc<crate::admin::console::sampler::History>,
) {
    let _ = broker.metrics.lag_offsets.set(history);
}

/// Renders every metric in the Prometheus text format (version 0.0.4).
pub fn render(broker: &Broker) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_requests(broker, &mut out);
    render_fetch(broker, &mut out);
    render_process(&broker.metrics, &mut out);
    render_partitions(broker, &mut out);
    render_groups(broker, &mut out);
    render_raft(broker, &mut out);
    render_quotas(broker, &mut out);
    out
}

fn count_version(counters: &[AtomicU64], version: i16) {
    if let Some(c) = usize::try_from(version).ok().and_then(|v| counters.get(v)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn render_versions(out: &mut String, name: &str, api: &str, counters: &[AtomicU64]) {
    header(
        out,
        name,
        "counter",
        &format!("{api} requests handled, by request version."),
    );
    for (v, c) in counters.iter().enumerate() {
        let n = c.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(out, "{name}{{version=\"{v}\"}} {n}");
        }
    }
}

/// Fetch and Produce requests by version, and the incremental fetch session cache (Kafka's
/// NumIncrementalFetchSessions, NumIncrementalFetchPartitionsCached and evictions).
fn render_fetch(broker: &Broker, out: &mut String) {
    let m = &broker.metrics;
    render_versions(
        out,
        "gregor_fetch_requests_total",
        "Fetch",
        &m.fetch_versions,
    );
    render_versions(
        out,
        "gregor_produce_requests_total",
        "Produce",
        &m.produce_versions,
    );
    let (sessions, partitions, evictions) = broker.fetch_sessions.stats();
    header(
        out,
        "gregor_fetch_sessions",
        "gauge",
        "Incremental fetch sessions cached (max.incremental.fetch.session.cache.slots).",
    );
    let _ = writeln!(out, "gregor_fetch_sessions {sessions}");
    header(
        out,
        "gregor_fetch_session_partitions",
        "gauge",
        "Partitions cached over all incremental fetch sessions.",
    );
    let _ = writeln!(out, "gregor_fetch_session_partitions {partitions}");
    header(
        out,
        "gregor_fetch_session_evictions_total",
        "counter",
        "Incremental fetch sessions evicted to make room for new ones.",
    );
    let _ = writeln!(out, "gregor_fetch_session_evictions_total {evictions}");
}

/// Quota sensors exported per type: the most recently used, so a flood of client ids cannot
/// flood the scrape.
const QUOTA_SERIES_PER_TYPE: usize = 200;

/// Per (user, client-id) quota usage and throttle time, named as Kafka's JMX metrics are
/// exported (`kafka.server:type=Produce,user=..,client-id=..` `byte-rate`, `throttle-time`;
/// `type=Request` `request-time`). Only clients under a quota are metered, as in Kafka while
/// no quota is set; a default quota meters each user or client id in its own series.
fn render_quotas(broker: &Broker, out: &mut String) {
    use crate::quota::QuotaType;
    let families = [
        (
            QuotaType::Produce,
            "kafka_server_produce_byte_rate",
            "Produce request bytes per second of a client under producer_byte_rate.",
            "kafka_server_produce_throttle_time",
        ),
        (
            QuotaType::Fetch,
            "kafka_server_fetch_byte_rate",
            "Fetch response bytes per second of a client under consumer_byte_rate.",
            "kafka_server_fetch_throttle_time",
        ),
        (
            QuotaType::Request,
            "kafka_server_request_request_time",
            "Request handler time, in percent of one thread, of a client under request_percentage.",
            "kafka_server_request_throttle_time",
        ),
    ];
    for (t, rate_name, rate_help, throttle_name) in families {
        let readings = broker.quotas.readings(t, QUOTA_SERIES_PER_TYPE);
        header(out, rate_name, "gauge", rate_help);
        for r in &readings {
            let _ = writeln!(
                out,
                "{rate_name}{{user=\"{}\",client_id=\"{}\"}} {}",
                escape(&r.user),
                escape(&r.client_id),
                r.rate
            );
        }
        header(
            out,
            throttle_name,
            "gauge",
            "Average throttle time in ms given to the client over the quota window.",
        );
        for r in &readings {
            let _ = writeln!(
                out,
                "{throttle_name}{{user=\"{}\",client_id=\"{}\"}} {}",
                escape(&r.user),
                escape(&r.client_id),
                r.throttle_time_ms
            );
        }
    }
}

/// Readiness and the per-API request counters and latency histograms.
fn render_requests(broker: &Broker, out: &mut String) {
    let m = &broker.metrics;

    header(
        out,
        "gregor_up",
        "gauge",
        "Whether the broker is ready (/health/ready: caught up in the metadata quorum and its ISRs).",
    );
    let _ = writeln!(out, "gregor_up {}", u8::from(broker.readiness().is_ok()));

    header(
        out,
        "gregor_requests_total",
        "counter",
        "Kafka requests handled, by API.",
    );
    for (key, c) in m.apis.iter().enumerate() {
        let n = c.requests.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(
                out,
                "gregor_requests_total{{api=\"{}\"}} {n}",
                api_name(key)
            );
        }
    }
    header(
        out,
        "gregor_request_errors_total",
        "counter",
        "Requests refused at the protocol level (malformed or unsupported: the connection was closed), by API.",
    );
    for (key, c) in m.apis.iter().enumerate() {
        if c.requests.load(Ordering::Relaxed) > 0 {
            let _ = writeln!(
                out,
                "gregor_request_errors_total{{api=\"{}\"}} {}",
                api_name(key),
                c.errors.load(Ordering::Relaxed)
            );
        }
    }
    header(
        out,
        "gregor_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its response, by API.",
    );
    for (key, c) in m.apis.iter().enumerate() {
        let total = c.requests.load(Ordering::Relaxed);
        if total == 0 {
            continue;
        }
        let api = api_name(key);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += c.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "gregor_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {cumulative}");
        }
        cumulative += c.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "gregor_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "gregor_request_duration_seconds_sum{{api=\"{api}\"}} {}",
            c.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "gregor_request_duration_seconds_count{{api=\"{api}\"}} {cumulative}"
        );
    }
}

/// Connections, request memory and resident memory.
fn render_process(m: &Metrics, out: &mut String) {
    header(
        out,
        "gregor_connections",
        "gauge",
        "Open client connections.",
    );
    let _ = writeln!(
        out,
        "gregor_connections {}",
        m.connections.load(Ordering::Relaxed)
    );
    header(
        out,
        "gregor_connections_total",
        "counter",
        "Client connections accepted.",
    );
    let _ = writeln!(
        out,
        "gregor_connections_total {}",
        m.connections_total.load(Ordering::Relaxed)
    );
    header(
        out,
        "gregor_authentications_total",
        "counter",
        "Authentications by result: SASL exchanges, and TLS handshakes on TLS listeners.",
    );
    for (result, counter) in [
        ("success", &m.authentications),
        ("failure", &m.failed_authentications),
    ] {
        let _ = writeln!(
            out,
            "gregor_authentications_total{{result=\"{result}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    if let Some(pool) = m.request_memory.get() {
        header(
            out,
            "gregor_request_memory_bytes",
            "gauge",
            "Bytes of requests read and not yet handled (queued.max.request.bytes).",
        );
        let _ = writeln!(out, "gregor_request_memory_bytes {}", pool.in_use());
        header(
            out,
            "gregor_request_memory_limit_bytes",
            "gauge",
            "The request memory budget; it may be overdrawn by at most one frame.",
        );
        let _ = writeln!(out, "gregor_request_memory_limit_bytes {}", pool.capacity());
    }
    if let Some(rss) = resident_memory_bytes() {
        header(
            out,
            "gregor_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the broker process.",
        );
        let _ = writeln!(out, "gregor_process_resident_memory_bytes {rss}");
    }
}

fn render_partitions(broker: &Broker, out: &mut String) {
    let hosted = broker.replicas.hosted();
    let mut rows = Vec::new();
    for (topic, t) in hosted.iter() {
        for (index, p) in &t.partitions {
            rows.push((topic.clone(), *index, p.clone()));
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let gauges: [PartitionGauge; 6] = [
        (
            "gregor_partition_log_end_offset",
            "Next offset to be assigned.",
            |p| p.log.log_end_offset(),
        ),
        (
            "gregor_partition_high_watermark",
            "Offsets below this are committed and visible to consumers.",
            |p| p.high_watermark(),
        ),
        (
            "gregor_partition_log_start_offset",
            "First offset still in the log.",
            |p| p.log.log_start_offset(),
        ),
        (
            "gregor_partition_size_bytes",
            "Bytes of the partition's segments on disk.",
            |p| p.log.size_bytes() as i64,
        ),
        (
            "gregor_partition_in_sync_replicas",
            "Size of the partition's in-sync replica set.",
            |p| p.state().isr.len() as i64,
        ),
        (
            "gregor_partition_leader",
            "1 if this broker leads the partition.",
            |p| i64::from(p.is_leader()),
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        for (topic, index, p) in &rows {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{index}\"}} {}",
                escape(topic),
                value(p)
            );
        }
    }
    header(
        out,
        "gregor_under_replicated_partitions",
        "gauge",
        "Partitions this broker leads whose ISR is smaller than their replica set.",
    );
    let under = rows
        .iter()
        .filter(|(_, _, p)| {
            let s = p.state();
            p.is_leader() && s.isr.len() < s.replicas.len()
        })
        .count();
    let _ = writeln!(out, "gregor_under_replicated_partitions {under}");
    for (name, help, value) in [
        (
            "gregor_isr_shrinks_total",
            "ISR shrinks this broker proposed as leader (followers that fell behind).",
            broker.replicas.isr_changes.shrinks.load(Ordering::Relaxed),
        ),
        (
            "gregor_isr_expands_total",
            "ISR expansions this broker proposed as leader (followers that caught up).",
            broker.replicas.isr_changes.expands.load(Ordering::Relaxed),
        ),
    ] {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }

    // Per-topic counters outlive leadership moves, so they never go down.
    let by_topic: Vec<(String, u64, u64)> = broker
        .replicas
        .topic_counters()
        .into_iter()
        .map(|(topic, c)| {
            (
                topic,
                c.bytes_in.load(Ordering::Relaxed),
                c.bytes_out.load(Ordering::Relaxed),
            )
        })
        .collect();
    header(
        out,
        "gregor_topic_bytes_in_total",
        "counter",
        "Record bytes produced to the topic's partitions while this broker led them.",
    );
    for (topic, bytes_in, _) in &by_topic {
        let _ = writeln!(
            out,
            "gregor_topic_bytes_in_total{{topic=\"{}\"}} {bytes_in}",
            escape(topic)
        );
    }
    header(
        out,
        "gregor_topic_bytes_out_total",
        "counter",
        "Record bytes sent to consumers and followers from the topic's partitions here, once per fetch response.",
    );
    for (topic, _, bytes_out) in &by_topic {
        let _ = writeln!(
            out,
            "gregor_topic_bytes_out_total{{topic=\"{}\"}} {bytes_out}",
            escape(topic)
        );
    }
}

fn render_groups(broker: &Broker, out: &mut String) {
    header(out, "gregor_consumer_group_lag", "gauge", "High watermark minus committed offset, per partition, for the groups this broker coordinates (high watermarks of partitions hosted elsewhere come from the console's sampling, every few seconds).");
    let sampled = broker.metrics.lag_offsets.get();
    let mut rows = Vec::new();
    for (id, handle) in broker.groups.all_groups() {
        if broker.groups.check_coordinator(&id).is_err() {
            continue;
        }
        let entry = handle.lock();
        for ((topic, partition), v) in &entry.offsets {
            let hwm = match broker.replicas.partition(topic, *partition) {
                Some(p) => Some(p.high_watermark()),
                None => sampled.and_then(|h| h.high_watermark(&(topic.clone(), *partition))),
            };
            if let Some(hwm) = hwm {
                rows.push((
                    id.clone(),
                    topic.clone(),
                    *partition,
                    (hwm - v.value.offset).max(0),
                ));
            }
        }
    }
    rows.sort();
    for (group, topic, partition, lag) in rows {
        let _ = writeln!(
            out,
            "gregor_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
            escape(&group),
            escape(&topic)
        );
    }
}

fn render_raft(broker: &Broker, out: &mut String) {
    let s = broker.meta.status();
    header(
        out,
        "gregor_raft_term",
        "gauge",
        "Current Raft term of the metadata quorum.",
    );
    let _ = writeln!(out, "gregor_raft_term {}", s.term);
    header(
        out,
        "gregor_raft_leader",
        "gauge",
        "Node id of the active controller (-1 when unknown).",
    );
    let _ = writeln!(
        out,
        "gregor_raft_leader {}",
        s.leader.map(|l| l as i64).unwrap_or(-1)
    );
    header(
        out,
        "gregor_raft_is_leader",
        "gauge",
        "1 if this node is the active controller.",
    );
    let _ = writeln!(
        out,
        "gregor_raft_is_leader {}",
        u8::from(s.leader == Some(s.node_id))
    );
    header(
        out,
        "gregor_raft_commit_index",
        "gauge",
        "Last committed metadata log index.",
    );
    let _ = writeln!(
        out,
        "gregor_raft_commit_index {}",
        s.commit_index.unwrap_or(0)
    );
    header(
        out,
        "gregor_raft_applied_index",
        "gauge",
        "Last metadata log index applied to this node's image.",
    );
    let _ = writeln!(
        out,
        "gregor_raft_applied_index {}",
        s.applied_index.unwrap_or(0)
    );
    header(
        out,
        "gregor_raft_voters",
        "gauge",
        "Voters in the metadata quorum.",
    );
    let _ = writeln!(out, "gregor_raft_voters {}", s.voters.len());
    if s.leader == Some(s.node_id) {
        let image = broker.image();
        let offline = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count();
        header(
            out,
            "gregor_offline_partitions",
            "gauge",
            "Partitions without a leader, reported by the active controller only (as Kafka's OfflinePartitionsCount).",
        );
        let _ = writeln!(out, "gregor_offline_partitions {offline}");
    }
    header(
        out,
        "gregor_fenced_brokers",
        "gauge",
        "Registered brokers currently fenced.",
    );
    let _ = writeln!(out, "gregor_fenced_brokers {}", s.fenced_brokers.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_at_render_time() {
        let m = Metrics::default();
        m.observe(0, Duration::from_micros(300), false);
        m.observe(0, Duration::from_millis(3), false);
        m.observe(0, Duration::from_secs(10), true);
        m.observe(-5, Duration::from_secs(1), false);
        m.observe(9999, Duration::from_secs(1), false);
        let c = &m.apis[0];
        assert_eq!(c.requests.load(Ordering::Relaxed), 3);
        assert_eq!(c.errors.load(Ordering::Relaxed), 1);
        assert_eq!(c.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(c.buckets[3].load(Ordering::Relaxed), 1);
        assert_eq!(c.buckets[BUCKETS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(api_name(0), "Produce");
        assert_eq!(escape("a\"b"), "a\\\"b");
    }
}
