//! The classic consumer group protocol as Kafka's `ClassicGroup` and `GroupCoordinator` run
//! it: members join (KIP-394 member ids, KIP-345 static members), the group rebalances through
//! PreparingRebalance and CompletingRebalance into Stable, and heartbeats, leaves, session
//! and rebalance timeouts move it along. Pure state: I/O (persisting the group, waiting for
//! replies) is the caller's.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

pub use super::member::{
    GroupTiming, JoinRequest, JoinResult, Member, Reply, SyncRequest, SyncResult,
};
use super::records::{GroupValue, MemberValue};

mod join;

/// The "no error" code.
pub const NONE: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as ListGroups and DescribeGroups report them.
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    /// Wall-clock ms of the last state change (for offset retention).
    pub state_timestamp_ms: i64,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Members in join order (the order decides the next leader).
    members: BTreeMap<u64, String>,
    by_id: HashMap<String, Member>,
    join_order: u64,
    /// Static members: group instance id → member id.
    static_members: HashMap<String, String>,
    /// KIP-394 member ids handed out and not yet used, with their expiry.
    pending_members: HashMap<String, Instant>,
    /// End of the join phase (rebalance timeout).
    rebalance_deadline: Option<Instant>,
    /// The initial join delay of a group that was empty: (current end, latest possible end).
    initial_delay: Option<InitialDelay>,
    /// End of the sync phase.
    sync_deadline: Option<Instant>,
}

/// Kafka's InitialDelayedJoin: a group that was empty waits `group.initial.rebalance.delay.ms`
/// for more members; if any joined meanwhile, it waits once more, never past the rebalance
/// timeout.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    end: Instant,
    max: Instant,
    joined_during: bool,
}

