//! Group configs (KIP-848 and KIP-932 dynamic group configs, `kafka-configs --entity-type
//! groups`, ConfigResource type GROUP): per-group overrides of the broker's group settings, as
//! the metadata log holds them, with Kafka 4.3's keys, types, bounds and broker synonyms.
//! Values are stored as given, validated by the proposer with `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::broker_configs::apply_changes;

/// Every group's overrides, by group id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfigs {
    pub groups: BTreeMap<String, BTreeMap<String, String>>,
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl GroupConfigs {
    /// One group's overrides (empty when it has none).
    pub fn group(&self, group: &str) -> &BTreeMap<String, String> {
        self.groups.get(group).unwrap_or(&EMPTY)
    }

    /// Sets (`Some`) or removes (`None`) keys of one group.
    pub fn alter(&mut self, group: &str, changes: &BTreeMap<String, Option<String>>) {
        apply_changes(self.groups.entry(group.to_string()).or_default(), changes);
        self.groups.retain(|_, c| !c.is_empty());
    }

    /// A group's override of `key` parsed as an integer (they are validated when set).
    pub fn int(&self, group: &str, key: &str) -> Option<i64> {
        self.group(group).get(key).and_then(|v| v.parse().ok())
    }
}

/// A group config's value type, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupConfigType {
    Int {
        min: i64,
    },
    Boolean,
    /// One of these values; `share.auto.offset.reset` also takes `by_duration:<ISO-8601>`.
    Choice(&'static [&'static str]),
}

/// One group config key.
pub struct GroupConfigDef {
    pub name: &'static str,
    pub kind: GroupConfigType,
    /// The broker setting whose value is the default (Kafka's `brokerSynonym`), if any.
    pub synonym: Option<&'static str>,
    /// The default when there is no broker synonym.
    pub default: &'static str,
    pub doc: &'static str,
}

const fn int(
    name: &'static str,
    min: i64,
    synonym: &'static str,
    default: &'static str,
    doc: &'static str,
) -> GroupConfigDef {
    GroupConfigDef {
        name,
        kind: GroupConfigType::Int { min },
        synonym: Some(synonym),
        default,
        doc,
    }
}

pub const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";
pub const SHARE_RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
pub const SHARE_DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
pub const SHARE_PARTITION_MAX_RECORD_LOCKS: &str = "share.partition.max.record.locks";
pub const SHARE_SESSION_TIMEOUT_MS: &str = "share.session.timeout.ms";
pub const SHARE_HEARTBEAT_INTERVAL_MS: &str = "share.heartbeat.interval.ms";
pub const CONSUMER_SESSION_TIMEOUT_MS: &str = "consumer.session.timeout.ms";
pub const CONSUMER_HEARTBEAT_INTERVAL_MS: &str = "consumer.heartbeat.interval.ms";

const NO_EFFECT: &str = "Stored and reported; no effect in Gregor.";

