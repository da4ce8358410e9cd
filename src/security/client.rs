//! How this broker connects, as a client, to a listener of another broker (followers fetching
//! from leaders): TLS with the listener's truststore (and keystore, for mutual TLS), and SASL
//! with `sasl.mechanism.inter.broker.protocol` and the username and password of that
//! mechanism's JAAS config on the listener, as Kafka's inter-broker clients do.

use std::fmt;
use std::sync::Arc;

use super::jaas;
use super::listeners::Listener;
use super::sasl::{Mechanism, SaslClient};

/// Who this broker is towards a SASL listener.
#[derive(Clone)]
pub struct ClientCredentials {
    pub mechanism: Mechanism,
    pub username: String,
    password: String,
}

impl ClientCredentials {
    /// A fresh exchange for one connection.
    pub fn sasl_client(&self) -> SaslClient {
        SaslClient::new(self.mechanism, &self.username, &self.password)
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("mechanism", &self.mechanism.name())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The security of outgoing connections to one listener.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<Arc<super::tls::ReloadingClientConfig>>,
    pub sasl: Option<ClientCredentials>,
}

impl fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl ClientSecurity {
    /// For connections to `listener` (of any broker: they share its settings), authenticating
    /// with `mechanism` where the listener speaks SASL.
    pub fn for_listener(listener: &Listener, mechanism: &str) -> Result<Self, String> {
        let tls = if listener.protocol.uses_tls() {
            let files = listener.tls.as_ref().ok_or_else(|| {
                format!(
                    "listener {} uses TLS but has no ssl.* settings",
                    listener.name
                )
            })?;
            Some(Arc::new(
                super::tls::ReloadingClientConfig::load(files.clone())
                    .map_err(|e| format!("inter-broker TLS on listener {}: {e}", listener.name))?,
            ))
        } else {
            None
        };
        let sasl = if listener.protocol.uses_sasl() {
            let parsed = Mechanism::parse(mechanism).ok_or_else(|| {
                format!("sasl.mechanism.inter.broker.protocol: unsupported mechanism {mechanism:?}")
            })?;
            let text = listener.jaas.get(parsed.name()).ok_or_else(|| {
                format!(
                    "listener {} needs a {} sasl.jaas.config with username and password for \
                     inter-broker connections",
                    listener.name,
                    parsed.name()
                )
            })?;
            let config = jaas::parse(text).map_err(|e| {
                format!(
                    "listener {} {} JAAS config: {e}",
                    listener.name,
                    parsed.name()
                )
            })?;
            let (Some(username), Some(password)) = (config.username(), config.password()) else {
                return Err(format!(
                    "listener {} {} JAAS config needs username and password for inter-broker \
                     connections",
                    listener.name,
                    parsed.name()
                ));
            };
            Some(ClientCredentials {
                mechanism: parsed,
                username: username.to_string(),
                password: password.to_string(),
            })
        } else {
            None
        };
        Ok(Self { tls, sasl })
    }
}
