//! The active controller's background duties. They run on every node but act only while the
//! node is the Raft leader (the active controller):
//!
//! - **Broker liveness.** A broker is heard from when it acknowledges the leader's Raft
//!   heartbeats or replication (every broker is a voter or learner of the metadata quorum, and
//!   openraft reports the last acknowledged send time per node). A registered broker not heard
//!   from for `broker.session.timeout.ms` is fenced (`FenceBroker`); a fenced one heard from
//!   again is unfenced (`UnfenceBroker`). The leader counts itself alive. When a node becomes
//!   leader (or its own loop stalled), every broker gets a full session timeout before it can be
//!   fenced.
//! - **Leader election.** A partition whose leader is fenced, gone or outside the ISR gets the
//!   first live ISR member in replica order as leader (fenced members leave the ISR); with none,
//!   it has no leader, unless `unclean.leader.election.enable` (topic override, else the broker
//!   default) allows the first live replica outside the ISR.
//! - **Preferred leader election.** With `auto.leader.rebalance.enable`, every
//!   `leader.imbalance.check.interval.seconds` a partition whose preferred replica (the first in
//!   `replicas`) is live, in the ISR and not the leader gets it back as leader.
//!
//! Every partition change is an `UpdatePartition` carrying the partition epoch it was computed
//! from, so it never overwrites a concurrent ISR change by a partition leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{Instant as _, ServerState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::image::{ApplyOutcome, MetadataImage, MetadataRecord, PartitionImage, TopicImage};
use super::types::{NodeId, Raft};

/// The Kafka broker settings the active controller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// `broker.session.timeout.ms`: a registered broker not heard from for this long is fenced.
    pub broker_session_timeout: Duration,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often preferred leaders are restored.
    pub leader_imbalance_check_interval: Duration,
    /// `unclean.leader.election.enable`, the broker default; a topic's override wins.
    pub unclean_leader_election_enable: bool,
}

impl Default for ControllerSettings {
    /// Kafka's defaults.
    fn default() -> Self {
        Self {
            broker_session_timeout: Duration::from_millis(9_000),
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            unclean_leader_election_enable: false,
        }
    }
}

impl ControllerSettings {
    /// How often the controller looks at liveness and partitions.
    fn tick(&self) -> Duration {
        (self.broker_session_timeout / 8)
            .clamp(Duration::from_millis(20), Duration::from_millis(500))
    }

    /// A gap between two ticks longer than this means this node itself was not running (paused
    /// process, overloaded runtime): it then cannot judge anyone's liveness and starts over.
    fn stall(&self) -> Duration {
        (self.tick() * 4).max(self.broker_session_timeout / 3)
    }
}

/// How long the controller waits for its own proposals.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

/// Starts the controller loop; it ends when `stop` turns true.
pub(super) fn spawn(
    raft: Raft,
    node_id: NodeId,
    images: watch::Receiver<Arc<MetadataImage>>,
    settings: ControllerSettings,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(raft, node_id, images, settings, stop))
}

/// What this node knows while it is the leader of one term.
#[derive(Debug)]
pub(super) struct Leadership {
    term: u64,
    /// Start of the grace period: nobody is fenced for silence before `since + session`.
    since: Instant,
    /// Last acknowledged heartbeat (its send time) per node, as openraft reported it.
    acked: BTreeMap<NodeId, Instant>,
    next_rebalance: Instant,
}

impl Leadership {
    pub(super) fn new(term: u64, now: Instant, settings: &ControllerSettings) -> Self {
        Self {
            term,
            since: now,
            acked: BTreeMap::new(),
            next_rebalance: now + settings.leader_imbalance_check_interval,
        }
    }

    /// Records that `node` acknowledged a heartbeat sent at `at`.
    pub(super) fn heard(&mut self, node: NodeId, at: Instant) {
        let slot = self.acked.entry(node).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }

    /// Whether preferred leader election is due now (and schedules the next one).
    fn rebalance_due(&mut self, now: Instant, settings: &ControllerSettings) -> bool {
        if !settings.auto_leader_rebalance_enable || now < self.next_rebalance {
            return false;
        }
        self.next_rebalance = now + settings.leader_imbalance_check_interval;
        true
    }
}

