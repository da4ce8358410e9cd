//! `gregor serve`: startup (listeners, metadata quorum, broker registration, log recovery),
//! the background tasks (`tasks.rs`), topic provisioning (`provision.rs`), and the clean
//! shutdown sequence. The composition root: the only place that wires every layer together.

mod provision;
mod tasks;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::config::Config;
use crate::kafka_uuid::{kafka_uuid, random_kafka_uuid};
use crate::log::manager::LogManager;
use crate::meta::image::{BrokerRegistration, Endpoint, MetadataRecord};
use crate::meta::{MetaConfig, MetadataQuorum};
use crate::replica::ReplicaManager;

/// Holds an exclusive lock on the data directory for the life of the process.
struct DataDirLock {
    _file: std::fs::File,
}

fn lock_data_dir(config: &Config) -> Result<DataDirLock> {
    let file = crate::durable::lock_dir(&config.data_dir, ".lock")?;
    Ok(DataDirLock { _file: file })
}

/// Binds every client listener and loads its TLS files.
async fn bind_listeners(
    config: &Config,
) -> Result<Vec<(TcpListener, Arc<crate::server::listener::ListenerRuntime>)>> {
    let mut bound = Vec::new();
    for l in &config.listeners.listeners {
        let runtime = crate::server::listener::ListenerRuntime::new(l.clone(), &config.listeners)
            .map_err(|e| anyhow::anyhow!(e))?;
        let addr = match l.bind.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => l.bind.clone(),
        };
        let socket = bind(&format!("Kafka listener {}", l.name), &addr).await?;
        bound.push((socket, Arc::new(runtime)));
    }
    Ok(bound)
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

pub async fn run(config: Config) -> Result<()> {
    let started = Instant::now();
    let _lock = lock_data_dir(&config)?;
    let kafka_listeners = bind_listeners(&config).await?;
    let admin_listener = bind("admin", &config.admin_listen).await?;
    let Some(meta) = join_quorum(&config).await? else {
        return Ok(());
    };
    let incarnation_id = register(&config, &meta).await?;
    let logs =
        LogManager::open(&config.data_dir.join("logs")).context("opening the log directory")?;
    let replicas = Arc::new(ReplicaManager::new(
        config.node_id,
        logs,
        Arc::new(crate::config::dynamic::DynamicConfig::new(
            config.kafka.raw.0.clone(),
            config.node_id,
        )),
        config.kafka.replica.clone(),
    ));
    let broker = Broker::new(config, meta, replicas, incarnation_id);
    // Recovery and opening the logs is file I/O: off the async workers.
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        b.replicas.apply_image(&b.image());
        b.replicas.remove_stray_logs();
        b.groups.sync_partitions();
        b.txns.sync_partitions();
    })
    .await
    .context("opening the partition logs")?;
    let mut tasks = start_tasks(&broker, admin_listener).await;
    let kafka = tokio::spawn(crate::server::run(broker.clone(), kafka_listeners));

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
    let b = broker.clone();
    let logs_result = tokio::task::spawn_blocking(move || b.replicas.logs().shutdown())
        .await
        .context("closing the logs")?;
    if let Err(e) = broker.meta.shutdown().await {
        tracing::warn!(error = %e, "metadata quorum shutdown");
    }
    logs_result.context("flushing logs at shutdown")?;
    tracing::info!("clean shutdown complete");
    Ok(())
}

/// Starts this node's member of the metadata quorum and waits until a controller is known.
/// A node that joins a running cluster waits here until it is added as a learner (`gregor
/// admin add-learner`), however long that takes; `None` when SIGTERM ended the wait.
async fn join_quorum(config: &Config) -> Result<Option<MetadataQuorum>> {
    let meta = MetadataQuorum::start(MetaConfig {
        node_id: config.node_id as u64,
        dir: config.data_dir.join("meta"),
        controller_listen: config.controller_listen,
        voters: config.voters.clone(),
        controller: config.kafka.controller.clone(),
        security: crate::meta::plane_security::PlaneSecurity::from_settings(
            &config.listeners.controller,
        )
        .map_err(|e| anyhow::anyhow!(e))
        .context("securing the controller plane")?,
    })
    .await
    .context("starting the metadata quorum")?;
    loop {
        tokio::select! {
            found = meta.wait_for_leader(Duration::from_secs(30)) => match found {
                Ok(_) => return Ok(Some(meta)),
                Err(_) => tracing::warn!(
                    node_id = config.node_id,
                    "no metadata controller reachable yet; still waiting (a new node must be \
                     added with `gregor admin add-learner`)"
                ),
            },
            _ = wait_for_signal() => {
                tracing::info!("shutting down before joining the metadata quorum");
                meta.shutdown().await?;
                return Ok(None);
            }
        }
    }
}

/// Sets the cluster id if nobody has yet, and registers this broker with a new incarnation.
async fn register(config: &Config, meta: &MetadataQuorum) -> Result<uuid::Uuid> {
    if meta.image().cluster_id.is_none() {
        let cluster_id = kafka_uuid(&random_kafka_uuid());
        meta.propose(MetadataRecord::InitCluster { cluster_id })
            .await
            .context("initialising the cluster id")?;
    }
    let incarnation_id = uuid::Uuid::new_v4();
    let inter_broker = config.listeners.inter_broker();
    let registration = BrokerRegistration {
        node_id: config.node_id,
        host: inter_broker.advertised_host.clone(),
        port: inter_broker.advertised_port,
        endpoints: config
            .listeners
            .listeners
            .iter()
            .map(|l| Endpoint {
                listener: l.name.clone(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
                security_protocol: l.protocol.id(),
            })
            .collect(),
        rack: config.kafka.broker_rack.clone(),
        incarnation_id,
        fenced: false,
        shutting_down: false,
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
    Ok(incarnation_id)
}

/// Provisions topics and starts the background tasks, the follower fetchers and the admin
/// HTTP listener.
async fn start_tasks(broker: &Arc<Broker>, admin_listener: TcpListener) -> JoinSet<()> {
    let unprovisioned =
        provision::provision_topics(broker, broker.config.provisioned_topics.clone()).await;
    let mut tasks = JoinSet::new();
    tasks.spawn(tasks::follow_metadata(broker.clone()));
    tasks.spawn(provision::keep_provisioning(broker.clone(), unprovisioned));
    tasks.spawn(tasks::flush_and_checkpoint(broker.clone()));
    tasks.spawn(tasks::retention_and_expiry(broker.clone()));
    tasks.spawn(tasks::group_timers(broker.clone()));
    tasks.spawn(tasks::transaction_timers(broker.clone()));
    tasks.spawn(tasks::clean_logs(broker.clone()));
    tasks.spawn(crate::replica::isr::maintain_isr(
        broker.replicas.clone(),
        broker.meta.clone(),
        broker.shutdown.clone(),
    ));
    broker
        .replicas
        .fetchers
        .sync(&broker.replicas, &broker.meta, &broker.shutdown);
    tasks.spawn(crate::admin::http::run(broker.clone(), admin_listener));
    tasks
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
    let fence = MetadataRecord::ShutDownBroker {
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
