//! Client quota enforcement on this broker, as Kafka's ClientQuotaManager (`producer_byte_rate`
//! on Produce request bytes, `consumer_byte_rate` on Fetch response bytes) and
//! ClientRequestQuotaManager (`request_percentage`, the share of one request handler's time).
//!
//! The quotas come from the metadata image (`meta::client_quotas`). For each quota type a
//! client's usage is recorded in the sensor of the metric tags its quota resolves to (so a
//! default quota meters each user or client id on its own, as in Kafka). A connection resolves
//! its (user, client id) once per change of the quotas and keeps handles to its sensors: a
//! request takes only its own sensor's lock, and a client without a quota takes none. Sensors
//! live in sharded maps, and expire after an hour without use, as Kafka's do.
//!
//! The connection turns a throttle time into muting (`server::connection`); `server::dispatch`
//! records usage and puts the throttle time in the response.

pub mod rate;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::meta::client_quotas::{
    ClientQuotaStore, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE,
};
use rate::{SampledStat, WindowConfig};

/// Kafka's `ClientQuotaManager.InactiveSensorExpirationTimeSeconds`.
const SENSOR_EXPIRY_MS: i64 = 3600 * 1000;
const SHARDS: usize = 16;

/// Kafka's QuotaType: which usage a sensor meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
}

impl QuotaType {
    pub const ALL: [QuotaType; 3] = [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request];

    /// The quota key that bounds this type.
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
        }
    }
}

struct SensorState {
    usage: SampledStat,
    throttle_ms: SampledStat,
    last_used_ms: i64,
}

/// The usage and throttle-time statistics of one (user, client-id) metric tag pair.
pub struct QuotaSensor {
    pub user: String,
    pub client_id: String,
    state: Mutex<SensorState>,
}

/// A client's quota of one type: its sensor and its limit.
pub struct Bound {
    sensor: Arc<QuotaSensor>,
    limit: f64,
    cfg: WindowConfig,
}

impl Bound {
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Records usage; the throttle time in ms (0 within the quota), at most `max_ms`.
    pub fn record(&self, value: f64, now_ms: i64, max_ms: i64) -> i64 {
        let mut s = self.sensor.state.lock();
        s.last_used_ms = now_ms;
        s.usage
            .record_and_throttle(&self.cfg, value, self.limit, now_ms, max_ms)
    }

    /// Takes back recorded usage (a throttled Fetch returns no data).
    pub fn unrecord(&self, value: f64, now_ms: i64) {
        self.sensor
            .state
            .lock()
            .usage
            .record(&self.cfg, -value, now_ms);
    }

    /// Records a throttle time given to the client (the `throttle-time` average).
    pub fn record_throttle(&self, throttle_ms: i64, now_ms: i64) {
        self.sensor
            .state
            .lock()
            .throttle_ms
            .record(&self.cfg, throttle_ms as f64, now_ms);
    }

    /// The most usage one window can take without being throttled for sure (Kafka's
    /// getMaxValueInQuotaWindow): a Fetch asks for no more than this.
    pub fn max_value_in_window(&self) -> f64 {
        self.limit * (self.cfg.samples as f64 - 1.0) * (self.cfg.window_ms as f64 / 1000.0)
    }
}

/// The quotas that apply to one client, by type.
#[derive(Default)]
pub struct ClientQuotas {
    pub produce: Option<Bound>,
    pub fetch: Option<Bound>,
    pub request: Option<Bound>,
}

/// A connection's resolved quotas, valid while the quotas and its client id stay the same.
#[derive(Default)]
pub struct ConnectionQuotas {
    version: u64,
    user: String,
    client_id: String,
    quotas: Option<Arc<ClientQuotas>>,
}

/// One sensor's figures for `/metrics`.
pub struct SensorReading {
    pub user: String,
    pub client_id: String,
    /// Usage per second over the window (bytes, or request-time percent).
    pub rate: f64,
    /// The average throttle time given in the window, ms.
    pub throttle_time_ms: f64,
}

#[derive(Default)]
struct Shard {
    sensors: HashMap<(String, String), Arc<QuotaSensor>>,
    /// The size at which the next new sensor sweeps out expired ones (amortised).
    sweep_at: usize,
}

struct Sensors {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Sensors {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn get_or_create(&self, user: &str, client_id: &str, now_ms: i64) -> Arc<QuotaSensor> {
        let key = (user.to_string(), client_id.to_string());
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut shard = shard.lock();
        if let Some(s) = shard.sensors.get(&key) {
            return s.clone();
        }
        // Expire sensors nobody holds that have not been used for an hour.
        if shard.sensors.len() >= shard.sweep_at {
            shard.sensors.retain(|_, s| {
                Arc::strong_count(s) > 1 || now_ms - s.state.lock().last_used_ms < SENSOR_EXPIRY_MS
            });
            shard.sweep_at = (shard.sensors.len() * 2).max(64);
        }
        let sensor = Arc::new(QuotaSensor {
            user: key.0.clone(),
            client_id: key.1.clone(),
            state: Mutex::new(SensorState {
                usage: SampledStat::default(),
                throttle_ms: SampledStat::default(),
                last_used_ms: now_ms,
            }),
        });
        shard.sensors.insert(key, sensor.clone());
        sensor
    }

