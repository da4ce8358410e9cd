//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's ScramSaslServer and
//! ScramSaslClient: the four messages of the exchange and both sides of it. The credentials
//! and the hash functions (`ScramHash`) are in the parent module.

use std::marker::PhantomData;
use std::sync::OnceLock;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};

use super::{
    constant_time_eq, keys, CredentialStore, ScramCredential, ScramHash, ServerStep,
    AUTHZID_MISMATCH, EXCHANGE_COMPLETE, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS,
};

/// Characters in a nonce that Gregor makes (alphanumeric: printable, never ',').
const NONCE_LEN: usize = 32;
/// An unknown user's made-up salt looks like the salts Kafka's tools make: the bytes of a
/// 130-bit random number in base 36 (ScramFormatter.secureRandomBytes).
const FAKE_SALT_LEN: usize = 26;

/// The credential an unknown user gets, so that the exchange runs to the end and fails as a
/// wrong password does. It is the same for the same name (a client that asks twice sees the
/// same salt) and cannot be derived outside this process.
fn fake_credential<H: ScramHash>(user: &str) -> ScramCredential {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key
    });
    let derive = |label: &str| {
        H::hmac(
            key,
            format!("{label}\0{}\0{user}", H::MECHANISM.name()).as_bytes(),
        )
    };
    const BASE36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let salt = derive("salt")
        .iter()
        .take(FAKE_SALT_LEN)
        .map(|b| BASE36[usize::from(*b) % BASE36.len()])
        .collect();
    ScramCredential {
        salt,
        stored_key: derive("stored key"),
        server_key: derive("server key"),
        iterations: SCRAM_MIN_ITERATIONS,
    }
}

fn random_nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

fn invalid_credentials<H: ScramHash>() -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {}",
        H::MECHANISM.name()
    )
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

fn malformed(message: &str, what: &str) -> String {
    format!("Authentication failed: invalid SCRAM {message} message: {what}")
}

/// `name=`'s value in `attribute`, which is required.
fn attribute<'a>(attribute: Option<&'a str>, name: char, message: &str) -> Result<&'a str, String> {
    attribute
        .and_then(|a| a.strip_prefix(name))
        .and_then(|a| a.strip_prefix('='))
        .ok_or_else(|| malformed(message, &format!("expected attribute '{name}'")))
}

/// RFC 5802 printable: %x21-2B / %x2D-7E, at least one.
fn is_printable(nonce: &str) -> bool {
    let printable = |b| (0x21..=0x7e).contains(&b) && b != b',';
    !nonce.is_empty() && nonce.bytes().all(printable)
}

/// Checks the optional extensions (`key=value`, the key alphabetic) after the required
/// attributes of a client message, and tells whether `tokenauth=true` is among them.
fn extensions<'a>(
    attributes: impl Iterator<Item = &'a str>,
    message: &str,
) -> Result<bool, String> {
    let mut token_auth = false;
    for extension in attributes {
        let Some((key, value)) = extension.split_once('=') else {
            return Err(malformed(message, "extension without a value"));
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(malformed(message, "invalid extension name"));
        }
        token_auth |= key == "tokenauth" && value.eq_ignore_ascii_case("true");
    }
    Ok(token_auth)
}

/// RFC 5802 saslname: ',' and '=' are sent as "=2C" and "=3D".
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_saslname(saslname: &str, message: &str) -> Result<String, String> {
    let mut name = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(i) = rest.find('=') {
        name.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => name.push(','),
            Some("3D") => name.push('='),
            _ => return Err(malformed(message, "invalid escape in a user name")),
        }
        rest = &rest[i + 3..];
    }
    name.push_str(rest);
    if name.is_empty() || name.contains('\0') {
        return Err(malformed(message, "invalid user name"));
    }
    Ok(name)
}

/// A parsed client-first-message.
struct ClientFirst<'a> {
    /// "n,," or "y,,", with an authzid "n,a=<name>,".
    gs2_header: &'a str,
    /// The message after the GS2 header; the start of the AuthMessage.
    bare: &'a str,
    user: String,
    nonce: &'a str,
    token_auth: bool,
}

