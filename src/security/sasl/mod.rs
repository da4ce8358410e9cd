//! SASL mechanisms as Kafka's SaslServer/SaslClient implementations: the `Mechanism` names
//! that SaslHandshake negotiates, the server side of each exchange (`SaslServer`, fed the
//! SaslAuthenticate tokens), the client side for inter-broker connections (`SaslClient`),
//! and the SCRAM credentials the metadata log stores, with the hash functions (RFC 5802's H,
//! HMAC and Hi) that derive them. Pure and I/O-free: the caller moves the tokens and supplies
//! the credentials through a `CredentialStore`. The exchanges are in `plain` and `scram`.

mod plain;
mod scram;

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's limits for SCRAM iterations (ScramMechanism.minIterations / maxIterations).
pub const SCRAM_MIN_ITERATIONS: i32 = 4096;
pub const SCRAM_MAX_ITERATIONS: i32 = 16384;

/// A SASL mechanism that Gregor offers in SaslHandshake.
/// Ordered (as in `ALL`) so that it can key a `BTreeMap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order SaslHandshake lists them.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The IANA name, as in SaslHandshake and `sasl.enabled.mechanisms`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism named `name`, exactly and case-sensitively, as Kafka matches it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a SCRAM mechanism (one with a `ScramCredential`).
    pub fn is_scram(self) -> bool {
        self != Mechanism::Plain
    }

    /// The SCRAM mechanism's number in the Kafka protocol (ScramMechanism.type: 1 for
    /// SCRAM-SHA-256, 2 for SCRAM-SHA-512), as DescribeUserScramCredentials,
    /// AlterUserScramCredentials and UserScramCredentialRecord carry it.
    pub fn scram_type(self) -> Option<i8> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(1),
            Mechanism::ScramSha512 => Some(2),
        }
    }

    /// The SCRAM mechanism numbered `scram_type` in the Kafka protocol; `None` for 0
    /// (UNKNOWN) and anything else.
    pub fn from_scram_type(scram_type: i8) -> Option<Self> {
        match scram_type {
            1 => Some(Mechanism::ScramSha256),
            2 => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }
}

/// A SCRAM credential as stored (RFC 5802): never the password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl fmt::Debug for ScramCredential {
    /// The keys let anyone who sees them impersonate the server (and, with a recorded
    /// exchange, the user), so they are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("salt_len", &self.salt.len())
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// What the server mechanisms look credentials up in.
pub trait CredentialStore {
    /// The PLAIN password of `user` (from the JAAS `user_<name>` options), if any.
    fn plain_password(&self, user: &str) -> Option<String>;
    /// The SCRAM credential of `user` for `mechanism` (ScramSha256 or ScramSha512), if any.
    fn scram_credential(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential>;
}

/// The hash function of one SCRAM mechanism: RFC 5802's H, HMAC and Hi.
trait ScramHash {
    const MECHANISM: Mechanism;
    fn hash(data: &[u8]) -> Vec<u8>;
    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8>;
    fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8>;
}

macro_rules! scram_hash {
    ($digest:ty, $mechanism:expr) => {
        impl ScramHash for $digest {
            const MECHANISM: Mechanism = $mechanism;

            fn hash(data: &[u8]) -> Vec<u8> {
                <$digest as Digest>::digest(data).to_vec()
            }

            fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
                let mut mac = match <Hmac<$digest> as KeyInit>::new_from_slice(key) {
                    Ok(mac) => mac,
                    Err(_) => unreachable!("HMAC takes keys of any length"),
                };
                Mac::update(&mut mac, data);
                mac.finalize().into_bytes().to_vec()
            }

            fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
                let mut salted = vec![0u8; <$digest as Digest>::output_size()];
                pbkdf2::pbkdf2_hmac::<$digest>(password, salt, iterations, &mut salted);
                salted
            }
        }
    };
}

scram_hash!(Sha256, Mechanism::ScramSha256);
scram_hash!(Sha512, Mechanism::ScramSha512);

