//! Dynamic broker configs (Kafka's KIP-226, `DynamicBrokerConfig`): which broker keys may be
//! changed at run time, how a change is validated, and the settings in effect on this broker
//! with Kafka's precedence: dynamic per-broker > dynamic cluster default > static (file,
//! environment) > Kafka's default. Topic overrides sit above all of these (`TopicDefaults`).
//!
//! The values live in the metadata image (`meta::broker_configs`). [`DynamicConfig`] turns the
//! image's current ones into an immutable [`EffectiveConfig`] once per change and hands out the
//! same `Arc` until the next: readers take a lock-free snapshot, never a lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::BROKER_SETTINGS;
use crate::log::config::{
    broker_synonyms, validate_topic_config, TopicConfigDef, TopicDefaults, SOURCE_DEFAULT_CONFIG,
    SOURCE_DYNAMIC_BROKER_CONFIG, SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG,
    SOURCE_STATIC_BROKER_CONFIG, SOURCE_TOPIC_CONFIG, TOPIC_CONFIGS,
};
use crate::meta::broker_configs::DynamicBrokerConfigs;

/// How a dynamic key's value is checked.
#[derive(Debug, Clone, Copy)]
enum Check {
    Int { min: i64 },
    Long { min: i64 },
    Double { min: f64 },
    Bool,
    Text,
}

/// A dynamic broker key that is not a topic config's default: name, Kafka's default, check,
/// whether DescribeConfigs lists it when unset, and what it does in Gregor.
pub struct DynamicKey {
    pub name: &'static str,
    pub default: &'static str,
    check: Check,
    /// Kafka lists the replication quota keys only once they are set.
    pub listed: bool,
    pub doc: &'static str,
}

const fn key(
    name: &'static str,
    default: &'static str,
    check: Check,
    doc: &'static str,
) -> DynamicKey {
    DynamicKey {
        name,
        default,
        check,
        listed: true,
        doc,
    }
}

const fn quota(name: &'static str, doc: &'static str) -> DynamicKey {
    DynamicKey {
        name,
        default: "9223372036854775807",
        check: Check::Long { min: 0 },
        listed: false,
        doc,
    }
}