    fn readings(&self, cfg: &WindowConfig, now_ms: i64, max: usize) -> Vec<SensorReading> {
        let mut all: Vec<(i64, SensorReading)> = Vec::new();
        for shard in &self.shards {
            for s in shard.lock().sensors.values() {
                let mut st = s.state.lock();
                if now_ms - st.last_used_ms >= SENSOR_EXPIRY_MS {
                    continue;
                }
                let reading = SensorReading {
                    user: s.user.clone(),
                    client_id: s.client_id.clone(),
                    rate: st.usage.rate(cfg, now_ms),
                    throttle_time_ms: st.throttle_ms.average(cfg, now_ms),
                };
                all.push((st.last_used_ms, reading));
            }
        }
        // Bounded cardinality: the most recently used sensors.
        all.sort_by_key(|r| std::cmp::Reverse(r.0));
        all.truncate(max);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

/// The broker's quota managers: the quotas in force and the sensors of each type.
pub struct QuotaManagers {
    cfg: WindowConfig,
    store: ArcSwap<ClientQuotaStore>,
    /// Bumped by every change of the quotas; 0 while none was ever set.
    version: AtomicU64,
    sensors: [Sensors; 3],
    epoch: Instant,
}

impl Default for QuotaManagers {
    fn default() -> Self {
        Self::new(WindowConfig::default())
    }
}

impl QuotaManagers {
    pub fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            store: ArcSwap::from_pointee(ClientQuotaStore::default()),
            version: AtomicU64::new(0),
            sensors: [Sensors::new(), Sensors::new(), Sensors::new()],
            epoch: Instant::now(),
        }
    }

    /// Milliseconds on the quota clock (monotonic).
    pub fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    pub fn window(&self) -> WindowConfig {
        self.cfg
    }

    /// Takes the quotas of a new metadata image (a no-op when they did not change).
    pub fn update(&self, store: &Arc<ClientQuotaStore>) {
        if Arc::ptr_eq(&self.store.load(), store) {
            return;
        }
        let was_empty = self.version.load(Ordering::Acquire) == 0;
        if was_empty && store.is_empty() {
            self.store.store(store.clone());
            return;
        }
        self.store.store(store.clone());
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The quotas of `user` (the principal's name) with `client_id`, through the connection's
    /// cache; `None` when no quota applies to this client.
    pub fn for_client(
        &self,
        cache: &mut ConnectionQuotas,
        user: &str,
        client_id: Option<&str>,
    ) -> Option<Arc<ClientQuotas>> {
        let version = self.version.load(Ordering::Acquire);
        if version == 0 {
            return None;
        }
        let client_id = client_id.unwrap_or("");
        if cache.version != version || cache.client_id != client_id || cache.user != user {
            let store = self.store.load();
            let now = self.now_ms();
            let bound = |t: QuotaType| {
                store.resolve(t.key(), user, client_id).map(|r| Bound {
                    sensor: self.sensors[t as usize].get_or_create(&r.user_tag, &r.client_tag, now),
                    limit: r.limit,
                    cfg: self.cfg,
                })
            };
            let quotas = ClientQuotas {
                produce: bound(QuotaType::Produce),
                fetch: bound(QuotaType::Fetch),
                request: bound(QuotaType::Request),
            };
            let any =
                quotas.produce.is_some() || quotas.fetch.is_some() || quotas.request.is_some();
            *cache = ConnectionQuotas {
                version,
                user: user.to_string(),
                client_id: client_id.to_string(),
                quotas: any.then(|| Arc::new(quotas)),
            };
        }
        cache.quotas.clone()
    }

    /// The sensors of one type, most recently used first, at most `max`.
    pub fn readings(&self, t: QuotaType, max: usize) -> Vec<SensorReading> {
        self.sensors[t as usize].readings(&self.cfg, self.now_ms(), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::client_quotas::{ClientQuotaRecord, EntityName, QuotaEntity, QuotaValue};

    fn store(
        records: &[(Option<EntityName>, Option<EntityName>, &str, f64)],
    ) -> Arc<ClientQuotaStore> {
        let mut s = ClientQuotaStore::default();
        for (u, c, k, v) in records {
            s.apply(&ClientQuotaRecord {
                entity: QuotaEntity::new(u.clone(), c.clone()),
                key: (*k).into(),
                value: Some(QuotaValue(*v)),
            });
        }
        Arc::new(s)
    }

    #[test]
    fn no_quotas_cost_nothing_and_defaults_meter_each_client() {
        let q = QuotaManagers::default();
        let mut cache = ConnectionQuotas::default();
        q.update(&Arc::new(ClientQuotaStore::default()));
        assert!(q.for_client(&mut cache, "ANONYMOUS", Some("a")).is_none());
        q.update(&store(&[(
            None,
            Some(EntityName::Default),
            PRODUCER_BYTE_RATE,
            1000.0,
        )]));
        let a = q
            .for_client(&mut cache, "ANONYMOUS", Some("a"))
            .expect("quota");
        let produce = a.produce.as_ref().expect("produce quota");
        assert!(a.fetch.is_none() && a.request.is_none());
        assert_eq!(produce.limit(), 1000.0);
        assert_eq!(produce.max_value_in_window(), 10_000.0);
        // The same connection and client id: the cached handles.
        let again = q
            .for_client(&mut cache, "ANONYMOUS", Some("a"))
            .expect("quota");
        assert!(Arc::ptr_eq(&a, &again));
        // Another client id under the default quota has a sensor of its own.
        let mut other = ConnectionQuotas::default();
        let b = q
            .for_client(&mut other, "ANONYMOUS", Some("b"))
            .expect("quota");
        let now = q.now_ms();
        assert!(produce.record(20_000.0, now, i64::MAX) > 0);
        assert_eq!(
            b.produce.as_ref().expect("b").record(100.0, now, i64::MAX),
            0
        );
        let readings = q.readings(QuotaType::Produce, 10);
        assert_eq!(readings.len(), 2);
        // Removing every quota: nothing applies any more.
        q.update(&Arc::new(ClientQuotaStore::default()));
        assert!(q.for_client(&mut cache, "ANONYMOUS", Some("a")).is_none());
    }
}
