//! KIP-392: the preferred read replica a leader names for a consumer, as Kafka's
//! `RackAwareReplicaSelector` chooses it: the leader when it is in the consumer's rack (or no
//! replica is), else the most caught-up in-sync follower in that rack that holds the fetch
//! offset and has an endpoint on the consumer's listener.

use std::cmp::Reverse;

use crate::meta::image::MetadataImage;
use crate::replica::replication::ReplicaView;
use crate::replica::Partition;

/// The follower a consumer in `client_rack` should read `partition` from, when it is not the
/// leader (this broker). `None`: read from the leader.
pub fn preferred_read_replica(
    image: &MetadataImage,
    partition: &Partition,
    client_rack: &str,
    listener: &str,
    fetch_offset: i64,
) -> Option<i32> {
    if client_rack.is_empty() || !partition.is_leader() {
        return None;
    }
    let in_rack = |broker: i32| {
        image.brokers.get(&broker).is_some_and(|b| {
            b.rack.as_deref() == Some(client_rack) && b.endpoint(listener).is_some()
        })
    };
    let leader = partition.state().leader;
    if in_rack(leader) {
        return None;
    }
    select(partition.in_sync_followers(), fetch_offset, in_rack)
}

/// Among followers that hold `fetch_offset` and pass `in_rack`: the largest log end offset,
/// then the most recently caught up, then the highest broker id (Kafka's ReplicaView order).
fn select(
    followers: Vec<ReplicaView>,
    fetch_offset: i64,
    in_rack: impl Fn(i32) -> bool,
) -> Option<i32> {
    followers
        .into_iter()
        .filter(|f| f.log_end_offset >= fetch_offset && f.log_start_offset <= fetch_offset)
        .filter(|f| in_rack(f.broker))
        .max_by_key(|f| (f.log_end_offset, Reverse(f.since_caught_up), f.broker))
        .map(|f| f.broker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(broker: i32, leo: i64, lso: i64, secs: u64) -> ReplicaView {
        ReplicaView {
            broker,
            log_end_offset: leo,
            log_start_offset: lso,
            since_caught_up: Duration::from_secs(secs),
        }
    }

    #[test]
    fn picks_the_most_caught_up_follower_in_the_rack() {
        let followers = vec![view(2, 100, 0, 0), view(3, 120, 0, 5), view(4, 130, 0, 0)];
        // 4 is ahead but in another rack.
        assert_eq!(select(followers.clone(), 50, |b| b != 4), Some(3));
        // Same end offset: the one caught up more recently wins, then the higher id.
        let tie = vec![view(2, 100, 0, 3), view(3, 100, 0, 1), view(5, 100, 0, 1)];
        assert_eq!(select(tie, 50, |_| true), Some(5));
    }

    #[test]
    fn skips_followers_without_the_fetch_offset() {
        let followers = vec![view(2, 40, 0, 0), view(3, 100, 60, 0)];
        assert_eq!(select(followers, 50, |_| true), None);
    }
}