async fn run(
    raft: Raft,
    node_id: NodeId,
    images: watch::Receiver<Arc<MetadataImage>>,
    settings: ControllerSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(settings.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leadership: Option<Leadership> = None;
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let stalled = now.duration_since(last_tick) > settings.stall();
        last_tick = now;

        let (state, leader, term, heartbeat) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (
                m.state,
                m.current_leader,
                m.current_term,
                m.heartbeat.clone(),
            )
        };
        if state != ServerState::Leader || leader != Some(node_id) {
            if leadership.take().is_some() {
                tracing::info!(node_id, "no longer the active controller");
            }
            continue;
        }
        let lead = match &mut leadership {
            Some(l) if l.term == term && !stalled => l,
            _ => {
                tracing::info!(
                    node_id,
                    term,
                    stalled,
                    session_ms = settings.broker_session_timeout.as_millis() as u64,
                    "active controller: every broker gets a full session before it can be fenced"
                );
                leadership.insert(Leadership::new(term, now, &settings))
            }
        };
        for (id, at) in heartbeat.into_iter().flatten() {
            if let Some(at) = at {
                let ago = at.elapsed();
                lead.heard(id, now.checked_sub(ago).unwrap_or(now));
            }
        }

        let image = images.borrow().clone();
        let brokers = plan_brokers(&image, node_id, lead, now, &settings);
        let image = if brokers.is_empty() {
            image
        } else {
            if !propose_all(&raft, brokers).await {
                continue;
            }
            images.borrow().clone()
        };
        let rebalance = lead.rebalance_due(now, &settings);
        let partitions =
            plan_partitions(&image, rebalance, settings.unclean_leader_election_enable);
        if !partitions.is_empty() {
            propose_all(&raft, partitions).await;
        }
    }
}

/// Fence and unfence decisions for the registered brokers.
pub(super) fn plan_brokers(
    image: &MetadataImage,
    self_id: NodeId,
    lead: &Leadership,
    now: Instant,
    settings: &ControllerSettings,
) -> Vec<MetadataRecord> {
    let session = settings.broker_session_timeout;
    let mut records = Vec::new();
    for (&id, broker) in &image.brokers {
        let Ok(node) = u64::try_from(id) else {
            continue;
        };
        let acked = lead.acked.get(&node).copied();
        if image.is_retired(id) {
            // RetireNode fences; nothing ever unfences a retired node.
            if !broker.fenced {
                records.push(MetadataRecord::FenceBroker { node_id: id });
            }
            continue;
        }
        if broker.shutting_down {
            // Stopping: fenced until it registers again, whatever it still acknowledges.
            continue;
        }
        if node == self_id {
            if broker.fenced {
                records.push(MetadataRecord::UnfenceBroker { node_id: id });
            }
            continue;
        }
        let recently_acked = acked.is_some_and(|at| now.saturating_duration_since(at) < session);
        if broker.fenced {
            if recently_acked {
                tracing::info!(broker = id, "broker is back; unfencing it");
                records.push(MetadataRecord::UnfenceBroker { node_id: id });
            }
        } else {
            let heard = acked.map_or(lead.since, |at| at.max(lead.since));
            let silent = now.saturating_duration_since(heard);
            if silent >= session {
                tracing::warn!(
                    broker = id,
                    silent_ms = silent.as_millis() as u64,
                    "broker missed its session; fencing it"
                );
                records.push(MetadataRecord::FenceBroker { node_id: id });
            }
        }
    }
    records
}

/// Leader elections (and, when `rebalance`, preferred leader elections) for every partition.
pub(super) fn plan_partitions(
    image: &MetadataImage,
    rebalance: bool,
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        let unclean = topic
            .configs
            .get(UNCLEAN_KEY)
            .map(|v| v.trim().eq_ignore_ascii_case("true"))
            .unwrap_or(unclean_default);
        for p in &topic.partitions {
            if let Some((leader, isr)) = elect(image, p, rebalance, unclean) {
                tracing::info!(
                    topic = %topic.name,
                    partition = p.partition,
                    from_leader = p.leader,
                    to_leader = leader,
                    from_isr = ?p.isr,
                    to_isr = ?isr,
                    "controller: changing partition leadership"
                );
                records.push(update(topic, p, leader, isr));
            }
        }
    }
    records
}

fn update(topic: &TopicImage, p: &PartitionImage, leader: i32, isr: Vec<i32>) -> MetadataRecord {
    MetadataRecord::UpdatePartition {
        topic_id: topic.topic_id,
        partition: p.partition,
        expected_partition_epoch: p.partition_epoch,
        leader,
        isr,
    }
}

