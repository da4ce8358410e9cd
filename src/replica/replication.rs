//! Replication on a partition: on the leader, followers' fetches (divergence checks, progress,
//! the high watermark, ISR expansion and shrinking); on a follower, appending what the leader
//! sent, tracking its high watermark, and truncating divergent or out-of-range logs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::partition::{Partition, PartitionError};
use crate::log::{FollowerAppend, ReadResult};

/// A follower's progress as its leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    /// The follower's log end offset: the offset of its last fetch.
    pub log_end_offset: i64,
    /// The follower's log start offset, as its last fetch said (-1: not known yet).
    pub log_start_offset: i64,
    /// The last time the follower had everything the leader had (Kafka's lastCaughtUpTime).
    pub last_caught_up: Instant,
    /// The leader's log end offset at the follower's previous fetch.
    last_fetch_leader_end: i64,
    last_fetch: Instant,
}

impl FollowerState {
    /// A follower in the ISR when this replica becomes leader: its log end offset is not known
    /// until it fetches (so it holds the high watermark back), and it counts as caught up as of
    /// now (so it leaves the ISR after `replica.lag.time.max.ms` if it never fetches), as
    /// Kafka's `resetReplicaState` does.
    pub fn at_leadership_start(now: Instant) -> Self {
        Self {
            log_end_offset: -1,
            log_start_offset: -1,
            last_caught_up: now,
            last_fetch_leader_end: -1,
            last_fetch: now,
        }
    }
}

/// What a follower fetch gets from the leader.
pub enum FollowerRead {
    Records {
        result: ReadResult,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// The follower's log diverges from ours at this (epoch, end offset).
    Diverging { epoch: i32, end_offset: i64 },
}

/// A follower's fetch of one partition, as the leader receives it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub fetch_offset: i64,
    pub current_leader_epoch: i32,
    /// Fetch v12+: the epoch of the follower's last record, to detect divergence (-1: none).
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

/// An in-sync follower as a replica selector sees it (KIP-392).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaView {
    pub broker: i32,
    pub log_end_offset: i64,
    pub log_start_offset: i64,
    pub since_caught_up: Duration,
}

/// What a follower sends in each fetch.
pub struct FollowerFetchState {
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub log_start_offset: i64,
}

