//! Listeners and their security, from Kafka's own keys: `listeners`, `advertised.listeners`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`,
//! `sasl.mechanism.inter.broker.protocol`, `sasl.enabled.mechanisms`, the `ssl.*` PEM keys,
//! and the JAAS configs of SASL mechanisms. A key may be given for one listener with Kafka's
//! prefix `listener.name.<listener>.` (lower case), which wins over the plain key.
//!
//! Gregor's `listen`/`advertise` remain the shorthand for a single PLAINTEXT listener; when
//! `listeners` is set it defines them all. The controller (Raft) plane takes its security from
//! the `CONTROLLER` entry of `listener.security.protocol.map` (PLAINTEXT by default), with
//! `listener.name.controller.*` keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::tls::{ClientAuth, TlsFiles};

/// Kafka's security protocols (and their ids in the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext = 0,
    Ssl = 1,
    SaslPlaintext = 2,
    SaslSsl = 3,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            other => Err(format!("unknown security protocol {other:?}")),
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn id(self) -> i16 {
        self as i16
    }
}

/// One client listener.
/// `Debug` shows which mechanisms have a JAAS config, never the text (it holds passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Listener {
    /// As configured, upper case (`PLAINTEXT`, `SASL_SSL`, or a custom name).
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where to bind, `host:port` (an empty host binds every interface).
    pub bind: String,
    /// What Metadata tells clients of this listener.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub tls: Option<TlsFiles>,
    /// SASL mechanism names enabled here (for SASL protocols).
    pub sasl_mechanisms: Vec<String>,
    /// JAAS config text per mechanism name (upper case), for SASL protocols.
    pub jaas: BTreeMap<String, String>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("bind", &self.bind)
            .field("advertised_host", &self.advertised_host)
            .field("advertised_port", &self.advertised_port)
            .field("tls", &self.tls)
            .field("sasl_mechanisms", &self.sasl_mechanisms)
            .field("jaas", &format_args!("{:?} (hidden)", self.jaas.keys()))
            .finish()
    }
}

/// The security of the controller (Raft) plane. `Debug` hides the JAAS text.
#[derive(Clone, PartialEq, Eq)]
pub struct ControllerPlane {
    pub protocol: SecurityProtocol,
    pub tls: Option<TlsFiles>,
    /// The PLAIN JAAS config: its `user_<name>` entries may connect; its username/password
    /// is this broker's identity towards other controllers.
    pub plain_jaas: Option<String>,
}

impl std::fmt::Debug for ControllerPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerPlane")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .field(
                "plain_jaas",
                &self.plain_jaas.as_ref().map(|_| format_args!("(hidden)")),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub listeners: Vec<Listener>,
    /// `inter.broker.listener.name`: followers fetch from leaders on this listener.
    pub inter_broker_listener: String,
    /// `sasl.mechanism.inter.broker.protocol`.
    pub inter_broker_mechanism: String,
    pub controller: ControllerPlane,
    /// `connections.max.reauth.ms` (0: sessions never expire).
    pub reauth_ms: i64,
    /// `connection.failed.authentication.delay.ms`.
    pub failed_auth_delay_ms: u64,
}

/// Kafka's default `listener.security.protocol.map`.
const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Looks a key up for a listener: `listener.name.<listener>.<key>` (the listener lower case;
/// `_` in it may also be given as `.`, as environment variables spell it), then `<key>`.
pub fn listener_key<'a>(
    raw: &'a BTreeMap<String, String>,
    listener: &str,
    key: &str,
) -> Option<&'a str> {
    let lower = listener.to_ascii_lowercase();
    [
        format!("listener.name.{lower}.{key}"),
        format!("listener.name.{}.{key}", lower.replace('_', ".")),
    ]
    .iter()
    .find_map(|k| raw.get(k))
    .or_else(|| raw.get(key))
    .map(String::as_str)
}

