//! Topic-level log configuration: Kafka's topic config keys, their broker-level defaults, and
//! validation of override values into one resolved `LogConfig`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The resolved settings a partition log runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: usize,
    pub segment_ms: i64,
    pub segment_index_bytes: usize,
    pub index_interval_bytes: usize,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// fsync after this many messages (Kafka's default, i64::MAX, means never force).
    pub flush_messages: i64,
    /// fsync when this much time passed since the last flush (i64::MAX means never force).
    pub flush_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub min_insync_replicas: i32,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the latest record per key.
    pub compact: bool,
    /// `cleanup.policy` contains `delete`: time and size retention apply.
    pub delete: bool,
    /// How long a tombstone stays readable after the cleaner first saw it (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    /// `gregor.trace.headers`: a traced produce may decompress the start of a compressed
    /// batch to read its first record's `traceparent`.
    pub trace_headers: bool,
}

impl LogConfig {
    /// The age after which the active segment is rolled: `segment.ms`, or for compacted logs
    /// at most `max.compaction.lag.ms` (the active segment is never cleaned), as in Kafka.
    pub fn max_segment_ms(&self) -> i64 {
        if self.compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}

/// How a key's value is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer with an inclusive lower bound.
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A comma-separated list of choices.
    List(&'static [&'static str]),
    Bool,
    /// A fraction between 0 and 1.
    Ratio,
}

/// One topic config key: its name, the broker config key that supplies its default, Kafka's
/// default value, its type, and its documentation.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub broker_key: &'static str,
    pub default: &'static str,
    kind: Kind,
    pub doc: &'static str,
}

const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Kafka 4's lower bound for `segment.bytes` (tests use `internal.segment.bytes` instead).
pub const MIN_SEGMENT_BYTES: i64 = 1024 * 1024;

/// Every topic config key Gregor accepts, with Kafka's defaults.
#[rustfmt::skip]
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("cleanup.policy", "log.cleanup.policy", "delete", Kind::List(&["delete", "compact"]),
        "The retention policy for old log segments: delete (by time or size) or compact."),
    def("compression.type", "compression.type", "producer", Kind::Choice(COMPRESSION_TYPES),
        "The final compression type for the topic; 'producer' keeps the codec the producer used."),
    def("delete.retention.ms", "log.cleaner.delete.retention.ms", "86400000", Kind::Long { min: 0 },
        "How long delete tombstones are kept for compacted topics."),
    def("file.delete.delay.ms", "log.segment.delete.delay.ms", "60000", Kind::Long { min: 0 },
        "The time to wait before deleting a file from the filesystem."),
    def("flush.messages", "log.flush.interval.messages", "9223372036854775807", Kind::Long { min: 1 },
        "Force an fsync of the log after this many messages (1: before every acknowledgement)."),
    def("flush.ms", "log.flush.interval.ms", "9223372036854775807", Kind::Long { min: 0 },
        "Force an fsync of the log when this much time has passed since the last one."),
    def("gregor.trace.headers", "gregor.trace.headers", "false", Kind::Bool,
        "Gregor: with OpenTelemetry tracing on, decompress the start of each compressed produced batch to find its first record's traceparent header (uncompressed batches are always read in place)."),
    def("index.interval.bytes", "log.index.interval.bytes", "4096", Kind::Int { min: 0 },
        "How frequently an entry is added to the offset index, in bytes of log."),
    def("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", "9223372036854775807", Kind::Long { min: 1 },
        "The maximum time a message remains ineligible for compaction."),
    def("max.message.bytes", "message.max.bytes", "1048588", Kind::Int { min: 0 },
        "The largest record batch size allowed, after compression."),
    def("message.timestamp.type", "log.message.timestamp.type", "CreateTime", Kind::Choice(&["CreateTime", "LogAppendTime"]),
        "Whether the timestamp in the message is the producer's create time or the broker's log append time."),
    def("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", "0.5", Kind::Ratio,
        "The minimum ratio of dirty log to total log for a log to be eligible for cleaning."),
    def("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", "0", Kind::Long { min: 0 },
        "The minimum time a message remains uncompacted in the log."),
    def("min.insync.replicas", "min.insync.replicas", "1", Kind::Int { min: 1 },
        "The minimum number of in-sync replicas that must acknowledge a write with acks=all."),
    def("retention.bytes", "log.retention.bytes", "-1", Kind::Long { min: -1 },
        "The maximum size a partition's log can grow to before old segments are deleted (-1: no limit)."),
    def("retention.ms", "log.retention.ms", "604800000", Kind::Long { min: -1 },
        "The maximum time a log segment is retained before it is deleted (-1: no time limit)."),
    def("segment.bytes", "log.segment.bytes", "1073741824", Kind::Int { min: MIN_SEGMENT_BYTES },
        "The segment file size for the log; retention and cleaning work a segment at a time."),
    def("segment.index.bytes", "log.index.size.max.bytes", "10485760", Kind::Int { min: 4 },
        "The size of the index that maps offsets to file positions."),
    def("segment.jitter.ms", "log.roll.jitter.ms", "0", Kind::Long { min: 0 },
        "The maximum random jitter subtracted from segment.ms to avoid thundering herds of rolls."),
    def("segment.ms", "log.roll.ms", "604800000", Kind::Long { min: 1 },
        "The time after which a segment is rolled even if it is not full."),
    def("unclean.leader.election.enable", "unclean.leader.election.enable", "false", Kind::Bool,
        "Whether replicas not in the ISR may be elected leader as a last resort, at the risk of data loss."),
];

