//! Followers: one fetcher task per leader broker this broker follows partitions from. Each
//! task fetches with the Kafka Fetch API over the leader's client port (the newest version
//! both speak, v12 to v17: topic ids from v13, the replica id in the replica state from v15),
//! appends what it gets as-is (offsets and epochs kept), truncates divergent tails the leader
//! points out (diverging epochs), and tracks the leader's high watermark. While the follower
//! replication quota is used up, partitions named by their topic's
//! `follower.replication.throttled.replicas` sit out of the fetches until they have caught up
//! (`throttle.rs`).
//!
//! A fetch that gets no answer within `replica.fetch.wait.max.ms` plus a margin is taken for a
//! dead connection (a network partition drops packets silently): the fetcher reconnects at
//! once instead of waiting for a socket timeout, so a follower cut off by a partition fetches
//! again right after the partition heals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::ReplicaState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::client::KafkaClient;
use super::{Partition, ReplicaManager};
use crate::meta::MetadataQuorum;

const BACKOFF: Duration = Duration::from_millis(200);
/// The Fetch versions a follower uses: v12 brought diverging epochs, v17 is the newest.
const MIN_FETCH_VERSION: i16 = 12;
const MAX_FETCH_VERSION: i16 = 17;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than its wait a fetch may take before the connection counts as dead: the
/// leader answers within `replica.fetch.wait.max.ms` plus the time to read and send.
const FETCH_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct FetcherManager {
    /// Leader broker id → the cancel token of its fetcher task.
    fetchers: Mutex<HashMap<i32, CancellationToken>>,
}

/// The partitions this broker follows from `leader`, by (topic, partition).
fn followed_from(
    replicas: &ReplicaManager,
    leader: i32,
) -> HashMap<(Arc<str>, i32), Arc<Partition>> {
    let mut out = HashMap::new();
    for topic in replicas.hosted().values() {
        for p in topic.partitions.values() {
            if !p.is_leader() && p.state().leader == leader {
                out.insert((p.topic.clone(), p.index), p.clone());
            }
        }
    }
    out
}

impl FetcherManager {
    /// Starts a fetcher for every leader we follow a partition from, stops the others.
    pub fn sync(
        &self,
        replicas: &Arc<ReplicaManager>,
        meta: &MetadataQuorum,
        shutdown: &CancellationToken,
    ) {
        let me = replicas.node_id();
        let mut leaders: Vec<i32> = Vec::new();
        for topic in replicas.hosted().values() {
            for p in topic.partitions.values() {
                let leader = p.state().leader;
                if leader >= 0 && leader != me && !leaders.contains(&leader) {
                    leaders.push(leader);
                }
            }
        }
        let mut fetchers = self.fetchers.lock();
        fetchers.retain(|leader, token| {
            let keep = leaders.contains(leader);
            if !keep {
                token.cancel();
            }
            keep
        });
        for leader in leaders {
            fetchers.entry(leader).or_insert_with(|| {
                let token = shutdown.child_token();
                tokio::spawn(run(replicas.clone(), meta.clone(), leader, token.clone()));
                token
            });
        }
    }
}

/// Sleeps for `BACKOFF`; false when cancelled meanwhile.
async fn back_off(cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(BACKOFF) => true,
        _ = cancel.cancelled() => false,
    }
}

async fn connect(
    replicas: &ReplicaManager,
    meta: &MetadataQuorum,
    leader: i32,
) -> Result<(KafkaClient, i16), String> {
    let (host, port) = meta
        .image()
        .brokers
        .get(&leader)
        .and_then(|b| b.endpoint(&replicas.settings.inter_broker_listener))
        .map(|(host, port)| (host.to_string(), port))
        .ok_or_else(|| format!("no address known for broker {leader}"))?;
    let mut client = KafkaClient::connect(
        (&host, port),
        &replicas.settings.inter_broker_security,
        format!("broker-{}-fetcher", replicas.node_id()),
        CONNECT_TIMEOUT,
    )
    .await
    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let version = fetch_version(&mut client)
        .await
        .map_err(|e| format!("ApiVersions from {host}:{port}: {e}"))?;
    Ok((client, version))
}

/// The newest Fetch version the leader and this follower both speak (a leader still on an
/// older Gregor during a rolling upgrade gets the version it knows).
async fn fetch_version(client: &mut KafkaClient) -> std::io::Result<i16> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("gregor"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let response = client.call(3, &request, CONNECT_TIMEOUT).await?;
    let max = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
        .map_or(MIN_FETCH_VERSION, |k| k.max_version);
    Ok(max.clamp(MIN_FETCH_VERSION, MAX_FETCH_VERSION))
}

