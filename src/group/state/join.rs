//! Joining a classic group: JoinGroup for new, known and static members, and the rebalance it
//! starts (PreparingRebalance until every member rejoined or the rebalance timeout passed,
//! then CompletingRebalance with the leader's member list).

use std::time::Instant;

use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::*;

impl Group {
    pub(super) fn join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
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

    pub(super) fn join_unknown_member(
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
    pub(super) fn replace_static_member(
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

    pub(super) fn add_member_and_rebalance(
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
        (Reply::Later(rx), self.rebalance(timing, now, now_ms))
    }

    pub(super) fn update_member_and_rebalance(
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
        (Reply::Later(rx), self.rebalance(timing, now, now_ms))
    }

    /// A member joined or changed: rebalance, completing the join at once if everyone is in.
    fn rebalance(&mut self, timing: GroupTiming, now: Instant, now_ms: i64) -> Persist {
        let persist = self.prepare_rebalance(timing, now, now_ms);
        self.try_complete_join(now, now_ms).or(persist)
    }

    /// Moves to PreparingRebalance (if not already there), cancelling a pending sync.
    pub(super) fn prepare_rebalance(
        &mut self,
        timing: GroupTiming,
        now: Instant,
        now_ms: i64,
    ) -> Persist {
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

    pub(super) fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.by_id.values().all(|m| m.awaiting_join.is_some())
    }

    /// Completes the join phase if every member has rejoined (and no initial delay runs).
    pub(super) fn try_complete_join(&mut self, now: Instant, now_ms: i64) -> Persist {
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
    pub(super) fn complete_join(&mut self, now: Instant, now_ms: i64) -> Persist {
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
        // Generations (the classic protocol's member epochs) only move forward, one per
        // completed join phase.
        assert!(
            self.generation < i32::MAX,
            "group {} ran out of generations",
            self.id
        );
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
}
