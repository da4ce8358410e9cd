//! Fetch (v4-v17) for consumers and follower replicas: topics by id from v13, KIP-227
//! incremental fetch sessions (`session_cache`), KIP-392 follower fetching with a preferred
//! read replica (`preferred_replica`), KIP-951 leader hints, and the v15+ replica state. What a
//! pass over the partitions reads is in `read`. A fetch that has less than `min_bytes` waits (up
//! to `max_wait_ms`) for an append to any of its partitions to wake it; there is no polling
//! timer.

mod preferred_replica;
mod read;
pub mod session_cache;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::Instrument as _;

use self::read::{read_all, ReadAll, ReadOptions, Wanted};
use self::session_cache::{
    next_epoch, Answered, CachedPartition, FetchParams, FetchSession, Incremental, PartitionKey,
    TopicKey, FINAL_EPOCH, INITIAL_EPOCH, INVALID_SESSION_ID,
};
use super::code;
use super::leader_hints::LeaderHints;
use super::session::Session;
use super::tracing::Traced;
use crate::broker::Broker;
use crate::meta::acl::{AclOperation, ResourceType};
use crate::meta::image::MetadataImage;
use crate::replica::Partition;

const READ_COMMITTED: i8 = 1;

/// How the fetch relates to a fetch session.
enum Context {
    /// Epoch -1 (or before v7): no session.
    Sessionless,
    /// Epoch 0: a full fetch that may create a session.
    Full,
    /// An incremental fetch on this session, whose epoch has moved on.
    Incremental(Arc<FetchSession>),
}

pub async fn handle(
    broker: &Broker,
    session: &Session,
    version: i16,
    req: FetchRequest,
    traced: &Traced,
) -> FetchResponse {
    broker.metrics.fetch_version(version);
    // A broker replica fetches with its id (in the replica state from v15); consumers send -1.
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower = (replica_id >= 0).then_some(replica_id);
    let (context, partitions) = match session_context(broker, version, &req) {
        Ok(c) => c,
        Err(e) => {
            return FetchResponse::default()
                .with_error_code(code(e))
                .with_session_id(INVALID_SESSION_ID)
        }
    };
    let image = broker.image();
    let wanted = resolve(
        broker,
        session,
        &image,
        &req,
        follower.is_some(),
        partitions,
    );
    if traced.on() {
        if let (Some(first), true) = (wanted.first(), wanted.len() == 1) {
            traced.destination(first.topic.as_deref().unwrap_or(""), Some(first.index));
        } else if let Some(topic) = wanted.first().and_then(|w| w.topic.as_deref()) {
            if wanted.iter().all(|w| w.topic.as_deref() == Some(topic)) {
                traced.destination(topic, None);
            }
        }
    }
    let rack_aware = broker.config.kafka.rack_aware_replica_selector && version >= 11;
    let opts = ReadOptions {
        replica_id: follower,
        response_max_bytes: req.max_bytes.max(0) as usize,
        leader_only: version < 11,
        rack: (rack_aware && follower.is_none())
            .then(|| (req.rack_id.as_str(), &*session.listener)),
        image: &image,
        leader_quota: &broker.replicas.quotas.leader,
    };
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let read = wait_and_read(broker, &req, &wanted, &opts, max_wait, traced).await;
    respond(
        broker,
        version,
        &req,
        context,
        &wanted,
        read,
        &session.listener,
    )
}

