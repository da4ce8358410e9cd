//! Dispatch: decodes one request frame's header and body into an `ApiRequest`, routes it by
//! API key to its handler, and encodes the response frame. Anything malformed closes the
//! connection, as Kafka does; an unsupported ApiVersions version gets the KIP-511 v0 answer.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable};

use super::frame::{encode_fetch_frame, encode_frame, ResponseFrame};
use super::throttle::{RequestQuotas, Throttle, Timed};
use crate::api::sasl::SaslOutcome;
use crate::api::session::{Authentication, Session};
use crate::api::tracing::Traced;
use crate::api::{self, produce::ProduceOutcome};
use crate::broker::Broker;
use tracing::Instrument as _;

/// Declares the decoded request type and its decoder from one list of served APIs.
macro_rules! served_apis {
    ($($key:ident => $req:ty),* $(,)?) => {
        /// A decoded request of an API Gregor serves.
        #[derive(Debug)]
        pub enum ApiRequest {
            $($key($req),)*
        }

        fn decode_body(key: ApiKey, frame: &mut Bytes, version: i16) -> Result<ApiRequest, String> {
            match key {
                $(ApiKey::$key => <$req>::decode(frame, version)
                    .map(ApiRequest::$key)
                    .map_err(|e| format!("malformed {key:?} v{version} request: {e}")),)*
                other => Err(format!("no handler for {other:?}")),
            }
        }
    };
}

served_apis! {
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    Metadata => MetadataRequest,
    ApiVersions => ApiVersionsRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    DeleteRecords => DeleteRecordsRequest,
    InitProducerId => InitProducerIdRequest,
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
    DescribeConfigs => DescribeConfigsRequest,
    AlterConfigs => AlterConfigsRequest,
    DescribeLogDirs => DescribeLogDirsRequest,
    CreatePartitions => CreatePartitionsRequest,
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
    DescribeCluster => DescribeClusterRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    SyncGroup => SyncGroupRequest,
    DescribeGroups => DescribeGroupsRequest,
    ListGroups => ListGroupsRequest,
    DeleteGroups => DeleteGroupsRequest,
    OffsetDelete => OffsetDeleteRequest,
    CreateAcls => CreateAclsRequest,
    DescribeAcls => DescribeAclsRequest,
    DeleteAcls => DeleteAclsRequest,
    SaslHandshake => SaslHandshakeRequest,
    SaslAuthenticate => SaslAuthenticateRequest,
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
    AlterUserScramCredentials => AlterUserScramCredentialsRequest,
    DescribeClientQuotas => DescribeClientQuotasRequest,
    AlterClientQuotas => AlterClientQuotasRequest,
    AddPartitionsToTxn => AddPartitionsToTxnRequest,
    AddOffsetsToTxn => AddOffsetsToTxnRequest,
    EndTxn => EndTxnRequest,
    WriteTxnMarkers => WriteTxnMarkersRequest,
    TxnOffsetCommit => TxnOffsetCommitRequest,
    DescribeTransactions => DescribeTransactionsRequest,
    ListTransactions => ListTransactionsRequest,
    DescribeProducers => DescribeProducersRequest,
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
    ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
    UpdateFeatures => UpdateFeaturesRequest,
    DescribeTopicPartitions => DescribeTopicPartitionsRequest,
    ElectLeaders => ElectLeadersRequest,
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
    ListPartitionReassignments => ListPartitionReassignmentsRequest,
    ShareGroupHeartbeat => ShareGroupHeartbeatRequest,
    ShareGroupDescribe => ShareGroupDescribeRequest,
    ShareFetch => ShareFetchRequest,
    ShareAcknowledge => ShareAcknowledgeRequest,
    DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest,
    AlterShareGroupOffsets => AlterShareGroupOffsetsRequest,
    DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest,
    ReadShareGroupState => ReadShareGroupStateRequest,
    WriteShareGroupState => WriteShareGroupStateRequest,
    InitializeShareGroupState => InitializeShareGroupStateRequest,
    DeleteShareGroupState => DeleteShareGroupStateRequest,
    ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest,
}