/// Kafka 4.3.1's group configs (GroupConfig.CONFIG_DEF), in its order.
pub const GROUP_CONFIGS: &[GroupConfigDef] = &[
    int(
        CONSUMER_SESSION_TIMEOUT_MS,
        1,
        "group.consumer.session.timeout.ms",
        "45000",
        "The timeout to detect client failures when using the consumer group protocol. \
         Gregor stores and reports it; the broker's group.consumer.session.timeout.ms applies.",
    ),
    int(
        CONSUMER_HEARTBEAT_INTERVAL_MS,
        1,
        "group.consumer.heartbeat.interval.ms",
        "5000",
        "The heartbeat interval given to the members of a consumer group.",
    ),
    int(
        "consumer.assignment.interval.ms",
        0,
        "group.consumer.assignment.interval.ms",
        "1000",
        NO_EFFECT,
    ),
    int(
        SHARE_SESSION_TIMEOUT_MS,
        1,
        "group.share.session.timeout.ms",
        "45000",
        "The timeout to detect client failures when using the share group protocol. Gregor \
         stores and reports it; the broker's group.share.session.timeout.ms applies.",
    ),
    int(
        SHARE_HEARTBEAT_INTERVAL_MS,
        1,
        "group.share.heartbeat.interval.ms",
        "5000",
        "The heartbeat interval given to the members of a share group.",
    ),
    int(
        SHARE_RECORD_LOCK_DURATION_MS,
        1000,
        "group.share.record.lock.duration.ms",
        "30000",
        "The record acquisition lock duration in milliseconds for share groups.",
    ),
    int(
        SHARE_DELIVERY_COUNT_LIMIT,
        2,
        "group.share.delivery.count.limit",
        "5",
        "The maximum number of delivery attempts for a record delivered to a share group.",
    ),
    int(
        SHARE_PARTITION_MAX_RECORD_LOCKS,
        100,
        "group.share.partition.max.record.locks",
        "2000",
        "Share-group record lock limit per share-partition.",
    ),
    GroupConfigDef {
        name: SHARE_AUTO_OFFSET_RESET,
        kind: GroupConfigType::Choice(&["latest", "earliest"]),
        synonym: None,
        default: "latest",
        doc: "The strategy to initialize the share-partition start offset: latest, earliest, \
              or by_duration:<ISO-8601 duration> (the first offset at or after now minus it).",
    },
    GroupConfigDef {
        name: SHARE_ISOLATION_LEVEL,
        kind: GroupConfigType::Choice(&["read_uncommitted", "read_committed"]),
        synonym: None,
        default: "read_uncommitted",
        doc: "Controls how to read records written transactionally. Gregor's share groups \
              read uncommitted only: read_committed is refused.",
    },
    GroupConfigDef {
        name: "share.renew.acknowledge.enable",
        kind: GroupConfigType::Boolean,
        synonym: None,
        default: "true",
        doc: NO_EFFECT,
    },
    int(
        "share.assignment.interval.ms",
        0,
        "group.share.assignment.interval.ms",
        "1000",
        NO_EFFECT,
    ),
    int(
        "streams.session.timeout.ms",
        1,
        "group.streams.session.timeout.ms",
        "45000",
        NO_EFFECT,
    ),
    int(
        "streams.heartbeat.interval.ms",
        1,
        "group.streams.heartbeat.interval.ms",
        "5000",
        NO_EFFECT,
    ),
    int(
        "streams.num.standby.replicas",
        0,
        "group.streams.num.standby.replicas",
        "0",
        NO_EFFECT,
    ),
    int(
        "streams.initial.rebalance.delay.ms",
        0,
        "group.streams.initial.rebalance.delay.ms",
        "3000",
        NO_EFFECT,
    ),
    int(
        "streams.assignment.interval.ms",
        0,
        "group.streams.assignment.interval.ms",
        "1000",
        NO_EFFECT,
    ),
];

pub fn group_config_def(name: &str) -> Option<&'static GroupConfigDef> {
    GROUP_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one value as Kafka's GroupConfig does (`Err` holds its message; the error is
/// INVALID_CONFIG).
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = group_config_def(name).ok_or_else(|| format!("Unknown group config name: {name}"))?;
    let invalid = |why: &str| format!("Invalid value {value} for configuration {name}: {why}");
    match def.kind {
        GroupConfigType::Int { min } => {
            let v: i64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v| (i32::MIN as i64..=i32::MAX as i64).contains(v))
                .ok_or_else(|| invalid("Not a number of type INT"))?;
            if v < min {
                return Err(invalid(&format!("Value must be at least {min}")));
            }
        }
        GroupConfigType::Boolean => {
            if !value.trim().eq_ignore_ascii_case("true")
                && !value.trim().eq_ignore_ascii_case("false")
            {
                return Err(invalid("Expected value to be either true or false"));
            }
        }
        GroupConfigType::Choice(values) => {
            let ok = values.contains(&value)
                || (name == SHARE_AUTO_OFFSET_RESET && by_duration_ms(value).is_some());
            if !ok {
                let mut all = values.join(", ");
                if name == SHARE_AUTO_OFFSET_RESET {
                    all.push_str(", by_duration:PnDTnHnMn.nS");
                }
                return Err(invalid(&format!("String must be one of: {all}")));
            }
        }
    }
    Ok(())
}

