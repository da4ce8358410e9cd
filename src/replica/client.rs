//! A minimal Kafka protocol client, used by followers to fetch from leaders over the client
//! port: one request at a time on one connection, with a timeout.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted from a leader.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub struct KafkaClient {
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
}

impl KafkaClient {
    pub async fn connect(
        addr: &str,
        client_id: String,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        })
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
