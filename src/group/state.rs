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

    fn join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let members = if leader == member_id {
            let p = protocol.clone().unwrap_or_default();
            self.members()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata_for(&p),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Persist) {
        let now_reply = |r: JoinResult| (Reply::Now(r), None);
        if self.state == GroupState::Dead {
            return now_reply(JoinResult::error(
                ResponseError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return now_reply(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        self.pending_members.retain(|_, expiry| *expiry > now);
        if req.member_id.is_empty() {
            return self.join_unknown_member(req, timing, now, now_ms);
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            return self.add_member_and_rebalance(req.member_id.clone(), req, timing, now, now_ms);
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return now_reply(JoinResult::error(e, &req.member_id));
        }
        let member_id = req.member_id.clone();
        let unchanged = self
            .by_id
            .get(&member_id)
            .is_some_and(|m| m.protocols == req.protocols);
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(req, timing, now, now_ms)
            }
            GroupState::CompletingRebalance if unchanged => {
                self.heartbeat_member(&member_id, now);
                now_reply(self.join_result(&member_id, false))
            }
            GroupState::Stable if unchanged && self.leader.as_deref() != Some(&member_id) => {
                self.heartbeat_member(&member_id, now);
                now_reply(self.join_result(&member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, timing, now, now_ms)
            }
            GroupState::Empty | GroupState::Dead => now_reply(JoinResult::error(
                ResponseError::UnknownMemberId,
                &member_id,
            )),
        }
    }

    fn join_unknown_member(
        &mut self,
        req: JoinRequest,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Persist) {
        if let Some(instance) = req.group_instance_id.clone() {
            let new_id = new_member_id(&instance);
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(&old_id, new_id, req, timing, now, now_ms);
            }
            if self.by_id.len() >= timing.max_size {
                return (
                    Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, "")),
                    None,
                );
            }
            return self.add_member_and_rebalance(new_id, req, timing, now, now_ms);
        }
        let new_id = new_member_id(&req.client_id);
        if self.by_id.len() + self.pending_members.len() >= timing.max_size {
            return (
                Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, "")),
                None,
            );
        }
        if req.require_known_member_id {
            // KIP-394: hand out the id; the member joins again with it.
            self.pending_members
                .insert(new_id.clone(), now + req.session_timeout);
            return (
                Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id)),
                None,
            );
        }
        self.add_member_and_rebalance(new_id, req, timing, now, now_ms)
    }

    /// A static member came back with a new member id (KIP-345): the old id is fenced.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Persist) {
        let was_leader = self.leader.as_deref() == Some(old_id);
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some(mut member) = self.remove(old_id) else {
            return self.add_member_and_rebalance(new_id, req, timing, now, now_ms);
        };
        // Fence whoever still waits under the old id.
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(ResponseError::FencedInstanceId, old_id));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.member_id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.heartbeat_deadline = now + req.session_timeout;
        if !unchanged {
            member.protocols = req.protocols.clone();
        }
        self.add(member);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged => {
                // No rebalance: the member keeps its assignment under its new id. As Kafka
                // does, the answer names the previous leader id and no members, so even a
                // returning leader does not reassign a stable group.
                let persist = Some(self.to_value());
                let mut result = self.join_result(&new_id, false);
                result.leader = previous_leader;
                result.members.clear();
                (Reply::Now(result), persist)
            }
            GroupState::CompletingRebalance if unchanged => {
                (Reply::Now(self.join_result(&new_id, false)), None)
            }
            _ => self.update_member_and_rebalance(
                JoinRequest {
                    member_id: new_id,
                    ..req
                },
                timing,
                now,
                now_ms,
            ),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        req: JoinRequest,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Persist) {
        let (tx, rx) = oneshot::channel();
        self.add(Member {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout: req.rebalance_timeout,
            session_timeout: req.session_timeout,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(tx),
            awaiting_sync: None,
            heartbeat_deadline: now + req.session_timeout,
        });
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        let persist = self.prepare_rebalance(timing, now, now_ms);
        let persist = self.try_complete_join(now, now_ms).or(persist);
        (Reply::Later(rx), persist)
    }

    fn update_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> (Reply<JoinResult>, Persist) {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.by_id.get_mut(&req.member_id) {
            if let Some(old) = m.awaiting_join.replace(tx) {
                // A second join from the same member supersedes the first.
                drop(old);
            }
            m.protocols = req.protocols;
            m.session_timeout = req.session_timeout;
            m.rebalance_timeout = req.rebalance_timeout;
            m.heartbeat_deadline = now + m.session_timeout;
        }
        let persist = self.prepare_rebalance(timing, now, now_ms);
        let persist = self.try_complete_join(now, now_ms).or(persist);
        (Reply::Later(rx), persist)
    }

    /// Moves to PreparingRebalance (if not already there), cancelling a pending sync.
    fn prepare_rebalance(&mut self, timing: GroupTiming, now: Instant, now_ms: i64) -> Persist {
        if self.state == GroupState::PreparingRebalance {
            if let Some(d) = self.initial_delay.as_mut() {
                d.joined_during = true;
            }
            return None;
        }
        if self.state == GroupState::CompletingRebalance {
            for m in self.by_id.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.transition(GroupState::PreparingRebalance, now_ms);
        self.sync_deadline = None;
        let timeout = self.max_rebalance_timeout();
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay =
            (was_empty && !timing.initial_rebalance_delay.is_zero()).then(|| InitialDelay {
                end: now + timing.initial_rebalance_delay.min(timeout),
                max: now + timeout,
                joined_during: false,
            });
        None
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.by_id.values().all(|m| m.awaiting_join.is_some())
    }

    /// Completes the join phase if every member has rejoined (and no initial delay runs).
    fn try_complete_join(&mut self, now: Instant, now_ms: i64) -> Persist {
        if self.state != GroupState::PreparingRebalance
            || self.initial_delay.is_some()
            || !self.all_members_joined()
        {
            return None;
        }
        self.complete_join(now, now_ms)
    }

    /// Ends the join phase: members that did not rejoin leave, a new generation starts, and
    /// every waiting member gets its JoinGroup response.
    fn complete_join(&mut self, now: Instant, now_ms: i64) -> Persist {
        self.initial_delay = None;
        self.rebalance_deadline = None;
        // Dynamic members that did not rejoin leave; static ones keep their place until their
        // session expires (KIP-345).
        let gone: Vec<String> = self
            .by_id
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
        self.pending_members.clear();
        self.generation += 1;
        if self.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            return Some(self.to_value());
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.by_id.contains_key(l))
        {
            self.leader = self.members.values().next().cloned();
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let ids: Vec<String> = self.members.values().cloned().collect();
        for id in ids {
            let result = self.join_result(&id, false);
            if let Some(m) = self.by_id.get_mut(&id) {
                m.heartbeat_deadline = now + m.session_timeout;
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(result);
                }
            }
        }
        None
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