#[derive(Debug)]
pub struct Decoded {
    pub key: ApiKey,
    pub client_id: Option<String>,
    pub version: i16,
    pub correlation_id: i32,
    pub request: ApiRequest,
}

/// The result of decoding a frame, before anything is handled.
#[derive(Debug)]
pub enum DecodeOutcome {
    Request(Box<Decoded>),
    /// An ApiVersions version we do not serve: answer with the KIP-511 fallback.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
    Close(String),
}

/// What the connection does after a request.
pub enum Reply {
    /// A complete response frame (size prefix included).
    Frame(ResponseFrame),
    /// Nothing to send (acks=0 produce).
    Nothing,
    /// Close the connection; the reason is logged once by the connection.
    Close(String),
    /// Send the response, then close (a failed SASL authentication).
    FrameThenClose(ResponseFrame, String),
}

/// Decodes a request frame (without its size prefix). Pure: no broker state involved.
pub fn decode_request(mut frame: Bytes) -> DecodeOutcome {
    if frame.len() < 8 {
        return DecodeOutcome::Close(format!(
            "request of {} bytes is shorter than a header",
            frame.len()
        ));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return DecodeOutcome::Close(format!("unknown API key {raw_key}"));
    };
    let header = match decode_request_header_from_buffer(&mut frame) {
        Ok(h) => h,
        Err(e) => return DecodeOutcome::Close(format!("malformed {key:?} request header: {e}")),
    };
    let correlation_id = header.correlation_id;
    if !api::is_served(key, version) {
        if key == ApiKey::ApiVersions {
            return DecodeOutcome::UnsupportedApiVersions { correlation_id };
        }
        return DecodeOutcome::Close(format!("unsupported {key:?} version {version}"));
    }
    let request = decode_body(key, &mut frame, version);
    match request {
        Ok(request) => DecodeOutcome::Request(Box::new(Decoded {
            key,
            client_id: header.client_id.as_ref().map(|c| c.to_string()),
            version,
            correlation_id,
            request,
        })),
        Err(e) => DecodeOutcome::Close(e),
    }
}

/// Counts a SASL step that completed the exchange (`went_on` and now authenticated) or
/// ended it in failure.
fn count_authentication(broker: &Broker, session: &Session, went_on: bool) {
    if !went_on {
        broker.metrics.authentication(false);
    } else if matches!(session.authentication, Authentication::Done { .. }) {
        broker.metrics.authentication(true);
    }
}

/// Requests whose bodies carry passwords or salted passwords: never logged.
fn carries_secrets(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::SaslAuthenticate | ApiKey::AlterUserScramCredentials
    )
}

/// The requests a connection may send before it has authenticated on a SASL listener.
fn allowed_unauthenticated(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    )
}

/// Why a request may not be served in this session now (the connection is then closed, as
/// Kafka does).
fn refused(session: &Session, key: ApiKey) -> Option<String> {
    if allowed_unauthenticated(key) {
        return None;
    }
    match &session.authentication {
        a if !a.authenticated() => Some(format!(
            "unexpected {key:?} request before SASL authentication completed"
        )),
        Authentication::Done {
            expires: Some(expires),
        } if std::time::Instant::now() > *expires => Some(format!(
            "{key:?} request after the session expired (connections.max.reauth.ms) without re-authentication"
        )),
        _ => None,
    }
}

