//! KIP-951 leader hints: a partition answered with NOT_LEADER_OR_FOLLOWER (or, for Fetch,
//! FENCED_LEADER_EPOCH) carries the leader and leader epoch that the metadata names now, and the
//! response carries those leaders' endpoints on the client's listener, so a client goes
//! straight to the new leader without a Metadata round trip. Fetch (v12+ leaders, v16+
//! endpoints) and Produce (v10+) share this; each maps it onto its own response types.

use crate::meta::image::MetadataImage;

/// The leaders named in one response's hints, in first-named order.
pub struct LeaderHints<'a> {
    image: &'a MetadataImage,
    leaders: Vec<i32>,
}

/// A hinted leader's endpoint on the client's listener.
pub struct LeaderEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl<'a> LeaderHints<'a> {
    pub fn new(image: &'a MetadataImage) -> Self {
        Self {
            image,
            leaders: Vec::new(),
        }
    }

    /// `(leader id, leader epoch)` of `topic`-`partition` as the image has it (leader -1 when it
    /// has none), or `None` for a partition the image does not know.
    pub fn leader_of(&mut self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let state = self
            .image
            .topic(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        if state.leader >= 0 && !self.leaders.contains(&state.leader) {
            self.leaders.push(state.leader);
        }
        Some((state.leader, state.leader_epoch))
    }

    /// The endpoints, on `listener`, of every leader named so far.
    pub fn endpoints(&self, listener: &str) -> Vec<LeaderEndpoint> {
        self.leaders
            .iter()
            .filter_map(|id| {
                let b = self.image.brokers.get(id)?;
                let (host, port) = b.endpoint(listener)?;
                Some(LeaderEndpoint {
                    node_id: *id,
                    host: host.to_string(),
                    port,
                    rack: b.rack.clone(),
                })
            })
            .collect()
    }
}