fn parse_client_first(token: &[u8]) -> Result<ClientFirst<'_>, String> {
    const MESSAGE: &str = "client-first";
    let text = std::str::from_utf8(token).map_err(|_| malformed(MESSAGE, "not UTF-8"))?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed(MESSAGE, "no GS2 header"))?;
    match flag {
        // "y": the client could bind to a channel but thinks the server cannot. We cannot.
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err("Authentication failed: SCRAM channel binding is not supported".into())
        }
        _ => return Err(malformed(MESSAGE, "invalid channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed(MESSAGE, "no GS2 header"))?;
    let authzid = match authzid {
        "" => None,
        _ => Some(unescape_saslname(
            authzid
                .strip_prefix("a=")
                .ok_or_else(|| malformed(MESSAGE, "invalid authorization id"))?,
            MESSAGE,
        )?),
    };
    let gs2_header = &text[..text.len() - bare.len()];
    let mut attributes = bare.split(',');
    let first = attributes.next();
    if first.is_some_and(|a| a.starts_with("m=")) {
        // RFC 5802: a mandatory extension that the server does not know fails the exchange.
        return Err(malformed(MESSAGE, "unsupported mandatory extension"));
    }
    let user = unescape_saslname(attribute(first, 'n', MESSAGE)?, MESSAGE)?;
    let nonce = attribute(attributes.next(), 'r', MESSAGE)?;
    if !is_printable(nonce) {
        return Err(malformed(MESSAGE, "invalid nonce"));
    }
    let token_auth = extensions(attributes, MESSAGE)?;
    if authzid.is_some_and(|a| a != user) {
        return Err(AUTHZID_MISMATCH.into());
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        user,
        nonce,
        token_auth,
    })
}

/// The server side of one exchange.
pub(super) struct ScramServer<H> {
    state: ServerState,
    /// A fixed server nonce for test vectors; random when `None`.
    fixed_nonce: Option<String>,
    hash: PhantomData<H>,
}

enum ServerState {
    ClientFirst,
    ClientFinal(Box<Pending>),
    Finished,
}

/// What the server remembers between server-first-message and client-final-message.
struct Pending {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce and server nonce.
    nonce: String,
    credential: ScramCredential,
    /// False for an unknown user, whose `credential` is made up: the exchange fails at the end.
    known_user: bool,
}

impl<H: ScramHash> ScramServer<H> {
    pub(super) fn new() -> Self {
        ScramServer {
            state: ServerState::ClientFirst,
            fixed_nonce: None,
            hash: PhantomData,
        }
    }

    #[cfg(test)]
    pub(super) fn with_nonce(server_nonce: &str) -> Self {
        ScramServer {
            fixed_nonce: Some(server_nonce.to_string()),
            ..Self::new()
        }
    }

    pub(super) fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> ServerStep {
        let result = match std::mem::replace(&mut self.state, ServerState::Finished) {
            ServerState::ClientFirst => self.client_first(token, store).map(|pending| {
                let challenge = pending.server_first.clone().into_bytes();
                self.state = ServerState::ClientFinal(Box::new(pending));
                ServerStep::Challenge(challenge)
            }),
            ServerState::ClientFinal(pending) => Self::client_final(&pending, token),
            ServerState::Finished => Err(EXCHANGE_COMPLETE.to_string()),
        };
        result.unwrap_or_else(ServerStep::Failed)
    }

    /// Reads client-first-message and makes server-first-message.
    fn client_first(&self, token: &[u8], store: &dyn CredentialStore) -> Result<Pending, String> {
        let first = parse_client_first(token)?;
        if first.token_auth {
            return Err("Authentication failed: Delegation tokens are not supported".into());
        }
        let (credential, known_user) = match store.scram_credential(&first.user, H::MECHANISM) {
            Some(credential) => (credential, true),
            None => (fake_credential::<H>(&first.user), false),
        };
        let server_nonce = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(Pending {
            user: first.user,
            gs2_header: first.gs2_header.to_string(),
            client_first_bare: first.bare.to_string(),
            server_first,
            nonce,
            credential,
            known_user,
        })
    }