/// Handles one request frame (without its size prefix): a bare SASL token after a
/// SaslHandshake v0, else a Kafka request. A client over a quota gets `throttle` set: the
/// connection mutes itself for that long.
pub async fn dispatch(
    broker: &Broker,
    session: &mut Session,
    frame: Bytes,
    throttle: &mut Throttle,
) -> Reply {
    let request_size = frame.len();
    let sasl_listener = session.sasl.clone();
    if session.authentication.awaits_raw_token() {
        let image = broker.image();
        let answer = api::sasl::raw_token(session, sasl_listener.as_deref(), &image, &frame).await;
        count_authentication(broker, session, answer.is_ok());
        return match answer {
            Ok(token) => {
                let mut out = BytesMut::with_capacity(4 + token.len());
                out.put_i32(token.len() as i32);
                out.extend_from_slice(&token);
                Reply::Frame(ResponseFrame::One(out.freeze()))
            }
            Err(why) => Reply::Close(why),
        };
    }
    let decoded = match decode_request(frame) {
        DecodeOutcome::Request(d) => *d,
        DecodeOutcome::UnsupportedApiVersions { correlation_id } => {
            // KIP-511: answer in the v0 layout, with header v0, so any client can read it.
            let body = api::api_versions::unsupported_version_response();
            return reply(encode_frame(
                ApiKey::ApiVersions,
                0,
                Some(0),
                correlation_id,
                &body,
            ));
        }
        DecodeOutcome::Close(reason) => return Reply::Close(reason),
    };
    if carries_secrets(decoded.key) {
        tracing::trace!(key = ?decoded.key, version = decoded.version, "request (body withheld: it carries credentials)");
    } else {
        tracing::trace!(request = ?decoded, "request");
    }
    let Decoded {
        key,
        client_id,
        version,
        correlation_id,
        request,
    } = decoded;
    if let Some(why) = refused(session, key) {
        return Reply::Close(why);
    }
    macro_rules! respond {
        ($resp:expr) => {
            encode_frame(key, version, None, correlation_id, &$resp)
        };
    }
    macro_rules! sasl {
        ($outcome:expr) => {
            match $outcome {
                SaslOutcome::Respond(resp) => respond!(resp),
                SaslOutcome::RespondAndClose(resp, why) => {
                    return match respond!(resp) {
                        Ok(frame) => Reply::FrameThenClose(ResponseFrame::One(frame), why),
                        Err(e) => reply(Err(e)),
                    }
                }
            }
        };
    }
    let encoded = match request {
        ApiRequest::SaslHandshake(r) => {
            sasl!(api::sasl::handshake(
                session,
                sasl_listener.as_deref(),
                version,
                r
            ))
        }
        ApiRequest::SaslAuthenticate(r) => {
            let image = broker.image();
            let outcome =
                api::sasl::authenticate(session, sasl_listener.as_deref(), &image, version, r)
                    .await;
            count_authentication(broker, session, matches!(outcome, SaslOutcome::Respond(_)));
            sasl!(outcome)
        }
        other => {
            let quotas = session.client_quotas(&broker.quotas, client_id.as_deref());
            let call = Call {
                key,
                client_id,
                version,
                correlation_id,
                request_size,
            };
            return route(broker, session, call, other, quotas.as_deref(), throttle).await;
        }
    };
    reply(encoded)
}

/// A request's header fields and size.
struct Call {
    key: ApiKey,
    client_id: Option<String>,
    version: i16,
    correlation_id: i32,
    request_size: usize,
}

/// Routes an authenticated session's request to its handler, timing it when its client is
/// under a request quota.
async fn route(
    broker: &Broker,
    session: &Session,
    call: Call,
    request: ApiRequest,
    client_quotas: Option<&crate::quota::ClientQuotas>,
    throttle: &mut Throttle,
) -> Reply {
    let quotas = RequestQuotas::new(&broker.quotas, client_quotas);
    let clock = quotas.clock();
    let routed = route_spanned(broker, session, call, request, &quotas, throttle);
    match clock {
        Some(clock) => Timed::new(routed, clock).await,
        None => routed.await,
    }
}