/// A group metadata record to persist after a state change.
pub type Persist = Option<GroupValue>;

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            by_id: HashMap::new(),
            join_order: 0,
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            sync_deadline: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter_map(|id| self.by_id.get(id))
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Rebuilds a group from its stored metadata (when a coordinator loads its partition).
    pub fn restore(id: &str, value: &GroupValue, now: Instant, now_ms: i64) -> Self {
        let mut g = Group::new(id, now_ms);
        g.protocol_type = (!value.protocol_type.is_empty()).then(|| value.protocol_type.clone());
        g.protocol = value.protocol.clone();
        g.generation = value.generation;
        g.leader = value.leader.clone();
        g.state_timestamp_ms = if value.current_state_timestamp > 0 {
            value.current_state_timestamp
        } else {
            now_ms
        };
        for m in &value.members {
            let protocol = value.protocol.clone().unwrap_or_default();
            g.add(Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                protocol_type: value.protocol_type.clone(),
                protocols: vec![(protocol, m.subscription.clone())],
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                heartbeat_deadline: now + Duration::from_millis(m.session_timeout_ms.max(0) as u64),
            });
        }
        g.state = if g.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    /// A stable group of `members` in `generation` (a consumer group downgraded to classic,
    /// Kafka's `ClassicGroup.fromConsumerGroup`); its first member leads.
    pub fn converted(id: &str, generation: i32, members: Vec<Member>, now_ms: i64) -> Self {
        let mut g = Group::new(id, now_ms);
        g.generation = generation;
        g.protocol_type = Some("consumer".to_string());
        for m in members {
            g.add(m);
        }
        g.protocol = g.select_protocol();
        g.leader = g.members.values().next().cloned();
        g.state = if g.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    /// Starts a rebalance (a group just converted from a consumer group): members learn of
    /// it through REBALANCE_IN_PROGRESS on their next heartbeat.
    pub fn start_rebalance(&mut self, timing: GroupTiming, now: Instant, now_ms: i64) -> Persist {
        let persist = self.prepare_rebalance(timing, now, now_ms);
        self.try_complete_join(now, now_ms).or(persist)
    }

    /// Answers every JoinGroup and SyncGroup waiting in this group with REBALANCE_IN_PROGRESS
    /// (the group is becoming a consumer group; its members rejoin that).
    pub fn abort_waiting(&mut self) {
        for m in self.by_id.values_mut() {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinResult::error(
                    ResponseError::RebalanceInProgress,
                    &m.member_id,
                ));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
            }
        }
    }

    /// The metadata record Kafka stores for this group.
    pub fn to_value(&self) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp_ms,
            members: self
                .members()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn add(&mut self, member: Member) {
        self.join_order += 1;
        self.members
            .insert(self.join_order, member.member_id.clone());
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        if self.protocol_type.is_none() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        self.by_id.insert(member.member_id.clone(), member);
    }

    fn remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.by_id.remove(member_id)?;
        self.members.retain(|_, id| id != member_id);
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.values().next().cloned();
        }
        Some(member)
    }

    /// Protocols every member supports (all of them when the group has no members).
    fn candidate_protocols(&self) -> Vec<String> {
        let mut iter = self.members();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(n, _)| n == c))
    }

    /// Each member votes for its most preferred candidate; the most votes win (Kafka's rule).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = candidates.iter().map(|c| (c.clone(), 0)).collect();
        for m in self.members() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == name) {
                    v.1 += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(std::cmp::Ordering::Greater))
            .map(|(c, _)| c)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(0))
    }

    /// Checks a member id and instance id pair: UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID.
    fn validate_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => {
                    return Err(ResponseError::FencedInstanceId)
                }
                None => return Err(ResponseError::UnknownMemberId),
                _ => {}
            }
        }
        if self.by_id.contains_key(member_id) {
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        }
    }

    fn heartbeat_member(&mut self, member_id: &str, now: Instant) {
        if let Some(m) = self.by_id.get_mut(member_id) {
            m.heartbeat_deadline = now + m.session_timeout;
        }
    }

    pub fn sync(
        &mut self,
        req: SyncRequest<'_>,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<SyncResult>, Persist) {
        let SyncRequest {
            member_id,
            instance,
            generation,
            protocol_type,
            protocol,
            assignments,
        } = req;
        let err = |e| (Reply::Now(SyncResult::error(e)), None);
        if self.state == GroupState::Dead {
            return err(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(e) = self.validate_member(member_id, instance) {
            return err(e);
        }
        if generation != self.generation {
            return err(ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return err(ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => err(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                self.heartbeat_member(member_id, now);
                let assignment = self
                    .by_id
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                (Reply::Now(self.sync_result(assignment)), None)
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.heartbeat_member(member_id, now);
                if let Some(m) = self.by_id.get_mut(member_id) {
                    m.awaiting_sync = Some(tx);
                }
                if self.leader.as_deref() != Some(member_id) {
                    return (Reply::Later(rx), None);
                }
                // The leader's assignment completes the rebalance.
                let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.by_id.values_mut() {
                    m.assignment = assigned.remove(&m.member_id).unwrap_or_default();
                }
                self.sync_deadline = None;
                self.transition(GroupState::Stable, now_ms);
                let result_base = self.sync_result(Bytes::new());
                for m in self.by_id.values_mut() {
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(SyncResult {
                            assignment: m.assignment.clone(),
                            ..result_base.clone()
                        });
                    }
                }
                (Reply::Later(rx), Some(self.to_value()))
            }
            GroupState::Dead => err(ResponseError::CoordinatorNotAvailable),
        }
    }

    fn sync_result(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        }
    }

    /// Returns the Heartbeat error code (0 for none).
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if let Err(e) = self.validate_member(member_id, instance) {
            return e.code();
        }
        if generation != self.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match self.state {
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => {
                self.heartbeat_member(member_id, now);
                ResponseError::RebalanceInProgress.code()
            }
            _ => {
                self.heartbeat_member(member_id, now);
                NONE
            }
        }
    }

    /// Removes one member (LeaveGroup). A static member leaving by instance id alone is
    /// matched through the instance id.
    /// Returns the member's LeaveGroup error code (0 for none).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (i16, Persist) {
        if self.state == GroupState::Dead {
            return (ResponseError::CoordinatorNotAvailable.code(), None);
        }
        let target = match instance {
            Some(i) => match self.static_members.get(i) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return (ResponseError::FencedInstanceId.code(), None),
                None => return (ResponseError::UnknownMemberId.code(), None),
            },
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    return (NONE, None);
                }
                if !self.by_id.contains_key(member_id) {
                    return (ResponseError::UnknownMemberId.code(), None);
                }
                member_id.to_string()
            }
        };
        let persist = self.remove_and_rebalance(&target, timing, now, now_ms);
        (NONE, persist)
    }

    fn remove_and_rebalance(
        &mut self,
        member_id: &str,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> Persist {
        if let Some(mut m) = self.remove(member_id) {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(timing, now, now_ms);
                self.try_complete_join(now, now_ms)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, now_ms),
            GroupState::Empty | GroupState::Dead => None,
        }
    }

    /// Applies timeouts: expired sessions, the end of an initial delay or of a join or sync
    /// phase. Returns a record to persist when the group changed in a way Kafka stores.
    pub fn tick(&mut self, timing: GroupTiming, now: Instant, now_ms: i64) -> Persist {
        let mut persist = None;
        self.pending_members.retain(|_, expiry| *expiry > now);
        let expired: Vec<String> = self
            .by_id
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && m.heartbeat_deadline <= now
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            persist = self
                .remove_and_rebalance(&id, timing, now, now_ms)
                .or(persist);
        }
        if self.state == GroupState::PreparingRebalance {
            if let Some(d) = self.initial_delay {
                if now >= d.end {
                    if d.joined_during && now < d.max {
                        self.initial_delay = Some(InitialDelay {
                            end: now + timing.initial_rebalance_delay.min(d.max - now),
                            max: d.max,
                            joined_during: false,
                        });
                    } else {
                        self.initial_delay = None;
                        persist = self.try_complete_join(now, now_ms).or(persist);
                    }
                }
            }
            if self.state == GroupState::PreparingRebalance
                && self.rebalance_deadline.is_some_and(|d| now >= d)
            {
                persist = self.complete_join(now, now_ms).or(persist);
            }
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d)
        {
            // Members that never sent SyncGroup are removed, and the group rebalances.
            let lagging: Vec<String> = self
                .by_id
                .values()
                .filter(|m| m.awaiting_sync.is_none())
                .map(|m| m.member_id.clone())
                .collect();
            for id in lagging {
                persist = self
                    .remove_and_rebalance(&id, timing, now, now_ms)
                    .or(persist);
            }
        }
        persist
    }

    /// DeleteGroups: only an empty group may go.
    pub fn mark_dead(&mut self, now_ms: i64) -> Result<(), ResponseError> {
        match self.state {
            GroupState::Empty => {
                self.transition(GroupState::Dead, now_ms);
                Ok(())
            }
            GroupState::Dead => Err(ResponseError::GroupIdNotFound),
            _ => Err(ResponseError::NonEmptyGroup),
        }
    }

    /// Topics the members subscribe to, from their consumer protocol metadata.
    /// Whether a member may commit offsets now (Kafka's `ClassicGroup.validateOffsetCommit`).
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A simple consumer (assign()) or the admin client: allowed while no member is in.
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            let known = self.by_id.contains_key(member_id);
            if let Some(i) = instance {
                match self.static_members.get(i) {
                    Some(current) if current != member_id => {
                        return Err(ResponseError::FencedInstanceId)
                    }
                    None => return Err(ResponseError::UnknownMemberId),
                    _ => {}
                }
            }
            if !known {
                return Err(ResponseError::UnknownMemberId);
            }
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            // The member has its JoinGroup answer but not yet its assignment.
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members() {
            let meta = m.metadata_for(protocol);
            if meta.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([meta[0], meta[1]]);
            use kafka_protocol::protocol::Decodable;
            let mut body = meta.slice(2..);
            if let Ok(sub) =
                kafka_protocol::messages::ConsumerProtocolSubscription::decode(&mut body, version)
            {
                topics.extend(sub.topics.iter().map(|t| t.to_string()));
            }
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }
}