/// KIP-554: AlterUserScramCredentials sends salt and salted password; the broker stores keys.
///
/// `mechanism` must be a SCRAM mechanism and `iterations` within Kafka's limits; the caller
/// validates both (as Kafka answers UNSUPPORTED_SASL_MECHANISM and UNACCEPTABLE_CREDENTIAL).
/// For PLAIN the result has empty keys, which no proof ever matches.
pub fn credential_from_salted_password(
    mechanism: Mechanism,
    salt: &[u8],
    salted_password: &[u8],
    iterations: i32,
) -> ScramCredential {
    debug_assert!(mechanism.is_scram(), "{mechanism:?} has no credential");
    let (stored_key, server_key) = match mechanism {
        Mechanism::Plain => (Vec::new(), Vec::new()),
        Mechanism::ScramSha256 => keys::<Sha256>(salted_password),
        Mechanism::ScramSha512 => keys::<Sha512>(salted_password),
    };
    ScramCredential {
        salt: salt.to_vec(),
        stored_key,
        server_key,
        iterations,
    }
}

/// For tests and tools: PBKDF2 (Hi) of the password, then the above. `iterations` below 1
/// count as 1.
pub fn credential_from_password(
    mechanism: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: i32,
) -> ScramCredential {
    let rounds = u32::try_from(iterations).unwrap_or(0).max(1);
    let salted = match mechanism {
        Mechanism::Plain => Vec::new(),
        Mechanism::ScramSha256 => Sha256::hi(password.as_bytes(), salt, rounds),
        Mechanism::ScramSha512 => Sha512::hi(password.as_bytes(), salt, rounds),
    };
    credential_from_salted_password(mechanism, salt, &salted, iterations)
}

/// StoredKey and ServerKey of a salted password.
fn keys<H: ScramHash>(salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = H::hmac(salted_password, b"Client Key");
    (
        H::hash(&client_key),
        H::hmac(salted_password, b"Server Key"),
    )
}

/// One step of a server-side exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this challenge back (SaslAuthenticate response auth_bytes) and wait for the next token.
    Challenge(Vec<u8>),
    /// Authenticated: send `response` (may be empty) and the connection's principal is `User:<user>`.
    Done { response: Vec<u8>, user: String },
    /// Authentication failed; `reason` is for the log and for the client's error message and never
    /// contains a secret (no password, proof or key).
    Failed(String),
}

/// The text of a step after the exchange has ended.
const EXCHANGE_COMPLETE: &str = "Authentication failed: the SASL exchange is already complete";
/// Kafka's text for an authzid (PLAIN's, or SCRAM's `a=`) that names another user.
const AUTHZID_MISMATCH: &str =
    "Authentication failed: Client requested an authorization id that is different from username";

/// The server side of one SASL exchange on one connection.
pub struct SaslServer {
    mechanism: Mechanism,
    exchange: ServerExchange,
    /// Done or Failed was returned: every later step fails.
    finished: bool,
}

enum ServerExchange {
    Plain(plain::PlainServer),
    ScramSha256(scram::ScramServer<Sha256>),
    ScramSha512(scram::ScramServer<Sha512>),
}

impl SaslServer {
    pub fn new(mechanism: Mechanism) -> Self {
        let exchange = match mechanism {
            Mechanism::Plain => ServerExchange::Plain(plain::PlainServer::new()),
            Mechanism::ScramSha256 => ServerExchange::ScramSha256(scram::ScramServer::new()),
            Mechanism::ScramSha512 => ServerExchange::ScramSha512(scram::ScramServer::new()),
        };
        SaslServer {
            mechanism,
            exchange,
            finished: false,
        }
    }