/// `route`, with the request's trace span.
async fn route_spanned(
    broker: &Broker,
    session: &Session,
    call: Call,
    request: ApiRequest,
    quotas: &RequestQuotas<'_>,
    throttle: &mut Throttle,
) -> Reply {
    let traced = if api::tracing::enabled() {
        let traceparents = match &request {
            ApiRequest::Produce(r) => api::produce::traceparents(broker, r),
            _ => Vec::new(),
        };
        api::tracing::request_span(call.key, call.client_id.as_deref(), &traceparents)
    } else {
        Traced::none()
    };
    let span = traced.span.clone();
    route_traced(broker, session, call, request, traced, quotas, throttle)
        .instrument(span)
        .await
}

/// `route`, inside the request's span. Every response but WriteTxnMarkers' (a cluster
/// action, exempt as in Kafka) carries the request's throttle time.
async fn route_traced(
    broker: &Broker,
    session: &Session,
    call: Call,
    request: ApiRequest,
    traced: Traced,
    quotas: &RequestQuotas<'_>,
    throttle: &mut Throttle,
) -> Reply {
    let Call {
        key,
        client_id,
        version,
        correlation_id,
        request_size,
    } = call;
    macro_rules! respond {
        ($resp:expr) => {{
            let mut resp = $resp;
            resp.throttle_time_ms = quotas.other(key, version, throttle);
            encode_frame(key, version, None, correlation_id, &resp)
        }};
    }
    let (b, s) = (broker, session);
    let encoded = match request {
        ApiRequest::SaslHandshake(_) | ApiRequest::SaslAuthenticate(_) => {
            return Reply::Close("a SASL request reached the router (a broker bug)".into())
        }
        ApiRequest::ApiVersions(r) => respond!(api::api_versions::handle(&b.image(), version, &r)),
        ApiRequest::Metadata(r) => respond!(api::metadata::handle(b, s, version, r).await),
        ApiRequest::Produce(r) => {
            let acks = r.acks;
            match api::produce::handle(b, s, version, r, &traced).await {
                ProduceOutcome::Respond(mut resp) => {
                    resp.throttle_time_ms = quotas.produce(version, request_size, acks, throttle);
                    encode_frame(key, version, None, correlation_id, &resp)
                }
                ProduceOutcome::NoResponse => {
                    quotas.produce(version, request_size, acks, throttle);
                    return Reply::Nothing;
                }
                ProduceOutcome::CloseConnection => {
                    return Reply::Close(
                        "acks=0 produce failed; closing so the client notices".into(),
                    )
                }
            }
        }
        ApiRequest::Fetch(mut r) => {
            // Replication is not a client: follower fetches are exempt, as in Kafka.
            let unlimited = RequestQuotas::unlimited(&broker.quotas);
            let from_follower = r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0;
            let quotas = if from_follower { &unlimited } else { quotas };
            if let Some(max) = quotas.fetch_max_bytes() {
                r.max_bytes = r.max_bytes.min(max);
                r.min_bytes = r.min_bytes.min(r.max_bytes);
            }
            let mut resp = api::fetch::handle(b, s, version, r, &traced).await;
            let size = || resp.compute_size(version).unwrap_or(0);
            let (throttle_ms, without_data) = quotas.fetch(version, size, throttle);
            if without_data {
                resp.responses.clear();
            }
            resp.throttle_time_ms = throttle_ms;
            return match encode_fetch_frame(version, correlation_id, &resp) {
                Ok(frame) => Reply::Frame(frame),
                Err(e) => reply(Err(e)),
            };
        }
        ApiRequest::ListOffsets(r) => respond!(api::list_offsets::handle(b, s, version, r)),
        ApiRequest::CreateTopics(r) => respond!(api::topics::create(b, s, version, r).await),
        ApiRequest::DeleteTopics(r) => respond!(api::topics::delete(b, s, version, r).await),
        ApiRequest::CreatePartitions(r) => respond!(api::topics::create_partitions(b, s, r).await),
        ApiRequest::DeleteRecords(r) => respond!(api::delete_records::handle(b, s, r)),
        ApiRequest::InitProducerId(r) => respond!(api::producer_id::handle(b, s, r).await),
        ApiRequest::OffsetForLeaderEpoch(r) => respond!(api::leader_epoch::handle(b, s, r)),
        ApiRequest::DescribeConfigs(r) => respond!(api::configs::describe(b, s, version, r)),
        ApiRequest::AlterConfigs(r) => respond!(api::configs::alter(b, s, r).await),
        ApiRequest::IncrementalAlterConfigs(r) => {
            respond!(api::configs::incremental_alter(b, s, r).await)
        }
        ApiRequest::DescribeLogDirs(r) => respond!(api::log_dirs::handle(b, s, version, r)),
        ApiRequest::DescribeCluster(r) => {
            respond!(api::metadata::describe_cluster(b, s, version, r))
        }
        ApiRequest::FindCoordinator(r) => {
            respond!(api::groups::find_coordinator(b, s, version, r).await)
        }
        ApiRequest::JoinGroup(r) => {
            let client = api::groups::ClientInfo {
                client_id: client_id.unwrap_or_default(),
                client_host: format!("/{}", s.client_host),
            };
            respond!(api::groups::join(b, s, version, &client, r).await)
        }
        ApiRequest::ConsumerGroupHeartbeat(r) => {
            let client = api::groups::ClientInfo {
                client_id: client_id.unwrap_or_default(),
                client_host: format!("/{}", s.client_host),
            };
            respond!(api::consumer_groups::heartbeat(b, s, version, &client, r).await)
        }
        ApiRequest::ConsumerGroupDescribe(r) => {
            respond!(api::consumer_groups::describe(b, s, version, r))
        }
        ApiRequest::SyncGroup(r) => respond!(api::groups::sync(b, s, version, r).await),
        ApiRequest::Heartbeat(r) => respond!(api::groups::heartbeat(b, s, r)),
        ApiRequest::LeaveGroup(r) => respond!(api::groups::leave(b, s, version, r).await),
        ApiRequest::ListGroups(r) => respond!(api::groups::list(b, s, version, r)),
        ApiRequest::DescribeGroups(r) => respond!(api::groups::describe(b, s, version, r)),
        ApiRequest::DeleteGroups(r) => respond!(api::groups::delete(b, s, r).await),
        ApiRequest::OffsetCommit(r) => respond!(api::offsets::commit(b, s, version, r).await),
        ApiRequest::OffsetFetch(r) => respond!(api::offsets::fetch(b, s, version, r)),
        ApiRequest::OffsetDelete(r) => respond!(api::offsets::delete(b, s, r).await),
        ApiRequest::CreateAcls(r) => respond!(api::acls::create(b, s, version, r).await),
        ApiRequest::DescribeAcls(r) => respond!(api::acls::describe(b, s, version, r)),
        ApiRequest::DeleteAcls(r) => respond!(api::acls::delete(b, s, version, r).await),
        ApiRequest::DescribeUserScramCredentials(r) => respond!(api::scram::describe(b, s, r)),
        ApiRequest::AlterUserScramCredentials(r) => respond!(api::scram::alter(b, s, r).await),
        ApiRequest::DescribeClientQuotas(r) => respond!(api::client_quotas::describe(b, s, r)),
        ApiRequest::AlterClientQuotas(r) => respond!(api::client_quotas::alter(b, s, r).await),
        ApiRequest::AddPartitionsToTxn(r) => {
            respond!(api::txn::add_partitions(b, s, version, r).await)
        }
        ApiRequest::AddOffsetsToTxn(r) => respond!(api::txn::add_offsets(b, s, version, r).await),
        ApiRequest::EndTxn(r) => respond!(api::txn::end(b, s, version, r).await),
        ApiRequest::WriteTxnMarkers(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::txn::write_markers(b, s, r).await,
        ),
        ApiRequest::TxnOffsetCommit(r) => {
            respond!(api::txn::txn_offset_commit(b, s, version, r).await)
        }
        ApiRequest::DescribeTransactions(r) => {
            respond!(api::txn_admin::describe_transactions(b, s, r))
        }
        ApiRequest::ListTransactions(r) => {
            respond!(api::txn_admin::list_transactions(b, s, version, r))
        }
        ApiRequest::DescribeProducers(r) => respond!(api::txn_admin::describe_producers(b, s, r)),
        ApiRequest::UpdateFeatures(r) => respond!(api::features::update(b, s, version, r).await),
        ApiRequest::DescribeTopicPartitions(r) => {
            respond!(api::describe_topic_partitions::handle(b, s, r))
        }
        ApiRequest::ElectLeaders(r) => respond!(api::elect_leaders::handle(b, s, r).await),
        ApiRequest::AlterPartitionReassignments(r) => {
            respond!(api::reassignments::alter(b, s, version, r).await)
        }
        ApiRequest::ListPartitionReassignments(r) => respond!(api::reassignments::list(b, s, r)),
        ApiRequest::ShareGroupHeartbeat(r) => {
            let client = api::groups::ClientInfo {
                client_id: client_id.unwrap_or_default(),
                client_host: format!("/{}", s.client_host),
            };
            respond!(api::share_group::heartbeat(b, s, &client, r))
        }
        ApiRequest::ShareGroupDescribe(r) => respond!(api::share_group::describe(b, s, r)),
        ApiRequest::ShareFetch(r) => respond!(api::share_fetch::share_fetch(b, s, r).await),
        ApiRequest::ShareAcknowledge(r) => {
            respond!(api::share_fetch::share_acknowledge(b, s, r).await)
        }
        ApiRequest::DescribeShareGroupOffsets(r) => {
            respond!(api::share_group::describe_offsets(b, s, r).await)
        }
        ApiRequest::AlterShareGroupOffsets(r) => {
            respond!(api::share_group::alter_offsets(b, s, r).await)
        }
        ApiRequest::DeleteShareGroupOffsets(r) => {
            respond!(api::share_group::delete_offsets(b, s, r).await)
        }
        // The share coordinator's inter-broker APIs: no throttle time, as in Kafka.
        ApiRequest::ReadShareGroupState(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::share_state::read_state(b, s, r).await,
        ),
        ApiRequest::WriteShareGroupState(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::share_state::write_state(b, s, r).await,
        ),
        ApiRequest::InitializeShareGroupState(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::share_state::initialize_state(b, s, r).await,
        ),
        ApiRequest::DeleteShareGroupState(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::share_state::delete_state(b, s, r).await,
        ),
        ApiRequest::ReadShareGroupStateSummary(r) => encode_frame(
            key,
            version,
            None,
            correlation_id,
            &api::share_state::read_state_summary(b, s, r).await,
        ),
    };
    reply(encoded)
}

fn reply(encoded: Result<Bytes, String>) -> Reply {
    match encoded {
        Ok(frame) => Reply::Frame(ResponseFrame::One(frame)),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed (a broker bug)");
            Reply::Close(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        /// A valid header for each served API, followed by arbitrary bytes, never panics.
        #[test]
        fn served_apis_with_arbitrary_bodies(
            which in 0usize..crate::api::SUPPORTED_APIS.len(),
            version in 0i16..16,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let (key, _, _) = crate::api::SUPPORTED_APIS[which];
            let mut frame = BytesMut::new();
            frame.put_i16(key as i16);
            frame.put_i16(version);
            frame.put_i32(7);
            frame.put_i16(-1);
            frame.extend_from_slice(&body);
            let _ = decode_request(frame.freeze());
        }
    }

    #[test]
    fn huge_array_length_is_refused_without_aborting() {
        // Metadata v0 whose topic array claims i32::MAX entries and carries none.
        let mut frame = BytesMut::new();
        frame.put_i16(3);
        frame.put_i16(0);
        frame.put_i32(1);
        frame.put_i16(-1);
        frame.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(frame.freeze()),
            DecodeOutcome::Close(_)
        ));
    }
}
