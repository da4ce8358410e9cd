//! In-process multi-node tests of the active controller (broker fencing, leader elections,
//! preferred leader election) and of quorum membership changes (learners, promotion, removal,
//! retired ids, joining nodes that must not initialize a cluster of their own).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;

use super::image::{BrokerRegistration, PartitionImage, TopicImage};
use super::tests::{bind, config, create, eventually, init_tracing};
use super::*;

/// Shortened Kafka timings: fencing after 1.5 s, preferred leaders restored every second.
fn fast() -> ControllerSettings {
    ControllerSettings {
        broker_session_timeout: Duration::from_millis(1500),
        auto_leader_rebalance_enable: true,
        leader_imbalance_check_interval: Duration::from_secs(1),
        unclean_leader_election_enable: false,
    }
}

fn register(id: u64) -> MetadataRecord {
    MetadataRecord::RegisterBroker(BrokerRegistration {
        node_id: id as i32,
        host: "127.0.0.1".into(),
        port: 9000 + id as i32,
        endpoints: vec![],
        rack: None,
        incarnation_id: Uuid::new_v4(),
        fenced: false,
        shutting_down: false,
    })
}

/// Partition i's preferred replica is broker i + 1.
fn three_way_topic() -> TopicImage {
    let p = |i: i32, replicas: Vec<i32>| PartitionImage {
        partition: i,
        leader: replicas[0],
        leader_epoch: 0,
        isr: replicas.clone(),
        replicas,
        partition_epoch: 0,
        ..PartitionImage::default()
    };
    TopicImage {
        name: "t".into(),
        topic_id: Uuid::new_v4(),
        partitions: vec![
            p(0, vec![1, 2, 3]),
            p(1, vec![2, 3, 1]),
            p(2, vec![3, 1, 2]),
        ],
        configs: BTreeMap::new(),
    }
}

fn partition(q: &MetadataQuorum, i: usize) -> PartitionImage {
    q.image().topic("t").expect("topic").partitions[i].clone()
}

fn fenced(q: &MetadataQuorum, id: u64) -> bool {
    q.image()
        .brokers
        .get(&(id as i32))
        .is_some_and(|b| b.fenced)
}

/// Nodes on 127.0.0.1 with fixed ports (so a stopped node restarts at the same address).
struct Cluster {
    tmp: tempfile::TempDir,
    voters: BTreeMap<u64, String>,
    addrs: BTreeMap<u64, SocketAddr>,
    listeners: BTreeMap<u64, std::net::TcpListener>,
    nodes: BTreeMap<u64, MetadataQuorum>,
    settings: ControllerSettings,
}

impl Cluster {
    /// Binds `ids` (voters: `voter_ids`) without starting anything.
    fn new(ids: &[u64], voter_ids: &[u64], settings: ControllerSettings) -> Self {
        let mut addrs = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for &id in ids {
            let (l, a) = bind();
            addrs.insert(id, a);
            listeners.insert(id, l);
        }
        let voters = voter_ids
            .iter()
            .map(|id| (*id, addrs[id].to_string()))
            .collect();
        Self {
            tmp: tempfile::tempdir().expect("tempdir"),
            voters,
            addrs,
            listeners,
            nodes: BTreeMap::new(),
            settings,
        }
    }

    /// Starts node `id` with `voters` (the configured voters plus itself if missing).
    async fn start(&mut self, id: u64) -> MetadataQuorum {
        let addr = self.addrs[&id];
        let mut voters = self.voters.clone();
        voters.entry(id).or_insert_with(|| addr.to_string());
        let mut cfg = config(id, self.tmp.path(), addr, &voters);
        cfg.controller = self.settings.clone();
        let listen = match self.listeners.remove(&id) {
            Some(l) => Listen::Bound(l),
            None => Listen::Addr(addr),
        };
        let q = MetadataQuorum::start_inner(cfg, listen, Tuning::default())
            .await
            .expect("start");
        self.nodes.insert(id, q.clone());
        q
    }

    async fn stop(&mut self, id: u64) {
        let q = self.nodes.remove(&id).expect("running");
        q.shutdown().await.expect("shutdown");
    }

    fn node(&self, id: u64) -> MetadataQuorum {
        self.nodes[&id].clone()
    }

