//! A minimal Kafka protocol client, used by followers to fetch from leaders over the
//! inter-broker listener: one request at a time on one connection, with a timeout; TLS and
//! SASL (SaslHandshake v1, then SaslAuthenticate) as the listener requires.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::security::client::ClientSecurity;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Largest response accepted from a leader.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub struct KafkaClient {
    stream: Box<dyn Io>,
    correlation_id: i32,
    client_id: StrBytes,
}

impl KafkaClient {
    /// Connects to `host:port` and completes TLS and SASL as `security` says, all within
    /// `timeout`.
    pub async fn connect(
        (host, port): (&str, i32),
        security: &ClientSecurity,
        client_id: String,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let setup = async {
            let tcp = TcpStream::connect((host, port as u16)).await?;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Io> = match &security.tls {
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let connector = tokio_rustls::TlsConnector::from(config.fresh());
                    Box::new(connector.connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            };
            let mut client = Self {
                stream,
                correlation_id: 0,
                client_id: StrBytes::from_string(client_id),
            };
            client.authenticate(security, timeout).await?;
            Ok(client)
        };
        tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// The SASL exchange, when the listener asks for one.
    async fn authenticate(
        &mut self,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let Some(credentials) = &security.sasl else {
            return Ok(());
        };
        let refused = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        let mechanism = credentials.mechanism.name();
        let handshake = self
            .call(
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
                timeout,
            )
            .await?;
        if handshake.error_code != 0 {
            return Err(refused(format!(
                "SaslHandshake for {mechanism}: error {} (enabled: {:?})",
                handshake.error_code, handshake.mechanisms
            )));
        }
        let mut sasl = credentials.sasl_client();
        let mut token = sasl.first_message();
        // PLAIN takes one round, SCRAM two; a server that wants more is not speaking them.
        for _ in 0..4 {
            let answer = self
                .call(
                    2,
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                    timeout,
                )
                .await?;
            if answer.error_code != 0 {
                return Err(refused(format!(
                    "SaslAuthenticate as {}: error {} ({})",
                    credentials.username,
                    answer.error_code,
                    answer.error_message.as_deref().unwrap_or("")
                )));
            }
            match sasl.step(&answer.auth_bytes).map_err(refused)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
        Err(refused(format!("{mechanism} exchange did not finish")))
    }

    /// Sends one request and decodes its response.
    pub async fn call<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> std::io::Result<R::Response> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| req.encode(&mut body, version))
            .map_err(|e| invalid(e.to_string()))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_i32().await?;
            if size < 0 || size as usize > MAX_RESPONSE_BYTES {
                return Err(invalid(format!("response size {size}")));
            }
            let mut buf = BytesMut::zeroed(size as usize);
            self.stream.read_exact(&mut buf).await?;
            Ok(buf.freeze())
        };
        let mut response: Bytes =
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")
                })??;
        let key = ApiKey::try_from(R::KEY).map_err(|_| invalid("unknown api key".into()))?;
        let header = ResponseHeader::decode(&mut response, key.response_header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(invalid("correlation id mismatch".into()));
        }
        let resp =
            R::Response::decode(&mut response, version).map_err(|e| invalid(e.to_string()))?;
        if response.has_remaining() {
            tracing::debug!(
                "{} trailing bytes in a {key:?} response",
                response.remaining()
            );
        }
        Ok(resp)
    }
}
