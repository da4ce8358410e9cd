//! Partition reassignment in Kafka's KRaft model (AlterPartitionReassignments and
//! ListPartitionReassignments).
//!
//! Starting one sets the replica set to the target followed by the replicas being removed, and
//! records `adding_replicas` and `removing_replicas` in the partition. Adding replicas are
//! hosted and fetch like any follower; the leader lets them into the ISR once caught up. The
//! ISR change that makes every target replica a member also completes the reassignment (the
//! state machine does it, see `partition_change.rs`): the removed replicas leave, leadership
//! moves if the leader was removed, and the removed brokers stop their replica and delete its
//! log when they apply that image. Cancelling (no target) reverts to the original replicas,
//! as Kafka's `PartitionReassignmentRevert` does.

use super::change_proposal::{propose_changes, ProposalErrors};
use super::image::{MetadataImage, PartitionChangeRecord, PartitionImage};
use super::partition_change::{reassignment_replicas, Election, PartitionChange};
use super::MetadataQuorum;

const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

/// Why one partition's reassignment was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignmentError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("No partition reassignment is in progress for this topic-partition.")]
    NoReassignmentInProgress,
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    NotController(String),
}

/// One partition of an AlterPartitionReassignments request; `target: None` cancels.
#[derive(Debug, Clone)]
pub struct ReassignmentRequest {
    pub topic: String,
    pub partition: i32,
    pub target: Option<Vec<i32>>,
}

/// A reassignment in progress, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The change that starts, changes or cancels `req` (Kafka's `alterPartitionReassignment`);
/// `None` when nothing changes (the target is the current assignment).
pub fn plan_reassignment(
    image: &MetadataImage,
    req: &ReassignmentRequest,
    allow_replication_factor_change: bool,
    unclean_default: bool,
) -> Result<Option<PartitionChangeRecord>, ReassignmentError> {
    let (topic, partition) = (&req.topic, req.partition);
    let Some(t) = image.topic(topic) else {
        return Err(ReassignmentError::UnknownTopicOrPartition(format!(
            "Unable to find a topic named {topic}."
        )));
    };
    let Some(p) = t.partitions.iter().find(|p| p.partition == partition) else {
        return Err(ReassignmentError::UnknownTopicOrPartition(format!(
            "Unable to find partition {topic}:{partition}."
        )));
    };
    let unclean = t
        .configs
        .get(UNCLEAN_KEY)
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(unclean_default);
    let change = match &req.target {
        None => revert(p, topic, unclean)?,
        Some(target) => {
            validate_target(image, target)?;
            let original = original_replicas(p);
            if !allow_replication_factor_change && target.len() != original.len() {
                return Err(ReassignmentError::InvalidReplicationFactor(format!(
                    "The replication factor is changed from {} to {}",
                    original.len(),
                    target.len()
                )));
            }
            // Kafka plans from the current replica set, which during a reassignment already
            // includes the replicas being added: a new target replaces the old one.
            let (replicas, adding, removing) = reassignment_replicas(&p.replicas, target);
            PartitionChange {
                replicas,
                adding,
                removing,
                ..PartitionChange::of(p)
            }
        }
    };
    Ok(change
        .build(p, |r| image.is_live(r))
        .map(|next| PartitionChangeRecord {
            topic_id: t.topic_id,
            partition,
            expected_partition_epoch: p.partition_epoch,
            replicas: next.replicas,
            isr: next.isr,
            leader: next.leader,
            adding_replicas: next.adding_replicas,
            removing_replicas: next.removing_replicas,
        }))
}

/// The replicas before the reassignment in progress (all of them when there is none).
fn original_replicas(p: &PartitionImage) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect()
}

/// Cancelling: back to the original replicas; the ISR loses the adding ones. An ISR left empty
/// takes the first original replica, which is an unclean election and needs it enabled.
fn revert(
    p: &PartitionImage,
    topic: &str,
    unclean: bool,
) -> Result<PartitionChange, ReassignmentError> {
    if !p.is_reassigning() {
        return Err(ReassignmentError::NoReassignmentInProgress);
    }
    let replicas = original_replicas(p);
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| !p.adding_replicas.contains(r))
        .collect();
    if isr.is_empty() {
        let Some(&first) = replicas.first() else {
            return Err(ReassignmentError::InvalidReplicaAssignment(
                "Invalid replica assignment: addingReplicas contains all replicas.".into(),
            ));
        };
        if !unclean {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                "Unable to revert partition assignment for {topic}:{} because it would require an unclean leader election.",
                p.partition
            )));
        }
        isr.push(first);
    }
    Ok(PartitionChange {
        replicas,
        isr,
        adding: vec![],
        removing: vec![],
        election: if unclean {
            Election::Unclean
        } else {
            Election::Online
        },
    })
}

/// Kafka's `validateManualPartitionAssignment`.
fn validate_target(image: &MetadataImage, target: &[i32]) -> Result<(), ReassignmentError> {
    if target.is_empty() {
        return Err(ReassignmentError::InvalidReplicaAssignment(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut sorted = target.to_vec();
    sorted.sort_unstable();
    for (i, b) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(b) {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            )));
        }
        if i > 0 && sorted[i - 1] == *b {
            return Err(ReassignmentError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes the broker {b} more than once."
            )));
        }
    }
    Ok(())
}