    /// A SCRAM server whose nonce is `server_nonce` instead of a random one, for test vectors.
    #[cfg(test)]
    fn with_server_nonce(mechanism: Mechanism, server_nonce: &str) -> Self {
        let exchange = match mechanism {
            Mechanism::Plain => ServerExchange::Plain(plain::PlainServer::new()),
            Mechanism::ScramSha256 => {
                ServerExchange::ScramSha256(scram::ScramServer::with_nonce(server_nonce))
            }
            Mechanism::ScramSha512 => {
                ServerExchange::ScramSha512(scram::ScramServer::with_nonce(server_nonce))
            }
        };
        SaslServer {
            mechanism,
            exchange,
            finished: false,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's next token. After Done or Failed, further calls return Failed.
    pub fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> ServerStep {
        if self.finished {
            return ServerStep::Failed(EXCHANGE_COMPLETE.to_string());
        }
        let step = match &mut self.exchange {
            ServerExchange::Plain(server) => server.step(token, store),
            ServerExchange::ScramSha256(server) => server.step(token, store),
            ServerExchange::ScramSha512(server) => server.step(token, store),
        };
        match &step {
            ServerStep::Challenge(_) => {}
            ServerStep::Done { user, .. } => {
                assert!(!user.is_empty(), "an authenticated user has a name");
                self.finished = true;
            }
            ServerStep::Failed(_) => self.finished = true,
        }
        step
    }
}

impl fmt::Debug for SaslServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslServer")
            .field("mechanism", &self.mechanism)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The client side, for a broker authenticating to another broker (inter-broker fetches).
pub struct SaslClient {
    mechanism: Mechanism,
    exchange: ClientExchange,
}

enum ClientExchange {
    Plain(plain::PlainClient),
    ScramSha256(scram::ScramClient<Sha256>),
    ScramSha512(scram::ScramClient<Sha512>),
}

impl SaslClient {
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Self {
        let exchange = match mechanism {
            Mechanism::Plain => ClientExchange::Plain(plain::PlainClient::new(username, password)),
            Mechanism::ScramSha256 => {
                ClientExchange::ScramSha256(scram::ScramClient::new(username, password))
            }
            Mechanism::ScramSha512 => {
                ClientExchange::ScramSha512(scram::ScramClient::new(username, password))
            }
        };
        SaslClient {
            mechanism,
            exchange,
        }
    }

    /// A SCRAM client whose nonce is `client_nonce` instead of a random one, for test vectors.
    #[cfg(test)]
    fn with_client_nonce(
        mechanism: Mechanism,
        username: &str,
        password: &str,
        client_nonce: &str,
    ) -> Self {
        let mut client = SaslClient::new(mechanism, username, password);
        match &mut client.exchange {
            ClientExchange::Plain(_) => {}
            ClientExchange::ScramSha256(scram) => scram.fix_nonce(client_nonce),
            ClientExchange::ScramSha512(scram) => scram.fix_nonce(client_nonce),
        }
        client
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The first token to send. Calling it again starts the exchange over.
    pub fn first_message(&mut self) -> Vec<u8> {
        match &mut self.exchange {
            ClientExchange::Plain(client) => client.first_message(),
            ClientExchange::ScramSha256(client) => client.first_message(),
            ClientExchange::ScramSha512(client) => client.first_message(),
        }
    }

    /// Takes the server's answer; Ok(Some(token)) = send this next; Ok(None) = authenticated
    /// (for SCRAM only after verifying the server signature); Err(reason) on any mismatch.
    /// For PLAIN, the server's answer to the first message is empty and gives Ok(None).
    pub fn step(&mut self, challenge: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match &mut self.exchange {
            ClientExchange::Plain(client) => client.step(challenge),
            ClientExchange::ScramSha256(client) => client.step(challenge),
            ClientExchange::ScramSha512(client) => client.step(challenge),
        }
    }
}

impl fmt::Debug for SaslClient {
    /// The password stays out of the output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only (which are public:
/// digest sizes), not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    /// Credentials for the tests: PLAIN passwords and SCRAM credentials per mechanism.
    #[derive(Default)]
    pub(super) struct TestStore {
        plain: BTreeMap<String, String>,
        scram: BTreeMap<(String, Mechanism), ScramCredential>,
    }

    impl CredentialStore for TestStore {
        fn plain_password(&self, user: &str) -> Option<String> {
            self.plain.get(user).cloned()
        }
        fn scram_credential(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
            self.scram.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    /// PLAIN: "alice"/"alice-secret" and "admin"/"admin-secret". SCRAM: "user"/"pencil" as in
    /// RFC 7677 (SHA-256 only), and "alice" and "a,b=c" with "alice-secret" for both hashes.
    /// PBKDF2 is slow in debug builds, so this is computed once.
    pub(super) fn store() -> &'static TestStore {
        static STORE: OnceLock<TestStore> = OnceLock::new();
        STORE.get_or_init(|| {
            let mut store = TestStore::default();
            for user in ["alice", "admin"] {
                store.plain.insert(user.into(), format!("{user}-secret"));
            }
            let rfc_salt = [
                0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
                0xfa, 0x81,
            ]; // "W22ZaJ0SNY7soEsUEjb6gQ=="
            let user = credential_from_password(Mechanism::ScramSha256, "pencil", &rfc_salt, 4096);
            store
                .scram
                .insert(("user".into(), Mechanism::ScramSha256), user);
            for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
                let alice = credential_from_password(mechanism, "alice-secret", b"NaCl", 4096);
                store
                    .scram
                    .insert(("alice".into(), mechanism), alice.clone());
                store.scram.insert(("a,b=c".into(), mechanism), alice);
            }
            store
        })
    }

    pub(super) fn failed(step: &ServerStep) -> &str {
        match step {
            ServerStep::Failed(reason) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    pub(super) fn challenge(step: ServerStep) -> Vec<u8> {
        match step {
            ServerStep::Challenge(challenge) => challenge,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn mechanism_names_round_trip_exactly() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
            if let Some(t) = m.scram_type() {
                assert_eq!(Mechanism::from_scram_type(t), Some(m));
            }
        }
        assert_eq!(Mechanism::parse("plain"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-1"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-256 "), None);
        assert_eq!(Mechanism::from_scram_type(0), None);
        assert!(!Mechanism::Plain.is_scram());
    }

    #[test]
    fn debug_redacts_credentials_and_passwords() {
        let credential =
            credential_from_password(Mechanism::ScramSha256, "pw", b"salt", SCRAM_MIN_ITERATIONS);
        assert_eq!(
            format!("{credential:?}"),
            "ScramCredential { salt_len: 4, stored_key: \"<redacted>\", \
             server_key: \"<redacted>\", iterations: 4096 }"
        );
        let client = SaslClient::new(Mechanism::Plain, "admin", "admin-secret");
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[test]
    fn credential_from_salted_password_matches_password() {
        let salted = <Sha512 as ScramHash>::hi(b"alice-secret", b"NaCl", 4096);
        assert_eq!(
            credential_from_salted_password(Mechanism::ScramSha512, b"NaCl", &salted, 4096),
            credential_from_password(Mechanism::ScramSha512, "alice-secret", b"NaCl", 4096)
        );
        assert_eq!(salted.len(), 64);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn every_step_after_the_end_fails() {
        for m in Mechanism::ALL {
            let mut server = SaslServer::new(m);
            assert_eq!(server.mechanism(), m);
            failed(&server.step(b"junk", store()));
            assert_eq!(failed(&server.step(b"junk", store())), EXCHANGE_COMPLETE);
        }
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary tokens at each step, first or after a valid first message: an error
        /// value, never a panic.
        #[test]
        fn server_never_panics(first in bytes(), last in bytes()) {
            for mechanism in Mechanism::ALL {
                let mut server = SaslServer::new(mechanism);
                let _ = server.step(&first, store());
                let _ = server.step(&last, store());
                if mechanism.is_scram() {
                    let mut server = SaslServer::new(mechanism);
                    challenge(server.step(b"n,,n=alice,r=abc", store()));
                    failed(&server.step(&last, store()));
                }
            }
        }

        #[test]
        fn client_never_panics(first in bytes(), last in bytes()) {
            for mechanism in Mechanism::ALL {
                let mut client = SaslClient::new(mechanism, "alice", "alice-secret");
                prop_assert!(client.step(&first).is_err(), "nothing was sent");
                client.first_message();
                let answer = client.step(&first);
                prop_assert!(answer.is_err() || (mechanism == Mechanism::Plain && first.is_empty()));
                let _ = client.step(&last);
            }
        }
    }
}