/// Splits `NAME://host:port`.
fn parse_endpoint(text: &str) -> Result<(String, String, i32), String> {
    let (name, addr) = text
        .split_once("://")
        .ok_or_else(|| format!("{text:?} is not NAME://host:port"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{text:?}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((
        name.trim().to_ascii_uppercase(),
        host.to_string(),
        port as i32,
    ))
}

fn parse_list(text: &str) -> Result<Vec<(String, String, i32)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_endpoint)
        .collect()
}

fn protocol_map(
    raw: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let text = raw
        .get("listener.security.protocol.map")
        .map(String::as_str)
        .unwrap_or(DEFAULT_PROTOCOL_MAP);
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, protocol) = pair.split_once(':').ok_or_else(|| {
            format!("listener.security.protocol.map: {pair:?} is not NAME:PROTOCOL")
        })?;
        map.insert(
            name.trim().to_ascii_uppercase(),
            SecurityProtocol::parse(protocol)
                .map_err(|e| format!("listener.security.protocol.map: {e}"))?,
        );
    }
    Ok(map)
}

/// The TLS files of a listener (or the controller plane), from its keys.
fn tls_files(raw: &BTreeMap<String, String>, listener: &str) -> Result<TlsFiles, String> {
    let key = |k: &str| listener_key(raw, listener, k);
    for (k, want) in [("ssl.keystore.type", "PEM"), ("ssl.truststore.type", "PEM")] {
        if let Some(v) = key(k) {
            if !v.trim().eq_ignore_ascii_case(want) {
                return Err(format!("{k} must be PEM (got {v:?})"));
            }
        }
    }
    if key("ssl.key.password").is_some_and(|p| !p.is_empty()) {
        return Err("ssl.key.password: encrypted private keys are not supported".into());
    }
    let path = |k: &str| key(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    Ok(TlsFiles {
        keystore: path("ssl.keystore.location"),
        truststore: path("ssl.truststore.location"),
        client_auth: ClientAuth::parse(key("ssl.client.auth").unwrap_or("none"))?,
    })
}

/// The JAAS config text for `mechanism` on `listener`: Kafka's
/// `listener.name.<l>.<mechanism lower>.sasl.jaas.config`, else `sasl.jaas.config`.
fn jaas_for(raw: &BTreeMap<String, String>, listener: &str, mechanism: &str) -> Option<String> {
    let key = format!("{}.sasl.jaas.config", mechanism.to_ascii_lowercase());
    let lower = listener.to_ascii_lowercase();
    [
        format!("listener.name.{lower}.{key}"),
        format!("listener.name.{}.{key}", lower.replace('_', ".")),
        "sasl.jaas.config".to_string(),
    ]
    .iter()
    .find_map(|k| raw.get(k))
    .cloned()
}

/// The SASL mechanisms Gregor implements.
pub const SUPPORTED_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Parses the listener settings. `listen`/`advertise` are Gregor's single-PLAINTEXT shorthand,
/// used when `listeners` is not set.
pub fn from_raw(
    raw: &BTreeMap<String, String>,
    listen: &str,
    advertise: (&str, i32),
) -> Result<ListenerSettings, String> {
    let protocols = protocol_map(raw)?;
    let binds = match raw.get("listeners").filter(|l| !l.trim().is_empty()) {
        Some(text) => parse_list(text).map_err(|e| format!("listeners: {e}"))?,
        None => {
            let (host, port) = listen
                .rsplit_once(':')
                .ok_or_else(|| format!("listen address {listen:?} has no port"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("bad listen port in {listen:?}"))?;
            vec![("PLAINTEXT".to_string(), host.to_string(), port as i32)]
        }
    };
    let advertised = match raw
        .get("advertised.listeners")
        .filter(|l| !l.trim().is_empty())
    {
        Some(text) => parse_list(text).map_err(|e| format!("advertised.listeners: {e}"))?,
        None if raw.contains_key("listeners") => binds.clone(),
        None => vec![(
            "PLAINTEXT".to_string(),
            advertise.0.to_string(),
            advertise.1,
        )],
    };
    let mut listeners = Vec::new();
    for (name, host, port) in &binds {
        if listeners.iter().any(|l: &Listener| l.name == *name) {
            return Err(format!("listeners: {name} is listed twice"));
        }
        let protocol = match protocols.get(name) {
            Some(p) => *p,
            None => {
                return Err(format!(
                    "listener {name} has no security protocol in listener.security.protocol.map"
                ))
            }
        };
        let (adv_host, adv_port) = advertised
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, h, p)| (h.clone(), *p))
            .unwrap_or_else(|| (host.clone(), *port));
        if adv_host.is_empty() || adv_host == "0.0.0.0" || adv_host == "::" {
            return Err(format!(
                "listener {name} would advertise {adv_host:?}; set advertised.listeners"
            ));
        }
        let tls = if protocol.uses_tls() {
            let files = tls_files(raw, name)?;
            if files.keystore.is_none() {
                return Err(format!(
                    "listener {name} uses TLS but has no ssl.keystore.location"
                ));
            }
            Some(files)
        } else {
            None
        };
        let (sasl_mechanisms, jaas) = if protocol.uses_sasl() {
            let enabled = listener_key(raw, name, "sasl.enabled.mechanisms")
                .unwrap_or("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512");
            let mechanisms: Vec<String> = enabled
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            if let Some(m) = mechanisms
                .iter()
                .find(|m| !SUPPORTED_MECHANISMS.contains(&m.as_str()))
            {
                return Err(format!(
                    "sasl.enabled.mechanisms of {name}: {m} is not supported ({})",
                    SUPPORTED_MECHANISMS.join(", ")
                ));
            }
            if mechanisms.is_empty() {
                return Err(format!("listener {name}: sasl.enabled.mechanisms is empty"));
            }
            let jaas = mechanisms
                .iter()
                .filter_map(|m| jaas_for(raw, name, m).map(|j| (m.clone(), j)))
                .collect();
            (mechanisms, jaas)
        } else {
            (Vec::new(), BTreeMap::new())
        };
        listeners.push(Listener {
            name: name.clone(),
            protocol,
            bind: format!("{host}:{port}"),
            advertised_host: adv_host,
            advertised_port: adv_port,
            tls,
            sasl_mechanisms,
            jaas,
        });
    }
    let inter_broker_listener = match raw.get("inter.broker.listener.name") {
        Some(n) => n.trim().to_ascii_uppercase(),
        None => listeners
            .iter()
            .find(|l| l.protocol == SecurityProtocol::Plaintext)
            .or(listeners.first())
            .map(|l| l.name.clone())
            .unwrap_or_default(),
    };
    if !listeners.iter().any(|l| l.name == inter_broker_listener) {
        return Err(format!(
            "inter.broker.listener.name {inter_broker_listener} is not one of the listeners"
        ));
    }
    let inter_broker_mechanism = raw
        .get("sasl.mechanism.inter.broker.protocol")
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "PLAIN".to_string());
    if !SUPPORTED_MECHANISMS.contains(&inter_broker_mechanism.as_str()) {
        return Err(format!(
            "sasl.mechanism.inter.broker.protocol {inter_broker_mechanism} is not supported ({})",
            SUPPORTED_MECHANISMS.join(", ")
        ));
    }
    let controller_protocol = protocols
        .get("CONTROLLER")
        .copied()
        .unwrap_or(SecurityProtocol::Plaintext);
    let controller = ControllerPlane {
        protocol: controller_protocol,
        tls: if controller_protocol.uses_tls() {
            Some(tls_files(raw, "CONTROLLER")?)
        } else {
            None
        },
        plain_jaas: controller_protocol
            .uses_sasl()
            .then(|| {
                jaas_for(raw, "CONTROLLER", "PLAIN")
                    .or_else(|| jaas_for(raw, &inter_broker_listener, "PLAIN"))
            })
            .flatten(),
    };
    if controller_protocol.uses_sasl() && controller.plain_jaas.is_none() {
        return Err(
            "the controller plane uses SASL but no PLAIN sasl.jaas.config is set for it".into(),
        );
    }
    let number = |key: &str, default: i64| -> Result<i64, String> {
        raw.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("{key}: invalid value {v:?}"))
            })
            .unwrap_or(Ok(default))
    };
    Ok(ListenerSettings {
        listeners,
        inter_broker_listener,
        inter_broker_mechanism,
        controller,
        reauth_ms: number("connections.max.reauth.ms", 0)?.max(0),
        failed_auth_delay_ms: number("connection.failed.authentication.delay.ms", 100)?.max(0)
            as u64,
    })
}

