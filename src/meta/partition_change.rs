//! Partition changes computed as Kafka's `PartitionChangeBuilder` computes them: from a
//! partition's current state and a target (replicas, ISR, adding and removing replicas, and an
//! election kind) to its next state. Three rules live here and nowhere else:
//!
//! - **Completing a reassignment.** While replicas are being added or removed, the partition's
//!   replica set is the target followed by the replicas being removed. Once the ISR without the
//!   removed replicas still holds every remaining replica, the removed ones leave the replica
//!   set and the ISR, and the reassignment is over (Kafka's `maybeCompleteReassignment`).
//! - **Leader election.** Online: keep a leader that is live and in the ISR, else the first
//!   live ISR member in replica order. Preferred: the first replica if it is live and in the
//!   ISR, else as online. Unclean: as online, then the first live replica outside the ISR,
//!   which becomes the whole ISR.
//! - **Epochs.** Every change bumps the partition epoch; a new leader, or a replica set that
//!   lost members, bumps the leader epoch (so removed replicas are fenced).
//!
//! The controller's callers (ElectLeaders, AlterPartitionReassignments, the state machine when
//! an ISR change completes a reassignment) build on this; the image applies the result.

use super::image::PartitionImage;

/// How the leader is chosen (Kafka's `PartitionChangeBuilder.Election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Keep a valid leader; else the first live ISR member in replica order.
    Online,
    /// The first replica if it is live and in the ISR; else as `Online`.
    Preferred,
    /// As `Online`; with no live ISR member, the first live replica (possible data loss).
    Unclean,
}

/// The target state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
    pub election: Election,
}

/// The replica set, adding and removing lists that a reassignment of `current` replicas to
/// `target` starts with (Kafka's `PartitionReassignmentReplicas`): the target followed by the
/// replicas being removed, in their current order.
pub fn reassignment_replicas(current: &[i32], target: &[i32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut removing: Vec<i32> = current
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    removing.sort_unstable();
    let mut adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !current.contains(r))
        .collect();
    adding.sort_unstable();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    (replicas, adding, removing)
}

impl PartitionChange {
    /// No change yet: the partition's current state, online election.
    pub fn of(p: &PartitionImage) -> Self {
        Self {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
            election: Election::Online,
        }
    }

    pub fn with_election(mut self, election: Election) -> Self {
        self.election = election;
        self
    }

    /// Finishes the reassignment if the target ISR allows it.
    fn complete_reassignment_if_needed(&mut self) {
        if self.adding.is_empty() && self.removing.is_empty() {
            return;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect();
        let replicas: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect();
        if isr.is_empty() || replicas.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
            return;
        }
        self.isr = isr;
        self.replicas = replicas;
        self.adding.clear();
        self.removing.clear();
    }

    /// The leader this change elects, and whether the election is unclean.
    fn elect(&self, current: &PartitionImage, is_live: &impl Fn(i32) -> bool) -> (i32, bool) {
        let valid = |r: i32| r >= 0 && self.isr.contains(&r) && is_live(r);
        if self.election == Election::Preferred {
            if let Some(&first) = self.replicas.first() {
                if valid(first) {
                    return (first, false);
                }
            }
        }
        if valid(current.leader) {
            return (current.leader, false);
        }
        if let Some(r) = self.replicas.iter().copied().find(|r| valid(*r)) {
            return (r, false);
        }
        if self.election == Election::Unclean {
            if let Some(r) = self.replicas.iter().copied().find(|r| is_live(*r)) {
                return (r, true);
            }
        }
        (-1, false)
    }

