//! `gregor serve`: startup (listeners, metadata quorum, broker registration, log recovery),
//! the background tasks, and the clean shutdown sequence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::{Config, LogFormat, TopicToProvision};
use crate::log::manager::LogManager;
use crate::kafka_uuid::{kafka_uuid, random_kafka_uuid};
use crate::meta::image::{BrokerRegistration, MetadataRecord};
use crate::meta::{MetaConfig, MetadataQuorum};
use crate::replica::{now_ms, ReplicaManager};

/// Logs to stderr, as text or JSON; RUST_LOG, else the configured `log_level`, picks levels.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Holds an exclusive lock on the data directory for the life of the process.
struct DataDirLock {
    _file: std::fs::File,
}

fn lock_data_dir(config: &Config) -> Result<DataDirLock> {
    let file = crate::durable::lock_dir(&config.data_dir, ".lock")
        .with_context(|| format!("locking data dir {}", config.data_dir.display()))?;
    Ok(DataDirLock { _file: file })
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

pub async fn run(config: Config) -> Result<()> {
    let started = Instant::now();
    let _lock = lock_data_dir(&config)?;
    let kafka_listener = bind("Kafka", &config.listen).await?;
    let admin_listener = bind("admin", &config.admin_listen).await?;

    let meta = MetadataQuorum::start(MetaConfig {
        node_id: config.node_id as u64,
        dir: config.data_dir.join("meta"),
        controller_listen: config.controller_listen,
        voters: config.voters.clone(),
        controller: config.kafka.controller.clone(),
    })
    .await
    .context("starting the metadata quorum")?;
    // A node that joins a running cluster waits here until it is added as a learner
    // (`gregor admin add-learner`), however long that takes; SIGTERM ends the wait.
    loop {
        tokio::select! {
            found = meta.wait_for_leader(Duration::from_secs(30)) => match found {
                Ok(_) => break,
                Err(_) => tracing::warn!(
                    node_id = config.node_id,
                    "no metadata controller reachable yet; still waiting (a new node must be \
                     added with `gregor admin add-learner`)"
                ),
            },
            _ = wait_for_signal() => {
                tracing::info!("shutting down before joining the metadata quorum");
                meta.shutdown().await?;
                return Ok(());
            }
        }
    }
    if meta.image().cluster_id.is_none() {
        let cluster_id = kafka_uuid(&random_kafka_uuid());
        meta.propose(MetadataRecord::InitCluster { cluster_id })
            .await
            .context("initialising the cluster id")?;
    }
    let incarnation_id = uuid::Uuid::new_v4();
    let registration = BrokerRegistration {
        node_id: config.node_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        rack: None,
        incarnation_id,
        fenced: false,
    };
    let registered = meta
        .propose(MetadataRecord::RegisterBroker(registration))
        .await
        .context("registering this broker")?;
    if registered != crate::meta::image::ApplyOutcome::Ok {
        bail!(
            "node id {} was removed from the cluster and cannot register again ({registered:?})",
            config.node_id
        );
    }

    let logs =
        LogManager::open(&config.data_dir.join("logs")).context("opening the log directory")?;
    let replicas = ReplicaManager::new(config.node_id, logs, config.topic_defaults.clone());
    replicas.apply_image(&meta.image());
    replicas.remove_stray_logs();

    let broker = Broker::new(config, meta, replicas, incarnation_id);
    broker.groups.sync_partitions(&broker.replicas);
    let unprovisioned = provision_topics(&broker, broker.config.provisioned_topics.clone()).await;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(follow_metadata(broker.clone()));
    tasks.spawn(keep_provisioning(broker.clone(), unprovisioned));
    tasks.spawn(flush_and_checkpoint(broker.clone()));
    tasks.spawn(retention_and_expiry(broker.clone()));
    tasks.spawn(group_timers(broker.clone()));
    tasks.spawn(clean_logs(broker.clone()));
    tasks.spawn(crate::replica::isr::maintain_isr(broker.clone()));
    broker.fetchers.sync(&broker);
    tasks.spawn(crate::admin::http::run(broker.clone(), admin_listener));
    let kafka = tokio::spawn(crate::server::run(broker.clone(), kafka_listener));

    broker.set_serving(true);
    let image = broker.image();
    tracing::info!(
        node_id = broker.node_id(),
        listen = %broker.config.listen,
        cluster_id = image.cluster_id.as_deref().unwrap_or(""),
        topics = image.topics.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "gregor ready"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    broker.set_serving(false);
    controlled_shutdown(&broker).await;
    broker.shutdown.cancel();
    let _ = kafka.await;
    while tasks.join_next().await.is_some() {}
    let logs_result = broker.replicas.logs().shutdown();
    if let Err(e) = broker.meta.shutdown().await {
        tracing::warn!(error = %e, "metadata quorum shutdown");
    }
    logs_result.context("flushing logs at shutdown")?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// Kafka's controlled shutdown: with other brokers alive, hand this broker's leaderships to
/// in-sync replicas before stopping (by fencing ourselves), so clients move on at once
/// instead of waiting out the session timeout.
async fn controlled_shutdown(broker: &Broker) {
    let image = broker.image();
    let others_alive = image
        .brokers
        .values()
        .any(|b| b.node_id != broker.node_id() && !b.fenced);
    if !others_alive {
        return;
    }
    let fence = MetadataRecord::FenceBroker {
        node_id: broker.node_id(),
    };
    match tokio::time::timeout(Duration::from_secs(5), broker.meta.propose(fence)).await {
        Ok(Ok(_)) => tracing::info!("moved leadership to other replicas"),
        Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown: could not move leadership"),
        Err(_) => tracing::warn!("controlled shutdown: moving leadership timed out"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Creates the config's `[[provisioning.topics]]` that do not exist yet. A topic that exists
/// with other settings is reported, never changed. Returns those to try again later.
async fn provision_topics(broker: &Broker, topics: Vec<TopicToProvision>) -> Vec<TopicToProvision> {
    let mut retry = Vec::new();
    for topic in topics {
        if provision_topic(broker, &topic).await == Provisioned::Retry {
            retry.push(topic);
        }
    }
    retry
}

/// Retries the provisioned topics the cluster could not host at startup, until it can.
async fn keep_provisioning(broker: Arc<Broker>, mut pending: Vec<TopicToProvision>) {
    while !pending.is_empty() {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROVISION_RETRY) => {}
        }
        pending = provision_topics(&broker, pending).await;
    }
}

/// How often provisioning tries again while the cluster cannot host a topic yet (brokers
/// that start together register one by one).
const PROVISION_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, PartialEq, Eq)]
enum Provisioned {
    Done,
    Retry,
}

async fn provision_topic(
    broker: &Broker,
    (name, partitions, rf, configs): &TopicToProvision,
) -> Provisioned {
    use crate::meta::controller::{self, CreateDefaults, CreateTopicError, TopicSpec};
    let defaults = CreateDefaults {
        num_partitions: broker.config.kafka.num_partitions,
        replication_factor: broker.config.kafka.default_replication_factor,
    };
    let image = broker.image();
    if let Some(existing) = image.topic(name) {
        let have_partitions = existing.partitions.len() as i32;
        let have_rf = existing
            .partitions
            .first()
            .map(|p| p.replicas.len() as i16)
            .unwrap_or(0);
        let mut differences = Vec::new();
        if *partitions != -1 && *partitions != have_partitions {
            differences.push(format!(
                "partitions {have_partitions} (config says {partitions})"
            ));
        }
        if *rf != -1 && *rf != have_rf {
            differences.push(format!("replication factor {have_rf} (config says {rf})"));
        }
        if existing.configs != *configs {
            differences.push(format!(
                "configs {:?} (config says {configs:?})",
                existing.configs
            ));
        }
        if !differences.is_empty() {
            tracing::warn!(topic = %name, differences = %differences.join("; "),
                "provisioned topic exists with other settings; leaving it unchanged");
        }
        return Provisioned::Done;
    }
    let spec = TopicSpec {
        name: name.clone(),
        num_partitions: *partitions,
        replication_factor: *rf,
        assignments: None,
        configs: configs.clone(),
    };
    let created = match controller::plan_topic(&image, &spec, defaults) {
        Ok(t) => controller::create_topic(&broker.meta, t).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(t) => {
            broker.replicas.apply_image(&broker.image());
            tracing::info!(topic = %name, partitions = t.partitions.len(), "provisioned topic");
            Provisioned::Done
        }
        // Another broker provisioned it first.
        Err(CreateTopicError::AlreadyExists(_)) => Provisioned::Done,
        // Not enough brokers registered yet, or no controller: the cluster is still forming.
        Err(
            e
            @ (CreateTopicError::InvalidReplicationFactor(_) | CreateTopicError::NotController(_)),
        ) => {
            tracing::info!(topic = %name, reason = %e, "provisioning topic: waiting for the cluster");
            Provisioned::Retry
        }
        Err(e) => {
            tracing::error!(topic = %name, error = %e, "provisioning topic failed");
            Provisioned::Done
        }
    }
}

/// Applies every new metadata image to the hosted replicas.
async fn follow_metadata(broker: Arc<Broker>) {
    let mut images = broker.meta.subscribe();
    loop {
        tokio::select! {
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
                let image = images.borrow_and_update().clone();
                let b = broker.clone();
                // Opening logs does file I/O; keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    b.replicas.apply_image(&image);
                    b.groups.sync_partitions(&b.replicas);
                })
                .await;
                broker.fetchers.sync(&broker);
            }
            _ = broker.shutdown.cancelled() => return,
        }
    }
}

