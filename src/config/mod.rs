//! Configuration: a TOML file, then `GREGOR_*` environment variables, then command-line flags
//! (later wins), validated into one `Config`.
//!
//! Broker settings that Kafka also has keep Kafka's names and defaults and live in the
//! `[kafka]` table of the file (`"num.partitions" = 3`), or in `GREGOR_KAFKA_NUM_PARTITIONS`.
//! Their values may hold Kafka's config-provider variables (`${file:PATH:KEY}`, `${dir:DIR:FILE}`,
//! `${env:NAME}`), which `providers` resolves before any setting is parsed.

mod broker_settings;
mod coordinators;
pub mod dynamic;
pub mod providers;

pub use broker_settings::BROKER_SETTINGS;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::log::TopicDefaults;

/// Command-line flags (each also readable from its `GREGOR_*` variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// TOML config file (config/gregor.toml documents every key).
    #[arg(long, env = "GREGOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Broker id and Raft node id.
    #[arg(long, env = "GREGOR_NODE_ID")]
    pub node_id: Option<i32>,
    /// Directory for all state.
    #[arg(long, env = "GREGOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener, HOST:PORT.
    #[arg(long, env = "GREGOR_LISTEN")]
    pub listen: Option<String>,
    /// What Metadata tells clients, HOST:PORT (default: the listen address).
    #[arg(long, env = "GREGOR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Raft RPC listener, HOST:PORT.
    #[arg(long, env = "GREGOR_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// Initial metadata quorum: ID@HOST:PORT,... (default: this node alone).
    #[arg(long, env = "GREGOR_VOTERS")]
    pub voters: Option<String>,
    /// Admin HTTP listener (/health/live, /health/ready, /metrics), HOST:PORT.
    #[arg(long, env = "GREGOR_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Log output: text or json.
    #[arg(long, env = "GREGOR_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log levels as a tracing filter (e.g. `info,gregor::replica=debug`); RUST_LOG wins.
    #[arg(long, env = "GREGOR_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<i32>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    controller_listen: Option<String>,
    voters: Option<String>,
    admin_listen: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, toml::Value>,
    #[serde(default)]
    provisioning: Provisioning,
}

