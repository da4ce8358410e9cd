//! Replication throttles (KIP-73), as Kafka applies them to reassignments.
//!
//! A topic lists throttled replicas as `partition:broker` pairs (or `*`) in
//! `leader.replication.throttled.replicas` and `follower.replication.throttled.replicas`.
//! A partition hosted here is leader-throttled when the leader list names it with this broker,
//! and follower-throttled when the follower list does (Kafka's `parseThrottledPartitions`).
//! Each side has one byte-rate quota per broker, `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate` (dynamic broker configs, unlimited by default),
//! measured as Kafka's SimpleRate over `replication.quota.window.num` samples of
//! `replication.quota.window.size.seconds`.
//!
//! While a side's rate is over its bound, a leader answers a leader-throttled partition's fetch
//! from a follower outside the ISR with no records (`shouldLeaderThrottle`), and a follower
//! leaves its follower-throttled partitions that have not caught up with the leader out of its
//! fetches (`shouldFollowerThrottle`). In-sync replicas are never held back, so a throttle
//! cannot shrink the ISR; their bytes still count towards the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::quota::rate::{SampledStat, WindowConfig};

/// Kafka's default rate, `Long.MAX_VALUE`: no throttle.
pub const UNLIMITED: u64 = i64::MAX as u64;

/// Whether `spec` (a throttled-replicas topic config) names `partition` on `broker`.
pub fn names_replica(spec: &str, partition: i32, broker: i32) -> bool {
    let spec = spec.trim();
    if spec == "*" {
        return true;
    }
    spec.split(',').any(|entry| {
        let mut parts = entry.split(':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(b), None) => {
                p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker)
            }
            _ => false,
        }
    })
}

/// One side's byte-rate quota (Kafka's ReplicationQuotaManager without the partition list,
/// which lives on each `Partition`).
#[derive(Debug)]
pub struct ReplicationQuota {
    /// Bytes per second; [`UNLIMITED`] when no rate is set.
    bound: AtomicU64,
    stat: Mutex<(WindowConfig, SampledStat)>,
    /// The origin of the stat's millisecond clock (monotonic).
    origin: Instant,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        Self {
            bound: AtomicU64::new(UNLIMITED),
            stat: Mutex::new((WindowConfig::default(), SampledStat::default())),
            origin: Instant::now(),
        }
    }
}

impl ReplicationQuota {
    /// Sets the bound (bytes per second, `None` for unlimited) and the sampling window. The
    /// samples taken so far are kept, as Kafka keeps them on a quota change.
    pub fn configure(&self, bound: Option<u64>, window: WindowConfig) {
        self.bound
            .store(bound.unwrap_or(UNLIMITED).min(UNLIMITED), Ordering::Relaxed);
        self.stat.lock().0 = window;
    }