async fn run(
    replicas: Arc<ReplicaManager>,
    meta: MetadataQuorum,
    leader: i32,
    cancel: CancellationToken,
) {
    let mut client: Option<(KafkaClient, i16)> = None;
    let deadline = replicas.settings.fetch_wait_max + FETCH_DEADLINE_MARGIN;
    // The partitions whose log reached the leader's high watermark at their last fetch (Kafka's
    // PartitionFetchState.isReplicaInSync, a lag of 0): a follower throttle never holds them.
    let mut caught_up: HashSet<(Arc<str>, i32)> = HashSet::new();
    tracing::info!(leader, "replica fetcher started");
    while !cancel.is_cancelled() {
        let partitions = followed_from(&replicas, leader);
        caught_up.retain(|key| partitions.contains_key(key));
        if partitions.is_empty() {
            if !back_off(&cancel).await {
                break;
            }
            continue;
        }
        let (c, version) = match client.as_mut() {
            Some(c) => c,
            None => match connect(&replicas, &meta, leader).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "cannot reach leader");
                    if !back_off(&cancel).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let version = *version;
        // Kafka's shouldFollowerThrottle: while the follower quota is used up, throttled
        // partitions that have not caught up with the leader are left out of the fetch.
        let partitions = if replicas.quotas.follower.is_exceeded() {
            let kept: HashMap<_, _> = partitions
                .into_iter()
                .filter(|(key, p)| !p.follower_throttled() || caught_up.contains(key))
                .collect();
            if kept.is_empty() {
                if !back_off(&cancel).await {
                    break;
                }
                continue;
            }
            kept
        } else {
            partitions
        };
        let request = fetch_request(&replicas, &partitions, version);
        let response = tokio::select! {
            r = c.call(version, &request, deadline) => r,
            _ = cancel.cancelled() => break,
        };
        let ok = match response {
            Ok(resp) if resp.error_code != 0 => {
                tracing::debug!(leader, error = resp.error_code, "fetch from leader failed");
                false
            }
            Ok(resp) => {
                let mut ok = true;
                let by_id: HashMap<uuid::Uuid, Arc<str>> = partitions
                    .values()
                    .map(|p| (p.topic_id, p.topic.clone()))
                    .collect();
                for topic in resp.responses {
                    let name: Arc<str> = if version >= 13 {
                        match by_id.get(&topic.topic_id) {
                            Some(n) => n.clone(),
                            None => continue,
                        }
                    } else {
                        Arc::from(topic.topic.0.as_str())
                    };
                    for pd in topic.partitions {
                        let Some(p) = partitions.get(&(name.clone(), pd.partition_index)) else {
                            continue;
                        };
                        let bytes = pd.records.as_ref().map_or(0, |r| r.len());
                        let leader_hwm = (pd.error_code == 0).then_some(pd.high_watermark);
                        let key = (name.clone(), pd.partition_index);
                        match handle_partition(p, pd).await {
                            Ok(()) => {
                                // Traffic of in-sync replicas counts too, as in Kafka.
                                if p.follower_throttled() {
                                    replicas.quotas.follower.record(bytes as u64);
                                }
                                match leader_hwm {
                                    Some(hwm) if p.log.log_end_offset() >= hwm => {
                                        caught_up.insert(key);
                                    }
                                    _ => {
                                        caught_up.remove(&key);
                                    }
                                }
                            }
                            Err(e) => {
                                caught_up.remove(&key);
                                tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "replica fetch");
                                ok = false;
                            }
                        }
                    }
                }
                ok
            }
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch connection failed; reconnecting");
                client = None;
                false
            }
        };
        if !ok && !back_off(&cancel).await {
            break;
        }
    }
    tracing::info!(leader, "replica fetcher stopped");
}

fn fetch_request(
    replicas: &ReplicaManager,
    partitions: &HashMap<(Arc<str>, i32), Arc<Partition>>,
    version: i16,
) -> FetchRequest {
    let mut by_topic: HashMap<(&str, uuid::Uuid), Vec<FetchPartition>> = HashMap::new();
    for p in partitions.values() {
        let state = p.follower_fetch_state();
        by_topic.entry((&*p.topic, p.topic_id)).or_default().push(
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(p.leader_epoch())
                .with_fetch_offset(state.fetch_offset)
                .with_last_fetched_epoch(state.last_fetched_epoch)
                .with_log_start_offset(state.log_start_offset)
                .with_partition_max_bytes(replicas.settings.fetch_max_bytes),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|((topic, id), partitions)| {
            let t = FetchTopic::default().with_partitions(partitions);
            if version >= 13 {
                t.with_topic_id(id)
            } else {
                t.with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            }
        })
        .collect();
    let me = BrokerId(replicas.node_id());
    let request = if version >= 15 {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_replica_state(ReplicaState::default().with_replica_id(me))
    } else {
        FetchRequest::default().with_replica_id(me)
    };
    request
        .with_max_wait_ms(replicas.settings.fetch_wait_max.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(replicas.settings.fetch_response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Applies one partition's fetch result on this follower. Truncations (file I/O) run on a
/// blocking thread; an append the flush policy made due is waited for before fetching on.
async fn handle_partition(p: &Arc<Partition>, pd: PartitionData) -> Result<(), String> {
    match ResponseError::try_from_code(pd.error_code) {
        None if pd.error_code == 0 => {}
        Some(ResponseError::OffsetOutOfRange) => {
            let p = p.clone();
            return blocking(move || {
                p.reset_after_out_of_range(pd.log_start_offset, pd.high_watermark)
            })
            .await;
        }
        _ => return Err(format!("leader answered error {}", pd.error_code)),
    }
    if pd.diverging_epoch.epoch >= 0 && pd.diverging_epoch.end_offset >= 0 {
        // Our log has records the leader does not: cut them before fetching on.
        let (epoch, end) = (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset);
        let p = p.clone();
        return blocking(move || p.truncate_divergent(epoch, end)).await;
    }
    let records = pd.records.unwrap_or_default();
    let durable_after = p
        .append_as_follower(&records, pd.high_watermark, pd.log_start_offset)
        .map_err(|e| e.to_string())?;
    if let Some(offset) = durable_after {
        p.log
            .wait_durable(offset)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("blocking task failed: {e}")),
    }
}