/// `[[provisioning.topics]]`: topics created at startup when missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    #[serde(default)]
    pub topics: Vec<ProvisionedTopic>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionedTopic {
    pub name: String,
    #[serde(default = "default_minus_one")]
    pub partitions: i32,
    #[serde(default = "default_minus_one_i16")]
    pub replication_factor: i16,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

fn default_minus_one() -> i32 {
    -1
}

fn default_minus_one_i16() -> i16 {
    -1
}

/// A TOML scalar as the string Kafka configs use.
pub fn toml_scalar(key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("{key}: unsupported value {other}"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Limits on client connections and the request memory they may hold.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// `max.connections`: the listener stops accepting at this many.
    pub max_connections: usize,
    /// `max.connections.per.ip` and `max.connections.per.ip.overrides`.
    pub max_connections_per_ip: usize,
    pub max_connections_per_ip_overrides: std::collections::HashMap<std::net::IpAddr, usize>,
    /// `queued.max.request.bytes`, resolved: the request memory budget in bytes.
    pub queued_max_request_bytes: usize,
}

/// Gregor's request memory budget when `queued.max.request.bytes` is -1 (which in Kafka means
/// unlimited): this, or two of the largest frames, whichever is larger.
pub const DEFAULT_REQUEST_MEMORY_BYTES: usize = 256 << 20;

/// Broker-level Kafka settings Gregor uses directly.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub socket_request_max_bytes: usize,
    pub connections: ConnectionSettings,
    pub log_flush_scheduler_interval_ms: u64,
    pub log_flush_offset_checkpoint_interval_ms: u64,
    pub log_retention_check_interval_ms: u64,
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
    pub delete_topic_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    /// `broker.rack`: this broker's rack, when set.
    pub broker_rack: Option<String>,
    /// `max.incremental.fetch.session.cache.slots`.
    pub fetch_session_cache_slots: usize,
    /// `replica.selector.class` is Kafka's RackAwareReplicaSelector (KIP-392).
    pub rack_aware_replica_selector: bool,
    /// `max.request.partition.size.limit`: the most partitions one DescribeTopicPartitions
    /// answer holds.
    pub max_request_partition_size_limit: i32,
    /// Replication: `replica.lag.time.max.ms` and `replica.fetch.*`.
    pub replica: crate::replica::ReplicaSettings,
    pub group: crate::group::GroupConfig,
    /// Share groups' `group.share.*` and the share coordinator's `share.coordinator.*`.
    pub share: crate::share::ShareConfig,
    /// The transaction coordinator's `transaction.*` settings.
    pub txn: crate::txn::TxnConfig,
    /// Broker fencing and leader elections by the active controller.
    pub controller: crate::meta::ControllerSettings,
    /// Every setting as given (config variables resolved), for topic defaults and
    /// DescribeConfigs; its `Debug` hides secrets.
    pub raw: providers::RawSettings,
}

/// A `[[provisioning.topics]]` entry: name, partitions and replication factor (-1: broker
/// default), topic configs.
pub type TopicToProvision = (String, i32, i16, BTreeMap<String, String>);

/// Log levels when neither RUST_LOG nor `log_level` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info,openraft=warn";

#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub listen: String,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub controller_listen: SocketAddr,
    /// Raft node id -> controller address.
    pub voters: BTreeMap<u64, String>,
    pub admin_listen: String,
    pub log_format: LogFormat,
    /// The tracing filter used when RUST_LOG is not set.
    pub log_level: String,
    pub kafka: KafkaSettings,
    pub topic_defaults: TopicDefaults,
    /// Client listeners, inter-broker and controller-plane security (Kafka's `listeners`,
    /// `listener.security.protocol.map`, `ssl.*`, `sasl.*` keys).
    pub listeners: crate::security::listeners::ListenerSettings,
    /// The built-in authorizer (`authorizer.class.name`), when on.
    pub authorizer: Option<std::sync::Arc<crate::api::session::AuthorizerSettings>>,
    /// Topics to create at startup: (name, partitions, replication factor, configs).
    pub provisioned_topics: Vec<TopicToProvision>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:9092";
const DEFAULT_CONTROLLER: &str = "127.0.0.1:9093";
const DEFAULT_ADMIN: &str = "127.0.0.1:9644";

impl Config {
    /// Builds the config from the file named by the flags (if any), the environment and the
    /// flags themselves.
    pub fn load(flags: &Flags) -> Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut kafka_raw = BTreeMap::new();
        for (k, v) in &file.kafka {
            kafka_raw.insert(k.clone(), toml_scalar(&format!("[kafka] {k}"), v)?);
        }
        for (k, v) in std::env::vars() {
            if let Some(name) = k.strip_prefix("GREGOR_KAFKA_") {
                let key = kafka_key_from_env(name)
                    .ok_or_else(|| anyhow!("{k}: a run of more than three underscores"))?;
                kafka_raw.insert(key, v);
            }
        }
        Self::build(flags, file, kafka_raw)
    }

    /// Resolves config-provider variables in the Kafka settings, then validates everything.
    fn build(
        flags: &Flags,
        file: FileConfig,
        mut kafka_raw: BTreeMap<String, String>,
    ) -> Result<Self> {
        let resolution = providers::resolve(&mut kafka_raw)?;
        for warning in &resolution.warnings {
            eprintln!("gregor: warning: {warning}");
        }
        Self::build_resolved(flags, file, kafka_raw).map_err(|e| resolution.annotate(e))
    }

    fn build_resolved(
        flags: &Flags,
        file: FileConfig,
        kafka_raw: BTreeMap<String, String>,
    ) -> Result<Self> {
        let node_id = flags.node_id.or(file.node_id).unwrap_or(1);
        if node_id < 0 {
            bail!("node id must be >= 0, got {node_id}");
        }
        let data_dir = flags
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let listen = flags
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let advertise = flags
            .advertise
            .clone()
            .or(file.advertise)
            .unwrap_or_else(|| listen.clone());
        let (advertised_host, advertised_port) = split_host_port(&advertise)
            .with_context(|| format!("advertise address {advertise:?}"))?;
        if advertised_host == "0.0.0.0" || advertised_host == "::" {
            bail!(
                "advertise address {advertise} is a wildcard; set --advertise to a reachable host"
            );
        }
        let controller_listen_s = flags
            .controller_listen
            .clone()
            .or(file.controller_listen)
            .unwrap_or_else(|| DEFAULT_CONTROLLER.to_string());
        let controller_listen = resolve(&controller_listen_s)
            .with_context(|| format!("controller listen address {controller_listen_s:?}"))?;
        let voters = match flags.voters.clone().or(file.voters) {
            Some(v) if !v.trim().is_empty() => parse_voters(&v)?,
            _ => BTreeMap::from([(node_id as u64, controller_listen_s.clone())]),
        };
        if !voters.contains_key(&(node_id as u64)) {
            bail!("--voters does not include this node ({node_id})");
        }
        let admin_listen = flags
            .admin_listen
            .clone()
            .or(file.admin_listen)
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let log_format = match flags
            .log_format
            .clone()
            .or(file.log_format)
            .as_deref()
            .unwrap_or("text")
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log format must be text or json, got {other}"),
        };
        let log_level = flags
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            bail!("log level {log_level:?} is not a valid filter: {e}");
        }
        let mut provisioned_topics = Vec::new();
        for t in &file.provisioning.topics {
            let mut configs = BTreeMap::new();
            for (k, v) in &t.config {
                configs.insert(
                    k.clone(),
                    toml_scalar(&format!("provisioning topic {}: {k}", t.name), v)?,
                );
            }
            crate::log::config::validate_topic_overrides(&configs)
                .map_err(|e| anyhow!("provisioning topic {}: {e}", t.name))?;
            provisioned_topics.push((t.name.clone(), t.partitions, t.replication_factor, configs));
        }
        let kafka = KafkaSettings::from_raw(kafka_raw)?;
        let authorizer = authorizer_settings(&kafka.raw)?.map(std::sync::Arc::new);
        let listeners = crate::security::listeners::from_raw(
            &kafka.raw,
            &listen,
            (&advertised_host, advertised_port),
        )
        .map_err(|e| anyhow!("[kafka] {e}"))?;
        // The PLAIN JAAS texts (the listeners parse them when they start) are parsed here
        // too, so that a config variable left as written in one is reported with the other
        // configuration errors.
        let plain_jaas = listeners
            .listeners
            .iter()
            .filter_map(|l| Some((l.name.as_str(), l.jaas.get("PLAIN")?)))
            .chain((listeners.controller.plain_jaas.iter()).map(|text| ("CONTROLLER", text)));
        for (listener, text) in plain_jaas {
            crate::security::jaas::parse(text)
                .map_err(|e| anyhow!("[kafka] listener {listener}: PLAIN sasl.jaas.config: {e}"))?;
        }
        let mut kafka = kafka;
        kafka.replica.inter_broker_listener = listeners.inter_broker_listener.clone();
        kafka.replica.inter_broker_security =
            crate::security::client::ClientSecurity::for_listener(
                listeners.inter_broker(),
                &listeners.inter_broker_mechanism,
            )
            .map_err(|e| anyhow!("[kafka] {e}"))?;
        let topic_defaults = TopicDefaults::from_broker_settings(&kafka.raw)
            .map_err(|e| anyhow!("[kafka] settings: {e}"))?;
        Ok(Self {
            node_id,
            data_dir,
            listen,
            advertised_host,
            advertised_port,
            controller_listen,
            voters,
            admin_listen,
            log_format,
            log_level,
            kafka,
            topic_defaults,
            listeners,
            authorizer,
            provisioned_topics,
        })
    }
}

