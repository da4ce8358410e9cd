//! The classic protocol's membership APIs on the coordinator: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, ListGroups, DescribeGroups, DeleteGroups, and the timers (sessions, join and
//! sync phases). The state machine decides (`state.rs`); this file checks the coordinator,
//! persists what changed and waits for the answers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::consumer::classic::MigrationPolicy;
use super::member::{JoinRequest, JoinResult, Reply, SyncRequest, SyncResult};
use super::records::RecordKey;
use super::state::{GroupState, NONE};
use super::GroupCoordinator;
use crate::replica::now_ms;

/// The caller's identity, for the group member record.
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// A group as ListGroups reports it.
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic", "consumer" (or "share", listed by the share coordinator's side).
    pub group_type: &'static str,
}

/// A member as DescribeGroups reports it.
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it; `None` when this coordinator does not know it.
pub struct DescribedGroup {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

impl GroupCoordinator {
    fn session_timeout_ok(&self, ms: i32) -> bool {
        let d = Duration::from_millis(ms.max(0) as u64);
        ms > 0 && d >= self.config.min_session_timeout && d <= self.config.max_session_timeout
    }

    /// JoinGroup: answers at once, or once the rebalance this join is part of completes.
    pub async fn join(
        &self,
        group_id: &str,
        join: JoinRequest,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> JoinResult {
        let member_id = join.member_id.clone();
        let fail = |e: ResponseError| JoinResult::error(e, &member_id);
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if let Err(e) = self.check_coordinator(group_id) {
            return fail(e);
        }
        if !self.session_timeout_ok(join.session_timeout.as_millis() as i32) {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let handle = if member_id.is_empty() {
            self.get_or_create(group_id)
        } else {
            match self.group(group_id) {
                Some(h) => h,
                None => return fail(ResponseError::UnknownMemberId),
            }
        };
        let rebalance_timeout = join.rebalance_timeout;
        let (reply, written) = {
            let mut entry = handle.lock();
            let policy = self.config.migration_policy;
            if policy != MigrationPolicy::Disabled
                && entry.consumer.as_ref().is_some_and(|c| !c.is_empty())
            {
                // A classic member of a consumer group (refused only when migration is
                // disabled, as Kafka does): answered once its records are stored.
                let (result, written) = self.classic_join_to_consumer(group_id, &mut entry, &join);
                (Reply::Now(result), written.map(|w| (w, true)))
            } else {
                if let Err(e) = self.claim_for_classic(group_id, &mut entry) {
                    // Kafka answers this without a member id.
                    return JoinResult::error(e, "");
                }
                let (reply, persist) =
                    entry
                        .group
                        .join(join, self.timing(), Instant::now(), now_ms());
                let written = persist.map(|v| {
                    (
                        self.append(group_id, &[Self::group_record(group_id, &v)]),
                        false,
                    )
                });
                (reply, written)
            }
        };
        match written {
            Some((Ok(w), strict)) => {
                if let Err(e) = self.replicated(&w).await {
                    if strict {
                        return fail(e);
                    }
                }
            }
            Some((Err(e), true)) => return fail(e),
            _ => {}
        }
        match reply {
            Reply::Now(r) => r,
            Reply::Later(rx) => {
                let wait = rebalance_timeout + Duration::from_secs(5);
                tokio::select! {
                    r = tokio::time::timeout(wait, rx) => match r {
                        Ok(Ok(r)) => r,
                        // Superseded by a newer JoinGroup from the same member, or the group moved.
                        _ => fail(ResponseError::RebalanceInProgress),
                    },
                    // A coordinator going away sends waiting members elsewhere.
                    _ = shutdown.cancelled() => fail(ResponseError::NotCoordinator),
                }
            }
        }
    }

    /// SyncGroup: the leader's assignment is stored before anyone gets theirs.
    pub async fn sync(&self, group_id: &str, sync: SyncRequest<'_>) -> SyncResult {
        let fail = |e: ResponseError| SyncResult::error(e);
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if let Err(e) = self.check_coordinator(group_id) {
            return fail(e);
        }
        let Some(handle) = self.group(group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let (reply, written) = {
            let mut entry = handle.lock();
            if let Some(cg) = entry.consumer.as_mut() {
                return self.classic_sync_to_consumer(cg, &sync);
            }
            let (reply, persist) = entry.group.sync(sync, Instant::now(), now_ms());
            let written =
                persist.map(|v| self.append(group_id, &[Self::group_record(group_id, &v)]));
            (reply, written)
        };
        if let Some(w) = written {
            // Kafka answers the sync only once the group's assignment is stored.
            let stored = match w {
                Ok(w) => self.replicated(&w).await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::warn!(group = %group_id, error = ?e, "storing group assignment failed");
            }
        }
        match reply {
            Reply::Now(r) => r,
            Reply::Later(rx) => {
                match tokio::time::timeout(self.config.max_session_timeout, rx).await {
                    Ok(Ok(r)) => r,
                    _ => fail(ResponseError::RebalanceInProgress),
                }
            }
        }
    }

    /// Heartbeat: the error code to answer with.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> i16 {
        if let Err(e) = self.check_coordinator(group_id) {
            return e.code();
        }
        match self.group(group_id) {
            None => ResponseError::UnknownMemberId.code(),
            Some(h) => {
                let mut entry = h.lock();
                match entry.consumer.as_mut() {
                    Some(cg) => cg
                        .classic_heartbeat(member_id, instance, generation, Instant::now())
                        .map_or_else(|e| e.code(), |()| NONE),
                    None => entry
                        .group
                        .heartbeat(member_id, instance, generation, Instant::now()),
                }
            }
        }
    }

    /// LeaveGroup for each (member id, instance id): an error code per member, or the error
    /// for the whole request.
    pub async fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, ResponseError> {
        self.check_coordinator(group_id)?;
        let Some(handle) = self.group(group_id) else {
            // Kafka: an unknown group has none of these members.
            return Ok(vec![ResponseError::UnknownMemberId.code(); members.len()]);
        };
        let mut results = Vec::with_capacity(members.len());
        let mut written = Vec::new();
        {
            let mut entry = handle.lock();
            if let Some(cg) = entry.consumer.as_mut() {
                let (codes, records) = self.classic_leave_from_consumer(cg, members);
                if !records.is_empty() {
                    let records: Vec<_> = records.iter().map(|r| r.encode(group_id)).collect();
                    written.push(self.append(group_id, &records));
                }
                results = codes;
            } else {
                for (member, instance) in members {
                    let (error, persist) = entry.group.leave(
                        member,
                        instance.as_deref(),
                        self.timing(),
                        Instant::now(),
                        now_ms(),
                    );
                    if let Some(v) = persist {
                        written.push(self.append(group_id, &[Self::group_record(group_id, &v)]));
                    }
                    results.push(error);
                }
            }
        }
        for w in written.into_iter().flatten() {
            let _ = self.replicated(&w).await;
        }
        Ok(results)
    }

    /// ListGroups, optionally filtered by state names and group types (lowercase).
    pub fn list(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        let mut groups: Vec<ListedGroup> = self
            .all_groups()
            .into_iter()
            .filter_map(|(id, h)| {
                let e = h.lock();
                let g = &e.group;
                if g.state == GroupState::Dead {
                    return None;
                }
                let (state, protocol_type, group_type) = match Self::consumer_state(&e) {
                    Some(s) => (s.name(), "consumer".to_string(), "consumer"),
                    None => (
                        g.state.name(),
                        g.protocol_type.clone().unwrap_or_default(),
                        "classic",
                    ),
                };
                if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                    return None;
                }
                if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                    return None;
                }
                Some(ListedGroup {
                    group_id: id,
                    protocol_type,
                    state,
                    group_type,
                })
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// DescribeGroups for one group: `Ok(None)` when this coordinator does not know it.
    pub fn describe(&self, group_id: &str) -> Result<Option<DescribedGroup>, ResponseError> {
        self.check_coordinator(group_id)?;
        let Some(h) = self.group(group_id) else {
            return Ok(None);
        };
        let e = h.lock();
        if e.consumer.is_some() {
            return Err(ResponseError::GroupIdNotFound);
        }
        let g = &e.group;
        let stable = g.state == GroupState::Stable;
        let members = g
            .members()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: g
                    .protocol
                    .as_deref()
                    .map(|p| m.metadata_for(p))
                    .unwrap_or_default(),
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        Ok(Some(DescribedGroup {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members,
        }))
    }

    /// DeleteGroups for one group: the error code.
    pub async fn delete_group(&self, group_id: &str) -> i16 {
        if let Err(e) = self.check_coordinator(group_id) {
            return e.code();
        }
        let Some(h) = self.group(group_id) else {
            return ResponseError::GroupIdNotFound.code();
        };
        let written = {
            let mut e = h.lock();
            if e.consumer.as_ref().is_some_and(|c| !c.is_empty()) {
                return ResponseError::NonEmptyGroup.code();
            }
            if let Err(err) = e.group.mark_dead(now_ms()) {
                return err.code();
            }
            let consumer_tombstones: Vec<(Bytes, Option<Bytes>)> = e
                .consumer
                .take()
                .filter(|c| c.stored)
                .map(|c| c.tombstones().iter().map(|r| r.encode(group_id)).collect())
                .unwrap_or_default();
            let mut tombstones: Vec<(Bytes, Option<Bytes>)> = e
                .offsets
                .keys()
                .map(|(t, p)| {
                    let key = RecordKey::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                    };
                    (key.encode(), None)
                })
                .collect();
            let key = RecordKey::Group {
                group: group_id.to_string(),
            };
            tombstones.push((key.encode(), None));
            tombstones.extend(consumer_tombstones);
            e.offsets.clear();
            self.append(group_id, &tombstones)
        };
        match written {
            Ok(w) => {
                self.groups.lock().remove(group_id);
                match self.replicated(&w).await {
                    Ok(()) => NONE,
                    Err(e) => e.code(),
                }
            }
            Err(e) => e.code(),
        }
    }

    /// Timeouts of every group (sessions, join and sync phases), persisting what changed.
    pub fn tick(&self) {
        self.tick_consumer_groups();
        let now = Instant::now();
        let now_wall = now_ms();
        let timing = self.timing();
        for (id, handle) in self.all_groups() {
            let mut entry = handle.lock();
            if let Some(value) = entry.group.tick(timing, now, now_wall) {
                if let Err(e) = self.append(&id, &[Self::group_record(&id, &value)]) {
                    tracing::warn!(group = %id, error = ?e, "storing group metadata failed");
                }
            }
        }
    }
}