/// Kafka 4.3's dynamically updatable broker keys other than the topic-config defaults
/// (`DynamicBrokerConfig.AllDynamicConfigs`: the log cleaner's, the thread pools', the socket
/// server's, the producer state's and the replication quotas), as far as Gregor takes them.
/// Listener and SSL keys are dynamic per broker in Kafka but static in Gregor.
#[rustfmt::skip]
pub const DYNAMIC_KEYS: &[DynamicKey] = &[
    key("background.threads", "10", Check::Int { min: 1 },
        "Kafka's background thread pool. Stored and reported; no effect in Gregor, whose background work runs on its async runtime."),
    key("log.cleaner.backoff.ms", "15000", Check::Long { min: 0 },
        "The amount of time to sleep when there are no logs to clean. A dynamic change applies from the cleaner's next round."),
    key("log.cleaner.dedupe.buffer.size", "134217728", Check::Long { min: 1024 },
        "The most memory one cleaning pass's offset map may take. A dynamic change applies from the cleaner's next pass."),
    key("log.cleaner.io.buffer.load.factor", "0.9", Check::Double { min: 0.0 },
        "How full the cleaner's offset map may get. A dynamic change applies from the cleaner's next pass."),
    key("log.cleaner.io.buffer.size", "524288", Check::Int { min: 0 },
        "The cleaner's I/O buffer size. Stored and reported; no effect in Gregor, whose cleaner reads memory-mapped segments."),
    key("log.cleaner.io.max.bytes.per.second", "1.7976931348623157E308", Check::Double { min: f64::MIN },
        "The cleaner's I/O throttle. Stored and reported; no effect in Gregor, whose cleaner is not throttled."),
    key("log.cleaner.threads", "1", Check::Int { min: 0 },
        "The number of cleaner threads. Stored and reported; no effect in Gregor, whose cleaner cleans one log at a time."),
    key("max.connection.creation.rate", "2147483647", Check::Int { min: 0 },
        "The connections per second the broker accepts. Stored and reported; no effect in Gregor."),
    key("max.connections", "2147483647", Check::Int { min: 0 },
        "The maximum number of client connections. Gregor reads it at startup: a dynamic value applies from the next restart."),
    key("max.connections.per.ip", "2147483647", Check::Int { min: 0 },
        "The maximum number of connections from one address. Gregor reads it at startup: a dynamic value applies from the next restart."),
    key("max.connections.per.ip.overrides", "", Check::Text,
        "Per-address overrides of max.connections.per.ip. Gregor reads it at startup: a dynamic value applies from the next restart."),
    key("num.io.threads", "8", Check::Int { min: 1 },
        "Kafka's request handler threads. Stored and reported; no effect in Gregor, whose handlers run on its async runtime."),
    key("num.network.threads", "3", Check::Int { min: 1 },
        "Kafka's network threads. Stored and reported; no effect in Gregor, whose connections run on its async runtime."),
    key("num.recovery.threads.per.data.dir", "2", Check::Int { min: 1 },
        "Kafka's log recovery threads. Stored and reported; no effect in Gregor, which opens up to 8 logs at once."),
    key("num.replica.fetchers", "1", Check::Int { min: 1 },
        "Kafka's fetcher threads per source broker. Stored and reported; no effect in Gregor, which has one fetcher per leader followed."),
    key("producer.id.expiration.ms", "86400000", Check::Int { min: 1 },
        "How long a producer id is kept after its last write. A dynamic change applies from the next expiry check."),
    key("transaction.partition.verification.enable", "true", Check::Bool,
        "Verify with the transaction coordinator that a partition is in the transaction before a producer's first transactional write to it (KIP-890). Gregor takes it from the static settings only: a dynamic value is stored and reported, with no effect."),
    quota("follower.replication.throttled.rate",
        "The replication rate limit, in bytes per second, of a follower's throttled replicas (follower.replication.throttled.replicas). A dynamic change applies at once."),
    quota("leader.replication.throttled.rate",
        "The replication rate limit, in bytes per second, of a leader's throttled replicas (leader.replication.throttled.replicas). A dynamic change applies at once."),
    quota("replica.alter.log.dirs.io.max.bytes.per.second",
        "Kafka's limit on moving replicas between log dirs. Stored and reported; no effect in Gregor, which has one log dir."),
];

/// Static-only keys Gregor knows besides `BROKER_SETTINGS` (as Kafka: not dynamic).
const STATIC_ONLY: &[&str] = &[
    "broker.id",
    "node.id",
    "log.dirs",
    "log.dir",
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
    "log.cleaner.enable",
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "log.roll.jitter.hours",
];

pub fn dynamic_key(name: &str) -> Option<&'static DynamicKey> {
    DYNAMIC_KEYS.iter().find(|k| k.name == name)
}

/// The topic config whose broker-wide default `name` is (`log.segment.bytes` ->
/// `segment.bytes`). Only the primary key: `log.retention.hours` is not dynamic in Kafka.
pub fn topic_config_of(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| !d.broker_key.is_empty() && d.broker_key == name)
}

/// Whether Kafka lets `name` change at run time (`DynamicBrokerConfig.AllDynamicConfigs`).
pub fn is_dynamic(name: &str) -> bool {
    topic_config_of(name).is_some() || dynamic_key(name).is_some()
}

/// A key Kafka would take only statically: a broker setting Gregor knows that is not dynamic.
fn is_static_only(name: &str) -> bool {
    !is_dynamic(name)
        && (BROKER_SETTINGS.iter().any(|(n, _, _, _)| *n == name)
            || STATIC_ONLY.contains(&name)
            || super::SECURITY_KEYS.contains(&name)
            || name.starts_with("listener.name.")
            || name.starts_with("ssl.")
            || name.starts_with("sasl."))
}

/// Whether a type is known for `name` (else, as Kafka does for custom keys, it is stored but
/// described as sensitive, without its value).
pub fn is_known(name: &str) -> bool {
    is_dynamic(name) || is_static_only(name)
}

/// Kafka's `brokerConfigSynonyms`: the keys that set the same thing, highest precedence first.
pub fn synonym_names(name: &str) -> Vec<&str> {
    match name {
        "log.roll.ms" | "log.roll.hours" => vec!["log.roll.ms", "log.roll.hours"],
        "log.roll.jitter.ms" | "log.roll.jitter.hours" => {
            vec!["log.roll.jitter.ms", "log.roll.jitter.hours"]
        }
        "log.flush.interval.ms" => vec!["log.flush.interval.ms", "log.flush.scheduler.interval.ms"],
        "log.retention.ms" | "log.retention.minutes" | "log.retention.hours" => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        other => vec![other],
    }
}

