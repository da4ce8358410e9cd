//! What one request costs against its client's quotas, and the throttle that follows, as
//! Kafka's KafkaApis computes it: Produce records the request's bytes (`producer_byte_rate`),
//! Fetch the response's bytes (`consumer_byte_rate`, and a throttled Fetch answers without
//! data), and every request its handler time (`request_percentage`). The larger throttle
//! time goes in the response's `throttle_time_ms`, and the connection is muted for it.
//!
//! Handler time is the time the request's future spends being polled (`Timed`), the analogue
//! of Kafka's request-handler thread time: waiting in purgatory or for the metadata quorum
//! costs nothing. Only clients under a request quota have their requests timed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use kafka_protocol::messages::ApiKey;

use crate::quota::{Bound, ClientQuotas, QuotaManagers};

/// How long the connection stays muted after a request, and whether the client knows to wait
/// (KIP-219: the response comes first) or the response itself is held back (older versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    pub time_ms: i64,
    pub client_throttles: bool,
}

/// Whether a response of this version makes the client wait by itself (Kafka's
/// `AbstractResponse.shouldClientThrottle`).
pub fn client_throttles(key: ApiKey, version: i16) -> bool {
    use ApiKey::*;
    let since = match key {
        Produce | Metadata => 6,
        Fetch => 8,
        CreateTopics | ListOffsets => 3,
        DeleteTopics | ApiVersions | DescribeConfigs | DescribeGroups | FindCoordinator
        | Heartbeat | LeaveGroup | ListGroups | SyncGroup => 2,
        JoinGroup => 3,
        OffsetCommit | OffsetFetch => 4,
        IncrementalAlterConfigs
        | OffsetDelete
        | AlterUserScramCredentials
        | DescribeUserScramCredentials => 0,
        AddOffsetsToTxn | AddPartitionsToTxn | AlterConfigs | CreateAcls | CreatePartitions
        | DeleteAcls | DeleteGroups | DeleteRecords | DescribeAcls | DescribeLogDirs | EndTxn
        | InitProducerId | TxnOffsetCommit => 1,
        _ => return false,
    };
    version >= since
}

/// A request's handler time so far: the time its future has spent in `poll`.
#[derive(Debug)]
pub struct RequestClock {
    base: Instant,
    busy_nanos: AtomicU64,
    /// When the poll in progress started (nanos after `base`), 0 outside a poll.
    polling_since: AtomicU64,
}

impl RequestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            busy_nanos: AtomicU64::new(0),
            polling_since: AtomicU64::new(0),
        })
    }

    fn nanos(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Handler time so far, including the poll in progress.
    pub fn busy_nanos(&self) -> u64 {
        let since = self.polling_since.load(Ordering::Relaxed);
        let current = if since == 0 {
            0
        } else {
            self.nanos().saturating_sub(since)
        };
        self.busy_nanos.load(Ordering::Relaxed) + current
    }
}

/// A future whose polling time is added to a `RequestClock`.
pub struct Timed<F> {
    inner: Pin<Box<F>>,
    clock: Arc<RequestClock>,
}

impl<F: Future> Timed<F> {
    pub fn new(inner: F, clock: Arc<RequestClock>) -> Self {
        Self {
            inner: Box::pin(inner),
            clock,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let clock = self.clock.clone();
        let start = clock.nanos().max(1);
        clock.polling_since.store(start, Ordering::Relaxed);
        let out = self.inner.as_mut().poll(cx);
        clock.polling_since.store(0, Ordering::Relaxed);
        clock
            .busy_nanos
            .fetch_add(clock.nanos().saturating_sub(start), Ordering::Relaxed);
        out
    }
}

/// One request's view of its client's quotas.
pub struct RequestQuotas<'a> {
    managers: &'a QuotaManagers,
    client: Option<&'a ClientQuotas>,
    clock: Option<Arc<RequestClock>>,
}

impl<'a> RequestQuotas<'a> {
    pub fn new(managers: &'a QuotaManagers, client: Option<&'a ClientQuotas>) -> Self {
        let clock = client
            .and_then(|c| c.request.as_ref())
            .map(|_| RequestClock::new());
        Self {
            managers,
            client,
            clock,
        }
    }

    /// A client without any quota: nothing to record.
    pub fn unlimited(managers: &'a QuotaManagers) -> Self {
        Self {
            managers,
            client: None,
            clock: None,
        }
    }

    /// The clock to time the request's handling with, when it is under a request quota.
    pub fn clock(&self) -> Option<Arc<RequestClock>> {
        self.clock.clone()
    }