impl ListenerSettings {
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn inter_broker(&self) -> &Listener {
        self.listener(&self.inter_broker_listener)
            .expect("validated: the inter-broker listener is one of the listeners")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shorthand_is_one_plaintext_listener() {
        let s = from_raw(&BTreeMap::new(), "0.0.0.0:9092", ("broker-1", 9092)).expect("valid");
        assert_eq!(s.listeners.len(), 1);
        let l = &s.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.protocol),
            ("PLAINTEXT", SecurityProtocol::Plaintext)
        );
        assert_eq!(
            (l.bind.as_str(), l.advertised_host.as_str()),
            ("0.0.0.0:9092", "broker-1")
        );
        assert_eq!(s.inter_broker_listener, "PLAINTEXT");
        assert_eq!(s.controller.protocol, SecurityProtocol::Plaintext);
    }

    #[test]
    fn kafka_listener_keys() {
        let r = raw(&[
            ("listeners", "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094,INTERNAL://127.0.0.1:9095"),
            ("advertised.listeners", "PLAINTEXT://a:9092,SASL_SSL://a:19094,INTERNAL://a:9095"),
            ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"),
            ("inter.broker.listener.name", "INTERNAL"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", "/certs/server.pem"),
            ("ssl.truststore.location", "/certs/ca.pem"),
            ("listener.name.internal.ssl.client.auth", "required"),
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512"),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"x\";"),
        ]);
        let s = from_raw(&r, "127.0.0.1:1", ("x", 1)).expect("valid");
        let sasl = s.listener("SASL_SSL").expect("listener");
        assert_eq!(sasl.advertised_port, 19094);
        assert_eq!(sasl.sasl_mechanisms, vec!["PLAIN", "SCRAM-SHA-512"]);
        assert!(sasl.jaas.contains_key("PLAIN") && !sasl.jaas.contains_key("SCRAM-SHA-512"));
        assert_eq!(
            sasl.tls.as_ref().map(|t| t.client_auth),
            Some(ClientAuth::None)
        );
        assert_eq!(
            s.inter_broker().tls.as_ref().map(|t| t.client_auth),
            Some(ClientAuth::Required)
        );
        assert_eq!(s.controller.protocol, SecurityProtocol::Ssl);
        // The env-var spelling of a listener with an underscore.
        let mut r2 = r.clone();
        r2.remove("listener.name.sasl_ssl.plain.sasl.jaas.config");
        r2.insert(
            "listener.name.sasl.ssl.plain.sasl.jaas.config".into(),
            "jaas".into(),
        );
        let s2 = from_raw(&r2, "127.0.0.1:1", ("x", 1)).expect("valid");
        assert_eq!(s2.listener("SASL_SSL").expect("l").jaas["PLAIN"], "jaas");
    }

    #[test]
    fn refuses_what_kafka_refuses() {
        let bad = [
            vec![("listeners", "NOPE://:1")],
            vec![("listeners", "SSL://127.0.0.1:1")],
            vec![
                ("listeners", "PLAINTEXT://127.0.0.1:1"),
                ("inter.broker.listener.name", "SSL"),
            ],
            vec![
                ("listeners", "SASL_PLAINTEXT://127.0.0.1:1"),
                ("sasl.enabled.mechanisms", "GSSAPI"),
            ],
            vec![("listeners", "PLAINTEXT://0.0.0.0:1")],
            vec![
                ("ssl.keystore.type", "JKS"),
                ("listeners", "SSL://127.0.0.1:1"),
                ("ssl.keystore.location", "/k"),
            ],
        ];
        for pairs in bad {
            assert!(
                from_raw(&raw(&pairs), "127.0.0.1:1", ("x", 1)).is_err(),
                "{pairs:?}"
            );
        }
    }
}