/// The fetch's relation to a session and the partitions it covers, as Kafka's FetchManager
/// decides: a full fetch (epoch 0 or -1) closes the session it names and may open a new one
/// (epoch 0); an incremental one must name a live session with the expected epoch, and
/// covers all of that session's partitions after applying the request's changes.
fn session_context(
    broker: &Broker,
    version: i16,
    req: &FetchRequest,
) -> Result<(Context, Vec<(PartitionKey, FetchParams)>), ResponseError> {
    let requested = requested_partitions(version, req);
    if version < 7 {
        return Ok((Context::Sessionless, requested));
    }
    let cache = &broker.fetch_sessions;
    if req.session_epoch == INITIAL_EPOCH || req.session_epoch == FINAL_EPOCH {
        if req.session_id != INVALID_SESSION_ID {
            cache.remove(req.session_id);
        }
        let context = if req.session_epoch == INITIAL_EPOCH && !requested.is_empty() {
            Context::Full
        } else {
            Context::Sessionless
        };
        return Ok((context, requested));
    }
    let forgotten = forgotten_partitions(version, req);
    let outcome = cache.incremental(
        req.session_id,
        req.session_epoch,
        version >= 13,
        cache.now_ms(),
        |cached| {
            for (key, params) in &requested {
                match cached.get_mut(key) {
                    Some(c) => c.params = *params,
                    None => {
                        cached.insert(key.clone(), CachedPartition::new(*params, None));
                    }
                }
            }
            for key in &forgotten {
                cached.shift_remove(key);
            }
        },
    )?;
    Ok(match outcome {
        Incremental::Session(s, partitions) => (Context::Incremental(s), partitions),
        Incremental::Closed => (Context::Sessionless, requested),
    })
}

fn topic_key(version: i16, name: &TopicName, id: uuid::Uuid) -> TopicKey {
    if version >= 13 {
        TopicKey::Id(id)
    } else {
        TopicKey::Name(Arc::from(name.0.as_str()))
    }
}

/// The partitions the request names, with their parameters as this version carries them.
fn requested_partitions(version: i16, req: &FetchRequest) -> Vec<(PartitionKey, FetchParams)> {
    let mut out = Vec::new();
    for topic in &req.topics {
        let key = topic_key(version, &topic.topic, topic.topic_id);
        for p in &topic.partitions {
            let params = FetchParams {
                fetch_offset: p.fetch_offset,
                current_leader_epoch: if version >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                last_fetched_epoch: if version >= 12 {
                    p.last_fetched_epoch
                } else {
                    -1
                },
                log_start_offset: p.log_start_offset,
                max_bytes: p.partition_max_bytes,
            };
            out.push(((key.clone(), p.partition), params));
        }
    }
    out
}

fn forgotten_partitions(version: i16, req: &FetchRequest) -> Vec<PartitionKey> {
    req.forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let key = topic_key(version, &t.topic, t.topic_id);
            t.partitions.iter().map(move |p| (key.clone(), *p))
        })
        .collect()
}

/// The partitions, resolved against what this broker hosts and what the session may read: a
/// consumer needs READ on each topic, a follower CLUSTER_ACTION on the cluster (as in Kafka, a
/// refused follower gets TOPIC_AUTHORIZATION_FAILED on every partition). A topic id this
/// broker does not know gets UNKNOWN_TOPIC_ID.
fn resolve(
    broker: &Broker,
    session: &Session,
    image: &MetadataImage,
    req: &FetchRequest,
    follower: bool,
    partitions: Vec<(PartitionKey, FetchParams)>,
) -> Vec<Wanted> {
    let follower_allowed =
        follower && session.allowed_on_cluster(image, AclOperation::ClusterAction);
    let read_committed = !follower && req.isolation_level == READ_COMMITTED;
    // Partitions of a topic come together: resolve each run of them once.
    let mut last: Option<ResolvedTopic> = None;
    let mut wanted = Vec::with_capacity(partitions.len());
    for (key, params) in partitions {
        if last.as_ref().is_none_or(|l| l.key != key.0) {
            let (name, id, known) = match &key.0 {
                TopicKey::Id(id) => match image.topic_by_id(id) {
                    Some(t) => (Some(Arc::<str>::from(t.name.as_str())), *id, true),
                    None => (None, *id, false),
                },
                TopicKey::Name(n) => match image.topic(n) {
                    Some(t) => (Some(n.clone()), t.topic_id, true),
                    None => (Some(n.clone()), uuid::Uuid::nil(), false),
                },
            };
            let authorized = match (&name, follower) {
                (_, true) => follower_allowed,
                (Some(n), false) => {
                    session.allowed(image, AclOperation::Read, ResourceType::Topic, n)
                }
                (None, false) => true,
            };
            last = Some(ResolvedTopic {
                key: key.0.clone(),
                name,
                id,
                known,
                authorized,
            });
        }
        let Some(ResolvedTopic {
            name,
            id: topic_id,
            known,
            authorized,
            ..
        }) = &last
        else {
            continue;
        };
        let index = key.1;
        let target = match name {
            Some(_) if !authorized => Err(ResponseError::TopicAuthorizationFailed),
            None if !*authorized => Err(ResponseError::TopicAuthorizationFailed),
            Some(n) if *known => broker.replicas.partition(n, index).ok_or_else(|| {
                if partition_exists(image, n, index) {
                    ResponseError::NotLeaderOrFollower
                } else {
                    ResponseError::UnknownTopicOrPartition
                }
            }),
            None => Err(ResponseError::UnknownTopicId),
            Some(_) => Err(ResponseError::UnknownTopicOrPartition),
        };
        wanted.push(Wanted {
            topic: name.clone(),
            topic_id: *topic_id,
            index,
            params,
            read_committed,
            target,
            key,
        });
    }
    wanted
}