/// Kafka's default of a broker key, if it has one (`log.retention.ms` has none: hours rule).
pub fn kafka_default(name: &str) -> Option<&'static str> {
    if let Some((_, d, _, _)) = BROKER_SETTINGS.iter().find(|(n, _, _, _)| *n == name) {
        return Some(d);
    }
    if let Some(k) = dynamic_key(name) {
        return k.listed.then_some(k.default);
    }
    TOPIC_CONFIGS
        .iter()
        .flat_map(broker_synonyms)
        .find(|(k, _)| *k == name)
        .and_then(|(_, d)| d)
}

/// Why a change is refused: INVALID_REQUEST (as Kafka's broker-side validation answers) or
/// INVALID_CONFIG (an APPEND or SUBTRACT on a key that is not a list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    InvalidRequest(String),
    InvalidConfig(String),
}

/// Checks the whole new config set of one resource as Kafka's `DynamicBrokerConfig.validate`
/// does: first that every key may change at run time, then each value.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), Refusal> {
    let fixed: Vec<&str> = configs
        .keys()
        .map(String::as_str)
        .filter(|k| is_static_only(k))
        .collect();
    if !fixed.is_empty() {
        return Err(Refusal::InvalidRequest(format!(
            "Cannot update these configs dynamically: [{}]",
            fixed.join(", ")
        )));
    }
    for (k, v) in configs {
        validate_value(k, v).map_err(Refusal::InvalidRequest)?;
    }
    Ok(())
}

/// One value, with Kafka's message (`Invalid value X for configuration K: ...`).
pub fn validate_value(name: &str, value: &str) -> Result<(), String> {
    if let Some(def) = topic_config_of(name) {
        return validate_topic_config(def.name, value).map_err(|m| {
            m.replacen(
                &format!("for configuration {}", def.name),
                &format!("for configuration {name}"),
                1,
            )
        });
    }
    let Some(k) = dynamic_key(name) else {
        return Ok(()); // a custom key: Kafka keeps it as given
    };
    let bad = |why: &str| {
        Err(format!(
            "Invalid value {value} for configuration {name}: {why}"
        ))
    };
    let v = value.trim();
    match k.check {
        Check::Int { min } => match v.parse::<i32>() {
            Ok(n) if i64::from(n) >= min => Ok(()),
            Ok(_) => bad(&format!("Value must be at least {min}")),
            Err(_) => bad("Not a number of type INT"),
        },
        Check::Long { min } => match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            Ok(_) => bad(&format!("Value must be at least {min}")),
            Err(_) => bad("Not a number of type LONG"),
        },
        Check::Double { min } => match v.parse::<f64>() {
            Ok(n) if n >= min && n.is_finite() => Ok(()),
            Ok(_) => bad(&format!("Value must be at least {min}")),
            Err(_) => bad("Not a number of type DOUBLE"),
        },
        Check::Bool => match v {
            "true" | "false" => Ok(()),
            _ => bad("Expected value to be either true or false"),
        },
        Check::Text => Ok(()),
    }
}

/// DescribeConfigs' type of a dynamic key (INT 3, LONG 5, DOUBLE 6, BOOLEAN 1, STRING 2).
pub fn dynamic_key_type(k: &DynamicKey) -> i8 {
    match k.check {
        Check::Bool => 1,
        Check::Text => 2,
        Check::Int { .. } => 3,
        Check::Long { .. } => 5,
        Check::Double { .. } => 6,
    }
}

/// Whether APPEND and SUBTRACT apply to a broker key (list-typed).
pub fn is_list(name: &str) -> bool {
    topic_config_of(name).is_some_and(|d| d.is_list())
}

/// One synonym as DescribeConfigs reports it: name, value, source.
pub type Synonym = (String, String, i8);

