//! Readiness: what `/health/ready` promises. A broker is ready when it serves clients, knows
//! the active controller, has applied the metadata log up to its own registration (so its
//! view of the cluster is current), is not fenced, and is in the ISR of every partition it
//! replicates whose leader is live. A rolling restart that waits for readiness therefore never
//! takes down a second replica of a partition while the first is still catching up. A replica
//! that a reassignment is adding does not count: the partition keeps its original replicas
//! until it has caught up, and a large move must not take a new broker out of service.

use crate::meta::image::MetadataImage;

/// Why a broker is not ready; `Display` is the body `/health/ready` answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    NoController,
    /// The metadata image does not yet show this broker's current registration.
    NotRegistered,
    Fenced,
    /// Partitions this broker replicates but whose ISR it has not (re)joined yet.
    OutOfSync {
        count: usize,
        example: String,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Starting => write!(f, "starting"),
            NotReady::NoController => write!(f, "no active controller"),
            NotReady::NotRegistered => {
                write!(f, "metadata not caught up to this broker's registration")
            }
            NotReady::Fenced => write!(f, "fenced by the controller"),
            NotReady::OutOfSync { count, example } => {
                write!(f, "not in the ISR of {count} partition(s), e.g. {example}")
            }
        }
    }
}

/// Judges readiness from the broker's own metadata image.
pub fn check(
    image: &MetadataImage,
    node_id: i32,
    incarnation_id: uuid::Uuid,
    has_controller: bool,
) -> Result<(), NotReady> {
    if !has_controller {
        return Err(NotReady::NoController);
    }
    let me = image
        .brokers
        .get(&node_id)
        .filter(|b| b.incarnation_id == incarnation_id)
        .ok_or(NotReady::NotRegistered)?;
    if me.fenced {
        return Err(NotReady::Fenced);
    }
    let mut out_of_sync = 0;
    let mut example = String::new();
    for topic in image.topics.values() {
        for p in &topic.partitions {
            let needs_me = p.replicas.contains(&node_id)
                && !p.adding_replicas.contains(&node_id)
                && p.leader != node_id
                && p.leader >= 0
                && image.is_live(p.leader);
            if needs_me && !p.isr.contains(&node_id) {
                if out_of_sync == 0 {
                    example = format!("{}-{}", topic.name, p.partition);
                }
                out_of_sync += 1;
            }
        }
    }
    if out_of_sync > 0 {
        return Err(NotReady::OutOfSync {
            count: out_of_sync,
            example,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::meta::image::{BrokerRegistration, PartitionImage, TopicImage};

    fn broker(node_id: i32, incarnation_id: Uuid, fenced: bool) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            host: "127.0.0.1".into(),
            port: 9092 + node_id,
            endpoints: vec![],
            rack: None,
            incarnation_id,
            fenced,
            shutting_down: false,
        }
    }

    fn image_with(brokers: Vec<BrokerRegistration>, leader: i32, isr: Vec<i32>) -> MetadataImage {
        let mut image = MetadataImage::default();
        for b in brokers {
            image.brokers.insert(b.node_id, b);
        }
        image.topics.insert(
            "t".into(),
            Arc::new(TopicImage {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                partitions: vec![PartitionImage {
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    isr,
                    leader,
                    leader_epoch: 1,
                    partition_epoch: 1,
                    ..PartitionImage::default()
                }],
                configs: Default::default(),
            }),
        );
        image
    }

    #[test]
    fn ready_only_when_registered_unfenced_and_in_sync() {
        let me = Uuid::new_v4();
        let live = |id| broker(id, Uuid::new_v4(), false);
        let image = image_with(
            vec![live(1), broker(2, me, false), live(3)],
            1,
            vec![1, 2, 3],
        );
        assert_eq!(check(&image, 2, me, true), Ok(()));
        assert_eq!(check(&image, 2, me, false), Err(NotReady::NoController));
        // an older incarnation's registration is not ours
        assert_eq!(
            check(&image, 2, Uuid::new_v4(), true),
            Err(NotReady::NotRegistered)
        );
        let fenced = image_with(vec![live(1), broker(2, me, true), live(3)], 1, vec![1, 3]);
        assert_eq!(check(&fenced, 2, me, true), Err(NotReady::Fenced));
        let behind = image_with(vec![live(1), broker(2, me, false), live(3)], 1, vec![1, 3]);
        assert!(matches!(
            check(&behind, 2, me, true),
            Err(NotReady::OutOfSync { count: 1, .. })
        ));
        // leading it, or its leader being gone, does not hold readiness back
        let leading = image_with(vec![live(1), broker(2, me, false), live(3)], 2, vec![2]);
        assert_eq!(check(&leading, 2, me, true), Ok(()));
        let leaderless = image_with(vec![broker(2, me, false)], 1, vec![1]);
        assert_eq!(check(&leaderless, 2, me, true), Ok(()));
        // a replica a reassignment is still adding does not hold readiness back either
        let mut adding = behind.clone();
        let name = "t".to_string();
        let mut t = (**adding.topics.get(&name).expect("topic")).clone();
        t.partitions[0].adding_replicas = vec![2];
        adding.topics.insert(name, Arc::new(t));
        assert_eq!(check(&adding, 2, me, true), Ok(()));
    }
}
