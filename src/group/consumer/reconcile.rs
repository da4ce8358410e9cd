//! One reconciliation step of a member towards its target assignment (Kafka's
//! `CurrentAssignmentBuilder`): it keeps the partitions it retains, must first revoke those
//! it loses (staying in its epoch until its heartbeat no longer reports them), and gets new
//! partitions only once their previous owners released them.

use uuid::Uuid;

use super::{ConsumerMember, MemberState, TopicPartitions};

/// What the member's heartbeat says it owns (None when the heartbeat left it out).
pub type Owned<'a> = Option<&'a TopicPartitions>;

/// Whether the member still reports owning any of `revoking`. Unknown ownership counts as yes.
fn owns_any(owned: Owned<'_>, revoking: &TopicPartitions) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|(t, parts)| {
        revoking
            .get(t)
            .is_some_and(|r| parts.iter().any(|p| r.contains(p)))
    })
}

/// The member after one step towards `target` (in `target_epoch`). `partition_epoch` tells
/// whether a partition is still held by someone (not -1).
pub fn reconcile(
    member: &ConsumerMember,
    target_epoch: i32,
    target: &TopicPartitions,
    partition_epoch: impl Fn(Uuid, i32) -> i32,
    owned: Owned<'_>,
) -> ConsumerMember {
    match member.state {
        MemberState::Stable => {
            if member.member_epoch != target_epoch {
                next_assignment(
                    member,
                    member.member_epoch,
                    target_epoch,
                    target,
                    &partition_epoch,
                    owned,
                )
            } else {
                member.clone()
            }
        }
        MemberState::UnrevokedPartitions => {
            if owns_any(owned, &member.pending_revocation) {
                return member.clone();
            }
            next_assignment(
                member,
                member.member_epoch + 1,
                target_epoch,
                target,
                &partition_epoch,
                owned,
            )
        }
        MemberState::UnreleasedPartitions => next_assignment(
            member,
            member.member_epoch,
            target_epoch,
            target,
            &partition_epoch,
            owned,
        ),
        // Only from a newer coordinator's records; the caller fences such a member.
        MemberState::Unknown => next_assignment(
            member,
            target_epoch,
            target_epoch,
            target,
            &partition_epoch,
            owned,
        ),
    }
}

fn next_assignment(
    member: &ConsumerMember,
    member_epoch: i32,
    target_epoch: i32,
    target: &TopicPartitions,
    partition_epoch: &impl Fn(Uuid, i32) -> i32,
    owned: Owned<'_>,
) -> ConsumerMember {
    let mut unreleased = false;
    let mut assigned = TopicPartitions::new();
    let mut revoking = TopicPartitions::new();
    let mut adding = TopicPartitions::new();
    let topics: std::collections::BTreeSet<Uuid> = target
        .keys()
        .chain(member.assigned.keys())
        .copied()
        .collect();
    let empty = Default::default();
    for t in topics {
        let want = target.get(&t).unwrap_or(&empty);
        let has = member.assigned.get(&t).unwrap_or(&empty);
        let keep: std::collections::BTreeSet<i32> = has.intersection(want).copied().collect();
        let revoke: std::collections::BTreeSet<i32> = has.difference(&keep).copied().collect();
        let mut add: std::collections::BTreeSet<i32> = want.difference(&keep).copied().collect();
        let before = add.len();
        add.retain(|p| partition_epoch(t, *p) == -1);
        unreleased |= add.len() != before;
        if !keep.is_empty() {
            assigned.insert(t, keep);
        }
        if !revoke.is_empty() {
            revoking.insert(t, revoke);
        }
        if !add.is_empty() {
            adding.insert(t, add);
        }
    }
    let mut next = member.clone();
    if !revoking.is_empty() && owns_any(owned, &revoking) {
        next.state = MemberState::UnrevokedPartitions;
        next.update_epoch(member_epoch);
        next.assigned = assigned;
        next.pending_revocation = revoking;
        return next;
    }
    for (t, parts) in adding {
        assigned.entry(t).or_default().extend(parts);
    }
    next.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    next.update_epoch(target_epoch);
    next.assigned = assigned;
    next.pending_revocation = TopicPartitions::new();
    next
}
