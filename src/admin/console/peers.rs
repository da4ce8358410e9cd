//! What the console needs from the rest of the cluster, asked the way a Kafka admin tool asks:
//! end offsets from partition leaders (ListOffsets), groups from their coordinators
//! (ListGroups, DescribeGroups, OffsetFetch), log sizes from every broker (DescribeLogDirs)
//! and records from leaders (Fetch). What this broker holds itself is read in place
//! (ReplicaManager, GroupCoordinator); the rest goes over the inter-broker listener with the
//! broker's own identity, as follower fetches do, one connection per peer kept open. The
//! console checks the viewer's ACLs itself before it asks (see `auth.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::{
    BrokerId, DescribeLogDirsRequest, FetchRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use parking_lot::Mutex;

use crate::broker::Broker;
use crate::replica::client::KafkaClient;

const TIMEOUT: Duration = Duration::from_secs(5);

/// (topic, partition)
pub type Tp = (String, i32);

/// A partition's offsets, as its leader reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
}

/// A consumer group as its coordinator describes it.
#[derive(Debug, Clone, Default)]
pub struct GroupInfo {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub coordinator: i32,
    pub members: Vec<MemberInfo>,
    /// Committed offset per partition.
    pub committed: BTreeMap<Tp, i64>,
}

#[derive(Debug, Clone, Default)]
pub struct MemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<Tp>,
}

/// Connections to the brokers of the cluster, this one included.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<KafkaClient>>>>>,
}