/// Topic configs that are accepted but never described, as Kafka's internal ones.
#[rustfmt::skip]
pub const INTERNAL_TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def("internal.segment.bytes", "", "", Kind::Int { min: 14 },
        "Overrides segment.bytes without its lower bound (for tests)."),
];

const fn def(
    name: &'static str,
    broker_key: &'static str,
    default: &'static str,
    kind: Kind,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        broker_key,
        default,
        kind,
        doc,
    }
}

impl TopicConfigDef {
    /// DescribeConfigs' config type: BOOLEAN 1, STRING 2, INT 3, LONG 5, DOUBLE 6, LIST 7.
    pub fn config_type(&self) -> i8 {
        match self.kind {
            Kind::Bool => 1,
            Kind::Choice(_) => 2,
            Kind::Int { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Ratio => 6,
            Kind::List(_) => 7,
        }
    }

    /// Whether APPEND and SUBTRACT apply (list-typed configs).
    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::List(_))
    }
}

pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .chain(INTERNAL_TOPIC_CONFIGS)
        .find(|d| d.name == name)
}

/// Checks one topic config override. The error text goes back to the client with
/// INVALID_CONFIG.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = topic_config_def(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let bad = || format!("Invalid value {value} for configuration {name}");
    match def.kind {
        Kind::Long { min } => match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            Ok(_) => Err(format!("{}: Value must be at least {min}", bad())),
            Err(_) => Err(format!("{}: Not a number of type LONG", bad())),
        },
        Kind::Int { min } => match value.trim().parse::<i32>() {
            Ok(v) if v as i64 >= min => Ok(()),
            Ok(_) => Err(format!("{}: Value must be at least {min}", bad())),
            Err(_) => Err(format!("{}: Not a number of type INT", bad())),
        },
        Kind::Choice(options) => {
            if options.contains(&value.trim()) {
                Ok(())
            } else {
                Err(format!(
                    "{}: String must be one of: {}",
                    bad(),
                    options.join(", ")
                ))
            }
        }
        Kind::List(options) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if !items.is_empty() && items.iter().all(|i| options.contains(i)) {
                Ok(())
            } else {
                Err(format!(
                    "{}: must be a list of {}",
                    bad(),
                    options.join(", ")
                ))
            }
        }
        Kind::Bool => match value.trim() {
            "true" | "false" => Ok(()),
            _ => Err(format!(
                "{}: Expected value to be either true or false",
                bad()
            )),
        },
        Kind::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!("{}: Value must be between 0 and 1", bad())),
        },
    }
}

