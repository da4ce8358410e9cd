//! The console's memory of the last minutes: every `INTERVAL` one task reads the high
//! watermark of every partition (through `peers`) and the committed offsets of every group,
//! and keeps, for `WINDOW`, each topic's message count and each group's lag per topic. Pages
//! draw the lag chart and the live throughput from it; `/metrics` takes the latest end offsets
//! for group lag on partitions this broker does not host.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::peers::{Offsets, Peers, Tp};
use crate::broker::Broker;

pub const INTERVAL: Duration = Duration::from_secs(5);
/// Ten minutes of samples.
pub const WINDOW: usize = 120;
/// Groups sampled per round (the rest are shown, without history).
const MAX_GROUPS: usize = 500;

/// One round.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at_ms: i64,
    /// Sum of the partitions' high watermarks, per topic.
    pub topic_offsets: BTreeMap<String, i64>,
    /// Bytes this broker took in and served, per topic (its counters).
    pub topic_bytes: BTreeMap<String, (u64, u64)>,
    /// Lag per (group, topic): high watermark minus committed offset, summed over partitions.
    pub lag: BTreeMap<(String, String), i64>,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Arc<Sample>>>,
    /// The latest offsets of every partition.
    offsets: Mutex<Arc<HashMap<Tp, Offsets>>>,
}

/// Per topic: messages in per second, and this broker's bytes in and out per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub messages: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
}

impl History {
    pub fn samples(&self) -> Vec<Arc<Sample>> {
        self.samples.lock().iter().cloned().collect()
    }

    pub fn offsets(&self) -> Arc<HashMap<Tp, Offsets>> {
        self.offsets.lock().clone()
    }

    /// The high watermark of `tp` at the latest round, if it was read.
    pub fn high_watermark(&self, tp: &Tp) -> Option<i64> {
        self.offsets.lock().get(tp).map(|o| o.high_watermark)
    }

    pub fn push(&self, sample: Sample, offsets: HashMap<Tp, Offsets>) {
        let mut samples = self.samples.lock();
        samples.push_back(Arc::new(sample));
        while samples.len() > WINDOW {
            samples.pop_front();
        }
        *self.offsets.lock() = Arc::new(offsets);
    }

    /// Rates per topic between the last two samples.
    pub fn rates(&self) -> BTreeMap<String, Rate> {
        let samples = self.samples.lock();
        let n = samples.len();
        if n < 2 {
            return BTreeMap::new();
        }
        rates_between(&samples[n - 2], &samples[n - 1])
    }

    /// Messages per second per topic, for every pair of consecutive samples: (time, rates).
    pub fn rate_series(&self) -> Vec<(i64, BTreeMap<String, Rate>)> {
        let samples = self.samples.lock();
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| (b.at_ms, rates_between(a, b)))
            .collect()
    }
}

fn rates_between(a: &Sample, b: &Sample) -> BTreeMap<String, Rate> {
    let secs = ((b.at_ms - a.at_ms) as f64 / 1000.0).max(0.001);
    b.topic_offsets
        .iter()
        .map(|(topic, end)| {
            let before = a.topic_offsets.get(topic).copied().unwrap_or(*end);
            let (bin, bout) = b.topic_bytes.get(topic).copied().unwrap_or_default();
            let (ain, aout) = a.topic_bytes.get(topic).copied().unwrap_or((bin, bout));
            let rate = Rate {
                messages: (end - before).max(0) as f64 / secs,
                bytes_in: bin.saturating_sub(ain) as f64 / secs,
                bytes_out: bout.saturating_sub(aout) as f64 / secs,
            };
            (topic.clone(), rate)
        })
        .collect()
}

/// Samples until shutdown.
pub async fn run(broker: Arc<Broker>, peers: Arc<Peers>, history: Arc<History>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.shutdown.cancelled() => return,
        }
        let (sample, offsets) = sample_once(&broker, &peers).await;
        history.push(sample, offsets);
    }
}

async fn sample_once(broker: &Broker, peers: &Peers) -> (Sample, HashMap<Tp, Offsets>) {
    let image = broker.image();
    let partitions: Vec<Tp> = image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
        .collect();
    let offsets = peers.offsets(broker, &partitions).await;
    let mut sample = Sample {
        at_ms: crate::replica::now_ms(),
        ..Default::default()
    };
    for ((topic, _), o) in &offsets {
        *sample.topic_offsets.entry(topic.clone()).or_default() += o.high_watermark;
    }
    for (topic, c) in broker.replicas.topic_counters() {
        use std::sync::atomic::Ordering::Relaxed;
        sample
            .topic_bytes
            .insert(topic, (c.bytes_in.load(Relaxed), c.bytes_out.load(Relaxed)));
    }
    let groups = peers.list_groups(broker).await;
    for (group, _, _) in groups.iter().take(MAX_GROUPS) {
        let Ok(info) = peers.describe_group(broker, group).await else {
            continue;
        };
        for (tp, committed) in &info.committed {
            if let Some(o) = offsets.get(tp) {
                *sample.lag.entry((group.clone(), tp.0.clone())).or_default() +=
                    (o.high_watermark - committed).max(0);
            }
        }
    }
    (sample, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples_and_the_window_is_bounded() {
        let h = History::default();
        for i in 0..(WINDOW as i64 + 10) {
            let mut s = Sample {
                at_ms: i * 5000,
                ..Default::default()
            };
            s.topic_offsets.insert("t".into(), i * 500);
            s.topic_bytes.insert("t".into(), (i as u64 * 1000, 0));
            h.push(s, HashMap::new());
        }
        assert_eq!(h.samples().len(), WINDOW);
        let r = h.rates()["t"];
        assert_eq!(r.messages, 100.0);
        assert_eq!(r.bytes_in, 200.0);
        assert_eq!(h.rate_series().len(), WINDOW - 1);
    }
}