    fn request_bound(&self) -> Option<&'a Bound> {
        self.client.and_then(|c| c.request.as_ref())
    }

    /// Records the handler time so far as a percentage of one second (Kafka's
    /// nanosToPercentage); the request throttle, at most one quota window.
    fn request_time(&self, now: i64) -> i64 {
        match (self.request_bound(), &self.clock) {
            (Some(bound), Some(clock)) => {
                let percent = clock.busy_nanos() as f64 * 100.0 / 1e9;
                bound.record(percent, now, self.managers.window().window_ms)
            }
            _ => 0,
        }
    }

    /// Settles a request's throttle: the larger of the byte-rate and request throttles, whose
    /// sensor records it as a throttle time.
    fn settle(
        &self,
        key: ApiKey,
        version: i16,
        bytes: Option<(&Bound, i64)>,
        request_ms: i64,
        now: i64,
        out: &mut Throttle,
    ) -> i32 {
        let bytes_ms = bytes.map_or(0, |(_, ms)| ms);
        let time_ms = bytes_ms.max(request_ms);
        if time_ms == 0 {
            return 0;
        }
        match bytes {
            Some((bound, ms)) if ms > request_ms => bound.record_throttle(ms, now),
            _ => {
                if let Some(bound) = self.request_bound() {
                    bound.record_throttle(request_ms, now)
                }
            }
        }
        *out = Throttle {
            time_ms,
            client_throttles: client_throttles(key, version),
        };
        time_ms.min(i32::MAX as i64) as i32
    }

    /// A request of an API other than Produce and Fetch: the request quota only.
    pub fn other(&self, key: ApiKey, version: i16, out: &mut Throttle) -> i32 {
        if self.client.is_none() {
            return 0;
        }
        let now = self.managers.now_ms();
        let request_ms = self.request_time(now);
        self.settle(key, version, None, request_ms, now, out)
    }

    /// A Produce of `request_bytes` (the whole request, as Kafka counts it); acks=0 requests
    /// are not charged handler time, as in Kafka.
    pub fn produce(
        &self,
        version: i16,
        request_bytes: usize,
        acks: i16,
        out: &mut Throttle,
    ) -> i32 {
        let Some(client) = self.client else {
            return 0;
        };
        let now = self.managers.now_ms();
        let bytes = client.produce.as_ref().map(|b| {
            let ms = b.record(request_bytes as f64, now, i64::MAX);
            (b, ms)
        });
        let request_ms = if acks == 0 { 0 } else { self.request_time(now) };
        self.settle(ApiKey::Produce, version, bytes, request_ms, now, out)
    }

    /// The most a consumer's Fetch may return under its byte-rate quota.
    pub fn fetch_max_bytes(&self) -> Option<i32> {
        let bound = self.client?.fetch.as_ref()?;
        Some(bound.max_value_in_window().min(i32::MAX as f64) as i32)
    }

    /// A consumer's Fetch whose response has `response_bytes` (sized only for a client under
    /// a quota); the throttle, and whether the response must go without its data (then its
    /// bytes are not charged, as in Kafka).
    pub fn fetch(
        &self,
        version: i16,
        response_bytes: impl FnOnce() -> usize,
        out: &mut Throttle,
    ) -> (i32, bool) {
        let Some(client) = self.client else {
            return (0, false);
        };
        let response_bytes = response_bytes();
        let now = self.managers.now_ms();
        let fetch = client.fetch.as_ref();
        let bytes = fetch.map(|b| (b, b.record(response_bytes as f64, now, i64::MAX)));
        let request_ms = self.request_time(now);
        let ms = self.settle(ApiKey::Fetch, version, bytes, request_ms, now, out);
        if ms > 0 {
            if let Some(b) = fetch {
                b.unrecord(response_bytes as f64, now);
            }
        }
        (ms, ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kip_219_versions() {
        assert!(!client_throttles(ApiKey::Produce, 5));
        assert!(client_throttles(ApiKey::Produce, 6));
        assert!(!client_throttles(ApiKey::Fetch, 7));
        assert!(client_throttles(ApiKey::Fetch, 8));
        assert!(client_throttles(ApiKey::IncrementalAlterConfigs, 0));
        assert!(!client_throttles(ApiKey::DescribeClientQuotas, 1));
    }

    #[tokio::test]
    async fn timed_futures_count_only_polling() {
        let clock = RequestClock::new();
        Timed::new(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            },
            clock.clone(),
        )
        .await;
        assert!(clock.busy_nanos() < 20_000_000, "{}", clock.busy_nanos());
        let spin = Timed::new(
            async {
                std::thread::sleep(std::time::Duration::from_millis(30));
            },
            clock.clone(),
        );
        spin.await;
        assert!(clock.busy_nanos() >= 30_000_000);
    }
}
