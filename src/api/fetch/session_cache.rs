//! KIP-227 incremental fetch sessions: the broker's bounded `FetchSessionCache`. A full fetch
//! with epoch 0 may create a session; later fetches name it with the next epoch and send only
//! the partitions that changed (and those to forget), and the broker answers only partitions
//! with something new. The cache holds `max.incremental.fetch.session.cache.slots` sessions in
//! shards, each with its own lock (and each session with its own), and evicts as Kafka does:
//! a session unused for `EVICTION_MS` goes first; otherwise a follower's (privileged) session
//! may push out a consumer's, and a larger session a smaller one, once that one has lived for
//! `EVICTION_MS`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use rand::Rng;
use uuid::Uuid;

/// Session id 0: no session.
pub const INVALID_SESSION_ID: i32 = 0;
/// Epoch 0 asks for a new session (a full fetch).
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch -1 closes a session, or fetches without one (a full fetch).
pub const FINAL_EPOCH: i32 = -1;
/// Kafka's MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS: how long a session is safe from being
/// pushed out by a more valuable one, and how long unused before anyone may evict it.
pub const EVICTION_MS: u64 = 120_000;
const MAX_SHARDS: usize = 8;
/// Below this many slots per shard the cache is not split further, so small caches keep
/// Kafka's eviction order over all their sessions.
const MIN_SLOTS_PER_SHARD: usize = 100;

/// The epoch after `epoch`, as Kafka's FetchMetadata.nextEpoch: wraps to 1, never to 0.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// How a session names topics: by id (Fetch v13+) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(Uuid),
    Name(Arc<str>),
}

pub type PartitionKey = (TopicKey, i32);

/// A partition's fetch parameters, as the client last sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    /// The fetcher's own log start offset (followers send it).
    pub log_start_offset: i64,
    pub max_bytes: i32,
}

/// What a session remembers of a partition: the request parameters, and what it last told the
/// client, so that a response can leave out partitions with nothing new.
#[derive(Debug, Clone)]
pub struct CachedPartition {
    pub params: FetchParams,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// The last response sent records for it (it then moves to the end of the session).
    pub sent_records: bool,
}

/// A partition's answer, as far as the session compares it with what the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub record_bytes: usize,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub error: bool,
    /// A preferred read replica or a diverging epoch: always sent.
    pub must_send: bool,
}

impl CachedPartition {
    pub fn new(params: FetchParams, answered: Option<&Answered>) -> Self {
        let mut p = Self {
            params,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            sent_records: false,
        };
        if let Some(a) = answered {
            p.high_watermark = if a.error { -1 } else { a.high_watermark };
            p.last_stable_offset = a.last_stable_offset;
            p.log_start_offset = a.log_start_offset;
        }
        p
    }

    /// Whether this answer must go to the client (new records, moved offsets, an error, a
    /// preferred replica or a diverging epoch), remembering what it tells. After an error the
    /// cached high watermark is -1, so the partition is sent again once the error clears.
    pub fn must_respond(&mut self, a: &Answered) -> bool {
        self.sent_records = a.record_bytes > 0;
        let mut respond = self.sent_records || a.must_send;
        if self.high_watermark != a.high_watermark {
            respond = true;
            self.high_watermark = a.high_watermark;
        }
        if self.last_stable_offset != a.last_stable_offset {
            respond = true;
            self.last_stable_offset = a.last_stable_offset;
        }
        if self.log_start_offset != a.log_start_offset {
            respond = true;
            self.log_start_offset = a.log_start_offset;
        }
        if a.error {
            self.high_watermark = -1;
            respond = true;
        }
        respond
    }
}

/// A session's mutable state, behind its own lock.
pub struct SessionState {
    pub epoch: i32,
    last_used_ms: u64,
    /// The size the shard last indexed this session under (None: not indexed).
    cached_size: Option<usize>,
    /// In the order Kafka keeps them: partitions that just returned records move to the end,
    /// so a response size limit does not starve the later ones.
    pub partitions: IndexMap<PartitionKey, CachedPartition>,
}

