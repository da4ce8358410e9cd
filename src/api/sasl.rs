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
    version: i16,
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
    if reauthenticating && version == 0 {
        // KIP-368 re-authentication is only defined with SaslAuthenticate.
        return SaslOutcome::RespondAndClose(
            SaslHandshakeResponse::default()
                .with_error_code(code(ResponseError::IllegalSaslState))
                .with_mechanisms(mechanism_names(listener)),
            "re-authentication with SaslHandshake v0".into(),
        );
    }
    session.authentication = Authentication::InProgress {
        server: SaslServer::new(mechanism),
        reauthenticating,
        raw_tokens: version == 0,
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
    let in_progress = matches!(
        session.authentication,
        Authentication::InProgress {
            raw_tokens: false,
            ..
        }
    );
    let Some(listener) = listener.filter(|_| in_progress) else {
        let why = "SaslAuthenticate before a SaslHandshake".to_string();
        return SaslOutcome::RespondAndClose(
            failure(ResponseError::IllegalSaslState, why.clone()),
            why,
        );
    };
    match step(session, listener, image, &req.auth_bytes).await {
        Step::Challenge(challenge) => SaslOutcome::Respond(
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge)),
        ),
        Step::Authenticated {
            response,
            lifetime_ms,
        } => {
            let mut resp =
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(response));
            if version >= 1 {
                resp.session_lifetime_ms = lifetime_ms;
            }
            SaslOutcome::Respond(resp)
        }
        Step::Refused { message, why } => SaslOutcome::RespondAndClose(
            failure(ResponseError::SaslAuthenticationFailed, message),
            why,
        ),
    }
}

/// A bare SASL token after a SaslHandshake v0 (`Authentication::awaits_raw_token`): the
/// answer is a bare token too, and a failure closes the connection without one (the v0
/// exchange has no way to say why).
pub async fn raw_token(
    session: &mut Session,
    listener: Option<&SaslListener>,
    image: &MetadataImage,
    token: &[u8],
) -> Result<Vec<u8>, String> {
    let listener = listener
        .filter(|_| session.authentication.awaits_raw_token())
        .ok_or("a bare SASL token outside a SaslHandshake v0 exchange")?;
    match step(session, listener, image, token).await {
        Step::Challenge(challenge) => Ok(challenge),
        Step::Authenticated { response, .. } => Ok(response),
        Step::Refused { why, .. } => Err(why),
    }
}

/// What one token did to the exchange.
enum Step {
    Challenge(Vec<u8>),
    Authenticated {
        response: Vec<u8>,
        lifetime_ms: i64,
    },
    /// `message` for the client, `why` for the log.
    Refused {
        message: String,
        why: String,
    },
}

/// Feeds one token to the session's mechanism; on success the session has its principal.
async fn step(
    session: &mut Session,
    listener: &SaslListener,
    image: &MetadataImage,
    token: &[u8],
) -> Step {
    let Authentication::InProgress {
        server,
        reauthenticating,
        ..
    } = &mut session.authentication
    else {
        unreachable!("callers check that an exchange is in progress");
    };
    let reauthenticating = *reauthenticating;
    let mechanism = server.mechanism();
    let credentials = Credentials {
        plain: &listener.plain_users,
        image,
    };
    match server.step(token, &credentials) {
        ServerStep::Challenge(challenge) => Step::Challenge(challenge),
        ServerStep::Done { response, user } => {
            let principal = KafkaPrincipal::user(user);
            if reauthenticating && principal != *session.principal() {
                return Step::Refused {
                    message: "Cannot change principals during re-authentication".into(),
                    why: format!(
                        "re-authentication as {principal} on a connection of {}",
                        session.principal()
                    ),
                };
            }
            tracing::debug!(client = %session.client_host, %principal, mechanism = mechanism.name(), "authenticated");
            session.set_principal(principal);
            let lifetime_ms = listener.reauth_ms.max(0);
            session.authentication = Authentication::Done {
                expires: (lifetime_ms > 0)
                    .then(|| Instant::now() + Duration::from_millis(lifetime_ms as u64)),
            };
            Step::Authenticated {
                response,
                lifetime_ms,
            }
        }
        ServerStep::Failed(reason) => {
            tracing::info!(client = %session.client_host, mechanism = mechanism.name(), reason = %reason,
                "SASL authentication failed");
            // Kafka delays the close of a failed authentication, slowing down guessing.
            tokio::time::sleep(listener.failed_auth_delay).await;
            // Kafka's SCRAM server fails with SaslExceptions, whose text the broker keeps to
            // itself (it could tell whether the user exists) and answers with this one; PLAIN's
            // failures are SaslAuthenticationExceptions, whose text goes to the client.
            let message = if mechanism.is_scram() {
                format!(
                    "Authentication failed during {} due to invalid credentials with SASL \
                     mechanism {}",
                    if reauthenticating {
                        "re-authentication"
                    } else {
                        "authentication"
                    },
                    mechanism.name()
                )
            } else {
                reason.clone()
            };
            Step::Refused {
                message,
                why: format!("SASL authentication failed: {reason}"),
            }
        }
    }
}