/// A topic of the request, as resolved once for its run of partitions.
struct ResolvedTopic {
    key: TopicKey,
    name: Option<Arc<str>>,
    id: uuid::Uuid,
    known: bool,
    authorized: bool,
}

fn partition_exists(image: &MetadataImage, topic: &str, index: i32) -> bool {
    image
        .topic(topic)
        .is_some_and(|t| t.partitions.iter().any(|x| x.partition == index))
}

/// Waits (up to the request's `max_wait_ms`) until `min_bytes` are readable or something makes
/// Kafka answer at once, then returns one final read.
async fn wait_and_read(
    broker: &Broker,
    req: &FetchRequest,
    wanted: &[Wanted],
    opts: &ReadOptions<'_>,
    max_wait: Duration,
    traced: &Traced,
) -> ReadAll {
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let hosted: Vec<&Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.target.as_ref().ok())
        .collect();
    loop {
        // Register for wake-ups before reading, so an append in between is not missed.
        // Consumers wait for the high watermark; followers for the log end offset.
        let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            hosted.iter().map(|p| Box::pin(p.data_arrived())).collect();
        if opts.replica_id.is_some() {
            wakeups.extend(hosted.iter().map(|p| Box::pin(p.next_append())));
        }
        for w in wakeups.iter_mut() {
            w.as_mut().enable();
        }
        let read = read_all(wanted, opts);
        let now = tokio::time::Instant::now();
        if read.bytes >= min_bytes || read.respond_now || now >= deadline || wakeups.is_empty() {
            return read;
        }
        let waited = async {
            tokio::select! {
                _ = futures::future::select_all(wakeups) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = broker.shutdown.cancelled() => {}
            }
        };
        waited.instrument(traced.fetch_wait()).await;
    }
}

fn answered(pd: &PartitionData) -> Answered {
    Answered {
        record_bytes: pd.records.as_ref().map_or(0, Bytes::len),
        high_watermark: pd.high_watermark,
        last_stable_offset: pd.last_stable_offset,
        log_start_offset: pd.log_start_offset,
        error: pd.error_code != 0,
        must_send: pd.preferred_read_replica.0 >= 0 || pd.diverging_epoch.epoch >= 0,
    }
}

