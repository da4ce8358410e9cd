//! TLS with rustls (ring), from PEM files as Kafka's PEM support takes them: a keystore file
//! holding the private key and the certificate chain (`ssl.keystore.location`,
//! `ssl.keystore.type=PEM`), a truststore file of CA certificates (`ssl.truststore.location`),
//! and `ssl.client.auth` = none | requested | required.
//!
//! A server's certificates are reloaded when their files change on disk (cert-manager rotates
//! them in place): [`ReloadingServerConfig::reload_if_changed`] is polled, and a change that
//! does not load keeps the old configuration and is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "ssl.client.auth must be none, requested or required, not {other:?}"
            )),
        }
    }
}

/// The files and policy of one TLS endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Private key and certificate chain (PEM).
    pub keystore: Option<PathBuf>,
    /// CA certificates (PEM): who may connect (server) or be connected to (client).
    pub truststore: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// ring: a small, portable build (aws-lc-rs would add post-quantum key exchange, which no
/// Kafka client negotiates today, at the cost of a C toolchain build).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if text.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(format!(
            "{}: encrypted private keys are not supported; store the key unencrypted",
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| format!("{}: no usable private key ({e})", path.display()))
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Builds a server configuration from `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let keystore = files
        .keystore
        .as_deref()
        .ok_or("a TLS listener needs ssl.keystore.location")?;
    let key = read_key(keystore)?;
    let chain = read_chain(keystore)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match files.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let truststore = files
                .truststore
                .as_deref()
                .ok_or("ssl.client.auth needs ssl.truststore.location")?;
            let roots = Arc::new(read_roots(truststore)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", keystore.display()))?;
    Ok(Arc::new(config))
}

/// Builds a client configuration: servers are verified against the truststore; the keystore,
/// if any, is the client certificate (mutual TLS).
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let truststore = files
        .truststore
        .as_deref()
        .ok_or("a TLS client needs ssl.truststore.location")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(read_roots(truststore)?);
    let config = match files.keystore.as_deref() {
        Some(keystore) => builder
            .with_client_auth_cert(read_chain(keystore)?, read_key(keystore)?)
            .map_err(|e| format!("{}: {e}", keystore.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What a file looked like when it was loaded: a change of either means reload.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [files.keystore.as_deref(), files.truststore.as_deref()]
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(p?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// A TLS configuration that follows its files: certificates rotated on disk (as cert-manager
/// does) are used by connections made after the change.
pub struct Reloading<C> {
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<Arc<C>, String>,
    current: ArcSwap<C>,
    loaded: Mutex<Stamp>,
}

/// For listeners: the certificate served to clients and the CA that client certificates
/// are checked against.
pub type ReloadingServerConfig = Reloading<ServerConfig>;
/// For connections to other brokers: the CA they are checked against and, for mutual TLS,
/// this broker's certificate.
pub type ReloadingClientConfig = Reloading<ClientConfig>;

impl ReloadingServerConfig {
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        Reloading::new(files, server_config)
    }
}

impl ReloadingClientConfig {
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        Reloading::new(files, client_config)
    }
}

impl<C> Reloading<C> {
    fn new(
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<Arc<C>, String>,
    ) -> Result<Self, String> {
        let loaded = stamp(&files);
        let config = build(&files)?;
        Ok(Self {
            files,
            build,
            current: ArcSwap::new(config),
            loaded: Mutex::new(loaded),
        })
    }

    pub fn current(&self) -> Arc<C> {
        self.current.load_full()
    }

    /// The configuration for a new connection, reloaded first if a file changed (two
    /// `stat`s: for planes whose connections are few and long-lived).
    pub fn fresh(&self) -> Arc<C> {
        self.reload_if_changed();
        self.current()
    }

    /// Reloads when a file changed since the last load. Returns whether a new configuration
    /// is in use; a change that fails to load is logged and the old configuration stays.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        let mut loaded = self.loaded.lock();
        if *loaded == now {
            return false;
        }
        match (self.build)(&self.files) {
            Ok(config) => {
                self.current.store(config);
                *loaded = now;
                tracing::info!(keystore = ?self.files.keystore, truststore = ?self.files.truststore,
                    "reloaded TLS certificates");
                true
            }
            Err(e) => {
                // Files are often replaced in two steps; try again at the next poll.
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the old certificates");
                false
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for tests: a CA and certificates it signs, written as PEM files.

    use std::path::{Path, PathBuf};

    pub struct TestCa {
        pub cert: rcgen::Certificate,
        pub key: rcgen::KeyPair,
    }

    impl TestCa {
        pub fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test CA");
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("ca");
            Self { cert, key }
        }

        /// Writes `<name>.pem` (key + chain) for a certificate with `cn`, valid for localhost
        /// and 127.0.0.1, and returns its path.
        pub fn issue(&self, dir: &Path, name: &str, cn: &str) -> PathBuf {
            let mut params = rcgen::CertificateParams::new(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params
                .signed_by(&key, &self.cert, &self.key)
                .expect("signed");
            let path = dir.join(format!("{name}.pem"));
            std::fs::write(&path, format!("{}{}", key.serialize_pem(), cert.pem())).expect("write");
            path
        }

        pub fn write_ca(&self, dir: &Path) -> PathBuf {
            let path = dir.join("ca.pem");
            std::fs::write(&path, self.cert.pem()).expect("write");
            path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestCa;
    use super::*;

    #[test]
    fn loads_pem_files_and_reloads_when_they_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let truststore = ca.write_ca(dir.path());
        let keystore = ca.issue(dir.path(), "server", "broker-1");
        let files = TlsFiles {
            keystore: Some(keystore.clone()),
            truststore: Some(truststore.clone()),
            client_auth: ClientAuth::Required,
        };
        let server = ReloadingServerConfig::load(files.clone()).expect("loads");
        assert!(!server.reload_if_changed());
        let first = server.current();
        // A rotated certificate (new content, new size or time) is picked up.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let rotated = ca.issue(dir.path(), "rotated", "broker-1-renewed");
        std::fs::copy(&rotated, &keystore).expect("rotate");
        assert!(server.reload_if_changed());
        assert!(!Arc::ptr_eq(&first, &server.current()));
        client_config(&files).expect("client with a certificate");
        // A broken file keeps the old configuration.
        std::fs::write(&keystore, "garbage").expect("break");
        assert!(!server.reload_if_changed());
        let encrypted = dir.path().join("enc.pem");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .expect("write");
        let err = server_config(&TlsFiles {
            keystore: Some(encrypted),
            truststore: None,
            client_auth: ClientAuth::None,
        })
        .expect_err("encrypted keys");
        assert!(err.contains("encrypted"), "{err}");
        assert!(ClientAuth::parse("sometimes").is_err());
    }
}
