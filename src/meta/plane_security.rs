//! Security of the controller (Raft) plane, configured on its own (`CONTROLLER` in
//! `listener.security.protocol.map`): TLS on every connection between controllers (mutual
//! when `ssl.client.auth=required`), and with SASL_SSL a PLAIN exchange right after the TLS
//! handshake: the connecting node sends its identity, the listener checks it against its
//! PLAIN users and answers before any RPC. SCRAM is not offered here, as in KRaft: its
//! credentials live in the metadata log this plane replicates.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use super::wire;
use crate::security::jaas;
use crate::security::listeners::ControllerPlane;
use crate::security::tls::{ReloadingClientConfig, ReloadingServerConfig};

/// A controller connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
pub(super) type Conn = BufStream<Box<dyn Io>>;

/// PLAIN credentials on the plane.
#[derive(Clone)]
pub struct PlaneAuth {
    /// This node's identity towards the others.
    pub username: String,
    pub password: String,
    /// Who may connect: user → password.
    pub users: BTreeMap<String, String>,
}

impl std::fmt::Debug for PlaneAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaneAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How controllers talk to each other.
#[derive(Clone, Default)]
pub struct PlaneSecurity {
    pub server_tls: Option<Arc<ReloadingServerConfig>>,
    pub client_tls: Option<Arc<ReloadingClientConfig>>,
    pub auth: Option<PlaneAuth>,
}

impl std::fmt::Debug for PlaneSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaneSecurity")
            .field("tls", &self.server_tls.is_some())
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    user: String,
    password: String,
}

#[derive(Serialize, Deserialize)]
struct HelloReply {
    ok: bool,
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
}

/// Constant-time comparison of two secrets.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PlaneSecurity {
    /// From the `CONTROLLER` listener's settings: TLS for SSL and SASL_SSL, the PLAIN JAAS
    /// identity and users for SASL protocols.
    pub fn from_settings(plane: &ControllerPlane) -> Result<Self, String> {
        let (server_tls, client_tls) = match (&plane.tls, plane.protocol.uses_tls()) {
            (Some(files), true) => (
                Some(Arc::new(ReloadingServerConfig::load(files.clone())?)),
                Some(Arc::new(ReloadingClientConfig::load(files.clone())?)),
            ),
            (None, true) => {
                return Err("the CONTROLLER listener uses TLS but has no ssl.* files".into())
            }
            _ => (None, None),
        };
        let auth = if plane.protocol.uses_sasl() {
            let text = plane.plain_jaas.as_deref().ok_or(
                "the CONTROLLER listener uses SASL but has no \
                 listener.name.controller.plain.sasl.jaas.config",
            )?;
            let jaas = jaas::parse(text).map_err(|e| format!("CONTROLLER JAAS config: {e}"))?;
            let (Some(username), Some(password)) = (jaas.username(), jaas.password()) else {
                return Err("the CONTROLLER PLAIN JAAS config needs username and password".into());
            };
            Some(PlaneAuth {
                username: username.to_string(),
                password: password.to_string(),
                users: jaas.plain_users(),
            })
        } else {
            None
        };
        Ok(Self {
            server_tls,
            client_tls,
            auth,
        })
    }

    /// Secures an outgoing connection to the controller at `host`.
    pub(super) async fn connect(&self, stream: TcpStream, host: &str) -> io::Result<Conn> {
        let io: Box<dyn Io> = match &self.client_tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let connector = tokio_rustls::TlsConnector::from(config.fresh());
                Box::new(connector.connect(name, stream).await?)
            }
            None => Box::new(stream),
        };
        let mut conn = BufStream::new(io);
        if let Some(auth) = &self.auth {
            let hello = wire::encode(&Hello {
                user: auth.username.clone(),
                password: auth.password.clone(),
            })?;
            wire::write_frame(&mut conn, &hello).await?;
            conn.flush().await?;
            let reply = wire::read_frame(&mut conn, 1024).await?.ok_or_else(|| {
                refused("the controller closed the connection: credentials refused")
            })?;
            let reply: HelloReply = wire::decode(&reply)?;
            if !reply.ok {
                return Err(refused("the controller refused this node's credentials"));
            }
        }
        Ok(conn)
    }

    /// Secures an incoming connection; fails (and the caller closes it) when the peer does not
    /// complete TLS or its credentials are refused.
    pub(super) async fn accept(&self, stream: TcpStream) -> io::Result<Conn> {
        let io: Box<dyn Io> = match &self.server_tls {
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.fresh());
                Box::new(acceptor.accept(stream).await?)
            }
            None => Box::new(stream),
        };
        let mut conn = BufStream::new(io);
        if let Some(auth) = &self.auth {
            let hello = wire::read_frame(&mut conn, 64 * 1024)
                .await?
                .ok_or_else(|| refused("closed before authenticating"))?;
            let hello: Hello = wire::decode(&hello)?;
            let ok = auth
                .users
                .get(&hello.user)
                .is_some_and(|p| same(p.as_bytes(), hello.password.as_bytes()));
            wire::write_frame(&mut conn, &wire::encode(&HelloReply { ok })?).await?;
            conn.flush().await?;
            if !ok {
                return Err(refused(&format!(
                    "controller connection from user {:?}: authentication failed",
                    hello.user
                )));
            }
        }
        Ok(conn)
    }
}