/// The new (leader, ISR) of one partition, if it should change.
fn elect(
    image: &MetadataImage,
    p: &PartitionImage,
    rebalance: bool,
    unclean: bool,
) -> Option<(i32, Vec<i32>)> {
    if p.isr.is_empty() {
        return None;
    }
    let live = |r: &i32| image.is_live(*r);
    let leader_ok = p.leader != -1 && live(&p.leader) && p.isr.contains(&p.leader);
    if leader_ok {
        let preferred = *p.replicas.first()?;
        if rebalance && preferred != p.leader && live(&preferred) && p.isr.contains(&preferred) {
            return Some((preferred, p.isr.clone()));
        }
        return None;
    }
    let candidate = p
        .replicas
        .iter()
        .copied()
        .find(|r| p.isr.contains(r) && live(r));
    match candidate {
        Some(leader) => {
            let isr: Vec<i32> = p.isr.iter().copied().filter(live).collect();
            Some((leader, isr))
        }
        None if unclean => {
            let leader = p.replicas.iter().copied().find(live)?;
            tracing::warn!(
                partition = p.partition,
                leader,
                isr = ?p.isr,
                "unclean leader election: no ISR member is live"
            );
            Some((leader, vec![leader]))
        }
        None if p.leader != -1 => Some((-1, p.isr.clone())),
        None => None,
    }
}

