//! End-to-end tests of the classic group protocol and committed offsets against the real
//! binary, with raw requests: KIP-394 member ids, join/sync/heartbeat/leave, static
//! membership (KIP-345), offsets that survive a restart, and the group admin APIs.

mod common;

use bytes::Bytes;
use common::requests::*;
use common::{Broker, Client};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker whose `__consumer_offsets` exists (clients create it through FindCoordinator).
fn group_broker() -> Broker {
    let broker = Broker::start_with_env(&[("GREGOR_KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")]);
    let mut c = broker.client();
    let fc = c.call(
        3,
        &FindCoordinatorRequest::default()
            .with_key(s("any"))
            .with_key_type(0),
    );
    assert_eq!(fc.error_code, 0);
    broker
}

/// JoinGroup, retried while the coordinator is still loading its `__consumer_offsets`
/// partition (COORDINATOR_LOAD_IN_PROGRESS), as clients do: the partition may be hosted a
/// moment before the coordinator has read it.
fn join(c: &mut Client, group: &str, member: &str, instance: Option<&str>) -> JoinGroupResponse {
    for _ in 0..100 {
        let resp: JoinGroupResponse = c.call(
            7,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(member))
                .with_group_instance_id(instance.map(s))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"meta"))]),
        );
        if resp.error_code != 14 {
            return resp;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the coordinator still loading after 2 s");
}

fn sync(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    assign: &[(&str, &'static [u8])],
) -> SyncGroupResponse {
    c.call(
        5,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(
                assign
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::from_static(a))
                    })
                    .collect(),
            ),
    )
}

fn heartbeat(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> i16 {
    c.call(
        4,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_group_instance_id(instance.map(s)),
    )
    .error_code
}

fn commit(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offset: i64,
) -> i16 {
    let resp = c.call(
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_id(s(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(s("note")))])]),
    );
    resp.topics[0].partitions[0].error_code
}

fn fetch_offset(c: &mut Client, group: &str, topic: &str) -> (i64, String) {
    let resp = c.call(
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(name(topic))
                .with_partition_indexes(vec![0])])),
    );
    assert_eq!(resp.error_code, 0);
    let p = &resp.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn join_sync_heartbeat_commit_leave() {
    let mut broker = group_broker();
    let mut c = broker.client();
    create_topic(&mut c, "gt", 1, &[]);
    let fc = c.call(
        3,
        &FindCoordinatorRequest::default()
            .with_key(s("g1"))
            .with_key_type(0),
    );
    assert_eq!((fc.error_code, fc.node_id), (0, BrokerId(1)));

    // KIP-394: the first join hands out a member id.
    let first = join(&mut c, "g1", "", None);
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let member = first.member_id.to_string();
    assert!(!member.is_empty());
    let joined = join(&mut c, "g1", &member, None);
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.to_string(), member);
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));

    let synced = sync(&mut c, "g1", &member, 1, &[(&member, b"assignment")]);
    assert_eq!(synced.error_code, 0);
    assert_eq!(&synced.assignment[..], b"assignment");
    assert_eq!(heartbeat(&mut c, "g1", &member, 1, None), 0);
    assert_eq!(
        heartbeat(&mut c, "g1", &member, 7, None),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        heartbeat(&mut c, "g1", "nobody", 1, None),
        25,
        "UNKNOWN_MEMBER_ID"
    );

    assert_eq!(commit(&mut c, "g1", &member, 1, "gt", 42), 0);
    assert_eq!(
        commit(&mut c, "g1", &member, 0, "gt", 43),
        22,
        "stale generation"
    );
    assert_eq!(
        commit(&mut c, "g1", &member, 1, "nope", 1),
        3,
        "unknown topic"
    );
    assert_eq!(fetch_offset(&mut c, "g1", "gt"), (42, "note".to_string()));

    let listed = c.call(4, &ListGroupsRequest::default());
    let g = listed
        .groups
        .iter()
        .find(|g| g.group_id.0.as_str() == "g1")
        .expect("listed");
    assert_eq!(g.group_state.as_str(), "Stable");
    let described = c.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g1"))]),
    );
    assert_eq!(described.groups[0].members.len(), 1);
    assert_eq!(
        &described.groups[0].members[0].member_assignment[..],
        b"assignment"
    );

    let left = c.call(
        4,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_members(vec![
                kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                    .with_member_id(s(&member)),
            ]),
    );
    assert_eq!(left.members[0].error_code, 0);
    let described = c.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g1"))]),
    );
    assert_eq!(described.groups[0].group_state.as_str(), "Empty");

    // Committed offsets survive a restart.
    broker.restart();
    let mut c = broker.client();
    let mut tries = 0;
    let fetched = loop {
        let resp = c.call(
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(None),
        );
        if resp.error_code != 14 || tries > 50 {
            break resp;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(fetched.error_code, 0);
    assert_eq!(fetched.topics[0].partitions[0].committed_offset, 42);

    let deleted = c.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g1"))]),
    );
    assert_eq!(deleted.results[0].error_code, 0);
    assert_eq!(fetch_offset(&mut c, "g1", "gt").0, -1);
    let deleted = c.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g1"))]),
    );
    assert_eq!(deleted.results[0].error_code, 69, "GROUP_ID_NOT_FOUND");
}

#[test]
fn static_member_rejoins_without_a_rebalance() {
    let broker = group_broker();
    let mut c = broker.client();
    let first = join(&mut c, "sg", "", Some("instance-1"));
    assert_eq!(
        first.error_code, 0,
        "static members need no KIP-394 round trip"
    );
    let old_id = first.member_id.to_string();
    let generation = first.generation_id;
    assert_eq!(
        sync(&mut c, "sg", &old_id, generation, &[(&old_id, b"a")]).error_code,
        0
    );

    // The same instance restarts: a new member id, the same generation and assignment.
    let again = join(&mut c, "sg", "", Some("instance-1"));
    assert_eq!(again.error_code, 0);
    assert_eq!(again.generation_id, generation, "no rebalance");
    let new_id = again.member_id.to_string();
    assert_ne!(new_id, old_id);
    let synced = sync(&mut c, "sg", &new_id, generation, &[]);
    assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"a"[..]));
    // The old incarnation is fenced.
    assert_eq!(
        heartbeat(&mut c, "sg", &old_id, generation, Some("instance-1")),
        82,
        "FENCED_INSTANCE_ID"
    );
    assert_eq!(
        heartbeat(&mut c, "sg", &new_id, generation, Some("instance-1")),
        0
    );
}

#[test]
fn simple_consumer_commits_without_membership() {
    let broker = group_broker();
    let mut c = broker.client();
    create_topic(&mut c, "solo", 1, &[]);
    // assign() consumers commit with generation -1 and no member id.
    assert_eq!(commit(&mut c, "manual", "", -1, "solo", 7), 0);
    assert_eq!(fetch_offset(&mut c, "manual", "solo").0, 7);
}
