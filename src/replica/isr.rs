//! ISR maintenance on leaders: followers that caught up join the ISR, followers that fell
//! behind for `replica.lag.time.max.ms` leave it. Each change is proposed to the metadata log
//! with the partition epoch it was computed from, so it cannot overwrite a newer decision.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::meta::image::{ApplyOutcome, MetadataRecord};

const CHECK_EVERY: Duration = Duration::from_millis(250);

pub async fn maintain_isr(broker: Arc<Broker>) {
    let lag = Duration::from_millis(broker.config.kafka.replica_lag_time_max_ms);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.shutdown.cancelled() => return,
        }
        let image = broker.image();
        for topic in broker.replicas.hosted().values() {
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
                    leader: broker.node_id(),
                    isr: isr.clone(),
                };
                let b = broker.clone();
                let p = p.clone();
                tokio::spawn(async move {
                    match b.meta.propose(record).await {
                        Ok(ApplyOutcome::Ok) => {
                            tracing::info!(topic = %p.topic, partition = p.index, from = ?state.isr, to = ?isr, "ISR changed");
                            b.replicas.apply_image(&b.image());
                        }
                        Ok(other) => {
                            // Our view was stale: take the latest image, and let the next
                            // attempt wait a moment.
                            tracing::debug!(topic = %p.topic, partition = p.index, outcome = ?other, "ISR change not applied");
                            b.replicas.apply_image(&b.image());
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
