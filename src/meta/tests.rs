//! End-to-end tests of the metadata quorum: single node restart, snapshots and purging,
//! torn-tail recovery, controller RPC robustness, and a three-node cluster with forwarding,
//! snapshot catch-up and leader failover. All on 127.0.0.1 ephemeral ports and temp dirs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::image::{PartitionImage, TopicImage};
use super::*;

pub(super) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub(super) fn bind() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

pub(super) fn topic(name: &str) -> TopicImage {
    TopicImage {
        name: name.to_string(),
        topic_id: Uuid::new_v4(),
        partitions: vec![PartitionImage {
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            ..PartitionImage::default()
        }],
        configs: BTreeMap::new(),
    }
}

pub(super) fn create(name: &str) -> MetadataRecord {
    MetadataRecord::CreateTopic(topic(name))
}

pub(super) fn config(
    node_id: u64,
    dir: &Path,
    listen: SocketAddr,
    voters: &BTreeMap<u64, String>,
) -> MetaConfig {
    MetaConfig {
        node_id,
        dir: dir.join(format!("meta-{node_id}")),
        controller_listen: listen,
        voters: voters.clone(),
        controller: ControllerSettings::default(),
        security: Default::default(),
    }
}

fn small_snapshots() -> Tuning {
    Tuning {
        snapshot_every: 10,
        keep_after_snapshot: 2,
        purge_batch: 1,
        ..Tuning::default()
    }
}

pub(super) async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_restart_recovers_and_keeps_working() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (listener, addr) = bind();
    let voters = BTreeMap::from([(1, addr.to_string())]);
    let cfg = config(1, tmp.path(), addr, &voters);

    let started = Instant::now();
    let q = MetadataQuorum::start_with_listener(cfg.clone(), listener)
        .await
        .unwrap();
    assert_eq!(q.wait_for_leader(Duration::from_secs(1)).await.unwrap(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "slow election: {:?}",
        started.elapsed()
    );
    assert_eq!(q.leader_id(), Some(1));

    let mut images = q.subscribe();
    let orders = topic("orders");
    let outcome = q
        .propose(MetadataRecord::CreateTopic(orders.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, ApplyOutcome::Ok);
    assert_eq!(q.image().topic("orders").unwrap().topic_id, orders.topic_id);
    assert!(images.has_changed().unwrap());
    assert!(images.borrow_and_update().topic("orders").is_some());
    // The state machine's own answer comes back to the proposer.
    let again = q
        .propose(MetadataRecord::CreateTopic(orders.clone()))
        .await
        .unwrap();
    assert_eq!(again, ApplyOutcome::TopicAlreadyExists);
    let gone = q
        .propose(MetadataRecord::DeleteTopic {
            topic_id: Uuid::new_v4(),
        })
        .await;
    assert_eq!(gone.unwrap(), ApplyOutcome::UnknownTopic);

    // A second quorum on the same directory is refused while the first runs.
    let (l2, _) = bind();
    let err = MetadataQuorum::start_with_listener(cfg.clone(), l2)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("in use"), "{err:#}");

    q.shutdown().await.unwrap();
    q.shutdown().await.unwrap();
    assert!(matches!(
        q.propose(create("late")).await,
        Err(ProposeError::Shutdown)
    ));

    // Restart through the public `start` on the same port and directory.
    let q = MetadataQuorum::start(cfg.clone()).await.unwrap();
    assert_eq!(q.image().topic("orders").unwrap().topic_id, orders.topic_id);
    assert_eq!(q.wait_for_leader(Duration::from_secs(3)).await.unwrap(), 1);
    assert_eq!(
        q.propose(create("payments")).await.unwrap(),
        ApplyOutcome::Ok
    );
    let image = q.image();
    assert!(image.topic("orders").is_some() && image.topic("payments").is_some());
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_restore_on_restart() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (listener, addr) = bind();
    let voters = BTreeMap::from([(1, addr.to_string())]);
    let cfg = config(1, tmp.path(), addr, &voters);

    let q = MetadataQuorum::start_inner(cfg.clone(), Listen::Bound(listener), small_snapshots())
        .await
        .unwrap();
    q.wait_for_leader(Duration::from_secs(1)).await.unwrap();
    for i in 0..40 {
        assert_eq!(
            q.propose(create(&format!("t{i}"))).await.unwrap(),
            ApplyOutcome::Ok
        );
    }
    let metrics = q.inner.raft.metrics();
    eventually("a snapshot and a purge", Duration::from_secs(5), || {
        let m = metrics.borrow_watched();
        m.snapshot.is_some() && m.purged.is_some()
    })
    .await;
    assert!(cfg.dir.join(state_machine::SNAPSHOT_FILE).exists());
    q.shutdown().await.unwrap();

    let q = MetadataQuorum::start(cfg.clone()).await.unwrap();
    assert_eq!(q.image().topics.len(), 40);
    q.wait_for_leader(Duration::from_secs(3)).await.unwrap();
    assert_eq!(q.propose(create("t40")).await.unwrap(), ApplyOutcome::Ok);
    assert_eq!(q.image().topics.len(), 41);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_log_tail_is_repaired_at_start() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (listener, addr) = bind();
    let voters = BTreeMap::from([(1, addr.to_string())]);
    let cfg = config(1, tmp.path(), addr, &voters);

    let q = MetadataQuorum::start_with_listener(cfg.clone(), listener)
        .await
        .unwrap();
    q.wait_for_leader(Duration::from_secs(1)).await.unwrap();
    for name in ["a", "b", "c"] {
        q.propose(create(name)).await.unwrap();
    }
    q.shutdown().await.unwrap();

    // A crash in the middle of an append: a header promising more bytes than were written.
    let wal_path = cfg.dir.join(wal::WAL_FILE);
    let good_len = std::fs::metadata(&wal_path).unwrap().len();
    let mut torn = wal::encode_frame(&[b'x'; 100]).unwrap();
    torn.truncate(40);
    let mut bytes = std::fs::read(&wal_path).unwrap();
    bytes.extend_from_slice(&torn);
    std::fs::write(&wal_path, &bytes).unwrap();

    let q = MetadataQuorum::start(cfg.clone()).await.unwrap();
    let image = q.image();
    assert!(["a", "b", "c"].iter().all(|n| image.topic(n).is_some()));
    q.wait_for_leader(Duration::from_secs(3)).await.unwrap();
    q.propose(create("d")).await.unwrap();
    assert_eq!(q.image().topics.len(), 4);
    q.shutdown().await.unwrap();
    assert!(std::fs::metadata(&wal_path).unwrap().len() > good_len);

    // Pure garbage at the tail (e.g. a CRC mismatch) is cut off the same way.
    let mut bytes = std::fs::read(&wal_path).unwrap();
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    std::fs::write(&wal_path, &bytes).unwrap();
    let q = MetadataQuorum::start(cfg).await.unwrap();
    assert_eq!(q.image().topics.len(), 4);
    q.shutdown().await.unwrap();
}