    /// Reads client-final-message, verifies the proof and makes server-final-message.
    fn client_final(pending: &Pending, token: &[u8]) -> Result<ServerStep, String> {
        const MESSAGE: &str = "client-final";
        let text = std::str::from_utf8(token).map_err(|_| malformed(MESSAGE, "not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed(MESSAGE, "no proof"))?;
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed(MESSAGE, "proof is not base64"))?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attribute(attributes.next(), 'c', MESSAGE)?;
        let nonce = attribute(attributes.next(), 'r', MESSAGE)?;
        extensions(attributes, MESSAGE)?;
        let channel_binding = BASE64
            .decode(channel_binding)
            .map_err(|_| malformed(MESSAGE, "channel binding is not base64"))?;
        if channel_binding != pending.gs2_header.as_bytes() {
            return Err(malformed(
                MESSAGE,
                "channel binding differs from the GS2 header",
            ));
        }
        if nonce != pending.nonce {
            return Err(malformed(MESSAGE, "invalid client nonce"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            pending.client_first_bare, pending.server_first
        );
        let credential = &pending.credential;
        let client_signature = H::hmac(&credential.stored_key, auth_message.as_bytes());
        // ClientKey = ClientProof XOR ClientSignature, and StoredKey = H(ClientKey).
        let proof_matches = proof.len() == client_signature.len()
            && constant_time_eq(
                &H::hash(&xor(&proof, &client_signature)),
                &credential.stored_key,
            );
        if !(proof_matches && pending.known_user) {
            return Err(invalid_credentials::<H>());
        }
        let server_signature = H::hmac(&credential.server_key, auth_message.as_bytes());
        Ok(ServerStep::Done {
            response: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            user: pending.user.clone(),
        })
    }
}

/// The client side of one exchange.
pub(super) struct ScramClient<H> {
    username: String,
    password: String,
    state: ClientState,
    /// A fixed client nonce for test vectors; random when `None`.
    fixed_nonce: Option<String>,
    hash: PhantomData<H>,
}

enum ClientState {
    /// `first_message` has not been called.
    Initial,
    ServerFirst {
        client_first_bare: String,
        client_nonce: String,
    },
    ServerFinal {
        server_signature: Vec<u8>,
    },
    Finished,
}

impl<H: ScramHash> ScramClient<H> {
    pub(super) fn new(username: &str, password: &str) -> Self {
        ScramClient {
            username: username.to_string(),
            password: password.to_string(),
            state: ClientState::Initial,
            fixed_nonce: None,
            hash: PhantomData,
        }
    }

    #[cfg(test)]
    pub(super) fn fix_nonce(&mut self, client_nonce: &str) {
        self.fixed_nonce = Some(client_nonce.to_string());
    }

    /// client-first-message, without an authzid.
    pub(super) fn first_message(&mut self) -> Vec<u8> {
        let client_nonce = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let client_first_bare = format!("n={},r={client_nonce}", escape_saslname(&self.username));
        let message = format!("n,,{client_first_bare}").into_bytes();
        self.state = ClientState::ServerFirst {
            client_first_bare,
            client_nonce,
        };
        message
    }

    pub(super) fn step(&mut self, challenge: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mechanism = H::MECHANISM.name();
        let result = match std::mem::replace(&mut self.state, ClientState::Finished) {
            ClientState::Initial => Err("no message is awaiting an answer".to_string()),
            ClientState::ServerFirst {
                client_first_bare,
                client_nonce,
            } => self
                .client_final(challenge, &client_first_bare, &client_nonce)
                .map(|(client_final, server_signature)| {
                    self.state = ClientState::ServerFinal { server_signature };
                    Some(client_final)
                }),
            ClientState::ServerFinal { server_signature } => {
                Self::verify_server_final(challenge, &server_signature).map(|()| None)
            }
            ClientState::Finished => Err("the exchange is already complete".to_string()),
        };
        result.map_err(|reason| format!("{mechanism}: {reason}"))
    }

    /// Reads server-first-message; makes client-final-message and the server signature
    /// that server-final-message must carry.
    fn client_final(
        &self,
        challenge: &[u8],
        client_first_bare: &str,
        client_nonce: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let server_first =
            std::str::from_utf8(challenge).map_err(|_| "server-first-message is not UTF-8")?;
        let mut attributes = server_first.split(',');
        let first = attributes.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err("unsupported mandatory extension in server-first-message".into());
        }
        let message = "server-first";
        let nonce = attribute(first, 'r', message)?;
        let salt = attribute(attributes.next(), 's', message)?;
        let iterations = attribute(attributes.next(), 'i', message)?;
        // Extensions after these are ignored, as RFC 5802 asks.
        if !is_printable(nonce)
            || !nonce.starts_with(client_nonce)
            || nonce.len() == client_nonce.len()
        {
            return Err("invalid nonce in server-first-message".into());
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| "salt in server-first-message is not base64")?;
        if salt.is_empty() {
            return Err("empty salt in server-first-message".into());
        }
        let iterations: i32 = iterations
            .parse()
            .map_err(|_| "invalid iteration count in server-first-message")?;
        if !(SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iteration count {iterations} is outside {SCRAM_MIN_ITERATIONS}..={SCRAM_MAX_ITERATIONS}"
            ));
        }
        let salted_password = H::hi(self.password.as_bytes(), &salt, iterations.unsigned_abs());
        let client_key = H::hmac(&salted_password, b"Client Key");
        let (stored_key, server_key) = keys::<H>(&salted_password);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = H::hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
        let server_signature = H::hmac(&server_key, auth_message.as_bytes());
        Ok((client_final.into_bytes(), server_signature))
    }