/// The broker settings behind a topic config, most specific first, with Kafka's default for
/// those that have one (`retention.ms` falls back to `log.retention.ms`, then
/// `log.retention.minutes`, then `log.retention.hours`, whose default is 168).
pub fn broker_synonyms(def: &TopicConfigDef) -> Vec<(&'static str, Option<&'static str>)> {
    match def.name {
        "retention.ms" => vec![
            ("log.retention.ms", None),
            ("log.retention.minutes", None),
            ("log.retention.hours", Some("168")),
        ],
        "segment.ms" => vec![("log.roll.ms", None), ("log.roll.hours", Some("168"))],
        _ => vec![(def.broker_key, Some(def.default))],
    }
}

/// Checks a whole set of topic overrides: every key and value, and the combinations Kafka
/// refuses.
pub fn validate_topic_overrides(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        validate_topic_config(k, v)?;
    }
    let long = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(format!(
                "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
            ));
        }
    }
    Ok(())
}

/// Broker-wide defaults for topic configs, keyed by topic config name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicDefaults {
    values: BTreeMap<&'static str, String>,
    /// Topic config names whose default the broker settings changed.
    from_broker: std::collections::BTreeSet<&'static str>,
}

/// Kafka's DescribeConfigs/CreateTopics config sources.
pub const SOURCE_TOPIC_CONFIG: i8 = 1;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

impl TopicDefaults {
    /// Kafka's defaults, overridden by broker config values (keyed by the broker key or the
    /// topic key).
    pub fn from_broker_settings(settings: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut from_broker = std::collections::BTreeSet::new();
        for def in TOPIC_CONFIGS {
            if settings.contains_key(def.broker_key) || settings.contains_key(def.name) {
                from_broker.insert(def.name);
            }
            let v = settings
                .get(def.broker_key)
                .or_else(|| settings.get(def.name))
                .cloned()
                .unwrap_or_else(|| def.default.to_string());
            validate_topic_config(def.name, &v)?;
            values.insert(def.name, v);
        }
        // Kafka derives log.retention.ms from log.retention.hours / minutes when unset.
        if !settings.contains_key("log.retention.ms") {
            if let Some(m) = settings.get("log.retention.minutes") {
                let m: i64 = m.parse().map_err(|_| "log.retention.minutes".to_string())?;
                values.insert("retention.ms", (m * 60_000).to_string());
                from_broker.insert("retention.ms");
            } else if let Some(h) = settings.get("log.retention.hours") {
                let h: i64 = h.parse().map_err(|_| "log.retention.hours".to_string())?;
                values.insert("retention.ms", (h * 3_600_000).to_string());
                from_broker.insert("retention.ms");
            }
        }
        if !settings.contains_key("log.roll.ms") {
            if let Some(h) = settings.get("log.roll.hours") {
                let h: i64 = h.parse().map_err(|_| "log.roll.hours".to_string())?;
                values.insert("segment.ms", (h * 3_600_000).to_string());
                from_broker.insert("segment.ms");
            }
        }
        Ok(Self {
            values,
            from_broker,
        })
    }

    /// The broker-level value of a topic config, if the broker settings set it.
    pub fn broker_value(&self, name: &str) -> Option<&str> {
        self.from_broker
            .contains(name)
            .then(|| self.get(name))
            .flatten()
    }

