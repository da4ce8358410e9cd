//! ConsumerGroupHeartbeat on a consumer group, as Kafka's `GroupMetadataManager` runs it:
//! (1) the member joins or updates its subscription, which bumps the group epoch when the
//! subscriptions or the subscribed topics (partition counts) changed; (2) a group epoch past
//! the assignment epoch computes a new target assignment; (3) the member takes one
//! reconciliation step. Leaving (epoch -1), a static member's temporary leave (epoch -2),
//! and the session and rebalance timeouts fence members. Each change comes back as the
//! records that persist it, in Kafka's order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;

use super::assignor::{self, AssignorMember};
use super::reconcile::reconcile;
use super::records::{ConsumerRecord, MemberMetadataValue, TopicMetadata};
use super::{
    ConsumerGroup, ConsumerMember, MemberState, MemberTimers, TopicPartitions,
    LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};

/// An error to answer with, and its message.
pub type HeartbeatError = (ResponseError, String);

/// The subscribable topics (the metadata image).
pub trait Topics {
    fn lookup(&self, name: &str) -> Option<TopicMetadata>;
    fn names(&self) -> Vec<String>;
    /// A topic's name by id.
    fn name_of(&self, id: uuid::Uuid) -> Option<String>;
}

impl Topics for crate::meta::image::MetadataImage {
    fn lookup(&self, name: &str) -> Option<TopicMetadata> {
        self.topic(name).map(|t| TopicMetadata {
            topic_id: t.topic_id,
            name: t.name.clone(),
            partitions: t.partitions.len() as i32,
        })
    }

    fn names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    fn name_of(&self, id: uuid::Uuid) -> Option<String> {
        self.topic_by_id(&id).map(|t| t.name.clone())
    }
}

/// The coordinator settings a heartbeat needs.
pub struct HeartbeatSettings<'a> {
    pub session_timeout: Duration,
    pub max_size: usize,
    /// The first of `group.consumer.assignors`: used when no member names one.
    pub default_assignor: &'a str,
}

/// A ConsumerGroupHeartbeat, already validated.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
}

/// What the member is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Option<TopicPartitions>,
}

fn invalid(msg: &str) -> HeartbeatError {
    (ResponseError::InvalidRequest, msg.to_string())
}