impl Peers {
    /// One request to `node`, on its kept connection (opened again once after a failure).
    pub async fn call<R: Request>(
        &self,
        broker: &Broker,
        node: i32,
        version: i16,
        req: &R,
    ) -> Result<R::Response, String> {
        let slot = self.clients.lock().entry(node).or_default().clone();
        let mut client = slot.lock().await;
        for attempt in 0..2 {
            if client.is_none() {
                let image = broker.image();
                let listener = &broker.replicas.settings.inter_broker_listener;
                let (host, port) = image
                    .brokers
                    .get(&node)
                    .and_then(|b| b.endpoint(listener))
                    .map(|(h, p)| (h.to_string(), p))
                    .ok_or_else(|| format!("no address known for broker {node}"))?;
                let connected = KafkaClient::connect(
                    (&host, port),
                    &broker.replicas.settings.inter_broker_security,
                    format!("broker-{}-console", broker.node_id()),
                    TIMEOUT,
                )
                .await
                .map_err(|e| format!("broker {node} ({host}:{port}): {e}"))?;
                *client = Some(connected);
            }
            let Some(c) = client.as_mut() else { continue };
            match c.call(version, req, TIMEOUT).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    *client = None;
                    if attempt == 1 {
                        return Err(format!("broker {node}: {e}"));
                    }
                }
            }
        }
        Err(format!("broker {node}: no answer"))
    }

    /// Log start offset and high watermark of each partition: read here for partitions this
    /// broker leads, else asked of their leaders (one ListOffsets per leader, concurrently).
    pub async fn offsets(&self, broker: &Broker, partitions: &[Tp]) -> HashMap<Tp, Offsets> {
        let image = broker.image();
        let mut out = HashMap::new();
        let mut by_leader: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for tp in partitions {
            if let Some(p) = broker
                .replicas
                .partition(&tp.0, tp.1)
                .filter(|p| p.is_leader())
            {
                out.insert(
                    tp.clone(),
                    Offsets {
                        log_start: p.log.log_start_offset(),
                        high_watermark: p.high_watermark(),
                    },
                );
                continue;
            }
            let leader = image
                .topic(&tp.0)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == tp.1))
                .map(|p| p.leader)
                .unwrap_or(-1);
            if leader >= 0 {
                by_leader.entry(leader).or_default().push(tp.clone());
            }
        }
        let asks = by_leader
            .into_iter()
            .map(|(leader, tps)| async move { self.list_offsets(broker, leader, &tps).await });
        for answer in futures::future::join_all(asks).await {
            out.extend(answer);
        }
        out
    }

    async fn list_offsets(&self, broker: &Broker, leader: i32, tps: &[Tp]) -> HashMap<Tp, Offsets> {
        let mut out: HashMap<Tp, Offsets> = HashMap::new();
        // -1: latest (the high watermark for read_uncommitted), -2: earliest.
        for (timestamp, earliest) in [(-1i64, false), (-2i64, true)] {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in tps {
                topics.entry(t.as_str()).or_default().push(*p);
            }
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let Ok(resp) = self.call(broker, leader, 5, &req).await else {
                return out;
            };
            for t in resp.topics {
                for p in t.partitions.into_iter().filter(|p| p.error_code == 0) {
                    let e = out
                        .entry((t.name.0.to_string(), p.partition_index))
                        .or_default();
                    if earliest {
                        e.log_start = p.offset;
                    } else {
                        e.high_watermark = p.offset;
                    }
                }
            }
        }
        out
    }

    /// Every group of the cluster: (group id, state, coordinator), from each live broker.
    pub async fn list_groups(&self, broker: &Broker) -> Vec<(String, String, i32)> {
        let image = broker.image();
        let me = broker.node_id();
        let mut out = Vec::new();
        for g in broker.groups.list(&[], &[]) {
            out.push((g.group_id, g.state.to_string(), me));
        }
        let asks = image
            .brokers
            .keys()
            .copied()
            .filter(|id| *id != me && image.is_live(*id))
            .map(|id| async move {
                let req = ListGroupsRequest::default();
                (id, self.call(broker, id, 4, &req).await)
            });
        for (id, answer) in futures::future::join_all(asks).await {
            if let Ok(resp) = answer {
                for g in resp.groups {
                    out.push((g.group_id.0.to_string(), g.group_state.to_string(), id));
                }
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// A group's coordinator: the leader of its `__consumer_offsets` partition.
    pub fn coordinator(&self, broker: &Broker, group: &str) -> Option<i32> {
        let partition = broker.groups.partition_for(group);
        broker
            .image()
            .topic(crate::group::OFFSETS_TOPIC)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    /// Members, assignments and committed offsets of one group, from its coordinator.
    pub async fn describe_group(&self, broker: &Broker, group: &str) -> Result<GroupInfo, String> {
        let coordinator = self
            .coordinator(broker, group)
            .ok_or_else(|| "the group's coordinator is not available".to_string())?;
        let mut info = GroupInfo {
            group_id: group.to_string(),
            coordinator,
            ..Default::default()
        };
        if coordinator == broker.node_id() {
            let described = broker
                .groups
                .describe(group)
                .map_err(|e| format!("{e:?}"))?;
            if let Some(d) = described {
                info.state = d.state.to_string();
                info.protocol_type = d.protocol_type;
                info.protocol = d.protocol;
                info.members = d
                    .members
                    .into_iter()
                    .map(|m| MemberInfo {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        assignment: decode_assignment(m.assignment),
                    })
                    .collect();
            }
            let committed = broker
                .groups
                .fetch_offsets(group, None)
                .map_err(|e| format!("{e:?}"))?;
            for (topic, parts) in committed {
                for (p, v) in parts {
                    if let Some(v) = v {
                        info.committed.insert((topic.clone(), p), v.offset);
                    }
                }
            }
            return Ok(info);
        }
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self.call(broker, coordinator, 5, &req).await?;
        if let Some(g) = resp.groups.into_iter().next() {
            if g.error_code != 0 {
                return Err(format!("DescribeGroups error {}", g.error_code));
            }
            info.state = g.group_state.to_string();
            info.protocol_type = g.protocol_type.to_string();
            info.protocol = g.protocol_data.to_string();
            info.members = g
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: decode_assignment(m.member_assignment),
                })
                .collect();
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(None);
        let resp = self.call(broker, coordinator, 7, &req).await?;
        if resp.error_code != 0 {
            return Err(format!("OffsetFetch error {}", resp.error_code));
        }
        for t in resp.topics {
            for p in t.partitions.into_iter().filter(|p| p.committed_offset >= 0) {
                info.committed.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
        Ok(info)
    }

    /// Bytes on disk of every partition replica, per broker (DescribeLogDirs; this broker's
    /// own from its logs).
    pub async fn log_sizes(&self, broker: &Broker) -> HashMap<(i32, String, i32), u64> {
        let me = broker.node_id();
        let mut out = HashMap::new();
        for (topic, t) in broker.replicas.hosted().iter() {
            for (index, p) in &t.partitions {
                out.insert((me, topic.clone(), *index), p.log.size_bytes());
            }
        }
        let image = broker.image();
        let asks = image
            .brokers
            .keys()
            .copied()
            .filter(|id| *id != me && image.is_live(*id))
            .map(|id| async move {
                let req = DescribeLogDirsRequest::default().with_topics(None);
                (id, self.call(broker, id, 2, &req).await)
            });
        for (id, answer) in futures::future::join_all(asks).await {
            let Ok(resp) = answer else { continue };
            for dir in resp.results {
                for t in dir.topics {
                    for p in t.partitions {
                        out.insert(
                            (id, t.name.0.to_string(), p.partition_index),
                            p.partition_size.max(0) as u64,
                        );
                    }
                }
            }
        }
        out
    }

    /// Record batches of one partition from `offset`, at most `max_bytes` (one batch at
    /// least), below the high watermark: from this broker's replica when it hosts one, else
    /// fetched from the leader. Returns the batches and the high watermark.
    pub async fn read(
        &self,
        broker: &Broker,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64), String> {
        if let Some(p) = broker.replicas.partition(topic, partition) {
            let hwm = p.high_watermark();
            let read = p
                .log
                .read(offset, hwm, max_bytes, false)
                .map_err(|e| e.to_string())?;
            return Ok((read.records, hwm));
        }
        let image = broker.image();
        let leader = image
            .topic(topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
            .ok_or_else(|| "the partition has no leader".to_string())?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(max_bytes as i32)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes as i32)])]);
        let resp = self.call(broker, leader, 11, &req).await?;
        let p = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| "empty fetch response".to_string())?;
        if p.error_code != 0 {
            return Err(format!("Fetch error {}", p.error_code));
        }
        Ok((p.records.unwrap_or_default(), p.high_watermark))
    }
}

/// The partitions of a consumer protocol assignment (empty when it is not one).
fn decode_assignment(mut bytes: Bytes) -> Vec<Tp> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut bytes);
    let Ok(a) = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)) else {
        return Vec::new();
    };
    a.assigned_partitions
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic.to_string();
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}
