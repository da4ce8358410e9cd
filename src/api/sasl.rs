//! SaslHandshake and SaslAuthenticate (KIP-152), and re-authentication (KIP-368).
//!
//! On a SASL listener a connection starts unauthenticated: only ApiVersions and these two are
//! served (`server::dispatch` closes it on anything else). SaslHandshake picks a mechanism
//! the listener enables; SaslAuthenticate carries the mechanism's tokens until it succeeds
//! (the principal becomes `User:<name>`) or fails: then, after
//! `connection.failed.authentication.delay.ms`, the client gets SASL_AUTHENTICATION_FAILED
//! and the connection is closed. The failure is logged without the secret.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;
use super::session::{Authentication, Session};
use crate::meta::image::MetadataImage;
use crate::security::principal::KafkaPrincipal;
use crate::security::sasl::{CredentialStore, Mechanism, SaslServer, ScramCredential, ServerStep};

/// A listener's SASL setup: its enabled mechanisms and PLAIN users.
#[derive(Debug, Clone, Default)]
pub struct SaslListener {
    pub mechanisms: Vec<Mechanism>,
    /// `user_<name>` entries of the listener's PLAIN JAAS config.
    pub plain_users: BTreeMap<String, String>,
    /// `connections.max.reauth.ms` (0: sessions do not expire).
    pub reauth_ms: i64,
    /// `connection.failed.authentication.delay.ms`.
    pub failed_auth_delay: Duration,
}

/// Where credentials come from: PLAIN users from the listener's config, SCRAM credentials
/// from the metadata image.
struct Credentials<'a> {
    plain: &'a BTreeMap<String, String>,
    image: &'a MetadataImage,
}

impl CredentialStore for Credentials<'_> {
    fn plain_password(&self, user: &str) -> Option<String> {
        self.plain.get(user).cloned()
    }

    fn scram_credential(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        let stored = self
            .image
            .scram_credentials
            .get(user)?
            .get(mechanism.name())?;
        Some(ScramCredential {
            salt: stored.salt.clone(),
            stored_key: stored.stored_key.clone(),
            server_key: stored.server_key.clone(),
            iterations: stored.iterations,
        })
    }
}

/// What the connection does after a SASL request.
pub enum SaslOutcome<R> {
    Respond(R),
    /// Send the response, then close the connection.
    RespondAndClose(R, String),
}

fn mechanism_names(listener: &SaslListener) -> Vec<StrBytes> {
    listener
        .mechanisms
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect()
}

pub fn handshake(
    session: &mut Session,
    listener: Option<&SaslListener>,
    req: SaslHandshakeRequest,
) -> SaslOutcome<SaslHandshakeResponse> {
    let Some(listener) = listener else {
        // Not a SASL listener (Kafka: an unexpected handshake).
        return SaslOutcome::RespondAndClose(
            SaslHandshakeResponse::default().with_error_code(code(ResponseError::IllegalSaslState)),
            "SaslHandshake on a listener without SASL".into(),
        );
    };
    let reauthenticating = matches!(session.authentication, Authentication::Done { .. });
    if matches!(session.authentication, Authentication::InProgress { .. }) {
        return SaslOutcome::RespondAndClose(
            SaslHandshakeResponse::default()
                .with_error_code(code(ResponseError::IllegalSaslState))
                .with_mechanisms(mechanism_names(listener)),
            "a second SaslHandshake before the first completed".into(),
        );
    }
    let wanted = Mechanism::parse(&req.mechanism).filter(|m| listener.mechanisms.contains(m));
    let Some(mechanism) = wanted else {
        return SaslOutcome::RespondAndClose(
            SaslHandshakeResponse::default()
                .with_error_code(code(ResponseError::UnsupportedSaslMechanism))
                .with_mechanisms(mechanism_names(listener)),
            format!("unsupported SASL mechanism {:?}", req.mechanism.as_str()),
        );
    };
    session.authentication = Authentication::InProgress {
        server: SaslServer::new(mechanism),
        reauthenticating,
    };
    SaslOutcome::Respond(
        SaslHandshakeResponse::default().with_mechanisms(mechanism_names(listener)),
    )
}

pub async fn authenticate(
    session: &mut Session,
    listener: Option<&SaslListener>,
    image: &MetadataImage,
    version: i16,
    req: SaslAuthenticateRequest,
) -> SaslOutcome<SaslAuthenticateResponse> {
    let failure = |e: ResponseError, message: String| {
        SaslAuthenticateResponse::default()
            .with_error_code(code(e))
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let (
        Some(listener),
        Authentication::InProgress {
            server,
            reauthenticating,
        },
    ) = (listener, &mut session.authentication)
    else {
        let why = "SaslAuthenticate before a SaslHandshake".to_string();
        return SaslOutcome::RespondAndClose(
            failure(ResponseError::IllegalSaslState, why.clone()),
            why,
        );
    };
    let reauthenticating = *reauthenticating;
    let mechanism = server.mechanism();
    let credentials = Credentials {
        plain: &listener.plain_users,
        image,
    };
    match server.step(&req.auth_bytes, &credentials) {
        ServerStep::Challenge(challenge) => SaslOutcome::Respond(
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge)),
        ),
        ServerStep::Done { response, user } => {
            let principal = KafkaPrincipal::user(user);
            if reauthenticating && principal != *session.principal() {
                let why = format!(
                    "re-authentication as {principal} on a connection of {}",
                    session.principal()
                );
                return SaslOutcome::RespondAndClose(
                    failure(
                        ResponseError::SaslAuthenticationFailed,
                        "Cannot change principals during re-authentication".into(),
                    ),
                    why,
                );
            }
            tracing::debug!(client = %session.client_host, %principal, mechanism = mechanism.name(), "authenticated");
            session.set_principal(principal);
            let lifetime_ms = listener.reauth_ms.max(0);
            session.authentication = Authentication::Done {
                expires: (lifetime_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(lifetime_ms as u64)),
            };
            let mut resp =
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(response));
            if version >= 1 {
                resp.session_lifetime_ms = lifetime_ms;
            }
            SaslOutcome::Respond(resp)
        }
        ServerStep::Failed(reason) => {
            tracing::info!(client = %session.client_host, mechanism = mechanism.name(), reason = %reason,
                "SASL authentication failed");
            // Kafka delays the close of a failed authentication, slowing down guessing.
            tokio::time::sleep(listener.failed_auth_delay).await;
            SaslOutcome::RespondAndClose(
                failure(ResponseError::SaslAuthenticationFailed, reason.clone()),
                format!("SASL authentication failed: {reason}"),
            )
        }
    }
}
