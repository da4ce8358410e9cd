//! Who looks at the console. When the broker has authentication on (any SASL listener, or the
//! authorizer), every console request needs HTTP Basic credentials of a user the Kafka
//! listeners know: a SCRAM user of the metadata (the password is checked by recomputing the
//! stored key from the stored salt and iterations) or a PLAIN user of a listener's JAAS
//! config. The viewer is then `User:<name>` and the console asks the same authorizer as a
//! Kafka client would (a `Session` for that principal): DESCRIBE to see a topic or a group,
//! READ to browse a topic's messages. Without authentication the viewer is `User:ANONYMOUS`,
//! whom the authorizer (off in that case) allows everything.
//!
//! A successful check is remembered for a minute under a hash of user and password (never
//! the password), so a page's requests do not each pay the SCRAM iterations.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::api::session::Session;
use crate::broker::Broker;
use crate::security::principal::KafkaPrincipal;
use crate::security::sasl::{credential_from_password, Mechanism};

const REMEMBER: Duration = Duration::from_secs(60);
const REMEMBERED_MAX: usize = 1024;

/// A console viewer: their principal, as a session the authorizer decides for.
pub struct Viewer {
    pub user: Option<String>,
    pub session: Session,
}

#[derive(Default)]
pub struct Authenticator {
    /// sha256(user, password) -> when the check passed, and the image version then.
    remembered: Mutex<HashMap<[u8; 32], (Instant, u64)>>,
}

/// Whether the console asks for credentials: some listener speaks SASL, or the authorizer is on.
pub fn required(broker: &Broker) -> bool {
    broker.config.authorizer.is_some()
        || broker
            .config
            .listeners
            .listeners
            .iter()
            .any(|l| l.protocol.uses_sasl())
}

impl Authenticator {
    /// The viewer for a request's `Authorization` header; `None`: answer 401.
    pub fn viewer(
        &self,
        broker: &Broker,
        authorization: Option<&str>,
        host: &str,
    ) -> Option<Viewer> {
        let authorizer = broker.config.authorizer.clone();
        if !required(broker) {
            let session = Session::new(
                KafkaPrincipal::anonymous(),
                host.to_string(),
                "CONSOLE".into(),
                authorizer,
            );
            return Some(Viewer {
                user: None,
                session,
            });
        }
        let (user, password) = basic_credentials(authorization?)?;
        if !self.check(broker, &user, &password) {
            return None;
        }
        let session = Session::new(
            KafkaPrincipal::user(user.clone()),
            host.to_string(),
            "CONSOLE".into(),
            authorizer,
        );
        Some(Viewer {
            user: Some(user),
            session,
        })
    }

    fn check(&self, broker: &Broker, user: &str, password: &str) -> bool {
        let image = broker.image();
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.len().to_be_bytes())
            .chain_update(user.as_bytes())
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if let Some((at, version)) = self.remembered.lock().get(&key) {
            if at.elapsed() < REMEMBER && *version == image.version {
                return true;
            }
        }
        let ok = scram_matches(&image, user, password) || plain_matches(broker, user, password);
        if ok {
            let mut remembered = self.remembered.lock();
            if remembered.len() >= REMEMBERED_MAX {
                remembered.retain(|_, (at, _)| at.elapsed() < REMEMBER);
                if remembered.len() >= REMEMBERED_MAX {
                    remembered.clear();
                }
            }
            remembered.insert(key, (Instant::now(), image.version));
        }
        ok
    }
}

/// `Basic base64(user:password)`.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

fn scram_matches(image: &crate::meta::image::MetadataImage, user: &str, password: &str) -> bool {
    let Some(stored) = image.scram_credentials.get(user) else {
        return false;
    };
    [Mechanism::ScramSha512, Mechanism::ScramSha256]
        .iter()
        .any(|m| {
            stored.get(m.name()).is_some_and(|c| {
                let mine = credential_from_password(*m, password, &c.salt, c.iterations);
                constant_time_eq(&mine.stored_key, &c.stored_key)
            })
        })
}

fn plain_matches(broker: &Broker, user: &str, password: &str) -> bool {
    broker.config.listeners.listeners.iter().any(|l| {
        l.jaas.get("PLAIN").is_some_and(|text| {
            crate::security::jaas::parse(text).is_ok_and(|jaas| {
                jaas.plain_users()
                    .get(user)
                    .is_some_and(|p| constant_time_eq(p.as_bytes(), password.as_bytes()))
            })
        })
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3:cret")
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("alice".to_string(), "s3:cret".to_string()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        let empty_user = base64::engine::general_purpose::STANDARD.encode(":x");
        assert_eq!(basic_credentials(&format!("Basic {empty_user}")), None);
    }

    #[test]
    fn scram_password_is_checked_against_the_stored_key() {
        let mut image = crate::meta::image::MetadataImage::default();
        let cred = credential_from_password(Mechanism::ScramSha256, "pw", b"salt", 4096);
        image
            .scram_credentials
            .entry("bob".into())
            .or_default()
            .insert(
                "SCRAM-SHA-256".into(),
                crate::meta::image::ScramCredential {
                    salt: cred.salt,
                    stored_key: cred.stored_key,
                    server_key: cred.server_key,
                    iterations: cred.iterations,
                },
            );
        assert!(scram_matches(&image, "bob", "pw"));
        assert!(!scram_matches(&image, "bob", "pw2"));
        assert!(!scram_matches(&image, "eve", "pw"));
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac"));
    }
}