impl KafkaSettings {
    /// The value of a broker setting: as configured, else Kafka's default.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.raw.get(name).map(String::as_str).or_else(|| {
            BROKER_SETTINGS
                .iter()
                .find(|(n, _, _, _)| *n == name)
                .map(|(_, d, _, _)| *d)
        })
    }

    fn from_raw(raw: BTreeMap<String, String>) -> Result<Self> {
        for key in raw.keys() {
            let known = BROKER_SETTINGS.iter().any(|(n, _, _, _)| n == key)
                || crate::log::config::TOPIC_CONFIGS
                    .iter()
                    .any(|d| d.broker_key == key)
                || matches!(
                    key.as_str(),
                    "log.retention.hours" | "log.retention.minutes" | "log.roll.hours"
                )
                || dynamic::is_dynamic(key)
                || SECURITY_KEYS.contains(&key.as_str())
                || key.starts_with("listener.name.")
                || providers::is_provider_key(key);
            if !known {
                eprintln!("gregor: warning: ignoring unknown Kafka setting {key:?}");
            }
        }
        let settings = Self {
            auto_create_topics_enable: get(&raw, "auto.create.topics.enable")?,
            num_partitions: get(&raw, "num.partitions")?,
            default_replication_factor: get(&raw, "default.replication.factor")?,
            socket_request_max_bytes: get(&raw, "socket.request.max.bytes")?,
            connections: connection_settings(&raw, get(&raw, "socket.request.max.bytes")?, || {
                Ok((
                    get(&raw, "max.connections")?,
                    get(&raw, "max.connections.per.ip")?,
                    get(&raw, "queued.max.request.bytes")?,
                ))
            })?,
            log_flush_scheduler_interval_ms: get(&raw, "log.flush.scheduler.interval.ms")?,
            log_flush_offset_checkpoint_interval_ms: get(
                &raw,
                "log.flush.offset.checkpoint.interval.ms",
            )?,
            log_retention_check_interval_ms: get(&raw, "log.retention.check.interval.ms")?,
            producer_id_expiration_ms: get(&raw, "producer.id.expiration.ms")?,
            producer_id_expiration_check_interval_ms: get(
                &raw,
                "producer.id.expiration.check.interval.ms",
            )?,
            delete_topic_enable: get(&raw, "delete.topic.enable")?,
            log_cleaner_backoff_ms: get(&raw, "log.cleaner.backoff.ms")?,
            broker_rack: Some(get::<String>(&raw, "broker.rack")?).filter(|r| !r.is_empty()),
            fetch_session_cache_slots: get(&raw, "max.incremental.fetch.session.cache.slots")?,
            rack_aware_replica_selector: replica_selector(&get::<String>(
                &raw,
                "replica.selector.class",
            )?)?,
            max_request_partition_size_limit: get(&raw, "max.request.partition.size.limit")?,
            replica: crate::replica::ReplicaSettings {
                lag_time_max: Duration::from_millis(get(&raw, "replica.lag.time.max.ms")?),
                fetch_wait_max: Duration::from_millis(get(&raw, "replica.fetch.wait.max.ms")?),
                fetch_max_bytes: get(&raw, "replica.fetch.max.bytes")?,
                fetch_response_max_bytes: get(&raw, "replica.fetch.response.max.bytes")?,
                // Set from the listener settings once they are parsed.
                inter_broker_listener: String::new(),
                inter_broker_security: Default::default(),
            },
            group: coordinators::group_config(&raw)?,
            share: coordinators::share_config(&raw)?,
            txn: coordinators::txn_config(&raw)?,
            controller: crate::meta::ControllerSettings {
                broker_session_timeout: Duration::from_millis(get(
                    &raw,
                    "broker.session.timeout.ms",
                )?),
                auto_leader_rebalance_enable: get(&raw, "auto.leader.rebalance.enable")?,
                leader_imbalance_check_interval: Duration::from_secs(get(
                    &raw,
                    "leader.imbalance.check.interval.seconds",
                )?),
                // A topic config default (validated with the topic defaults); topics may
                // override it.
                unclean_leader_election_enable: raw
                    .get("unclean.leader.election.enable")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            },
            raw: providers::RawSettings(raw),
        };
        if settings.group.offsets_partitions < 1 {
            bail!("[kafka] offsets.topic.num.partitions must be at least 1");
        }
        if settings.group.offsets_replication_factor < 1 {
            bail!("[kafka] offsets.topic.replication.factor must be at least 1");
        }
        if settings.max_request_partition_size_limit < 1 {
            bail!("[kafka] max.request.partition.size.limit must be at least 1");
        }
        if settings.controller.broker_session_timeout < Duration::from_millis(100) {
            bail!("[kafka] broker.session.timeout.ms must be at least 100");
        }
        if settings
            .controller
            .leader_imbalance_check_interval
            .is_zero()
        {
            bail!("[kafka] leader.imbalance.check.interval.seconds must be at least 1");
        }
        if settings.num_partitions < 1 {
            bail!("[kafka] num.partitions must be at least 1");
        }
        if settings.default_replication_factor < 1 {
            bail!("[kafka] default.replication.factor must be at least 1");
        }
        if settings.replica.fetch_max_bytes < 0 || settings.replica.fetch_response_max_bytes < 0 {
            bail!("[kafka] replica.fetch.max.bytes and replica.fetch.response.max.bytes must be at least 0");
        }
        if settings.socket_request_max_bytes < 1024 {
            bail!("[kafka] socket.request.max.bytes must be at least 1024");
        }
        Ok(settings)
    }
}