pub struct FetchSession {
    pub id: i32,
    /// Created by a follower: may evict a consumer's session.
    privileged: bool,
    pub uses_topic_ids: bool,
    creation_ms: u64,
    pub state: Mutex<SessionState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EvictableKey {
    privileged: bool,
    size: usize,
    id: i32,
}

impl FetchSession {
    fn evictable_key(&self, state: &SessionState) -> Option<EvictableKey> {
        state.cached_size.map(|size| EvictableKey {
            privileged: self.privileged,
            size,
            id: self.id,
        })
    }
}

struct Shard {
    max_entries: usize,
    /// Session ids of this shard are in `ids.0..ids.1`.
    ids: (i32, i32),
    sessions: HashMap<i32, Arc<FetchSession>>,
    last_used: BTreeSet<(u64, i32)>,
    /// Sessions any new session may evict (older than EVICTION_MS).
    evictable_by_all: BTreeSet<EvictableKey>,
    /// Sessions a privileged new session may evict (consumers' at once, followers' once
    /// older than EVICTION_MS).
    evictable_by_privileged: BTreeSet<EvictableKey>,
    num_partitions: usize,
}

impl Shard {
    fn remove(&mut self, id: i32) -> Option<Arc<FetchSession>> {
        let session = self.sessions.remove(&id)?;
        let state = session.state.lock();
        self.last_used.remove(&(state.last_used_ms, id));
        if let Some(key) = session.evictable_key(&state) {
            self.evictable_by_all.remove(&key);
            self.evictable_by_privileged.remove(&key);
            self.num_partitions -= key.size;
        }
        drop(state);
        Some(session)
    }

    /// Re-indexes a session as used at `now` with its current size (its lock held by the
    /// caller, the shard's by us: always shard first, then session).
    fn touch(&mut self, session: &FetchSession, state: &mut SessionState, now: u64) {
        self.last_used.remove(&(state.last_used_ms, session.id));
        state.last_used_ms = now;
        self.last_used.insert((now, session.id));
        if let Some(old) = session.evictable_key(state) {
            self.evictable_by_all.remove(&old);
            self.evictable_by_privileged.remove(&old);
            self.num_partitions -= old.size;
        }
        state.cached_size = Some(state.partitions.len());
        let Some(key) = session.evictable_key(state) else {
            return;
        };
        let old_enough = now.saturating_sub(session.creation_ms) > EVICTION_MS;
        if !session.privileged || old_enough {
            self.evictable_by_privileged.insert(key);
        }
        if old_enough {
            self.evictable_by_all.insert(key);
        }
        self.num_partitions += key.size;
    }

    /// Makes room for a new session of `size` partitions, if Kafka's rule lets it: evict the
    /// least recently used session if it is stale, else the least valuable evictable one if it
    /// is worth less than the new one.
    fn try_evict(&mut self, privileged: bool, size: usize, now: u64) -> bool {
        let Some(&(last_used, id)) = self.last_used.first() else {
            return false;
        };
        if now.saturating_sub(last_used) > EVICTION_MS {
            self.remove(id);
            return true;
        }
        let candidates = if privileged {
            &self.evictable_by_privileged
        } else {
            &self.evictable_by_all
        };
        let Some(&victim) = candidates.first() else {
            return false;
        };
        let key = EvictableKey {
            privileged,
            size,
            id: 0,
        };
        if key < victim {
            return false;
        }
        self.remove(victim.id);
        true
    }

