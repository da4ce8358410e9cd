//! Share groups' membership (KIP-932), on the group coordinator: members join, heartbeat and
//! leave through ShareGroupHeartbeat, each with a member epoch; the group epoch moves on every
//! change of membership, subscriptions or the subscribed topics' partitions. The assignment is
//! Kafka's SimpleAssignor for share groups: every member gets every partition of the topics it
//! subscribes to (records, not partitions, are what share consumers divide). A member not
//! heard from for `group.share.session.timeout.ms` is removed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use parking_lot::Mutex;

/// A member's assignment: topic name -> partitions (sorted).
pub type Assignment = BTreeMap<String, Vec<i32>>;

#[derive(Debug, Clone)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub assignment: Assignment,
    last_heartbeat: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct ShareGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
}

impl ShareGroup {
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }
}

/// One ShareGroupHeartbeat, as the coordinator needs it.
pub struct Heartbeat<'a> {
    pub group: &'a str,
    pub member_id: &'a str,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer: the member's epoch and, when it changed, its assignment.
#[derive(Debug, PartialEq)]
pub struct HeartbeatResult {
    pub member_epoch: i32,
    pub assignment: Option<Assignment>,
}

pub const LEAVE_EPOCH: i32 = -1;

pub struct ShareGroups {
    groups: Mutex<HashMap<String, ShareGroup>>,
    session_timeout: Duration,
    max_size: usize,
}

impl ShareGroups {
    pub fn new(session_timeout: Duration, max_size: usize) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            session_timeout,
            max_size,
        }
    }

    /// Handles a heartbeat. `partitions` gives the partition count of a topic that exists.
    pub fn heartbeat(
        &self,
        hb: Heartbeat<'_>,
        partitions: impl Fn(&str) -> Option<i32>,
    ) -> Result<HeartbeatResult, ResponseError> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups.entry(hb.group.to_string()).or_default();
        self.expire(group, now);
        if hb.member_epoch == LEAVE_EPOCH {
            if group.members.remove(hb.member_id).is_none() {
                return Err(ResponseError::UnknownMemberId);
            }
            group.group_epoch += 1;
            return Ok(HeartbeatResult {
                member_epoch: LEAVE_EPOCH,
                assignment: None,
            });
        }
        let joining = hb.member_epoch == 0;
        if joining {
            if !group.members.contains_key(hb.member_id) && group.members.len() >= self.max_size {
                return Err(ResponseError::GroupMaxSizeReached);
            }
            let subscribed = hb.subscribed.clone().unwrap_or_default();
            let member = ShareMember {
                member_id: hb.member_id.to_string(),
                member_epoch: 0,
                rack_id: hb.rack_id.clone(),
                client_id: hb.client_id.clone(),
                client_host: hb.client_host.clone(),
                subscribed,
                assignment: Assignment::new(),
                last_heartbeat: now,
            };
            group.members.insert(hb.member_id.to_string(), member);
            group.group_epoch += 1;
        }
        let group_epoch = group.group_epoch;
        let Some(member) = group.members.get_mut(hb.member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if !joining && hb.member_epoch != member.member_epoch {
            return Err(ResponseError::FencedMemberEpoch);
        }
        member.last_heartbeat = now;
        if let Some(rack) = hb.rack_id {
            member.rack_id = Some(rack);
        }
        let mut bump = false;
        if let Some(mut subscribed) = hb.subscribed {
            subscribed.sort();
            subscribed.dedup();
            let mut current = member.subscribed.clone();
            current.sort();
            if subscribed != current {
                member.subscribed = subscribed;
                bump = true;
            }
        }
        let target: Assignment = member
            .subscribed
            .iter()
            .filter_map(|t| partitions(t).map(|n| (t.clone(), (0..n).collect())))
            .collect();
        let changed = joining || target != member.assignment;
        let mut epoch = group_epoch;
        if changed && !joining {
            bump = true;
        }
        if bump {
            epoch += 1;
        }
        member.assignment = target.clone();
        if changed || bump {
            member.member_epoch = epoch;
        }
        let member_epoch = member.member_epoch;
        group.group_epoch = epoch;
        group.assignment_epoch = epoch;
        Ok(HeartbeatResult {
            member_epoch,
            assignment: (changed || bump).then_some(target),
        })
    }

    /// Removes members whose session timed out.
    fn expire(&self, group: &mut ShareGroup, now: Instant) {
        let before = group.members.len();
        group
            .members
            .retain(|_, m| now.duration_since(m.last_heartbeat) < self.session_timeout);
        if group.members.len() != before {
            group.group_epoch += 1;
        }
    }

    /// The group, if it exists (after removing expired members).
    pub fn describe(&self, group: &str) -> Option<ShareGroup> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group)?;
        self.expire(g, Instant::now());
        Some(g.clone())
    }

    /// The topics the group's members subscribe to.
    pub fn subscribed_topics(&self, group: &str) -> Vec<String> {
        let groups = self.groups.lock();
        let mut out: Vec<String> = groups
            .get(group)
            .map(|g| {
                g.members
                    .values()
                    .flat_map(|m| m.subscribed.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// Every share group known here, with its state.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        groups
            .iter_mut()
            .map(|(id, g)| {
                self.expire(g, now);
                (id.clone(), g.state())
            })
            .collect()
    }

    /// Whether the group has members (offsets may be altered only when it has none).
    pub fn has_members(&self, group: &str) -> bool {
        self.describe(group).is_some_and(|g| !g.members.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb<'a>(member: &'a str, epoch: i32, topics: Option<&[&str]>) -> Heartbeat<'a> {
        Heartbeat {
            group: "g",
            member_id: member,
            member_epoch: epoch,
            rack_id: None,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            client_id: "c".into(),
            client_host: "/h".into(),
        }
    }

    #[test]
    fn join_heartbeat_fence_leave() {
        let g = ShareGroups::new(Duration::from_secs(45), 10);
        let parts = |t: &str| (t == "t").then_some(3);
        let r = g
            .heartbeat(hb("a", 0, Some(&["t", "missing"])), parts)
            .unwrap();
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.assignment.unwrap()["t"], vec![0, 1, 2]);
        let r = g.heartbeat(hb("b", 0, Some(&["t"])), parts).unwrap();
        assert_eq!(r.member_epoch, 2);
        // a keeps its epoch: its assignment did not change.
        let r = g.heartbeat(hb("a", 1, None), parts).unwrap();
        assert_eq!(
            r,
            HeartbeatResult {
                member_epoch: 1,
                assignment: None
            }
        );
        assert_eq!(
            g.heartbeat(hb("a", 7, None), parts).err(),
            Some(ResponseError::FencedMemberEpoch)
        );
        assert_eq!(
            g.heartbeat(hb("zz", 3, None), parts).err(),
            Some(ResponseError::UnknownMemberId)
        );
        // New partitions: a new epoch and assignment.
        let r = g.heartbeat(hb("a", 1, None), |_| Some(4)).unwrap();
        assert_eq!(r.member_epoch, 3);
        assert_eq!(r.assignment.unwrap()["t"].len(), 4);
        assert_eq!(
            g.heartbeat(hb("b", -1, None), parts).unwrap().member_epoch,
            -1
        );
        assert_eq!(g.describe("g").unwrap().members.len(), 1);
    }
}