/// Sends one raw frame and returns what the server answers (None: connection closed).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), wire::read_frame(&mut s, 1 << 20));
    read.await.expect("server answers or closes").ok().flatten()
}

fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_controller_requests_close_only_that_connection() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let (listener, addr) = bind();
    let voters = BTreeMap::from([(1, addr.to_string())]);
    let q = MetadataQuorum::start_with_listener(config(1, tmp.path(), addr, &voters), listener)
        .await
        .unwrap();
    q.wait_for_leader(Duration::from_secs(1)).await.unwrap();

    // Not JSON, JSON of the wrong shape, an absurd length, a truncated frame.
    assert!(raw_exchange(addr, &raw_frame(b"\xff\x00garbage"))
        .await
        .is_none());
    assert!(raw_exchange(
        addr,
        &raw_frame(br#"{"target":1,"from":2,"body":{"Nope":1}}"#)
    )
    .await
    .is_none());
    assert!(raw_exchange(addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .is_none());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 50, b'{']).await.unwrap();
    drop(s);

    // A well-formed request for another node id is refused, not served.
    let request = wire::encode(&wire::Request {
        target: 7,
        from: 2,
        body: RequestBody::ForwardProposal(create("nope")),
    })
    .unwrap();
    let reply = raw_exchange(addr, &raw_frame(&request))
        .await
        .expect("a reply");
    assert!(matches!(
        wire::decode::<Reply>(&reply).unwrap(),
        Reply::WrongNode { actual: 1 }
    ));
    assert!(q.image().topic("nope").is_none());

    // A forwarded proposal addressed correctly is served.
    let request = wire::encode(&wire::Request {
        target: 1,
        from: 2,
        body: RequestBody::ForwardProposal(create("yes")),
    })
    .unwrap();
    let reply = raw_exchange(addr, &raw_frame(&request))
        .await
        .expect("a reply");
    assert!(matches!(
        wire::decode::<Reply>(&reply).unwrap(),
        Reply::Proposal(ProposalReply::Applied {
            outcome: ApplyOutcome::Ok,
            ..
        })
    ));
    assert!(q.image().topic("yes").is_some());

    // The node is unharmed.
    assert_eq!(q.propose(create("after")).await.unwrap(), ApplyOutcome::Ok);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&raw_frame(b"junk")).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_forward_catch_up_and_fail_over() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let listeners: Vec<_> = (0..3).map(|_| bind()).collect();
    let voters: BTreeMap<u64, String> = (1..=3)
        .zip(&listeners)
        .map(|(id, (_, addr))| (id, addr.to_string()))
        .collect();
    let mut listeners: Vec<_> = listeners.into_iter().map(Some).collect();
    let start = |id: u64, listeners: &mut Vec<Option<(std::net::TcpListener, SocketAddr)>>| {
        let (listener, addr) = listeners[(id - 1) as usize].take().unwrap();
        let cfg = config(id, tmp.path(), addr, &voters);
        MetadataQuorum::start_inner(cfg, Listen::Bound(listener), small_snapshots())
    };

    // Nodes 1 and 2 form a quorum; node 3 joins late and must catch up from a snapshot.
    let n1 = start(1, &mut listeners).await.unwrap();
    let n2 = start(2, &mut listeners).await.unwrap();
    let leader = n1.wait_for_leader(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        n2.wait_for_leader(Duration::from_secs(5)).await.unwrap(),
        leader
    );
    let (leader_q, follower_q) = if leader == 1 { (&n1, &n2) } else { (&n2, &n1) };

    for i in 0..25 {
        assert_eq!(
            leader_q
                .propose(create(&format!("early{i}")))
                .await
                .unwrap(),
            ApplyOutcome::Ok
        );
    }
    // On a follower, propose forwards to the leader and returns once applied locally.
    let via_follower = topic("via-follower");
    let outcome = follower_q
        .propose(MetadataRecord::CreateTopic(via_follower.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, ApplyOutcome::Ok);
    assert_eq!(
        follower_q.image().topic("via-follower").unwrap().topic_id,
        via_follower.topic_id
    );
    let dup = follower_q
        .propose(MetadataRecord::CreateTopic(via_follower))
        .await
        .unwrap();
    assert_eq!(dup, ApplyOutcome::TopicAlreadyExists);

    let leader_metrics = leader_q.inner.raft.metrics();
    eventually("the leader purged its log", Duration::from_secs(5), || {
        leader_metrics.borrow_watched().purged.is_some()
    })
    .await;

    let n3 = start(3, &mut listeners).await.unwrap();
    let nodes = [n1.clone(), n2.clone(), n3.clone()];
    eventually("all three images converge", Duration::from_secs(10), || {
        let first = nodes[0].image();
        first.topics.len() == 26 && nodes.iter().all(|n| *n.image() == *first)
    })
    .await;
    assert!(n3.inner.raft.metrics().borrow_watched().snapshot.is_some());
    assert_eq!(
        n3.propose(create("from-3")).await.unwrap(),
        ApplyOutcome::Ok
    );
    assert!(n3.image().topic("from-3").is_some());

    // Kill the leader; the other two elect a new one and keep accepting proposals.
    let old_leader = leader;
    let survivors: Vec<MetadataQuorum> = nodes
        .iter()
        .filter(|n| n.node_id() != old_leader)
        .cloned()
        .collect();
    nodes[(old_leader - 1) as usize].shutdown().await.unwrap();

    // Proposing right away: the proposer may still point at the dead leader and must retry.
    assert_eq!(
        survivors[0]
            .propose(create("during-failover"))
            .await
            .unwrap(),
        ApplyOutcome::Ok
    );
    eventually("a new leader", Duration::from_secs(10), || {
        survivors
            .iter()
            .all(|n| n.leader_id().is_some_and(|l| l != old_leader))
    })
    .await;
    let new_leader = survivors[0].leader_id().unwrap();
    assert_eq!(survivors[1].leader_id(), Some(new_leader));
    for n in &survivors {
        let name = format!("after-failover-{}", n.node_id());
        assert_eq!(n.propose(create(&name)).await.unwrap(), ApplyOutcome::Ok);
    }
    eventually("survivors converge", Duration::from_secs(10), || {
        *survivors[0].image() == *survivors[1].image() && survivors[0].image().topics.len() == 30
    })
    .await;

    for n in &survivors {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_proposals_fail_with_no_leader() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let listeners: Vec<_> = (0..3).map(|_| bind()).collect();
    let voters: BTreeMap<u64, String> = (1..=3)
        .zip(&listeners)
        .map(|(id, (_, addr))| (id, addr.to_string()))
        .collect();
    let tuning = Tuning {
        propose_timeout: Duration::from_millis(500),
        ..Tuning::default()
    };
    // Node 2 alone: not the lowest id, so it never forms a cluster by itself.
    let (listener, addr) = bind();
    let lonely = MetadataQuorum::start_inner(
        config(2, tmp.path(), addr, &voters),
        Listen::Bound(listener),
        tuning,
    )
    .await
    .unwrap();
    assert!(lonely
        .wait_for_leader(Duration::from_millis(300))
        .await
        .is_err());
    assert_eq!(lonely.leader_id(), None);
    assert!(matches!(
        lonely.propose(create("x")).await,
        Err(ProposeError::NoLeader)
    ));
    assert!(lonely.image().topics.is_empty());
    lonely.shutdown().await.unwrap();

    // A node id outside the voters is a configuration error.
    let (listener, addr) = bind();
    let err = MetadataQuorum::start_with_listener(config(9, tmp.path(), addr, &voters), listener)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not among the voters"), "{err:#}");
}