    /// Every topic config with its effective value and source, given a topic's overrides.
    pub fn describe(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(&'static str, String, i8)> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| match overrides.get(d.name) {
                Some(v) => (d.name, v.clone(), SOURCE_TOPIC_CONFIG),
                None => {
                    let source = if self.from_broker.contains(d.name) {
                        SOURCE_STATIC_BROKER_CONFIG
                    } else {
                        SOURCE_DEFAULT_CONFIG
                    };
                    (
                        d.name,
                        self.get(d.name).unwrap_or(d.default).to_string(),
                        source,
                    )
                }
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Resolves a topic's overrides over these defaults.
    pub fn resolve(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let get = |k: &str| -> &str {
            overrides
                .get(k)
                .map(String::as_str)
                .or_else(|| self.get(k))
                .unwrap_or("")
        };
        let long = |k: &str, fallback: i64| get(k).trim().parse::<i64>().unwrap_or(fallback);
        LogConfig {
            segment_bytes: overrides
                .get("internal.segment.bytes")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or_else(|| long("segment.bytes", 1 << 30))
                .max(14) as usize,
            segment_ms: long("segment.ms", 604_800_000),
            segment_index_bytes: long("segment.index.bytes", 10 << 20).max(12) as usize,
            index_interval_bytes: long("index.interval.bytes", 4096).max(0) as usize,
            max_message_bytes: long("max.message.bytes", 1_048_588).max(0) as usize,
            timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            flush_messages: long("flush.messages", i64::MAX),
            flush_ms: long("flush.ms", i64::MAX),
            retention_ms: long("retention.ms", 604_800_000),
            retention_bytes: long("retention.bytes", -1),
            min_insync_replicas: long("min.insync.replicas", 1) as i32,
            compact: policy_has(get("cleanup.policy"), "compact"),
            delete: policy_has(get("cleanup.policy"), "delete"),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms", 0).max(0),
            max_compaction_lag_ms: long("max.compaction.lag.ms", i64::MAX).max(1),
            trace_headers: get("gregor.trace.headers")
                .trim()
                .eq_ignore_ascii_case("true"),
        }
    }
}

/// Whether a `cleanup.policy` list names `policy`.
fn policy_has(list: &str, policy: &str) -> bool {
    list.split(',').any(|p| p.trim() == policy)
}

impl Default for LogConfig {
    fn default() -> Self {
        TopicDefaults::from_broker_settings(&BTreeMap::new())
            .expect("Kafka defaults are valid")
            .resolve(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_defaults() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.max_message_bytes, 1_048_588);
        assert_eq!(c.flush_messages, i64::MAX);
        assert_eq!(c.retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(c.timestamp_type, TimestampType::CreateTime);
    }

    #[test]
    fn overrides_and_validation() {
        let mut s = BTreeMap::new();
        s.insert("log.retention.hours".to_string(), "1".to_string());
        s.insert("log.segment.bytes".to_string(), "2097152".to_string());
        let d = TopicDefaults::from_broker_settings(&s).expect("valid");
        let mut o = BTreeMap::new();
        o.insert("flush.messages".to_string(), "1".to_string());
        let c = d.resolve(&o);
        assert_eq!(c.retention_ms, 3_600_000);
        assert_eq!(c.segment_bytes, 2097152);
        assert_eq!(c.flush_messages, 1);
        assert!(validate_topic_config("flush.messages", "0").is_err());
        assert!(validate_topic_config("segment.bytes", "abc").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("no.such.key", "1").is_err());
    }

    #[test]
    fn cleanup_policy_and_compaction_settings() {
        let d = LogConfig::default();
        assert!(d.delete && !d.compact);
        assert_eq!(d.delete_retention_ms, 86_400_000);
        assert_eq!(d.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(d.max_segment_ms(), d.segment_ms);
        let defaults = TopicDefaults::from_broker_settings(&BTreeMap::new()).expect("defaults");
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        o.insert("min.cleanable.dirty.ratio".to_string(), "0.1".to_string());
        o.insert("max.compaction.lag.ms".to_string(), "60000".to_string());
        // A compacted topic is accepted now that the log cleaner exists.
        assert_eq!(validate_topic_overrides(&o), Ok(()));
        let c = defaults.resolve(&o);
        assert!(c.compact && !c.delete);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(c.max_segment_ms(), 60_000);
        o.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        let c = defaults.resolve(&o);
        assert!(c.compact && c.delete);
        o.insert("min.compaction.lag.ms".to_string(), "60001".to_string());
        assert!(validate_topic_overrides(&o).is_err());
    }
}
