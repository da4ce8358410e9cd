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
    /// CreateTime timestamps may be at most this far ahead of the broker's clock
    /// (`message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
    /// ... and at most this far behind it (`message.timestamp.before.max.ms`).
    pub timestamp_before_max_ms: i64,
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
    /// Checks a CreateTime batch's timestamps against the broker's clock, as Kafka's
    /// `message.timestamp.{before,after}.max.ms` do: from the batch header (its first and its
    /// max timestamp), so nothing is decompressed. Returns the offending timestamp and the
    /// accepted range.
    pub fn check_timestamps(
        &self,
        first_ms: i64,
        max_ms: i64,
        now_ms: i64,
    ) -> Result<(), (i64, i64, i64)> {
        if self.timestamp_type != TimestampType::CreateTime {
            return Ok(());
        }
        let earliest = now_ms.saturating_sub(self.timestamp_before_max_ms);
        let latest = now_ms.saturating_add(self.timestamp_after_max_ms);
        // -1 is "no timestamp", never checked
        for ts in [first_ms, max_ms] {
            if ts != -1 && (ts < earliest || ts > latest) {
                return Err((ts, earliest, latest));
            }
        }
        Ok(())
    }

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
    /// An integer in [min, max], or the one value `or` (a codec level's "the codec's default").
    Level {
        min: i64,
        max: i64,
        or: Option<i64>,
    },
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs.
    ThrottledReplicas,
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
    def("compression.gzip.level", "compression.gzip.level", "-1", Kind::Level { min: 1, max: 9, or: Some(-1) },
        "The gzip level when compression.type is gzip. No effect in Gregor: batches are stored as the producer compressed them."),
    def("compression.lz4.level", "compression.lz4.level", "9", Kind::Level { min: 1, max: 17, or: None },
        "The lz4 level when compression.type is lz4. No effect in Gregor: batches are stored as the producer compressed them."),
    def("compression.type", "compression.type", "producer", Kind::Choice(COMPRESSION_TYPES),
        "The final compression type for the topic; 'producer' keeps the codec the producer used. Gregor stores every batch as the producer compressed it, whatever this says."),
    def("compression.zstd.level", "compression.zstd.level", "3", Kind::Level { min: -131072, max: 22, or: None },
        "The zstd level when compression.type is zstd. No effect in Gregor: batches are stored as the producer compressed them."),
    def("delete.retention.ms", "log.cleaner.delete.retention.ms", "86400000", Kind::Long { min: 0 },
        "How long delete tombstones are kept for compacted topics."),
    def("file.delete.delay.ms", "log.segment.delete.delay.ms", "60000", Kind::Long { min: 0 },
        "The time to wait before deleting a file from the filesystem."),
    def("flush.messages", "log.flush.interval.messages", "9223372036854775807", Kind::Long { min: 1 },
        "Force an fsync of the log after this many messages (1: before every acknowledgement)."),
    def("flush.ms", "log.flush.interval.ms", "9223372036854775807", Kind::Long { min: 0 },
        "Force an fsync of the log when this much time has passed since the last one."),
    def("follower.replication.throttled.replicas", "", "", Kind::ThrottledReplicas,
        "Replicas (partition:broker, or *) whose follower-side replication is throttled by this broker's follower.replication.throttled.rate until they have caught up with the leader (KIP-73)."),
    def("gregor.trace.headers", "gregor.trace.headers", "false", Kind::Bool,
        "Gregor: with OpenTelemetry tracing on, decompress the start of each compressed produced batch to find its first record's traceparent header (uncompressed batches are always read in place)."),
    def("index.interval.bytes", "log.index.interval.bytes", "4096", Kind::Int { min: 0 },
        "How frequently an entry is added to the offset index, in bytes of log."),
    def("leader.replication.throttled.replicas", "", "", Kind::ThrottledReplicas,
        "Replicas (partition:broker, or *) whose leader-side replication is throttled by this broker's leader.replication.throttled.rate towards followers outside the ISR (KIP-73)."),
    def("local.retention.bytes", "log.local.retention.bytes", "-2", Kind::Long { min: -2 },
        "The local log size kept before tiered storage may delete it (-2: retention.bytes). No effect in Gregor, which has no tiered storage."),
    def("local.retention.ms", "log.local.retention.ms", "-2", Kind::Long { min: -2 },
        "The local log age kept before tiered storage may delete it (-2: retention.ms). No effect in Gregor, which has no tiered storage."),
    def("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", "9223372036854775807", Kind::Long { min: 1 },
        "The maximum time a message remains ineligible for compaction."),
    def("max.message.bytes", "message.max.bytes", "1048588", Kind::Int { min: 0 },
        "The largest record batch size allowed, after compression."),
    def("message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms", "3600000", Kind::Long { min: 0 },
        "How far a CreateTime timestamp may be ahead of the broker's clock; a batch whose max timestamp is later is refused with INVALID_TIMESTAMP."),
    def("message.timestamp.before.max.ms", "log.message.timestamp.before.max.ms", "9223372036854775807", Kind::Long { min: 0 },
        "How far a CreateTime timestamp may be behind the broker's clock; a batch whose first timestamp is older is refused with INVALID_TIMESTAMP."),
    def("message.timestamp.type", "log.message.timestamp.type", "CreateTime", Kind::Choice(&["CreateTime", "LogAppendTime"]),
        "Whether the timestamp in the message is the producer's create time or the broker's log append time."),
    def("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", "0.5", Kind::Ratio,
        "The minimum ratio of dirty log to total log for a log to be eligible for cleaning."),
    def("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", "0", Kind::Long { min: 0 },
        "The minimum time a message remains uncompacted in the log."),
    def("min.insync.replicas", "min.insync.replicas", "1", Kind::Int { min: 1 },
        "The minimum number of in-sync replicas that must acknowledge a write with acks=all."),
    def("preallocate", "log.preallocate", "false", Kind::Bool,
        "Preallocate the file of a new segment. No effect in Gregor, which appends segment files as it writes them."),
    def("remote.log.copy.disable", "", "false", Kind::Bool,
        "Stop copying segments to tiered storage. No effect in Gregor, which has no tiered storage."),
    def("remote.log.delete.on.disable", "", "false", Kind::Bool,
        "Delete the topic's tiered data when remote storage is turned off. No effect in Gregor, which has no tiered storage."),
    def("remote.storage.enable", "", "false", Kind::Bool,
        "Move closed segments to tiered storage. Gregor has no tiered storage: only false is accepted, as Kafka refuses true when tiered storage is off in the broker."),
    def("retention.bytes", "log.retention.bytes", "-1", Kind::Long { min: i64::MIN },
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
            Kind::List(_) | Kind::ThrottledReplicas => 7,
            Kind::Level { .. } => 3,
        }
    }

    /// Whether APPEND and SUBTRACT apply (list-typed configs).
    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::List(_) | Kind::ThrottledReplicas)
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
        Kind::Level { min, max, or } => match value.trim().parse::<i32>() {
            Ok(v) if (min..=max).contains(&i64::from(v)) || Some(i64::from(v)) == or => Ok(()),
            Ok(_) => Err(match or {
                Some(or) => format!("{}: Value must be between {min} and {max}, or {or}", bad()),
                None => format!("{}: Value must be between {min} and {max}", bad()),
            }),
            Err(_) => Err(format!("{}: Not a number of type INT", bad())),
        },
        Kind::ThrottledReplicas => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            let pair = |i: &str| {
                i.split_once(':')
                    .is_some_and(|(p, b)| p.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
            };
            if value.trim().is_empty() || value.trim() == "*" || items.iter().all(|i| pair(i)) {
                Ok(())
            } else {
                Err(format!(
                    "{}: must be the literal '*' or a list of replicas in the format [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                    bad()
                ))
            }
        }
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
        _ if def.broker_key.is_empty() => vec![],
        _ => vec![(def.broker_key, Some(def.default))],
    }
}