    /// The partition after this change, or `None` when nothing would change.
    pub fn build(
        mut self,
        current: &PartitionImage,
        is_live: impl Fn(i32) -> bool,
    ) -> Option<PartitionImage> {
        self.complete_reassignment_if_needed();
        let (leader, unclean) = self.elect(current, &is_live);
        if unclean {
            self.isr = vec![leader];
        }
        // Without eligible leader replicas (KIP-966), Kafka never empties the ISR.
        let isr = if self.isr.is_empty() {
            current.isr.clone()
        } else {
            self.isr
        };
        let mut next = current.clone();
        next.replicas = self.replicas;
        next.isr = isr;
        next.leader = leader;
        next.adding_replicas = self.adding;
        next.removing_replicas = self.removing;
        if next == *current {
            return None;
        }
        let lost_replicas = current.replicas.iter().any(|r| !next.replicas.contains(r));
        if leader != current.leader || lost_replicas {
            next.leader_epoch += 1;
        }
        next.partition_epoch += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionImage {
        PartitionImage {
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 7,
            ..PartitionImage::default()
        }
    }

    fn all_live(_: i32) -> bool {
        true
    }

    #[test]
    fn reassignment_replicas_put_the_target_first() {
        assert_eq!(
            reassignment_replicas(&[1, 2, 3], &[4, 3, 2]),
            (vec![4, 3, 2, 1], vec![4], vec![1])
        );
        assert_eq!(
            reassignment_replicas(&[1, 2, 3], &[3, 2, 1]),
            (vec![3, 2, 1], vec![], vec![])
        );
    }

    #[test]
    fn a_reassignment_waits_for_the_isr_then_completes() {
        let p = partition(&[1, 2, 3], 1, &[1, 2, 3]);
        let (replicas, adding, removing) = reassignment_replicas(&p.replicas, &[2, 3, 4]);
        let started = PartitionChange {
            replicas,
            adding,
            removing,
            ..PartitionChange::of(&p)
        }
        .build(&p, all_live)
        .expect("a change");
        assert_eq!(started.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (
                started.adding_replicas.clone(),
                started.removing_replicas.clone()
            ),
            (vec![4], vec![1])
        );
        assert_eq!(
            (started.leader, started.leader_epoch),
            (1, 5),
            "leader kept, nothing lost"
        );
        // Broker 4 caught up and joins the ISR: the reassignment completes, 1 leaves, and
        // leadership moves to the first remaining ISR member in replica order.
        let caught_up = PartitionChange {
            isr: vec![1, 2, 3, 4],
            ..PartitionChange::of(&started)
        }
        .build(&started, all_live)
        .expect("a change");
        assert_eq!(caught_up.replicas, vec![2, 3, 4]);
        assert_eq!(caught_up.isr, vec![2, 3, 4]);
        assert_eq!((caught_up.leader, caught_up.leader_epoch), (2, 6));
        assert!(caught_up.adding_replicas.is_empty() && caught_up.removing_replicas.is_empty());
    }

    #[test]
    fn reordering_completes_at_once_and_keeps_the_leader() {
        let p = partition(&[1, 2, 3], 1, &[1, 2, 3]);
        let (replicas, adding, removing) = reassignment_replicas(&p.replicas, &[3, 2, 1]);
        let next = PartitionChange {
            replicas,
            adding,
            removing,
            ..PartitionChange::of(&p)
        }
        .build(&p, all_live)
        .expect("a change");
        assert_eq!(
            (next.replicas.clone(), next.leader, next.leader_epoch),
            (vec![3, 2, 1], 1, 5)
        );
        assert_eq!(next.partition_epoch, 8);
    }

    #[test]
    fn elections() {
        // Preferred: the first replica when live and in the ISR.
        let p = partition(&[1, 2, 3], 2, &[1, 2, 3]);
        let next = PartitionChange::of(&p)
            .with_election(Election::Preferred)
            .build(&p, all_live)
            .expect("a change");
        assert_eq!((next.leader, next.leader_epoch), (1, 6));
        // Preferred replica dead: the current leader stays, nothing changes.
        assert!(PartitionChange::of(&p)
            .with_election(Election::Preferred)
            .build(&p, |r| r != 1)
            .is_none());
        // Unclean: no live ISR member, a live replica outside it becomes the ISR.
        let p = partition(&[1, 2, 3], -1, &[1]);
        assert!(PartitionChange::of(&p).build(&p, |r| r != 1).is_none());
        let next = PartitionChange::of(&p)
            .with_election(Election::Unclean)
            .build(&p, |r| r != 1)
            .expect("a change");
        assert_eq!((next.leader, next.isr), (2, vec![2]));
        assert!(PartitionChange::of(&p)
            .with_election(Election::Unclean)
            .build(&p, |_| false)
            .is_none());
    }
}