/// The log cleaner: a compaction pass over every hosted compacted log, one at a time on a
/// blocking thread, every `log.cleaner.backoff.ms`.
async fn clean_logs(broker: Arc<Broker>) {
    let config =
        match crate::log::cleaner::CleanerConfig::from_broker_settings(&broker.config.kafka.raw) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "invalid log cleaner settings; the cleaner is off");
                return;
            }
        };
    if !config.enable {
        return;
    }
    let every = Duration::from_millis(config.backoff_ms.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = broker.shutdown.cancelled() => return,
        }
        let b = broker.clone();
        let config = config.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (name, topic) in b.replicas.hosted().iter() {
                for (index, p) in &topic.partitions {
                    if !p.log.config().compact {
                        continue;
                    }
                    match crate::log::cleaner::clean_once(&p.log, p.high_watermark(), now_ms(), &config) {
                        Ok(stats) if stats.cleaned => tracing::debug!(topic = %name, partition = index, ?stats, "cleaned log"),
                        Ok(_) => {}
                        Err(e) => tracing::error!(topic = %name, partition = index, error = %e, "log cleaning failed"),
                    }
                }
            }
            if let Err(e) = b.replicas.logs().write_cleaner_checkpoint() {
                tracing::error!(error = %e, "writing the cleaner checkpoint failed");
            }
        })
        .await;
    }
}

