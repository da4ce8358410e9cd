//! Followers: one fetcher task per leader broker this broker follows partitions from. Each
//! task fetches with the Kafka Fetch API (replica id set) over the leader's client port,
//! appends what it gets as-is (offsets and epochs kept), truncates divergent tails the leader
//! points out (Fetch v12 diverging epochs), and tracks the leader's high watermark.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::client::KafkaClient;
use super::Partition;
use crate::broker::Broker;

/// Kafka's replica.fetch.* defaults.
const FETCH_WAIT_MAX: Duration = Duration::from_millis(500);
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const RESPONSE_MAX_BYTES: i32 = 10 << 20;
const BACKOFF: Duration = Duration::from_millis(200);
const FETCH_VERSION: i16 = 12;

#[derive(Default)]
pub struct FetcherManager {
    /// Leader broker id → the cancel token of its fetcher task.
    fetchers: Mutex<HashMap<i32, CancellationToken>>,
}

/// The partitions this broker follows from `leader`.
fn followed_from(broker: &Broker, leader: i32) -> Vec<Arc<Partition>> {
    let mut out = Vec::new();
    for topic in broker.replicas.hosted().values() {
        for p in topic.partitions.values() {
            if !p.is_leader() && p.state().leader == leader {
                out.push(p.clone());
            }
        }
    }
    out
}

impl FetcherManager {
    /// Starts a fetcher for every leader we follow a partition from, stops the others.
    pub fn sync(&self, broker: &Arc<Broker>) {
        let me = broker.node_id();
        let mut leaders: Vec<i32> = Vec::new();
        for topic in broker.replicas.hosted().values() {
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
                let token = broker.shutdown.child_token();
                tokio::spawn(run(broker.clone(), leader, token.clone()));
                token
            });
        }
    }
}

async fn run(broker: Arc<Broker>, leader: i32, cancel: CancellationToken) {
    let mut client: Option<KafkaClient> = None;
    tracing::info!(leader, "replica fetcher started");
    while !cancel.is_cancelled() {
        let partitions = followed_from(&broker, leader);
        if partitions.is_empty() {
            tokio::select! { _ = tokio::time::sleep(BACKOFF) => {}, _ = cancel.cancelled() => break }
            continue;
        }
        if client.is_none() {
            let Some(addr) = broker
                .image()
                .brokers
                .get(&leader)
                .map(|b| format!("{}:{}", b.host, b.port))
            else {
                tokio::select! { _ = tokio::time::sleep(BACKOFF) => {}, _ = cancel.cancelled() => break }
                continue;
            };
            match KafkaClient::connect(
                &addr,
                format!("broker-{}-fetcher", broker.node_id()),
                Duration::from_secs(5),
            )
            .await
            {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "cannot reach leader");
                    tokio::select! { _ = tokio::time::sleep(BACKOFF) => {}, _ = cancel.cancelled() => break }
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let request = fetch_request(broker.node_id(), &partitions);
        let call = c.call(FETCH_VERSION, &request, Duration::from_secs(30));
        let response = tokio::select! {
            r = call => r,
            _ = cancel.cancelled() => break,
        };
        match response {
            Ok(resp) if resp.error_code != 0 => {
                tracing::debug!(leader, error = resp.error_code, "fetch from leader failed");
                tokio::time::sleep(BACKOFF).await;
            }
            Ok(resp) => {
                let mut backoff = false;
                for topic in resp.responses {
                    for pd in topic.partitions {
                        let Some(p) = partitions
                            .iter()
                            .find(|p| *p.topic == *topic.topic.0 && p.index == pd.partition_index)
                        else {
                            continue;
                        };
                        if let Err(e) = handle_partition(p, pd) {
                            tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "replica fetch");
                            backoff = true;
                        }
                    }
                }
                if backoff {
                    tokio::time::sleep(BACKOFF).await;
                }
            }
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch connection failed");
                client = None;
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
    tracing::info!(leader, "replica fetcher stopped");
}

fn fetch_request(node_id: i32, partitions: &[Arc<Partition>]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in partitions {
        let state = p.follower_fetch_state();
        let fp = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(p.leader_epoch())
            .with_fetch_offset(state.fetch_offset)
            .with_last_fetched_epoch(state.last_fetched_epoch)
            .with_log_start_offset(state.log_start_offset)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.iter_mut().find(|t| *t.topic.0 == *p.topic) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.to_string())))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(FETCH_WAIT_MAX.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Applies one partition's fetch result on this follower.
fn handle_partition(
    p: &Partition,
    pd: kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), String> {
    match ResponseError::try_from_code(pd.error_code) {
        None if pd.error_code == 0 => {}
        Some(ResponseError::OffsetOutOfRange) => {
            return p
                .reset_after_out_of_range(pd.log_start_offset, pd.high_watermark)
                .map_err(|e| e.to_string());
        }
        _ => return Err(format!("leader answered error {}", pd.error_code)),
    }
    if pd.diverging_epoch.epoch >= 0 && pd.diverging_epoch.end_offset >= 0 {
        // Our log has records the leader does not: cut them before fetching on.
        return p
            .truncate_divergent(pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset)
            .map_err(|e| e.to_string());
    }
    let records = pd.records.unwrap_or_default();
    p.append_as_follower(&records, pd.high_watermark, pd.log_start_offset)
        .map_err(|e| e.to_string())
}
