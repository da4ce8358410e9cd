//! gregor-bench: one load generator for both Gregor and Apache Kafka, so the two are measured
//! with the same client (librdkafka, bundled by the rdkafka crate) and the same workload.
//!
//! - `produce` sends fixed-size messages as fast as the producer allows and reports throughput
//!   and produce latency (send to delivery report). `--producers N` runs N producer instances
//!   in parallel (one librdkafka producer compresses on one thread per broker connection).
//! - `consume` reads a topic's partitions from the beginning and reports throughput;
//!   `--consumers N` splits the partitions over N consumer instances.
//! - `e2e` produces at a fixed rate and consumes in the same process, and reports end-to-end
//!   latency (scheduled send time, stamped in the payload, to receipt by the consumer).
//! - `create-topics` creates topics through the admin API and waits until every partition has
//!   a leader.
//! - `probe` produces one message as soon as the broker answers and prints the wall-clock time
//!   of its acknowledgement (for measuring startup to first successful produce).
//!
//! `-X key=value` (repeatable, also `--client-config`) sets a librdkafka property on every
//! client the command creates (producer, consumer, admin), after the command's own settings,
//! so it can speak SSL or SASL (`-X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN ...`).
//! `--log warn` prints librdkafka's errors and warnings to stderr (off by default).
//!
//! Every command prints a human-readable line, then a line `RESULT {json}` for scripts.
//! Payloads are slices of a generated English-like text, so compression (lz4, zstd) sees
//! realistic ratios (about 2-3x), not a repeated pattern that compresses to nothing.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    /// bootstrap.servers
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// A librdkafka property for every client, KEY=VALUE (repeatable); applied after the
    /// command's own settings, so it wins over them.
    #[arg(short = 'X', long = "client-config", value_name = "KEY=VALUE", global = true,
          value_parser = parse_key_value)]
    client_config: Vec<(String, String)>,
    /// librdkafka's log and error messages to stderr at this level and above: off, error,
    /// warn, info, debug.
    #[arg(long, default_value = "off", global = true, value_parser = parse_level)]
    log: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce `bytes` of `msg_size`-byte messages as fast as possible.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        #[arg(long, default_value_t = 1024)]
        msg_size: usize,
        #[arg(long, default_value = "1")]
        acks: String,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        #[arg(long, default_value = "none")]
        compression: String,
        /// producer instances, each in a thread of its own
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// a W3C `traceparent` header value put on every message (what a traced producer
        /// sends; for the broker's tracing overhead)
        #[arg(long)]
        traceparent: Option<String>,
    },
    /// Consume every partition of `topic` from the beginning until `messages` are read.
    Consume {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        messages: u64,
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
        /// consumer instances, each in a thread of its own, splitting the partitions
        #[arg(long, default_value_t = 1)]
        consumers: usize,
    },
    /// Produce at a fixed rate and consume in the same process; report end-to-end latency.
    E2e {
        #[arg(long)]
        topic: String,
        /// messages per second
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// measured seconds (after the warm-up)
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// seconds sent first and left out of the histogram
        #[arg(long, default_value_t = 5.0)]
        warmup_s: f64,
        #[arg(long, default_value_t = 1024)]
        msg_size: usize,
        #[arg(long, default_value = "all")]
        acks: String,
        #[arg(long, default_value_t = 1)]
        linger_ms: u64,
        #[arg(long, default_value = "none")]
        compression: String,
    },
    /// Create `count` topics (`prefix`, or `prefix-0`..`prefix-N` when count > 1).
    CreateTopics {
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Produce one message as soon as the broker accepts it; print when it was acknowledged.
    /// Start it before the broker: it prints "probe ready" once its client exists.
    Probe {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_level(text: &str) -> Result<log::LevelFilter, String> {
    text.parse()
        .map_err(|_| format!("{text:?}: off, error, warn, info, debug or trace"))
}

/// The `-X` properties, set once in main.
static CLIENT_CONFIG: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Applies the `-X` properties to `config` (after the command's own settings).
fn with_client_config(config: &mut ClientConfig) -> &mut ClientConfig {
    for (k, v) in CLIENT_CONFIG.get().map(Vec::as_slice).unwrap_or_default() {
        config.set(k, v);
    }
    config
}

/// librdkafka's messages (forwarded by the rdkafka crate to the `log` facade) on stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("{} {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

// ---------------------------------------------------------------------------------------------
// Payloads

/// A deterministic pseudo-random generator (xorshift64*), so every run sends the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has",
    "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "order",
    "payment", "customer", "shipped", "account", "balance", "event", "sensor", "temperature",
    "user", "session", "click", "page", "device", "region", "europe", "status", "ok", "error",
    "timeout", "retry", "latency", "partition", "offset", "message", "broker", "request",
];

/// About 8 MiB of space-separated words with some numbers; messages are slices of it.
fn text_corpus() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut text = Vec::with_capacity(8 << 20);
    while text.len() < 8 << 20 {
        let r = rng.next();
        if r % 7 == 0 {
            let _ = write!(SliceWriter(&mut text), "{} ", (r >> 8) % 100_000);
        } else {
            text.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()].as_bytes());
            text.push(b' ');
        }
    }
    text
}

