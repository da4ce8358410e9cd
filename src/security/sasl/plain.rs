//! SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer: one client message
//! `[authzid] NUL authcid NUL passwd`, checked against the JAAS `user_<name>` passwords.

use sha2::{Digest, Sha256};

use super::{constant_time_eq, CredentialStore, ServerStep, AUTHZID_MISMATCH, EXCHANGE_COMPLETE};

/// One failure text for an unknown user and a wrong password, so that a client cannot tell
/// which users exist.
const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid username or password";

/// The server side: a single step.
pub(super) struct PlainServer {
    finished: bool,
}

impl PlainServer {
    pub(super) fn new() -> Self {
        PlainServer { finished: false }
    }

    pub(super) fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> ServerStep {
        if std::mem::replace(&mut self.finished, true) {
            return ServerStep::Failed(EXCHANGE_COMPLETE.to_string());
        }
        match authenticate(token, store) {
            Ok(user) => ServerStep::Done {
                response: Vec::new(),
                user,
            },
            Err(reason) => ServerStep::Failed(reason.to_string()),
        }
    }
}

/// The authenticated user of `token`, in Kafka's order of checks.
fn authenticate(token: &[u8], store: &dyn CredentialStore) -> Result<String, String> {
    let text = std::str::from_utf8(token)
        .map_err(|_| "Invalid SASL/PLAIN response: not UTF-8".to_string())?;
    let parts: Vec<&str> = text.split('\0').collect();
    let [authzid, username, password] = parts[..] else {
        return Err(format!(
            "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
            parts.len()
        ));
    };
    if username.is_empty() {
        return Err("Authentication failed: username not specified".to_string());
    }
    if password.is_empty() {
        return Err("Authentication failed: password not specified".to_string());
    }
    // The same work whether or not the user exists: compare digests, which hides the
    // lengths too, and fail an unknown user only after the comparison.
    let expected = store.plain_password(username);
    let matches = constant_time_eq(
        &Sha256::digest(password.as_bytes()),
        &Sha256::digest(expected.as_deref().unwrap_or_default().as_bytes()),
    );
    if !(matches && expected.is_some()) {
        return Err(INVALID_CREDENTIALS.to_string());
    }
    if !authzid.is_empty() && authzid != username {
        return Err(AUTHZID_MISMATCH.to_string());
    }
    Ok(username.to_string())
}

/// The client side: sends `NUL user NUL password` (no authzid) and expects an empty answer.
pub(super) struct PlainClient {
    username: String,
    password: String,
    sent: bool,
}

impl PlainClient {
    pub(super) fn new(username: &str, password: &str) -> Self {
        PlainClient {
            username: username.to_string(),
            password: password.to_string(),
            sent: false,
        }
    }

    pub(super) fn first_message(&mut self) -> Vec<u8> {
        self.sent = true;
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }

    pub(super) fn step(&mut self, challenge: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if !std::mem::replace(&mut self.sent, false) {
            return Err("SASL/PLAIN: no message is awaiting an answer".to_string());
        }
        if challenge.is_empty() {
            Ok(None)
        } else {
            Err("SASL/PLAIN: unexpected challenge from the server".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::super::{Mechanism, SaslClient, SaslServer};
    use super::*;

    fn step(token: &[u8]) -> ServerStep {
        SaslServer::new(Mechanism::Plain).step(token, store())
    }

    fn failed(text: &str) -> ServerStep {
        ServerStep::Failed(text.to_string())
    }

    #[test]
    fn good_password_authenticates() {
        let done = ServerStep::Done {
            response: Vec::new(),
            user: "alice".to_string(),
        };
        assert_eq!(step(b"\0alice\0alice-secret"), done);
        assert_eq!(step(b"alice\0alice\0alice-secret"), done);
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        assert_eq!(step(b"\0alice\0admin-secret"), failed(INVALID_CREDENTIALS));
        assert_eq!(step(b"\0alice\0alice-secre"), failed(INVALID_CREDENTIALS));
        assert_eq!(step(b"\0alice\0alice-secret2"), failed(INVALID_CREDENTIALS));
        assert_eq!(
            step(b"\0mallory\0alice-secret"),
            failed(INVALID_CREDENTIALS)
        );
        assert_eq!(step(b"\0Alice\0alice-secret"), failed(INVALID_CREDENTIALS));
    }

    #[test]
    fn authzid_must_be_the_user() {
        assert_eq!(
            step(b"admin\0alice\0alice-secret"),
            failed(AUTHZID_MISMATCH)
        );
    }

    #[test]
    fn malformed_tokens_fail_without_echoing_secrets() {
        for token in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0alice-secret\0",
            b"\0\0alice-secret",
            b"\0alice\0",
            b"\0alice\0alice-secret\xff",
        ] {
            match step(token) {
                ServerStep::Failed(reason) => assert!(!reason.contains("secret"), "{reason}"),
                other => panic!("{token:?}: {other:?}"),
            }
        }
        assert_eq!(
            step(b"\0alice"),
            failed("Invalid SASL/PLAIN response: expected 3 tokens, got 2")
        );
        assert_eq!(
            step(b"\0\0pw"),
            failed("Authentication failed: username not specified")
        );
        assert_eq!(
            step(b"\0alice\0"),
            failed("Authentication failed: password not specified")
        );
    }

    #[test]
    fn second_token_fails() {
        let store = store();
        let mut server = SaslServer::new(Mechanism::Plain);
        assert!(matches!(
            server.step(b"\0alice\0alice-secret", store),
            ServerStep::Done { .. }
        ));
        assert_eq!(
            server.step(b"\0alice\0alice-secret", store),
            failed(EXCHANGE_COMPLETE)
        );
    }

    #[test]
    fn client_against_server() {
        let store = store();
        let mut client = SaslClient::new(Mechanism::Plain, "admin", "admin-secret");
        assert!(
            client.step(b"").is_err(),
            "no answer before the first message"
        );
        let first = client.first_message();
        assert_eq!(first, b"\0admin\0admin-secret");
        let ServerStep::Done { response, user } =
            SaslServer::new(Mechanism::Plain).step(&first, store)
        else {
            panic!("not authenticated");
        };
        assert_eq!(user, "admin");
        assert_eq!(client.step(&response), Ok(None));
        assert!(client.step(&response).is_err(), "the exchange is over");
        client.first_message();
        assert!(client.step(b"unexpected").is_err());
    }
}