/// Security keys read by `security::listeners` (some hold secrets: they are never described).
const SECURITY_KEYS: &[&str] = &[
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.enabled.mechanisms",
    "sasl.jaas.config",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.client.auth",
    "connections.max.reauth.ms",
    "connection.failed.authentication.delay.ms",
];

/// Kafka's authorizer class names that turn on Gregor's built-in authorizer (the KRaft one, and
/// the ZooKeeper-era one a migrated config may still name).
const STANDARD_AUTHORIZERS: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// `authorizer.class.name`, `super.users` and `allow.everyone.if.no.acl.found`.
fn authorizer_settings(
    raw: &BTreeMap<String, String>,
) -> Result<Option<crate::api::session::AuthorizerSettings>> {
    let class = raw
        .get("authorizer.class.name")
        .map(|c| c.trim())
        .unwrap_or("");
    if class.is_empty() {
        return Ok(None);
    }
    if !STANDARD_AUTHORIZERS.contains(&class) {
        bail!(
            "[kafka] authorizer.class.name: {class:?} is not supported; use {:?}",
            STANDARD_AUTHORIZERS[0]
        );
    }
    let mut super_users = std::collections::HashSet::new();
    for p in raw
        .get("super.users")
        .map(String::as_str)
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let principal = crate::security::principal::KafkaPrincipal::parse(p)
            .map_err(|e| anyhow!("[kafka] super.users: {e}"))?;
        super_users.insert(principal.to_string());
    }
    Ok(Some(crate::api::session::AuthorizerSettings {
        super_users,
        allow_if_no_acl: get(raw, "allow.everyone.if.no.acl.found")?,
    }))
}