/// The broker settings in effect here, built from one version of the dynamic configs.
pub struct EffectiveConfig {
    /// What this was built from (compared by pointer to know when to rebuild).
    pub dynamic: Arc<DynamicBrokerConfigs>,
    static_raw: Arc<BTreeMap<String, String>>,
    /// The valid dynamic values of the cluster default and of this broker.
    pub cluster_default: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
    /// Static settings with the dynamic layers over them (a key replaces its synonyms).
    effective: BTreeMap<String, String>,
    /// Topic config defaults from the effective settings.
    pub topic_defaults: TopicDefaults,
}

/// Keeps dynamic values that pass validation (Kafka ignores invalid stored ones, logging them).
fn valid_layer(layer: &BTreeMap<String, String>, what: &str) -> BTreeMap<String, String> {
    layer
        .iter()
        .filter(|(k, v)| {
            let ok = !is_static_only(k) && validate_value(k, v).is_ok();
            if !ok {
                tracing::warn!(key = %k, "ignoring invalid dynamic {what} config");
            }
            ok
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Kafka's `overrideProps`: each key replaces its synonyms, so a dynamic `log.retention.ms`
/// hides a static `log.retention.hours`.
fn override_props(props: &mut BTreeMap<String, String>, over: &BTreeMap<String, String>) {
    for (k, v) in over {
        for s in synonym_names(k) {
            props.remove(s);
        }
        props.insert(k.clone(), v.clone());
    }
}

impl EffectiveConfig {
    pub fn build(
        static_raw: Arc<BTreeMap<String, String>>,
        node_id: i32,
        dynamic: Arc<DynamicBrokerConfigs>,
    ) -> Self {
        let cluster_default = valid_layer(dynamic.resource(None), "cluster default");
        let broker = valid_layer(dynamic.resource(Some(node_id)), "broker");
        let mut effective = (*static_raw).clone();
        override_props(&mut effective, &cluster_default);
        override_props(&mut effective, &broker);
        let topic_defaults = TopicDefaults::from_broker_settings(&effective)
            .or_else(|e| {
                tracing::warn!(error = %e, "dynamic broker configs give invalid topic defaults; using the static ones");
                TopicDefaults::from_broker_settings(&static_raw)
            })
            .unwrap_or_default();
        Self {
            dynamic,
            static_raw,
            cluster_default,
            broker,
            effective,
            topic_defaults,
        }
    }

    /// The value in effect: the highest layer that sets it, else Kafka's default.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.effective
            .get(name)
            .map(String::as_str)
            .or_else(|| kafka_default(name))
    }

    /// A setting parsed, or `fallback` when unset or unparsable.
    pub fn get<T: std::str::FromStr>(&self, name: &str, fallback: T) -> T {
        self.value(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(fallback)
    }

    /// The settings in effect, by Kafka's names (secrets included: never describe these).
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.effective
    }

    /// Kafka's `configSynonyms`: every layer's value of each synonym of `name`, highest layer
    /// first, from `name` itself on. `per_broker: false` keeps only the cluster default's.
    pub fn synonyms(&self, name: &str, per_broker: bool) -> Vec<Synonym> {
        let names = synonym_names(name);
        let mut out = Vec::new();
        let layers: [(&BTreeMap<String, String>, i8); 3] = [
            (&self.broker, SOURCE_DYNAMIC_BROKER_CONFIG),
            (&self.cluster_default, SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG),
            (&self.static_raw, SOURCE_STATIC_BROKER_CONFIG),
        ];
        for (layer, source) in layers {
            for n in &names {
                if let Some(v) = layer.get(*n) {
                    out.push((n.to_string(), v.clone(), source));
                }
            }
        }
        for n in &names {
            if let Some(d) = kafka_default(n) {
                out.push((n.to_string(), d.to_string(), SOURCE_DEFAULT_CONFIG));
            }
        }
        if !per_broker {
            out.retain(|s| s.2 == SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG);
        }
        let first = out.iter().position(|s| s.0 == name).unwrap_or(out.len());
        out.split_off(first)
    }

    /// Every topic config of a topic with these overrides: name, value in effect, source and
    /// synonyms (the override, then the broker key's), as Kafka's `createTopicConfigEntry`.
    pub fn describe_topic(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(&'static str, String, i8, Vec<Synonym>)> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| {
                let mut synonyms = Vec::new();
                let value = match overrides.get(d.name) {
                    Some(v) => {
                        synonyms.push((d.name.to_string(), v.clone(), SOURCE_TOPIC_CONFIG));
                        v.clone()
                    }
                    None => self
                        .topic_defaults
                        .get(d.name)
                        .unwrap_or(d.default)
                        .to_string(),
                };
                if !d.broker_key.is_empty() {
                    synonyms.extend(self.synonyms(d.broker_key, true));
                }
                let source = synonyms.first().map_or(SOURCE_DEFAULT_CONFIG, |s| s.2);
                (d.name, value, source, synonyms)
            })
            .collect()
    }

    /// The log cleaner's settings in effect (`log.cleaner.*`).
    pub fn cleaner(&self) -> Result<crate::log::cleaner::CleanerConfig, String> {
        crate::log::cleaner::CleanerConfig::from_broker_settings(&self.effective)
    }

    /// `leader.replication.throttled.rate` and `follower.replication.throttled.rate` in
    /// bytes per second, `None` when unset (unthrottled), for the replication throttles
    /// (`replica::throttle`).
    pub fn replication_throttled_rates(&self) -> (Option<i64>, Option<i64>) {
        let rate = |k: &str| {
            self.effective
                .get(k)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        (
            rate("leader.replication.throttled.rate"),
            rate("follower.replication.throttled.rate"),
        )
    }
}

/// Hands out the [`EffectiveConfig`] of the image's dynamic configs, rebuilt only when they
/// changed. Shared by the broker and the replica manager.
pub struct DynamicConfig {
    static_raw: Arc<BTreeMap<String, String>>,
    node_id: i32,
    current: ArcSwap<EffectiveConfig>,
}

impl DynamicConfig {
    pub fn new(static_raw: BTreeMap<String, String>, node_id: i32) -> Self {
        let static_raw = Arc::new(static_raw);
        let current = EffectiveConfig::build(static_raw.clone(), node_id, Arc::default());
        Self {
            static_raw,
            node_id,
            current: ArcSwap::from_pointee(current),
        }
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The settings in effect with `dynamic` (the current image's): lock-free when unchanged.
    pub fn current(&self, dynamic: &Arc<DynamicBrokerConfigs>) -> Arc<EffectiveConfig> {
        let cur = self.current.load_full();
        if Arc::ptr_eq(&cur.dynamic, dynamic) || *cur.dynamic == **dynamic {
            return cur;
        }
        let next = Arc::new(EffectiveConfig::build(
            self.static_raw.clone(),
            self.node_id,
            dynamic.clone(),
        ));
        self.current.store(next.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_follows_kafka() {
        assert_eq!(
            validate(&map(&[("num.partitions", "3")])),
            Err(Refusal::InvalidRequest(
                "Cannot update these configs dynamically: [num.partitions]".into()
            ))
        );
        assert!(validate(&map(&[("log.retention.hours", "1")])).is_err());
        assert_eq!(
            validate(&map(&[("log.segment.bytes", "abc")])),
            Err(Refusal::InvalidRequest(
                "Invalid value abc for configuration log.segment.bytes: Not a number of type INT"
                    .into()
            ))
        );
        assert_eq!(
            validate(&map(&[("log.segment.bytes", "100")])),
            Err(Refusal::InvalidRequest(
                "Invalid value 100 for configuration log.segment.bytes: Value must be at least 1048576".into()
            ))
        );
        assert!(validate(&map(&[("log.segment.bytes", "2000000")])).is_ok());
        assert!(
            validate(&map(&[("foo.bar", "1")])).is_ok(),
            "custom keys are kept"
        );
        assert!(validate(&map(&[("leader.replication.throttled.rate", "-1")])).is_err());
        assert!(validate(&map(&[("num.io.threads", "0")])).is_err());
        assert!(is_list("log.cleanup.policy") && !is_list("message.max.bytes"));
    }

    #[test]
    fn precedence_and_synonyms() {
        let static_raw = map(&[
            ("log.retention.hours", "100"),
            ("message.max.bytes", "2000"),
        ]);
        let mut d = DynamicBrokerConfigs {
            cluster_default: map(&[
                ("log.retention.ms", "3600000"),
                ("log.segment.bytes", "3000000"),
            ]),
            ..Default::default()
        };
        d.brokers
            .insert(1, map(&[("log.segment.bytes", "2000000")]));
        d.brokers.insert(2, map(&[("message.max.bytes", "10")]));
        let e = EffectiveConfig::build(Arc::new(static_raw), 1, Arc::new(d));
        let c = e.topic_defaults.resolve(&BTreeMap::new());
        assert_eq!(c.retention_ms, 3_600_000, "dynamic ms beats static hours");
        assert_eq!(c.segment_bytes, 2_000_000, "per-broker beats the default");
        assert_eq!(c.max_message_bytes, 2000, "broker 2's value is not ours");
        assert_eq!(
            e.synonyms("log.retention.ms", true),
            vec![
                (
                    "log.retention.ms".into(),
                    "3600000".into(),
                    SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG
                ),
                (
                    "log.retention.hours".into(),
                    "100".into(),
                    SOURCE_STATIC_BROKER_CONFIG
                ),
                (
                    "log.retention.hours".into(),
                    "168".into(),
                    SOURCE_DEFAULT_CONFIG
                ),
            ]
        );
        assert_eq!(
            e.synonyms("log.segment.bytes", false),
            vec![(
                "log.segment.bytes".into(),
                "3000000".into(),
                SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG
            )]
        );
        // The hours key is hidden by the dynamic ms key, as Kafka's overrideProps does.
        assert_eq!(e.value("log.retention.hours"), Some("168"));
        let topic = e.describe_topic(&map(&[("segment.bytes", "5000000")]));
        let row = |n: &str| topic.iter().find(|r| r.0 == n).cloned().expect("row");
        assert_eq!(row("retention.ms").1, "3600000");
        assert_eq!(row("retention.ms").2, SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG);
        assert_eq!(row("segment.bytes").2, SOURCE_TOPIC_CONFIG);
        assert_eq!(row("max.message.bytes").2, SOURCE_STATIC_BROKER_CONFIG);
        assert_eq!(row("flush.messages").2, SOURCE_DEFAULT_CONFIG);
    }

    #[test]
    fn replication_throttle_rates_from_every_layer() {
        let build = |d: DynamicBrokerConfigs, static_raw: &[(&str, &str)]| {
            EffectiveConfig::build(Arc::new(map(static_raw)), 1, Arc::new(d))
                .replication_throttled_rates()
        };
        assert_eq!(build(Default::default(), &[]), (None, None), "unthrottled");
        let static_leader = [("leader.replication.throttled.rate", "500")];
        assert_eq!(build(Default::default(), &static_leader), (Some(500), None));
        let mut d = DynamicBrokerConfigs {
            cluster_default: map(&[
                ("leader.replication.throttled.rate", "1000"),
                ("follower.replication.throttled.rate", "2000"),
            ]),
            ..Default::default()
        };
        // The cluster default (kafka-configs --entity-default) beats the static value ...
        assert_eq!(build(d.clone(), &static_leader), (Some(1000), Some(2000)));
        // ... and this broker's own value (--entity-name 1, reassign --throttle) beats both;
        // another broker's is not ours.
        d.brokers
            .insert(1, map(&[("follower.replication.throttled.rate", "300")]));
        d.brokers
            .insert(2, map(&[("leader.replication.throttled.rate", "7")]));
        assert_eq!(build(d, &static_leader), (Some(1000), Some(300)));
    }

    #[test]
    fn invalid_stored_values_are_ignored() {
        let d = DynamicBrokerConfigs {
            cluster_default: map(&[("log.segment.bytes", "12"), ("num.partitions", "4")]),
            ..Default::default()
        };
        let e = EffectiveConfig::build(Arc::new(BTreeMap::new()), 1, Arc::new(d));
        assert!(e.cluster_default.is_empty());
        assert_eq!(
            e.topic_defaults.resolve(&BTreeMap::new()).segment_bytes,
            1 << 30
        );
    }

    #[test]
    fn cache_rebuilds_only_on_change() {
        let cache = DynamicConfig::new(BTreeMap::new(), 1);
        let none = Arc::new(DynamicBrokerConfigs::default());
        let a = cache.current(&none);
        assert!(Arc::ptr_eq(&a, &cache.current(&none)));
        let d = DynamicBrokerConfigs {
            cluster_default: map(&[("message.max.bytes", "100")]),
            ..Default::default()
        };
        let b = cache.current(&Arc::new(d));
        assert_eq!(
            b.topic_defaults.resolve(&BTreeMap::new()).max_message_bytes,
            100
        );
    }
}