/// Builds the response: every partition for a sessionless or full fetch (which creates its
/// session now, remembering what it answered), only those with something new for an
/// incremental one. Leader hints go on NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH.
fn respond(
    broker: &Broker,
    version: i16,
    req: &FetchRequest,
    context: Context,
    wanted: &[Wanted],
    read: ReadAll,
    listener: &str,
) -> FetchResponse {
    let mut keep = vec![true; wanted.len()];
    let session_id = match context {
        Context::Sessionless => INVALID_SESSION_ID,
        Context::Full => {
            let cached: IndexMap<PartitionKey, CachedPartition> = wanted
                .iter()
                .zip(&read.partitions)
                .map(|(w, pd)| {
                    let c = CachedPartition::new(w.params, Some(&answered(pd)));
                    (w.key.clone(), c)
                })
                .collect();
            let cache = &broker.fetch_sessions;
            let follower = req_is_follower(version, req);
            cache.create(cache.now_ms(), follower, version >= 13, cached)
        }
        Context::Incremental(session) => {
            let mut state = session.state.lock();
            if state.epoch != next_epoch(req.session_epoch) {
                // Another fetch on this session got in between: a duplicate request.
                return FetchResponse::default()
                    .with_error_code(code(ResponseError::InvalidFetchSessionEpoch))
                    .with_session_id(session.id);
            }
            let mut moved = false;
            for ((w, pd), keep) in wanted.iter().zip(&read.partitions).zip(keep.iter_mut()) {
                if let Some(c) = state.partitions.get_mut(&w.key) {
                    *keep = c.must_respond(&answered(pd));
                    moved |= c.sent_records;
                }
            }
            if moved {
                // Partitions that returned records go last (stable), as Kafka rotates them.
                state
                    .partitions
                    .sort_by(|_, a, _, b| a.sent_records.cmp(&b.sent_records));
            }
            session.id
        }
    };
    let image = broker.image();
    let mut hints = LeaderHints::new(&image);
    let follower = req_is_follower(version, req);
    let mut leader_throttled_bytes = 0u64;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for ((w, mut pd), keep) in wanted.iter().zip(read.partitions).zip(keep) {
        if !keep {
            continue;
        }
        let bytes = pd.records.as_ref().map_or(0, Bytes::len);
        if let (Ok(p), true) = (&w.target, bytes > 0) {
            p.counters
                .bytes_out
                .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
            if follower && p.leader_throttled() {
                leader_throttled_bytes += bytes as u64;
            }
        }
        if version >= 12 {
            leader_hint(&mut hints, w, &mut pd);
        }
        let same_topic = topics.last().is_some_and(|t| {
            if version >= 13 {
                t.topic_id == w.topic_id
            } else {
                matches!(&w.key.0, TopicKey::Name(n) if t.topic.0.as_str() == &**n)
            }
        });
        if !same_topic {
            let mut t = FetchableTopicResponse::default();
            match &w.key.0 {
                TopicKey::Id(id) => t.topic_id = *id,
                TopicKey::Name(n) => t.topic = TopicName(StrBytes::from_string(n.to_string())),
            }
            topics.push(t);
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(pd);
        }
    }
    // Every follower's bytes of leader-throttled partitions count, in-sync ones' too, as
    // Kafka's sizeOfThrottledPartitions.
    broker.replicas.quotas.leader.record(leader_throttled_bytes);
    let node_endpoints = if version >= 16 {
        node_endpoints(&hints, listener)
    } else {
        Vec::new()
    };
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
        .with_node_endpoints(node_endpoints)
}

fn req_is_follower(version: i16, req: &FetchRequest) -> bool {
    let id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    id >= 0
}

/// KIP-951: on NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH, the leader and epoch the
/// metadata names now, so the client can go straight there.
fn leader_hint(hints: &mut LeaderHints, w: &Wanted, pd: &mut PartitionData) {
    let hinted = [
        ResponseError::NotLeaderOrFollower,
        ResponseError::FencedLeaderEpoch,
    ];
    if !hinted.iter().any(|e| code(*e) == pd.error_code) {
        return;
    }
    let Some((leader, epoch)) = w.topic.as_deref().and_then(|n| hints.leader_of(n, w.index)) else {
        return;
    };
    pd.current_leader = LeaderIdAndEpoch::default()
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(epoch);
}

/// The endpoints (on the client's listener) of the leaders named in leader hints (v16+).
fn node_endpoints(hints: &LeaderHints, listener: &str) -> Vec<NodeEndpoint> {
    hints
        .endpoints(listener)
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.node_id))
                .with_host(StrBytes::from_string(e.host))
                .with_port(e.port)
                .with_rack(e.rack.map(StrBytes::from_string))
        })
        .collect()
}