    /// Reads server-final-message: `v=<server signature>` or `e=<server error>`.
    fn verify_server_final(challenge: &[u8], expected: &[u8]) -> Result<(), String> {
        let server_final =
            std::str::from_utf8(challenge).map_err(|_| "server-final-message is not UTF-8")?;
        let first = server_final.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            // RFC 5802 server-error-value: a short token such as "invalid-proof".
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(format!("the server reported {error}"));
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or("invalid server-final-message")?;
        if constant_time_eq(&signature, expected) {
            Ok(())
        } else {
            Err("invalid server signature".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{challenge, failed, store};
    use super::super::{Mechanism, SaslClient, SaslServer};
    use super::*;
    use proptest::prelude::*;
    use rand::RngCore;
    use sha2::Sha256;

    // RFC 7677, section 3: SCRAM-SHA-256 for user "user" with password "pencil".
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    const SHA256: Mechanism = Mechanism::ScramSha256;
    const SHA512: Mechanism = Mechanism::ScramSha512;

    /// A client and a server up to client-final-message, which `tamper` may change before
    /// the server sees it. Returns the server's last step and the client.
    fn exchange(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        tamper: impl FnOnce(String) -> String,
    ) -> (ServerStep, SaslClient) {
        let mut client = SaslClient::new(mechanism, user, password);
        let mut server = SaslServer::new(mechanism);
        let server_first = challenge(server.step(&client.first_message(), store()));
        let client_final = match client.step(&server_first) {
            Ok(Some(token)) => token,
            other => panic!("client-final expected, got {other:?}"),
        };
        let client_final = tamper(String::from_utf8_lossy(&client_final).into_owned());
        (server.step(client_final.as_bytes(), store()), client)
    }

    #[test]
    fn rfc7677_server() {
        let mut server = SaslServer::with_server_nonce(SHA256, RFC_SERVER_NONCE);
        let server_first = server.step(RFC_CLIENT_FIRST.as_bytes(), store());
        assert_eq!(server_first, ServerStep::Challenge(RFC_SERVER_FIRST.into()));
        assert_eq!(
            server.step(RFC_CLIENT_FINAL.as_bytes(), store()),
            ServerStep::Done {
                response: RFC_SERVER_FINAL.into(),
                user: "user".into()
            }
        );
        assert_eq!(
            failed(&server.step(RFC_CLIENT_FINAL.as_bytes(), store())),
            EXCHANGE_COMPLETE
        );
    }

    fn rfc_client() -> SaslClient {
        SaslClient::with_client_nonce(SHA256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    }

    #[test]
    fn rfc7677_client() {
        let mut client = rfc_client();
        assert_eq!(client.first_message(), RFC_CLIENT_FIRST.as_bytes());
        let client_final = client.step(RFC_SERVER_FIRST.as_bytes());
        assert_eq!(client_final, Ok(Some(RFC_CLIENT_FINAL.into())));
        assert_eq!(client.step(RFC_SERVER_FINAL.as_bytes()), Ok(None));
        assert!(client.step(RFC_SERVER_FINAL.as_bytes()).is_err(), "over");
        let mut client = rfc_client();
        client.first_message();
        client.step(RFC_SERVER_FIRST.as_bytes()).ok();
        let forged = RFC_SERVER_FINAL.replace("v=6rr", "v=6sr");
        assert!(client.step(forged.as_bytes()).is_err());
    }

    #[test]
    fn round_trips_with_both_hashes_and_escaped_names() {
        for mechanism in [SHA256, SHA512] {
            for user in ["alice", "a,b=c"] {
                let (step, mut client) = exchange(mechanism, user, "alice-secret", |t| t);
                let ServerStep::Done {
                    response,
                    user: name,
                } = step
                else {
                    panic!("{mechanism:?} {user}: {step:?}");
                };
                assert_eq!(name, user);
                assert_eq!(client.step(&response), Ok(None), "{mechanism:?}");
            }
        }
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let expected = "Authentication failed during authentication due to invalid credentials \
                        with SASL mechanism SCRAM-SHA-512";
        // "user" has a SCRAM-SHA-256 credential only.
        for (user, password) in [
            ("alice", "alice-secreT"),
            ("mallory", "x"),
            ("user", "pencil"),
        ] {
            let (step, _) = exchange(SHA512, user, password, |t| t);
            assert_eq!(failed(&step), expected, "{user}");
        }
    }

    #[test]
    fn unknown_user_gets_a_plausible_stable_challenge() {
        let first = |user: &str| {
            let token = format!("n,,n={user},r=abc");
            let text = challenge(SaslServer::new(SHA256).step(token.as_bytes(), store()));
            let text = String::from_utf8(text).unwrap_or_default();
            let (nonce, rest) = text.split_once(",s=").unwrap_or_default();
            assert!(
                nonce.starts_with("r=abc") && nonce.len() == 5 + NONCE_LEN,
                "{text}"
            );
            rest.to_string()
        };
        let mallory = first("mallory");
        assert_eq!(mallory, first("mallory"), "same salt each time");
        assert_ne!(mallory, first("eve"));
        let (salt, iterations) = mallory.split_once(",i=").unwrap_or_default();
        assert_eq!(iterations, "4096");
        let salt = BASE64.decode(salt).unwrap_or_default();
        assert_eq!(salt.len(), FAKE_SALT_LEN);
        assert!(salt.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn tampered_client_final_fails() {
        type Tamper = fn(String) -> String;
        let tampers: [(&str, Tamper); 8] = [
            ("invalid client nonce", |t| t.replacen(",r=", ",r=x", 1)),
            ("invalid client nonce", |t| {
                let (head, proof) = t.split_once(",p=").unwrap_or_default();
                format!("{},p={proof}", &head[..head.len() - 1])
            }),
            ("channel binding differs", |t| {
                t.replacen("c=biws", "c=eSws", 1)
            }),
            ("channel binding is not base64", |t| {
                t.replacen("c=biws", "c=biw", 1)
            }),
            ("proof is not base64", |t| format!("{t}!")),
            ("invalid credentials", |t| t.replacen(",p=", ",p=AAAA", 1)),
            ("no proof", |t| {
                t.split(",p=").next().unwrap_or_default().to_string()
            }),
            ("expected attribute 'c'", |t| t.replacen("c=biws,", "", 1)),
        ];
        for (expected, tamper) in tampers {
            let (step, _) = exchange(SHA256, "alice", "alice-secret", tamper);
            let reason = failed(&step);
            assert!(reason.contains(expected), "{expected}: {reason}");
        }
        // A proof with one bit flipped is a wrong password.
        let (step, _) = exchange(SHA256, "alice", "alice-secret", |t| {
            let (head, proof) = t.split_once(",p=").unwrap_or_default();
            let mut proof = BASE64.decode(proof).unwrap_or_default();
            proof[0] ^= 1;
            format!("{head},p={}", BASE64.encode(proof))
        });
        assert_eq!(failed(&step), invalid_credentials::<Sha256>());
        // An extension before the proof is allowed, and is part of the AuthMessage.
        let (step, _) = exchange(SHA256, "alice", "alice-secret", |t| {
            t.replacen(",p=", ",x=1,p=", 1)
        });
        assert_eq!(failed(&step), invalid_credentials::<Sha256>());
    }

    /// The GS2 header is not in the AuthMessage, so only `c=` shows that a man in the middle
    /// changed it (a downgrade of channel binding): the proof alone would verify.
    #[test]
    fn changed_gs2_header_fails_despite_a_valid_proof() {
        let mut client = SaslClient::new(SHA256, "alice", "alice-secret");
        let first = String::from_utf8(client.first_message()).unwrap_or_default();
        let downgraded = first.replacen("n,,", "y,,", 1);
        let mut server = SaslServer::new(SHA256);
        let server_first = challenge(server.step(downgraded.as_bytes(), store()));
        let Ok(Some(client_final)) = client.step(&server_first) else {
            panic!("no client-final-message");
        };
        assert!(failed(&server.step(&client_final, store())).contains("channel binding"));
    }

    #[test]
    fn client_first_rules() {
        let first = |token: &str| SaslServer::new(SHA256).step(token.as_bytes(), store());
        for ok in [
            "n,,n=alice,r=abc",
            "y,,n=alice,r=abc",
            "n,a=alice,n=alice,r=abc",
            "n,,n=alice,r=abc,ext=1,other=x",
            "n,,n=alice,r=abc,tokenauth=false",
            "n,,n=a=2Cb=3Dc,r=abc",
        ] {
            assert!(matches!(first(ok), ServerStep::Challenge(_)), "{ok}");
        }
        assert_eq!(
            failed(&first("n,,n=alice,r=abc,tokenauth=true")),
            "Authentication failed: Delegation tokens are not supported"
        );
        assert_eq!(failed(&first("n,a=admin,n=alice,r=abc")), AUTHZID_MISMATCH);
        for bad in [
            "p=tls-unique,,n=alice,r=abc",
            "x,,n=alice,r=abc",
            "n,n=alice,r=abc",
            "n,,r=abc",
            "n,,n=alice",
            "n,,n=alice,r=",
            "n,,n=,r=abc",
            "n,,n=al=2cice,r=abc",
            "n,,n=al=41ice,r=abc",
            "n,,n=alice=,r=abc",
            "n,,m=ext,n=alice,r=abc",
            "n,,n=alice,r=abc,=1",
            "n,,n=alice,r=abc,ext",
            "n,,n=alice,r=ab c",
            "n,b=alice,n=alice,r=abc",
            "n,,n=al\0ice,r=abc",
            "",
            "n",
            "n,",
        ] {
            failed(&first(bad));
        }
    }

    #[test]
    fn truncated_and_random_tokens_fail() {
        for end in 0..RFC_CLIENT_FIRST.len() {
            // Shorter nonces are valid client-first-messages; the rest must fail cleanly.
            let _ = SaslServer::new(SHA256).step(&RFC_CLIENT_FIRST.as_bytes()[..end], store());
        }
        for end in 0..RFC_CLIENT_FINAL.len() {
            let mut server = SaslServer::with_server_nonce(SHA256, RFC_SERVER_NONCE);
            challenge(server.step(RFC_CLIENT_FIRST.as_bytes(), store()));
            failed(&server.step(&RFC_CLIENT_FINAL.as_bytes()[..end], store()));
        }
        let mut random = [0u8; 64];
        RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        failed(&SaslServer::new(SHA512).step(&random, store()));
    }

    #[test]
    fn client_rejects_bad_server_messages() {
        let server_first = |text: &str| {
            let mut client = SaslClient::with_client_nonce(SHA256, "user", "pencil", "cnonce");
            client.first_message();
            client.step(text.as_bytes())
        };
        assert!(server_first("r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=4096").is_ok());
        assert!(server_first("r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=4096,x=y").is_ok());
        for bad in [
            "r=cnonce,s=QSXCR+Q6sek8bf92,i=4096",
            "r=othernonceSNONCE,s=QSXCR+Q6sek8bf92,i=4096",
            "r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=4095",
            "r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=16385",
            "r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=-1",
            "r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=many",
            "r=cnonceSNONCE,s=!!,i=4096",
            "r=cnonceSNONCE,s=,i=4096",
            "r=cnonceSNONCE,i=4096",
            "m=x,r=cnonceSNONCE,s=QSXCR+Q6sek8bf92,i=4096",
            "e=other-error",
            "",
        ] {
            assert!(server_first(bad).is_err(), "{bad}");
        }
        let mut client = rfc_client();
        client.first_message();
        assert!(client.step(RFC_SERVER_FIRST.as_bytes()).is_ok());
        assert_eq!(
            client.step(b"e=invalid-proof"),
            Err("SCRAM-SHA-256: the server reported invalid-proof".into())
        );
        let mut client = SaslClient::new(SHA512, "user", "pencil");
        assert!(
            client.step(b"r=x,s=QQ==,i=4096").is_err(),
            "before the first message"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn server_never_panics_on_mutated_client_final(index in 0usize..200, byte in any::<u8>()) {
            let mut server = SaslServer::with_server_nonce(SHA256, RFC_SERVER_NONCE);
            challenge(server.step(RFC_CLIENT_FIRST.as_bytes(), store()));
            let mut token = RFC_CLIENT_FINAL.as_bytes().to_vec();
            let index = index % token.len();
            prop_assume!(token[index] != byte);
            token[index] = byte;
            prop_assert!(matches!(server.step(&token, store()), ServerStep::Failed(_)));
        }

        #[test]
        fn client_never_panics_on_server_final(last in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut client = rfc_client();
            client.first_message();
            prop_assert!(client.step(RFC_SERVER_FIRST.as_bytes()).is_ok());
            prop_assert!(client.step(&last).is_err());
        }
    }
}