    fn new_session_id(&self) -> i32 {
        let mut rng = rand::thread_rng();
        loop {
            let id = rng.gen_range(self.ids.0..self.ids.1);
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// What an incremental fetch found.
pub enum Incremental {
    /// The session, its epoch moved on, with its partitions' parameters in session order.
    Session(Arc<FetchSession>, Vec<(PartitionKey, FetchParams)>),
    /// Every partition was forgotten: the session is closed, and the fetch is sessionless.
    Closed,
}

pub struct FetchSessionCache {
    shards: Vec<Mutex<Shard>>,
    id_range: i32,
    next_shard: AtomicUsize,
    evictions: AtomicU64,
    /// The clock sessions' times are measured on (monotonic).
    started: std::time::Instant,
}

impl FetchSessionCache {
    /// A cache of `slots` sessions (`max.incremental.fetch.session.cache.slots`); 0 turns
    /// incremental sessions off.
    pub fn new(slots: usize) -> Self {
        let n = (slots / MIN_SLOTS_PER_SHARD).clamp(1, MAX_SHARDS);
        let id_range = i32::MAX / n as i32;
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard {
                    max_entries: slots / n + usize::from(i < slots % n),
                    ids: ((i as i32 * id_range).max(1), (i as i32 + 1) * id_range),
                    sessions: HashMap::new(),
                    last_used: BTreeSet::new(),
                    evictable_by_all: BTreeSet::new(),
                    evictable_by_privileged: BTreeSet::new(),
                    num_partitions: 0,
                })
            })
            .collect();
        Self {
            shards,
            id_range,
            next_shard: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// Milliseconds on the cache's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn shard_of(&self, id: i32) -> Option<&Mutex<Shard>> {
        if id <= 0 {
            return None;
        }
        self.shards.get((id / self.id_range) as usize)
    }

    /// Closes a session (a full fetch naming it); whether it existed.
    pub fn remove(&self, id: i32) -> bool {
        self.shard_of(id)
            .is_some_and(|s| s.lock().remove(id).is_some())
    }

    /// Creates a session for a full fetch's partitions if there is room, or a session Kafka's
    /// rule lets it evict. Returns its id, or `INVALID_SESSION_ID`.
    pub fn create(
        &self,
        now: u64,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: IndexMap<PartitionKey, CachedPartition>,
    ) -> i32 {
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let mut shard = self.shards[i].lock();
        if shard.sessions.len() >= shard.max_entries {
            if shard.max_entries == 0 || !shard.try_evict(privileged, partitions.len(), now) {
                return INVALID_SESSION_ID;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let session = Arc::new(FetchSession {
            id: shard.new_session_id(),
            privileged,
            uses_topic_ids,
            creation_ms: now,
            state: Mutex::new(SessionState {
                epoch: next_epoch(INITIAL_EPOCH),
                last_used_ms: now,
                cached_size: None,
                partitions,
            }),
        });
        let mut state = session.state.lock();
        shard.touch(&session, &mut state, now);
        drop(state);
        shard.sessions.insert(session.id, session.clone());
        session.id
    }

    /// An incremental fetch (epoch > 0) on session `id`: checks the session exists, the epoch is
    /// the one expected and the request names topics as the session does, then lets `update`
    /// apply the request's partitions and forgotten topics, moves the epoch on and returns
    /// every partition's parameters.
    pub fn incremental(
        &self,
        id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        now: u64,
        update: impl FnOnce(&mut IndexMap<PartitionKey, CachedPartition>),
    ) -> Result<Incremental, ResponseError> {
        let Some(shard) = self.shard_of(id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        let mut shard = shard.lock();
        let Some(session) = shard.sessions.get(&id).cloned() else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        let mut state = session.state.lock();
        if state.epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Err(ResponseError::FetchSessionTopicIdError);
        }
        update(&mut state.partitions);
        if state.partitions.is_empty() {
            drop(state);
            shard.remove(id);
            return Ok(Incremental::Closed);
        }
        shard.touch(&session, &mut state, now);
        state.epoch = next_epoch(state.epoch);
        let params = state
            .partitions
            .iter()
            .map(|(k, p)| (k.clone(), p.params))
            .collect();
        drop(state);
        Ok(Incremental::Session(session, params))
    }

    /// (sessions, partitions cached, evictions so far), for metrics.
    pub fn stats(&self) -> (usize, usize, u64) {
        let (mut sessions, mut partitions) = (0, 0);
        for s in &self.shards {
            let s = s.lock();
            sessions += s.sessions.len();
            partitions += s.num_partitions;
        }
        (sessions, partitions, self.evictions.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset: offset,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            log_start_offset: -1,
            max_bytes: 1 << 20,
        }
    }

    fn partitions(n: i32) -> IndexMap<PartitionKey, CachedPartition> {
        (0..n)
            .map(|i| {
                let key = (TopicKey::Name(Arc::from("t")), i);
                (key, CachedPartition::new(params(0), None))
            })
            .collect()
    }

    fn answer(hwm: i64, bytes: usize) -> Answered {
        Answered {
            record_bytes: bytes,
            high_watermark: hwm,
            last_stable_offset: hwm,
            log_start_offset: 0,
            error: false,
            must_send: false,
        }
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn unchanged_partitions_are_left_out() {
        let mut p = CachedPartition::new(params(0), Some(&answer(5, 100)));
        assert!(!p.must_respond(&answer(5, 0)));
        assert!(p.must_respond(&answer(6, 0)), "high watermark moved");
        assert!(!p.must_respond(&answer(6, 0)));
        assert!(p.must_respond(&answer(6, 10)), "records");
        let mut err = answer(-1, 0);
        err.error = true;
        assert!(p.must_respond(&err));
        assert!(
            p.must_respond(&answer(6, 0)),
            "sent again once the error clears"
        );
    }

    #[test]
    fn incremental_checks_epoch_and_topic_ids_then_moves_on() {
        let cache = FetchSessionCache::new(10);
        let id = cache.create(0, false, false, partitions(2));
        assert_ne!(id, INVALID_SESSION_ID);
        let err = |r: Result<Incremental, ResponseError>| r.err();
        assert_eq!(
            err(cache.incremental(id, 2, false, 1, |_| {})),
            Some(ResponseError::InvalidFetchSessionEpoch)
        );
        assert_eq!(
            err(cache.incremental(id, 1, true, 1, |_| {})),
            Some(ResponseError::FetchSessionTopicIdError)
        );
        assert_eq!(
            err(cache.incremental(id + 1, 1, false, 1, |_| {})),
            Some(ResponseError::FetchSessionIdNotFound)
        );
        match cache.incremental(id, 1, false, 1, |_| {}) {
            Ok(Incremental::Session(s, ps)) => {
                assert_eq!(s.state.lock().epoch, 2);
                assert_eq!(ps.len(), 2);
            }
            _ => panic!("expected the session"),
        }
        // Forgetting every partition closes the session.
        assert!(matches!(
            cache.incremental(id, 2, false, 2, |p| p.clear()),
            Ok(Incremental::Closed)
        ));
        assert_eq!(cache.stats().0, 0);
    }

    #[test]
    fn eviction_follows_kafkas_rule() {
        let cache = FetchSessionCache::new(2);
        let small = cache.create(0, false, false, partitions(1));
        let big = cache.create(0, false, false, partitions(5));
        assert!(small != 0 && big != 0);
        // Full, and both sessions are new: a consumer cannot evict them, a follower can.
        assert_eq!(cache.create(1, false, false, partitions(9)), 0);
        let follower = cache.create(2, true, false, partitions(1));
        assert_ne!(follower, 0);
        assert_eq!(cache.stats(), (2, 6, 1));
        assert!(
            !cache.remove(small),
            "the smallest consumer session went first"
        );
        // Once older than EVICTION_MS (and touched since), a larger session evicts a smaller
        // one, but not a smaller or equal one.
        let t = EVICTION_MS + 10;
        assert!(cache.incremental(big, 1, false, t, |_| {}).is_ok());
        assert!(cache.incremental(follower, 1, false, t, |_| {}).is_ok());
        assert_eq!(cache.create(t, false, false, partitions(5)), 0);
        let larger = cache.create(t, false, false, partitions(6));
        assert_ne!(larger, 0);
        assert!(!cache.remove(big));
        // A session unused for EVICTION_MS is evicted by anyone.
        let later = t + EVICTION_MS + 1;
        assert_ne!(cache.create(later, false, false, partitions(1)), 0);
        assert_eq!(cache.stats().2, 3);
    }

    #[test]
    fn zero_slots_means_no_sessions() {
        let cache = FetchSessionCache::new(0);
        assert_eq!(cache.create(0, true, true, partitions(3)), 0);
    }

    #[test]
    fn large_caches_are_sharded_with_disjoint_ids() {
        let cache = FetchSessionCache::new(1000);
        assert_eq!(cache.shards.len(), 8);
        let ids: Vec<i32> = (0..16)
            .map(|_| cache.create(0, false, true, partitions(1)))
            .collect();
        for id in &ids {
            assert!(*id > 0);
            let shard = cache
                .shard_of(*id)
                .map(|s| s.lock().sessions.contains_key(id));
            assert_eq!(shard, Some(true));
        }
        assert_eq!(cache.stats().0, 16);
    }
}
