//! One client listener at run time: its name and security protocol, its TLS configuration
//! (reloaded when the certificate files change), and the start of each connection on it: the
//! TLS handshake, the principal a client certificate gives, and the session the connection's
//! requests run in. SASL, where the protocol has it, happens in-band (`dispatch`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::connection::{serve_stream, serve_tcp};
use super::memory_pool::MemoryPool;
use crate::api::sasl::SaslListener;
use crate::api::session::Session;
use crate::broker::Broker;
use crate::security::jaas;
use crate::security::listeners::{Listener, ListenerSettings, SecurityProtocol};
use crate::security::principal::KafkaPrincipal;
use crate::security::sasl::Mechanism;
use crate::security::tls::ReloadingServerConfig;

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ListenerRuntime {
    pub config: Listener,
    name: Arc<str>,
    tls: Option<ReloadingServerConfig>,
    sasl: Option<Arc<SaslListener>>,
}

impl ListenerRuntime {
    /// Loads the listener's TLS files and SASL users (an error names what is wrong, never a
    /// secret).
    pub fn new(config: Listener, settings: &ListenerSettings) -> Result<Self, String> {
        let tls = match &config.tls {
            Some(files) => Some(
                ReloadingServerConfig::load(files.clone())
                    .map_err(|e| format!("listener {}: {e}", config.name))?,
            ),
            None => None,
        };
        let sasl = if config.protocol.uses_sasl() {
            Some(Arc::new(sasl_listener(&config, settings)?))
        } else {
            None
        };
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            config,
            tls,
            sasl,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.config.protocol
    }

    pub fn reload_tls_if_changed(&self) {
        if let Some(tls) = &self.tls {
            tls.reload_if_changed();
        }
    }

    fn session(&self, broker: &Broker, principal: KafkaPrincipal, peer: &SocketAddr) -> Session {
        let session = Session::new(
            principal,
            peer.ip().to_string(),
            self.name.clone(),
            broker.config.authorizer.clone(),
        );
        match &self.sasl {
            Some(sasl) => session.with_sasl(sasl.clone()),
            None => session,
        }
    }

    /// Runs one accepted connection to its end.
    pub async fn serve(
        &self,
        broker: Arc<Broker>,
        pool: Arc<MemoryPool>,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let Some(tls) = &self.tls else {
            let session = self.session(&broker, KafkaPrincipal::anonymous(), &peer);
            return serve_tcp(broker, pool, stream, peer, session).await;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    broker.metrics.authentication(false);
                    tracing::info!(%peer, listener = %self.name, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    broker.metrics.authentication(false);
                    tracing::info!(%peer, listener = %self.name, "TLS handshake timed out");
                    return;
                }
            },
            _ = broker.shutdown.cancelled() => return,
        };
        let principal = match stream.get_ref().1.peer_certificates() {
            Some([cert, ..]) => match KafkaPrincipal::from_certificate(cert.as_ref()) {
                Ok(p) => p,
                Err(e) => {
                    broker.metrics.authentication(false);
                    tracing::info!(%peer, error = %e, "closing a connection with an unreadable client certificate");
                    return;
                }
            },
            _ => KafkaPrincipal::anonymous(),
        };
        if self.sasl.is_none() {
            broker.metrics.authentication(true);
        }
        let session = self.session(&broker, principal, &peer);
        serve_stream(broker, pool, stream, peer, session).await
    }
}

/// A SASL listener's mechanisms and PLAIN users (from its PLAIN JAAS config).
fn sasl_listener(config: &Listener, settings: &ListenerSettings) -> Result<SaslListener, String> {
    let mechanisms = config
        .sasl_mechanisms
        .iter()
        .map(|m| Mechanism::parse(m).ok_or_else(|| format!("unsupported SASL mechanism {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    let plain_users = match config.jaas.get("PLAIN") {
        Some(text) => jaas::parse(text)
            .map_err(|e| format!("listener {}: PLAIN sasl.jaas.config: {e}", config.name))?
            .plain_users(),
        None if mechanisms.contains(&Mechanism::Plain) => {
            return Err(format!(
                "listener {} enables PLAIN but has no PLAIN sasl.jaas.config (listener.name.{}.plain.sasl.jaas.config)",
                config.name,
                config.name.to_ascii_lowercase()
            ))
        }
        None => Default::default(),
    };
    Ok(SaslListener {
        mechanisms,
        plain_users,
        reauth_ms: settings.reauth_ms,
        failed_auth_delay: Duration::from_millis(settings.failed_auth_delay_ms),
    })
}
