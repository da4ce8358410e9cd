//! gregor-bench: one load generator for both Gregor and Apache Kafka, so the two are measured
//! with the same client (librdkafka, bundled by the rdkafka crate) and the same workload.
//!
//! `produce` sends fixed-size messages as fast as the producer allows and reports throughput
//! and produce latency (send to delivery report); `consume` reads a topic's partitions from the
//! beginning and reports throughput.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    /// bootstrap.servers
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce `bytes` of `msg_size`-byte messages.
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
    },
    /// Consume every partition of `topic` from the beginning until `messages` are read.
    Consume {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        messages: u64,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

struct Stats {
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Ctx(Arc<Stats>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                let us = sent.elapsed().as_micros() as u64;
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

fn produce(
    bootstrap: &str,
    topic: &str,
    bytes: u64,
    msg_size: usize,
    acks: &str,
    linger_ms: u64,
    compression: &str,
) -> Result<()> {
    let stats = Arc::new(Stats {
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let producer: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("compression.type", compression)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "120000")
        .create_with_context(Ctx(stats.clone()))
        .context("creating producer")?;
    let count = bytes / msg_size as u64;
    // Varied but compressible payload, like text.
    let payload: Vec<u8> = (0..msg_size).map(|i| b'a' + (i % 23) as u8).collect();
    let started = Instant::now();
    for i in 0..count {
        let key = (i % 1024).to_string();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(&payload)
            .key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).context("flush")?;
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let h = stats
        .latency_us
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    println!(
        "produce messages={delivered} failed={failed} seconds={elapsed:.3} mb_per_s={:.1} msgs_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        (delivered * msg_size as u64) as f64 / elapsed / 1e6,
        delivered as f64 / elapsed,
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
    );
    if failed > 0 {
        let first = stats.first_error.lock().ok().and_then(|f| f.clone());
        bail!("{failed} messages failed; first error: {first:?}");
    }
    Ok(())
}

fn consume(bootstrap: &str, topic: &str, messages: u64, timeout_s: u64) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka needs a group id even for assign(); nothing is committed.
        .set("group.id", "gregor-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating consumer")?;
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
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    let (mut count, mut bytes) = (0u64, 0u64);
    while count < messages {
        if Instant::now() > deadline {
            bail!("timed out after {count} of {messages} messages");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                count += 1;
                bytes += m.payload().map(|p| p.len()).unwrap_or(0) as u64;
            }
            Some(Err(e)) => bail!("consume error: {e}"),
            None => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "consume messages={count} seconds={elapsed:.3} mb_per_s={:.1} msgs_per_s={:.0}",
        bytes as f64 / elapsed / 1e6,
        count as f64 / elapsed
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Produce {
            topic,
            bytes,
            msg_size,
            acks,
            linger_ms,
            compression,
        } => produce(
            &cli.bootstrap,
            &topic,
            bytes,
            msg_size,
            &acks,
            linger_ms,
            &compression,
        ),
        Command::Consume {
            topic,
            messages,
            timeout_s,
        } => consume(&cli.bootstrap, &topic, messages, timeout_s),
    }
}