    /// Waits until every running node names the same leader.
    async fn leader(&self) -> u64 {
        let nodes: Vec<MetadataQuorum> = self.nodes.values().cloned().collect();
        eventually(
            "all nodes agree on a leader",
            Duration::from_secs(10),
            || {
                let first = nodes[0].leader_id();
                first.is_some() && nodes.iter().all(|n| n.leader_id() == first)
            },
        )
        .await;
        nodes[0].leader_id().expect("leader")
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_broker_is_fenced_and_preferred_leadership_returns() {
    init_tracing();
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], fast());
    for id in 1..=3 {
        c.start(id).await;
    }
    let leader = c.leader().await;
    for id in 1..=3 {
        assert_eq!(
            c.node(id).propose(register(id)).await.unwrap(),
            ApplyOutcome::Ok
        );
    }
    let lq = c.node(leader);
    let topic = three_way_topic();
    assert_eq!(
        lq.propose(MetadataRecord::CreateTopic(topic))
            .await
            .unwrap(),
        ApplyOutcome::Ok
    );
    // Registered, heard from: nobody is fenced while all run (well past the session).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!((1..=3).all(|id| !fenced(&lq, id)));

    let victim = if leader == 3 { 2 } else { 3 };
    let preferred_of_victim = (victim - 1) as usize;
    let stopped = Instant::now();
    c.stop(victim).await;
    eventually(
        "the silent broker is fenced",
        Duration::from_secs(10),
        || fenced(&lq, victim),
    )
    .await;
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(1200),
        "fenced after only {after:?}"
    );
    let image = lq.image();
    for p in &image.topic("t").expect("topic").partitions {
        assert_ne!(p.leader, victim as i32, "{p:?}");
        assert!(!p.isr.contains(&(victim as i32)), "{p:?}");
    }
    let moved = partition(&lq, preferred_of_victim);
    assert_eq!(moved.leader, moved.replicas[1]);
    assert_eq!(moved.leader_epoch, 1);
    assert!((1..=3)
        .filter(|id| *id != victim)
        .all(|id| !fenced(&lq, id)));

    // Back (without re-registering): its Raft acknowledgements get it unfenced.
    c.start(victim).await;
    eventually(
        "the returning broker is unfenced",
        Duration::from_secs(10),
        || !fenced(&lq, victim),
    )
    .await;
    // Not in the ISR yet, so leadership stays where it is.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(partition(&lq, preferred_of_victim).leader, victim as i32);
    // The partition leader re-admits the caught-up follower (as replica/ does)...
    let p = partition(&lq, preferred_of_victim);
    let mut isr = p.isr.clone();
    isr.push(victim as i32);
    let rejoin = MetadataRecord::UpdatePartition {
        topic_id: lq.image().topic("t").expect("topic").topic_id,
        partition: p.partition,
        expected_partition_epoch: p.partition_epoch,
        leader: p.leader,
        isr,
    };
    assert_eq!(lq.propose(rejoin).await.unwrap(), ApplyOutcome::Ok);
    // ... and the next imbalance check gives the preferred replica its leadership back.
    eventually(
        "preferred leadership returns",
        Duration::from_secs(5),
        || partition(&lq, preferred_of_victim).leader == victim as i32,
    )
    .await;
    assert_eq!(partition(&lq, preferred_of_victim).leader_epoch, 2);

    // A restarted broker re-registers; that changes nothing about its state now.
    let vq = c.node(victim);
    assert_eq!(
        vq.propose(register(victim)).await.unwrap(),
        ApplyOutcome::Ok
    );
    let nodes: Vec<MetadataQuorum> = (1..=3).map(|id| c.node(id)).collect();
    eventually("images converge", Duration::from_secs(10), || {
        let first = nodes[0].image();
        nodes.iter().all(|n| *n.image() == *first)
    })
    .await;
    assert!((1..=3).all(|id| !fenced(&lq, id)));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_controller_gives_brokers_a_full_session() {
    init_tracing();
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], fast());
    for id in 1..=3 {
        c.start(id).await;
    }
    let old = c.leader().await;
    for id in 1..=3 {
        c.node(id).propose(register(id)).await.unwrap();
    }
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    // Kill the active controller.
    c.stop(old).await;
    let nodes: Vec<MetadataQuorum> = survivors.iter().map(|id| c.node(*id)).collect();
    eventually("a new leader", Duration::from_secs(10), || {
        let l = nodes[0].leader_id();
        l.is_some_and(|l| l != old) && nodes.iter().all(|n| n.leader_id() == l)
    })
    .await;
    let elected = Instant::now();
    let new = nodes[0].leader_id().expect("leader");
    let nq = c.node(new);
    // Until the old controller is fenced, and a while after, no survivor is ever fenced.
    let mut fenced_at = None;
    let deadline = elected + Duration::from_secs(10);
    while Instant::now() < deadline {
        for id in &survivors {
            for n in &survivors {
                assert!(!fenced(&c.node(*n), *id), "survivor {id} fenced");
            }
        }
        if fenced_at.is_none() && fenced(&nq, old) {
            fenced_at = Some(elected.elapsed());
        }
        if fenced_at.is_some_and(|t| elected.elapsed() > t + Duration::from_millis(1500)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_at = fenced_at.expect("the dead controller's broker is fenced");
    // The new controller never heard from the old one: it waits one full session anyway.
    assert!(
        fenced_at >= Duration::from_millis(1300),
        "fenced {fenced_at:?} after the election"
    );
    assert_eq!(nq.propose(create("after")).await.unwrap(), ApplyOutcome::Ok);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learners_join_get_promoted_and_removed_ids_never_return() {
    init_tracing();
    let mut c = Cluster::new(&[1, 2, 3, 4], &[1, 2, 3], fast());
    for id in 1..=3 {
        c.start(id).await;
    }
    let leader = c.leader().await;
    c.node(leader).propose(create("before")).await.unwrap();

    // Node 4 lists the voters and itself; it is not the lowest id, so it waits to be added.
    let n4 = c.start(4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(n4.leader_id(), None);
    assert!(n4.image().topics.is_empty());
    assert!(n4.status().voters.is_empty());

    // Changes may be sent to any node; use a follower to exercise forwarding.
    let follower = c.node((1..=3).find(|id| *id != leader).expect("follower"));
    let addr4 = c.addrs[&4].to_string();
    let done = follower.add_learner(4, addr4.clone()).await.unwrap();
    assert!(done.contains("learner"), "{done}");
    eventually("the learner catches up", Duration::from_secs(10), || {
        n4.image().topic("before").is_some() && n4.leader_id() == Some(leader)
    })
    .await;
    let status = c.node(leader).status();
    assert_eq!(status.learners.get(&4), Some(&addr4));
    assert_eq!(
        status.voters.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(status
        .matched_index
        .as_ref()
        .is_some_and(|m| m.contains_key(&4)));
    // Idempotent; a different address for a known id is refused.
    assert!(follower.add_learner(4, addr4.clone()).await.is_ok());
    assert!(matches!(
        follower.add_learner(4, "127.0.0.1:1".into()).await,
        Err(MembershipError::Refused(_))
    ));
    // Bad input never reaches the leader.
    assert!(matches!(
        follower.add_learner(5, "no-port".into()).await,
        Err(MembershipError::Refused(_))
    ));
    // Promoting an unknown node is refused.
    assert!(matches!(
        follower.promote_voter(9).await,
        Err(MembershipError::Refused(_))
    ));

    // A learner is a broker too: it can propose (forwarded to the leader).
    assert_eq!(
        n4.propose(create("from-learner")).await.unwrap(),
        ApplyOutcome::Ok
    );

    n4.promote_voter(4).await.unwrap();
    eventually("4 is a voter everywhere", Duration::from_secs(10), || {
        (1..=4).all(|id| {
            let s = c.node(id).status();
            s.voters.len() == 4 && s.learners.is_empty() && !s.joint
        })
    })
    .await;
    assert!(follower.promote_voter(4).await.unwrap().contains("already"));

    // Remove a voter that is not the leader.
    let removed = (1..=3)
        .find(|id| *id != leader && *id != follower.node_id())
        .expect("id");
    c.node(leader).propose(register(removed)).await.unwrap();
    follower.remove_node(removed).await.unwrap();
    c.stop(removed).await;
    let status = c.node(leader).status();
    assert!(!status.voters.contains_key(&removed));
    assert!(status.retired_node_ids.contains(&removed));
    assert!(
        fenced(&c.node(leader), removed),
        "a removed node's broker is fenced"
    );
    // Its id never comes back, as a learner, a voter or a broker.
    let again = n4.add_learner(removed, c.addrs[&removed].to_string()).await;
    assert!(
        matches!(&again, Err(MembershipError::Refused(why)) if why.contains("never reused")),
        "{again:?}"
    );
    assert!(matches!(
        n4.promote_voter(removed).await,
        Err(MembershipError::Refused(_))
    ));
    assert_eq!(
        n4.propose(register(removed)).await.unwrap(),
        ApplyOutcome::Conflict
    );
    assert!(n4.remove_node(removed).await.unwrap().contains("already"));
    assert_eq!(
        n4.propose(create("after-removal")).await.unwrap(),
        ApplyOutcome::Ok
    );

    // Remove the leader itself: the others carry on with a new one.
    let old_leader = c.leader().await;
    c.node(old_leader).remove_node(old_leader).await.unwrap();
    let rest: Vec<u64> = c
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != old_leader)
        .collect();
    let rest_nodes: Vec<MetadataQuorum> = rest.iter().map(|id| c.node(*id)).collect();
    eventually(
        "a new leader among the rest",
        Duration::from_secs(10),
        || {
            let l = rest_nodes[0].leader_id();
            l.is_some_and(|l| l != old_leader && rest.contains(&l))
                && rest_nodes.iter().all(|n| n.leader_id() == l)
        },
    )
    .await;
    c.stop(old_leader).await;
    assert_eq!(
        rest_nodes[0].propose(create("two-voters")).await.unwrap(),
        ApplyOutcome::Ok
    );
    let status = rest_nodes[1].status();
    assert_eq!(status.voters.keys().copied().collect::<Vec<_>>(), rest);
    assert_eq!(status.retired_node_ids.len(), 2);
    // The last two voters: removing one would leave the other without a majority if it were
    // down; both are up, so it works, and removing the last voter is refused.
    assert!(matches!(
        rest_nodes[0].remove_node(rest[0]).await.map(|_| ()),
        Ok(())
    ));
    c.stop(rest[0]).await;
    assert!(matches!(
        rest_nodes[1].remove_node(rest[1]).await,
        Err(MembershipError::Refused(_))
    ));
    assert_eq!(
        rest_nodes[1].propose(create("one-voter")).await.unwrap(),
        ApplyOutcome::Ok
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removal_that_would_lose_the_majority_is_refused() {
    init_tracing();
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], fast());
    for id in 1..=3 {
        c.start(id).await;
    }
    let leader = c.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    c.stop(others[0]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Removing the live follower would leave {leader, dead}: no live majority.
    let refused = c.node(leader).remove_node(others[1]).await;
    assert!(
        matches!(refused, Err(MembershipError::Refused(_))),
        "{refused:?}"
    );
    // Removing the dead one is fine.
    c.node(leader).remove_node(others[0]).await.unwrap();
    assert_eq!(c.node(leader).status().voters.len(), 2);
    assert_eq!(
        c.node(others[1]).propose(create("x")).await.unwrap(),
        ApplyOutcome::Ok
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_lowest_id_node_joins_instead_of_initializing() {
    init_tracing();
    // Nodes 2 and 3 form the cluster (2 is their lowest id).
    let mut c = Cluster::new(&[1, 2, 3], &[2, 3], fast());
    c.start(2).await;
    c.start(3).await;
    let leader = c.leader().await;
    c.node(leader).propose(create("existing")).await.unwrap();

    // Node 1 starts fresh listing all three: it is the lowest id, but its peers already form a
    // cluster, so it must not initialize a second one.
    c.voters.insert(1, c.addrs[&1].to_string());
    let n1 = c.start(1).await;
    assert!(!n1.inner.raft.is_initialized().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(n1.leader_id(), None);

    c.node(leader)
        .add_learner(1, c.addrs[&1].to_string())
        .await
        .unwrap();
    c.node(leader).promote_voter(1).await.unwrap();
    eventually(
        "node 1 joined the existing cluster",
        Duration::from_secs(10),
        || n1.image().topic("existing").is_some() && n1.status().voters.len() == 3,
    )
    .await;
    assert_eq!(
        n1.propose(create("from-1")).await.unwrap(),
        ApplyOutcome::Ok
    );
    c.shutdown().await;
}