    pub fn bound(&self) -> u64 {
        self.bound.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> i64 {
        self.origin.elapsed().as_millis() as i64
    }

    /// Counts `bytes` replicated for throttled partitions now. Not counted while unlimited
    /// (Kafka counts them then too; Gregor keeps the unthrottled path free of the lock).
    pub fn record(&self, bytes: u64) {
        self.record_at(bytes, self.now_ms());
    }

    fn record_at(&self, bytes: u64, now_ms: i64) {
        if bytes == 0 || self.bound() == UNLIMITED {
            return;
        }
        let mut stat = self.stat.lock();
        let (cfg, s) = &mut *stat;
        s.record(cfg, bytes as f64, now_ms);
    }

    /// Whether the measured rate is over the bound (Kafka's `isQuotaExceeded`).
    pub fn is_exceeded(&self) -> bool {
        self.is_exceeded_at(self.now_ms())
    }

    fn is_exceeded_at(&self, now_ms: i64) -> bool {
        let bound = self.bound();
        if bound == UNLIMITED {
            return false;
        }
        let mut stat = self.stat.lock();
        let (cfg, s) = &mut *stat;
        s.simple_rate(cfg, now_ms) > bound as f64
    }

    /// Kafka's `shouldLeaderThrottle` and `shouldFollowerThrottle`: a replica the topic lists,
    /// not in sync, while the quota is used up. `in_sync` is asked only for listed replicas.
    pub fn should_throttle(&self, listed: bool, in_sync: impl FnOnce() -> bool) -> bool {
        listed && !in_sync() && self.is_exceeded()
    }
}

/// The two replication quotas of a broker.
#[derive(Debug, Default)]
pub struct ReplicationQuotas {
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
}

impl ReplicationQuotas {
    /// Applies the rates in effect (`None`: unset) and the window.
    pub fn configure(&self, leader: Option<i64>, follower: Option<i64>, window: WindowConfig) {
        let rate = |r: Option<i64>| r.and_then(|r| u64::try_from(r).ok());
        self.leader.configure(rate(leader), window);
        self.follower.configure(rate(follower), window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: usize, window_ms: i64) -> WindowConfig {
        WindowConfig { samples, window_ms }
    }

    #[test]
    fn throttled_replica_lists() {
        assert!(names_replica("*", 3, 7));
        assert!(names_replica(" * ", 0, 1));
        assert!(names_replica("0:1,3:7", 3, 7));
        assert!(names_replica("0:1, 3:7", 3, 7));
        // The partition must be named with this broker.
        assert!(!names_replica("0:1,3:6", 3, 7));
        assert!(!names_replica("3:6,7:3", 3, 7));
        assert!(!names_replica("", 0, 1));
        assert!(!names_replica("0-1", 0, 1));
        assert!(!names_replica("0:1:2", 0, 1));
    }

    #[test]
    fn unlimited_by_default() {
        let q = ReplicationQuota::default();
        q.record_at(10_000_000_000, 0);
        assert!(!q.is_exceeded_at(0));
        assert!(!q.should_throttle(true, || false));
    }

    #[test]
    fn simple_rate_over_at_least_one_window() {
        let q = ReplicationQuota::default();
        q.configure(Some(1000), window(3, 1000));
        // 900 bytes at once: measured over one full window, 900 B/s.
        q.record_at(900, 0);
        assert!(!q.is_exceeded_at(0));
        q.record_at(200, 300);
        // 1100 bytes over (at least) 1 s: over the bound.
        assert!(q.is_exceeded_at(500));
        // Over the 1.5 s since the oldest sample started, 733 B/s: within.
        assert!(!q.is_exceeded_at(1500));
        // A burst of 1 MiB keeps the rate over the bound until its sample has aged out of
        // the three windows and is purged.
        q.record_at(1 << 20, 2000);
        assert!(q.is_exceeded_at(2001));
        assert!(q.is_exceeded_at(4999));
        assert!(!q.is_exceeded_at(5000));
    }

    #[test]
    fn the_rate_follows_the_bound_over_time() {
        // Fetches of 100 KB whenever the quota allows, at 100 KB/s over 11 windows of 1 s:
        // the bytes let through in 30 s stay near 30 × 100 KB.
        let q = ReplicationQuota::default();
        q.configure(Some(100_000), window(11, 1000));
        let mut sent = 0u64;
        for now in (0..30_000).step_by(50) {
            if !q.is_exceeded_at(now) {
                q.record_at(100_000, now);
                sent += 100_000;
            }
        }
        assert!((2_900_000..=3_200_000).contains(&sent), "{sent}");
    }

    #[test]
    fn a_bound_change_applies_at_once() {
        let q = ReplicationQuota::default();
        q.configure(Some(100), window(11, 1000));
        q.record_at(1000, 0);
        assert!(q.is_exceeded_at(10));
        q.configure(Some(10_000), window(11, 1000));
        assert!(!q.is_exceeded_at(10));
        q.configure(None, window(11, 1000));
        assert_eq!(q.bound(), UNLIMITED);
        assert!(!q.is_exceeded_at(10));
    }

    #[test]
    fn in_sync_replicas_are_never_throttled() {
        let quotas = ReplicationQuotas::default();
        quotas.configure(Some(1), Some(-1), window(11, 1000));
        assert_eq!(
            quotas.follower.bound(),
            UNLIMITED,
            "a negative rate is no rate"
        );
        quotas.leader.record(1_000_000);
        assert!(quotas.leader.is_exceeded());
        // Listed and out of sync: held back.
        assert!(quotas.leader.should_throttle(true, || false));
        // In the ISR (leader side) or caught up (follower side): never.
        assert!(!quotas.leader.should_throttle(true, || true));
        // Not listed by the topic: never.
        assert!(!quotas.leader.should_throttle(false, || false));
        assert!(!quotas.follower.should_throttle(true, || false));
    }
}