/// Kafka's request checks, before the group is looked at. `version` is the request's.
pub fn validate(
    hb: &Heartbeat,
    version: i16,
    group_id: &str,
    assignors: &[&str],
) -> Result<(), HeartbeatError> {
    if group_id.is_empty() {
        return Err(invalid("GroupId can't be empty."));
    }
    if hb.instance_id.as_deref() == Some("") {
        return Err(invalid("InstanceId can't be empty."));
    }
    if hb.rack_id.as_deref() == Some("") {
        return Err(invalid("RackId can't be empty."));
    }
    if version >= 1 && hb.member_id.is_empty() {
        return Err(invalid("MemberId can't be empty."));
    }
    match hb.member_epoch {
        e if e > 0 || e == LEAVE_GROUP_MEMBER_EPOCH => {
            if hb.member_id.is_empty() {
                return Err(invalid("MemberId can't be empty."));
            }
        }
        0 => {
            if hb.rebalance_timeout_ms == -1 {
                return Err(invalid(
                    "RebalanceTimeoutMs must be provided in first request.",
                ));
            }
            if hb.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                return Err(invalid("TopicPartitions must be empty when (re-)joining."));
            }
            let names = hb
                .subscribed_topic_names
                .as_ref()
                .is_some_and(|n| !n.is_empty());
            let regex = hb
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|r| !r.is_empty());
            if !names && !regex {
                return Err(invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                ));
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
            if hb.member_id.is_empty() {
                return Err(invalid("MemberId can't be empty."));
            }
            if hb.instance_id.is_none() {
                return Err(invalid("InstanceId can't be null."));
            }
        }
        _ => return Err(invalid("MemberEpoch is invalid.")),
    }
    if let Some(a) = &hb.server_assignor {
        if !assignors.contains(&a.as_str()) {
            return Err((
                ResponseError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    assignors.join(", ")
                ),
            ));
        }
    }
    if let Some(r) = &hb.subscribed_topic_regex {
        if let Err(e) = compile_regex(r) {
            return Err((
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{r}` is not a valid regular expression: {e}."),
            ));
        }
    }
    Ok(())
}

/// A subscription pattern, matched against whole topic names as RE2J's `matches()` does.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

fn fenced(msg: String) -> HeartbeatError {
    (ResponseError::FencedMemberEpoch, msg)
}

/// Whether every partition the member reports is in `assigned`.
fn is_subset(owned: Option<&TopicPartitions>, assigned: &TopicPartitions) -> bool {
    let Some(owned) = owned else {
        return false;
    };
    owned
        .iter()
        .all(|(t, parts)| parts.is_empty() || assigned.get(t).is_some_and(|a| parts.is_subset(a)))
}

fn check_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&TopicPartitions>,
) -> Result<(), HeartbeatError> {
    if received > member.member_epoch {
        return Err(fenced(format!(
            "The consumer group member has a greater member epoch ({received}) than the one known \
             by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
            member.member_epoch
        )));
    }
    // The previous epoch is accepted: the answer that bumped it may have been lost.
    if received < member.member_epoch
        && (received != member.previous_member_epoch || !is_subset(owned, &member.assigned))
    {
        return Err(fenced(format!(
            "The consumer group member has a smaller member epoch ({received}) than the one known \
             by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
            member.member_epoch
        )));
    }
    Ok(())
}

impl ConsumerGroup {
    /// The topic names a member's subscription resolves to (listed names and regex matches).
    fn resolved_topics(sub: &MemberMetadataValue, all: &[String]) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = sub.subscribed_topic_names.iter().cloned().collect();
        if let Some(r) = sub
            .subscribed_topic_regex
            .as_deref()
            .filter(|r| !r.is_empty())
        {
            if let Ok(re) = compile_regex(r) {
                out.extend(all.iter().filter(|t| re.is_match(t)).cloned());
            }
        }
        out
    }

    /// Every member's resolved topics, with `updated` standing in for its id.
    pub(super) fn subscriptions(
        &self,
        updated: Option<&ConsumerMember>,
        topics: &dyn Topics,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let needs_names = self
            .members
            .values()
            .chain(updated)
            .any(|m| m.subscription.subscribed_topic_regex.is_some());
        let all = if needs_names {
            topics.names()
        } else {
            Vec::new()
        };
        let mut out: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), Self::resolved_topics(&m.subscription, &all)))
            .collect();
        if let Some(u) = updated {
            out.insert(
                u.member_id.clone(),
                Self::resolved_topics(&u.subscription, &all),
            );
        }
        out
    }

    fn subscription_metadata_of(
        subs: &BTreeMap<String, BTreeSet<String>>,
        topics: &dyn Topics,
    ) -> BTreeMap<String, TopicMetadata> {
        let names: BTreeSet<&String> = subs.values().flatten().collect();
        names
            .into_iter()
            .filter_map(|n| topics.lookup(n).map(|t| (n.clone(), t)))
            .collect()
    }

    /// Records a new subscription metadata if it changed; whether it did.
    pub(super) fn refresh_subscription_metadata(
        &mut self,
        subs: &BTreeMap<String, BTreeSet<String>>,
        topics: &dyn Topics,
        records: &mut Vec<ConsumerRecord>,
    ) -> bool {
        let metadata = Self::subscription_metadata_of(subs, topics);
        if metadata == self.subscription_metadata {
            return false;
        }
        records.push(ConsumerRecord::PartitionMetadata(Some(
            metadata.values().cloned().collect(),
        )));
        self.subscription_metadata = metadata;
        true
    }

    pub(super) fn bump_group_epoch(&mut self, records: &mut Vec<ConsumerRecord>) {
        self.group_epoch += 1;
        records.push(ConsumerRecord::GroupEpoch(Some(self.group_epoch)));
    }

    /// Computes the target assignment for the group epoch (Kafka's TargetAssignmentBuilder),
    /// recording what changed.
    pub(super) fn update_target(
        &mut self,
        subs: &BTreeMap<String, BTreeSet<String>>,
        default_assignor: &str,
        records: &mut Vec<ConsumerRecord>,
    ) {
        let assignor = self
            .preferred_assignor()
            .unwrap_or_else(|| default_assignor.to_string());
        let members: Vec<AssignorMember<'_>> = subs
            .iter()
            .map(|(id, topics)| AssignorMember {
                member_id: id,
                topics: topics.iter().map(String::as_str).collect(),
            })
            .collect();
        let target = assignor::assign(
            &assignor,
            &members,
            &self.subscription_metadata,
            &self.target,
        );
        let mut changed: Vec<(&String, &TopicPartitions)> = target
            .iter()
            .filter(|(id, a)| self.target.get(*id).map_or(!a.is_empty(), |old| old != *a))
            .collect();
        changed.sort_by_key(|(id, _)| *id);
        for (id, a) in changed {
            records.push(ConsumerRecord::TargetMember(id.clone(), Some(a.clone())));
        }
        records.push(ConsumerRecord::TargetEpoch(Some(self.group_epoch)));
        self.target = target;
        self.assignment_epoch = self.group_epoch;
    }

    /// ConsumerGroupHeartbeat for a member joining or in the group (epoch >= 0). The caller
    /// put `hb` through [`validate`] and made sure the group is a consumer group.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        hb: Heartbeat,
        topics: &dyn Topics,
        settings: &HeartbeatSettings<'_>,
        now: Instant,
    ) -> Result<(HeartbeatReply, Vec<ConsumerRecord>), HeartbeatError> {
        if hb.member_epoch < 0 {
            return self.leave(group_id, &hb, topics);
        }
        let joining = hb.member_epoch == 0;
        if self.members.len() >= settings.max_size
            && (hb.member_id.is_empty() || !self.members.contains_key(&hb.member_id))
        {
            return Err((
                ResponseError::GroupMaxSizeReached,
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    settings.max_size
                ),
            ));
        }
        let member_id = if hb.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            hb.member_id.clone()
        };
        let mut records = Vec::new();
        let owned = hb.owned.as_ref();
        let member = match &hb.instance_id {
            None => match self.members.get(&member_id) {
                Some(m) => {
                    check_epoch(m, hb.member_epoch, owned)?;
                    m.clone()
                }
                None if joining => ConsumerMember::new(&member_id),
                None => {
                    return Err((
                        ResponseError::UnknownMemberId,
                        format!("Member {member_id} is not a member of group {group_id}."),
                    ))
                }
            },
            Some(instance) => self.static_member_for(
                group_id,
                &member_id,
                instance,
                hb.member_epoch,
                owned,
                &mut records,
            )?,
        };
        // 1. The member's subscription.
        let mut updated = member.clone();
        let sub = &mut updated.subscription;
        if hb.instance_id.is_some() {
            sub.instance_id = hb.instance_id.clone();
        }
        if hb.rack_id.is_some() {
            sub.rack_id = hb.rack_id.clone();
        }
        if hb.rebalance_timeout_ms != -1 {
            sub.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if hb.server_assignor.is_some() {
            sub.server_assignor = hb.server_assignor.clone();
        }
        if let Some(names) = &hb.subscribed_topic_names {
            sub.subscribed_topic_names = names.clone();
        }
        if let Some(r) = &hb.subscribed_topic_regex {
            sub.subscribed_topic_regex = (!r.is_empty()).then(|| r.clone());
        }
        sub.client_id = hb.client_id.clone();
        sub.client_host = hb.client_host.clone();
        let mut bump = false;
        if updated.subscription != member.subscription || !self.members.contains_key(&member_id) {
            records.push(ConsumerRecord::MemberMetadata(
                member_id.clone(),
                Some(updated.subscription.clone()),
            ));
            bump = updated.subscription.subscribed_topic_names
                != member.subscription.subscribed_topic_names
                || updated.subscription.subscribed_topic_regex
                    != member.subscription.subscribed_topic_regex;
        }
        // The group epoch also moves when a subscribed topic appeared, went or grew.
        let subs = self.subscriptions(Some(&updated), topics);
        bump |= self.refresh_subscription_metadata(&subs, topics, &mut records);
        if bump {
            self.bump_group_epoch(&mut records);
        }
        // The member is in from here on (its subscription counts for the assignor).
        let before = self.members.get(&member_id).cloned();
        self.put_member(updated.clone());
        // 2. The target assignment.
        if self.group_epoch > self.assignment_epoch {
            self.update_target(&subs, settings.default_assignor, &mut records);
        }
        // 3. One reconciliation step.
        if !updated.is_reconciled_to(self.assignment_epoch) {
            let empty = TopicPartitions::new();
            let target = self.target.get(&member_id).unwrap_or(&empty);
            let next = reconcile(
                &updated,
                self.assignment_epoch,
                target,
                |t, p| self.partition_epoch(t, p),
                owned,
            );
            if next != updated {
                records.push(ConsumerRecord::CurrentAssignment(
                    member_id.clone(),
                    Some(next.current_assignment()),
                ));
                let timers = self
                    .timers
                    .entry(member_id.clone())
                    .or_insert(MemberTimers {
                        session_deadline: now + settings.session_timeout,
                        rebalance_deadline: None,
                    });
                timers.rebalance_deadline =
                    (next.state == MemberState::UnrevokedPartitions).then(|| {
                        let ms = next.subscription.rebalance_timeout_ms.max(0) as u64;
                        (now + Duration::from_millis(ms), next.member_epoch)
                    });
                updated = next;
                self.put_member(updated.clone());
            }
        }
        let timers = self
            .timers
            .entry(member_id.clone())
            .or_insert(MemberTimers {
                session_deadline: now,
                rebalance_deadline: None,
            });
        timers.session_deadline = now + settings.session_timeout;
        let full = joining
            || (hb.rebalance_timeout_ms != -1
                && hb.subscribed_topic_names.is_some()
                && hb.owned.is_some());
        let changed = before.is_none_or(|b| b.assigned != updated.assigned);
        Ok((
            HeartbeatReply {
                member_id,
                member_epoch: updated.member_epoch,
                assignment: (full || changed).then(|| updated.assigned.clone()),
            },
            records,
        ))
    }

    /// The member a static member's heartbeat is for: a new one, the one rejoining in place
    /// of the instance's previous member (which must have left with epoch -2), or the current.
    fn static_member_for(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: &str,
        epoch: i32,
        owned: Option<&TopicPartitions>,
        records: &mut Vec<ConsumerRecord>,
    ) -> Result<ConsumerMember, HeartbeatError> {
        let existing = self.static_member(instance).cloned();
        if epoch == 0 {
            let Some(old) = existing else {
                return Ok(self
                    .members
                    .get(member_id)
                    .cloned()
                    .unwrap_or_else(|| ConsumerMember::new(member_id)));
            };
            if old.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                return Err((
                    ResponseError::UnreleasedInstanceId,
                    format!(
                        "Static member {member_id} with instance id {instance} cannot join the \
                         group because the instance id is owned by {} member.",
                        old.member_id
                    ),
                ));
            }
            // The new member takes over the instance's assignment and target.
            let mut new = old.clone();
            new.member_id = member_id.to_string();
            new.member_epoch = 0;
            new.previous_member_epoch = 0;
            let target = self.target.get(&old.member_id).cloned().unwrap_or_default();
            records.push(ConsumerRecord::CurrentAssignment(
                old.member_id.clone(),
                None,
            ));
            records.push(ConsumerRecord::TargetMember(old.member_id.clone(), None));
            records.push(ConsumerRecord::MemberMetadata(old.member_id.clone(), None));
            self.remove_member(&old.member_id);
            records.push(ConsumerRecord::MemberMetadata(
                member_id.to_string(),
                Some(new.subscription.clone()),
            ));
            records.push(ConsumerRecord::TargetMember(
                member_id.to_string(),
                Some(target.clone()),
            ));
            records.push(ConsumerRecord::CurrentAssignment(
                member_id.to_string(),
                Some(new.current_assignment()),
            ));
            self.target.insert(member_id.to_string(), target);
            self.put_member(new.clone());
            let _ = group_id;
            return Ok(new);
        }
        let Some(member) = existing else {
            return Err((
                ResponseError::UnknownMemberId,
                format!("Instance id {instance} is unknown."),
            ));
        };
        if member.member_id != member_id {
            return Err((
                ResponseError::FencedInstanceId,
                format!(
                    "Static member {member_id} with instance id {instance} was fenced by member {}.",
                    member.member_id
                ),
            ));
        }
        check_epoch(&member, epoch, owned)?;
        Ok(member)
    }

    /// A heartbeat with epoch -1 (leave) or -2 (a static member leaving for now).
    fn leave(
        &mut self,
        group_id: &str,
        hb: &Heartbeat,
        topics: &dyn Topics,
    ) -> Result<(HeartbeatReply, Vec<ConsumerRecord>), HeartbeatError> {
        let reply = |epoch: i32| HeartbeatReply {
            member_id: hb.member_id.clone(),
            member_epoch: epoch,
            assignment: None,
        };
        let Some(instance) = &hb.instance_id else {
            if !self.members.contains_key(&hb.member_id) {
                return Err((
                    ResponseError::UnknownMemberId,
                    format!(
                        "Member {} is not a member of group {group_id}.",
                        hb.member_id
                    ),
                ));
            }
            return Ok((reply(hb.member_epoch), self.fence(&hb.member_id, topics)));
        };
        let Some(member) = self.static_member(instance).cloned() else {
            return Err((
                ResponseError::UnknownMemberId,
                format!("Instance id {instance} is unknown."),
            ));
        };
        if member.member_id != hb.member_id {
            return Err((
                ResponseError::FencedInstanceId,
                format!(
                    "Static member {} with instance id {instance} was fenced by member {}.",
                    hb.member_id, member.member_id
                ),
            ));
        }
        if hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            let mut leaving = member;
            leaving.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            leaving.pending_revocation.clear();
            let record = ConsumerRecord::CurrentAssignment(
                leaving.member_id.clone(),
                Some(leaving.current_assignment()),
            );
            if let Some(t) = self.timers.get_mut(&leaving.member_id) {
                t.rebalance_deadline = None;
            }
            self.put_member(leaving);
            return Ok((reply(LEAVE_GROUP_STATIC_MEMBER_EPOCH), vec![record]));
        }
        Ok((reply(hb.member_epoch), self.fence(&hb.member_id, topics)))
    }

    /// Removes a member (it left, or its session or rebalance timed out) and bumps the group
    /// epoch so the others get its partitions. `topics` refreshes the subscription metadata.
    pub fn fence(&mut self, member_id: &str, topics: &dyn Topics) -> Vec<ConsumerRecord> {
        let mut records = vec![
            ConsumerRecord::CurrentAssignment(member_id.to_string(), None),
            ConsumerRecord::TargetMember(member_id.to_string(), None),
            ConsumerRecord::MemberMetadata(member_id.to_string(), None),
        ];
        self.remove_member(member_id);
        let subs = self.subscriptions(None, topics);
        self.refresh_subscription_metadata(&subs, topics, &mut records);
        self.bump_group_epoch(&mut records);
        records
    }

    /// Members whose session or rebalance timeout passed, to be fenced.
    pub fn expired_members(&self, now: Instant) -> Vec<String> {
        self.timers
            .iter()
            .filter(|(id, t)| {
                t.session_deadline <= now
                    || t.rebalance_deadline.is_some_and(|(d, epoch)| {
                        d <= now
                            && self
                                .members
                                .get(*id)
                                .is_some_and(|m| m.member_epoch == epoch)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Starts every member's session timer (a coordinator that just loaded the group).
    pub fn start_timers(&mut self, now: Instant, session_timeout: Duration) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.timers.insert(
                id,
                MemberTimers {
                    session_deadline: now + session_timeout,
                    rebalance_deadline: None,
                },
            );
        }
    }
}