/// Applies the requested reassignments, in one proposal per attempt; results in request order.
pub async fn alter_reassignments(
    meta: &MetadataQuorum,
    requests: &[ReassignmentRequest],
    allow_replication_factor_change: bool,
    unclean_default: bool,
) -> Vec<Result<(), ReassignmentError>> {
    let errors = ProposalErrors {
        not_controller: ReassignmentError::NotController,
        topic_deleted: ReassignmentError::UnknownTopicOrPartition(
            "The topic was deleted meanwhile.".into(),
        ),
        kept_changing: ReassignmentError::NotController(
            "The partition kept changing meanwhile; retry.".into(),
        ),
    };
    propose_changes(
        meta,
        requests,
        |image, req| {
            plan_reassignment(image, req, allow_replication_factor_change, unclean_default)
        },
        errors,
    )
    .await
}

/// The reassignments in progress: of every topic (`None`), or of the listed partitions
/// (unknown topics and partitions not being reassigned are left out, as Kafka does).
pub fn ongoing(
    image: &MetadataImage,
    wanted: Option<&[(String, Vec<i32>)]>,
) -> Vec<(String, Vec<OngoingReassignment>)> {
    let describe = |p: &PartitionImage| OngoingReassignment {
        partition: p.partition,
        replicas: p.replicas.clone(),
        adding: p.adding_replicas.clone(),
        removing: p.removing_replicas.clone(),
    };
    let mut out = Vec::new();
    match wanted {
        None => {
            for t in image.topics.values() {
                let parts: Vec<_> = t
                    .partitions
                    .iter()
                    .filter(|p| p.is_reassigning())
                    .map(describe)
                    .collect();
                if !parts.is_empty() {
                    out.push((t.name.clone(), parts));
                }
            }
        }
        Some(wanted) => {
            for (name, partitions) in wanted {
                let Some(t) = image.topic(name) else { continue };
                let parts: Vec<_> = partitions
                    .iter()
                    .filter_map(|i| t.partitions.iter().find(|p| p.partition == *i))
                    .filter(|p| p.is_reassigning())
                    .map(describe)
                    .collect();
                if !parts.is_empty() {
                    out.push((name.clone(), parts));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::image::{ApplyOutcome, MetadataRecord};
    use crate::meta::test_image::{image_with, partition as p};
    use uuid::Uuid;

    fn image() -> (MetadataImage, Uuid) {
        image_with(&[1, 2, 3, 4], vec![p(0, &[1, 2, 3], 1, &[1, 2, 3])])
    }

    fn req(target: Option<Vec<i32>>) -> ReassignmentRequest {
        ReassignmentRequest {
            topic: "t".into(),
            partition: 0,
            target,
        }
    }

    fn apply(image: &mut MetadataImage, change: PartitionChangeRecord) {
        assert_eq!(
            image.apply(&MetadataRecord::ChangePartitions(vec![change])),
            ApplyOutcome::Each(vec![ApplyOutcome::Ok])
        );
    }

    fn partition(image: &MetadataImage) -> PartitionImage {
        image.topic("t").expect("topic").partitions[0].clone()
    }

    #[test]
    fn a_move_completes_when_the_leader_lets_the_new_replica_into_the_isr() {
        let (mut img, topic_id) = image();
        let change = plan_reassignment(&img, &req(Some(vec![2, 3, 4])), true, false)
            .expect("valid")
            .expect("a change");
        apply(&mut img, change);
        let p = partition(&img);
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(
            ongoing(&img, None),
            vec![(
                "t".to_string(),
                vec![OngoingReassignment {
                    partition: 0,
                    replicas: vec![2, 3, 4, 1],
                    adding: vec![4],
                    removing: vec![1]
                }]
            )]
        );
        // The leader (1) adds the caught-up replica 4 to the ISR: that completes the move.
        let expand = MetadataRecord::UpdatePartition {
            topic_id,
            partition: 0,
            expected_partition_epoch: p.partition_epoch,
            leader: 1,
            isr: vec![2, 3, 4, 1],
        };
        assert_eq!(img.apply(&expand), ApplyOutcome::Ok);
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 3, 4], vec![2, 3, 4], 2)
        );
        assert!(!p.is_reassigning());
        assert!(ongoing(&img, None).is_empty());
    }

    #[test]
    fn cancel_reverts_and_errors_match_kafka() {
        let (mut img, _) = image();
        assert_eq!(
            plan_reassignment(&img, &req(None), true, false),
            Err(ReassignmentError::NoReassignmentInProgress)
        );
        assert!(matches!(
            plan_reassignment(&img, &req(Some(vec![1, 1, 2])), true, false),
            Err(ReassignmentError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            plan_reassignment(&img, &req(Some(vec![1, 9])), true, false),
            Err(ReassignmentError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            plan_reassignment(&img, &req(Some(vec![1, 2])), false, false),
            Err(ReassignmentError::InvalidReplicationFactor(_))
        ));
        assert_eq!(
            plan_reassignment(&img, &req(Some(vec![1, 2, 3])), true, false),
            Ok(None)
        );
        let start = plan_reassignment(&img, &req(Some(vec![4, 3, 2])), true, false)
            .expect("valid")
            .expect("a change");
        apply(&mut img, start);
        let cancel = plan_reassignment(&img, &req(None), true, false)
            .expect("valid")
            .expect("a change");
        apply(&mut img, cancel);
        let p = partition(&img);
        // As Kafka's PartitionReassignmentRevert: the original replicas are the current ones
        // without those being added, in the current order (which the target set).
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![3, 2, 1], vec![1, 2, 3], 1)
        );
        assert!(!p.is_reassigning());
        // Shrinking the replication factor completes at once (the rest is in the ISR).
        let shrink = plan_reassignment(&img, &req(Some(vec![2, 3])), true, false)
            .expect("valid")
            .expect("a change");
        apply(&mut img, shrink);
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![2, 3], vec![2, 3], 2)
        );
    }
}