/// Checks a whole set of topic overrides: every key and value, and the combinations Kafka
/// refuses.
pub fn validate_topic_overrides(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        validate_topic_config(k, v)?;
    }
    if configs
        .get("remote.storage.enable")
        .is_some_and(|v| v.trim() == "true")
    {
        return Err("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".to_string());
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
pub const SOURCE_DYNAMIC_BROKER_CONFIG: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
pub const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

impl TopicDefaults {
    /// Kafka's defaults, overridden by broker config values (keyed by the broker key or the
    /// topic key).
    pub fn from_broker_settings(settings: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut from_broker = std::collections::BTreeSet::new();
        for def in TOPIC_CONFIGS {
            if (!def.broker_key.is_empty() && settings.contains_key(def.broker_key))
                || settings.contains_key(def.name)
            {
                from_broker.insert(def.name);
            }
            let v = Some(def.broker_key)
                .filter(|k| !k.is_empty())
                .and_then(|k| settings.get(k))
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
            timestamp_after_max_ms: long("message.timestamp.after.max.ms", 3_600_000),
            timestamp_before_max_ms: long("message.timestamp.before.max.ms", i64::MAX),
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
    fn every_kafka_4_3_topic_config_is_known_with_kafkas_default() {
        // LogConfig.configKeys() of Kafka 4.3.1, with their defaults (internal ones aside)
        let kafka = [
            ("cleanup.policy", "delete"),
            ("compression.gzip.level", "-1"),
            ("compression.lz4.level", "9"),
            ("compression.type", "producer"),
            ("compression.zstd.level", "3"),
            ("delete.retention.ms", "86400000"),
            ("file.delete.delay.ms", "60000"),
            ("flush.messages", "9223372036854775807"),
            ("flush.ms", "9223372036854775807"),
            ("follower.replication.throttled.replicas", ""),
            ("index.interval.bytes", "4096"),
            ("leader.replication.throttled.replicas", ""),
            ("local.retention.bytes", "-2"),
            ("local.retention.ms", "-2"),
            ("max.compaction.lag.ms", "9223372036854775807"),
            ("max.message.bytes", "1048588"),
            ("message.timestamp.after.max.ms", "3600000"),
            ("message.timestamp.before.max.ms", "9223372036854775807"),
            ("message.timestamp.type", "CreateTime"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("min.compaction.lag.ms", "0"),
            ("min.insync.replicas", "1"),
            ("preallocate", "false"),
            ("remote.log.copy.disable", "false"),
            ("remote.log.delete.on.disable", "false"),
            ("remote.storage.enable", "false"),
            ("retention.bytes", "-1"),
            ("retention.ms", "604800000"),
            ("segment.bytes", "1073741824"),
            ("segment.index.bytes", "10485760"),
            ("segment.jitter.ms", "0"),
            ("segment.ms", "604800000"),
            ("unclean.leader.election.enable", "false"),
        ];
        // Gregor's own keys (gregor.*) aside
        let ours: Vec<(&str, &str)> = TOPIC_CONFIGS
            .iter()
            .filter(|d| !d.name.starts_with("gregor."))
            .map(|d| (d.name, d.default))
            .collect();
        assert_eq!(ours, kafka);
        for (name, default) in kafka {
            validate_topic_config(name, default).unwrap();
        }
    }

    #[test]
    fn new_kinds_validate_as_kafka_does() {
        for ok in [
            ("compression.gzip.level", "-1"),
            ("compression.gzip.level", "9"),
            ("compression.zstd.level", "-131072"),
            ("leader.replication.throttled.replicas", "*"),
            ("leader.replication.throttled.replicas", "0:1, 1:2"),
            ("local.retention.ms", "-2"),
            ("retention.bytes", "-5"),
        ] {
            assert!(validate_topic_config(ok.0, ok.1).is_ok(), "{ok:?}");
        }
        for bad in [
            ("compression.gzip.level", "0"),
            ("compression.lz4.level", "18"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("local.retention.ms", "-3"),
            ("message.timestamp.after.max.ms", "-1"),
            ("preallocate", "yes"),
        ] {
            assert!(validate_topic_config(bad.0, bad.1).is_err(), "{bad:?}");
        }
        let tiered = BTreeMap::from([("remote.storage.enable".to_string(), "true".to_string())]);
        assert!(validate_topic_overrides(&tiered)
            .unwrap_err()
            .contains("Tiered Storage"));
    }

    #[test]
    fn timestamps_are_checked_from_the_header() {
        let c = LogConfig::default();
        let now = 1_800_000_000_000;
        assert!(c
            .check_timestamps(now - 86_400_000, now + 3_600_000, now)
            .is_ok());
        assert_eq!(
            c.check_timestamps(now, now + 3_600_001, now),
            Err((now + 3_600_001, now - i64::MAX, now + 3_600_000))
        );
        assert!(c.check_timestamps(-1, -1, now).is_ok());
        let strict = LogConfig {
            timestamp_before_max_ms: 1000,
            ..LogConfig::default()
        };
        assert!(strict.check_timestamps(now - 1001, now, now).is_err());
        let append = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..strict
        };
        assert!(append.check_timestamps(0, i64::MAX, now).is_ok());
    }

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