/// A broker setting parsed from `raw`, else from Kafka's default.
pub(super) fn get<T: std::str::FromStr>(raw: &BTreeMap<String, String>, key: &str) -> Result<T> {
    let default = BROKER_SETTINGS
        .iter()
        .find(|(n, _, _, _)| *n == key)
        .map(|(_, d, _, _)| *d)
        .ok_or_else(|| anyhow!("{key} is not a known broker setting"))?;
    let v = raw.get(key).map(String::as_str).unwrap_or(default);
    v.trim()
        .parse()
        .map_err(|_| anyhow!("[kafka] {key}: invalid value {v:?}"))
}

/// Kafka's rack-aware replica selector, the one `replica.selector.class` may name.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// `replica.selector.class`: empty (leader only) or Kafka's rack-aware selector; Gregor
/// cannot load other classes, so any other name is refused at startup.
fn replica_selector(class: &str) -> Result<bool> {
    match class {
        "" => Ok(false),
        RACK_AWARE_REPLICA_SELECTOR => Ok(true),
        other => bail!(
            "[kafka] replica.selector.class: {other:?} is not supported (use {RACK_AWARE_REPLICA_SELECTOR} or leave it unset)"
        ),
    }
}

/// Resolves the connection settings: (max.connections, max.connections.per.ip,
/// queued.max.request.bytes) as `read` gives them, with Kafka's rules.
fn connection_settings(
    raw: &BTreeMap<String, String>,
    socket_request_max_bytes: usize,
    read: impl FnOnce() -> Result<(i32, i32, i64)>,
) -> Result<ConnectionSettings> {
    let (max, per_ip, queued) = read()?;
    if max < 0 || per_ip < 0 {
        bail!("[kafka] max.connections and max.connections.per.ip must be at least 0");
    }
    let overrides = crate::server::connection_limits::ConnectionLimits::parse_overrides(
        raw.get("max.connections.per.ip.overrides")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| anyhow!("[kafka] max.connections.per.ip.overrides: {e}"))?;
    let queued = if queued <= 0 {
        DEFAULT_REQUEST_MEMORY_BYTES.max(socket_request_max_bytes.saturating_mul(2))
    } else if (queued as u64) < socket_request_max_bytes as u64 {
        bail!("[kafka] queued.max.request.bytes ({queued}) must be at least socket.request.max.bytes ({socket_request_max_bytes})");
    } else {
        queued as usize
    };
    Ok(ConnectionSettings {
        max_connections: max as usize,
        max_connections_per_ip: per_ip as usize,
        max_connections_per_ip_overrides: overrides,
        queued_max_request_bytes: queued,
    })
}

