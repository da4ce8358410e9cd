//! ISR maintenance on leaders: followers that caught up join the ISR, followers that fell
//! behind for `replica.lag.time.max.ms` leave it. Each change is proposed to the metadata log
//! with the partition epoch it was computed from, so it cannot overwrite a newer decision.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ReplicaManager;
use crate::meta::image::{ApplyOutcome, MetadataRecord};
use crate::meta::MetadataQuorum;

const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long an ISR change waits to be hosted here after it was applied.
const APPLY_WAIT: Duration = Duration::from_secs(5);

pub async fn maintain_isr(
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    shutdown: CancellationToken,
) {
    let lag = replicas.settings.lag_time_max;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let image = meta.image();
        for topic in replicas.hosted().values() {
            for p in topic.partitions.values() {
                let Some(isr) = p.desired_isr(lag, |r| image.is_live(r)) else {
                    continue;
                };
                let state = p.state();
                p.set_isr_change_pending(true);
                let record = MetadataRecord::UpdatePartition {
                    topic_id: p.topic_id,
                    partition: p.index,
                    expected_partition_epoch: state.partition_epoch,
                    leader: replicas.node_id(),
                    isr: isr.clone(),
                };
                let (replicas, meta) = (replicas.clone(), meta.clone());
                let p = p.clone();
                tokio::spawn(async move {
                    match meta.propose(record).await {
                        Ok(ApplyOutcome::Ok) => {
                            tracing::info!(topic = %p.topic, partition = p.index, from = ?state.isr, to = ?isr, "ISR changed");
                            let counter = if isr.len() < state.isr.len() {
                                &replicas.isr_changes.shrinks
                            } else {
                                &replicas.isr_changes.expands
                            };
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            replicas
                                .wait_for_image(meta.image().version, APPLY_WAIT)
                                .await;
                        }
                        Ok(other) => {
                            // Our view was stale: wait for the latest image, and let the next
                            // attempt wait a moment.
                            tracing::debug!(topic = %p.topic, partition = p.index, outcome = ?other, "ISR change not applied");
                            replicas
                                .wait_for_image(meta.image().version, APPLY_WAIT)
                                .await;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            p.set_isr_change_pending(false);
                        }
                        Err(e) => {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "proposing an ISR change failed");
                            p.set_isr_change_pending(false);
                        }
                    }
                });
            }
        }
    }
}