/// Drives group timeouts (sessions, join and sync phases) and offset retention.
async fn group_timers(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry_every = broker
        .groups
        .config
        .offsets_retention_check_interval
        .max(Duration::from_millis(100));
    let mut last_expiry = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.shutdown.cancelled() => return,
        }
        broker.groups.tick(&broker.replicas);
        if last_expiry.elapsed() >= expiry_every {
            last_expiry = Instant::now();
            broker.groups.expire_offsets(&broker.replicas);
        }
    }
}

/// Deletes segments past retention (`log.retention.check.interval.ms`) and expires idle
/// producers (`producer.id.expiration.check.interval.ms`).
async fn retention_and_expiry(broker: Arc<Broker>) {
    let kafka = &broker.config.kafka;
    let retention_every = Duration::from_millis(kafka.log_retention_check_interval_ms.max(10));
    let expiry_every =
        Duration::from_millis(kafka.producer_id_expiration_check_interval_ms.max(10));
    // Like Kafka, the first pass waits (at most 30 s) so a restart is not slowed by it.
    let start = tokio::time::Instant::now();
    let mut retention = tokio::time::interval_at(
        start + retention_every.min(Duration::from_secs(30)),
        retention_every,
    );
    let mut expiry = tokio::time::interval_at(start + expiry_every, expiry_every);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let expire = tokio::select! {
            _ = retention.tick() => false,
            _ = expiry.tick() => true,
            _ = broker.shutdown.cancelled() => return,
        };
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let expiration_ms = b.config.kafka.producer_id_expiration_ms;
            for (name, topic) in b.replicas.hosted().iter() {
                for (index, partition) in &topic.partitions {
                    if expire {
                        partition.expire_producers(now, expiration_ms);
                        continue;
                    }
                    match partition.enforce_retention(now) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(topic = %name, partition = index, segments = n,
                            log_start_offset = partition.log.log_start_offset(), "retention deleted segments"),
                        Err(e) => tracing::error!(topic = %name, partition = index, error = %e, "retention failed"),
                    }
                }
            }
        })
        .await;
    }
}

/// Flushes logs whose `flush.ms` is due and writes the offset checkpoints periodically.
async fn flush_and_checkpoint(broker: Arc<Broker>) {
    let flush_every =
        Duration::from_millis(broker.config.kafka.log_flush_scheduler_interval_ms.max(10));
    let checkpoint_every = Duration::from_millis(
        broker
            .config
            .kafka
            .log_flush_offset_checkpoint_interval_ms
            .max(100),
    );
    let mut last_checkpoint = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(flush_every) => {}
            _ = broker.shutdown.cancelled() => return,
        }
        let b = broker.clone();
        let checkpoint = last_checkpoint.elapsed() >= checkpoint_every;
        if checkpoint {
            last_checkpoint = Instant::now();
        }
        let _ = tokio::task::spawn_blocking(move || {
            b.replicas.logs().flush_due(now_ms());
            if checkpoint {
                if let Err(e) = b.replicas.logs().write_checkpoints() {
                    tracing::error!(error = %e, "writing offset checkpoints failed");
                }
            }
        })
        .await;
    }
}