/// Proposes `records` on this node (the leader), concurrently. False if leadership was lost or
/// the quorum is unavailable; conflicting outcomes (a concurrent change won) are fine: the next
/// tick looks again.
async fn propose_all(raft: &Raft, records: Vec<MetadataRecord>) -> bool {
    let writes = records.into_iter().map(|record| async move {
        let shown = record.to_string();
        match tokio::time::timeout(PROPOSE_TIMEOUT, raft.client_write(record)).await {
            Ok(Ok(resp)) => {
                if resp.data != ApplyOutcome::Ok {
                    tracing::debug!(record = %shown, outcome = ?resp.data, "controller proposal not applied");
                }
                true
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => false,
            Ok(Err(e)) => {
                tracing::warn!(record = %shown, error = %e, "controller proposal failed");
                false
            }
            Err(_) => {
                tracing::warn!(record = %shown, "controller proposal timed out");
                false
            }
        }
    });
    futures::future::join_all(writes)
        .await
        .into_iter()
        .all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::test_image::{image_with, partition};

    fn image(brokers: &[i32], partitions: Vec<PartitionImage>) -> MetadataImage {
        image_with(brokers, partitions).0
    }

    fn settings() -> ControllerSettings {
        ControllerSettings {
            broker_session_timeout: Duration::from_secs(9),
            ..ControllerSettings::default()
        }
    }

    /// Applies planned records and returns (leader, isr) of partition `i`.
    fn state(image: &MetadataImage, i: usize) -> (i32, Vec<i32>) {
        let p = &image.topic("t").expect("topic").partitions[i];
        (p.leader, p.isr.clone())
    }

    #[test]
    fn silent_brokers_are_fenced_after_a_full_session_only() {
        let s = settings();
        let t0 = Instant::now();
        let img = image(&[1, 2, 3], vec![]);
        let mut lead = Leadership::new(1, t0, &s);
        lead.heard(2, t0 + Duration::from_secs(5));
        // Within the grace period nobody is fenced, heard from or not.
        assert!(plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(8), &s).is_empty());
        // Node 3 never answered this leader: fenced once the grace period is over.
        assert_eq!(
            plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(9), &s),
            vec![MetadataRecord::FenceBroker { node_id: 3 }]
        );
        // Node 2 was heard at t0+5 s: fenced at t0+14 s, along with 3; the leader never.
        assert_eq!(
            plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(14), &s),
            vec![
                MetadataRecord::FenceBroker { node_id: 2 },
                MetadataRecord::FenceBroker { node_id: 3 }
            ]
        );
    }

    #[test]
    fn fenced_brokers_heard_again_are_unfenced() {
        let s = settings();
        let t0 = Instant::now();
        let mut img = image(&[1, 2, 3], vec![]);
        img.apply(&MetadataRecord::FenceBroker { node_id: 2 });
        img.apply(&MetadataRecord::FenceBroker { node_id: 1 });
        let mut lead = Leadership::new(1, t0, &s);
        // The leader unfences itself; 2 stays fenced until it answers.
        assert_eq!(
            plan_brokers(&img, 1, &lead, t0, &s),
            vec![MetadataRecord::UnfenceBroker { node_id: 1 }]
        );
        lead.heard(2, t0 + Duration::from_secs(1));
        let planned = plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(2), &s);
        assert!(planned.contains(&MetadataRecord::UnfenceBroker { node_id: 2 }));
        // A retired node is fenced and never unfenced.
        img.apply(&MetadataRecord::UnfenceBroker { node_id: 2 });
        img.apply(&MetadataRecord::RetireNode { node_id: 3 });
        lead.heard(3, t0 + Duration::from_secs(2));
        assert!(
            plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(3), &s)
                .iter()
                .all(|r| !matches!(r, MetadataRecord::UnfenceBroker { node_id: 3 }))
        );
    }

    #[test]
    fn a_broker_shutting_down_stays_fenced_until_it_registers_again() {
        let s = settings();
        let t0 = Instant::now();
        let mut img = image(&[1, 2, 3], vec![]);
        img.apply(&MetadataRecord::ShutDownBroker { node_id: 2 });
        img.apply(&MetadataRecord::ShutDownBroker { node_id: 1 });
        let mut lead = Leadership::new(1, t0, &s);
        // Heartbeats acknowledged while stopping unfence neither it nor the leader itself.
        lead.heard(2, t0 + Duration::from_secs(1));
        assert!(plan_brokers(&img, 1, &lead, t0 + Duration::from_secs(2), &s).is_empty());
        // Its next registration (a new process) ends the shutdown.
        let mut again = img.brokers[&2].clone();
        again.incarnation_id = uuid::Uuid::new_v4();
        img.apply(&MetadataRecord::RegisterBroker(again));
        assert!(!img.brokers[&2].fenced && !img.brokers[&2].shutting_down);
        assert!(img.brokers[&1].fenced && img.brokers[&1].shutting_down);
    }

    #[test]
    fn elections_follow_the_isr_and_preference() {
        let mut img = image(
            &[1, 2, 3],
            vec![
                partition(0, &[1, 2, 3], 2, &[1, 2, 3]),
                partition(1, &[2, 3, 1], 2, &[2, 3, 1]),
                partition(2, &[3], 3, &[3]),
                partition(3, &[1, 2], -1, &[1, 2]),
            ],
        );
        // Without a rebalance only the leaderless partition changes.
        let planned = plan_partitions(&img, false, false);
        assert_eq!(planned.len(), 1);
        for r in &planned {
            assert_eq!(img.apply(r), ApplyOutcome::Ok);
        }
        assert_eq!(state(&img, 3), (1, vec![1, 2]));
        // The rebalance moves partition 0 back to its preferred replica.
        let planned = plan_partitions(&img, true, false);
        assert_eq!(planned.len(), 1);
        img.apply(&planned[0]);
        assert_eq!(state(&img, 0), (1, vec![1, 2, 3]));
        assert!(plan_partitions(&img, true, false).is_empty());

        // Broker 3 fenced: the sole replica keeps it as ISR and loses its leader; nothing to do.
        img.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        assert_eq!(state(&img, 2), (-1, vec![3]));
        assert!(plan_partitions(&img, true, false).is_empty());
        // Unclean election on: a live replica outside the ISR would be chosen; here there is
        // none for partition 2 (its only replica is 3).
        assert!(plan_partitions(&img, true, true).is_empty());
    }

    #[test]
    fn fenced_leaders_are_replaced_and_unclean_election_is_opt_in() {
        // A topic created with a stale view: leader 2 is fenced, 3 is in the ISR.
        let mut img = image(&[1, 2, 3], vec![partition(0, &[2, 3, 1], 2, &[2, 3])]);
        img.brokers.get_mut(&2).expect("broker").fenced = true;
        let planned = plan_partitions(&img, false, false);
        assert_eq!(planned.len(), 1);
        assert_eq!(img.apply(&planned[0]), ApplyOutcome::Ok);
        assert_eq!(state(&img, 0), (3, vec![3]));

        // Every ISR member fenced, replica 1 live: no leader, unless unclean election is on.
        let mut img = image(&[1, 2, 3], vec![partition(0, &[2, 3, 1], 2, &[2, 3])]);
        img.brokers.get_mut(&2).expect("broker").fenced = true;
        img.brokers.get_mut(&3).expect("broker").fenced = true;
        let planned = plan_partitions(&img, false, false);
        let mut clean = img.clone();
        clean.apply(&planned[0]);
        assert_eq!(state(&clean, 0), (-1, vec![2, 3]));
        let planned = plan_partitions(&img, false, true);
        img.apply(&planned[0]);
        assert_eq!(state(&img, 0), (1, vec![1]));
    }

    #[test]
    fn topic_override_wins_over_the_unclean_default() {
        let mut img = image(&[1, 2], vec![partition(0, &[2, 1], -1, &[2])]);
        img.brokers.get_mut(&2).expect("broker").fenced = true;
        assert!(plan_partitions(&img, false, false).is_empty());
        let name = "t".to_string();
        let mut t = (**img.topics.get(&name).expect("topic")).clone();
        t.configs.insert(UNCLEAN_KEY.into(), "true".into());
        img.topics.insert(name, Arc::new(t));
        assert_eq!(plan_partitions(&img, false, false).len(), 1);
    }
}
