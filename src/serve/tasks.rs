//! The broker's background tasks: following the metadata, the log cleaner, group timers,
//! transaction timeouts and expiry, retention and producer expiry, scheduled flushes and
//! checkpoints. Each does its file I/O on
//! a blocking thread and stops at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::replica::now_ms;

/// The one task that applies metadata images to the hosted replicas (others wait for it with
/// `ReplicaManager::wait_for_image`).
pub(super) async fn follow_metadata(broker: Arc<Broker>) {
    let mut images = broker.meta.subscribe();
    // (`borrow`, not `borrow_and_update`: the loop below still applies this image.)
    let quotas = images.borrow().client_quotas.clone();
    broker.quotas.update(&quotas);
    loop {
        tokio::select! {
            changed = images.changed() => {
                if changed.is_err() {
                    broker.replicas.stop_applying();
                    return;
                }
                let image = images.borrow_and_update().clone();
                broker.quotas.update(&image.client_quotas);
                let b = broker.clone();
                // Opening logs and loading groups is file I/O; keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    b.replicas.apply_image(&image);
                    b.groups.sync_partitions();
                    b.txns.sync_partitions();
                })
                .await;
                broker
                    .replicas
                    .fetchers
                    .sync(&broker.replicas, &broker.meta, &broker.shutdown);
            }
            _ = broker.shutdown.cancelled() => {
                broker.replicas.stop_applying();
                return;
            }
        }
    }
}

/// The log cleaner: a compaction pass over every hosted compacted log, one at a time on a
/// blocking thread, every `log.cleaner.backoff.ms`. The `log.cleaner.*` settings are read
/// anew each round, so dynamic broker configs apply from the next one.
pub(super) async fn clean_logs(broker: Arc<Broker>) {
    let mut config =
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
    loop {
        match broker.dynamic_config().cleaner() {
            Ok(c) => config = c,
            Err(e) => {
                tracing::warn!(error = %e, "invalid dynamic log cleaner settings; keeping the previous ones")
            }
        }
        let every = Duration::from_millis(config.backoff_ms.max(10));
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
                    match crate::log::cleaner::clean_once(&p.log, p.last_stable_offset(), now_ms(), &config) {
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
pub(super) async fn group_timers(broker: Arc<Broker>) {
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
        broker.groups.tick();
        if last_expiry.elapsed() >= expiry_every {
            last_expiry = Instant::now();
            broker.groups.expire_offsets().await;
        }
    }
}

/// Aborts transactions past their timeout and expires idle transactional ids, at
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` and
/// `transaction.remove.expired.transaction.cleanup.interval.ms`.
pub(super) async fn transaction_timers(broker: Arc<Broker>) {
    let config = &broker.txns.config;
    let start = tokio::time::Instant::now();
    let mut aborts = tokio::time::interval_at(
        start + config.abort_check_interval,
        config.abort_check_interval,
    );
    let mut expiry = tokio::time::interval_at(
        start + config.expiration_check_interval,
        config.expiration_check_interval,
    );
    aborts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = aborts.tick() => broker.txns.abort_timed_out().await,
            _ = expiry.tick() => broker.txns.expire_ids().await,
            _ = broker.shutdown.cancelled() => return,
        }
    }
}

/// Deletes segments past retention (`log.retention.check.interval.ms`) and expires idle
/// producers (`producer.id.expiration.check.interval.ms`).
pub(super) async fn retention_and_expiry(broker: Arc<Broker>) {
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
            let expiration_ms = b
                .dynamic_config()
                .get("producer.id.expiration.ms", b.config.kafka.producer_id_expiration_ms);
            for (name, topic) in b.replicas.hosted().iter() {
                for (index, partition) in &topic.partitions {
                    if expire {
                        partition.log.expire_producers(now, expiration_ms);
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
pub(super) async fn flush_and_checkpoint(broker: Arc<Broker>) {
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