struct SliceWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct Payloads {
    text: Vec<u8>,
    rng: Rng,
    size: usize,
}

impl Payloads {
    fn new(size: usize) -> Payloads {
        let text = text_corpus();
        assert!(size < text.len(), "message size above {} bytes", text.len());
        Payloads {
            text,
            rng: Rng(0x5851_f42d_4c95_7f2d),
            size,
        }
    }

    fn next(&mut self) -> &[u8] {
        let start = (self.rng.next() % (self.text.len() - self.size) as u64) as usize;
        &self.text[start..start + self.size]
    }
}

fn keys() -> Vec<String> {
    (0..1024).map(|i| format!("key-{i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Output

/// A flat JSON object, built by hand so the bench needs no serde.
#[derive(Default)]
struct Json(String);

impl Json {
    fn num(mut self, key: &str, v: f64) -> Self {
        let v = if v.is_finite() { v } else { -1.0 };
        self.sep();
        let _ = write!(self.0, "\"{key}\":{v}");
        self
    }
    fn str(mut self, key: &str, v: &str) -> Self {
        self.sep();
        let _ = write!(self.0, "\"{key}\":\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        self
    }
    fn raw(mut self, key: &str, v: &str) -> Self {
        self.sep();
        let _ = write!(self.0, "\"{key}\":{v}");
        self
    }
    fn sep(&mut self) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
    }
    fn print(mut self) {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        println!("RESULT {}", self.0);
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The latency curve for plotting: [[quantile, ms], ...].
fn curve(h: &Histogram<u64>) -> String {
    const QS: &[f64] = &[
        0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999,
        1.0,
    ];
    let parts: Vec<String> = QS
        .iter()
        .map(|&q| format!("[{q},{}]", ms(h, q)))
        .collect();
    format!("[{}]", parts.join(","))
}

// ---------------------------------------------------------------------------------------------
// produce

struct Stats {
    started: Instant,
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn new() -> Result<Arc<Stats>> {
        Ok(Arc::new(Stats {
            started: Instant::now(),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }))
    }
    fn nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

struct Ctx(Arc<Stats>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    /// Send time, nanoseconds after `Stats::started` (a usize needs no allocation).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        match result {
            Ok(_) => {
                let us = self.0.nanos().saturating_sub(sent_ns as u64) / 1000;
                if let Ok(mut h) = self.0.latency_us.lock() {
                    let _ = h.record(us.max(1));
                }
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

fn producer_config(bootstrap: &str, acks: &str, linger_ms: u64, compression: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", compression)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "300000");
    with_client_config(&mut config);
    config
}

/// Sends `record`, waiting while the producer's queue is full.
fn send_blocking<'a>(
    producer: &ThreadedProducer<Ctx>,
    mut record: BaseRecord<'a, String, [u8], usize>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => bail!("send failed: {e}"),
        }
    }
}

fn check_failed(stats: &Stats) -> Result<()> {
    let failed = stats.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = stats.first_error.lock().ok().and_then(|f| f.clone());
        bail!("{failed} messages failed; first error: {first:?}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn produce(
    bootstrap: &str,
    topic: &str,
    bytes: u64,
    msg_size: usize,
    acks: &str,
    linger_ms: u64,
    compression: &str,
    producers: usize,
    traceparent: Option<&str>,
) -> Result<()> {
    let stats = Stats::new()?;
    let count = bytes / msg_size as u64;
    let producers = producers.max(1);
    // Each producer instance has its own connections and its own librdkafka threads (which
    // compress the batches), so several of them can use more than one core.
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..producers)
            .map(|w| {
                let stats = stats.clone();
                scope.spawn(move || -> Result<()> {
                    let producer: ThreadedProducer<Ctx> =
                        producer_config(bootstrap, acks, linger_ms, compression)
                            .create_with_context(Ctx(stats.clone()))
                            .context("creating producer")?;
                    let mut payloads = Payloads::new(msg_size);
                    payloads.rng = Rng(0x5851_f42d_4c95_7f2d ^ (w as u64 + 1));
                    let keys = keys();
                    let mine = count / producers as u64 + u64::from((w as u64) < count % producers as u64);
                    for i in 0..mine {
                        let mut record =
                            BaseRecord::with_opaque_to(topic, stats.nanos() as usize)
                                .payload(payloads.next())
                                .key(&keys[(i as usize * producers + w) % keys.len()]);
                        if let Some(value) = traceparent {
                            record = record.headers(OwnedHeaders::new().insert(Header {
                                key: "traceparent",
                                value: Some(value),
                            }));
                        }
                        send_blocking(&producer, record)?;
                    }
                    producer.flush(Duration::from_secs(300)).context("flush")?;
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let h = stats
        .latency_us
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mb_per_s = (delivered * msg_size as u64) as f64 / elapsed / 1e6;
    let msgs_per_s = delivered as f64 / elapsed;
    println!(
        "produce messages={delivered} failed={failed} producers={producers} seconds={elapsed:.3} mb_per_s={mb_per_s:.1} msgs_per_s={msgs_per_s:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        ms(&h, 0.50),
        ms(&h, 0.99),
        ms(&h, 0.999),
    );
    Json::default()
        .str("mode", "produce")
        .num("messages", delivered as f64)
        .num("failed", failed as f64)
        .num("producers", producers as f64)
        .num("seconds", elapsed)
        .num("mb_per_s", mb_per_s)
        .num("msgs_per_s", msgs_per_s)
        .num("p50_ms", ms(&h, 0.5))
        .num("p99_ms", ms(&h, 0.99))
        .num("p999_ms", ms(&h, 0.999))
        .print();
    check_failed(&stats)
}

// ---------------------------------------------------------------------------------------------
// consume

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // librdkafka needs a group id even for assign(); nothing is committed.
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    with_client_config(&mut config)
        .create()
        .context("creating consumer")
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        bail!("topic {topic} has no partitions");
    }
    Ok(partitions as i32)
}

/// Assigns `partitions` of `topic` from the beginning.
fn assign(consumer: &BaseConsumer, topic: &str, partitions: &[i32]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Assigns every partition of `topic` from the beginning.
fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<()> {
    let n = partition_count(consumer, topic)?;
    assign(consumer, topic, &(0..n).collect::<Vec<_>>())
}

fn consume(
    bootstrap: &str,
    topic: &str,
    messages: u64,
    timeout_s: u64,
    consumers: usize,
) -> Result<()> {
    // Several consumer instances (each with its own connection and fetch thread) split the
    // partitions between them; together they stop once `messages` have arrived.
    let first = consumer(bootstrap, "gregor-bench")?;
    let partitions = partition_count(&first, topic)?;
    let consumers = consumers.clamp(1, partitions as usize);
    let mut instances = vec![first];
    for _ in 1..consumers {
        instances.push(consumer(bootstrap, "gregor-bench")?);
    }
    let count = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = instances
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (count, bytes) = (&count, &bytes);
                scope.spawn(move || -> Result<()> {
                    let mine: Vec<i32> = (0..partitions)
                        .filter(|p| *p as usize % consumers == i)
                        .collect();
                    assign(&c, topic, &mine)?;
                    while count.load(Ordering::Relaxed) < messages {
                        if Instant::now() > deadline {
                            bail!(
                                "timed out after {} of {messages} messages",
                                count.load(Ordering::Relaxed)
                            );
                        }
                        match c.poll(Duration::from_millis(100)) {
                            Some(Ok(m)) => {
                                count.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(
                                    m.payload().map(|p| p.len()).unwrap_or(0) as u64,
                                    Ordering::Relaxed,
                                );
                            }
                            Some(Err(e)) => bail!("consume error: {e}"),
                            None => {}
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let (count, bytes) = (count.into_inner(), bytes.into_inner());
    let mb_per_s = bytes as f64 / elapsed / 1e6;
    let msgs_per_s = count as f64 / elapsed;
    println!(
        "consume messages={count} consumers={consumers} seconds={elapsed:.3} mb_per_s={mb_per_s:.1} msgs_per_s={msgs_per_s:.0}"
    );
    Json::default()
        .str("mode", "consume")
        .num("messages", count as f64)
        .num("bytes", bytes as f64)
        .num("consumers", consumers as f64)
        .num("seconds", elapsed)
        .num("mb_per_s", mb_per_s)
        .num("msgs_per_s", msgs_per_s)
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// e2e

struct E2eResult {
    received: u64,
    histogram: Histogram<u64>,
}

#[allow(clippy::too_many_arguments)]
fn e2e(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    seconds: f64,
    warmup_s: f64,
    msg_size: usize,
    acks: &str,
    linger_ms: u64,
    compression: &str,
) -> Result<()> {
    if msg_size < 8 || rate == 0 {
        bail!("e2e needs msg_size >= 8 and rate > 0");
    }
    let stats = Stats::new()?;
    let total = ((seconds + warmup_s) * rate as f64).round() as u64;
    let warmup_ns = (warmup_s * 1e9) as u64;
    let period_ns = 1e9 / rate as f64;
    // Set when sending starts: the scheduled time before which messages are warm-up.
    let warmup_end = Arc::new(AtomicU64::new(u64::MAX));
    let consumer_warmup_end = warmup_end.clone();

    // The consumer: every partition from the beginning (the topic is new), in its own thread.
    let consumer = consumer(bootstrap, "gregor-bench-e2e")?;
    assign_all(&consumer, topic)?;
    let clock = stats.clone();
    let done = Arc::new(AtomicBool::new(false));
    let consumer_done = done.clone();
    let reader = std::thread::spawn(move || -> Result<E2eResult> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut received = 0u64;
        while received < total && !consumer_done.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let now = clock.nanos();
                    received += 1;
                    if let Some(p) = m.payload() {
                        if p.len() >= 8 {
                            let stamp = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                            if stamp >= consumer_warmup_end.load(Ordering::Relaxed) {
                                let _ = histogram.record((now.saturating_sub(stamp) / 1000).max(1));
                            }
                        }
                    }
                }
                Some(Err(e)) => bail!("consume error: {e}"),
                None => {}
            }
        }
        Ok(E2eResult {
            received,
            histogram,
        })
    });

    let producer: ThreadedProducer<Ctx> = producer_config(bootstrap, acks, linger_ms, compression)
        .create_with_context(Ctx(stats.clone()))
        .context("creating producer")?;
    let mut payloads = Payloads::new(msg_size);
    let keys = keys();
    let mut buf = vec![0u8; msg_size];
    let mut max_behind_ns = 0u64;
    let mut i = 0u64;
    let mut warm = false;
    // Each message carries its scheduled send time, so a producer that falls behind shows up
    // as latency (no coordinated omission). The schedule starts now; the consumer leaves out
    // messages scheduled before `base + warmup`.
    let sending = Instant::now();
    let base = stats.nanos();
    warmup_end.store(base + warmup_ns, Ordering::Relaxed);
    while i < total {
        let now = stats.nanos();
        let mut sent_any = false;
        if !warm && now >= base + warmup_ns {
            warm = true;
            if let Ok(mut h) = stats.latency_us.lock() {
                h.reset();
            }
        }
        while i < total {
            let due = base + (i as f64 * period_ns) as u64;
            if due > now {
                break;
            }
            max_behind_ns = max_behind_ns.max(now - due);
            buf.copy_from_slice(payloads.next());
            buf[..8].copy_from_slice(&due.to_le_bytes());
            let record = BaseRecord::with_opaque_to(topic, now as usize)
                .payload(&buf[..])
                .key(&keys[i as usize % keys.len()]);
            send_blocking(&producer, record)?;
            i += 1;
            sent_any = true;
        }
        if !sent_any {
            let due = base + (i as f64 * period_ns) as u64;
            let wait = due.saturating_sub(stats.nanos());
            if wait > 1_000 {
                std::thread::sleep(Duration::from_nanos(wait.min(1_000_000)));
            }
        }
    }
    let send_seconds = sending.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(120)).context("flush")?;
    check_failed(&stats)?;
    // Give the consumer until 30 s after the last send.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    let result = reader
        .join()
        .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    let h = &result.histogram;
    let ack = stats
        .latency_us
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let achieved = total as f64 / send_seconds;
    println!(
        "e2e sent={total} received={} rate={achieved:.0}/s e2e_p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} ack_p99_ms={:.2} max_behind_ms={:.1}",
        result.received,
        ms(h, 0.5),
        ms(h, 0.99),
        ms(h, 0.999),
        ms(h, 1.0),
        ms(&ack, 0.99),
        max_behind_ns as f64 / 1e6,
    );
    Json::default()
        .str("mode", "e2e")
        .num("sent", total as f64)
        .num("received", result.received as f64)
        .num("measured", h.len() as f64)
        .num("rate", achieved)
        .num("p50_ms", ms(h, 0.5))
        .num("p90_ms", ms(h, 0.9))
        .num("p99_ms", ms(h, 0.99))
        .num("p999_ms", ms(h, 0.999))
        .num("p9999_ms", ms(h, 0.9999))
        .num("max_ms", ms(h, 1.0))
        .num("ack_p50_ms", ms(&ack, 0.5))
        .num("ack_p99_ms", ms(&ack, 0.99))
        .num("max_behind_ms", max_behind_ns as f64 / 1e6)
        .raw("curve", &curve(h))
        .print();
    if result.received < total {
        bail!("consumer got {} of {total} messages", result.received);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create-topics

/// Runs a future to completion on this thread (the admin client's futures are driven by
/// librdkafka's own threads; this only waits for them).
fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn create_topics(
    bootstrap: &str,
    prefix: &str,
    count: usize,
    partitions: i32,
    replication_factor: i32,
    timeout_s: u64,
) -> Result<()> {
    let started = Instant::now();
    let admin: AdminClient<DefaultClientContext> =
        with_client_config(ClientConfig::new().set("bootstrap.servers", bootstrap))
            .create()
            .context("creating admin client")?;
    let names: Vec<String> = if count == 1 {
        vec![prefix.to_string()]
    } else {
        (0..count).map(|i| format!("{prefix}-{i}")).collect()
    };
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(timeout_s)))
        .request_timeout(Some(Duration::from_secs(timeout_s)));
    // In chunks, as a provisioning tool would.
    for chunk in names.chunks(25) {
        let topics: Vec<NewTopic> = chunk
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication_factor)))
            .collect();
        for result in block_on(admin.create_topics(&topics, &opts))? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("creating {name}: {code}"),
            }
        }
    }
    // Wait until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let client = admin.inner();
    loop {
        let md = client.fetch_metadata(None, Duration::from_secs(10))?;
        let ready = names.iter().all(|n| {
            md.topics().iter().any(|t| {
                t.name() == n
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("topics not ready after {timeout_s} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("created {count} topics x {partitions} partitions (RF {replication_factor}) in {elapsed:.3} s");
    Json::default()
        .str("mode", "create-topics")
        .num("topics", count as f64)
        .num("seconds", elapsed)
        .print();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// probe

struct ProbeCtx(Arc<Mutex<Option<Result<SystemTime, String>>>>);

impl ClientContext for ProbeCtx {}

impl ProducerContext for ProbeCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let at = SystemTime::now();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(result.as_ref().map(|_| at).map_err(|(e, _)| e.to_string()));
        }
    }
}

fn probe(bootstrap: &str, topic: &str, timeout_s: u64) -> Result<()> {
    let slot = Arc::new(Mutex::new(None));
    // Reconnect and retry within milliseconds, so the probe sees the broker as soon as it can.
    let producer: BaseProducer<ProbeCtx> = with_client_config(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "1")
            .set("linger.ms", "0")
            .set("reconnect.backoff.ms", "1")
            .set("reconnect.backoff.max.ms", "5")
            .set("retry.backoff.ms", "5")
            .set("retry.backoff.max.ms", "10")
            .set("topic.metadata.refresh.fast.interval.ms", "5")
            .set("socket.connection.setup.timeout.ms", "1000")
            .set("message.timeout.ms", (timeout_s * 1000).to_string())
            .set("log_level", "0"),
    )
    .create_with_context(ProbeCtx(slot.clone()))
    .context("creating producer")?;
    println!("probe ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    producer
        .send(BaseRecord::<str, str, ()>::to(topic).payload("probe").key("probe"))
        .map_err(|(e, _)| e)?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        // The delivery callback takes the time itself, so a long poll costs no precision (and
        // rdkafka's poll spins through the last millisecond of its timeout: keep those rare).
        producer.poll(Duration::from_millis(100));
        let outcome = slot.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.take();
        match outcome {
            Some(Ok(at)) => {
                let ns = at.duration_since(UNIX_EPOCH)?.as_nanos();
                println!("probe acked at {ns} ns since the epoch");
                Json::default()
                    .str("mode", "probe")
                    .num("acked_epoch_ns", ns as f64)
                    .print();
                return Ok(());
            }
            Some(Err(e)) => bail!("probe failed: {e}"),
            None if Instant::now() > deadline => bail!("no ack after {timeout_s} s"),
            None => {}
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = CLIENT_CONFIG.set(cli.client_config.clone());
    if cli.log != log::LevelFilter::Off {
        log::set_logger(&STDERR_LOG).map_err(|e| anyhow::anyhow!("logger: {e}"))?;
        log::set_max_level(cli.log);
    }
    match cli.command {
        Command::Produce {
            topic,
            bytes,
            msg_size,
            acks,
            linger_ms,
            compression,
            producers,
            traceparent,
        } => produce(
            &cli.bootstrap,
            &topic,
            bytes,
            msg_size,
            &acks,
            linger_ms,
            &compression,
            producers,
            traceparent.as_deref(),
        ),
        Command::Consume {
            topic,
            messages,
            timeout_s,
            consumers,
        } => consume(&cli.bootstrap, &topic, messages, timeout_s, consumers),
        Command::E2e {
            topic,
            rate,
            seconds,
            warmup_s,
            msg_size,
            acks,
            linger_ms,
            compression,
        } => e2e(
            &cli.bootstrap,
            &topic,
            rate,
            seconds,
            warmup_s,
            msg_size,
            &acks,
            linger_ms,
            &compression,
        ),
        Command::CreateTopics {
            prefix,
            count,
            partitions,
            replication_factor,
            timeout_s,
        } => create_topics(
            &cli.bootstrap,
            &prefix,
            count,
            partitions,
            replication_factor,
            timeout_s,
        ),
        Command::Probe { topic, timeout_s } => probe(&cli.bootstrap, &topic, timeout_s),
    }
}