/// Splits `host:port` (or `[v6]:port`).
pub fn split_host_port(s: &str) -> Result<(String, i32)> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("expected HOST:PORT, got {s:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("empty host in {s:?}");
    }
    let port: u16 = port.parse().map_err(|_| anyhow!("bad port in {s:?}"))?;
    Ok((host.to_string(), port as i32))
}

/// Resolves `host:port` to one socket address.
pub fn resolve(s: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .with_context(|| format!("resolving {s}"))?
        .next()
        .ok_or_else(|| anyhow!("{s} resolves to no address"))
}

/// Parses `1@host:9093,2@host2:9093`.
pub fn parse_voters(s: &str) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| anyhow!("voter {part:?} is not ID@HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| anyhow!("voter id in {part:?} is not a number"))?;
        split_host_port(addr)?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("voter {id} listed twice");
        }
    }
    if out.is_empty() {
        bail!("--voters is empty");
    }
    Ok(out)
}

/// A Kafka key from the rest of a `GREGOR_KAFKA_` variable name, spelled as Apache Kafka's
/// Docker image spells them (KIP-975): lower case, `_` for `.`, `__` for `_`, `___` for `-`.
/// So `LISTENER_NAME_SASL__SSL_SCRAM___SHA___256_SASL_JAAS_CONFIG` is
/// `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config`. `None` for a longer run.
fn kafka_key_from_env(name: &str) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            key.push(c.to_ascii_lowercase());
            continue;
        }
        let mut run = 1;
        while chars.next_if_eq(&'_').is_some() {
            run += 1;
        }
        key.push(match run {
            1 => '.',
            2 => '_',
            3 => '-',
            _ => return None,
        });
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_kafkas_docker_image() {
        let key = |n: &str| kafka_key_from_env(n);
        assert_eq!(key("NUM_PARTITIONS").as_deref(), Some("num.partitions"));
        assert_eq!(
            key("LISTENER_NAME_SASL__SSL_SCRAM___SHA___256_SASL_JAAS_CONFIG").as_deref(),
            Some("listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config")
        );
        assert_eq!(key("SUPER_USERS").as_deref(), Some("super.users"));
        assert_eq!(key("A____B"), None);
    }

    #[test]
    fn defaults() {
        let c = Config::build(&Flags::default(), FileConfig::default(), BTreeMap::new())
            .expect("valid");
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listen, "127.0.0.1:9092");
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.voters.get(&1).map(String::as_str), Some("127.0.0.1:9093"));
        assert!(c.kafka.auto_create_topics_enable);
        assert_eq!(c.kafka.num_partitions, 1);
    }

    #[test]
    fn flags_beat_file() {
        let file: FileConfig = toml::from_str(
            "node_id = 3\nlisten = \"127.0.0.1:1000\"\nvoters = \"3@127.0.0.1:2000\"\n[kafka]\n\"num.partitions\" = 6\n",
        )
        .expect("toml");
        let flags = Flags {
            listen: Some("127.0.0.1:1111".into()),
            ..Flags::default()
        };
        let mut raw = BTreeMap::new();
        raw.insert("num.partitions".to_string(), "6".to_string());
        let c = Config::build(&flags, file, raw).expect("valid");
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen, "127.0.0.1:1111");
        assert_eq!(c.kafka.num_partitions, 6);
    }

    #[test]
    fn shipped_config_file_is_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gregor.toml");
        let text = std::fs::read_to_string(path).expect("config/gregor.toml");
        let file: FileConfig = toml::from_str(&text).expect("parses");
        let raw: BTreeMap<String, String> = file
            .kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string().trim_matches('"').to_string()))
            .collect();
        let c = Config::build(&Flags::default(), file, raw).expect("valid");
        let d = Config::build(&Flags::default(), FileConfig::default(), BTreeMap::new())
            .expect("valid");
        assert_eq!(c.node_id, d.node_id);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.kafka.num_partitions, d.kafka.num_partitions);
        assert_eq!(
            c.topic_defaults.resolve(&BTreeMap::new()),
            d.topic_defaults.resolve(&BTreeMap::new())
        );
    }

    #[test]
    fn rejects_bad_voters() {
        assert!(parse_voters("1@a:1,1@b:2").is_err());
        assert!(parse_voters("x@a:1").is_err());
        assert!(parse_voters("1@nohostport").is_err());
        let v = parse_voters("1@h1:9093, 2@h2:9093").expect("valid");
        assert_eq!(v.len(), 2);
    }
}
