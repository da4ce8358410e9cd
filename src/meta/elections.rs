//! ElectLeaders as Kafka's controller answers it: a preferred election makes the first replica
//! the leader when it is live and in the ISR; an unclean election gives a leaderless partition
//! a live replica from outside the ISR when no ISR member is live. Each election becomes a
//! `PartitionChangeRecord` computed from the current image (see `partition_change.rs`) and all
//! of a request's elections go in one proposal. A partition changed concurrently (its epoch
//! moved on) is planned again from the newer image.

use super::change_proposal::{propose_changes, ProposalErrors};
use super::image::{MetadataImage, PartitionChangeRecord};
use super::partition_change::{Election, PartitionChange};
use super::MetadataQuorum;

/// Why one partition got no new leader; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
    #[error("{0}")]
    NotController(String),
}

/// The change that elects a leader for `topic`-`partition` (Kafka's `electLeader`).
pub fn plan_election(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    election: Election,
) -> Result<PartitionChangeRecord, ElectionError> {
    let Some(t) = image.topic(topic) else {
        return Err(ElectionError::UnknownTopicOrPartition(format!(
            "No such topic as {topic}"
        )));
    };
    let Some(p) = t.partitions.iter().find(|p| p.partition == partition) else {
        return Err(ElectionError::UnknownTopicOrPartition(format!(
            "No such partition as {topic}-{partition}"
        )));
    };
    let not_needed = match election {
        Election::Preferred => p.replicas.first() == Some(&p.leader),
        _ => p.leader != -1,
    };
    if not_needed {
        return Err(ElectionError::ElectionNotNeeded);
    }
    match PartitionChange::of(p)
        .with_election(election)
        .build(p, |r| image.is_live(r))
    {
        Some(next) => Ok(PartitionChangeRecord {
            topic_id: t.topic_id,
            partition,
            expected_partition_epoch: p.partition_epoch,
            replicas: next.replicas,
            isr: next.isr,
            leader: next.leader,
            adding_replicas: next.adding_replicas,
            removing_replicas: next.removing_replicas,
        }),
        None if election == Election::Preferred => Err(ElectionError::PreferredLeaderNotAvailable),
        None => Err(ElectionError::EligibleLeadersNotAvailable),
    }
}

/// Every (topic, partition) of the image, for an ElectLeaders request without a list.
pub fn all_partitions(image: &MetadataImage) -> Vec<(String, i32)> {
    image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
        .collect()
}

/// Runs the elections, one proposal per attempt; results come back in request order.
pub async fn elect_leaders(
    meta: &MetadataQuorum,
    partitions: &[(String, i32)],
    election: Election,
) -> Vec<Result<(), ElectionError>> {
    let kept_changing = match election {
        Election::Preferred => ElectionError::PreferredLeaderNotAvailable,
        _ => ElectionError::EligibleLeadersNotAvailable,
    };
    let errors = ProposalErrors {
        not_controller: ElectionError::NotController,
        topic_deleted: ElectionError::UnknownTopicOrPartition(
            "The topic was deleted meanwhile.".into(),
        ),
        kept_changing,
    };
    propose_changes(
        meta,
        partitions,
        |image, (topic, partition)| plan_election(image, topic, *partition, election).map(Some),
        errors,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::image::{ApplyOutcome, MetadataRecord, PartitionImage};
    use crate::meta::test_image::{image_with, partition as p};

    fn image(partitions: Vec<PartitionImage>) -> MetadataImage {
        image_with(&[1, 2, 3], partitions).0
    }

    #[test]
    fn preferred_elections_answer_as_kafka() {
        let mut img = image(vec![
            p(0, &[1, 2, 3], 2, &[1, 2, 3]),
            p(1, &[1, 2, 3], 1, &[1, 2, 3]),
            p(2, &[3, 1, 2], 1, &[1, 2]),
        ]);
        let change = plan_election(&img, "t", 0, Election::Preferred).expect("elects 1");
        assert_eq!(change.leader, 1);
        assert_eq!(
            img.apply(&MetadataRecord::ChangePartitions(vec![change])),
            ApplyOutcome::Each(vec![ApplyOutcome::Ok])
        );
        let p0 = &img.topic("t").expect("topic").partitions[0];
        assert_eq!((p0.leader, p0.leader_epoch, p0.partition_epoch), (1, 1, 1));
        assert_eq!(
            plan_election(&img, "t", 1, Election::Preferred),
            Err(ElectionError::ElectionNotNeeded)
        );
        assert_eq!(
            plan_election(&img, "t", 2, Election::Preferred),
            Err(ElectionError::PreferredLeaderNotAvailable)
        );
        assert!(matches!(
            plan_election(&img, "t", 9, Election::Preferred),
            Err(ElectionError::UnknownTopicOrPartition(_))
        ));
        assert!(matches!(
            plan_election(&img, "nope", 0, Election::Preferred),
            Err(ElectionError::UnknownTopicOrPartition(_))
        ));
    }

    #[test]
    fn unclean_elections_need_a_leaderless_partition_and_a_live_replica() {
        let mut img = image(vec![p(0, &[1, 2, 3], 1, &[1]), p(1, &[1, 3], 1, &[1])]);
        assert_eq!(
            plan_election(&img, "t", 0, Election::Unclean),
            Err(ElectionError::ElectionNotNeeded)
        );
        img.apply(&MetadataRecord::FenceBroker { node_id: 1 });
        let change = plan_election(&img, "t", 0, Election::Unclean).expect("elects 2");
        assert_eq!((change.leader, change.isr.clone()), (2, vec![2]));
        assert_eq!(
            img.apply(&MetadataRecord::ChangePartitions(vec![change.clone()])),
            ApplyOutcome::Each(vec![ApplyOutcome::Ok])
        );
        // Applied twice: the epoch moved on, so the second is refused.
        assert_eq!(
            img.apply(&MetadataRecord::ChangePartitions(vec![change])),
            ApplyOutcome::Each(vec![ApplyOutcome::Conflict])
        );
        img.apply(&MetadataRecord::FenceBroker { node_id: 3 });
        assert_eq!(
            plan_election(&img, "t", 1, Election::Unclean),
            Err(ElectionError::EligibleLeadersNotAvailable)
        );
    }
}