impl Partition {
    /// Serves a follower's fetch on the leader: checks for divergence (Fetch v12
    /// `last_fetched_epoch`), records the follower's progress, advances the high watermark, and
    /// reads up to the log end offset. With `throttled` (a replication throttle holds this
    /// follower back, `throttle.rs`) it returns no records.
    pub fn read_for_follower(
        &self,
        replica_id: i32,
        fetch: FollowerFetch,
        max_bytes: usize,
        throttled: bool,
    ) -> Result<FollowerRead, PartitionError> {
        let FollowerFetch {
            fetch_offset,
            current_leader_epoch,
            last_fetched_epoch,
            log_start_offset,
        } = fetch;
        if !self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        self.check_leader_epoch(current_leader_epoch)?;
        if !self.state.read().replicas.contains(&replica_id) {
            // As Kafka: a broker not (yet) among the replicas retries on UNKNOWN_LEADER_EPOCH
            // when it named the epoch, else it is told this is not its leader.
            return Err(if current_leader_epoch >= 0 {
                PartitionError::UnknownLeaderEpoch(current_leader_epoch)
            } else {
                PartitionError::NotLeader
            });
        }
        if last_fetched_epoch >= 0 {
            let (epoch, end) = self.log.end_offset_for_epoch(last_fetched_epoch);
            // As Kafka: an epoch older than any we know (undefined end) is no divergence.
            if end >= 0 && (epoch < last_fetched_epoch || end < fetch_offset) {
                return Ok(FollowerRead::Diverging {
                    epoch,
                    end_offset: end,
                });
            }
        }
        let leader_end = self.log.log_end_offset();
        if fetch_offset > leader_end || fetch_offset < self.log.log_start_offset() {
            return Err(PartitionError::Log(
                crate::log::LogError::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start: self.log.log_start_offset(),
                    log_end: leader_end,
                },
            ));
        }
        self.record_follower_fetch(replica_id, fetch_offset, log_start_offset, leader_end);
        self.maybe_advance_high_watermark();
        let result = if throttled {
            ReadResult {
                records: Bytes::new(),
            }
        } else {
            self.log.read(fetch_offset, leader_end, max_bytes, true)?
        };
        Ok(FollowerRead::Records {
            result,
            high_watermark: self.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
        })
    }

    fn record_follower_fetch(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        log_start_offset: i64,
        leader_end: i64,
    ) {
        let now = Instant::now();
        let mut followers = self.followers.lock();
        let f = followers.entry(replica_id).or_insert(FollowerState {
            log_end_offset: fetch_offset,
            log_start_offset,
            last_caught_up: now - Duration::from_secs(3600),
            last_fetch_leader_end: -1,
            last_fetch: now,
        });
        // Kafka's rule: caught up now if it has all we have; or caught up as of the previous
        // fetch if it has all we had then.
        if fetch_offset >= leader_end {
            f.last_caught_up = now;
        } else if fetch_offset >= f.last_fetch_leader_end && f.last_fetch_leader_end >= 0 {
            f.last_caught_up = f.last_caught_up.max(f.last_fetch);
        }
        f.log_end_offset = fetch_offset;
        f.log_start_offset = log_start_offset;
        f.last_fetch_leader_end = leader_end;
        f.last_fetch = now;
    }

    /// The ISR this leader wants now: followers that caught up with the high watermark join
    /// (Kafka: follower end offset >= high watermark and >= the current epoch's start), those
    /// not caught up for `lag` leave. `None` when nothing should change or a change is pending.
    pub fn desired_isr(&self, lag: Duration, is_live: impl Fn(i32) -> bool) -> Option<Vec<i32>> {
        if !self.is_leader() || self.isr_change_pending.load(Ordering::Acquire) {
            return None;
        }
        let state = self.state();
        let hwm = self.high_watermark();
        let epoch_start = self
            .log
            .end_offset_for_epoch(self.leader_epoch() - 1)
            .1
            .max(0);
        let now = Instant::now();
        let mut followers = self.followers.lock();
        // An ISR member this leader has no state for yet gets one full lag period from now.
        for r in state.isr.iter().filter(|r| **r != self.node_id) {
            followers
                .entry(*r)
                .or_insert_with(|| FollowerState::at_leadership_start(now));
        }
        let mut isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node_id
                    || followers
                        .get(r)
                        .is_some_and(|f| now.duration_since(f.last_caught_up) <= lag)
            })
            .collect();
        for r in &state.replicas {
            if isr.contains(r) || !is_live(*r) {
                continue;
            }
            if let Some(f) = followers.get(r) {
                // Only a follower that is fetching now can rejoin.
                let fetching = now.duration_since(f.last_fetch) <= lag;
                if fetching && f.log_end_offset >= hwm && f.log_end_offset >= epoch_start {
                    isr.push(*r);
                }
            }
        }
        // Keep Kafka's order: replica order.
        isr.sort_by_key(|r| state.replicas.iter().position(|x| x == r));
        (isr != state.isr).then_some(isr)
    }

    /// On a leader: the in-sync followers and their progress, for choosing a preferred read
    /// replica.
    pub fn in_sync_followers(&self) -> Vec<ReplicaView> {
        let isr = self.state.read().isr.clone();
        let now = Instant::now();
        let followers = self.followers.lock();
        isr.iter()
            .filter(|r| **r != self.node_id)
            .filter_map(|r| {
                let f = followers.get(r)?;
                Some(ReplicaView {
                    broker: *r,
                    log_end_offset: f.log_end_offset,
                    log_start_offset: f.log_start_offset,
                    since_caught_up: now.saturating_duration_since(f.last_caught_up),
                })
            })
            .collect()
    }

    pub fn set_isr_change_pending(&self, pending: bool) {
        self.isr_change_pending.store(pending, Ordering::Release);
    }

    /// What this follower asks its leader for.
    pub fn follower_fetch_state(&self) -> FollowerFetchState {
        FollowerFetchState {
            fetch_offset: self.log.log_end_offset(),
            last_fetched_epoch: self.log.latest_epoch().unwrap_or(-1),
            log_start_offset: self.log.log_start_offset(),
        }
    }

    /// Appends batches replicated from the leader (offsets and epochs as the leader wrote
    /// them) and takes the leader's high watermark and log start offset as far as our log
    /// goes. Returns the offset to wait for before fetching on when the flush policy made the
    /// append due for an fsync (as a Kafka follower flushes before its next fetch).
    pub fn append_as_follower(
        &self,
        records: &Bytes,
        leader_hwm: i64,
        leader_log_start: i64,
    ) -> Result<Option<i64>, PartitionError> {
        if self.is_leader() {
            return Err(PartitionError::NotLeader);
        }
        let appended = if records.is_empty() {
            FollowerAppend::default()
        } else {
            self.log.append_as_follower(records, crate::log::now_ms())?
        };
        let hwm = leader_hwm.min(self.log.log_end_offset());
        if leader_log_start > self.log.log_start_offset() {
            // Never past what this replica may serve: its own high watermark.
            self.log
                .advance_log_start_offset(leader_log_start.min(hwm.max(self.high_watermark())))
                .map_err(crate::log::LogError::Io)?;
        }
        let before = self.raise_high_watermark(hwm);
        if hwm > before {
            self.data_arrived.notify_waiters();
        }
        self.check_offsets();
        Ok(appended.durable_after)
    }

    /// The leader says our log diverges from its own after `end_offset` of `epoch`: cut our
    /// log where our own record of that epoch ends, or at the leader's end, whichever is lower.
    pub fn truncate_divergent(&self, epoch: i32, end_offset: i64) -> std::io::Result<()> {
        let (local_epoch, local_end) = self.log.end_offset_for_epoch(epoch);
        let target = if local_epoch == epoch {
            local_end.min(end_offset)
        } else {
            end_offset
        };
        let target = target.max(self.high_watermark().min(self.log.log_end_offset()));
        tracing::info!(topic = %self.topic, partition = self.index, epoch, end_offset, target,
            "truncating a divergent log tail");
        self.log.truncate_to(target)?;
        self.check_offsets();
        Ok(())
    }

    /// OFFSET_OUT_OF_RANGE from the leader: behind its log start, start over there; ahead of
    /// what it has committed, cut back to its high watermark.
    pub fn reset_after_out_of_range(
        &self,
        leader_log_start: i64,
        leader_hwm: i64,
    ) -> std::io::Result<()> {
        let leo = self.log.log_end_offset();
        if leader_log_start >= 0 && leo < leader_log_start {
            tracing::info!(topic = %self.topic, partition = self.index, leader_log_start,
                "follower behind the leader's log start: starting over there");
            self.log.truncate_fully_and_start_at(leader_log_start)?;
            self.high_watermark
                .store(leader_log_start, Ordering::Release);
        } else if leader_hwm >= 0 && leo > leader_hwm {
            self.log
                .truncate_to(leader_hwm.max(self.high_watermark()))?;
        }
        self.check_offsets();
        Ok(())
    }
}