/// Where a new share-partition starts (`share.auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareOffsetReset {
    Latest,
    Earliest,
    /// The first offset whose timestamp is at or after now minus this many milliseconds.
    ByDurationMs(i64),
}

impl ShareOffsetReset {
    /// A group's reset strategy (its stored value is valid; Latest otherwise).
    pub fn of(configs: &GroupConfigs, group: &str) -> Self {
        match configs
            .group(group)
            .get(SHARE_AUTO_OFFSET_RESET)
            .map(String::as_str)
        {
            Some("earliest") => Self::Earliest,
            Some(v) => by_duration_ms(v).map_or(Self::Latest, Self::ByDurationMs),
            None => Self::Latest,
        }
    }
}

/// `by_duration:<ISO-8601 duration>` (java.time.Duration's `PnDTnHnMn.nS`, not negative) in
/// milliseconds.
pub fn by_duration_ms(value: &str) -> Option<i64> {
    let d = value.strip_prefix("by_duration:")?.trim();
    let rest = d.strip_prefix('P').or_else(|| d.strip_prefix('p'))?;
    let (days, time) = match rest.find(['T', 't']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut ms: f64 = 0.0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        let mut unit_index = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let pos = units[unit_index..]
                .iter()
                .position(|(u, _)| u.eq_ignore_ascii_case(&c))?;
            let (_, scale) = units[unit_index + pos];
            let v: f64 = num.parse().ok()?;
            if num.contains('.') && !c.eq_ignore_ascii_case(&'S') {
                return None;
            }
            ms += v * scale;
            num.clear();
            unit_index += pos + 1;
            any = true;
        }
        num.is_empty().then_some(())
    };
    take(days, &[('D', 86_400_000.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        take(t, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    (any && ms.is_finite() && ms <= i64::MAX as f64).then_some(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_as_kafka_checks_them() {
        assert!(validate("share.auto.offset.reset", "earliest").is_ok());
        assert!(validate("share.auto.offset.reset", "by_duration:PT1H").is_ok());
        assert_eq!(
            validate("share.auto.offset.reset", "oldest").unwrap_err(),
            "Invalid value oldest for configuration share.auto.offset.reset: String must be one \
             of: latest, earliest, by_duration:PnDTnHnMn.nS"
        );
        assert!(validate("share.record.lock.duration.ms", "15000").is_ok());
        assert_eq!(
            validate("share.record.lock.duration.ms", "999").unwrap_err(),
            "Invalid value 999 for configuration share.record.lock.duration.ms: Value must be at \
             least 1000"
        );
        assert!(validate("share.delivery.count.limit", "x").is_err());
        assert!(validate("share.renew.acknowledge.enable", "TRUE").is_ok());
        assert_eq!(
            validate("nope", "1").unwrap_err(),
            "Unknown group config name: nope"
        );
    }

    #[test]
    fn durations_parse_as_java_time_duration() {
        assert_eq!(by_duration_ms("by_duration:PT1H"), Some(3_600_000));
        assert_eq!(
            by_duration_ms("by_duration:P1DT2M"),
            Some(86_400_000 + 120_000)
        );
        assert_eq!(by_duration_ms("by_duration:PT0.5S"), Some(500));
        assert_eq!(by_duration_ms("by_duration:P"), None);
        assert_eq!(by_duration_ms("by_duration:PT"), None);
        assert_eq!(by_duration_ms("by_duration:-PT1H"), None);
        assert_eq!(by_duration_ms("by_duration:PT1M1H"), None);
        assert_eq!(by_duration_ms("PT1H"), None);
    }

    #[test]
    fn overrides_are_set_and_removed_per_group() {
        let mut c = GroupConfigs::default();
        let set = |k: &str, v: Option<&str>| BTreeMap::from([(k.to_string(), v.map(String::from))]);
        c.alter("g", &set(SHARE_AUTO_OFFSET_RESET, Some("earliest")));
        assert_eq!(ShareOffsetReset::of(&c, "g"), ShareOffsetReset::Earliest);
        assert_eq!(ShareOffsetReset::of(&c, "h"), ShareOffsetReset::Latest);
        c.alter("g", &set(SHARE_AUTO_OFFSET_RESET, None));
        assert!(c.groups.is_empty());
    }
}
