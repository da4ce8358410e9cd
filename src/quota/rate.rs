//! Kafka's windowed statistics for quotas: a sum over `quota.window.num` samples of
//! `quota.window.size.seconds` each (SampledStat with its extra overlapping sample), read as a
//! rate per second (Rate; SimpleRate for the replication throttles) or an average (Avg), and
//! the throttle time that brings a rate back within its bound (QuotaUtils.throttleTime).
//! Times are milliseconds.

/// `quota.window.num` and `quota.window.size.seconds`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub samples: usize,
    pub window_ms: i64,
}

impl Default for WindowConfig {
    /// Kafka's defaults: 11 samples of 1 s.
    fn default() -> Self {
        Self {
            samples: 11,
            window_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    last_event_ms: i64,
    value: f64,
    events: u64,
}

impl Sample {
    fn new(now: i64) -> Self {
        Self {
            start_ms: now,
            last_event_ms: now,
            value: 0.0,
            events: 0,
        }
    }
}

/// Samples of a windowed sum.
#[derive(Debug, Clone, Default)]
pub struct SampledStat {
    samples: Vec<Sample>,
    current: usize,
}

impl SampledStat {
    /// Adds `value` at `now`, starting a new sample when the current one is a window old.
    pub fn record(&mut self, cfg: &WindowConfig, value: f64, now: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
            self.current = 0;
        }
        if now - self.samples[self.current].start_ms >= cfg.window_ms {
            // One extra sample overlaps the start of the monitored window.
            self.current = (self.current + 1) % (cfg.samples + 1);
            if self.current >= self.samples.len() {
                self.samples.push(Sample::new(now));
            } else {
                self.samples[self.current] = Sample::new(now);
            }
        }
        let s = &mut self.samples[self.current];
        s.value += value;
        s.events += 1;
        s.last_event_ms = now;
    }

    /// Resets samples without an event in the whole monitored window.
    fn purge(&mut self, cfg: &WindowConfig, now: i64) {
        let expire = cfg.samples as i64 * cfg.window_ms;
        for s in &mut self.samples {
            if now - s.last_event_ms >= expire {
                *s = Sample::new(now);
            }
        }
    }

    fn sum(&mut self, cfg: &WindowConfig, now: i64) -> f64 {
        self.purge(cfg, now);
        self.samples.iter().map(|s| s.value).sum()
    }

    /// The average of the recorded values in the window, 0 when there are none.
    pub fn average(&mut self, cfg: &WindowConfig, now: i64) -> f64 {
        self.purge(cfg, now);
        let events: u64 = self.samples.iter().map(|s| s.events).sum();
        if events == 0 {
            0.0
        } else {
            self.samples.iter().map(|s| s.value).sum::<f64>() / events as f64
        }
    }

    /// The time the rate divides by: from the oldest sample's start, but at least
    /// `samples - 1` full windows plus the elapsed part of the current one (Rate.windowSize).
    pub fn window_size(&mut self, cfg: &WindowConfig, now: i64) -> i64 {
        self.purge(cfg, now);
        let oldest = self.samples.iter().map(|s| s.start_ms).min().unwrap_or(now);
        let mut elapsed = now - oldest;
        let full = elapsed / cfg.window_ms;
        let min_full = cfg.samples as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * cfg.window_ms;
        }
        elapsed
    }

    /// The recorded sum per second over the window.
    pub fn rate(&mut self, cfg: &WindowConfig, now: i64) -> f64 {
        let sum = self.sum(cfg, now);
        let window = self.window_size(cfg, now);
        sum / (window as f64 / 1000.0)
    }

    /// The recorded sum per second as Kafka's SimpleRate reads it (replication quotas): over
    /// the time since the oldest sample started, but at least one window.
    pub fn simple_rate(&mut self, cfg: &WindowConfig, now: i64) -> f64 {
        let sum = self.sum(cfg, now);
        let oldest = self.samples.iter().map(|s| s.start_ms).min().unwrap_or(now);
        let window = (now - oldest).max(cfg.window_ms);
        sum / (window as f64 / 1000.0)
    }

    /// Records `value` and returns how long the client must wait for the rate to fall back to
    /// `bound` (0 when it is within), at most `max_ms`: (observed - bound) / bound × window.
    pub fn record_and_throttle(
        &mut self,
        cfg: &WindowConfig,
        value: f64,
        bound: f64,
        now: i64,
        max_ms: i64,
    ) -> i64 {
        self.record(cfg, value, now);
        let observed = self.rate(cfg, now);
        if observed <= bound {
            return 0;
        }
        let window = self.window_size(cfg, now) as f64;
        (((observed - bound) / bound * window).round() as i64).clamp(0, max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_assumes_full_windows_until_they_pass() {
        let cfg = WindowConfig::default();
        let mut s = SampledStat::default();
        s.record(&cfg, 1000.0, 0);
        // 1000 bytes over an assumed 10 s window.
        assert_eq!(s.window_size(&cfg, 0), 10_000);
        assert!((s.rate(&cfg, 0) - 100.0).abs() < 1e-9);
        assert_eq!(s.window_size(&cfg, 500), 10_500);
        // After 10 full windows, the real elapsed time counts.
        s.record(&cfg, 1000.0, 10_000);
        assert_eq!(s.window_size(&cfg, 10_500), 10_500);
        // The first sample's event is 11 windows old at 11 s: it is purged.
        assert!((s.rate(&cfg, 11_000) - 1000.0 / 10.0).abs() < 1e-9);
    }

    #[test]
    fn throttle_brings_the_rate_back_to_the_bound() {
        let cfg = WindowConfig::default();
        let mut s = SampledStat::default();
        // 2000 bytes at once against 100 B/s over a 10 s window: the rate is 200 B/s, so
        // the client waits (200 - 100) / 100 × 10 s = 10 s.
        assert_eq!(s.record_and_throttle(&cfg, 1000.0, 100.0, 0, i64::MAX), 0);
        assert_eq!(
            s.record_and_throttle(&cfg, 1000.0, 100.0, 0, i64::MAX),
            10_000
        );
        assert_eq!(s.record_and_throttle(&cfg, 1000.0, 100.0, 0, 1000), 1000);
    }

    #[test]
    fn average_of_recorded_values() {
        let cfg = WindowConfig::default();
        let mut s = SampledStat::default();
        assert_eq!(s.average(&cfg, 0), 0.0);
        s.record(&cfg, 10.0, 0);
        s.record(&cfg, 30.0, 1500);
        assert_eq!(s.average(&cfg, 2000), 20.0);
        assert_eq!(s.average(&cfg, 60_000), 0.0);
    }
}
