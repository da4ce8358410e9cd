//! Dispatch: decodes one request frame's header and body, routes it by API key to its
//! handler, and encodes the response frame. Anything malformed closes the connection, as Kafka
//! does; an unsupported ApiVersions version gets the KIP-511 v0 answer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    ListOffsetsRequest, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable};

use crate::api::{self, produce::ProduceOutcome};
use crate::broker::Broker;

/// What the connection does after a request.
pub enum Reply {
    /// A complete response frame (size prefix included).
    Frame(Bytes),
    /// Nothing to send (acks=0 produce).
    Nothing,
    /// Close the connection; the reason is logged once by the connection.
    Close(String),
}

/// Encodes a response frame: size, response header, body.
pub fn encode_frame<R: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    header_version: Option<i16>,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, String> {
    let header_version =
        header_version.unwrap_or_else(|| api_key.response_header_version(api_version));
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(api_version).map(|b| h + b))
        .map_err(|e| format!("sizing {api_key:?} v{api_version} response: {e}"))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, api_version))
        .map_err(|e| format!("encoding {api_key:?} v{api_version} response: {e}"))?;
    debug_assert_eq!(buf.len(), 4 + size);
    Ok(buf.freeze())
}

fn decode<T: Decodable>(body: &mut Bytes, key: ApiKey, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| format!("malformed {key:?} v{version} request: {e}"))
}

/// Handles one request frame (without its size prefix).
pub async fn dispatch(broker: &Broker, mut frame: Bytes) -> Reply {
    if frame.len() < 8 {
        return Reply::Close(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Reply::Close(format!("unknown API key {raw_key}"));
    };
    let header: RequestHeader = match decode_request_header_from_buffer(&mut frame) {
        Ok(h) => h,
        Err(e) => return Reply::Close(format!("malformed {key:?} request header: {e}")),
    };
    let correlation_id = header.correlation_id;
    if key == ApiKey::ApiVersions && !api::is_served(key, version) {
        // KIP-511: answer in the v0 layout, with header v0, so any client can read it.
        let body = api::api_versions::unsupported_version_response();
        return frame_or_close(encode_frame(key, 0, Some(0), correlation_id, &body));
    }
    if !api::is_served(key, version) {
        return Reply::Close(format!("unsupported {key:?} version {version}"));
    }
    let body = &mut frame;
    let encoded = match key {
        ApiKey::ApiVersions => {
            let req: ApiVersionsRequest = match decode(body, key, version) {
                Ok(r) => r,
                Err(e) => return Reply::Close(e),
            };
            encode_frame(
                key,
                version,
                None,
                correlation_id,
                &api::api_versions::handle(version, &req),
            )
        }
        ApiKey::Metadata => match decode::<MetadataRequest>(body, key, version) {
            Ok(req) => {
                let resp = api::metadata::handle(broker, version, req).await;
                encode_frame(key, version, None, correlation_id, &resp)
            }
            Err(e) => return Reply::Close(e),
        },
        ApiKey::Produce => match decode::<ProduceRequest>(body, key, version) {
            Ok(req) => match api::produce::handle(broker, version, req).await {
                ProduceOutcome::Respond(resp) => {
                    encode_frame(key, version, None, correlation_id, &resp)
                }
                ProduceOutcome::NoResponse => return Reply::Nothing,
                ProduceOutcome::CloseConnection => {
                    return Reply::Close(
                        "acks=0 produce failed; closing so the client notices".into(),
                    )
                }
            },
            Err(e) => return Reply::Close(e),
        },
        ApiKey::Fetch => match decode::<FetchRequest>(body, key, version) {
            Ok(req) => {
                let resp = api::fetch::handle(broker, version, req).await;
                encode_frame(key, version, None, correlation_id, &resp)
            }
            Err(e) => return Reply::Close(e),
        },
        ApiKey::ListOffsets => match decode::<ListOffsetsRequest>(body, key, version) {
            Ok(req) => {
                let resp = api::list_offsets::handle(broker, version, req);
                encode_frame(key, version, None, correlation_id, &resp)
            }
            Err(e) => return Reply::Close(e),
        },
        ApiKey::CreateTopics => match decode::<CreateTopicsRequest>(body, key, version) {
            Ok(req) => {
                let resp = api::topics::create(broker, version, req).await;
                encode_frame(key, version, None, correlation_id, &resp)
            }
            Err(e) => return Reply::Close(e),
        },
        ApiKey::DeleteTopics => match decode::<DeleteTopicsRequest>(body, key, version) {
            Ok(req) => {
                let resp = api::topics::delete(broker, version, req).await;
                encode_frame(key, version, None, correlation_id, &resp)
            }
            Err(e) => return Reply::Close(e),
        },
        other => return Reply::Close(format!("no handler for {other:?}")),
    };
    if body.has_remaining() {
        tracing::debug!(
            ?key,
            version,
            trailing = body.remaining(),
            "request had trailing bytes"
        );
    }
    frame_or_close(encoded)
}

fn frame_or_close(encoded: Result<Bytes, String>) -> Reply {
    match encoded {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed (a broker bug)");
            Reply::Close(e)
        }
    }
}
