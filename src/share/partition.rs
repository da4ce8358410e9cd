//! The state of one share-partition (KIP-932): the records of a topic partition as one share
//! group consumes them. Offsets below the share-partition start offset (SPSO) are done; those
//! from the SPSO up to the share-partition end offset (SPEO) are in flight, each AVAILABLE,
//! ACQUIRED (by one member, under an acquisition lock that expires), ACKNOWLEDGED or ARCHIVED,
//! with a delivery count; those from the SPEO on have not been fetched yet. The window from
//! SPSO to SPEO holds at most `group.share.partition.max.record.locks` records.
//!
//! Pure state machine: no I/O and no clock of its own (times are passed in, in ms).

use std::collections::VecDeque;
use std::sync::Arc;

/// Kafka's acknowledge types (ShareFetch / ShareAcknowledge `AcknowledgeTypes`).
pub const ACK_GAP: i8 = 0;
pub const ACK_ACCEPT: i8 = 1;
pub const ACK_RELEASE: i8 = 2;
pub const ACK_REJECT: i8 = 3;

/// A record's delivery state. The persisted codes are Kafka's: 0 available, 2 acknowledged,
/// 4 archived (an acquired record is persisted as available).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    Acknowledged,
    Archived,
}

impl RecordState {
    pub fn persisted_code(self) -> i8 {
        match self {
            RecordState::Available | RecordState::Acquired => 0,
            RecordState::Acknowledged => 2,
            RecordState::Archived => 4,
        }
    }

    pub fn from_persisted(code: i8) -> Option<Self> {
        match code {
            0 => Some(RecordState::Available),
            2 => Some(RecordState::Acknowledged),
            4 => Some(RecordState::Archived),
            _ => None,
        }
    }

    fn done(self) -> bool {
        matches!(self, RecordState::Acknowledged | RecordState::Archived)
    }
}

/// The share group's limits on a partition.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// group.share.record.lock.duration.ms
    pub lock_duration_ms: i64,
    /// group.share.delivery.count.limit
    pub delivery_count_limit: i16,
    /// group.share.partition.max.record.locks
    pub max_record_locks: usize,
}

#[derive(Debug, Clone)]
struct InFlight {
    state: RecordState,
    delivery_count: i16,
    /// The member holding the acquisition lock (only while ACQUIRED).
    member: Option<Arc<str>>,
    /// When the acquisition lock expires (only while ACQUIRED).
    lock_deadline_ms: i64,
}

impl InFlight {
    fn fresh() -> Self {
        Self {
            state: RecordState::Available,
            delivery_count: 0,
            member: None,
            lock_deadline_ms: 0,
        }
    }
}

/// A persisted run of records with one state and delivery count (Kafka's StateBatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_state: i8,
    pub delivery_count: i16,
}

/// A range of records acquired by one fetch (Kafka's AcquiredRecords).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: i16,
}

/// Why an acknowledgement was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// INVALID_REQUEST: a malformed batch (bad range or type).
    InvalidRequest(String),
    /// INVALID_RECORD_STATE: a record not acquired by this member.
    InvalidRecordState(String),
}

#[derive(Debug, Clone)]
pub struct SharePartition {
    start_offset: i64,
    records: VecDeque<InFlight>,
    state_epoch: i32,
}

impl SharePartition {
    /// A share-partition with nothing in flight, starting at `start_offset`.
    pub fn new(start_offset: i64, state_epoch: i32) -> Self {
        Self {
            start_offset,
            records: VecDeque::new(),
            state_epoch,
        }
    }

    /// Rebuilds the state a snapshot holds. Records between the persisted batches are
    /// available and never delivered.
    pub fn restore(start_offset: i64, state_epoch: i32, batches: &[StateBatch]) -> Self {
        let mut sp = Self::new(start_offset, state_epoch);
        let mut sorted: Vec<StateBatch> = batches
            .iter()
            .filter(|b| b.last_offset >= start_offset && b.first_offset <= b.last_offset)
            .copied()
            .collect();
        sorted.sort_by_key(|b| b.first_offset);
        for b in sorted {
            let Some(state) = RecordState::from_persisted(b.delivery_state) else {
                continue;
            };
            for offset in b.first_offset.max(start_offset)..=b.last_offset {
                let idx = (offset - start_offset) as usize;
                // Bounded: a snapshot holds at most the window Gregor wrote.
                while sp.records.len() <= idx {
                    sp.records.push_back(InFlight::fresh());
                }
                sp.records[idx].state = state;
                sp.records[idx].delivery_count = b.delivery_count.max(0);
            }
        }
        sp.advance();
        sp
    }

    pub fn start_offset(&self) -> i64 {
        self.start_offset
    }

    pub fn end_offset(&self) -> i64 {
        self.start_offset + self.records.len() as i64
    }

    pub fn state_epoch(&self) -> i32 {
        self.state_epoch
    }

    /// The number of records ACQUIRED now.
    pub fn acquired_count(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.state == RecordState::Acquired)
            .count()
    }

    /// Moves the SPSO past records the log no longer holds (retention, DeleteRecords).
    /// Returns whether anything changed.
    pub fn skip_below(&mut self, log_start_offset: i64) -> bool {
        if log_start_offset <= self.start_offset {
            return false;
        }
        let drop = ((log_start_offset - self.start_offset) as usize).min(self.records.len());
        self.records.drain(..drop);
        self.start_offset = log_start_offset;
        self.advance();
        true
    }

    /// Ends the acquisition locks that expired by `now_ms`: those records become available
    /// again, or archived once they reached the delivery-count limit. Returns whether any did.
    pub fn expire_locks(&mut self, now_ms: i64, limits: &Limits) -> bool {
        let mut changed = false;
        for r in self.records.iter_mut() {
            if r.state == RecordState::Acquired && r.lock_deadline_ms <= now_ms {
                release(r, limits);
                changed = true;
            }
        }
        if changed {
            self.advance();
        }
        changed
    }

    /// When the next acquisition lock expires, if any record is acquired.
    pub fn next_lock_deadline(&self) -> Option<i64> {
        self.records
            .iter()
            .filter(|r| r.state == RecordState::Acquired)
            .map(|r| r.lock_deadline_ms)
            .min()
    }

    /// Where a fetch should read from: the first available in-flight record, else the SPEO
    /// while the window has room; None when every lock of the window is taken.
    pub fn next_fetch_offset(&self, limits: &Limits) -> Option<i64> {
        if let Some(i) = self
            .records
            .iter()
            .position(|r| r.state == RecordState::Available)
        {
            return Some(self.start_offset + i as i64);
        }
        (self.records.len() < limits.max_record_locks).then_some(self.end_offset())
    }

    /// Acquires for `member` the available records among `offsets` (what a log read
    /// returned, all below the high watermark), at most `max_records` of them, within the
    /// window's limit. Offsets in `skipped` (control batches) are archived, never delivered.
    /// Returns the acquired ranges, split where the delivery count changes.
    pub fn acquire(
        &mut self,
        member: &Arc<str>,
        offsets: std::ops::RangeInclusive<i64>,
        max_records: usize,
        skipped: &[(i64, i64)],
        now_ms: i64,
        limits: &Limits,
    ) -> Vec<Acquired> {
        let (from, to) = (*offsets.start(), *offsets.end());
        let mut out: Vec<Acquired> = Vec::new();
        let mut taken = 0usize;
        let mut offset = from.max(self.start_offset);
        while offset <= to && taken < max_records {
            let idx = (offset - self.start_offset) as usize;
            if idx >= limits.max_record_locks {
                break;
            }
            if idx == self.records.len() {
                self.records.push_back(InFlight::fresh());
            }
            let r = &mut self.records[idx];
            if r.state == RecordState::Available {
                if skipped.iter().any(|(a, b)| (*a..=*b).contains(&offset)) {
                    r.state = RecordState::Archived;
                } else {
                    r.state = RecordState::Acquired;
                    r.delivery_count = r.delivery_count.saturating_add(1);
                    r.member = Some(member.clone());
                    r.lock_deadline_ms = now_ms.saturating_add(limits.lock_duration_ms);
                    taken += 1;
                    match out.last_mut() {
                        Some(last)
                            if last.last_offset + 1 == offset
                                && last.delivery_count == r.delivery_count =>
                        {
                            last.last_offset = offset;
                        }
                        _ => out.push(Acquired {
                            first_offset: offset,
                            last_offset: offset,
                            delivery_count: r.delivery_count,
                        }),
                    }
                }
            }
            offset += 1;
        }
        self.advance();
        out
    }

    /// Applies `member`'s acknowledgements: each batch is (first offset, last offset, types),
    /// with one type for the whole range or one per offset. Every record named must be
    /// acquired by `member`, or nothing is applied.
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[(i64, i64, Vec<i8>)],
        limits: &Limits,
    ) -> Result<(), AckError> {
        for (first, last, types) in batches {
            if first > last || *first < 0 {
                return Err(AckError::InvalidRequest(format!(
                    "invalid acknowledgement range {first}..{last}"
                )));
            }
            let n = (last - first + 1) as u64;
            if types.is_empty() || (types.len() != 1 && types.len() as u64 != n) {
                return Err(AckError::InvalidRequest(format!(
                    "{} acknowledge types for {n} records",
                    types.len()
                )));
            }
            if let Some(t) = types.iter().find(|t| !(ACK_GAP..=ACK_REJECT).contains(*t)) {
                return Err(AckError::InvalidRequest(format!(
                    "unknown acknowledge type {t}"
                )));
            }
            if *first < self.start_offset || *last >= self.end_offset() {
                return Err(AckError::InvalidRecordState(format!(
                    "records {first}..{last} are not in flight (share-partition {}..{})",
                    self.start_offset,
                    self.end_offset()
                )));
            }
            let lo = (first - self.start_offset) as usize;
            let hi = (last - self.start_offset) as usize;
            if let Some(i) = (lo..=hi).find(|i| {
                let r = &self.records[*i];
                r.state != RecordState::Acquired || r.member.as_deref() != Some(member)
            }) {
                return Err(AckError::InvalidRecordState(format!(
                    "record {} is not acquired by member {member}",
                    self.start_offset + i as i64
                )));
            }
        }
        for (first, last, types) in batches {
            for offset in *first..=*last {
                let t = if types.len() == 1 {
                    types[0]
                } else {
                    types[(offset - first) as usize]
                };
                let r = &mut self.records[(offset - self.start_offset) as usize];
                match t {
                    ACK_ACCEPT => finish(r, RecordState::Acknowledged),
                    ACK_RELEASE => release(r, limits),
                    // REJECT, and GAP (an offset with no record: compacted or a control batch)
                    _ => finish(r, RecordState::Archived),
                }
            }
        }
        self.advance();
        Ok(())
    }

    /// Releases every record `member` holds (its share session closed). Returns whether any.
    pub fn release_member(&mut self, member: &str, limits: &Limits) -> bool {
        let mut changed = false;
        for r in self.records.iter_mut() {
            if r.state == RecordState::Acquired && r.member.as_deref() == Some(member) {
                release(r, limits);
                changed = true;
            }
        }
        if changed {
            self.advance();
        }
        changed
    }

    /// The state to persist: runs of equal state and delivery count over the window, an
    /// acquired record counted as available (with the delivery it is in).
    pub fn snapshot(&self) -> Vec<StateBatch> {
        let mut out: Vec<StateBatch> = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            let offset = self.start_offset + i as i64;
            let code = r.state.persisted_code();
            match out.last_mut() {
                Some(b) if b.delivery_state == code && b.delivery_count == r.delivery_count => {
                    b.last_offset = offset;
                }
                _ => out.push(StateBatch {
                    first_offset: offset,
                    last_offset: offset,
                    delivery_state: code,
                    delivery_count: r.delivery_count,
                }),
            }
        }
        out
    }

    /// Moves the SPSO past the leading records that are done.
    fn advance(&mut self) {
        while self.records.front().is_some_and(|r| r.state.done()) {
            self.records.pop_front();
            self.start_offset += 1;
        }
    }
}

fn finish(r: &mut InFlight, state: RecordState) {
    r.state = state;
    r.member = None;
}

/// A released or timed-out record: available again, or archived at the delivery-count limit.
fn release(r: &mut InFlight, limits: &Limits) {
    r.member = None;
    r.state = if r.delivery_count >= limits.delivery_count_limit {
        RecordState::Archived
    } else {
        RecordState::Available
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        lock_duration_ms: 1000,
        delivery_count_limit: 3,
        max_record_locks: 10,
    };

    fn m(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn acquire_ack_and_advance() {
        let mut sp = SharePartition::new(0, 0);
        let a = sp.acquire(&m("a"), 0..=4, 100, &[], 0, &LIMITS);
        assert_eq!(
            a,
            vec![Acquired {
                first_offset: 0,
                last_offset: 4,
                delivery_count: 1
            }]
        );
        assert_eq!(sp.end_offset(), 5);
        assert_eq!(sp.next_fetch_offset(&LIMITS), Some(5));
        // Another member cannot acknowledge a's records.
        assert!(matches!(
            sp.acknowledge("b", &[(0, 0, vec![ACK_ACCEPT])], &LIMITS),
            Err(AckError::InvalidRecordState(_))
        ));
        sp.acknowledge("a", &[(0, 1, vec![ACK_ACCEPT])], &LIMITS)
            .unwrap();
        assert_eq!(sp.start_offset(), 2);
        sp.acknowledge(
            "a",
            &[(2, 4, vec![ACK_RELEASE, ACK_REJECT, ACK_ACCEPT])],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(sp.start_offset(), 2);
        assert_eq!(sp.next_fetch_offset(&LIMITS), Some(2));
        // Acknowledged twice: not acquired any more.
        assert!(sp
            .acknowledge("a", &[(4, 4, vec![ACK_ACCEPT])], &LIMITS)
            .is_err());
        let b = sp.acquire(&m("b"), 2..=4, 100, &[], 0, &LIMITS);
        assert_eq!(
            b,
            vec![Acquired {
                first_offset: 2,
                last_offset: 2,
                delivery_count: 2
            }]
        );
    }

    #[test]
    fn never_acquired_is_invalid_record_state() {
        let mut sp = SharePartition::new(10, 0);
        assert!(matches!(
            sp.acknowledge("a", &[(10, 12, vec![ACK_ACCEPT])], &LIMITS),
            Err(AckError::InvalidRecordState(_))
        ));
        assert!(matches!(
            sp.acknowledge("a", &[(12, 10, vec![ACK_ACCEPT])], &LIMITS),
            Err(AckError::InvalidRequest(_))
        ));
    }

    #[test]
    fn locks_expire_and_the_delivery_limit_archives() {
        let mut sp = SharePartition::new(0, 0);
        let mut now = 0;
        for round in 1..=3 {
            let a = sp.acquire(&m("a"), 0..=0, 100, &[], now, &LIMITS);
            assert_eq!(a.len(), 1, "round {round}");
            assert_eq!(a[0].delivery_count, round);
            assert!(!sp.expire_locks(now + 999, &LIMITS));
            now += 1000;
            assert!(sp.expire_locks(now, &LIMITS));
        }
        // Third delivery timed out at the limit of 3: archived.
        assert_eq!(sp.start_offset(), 1);
        assert!(sp
            .acquire(&m("a"), 0..=0, 100, &[], now, &LIMITS)
            .is_empty());
    }

    #[test]
    fn window_is_bounded_and_control_batches_are_archived() {
        let mut sp = SharePartition::new(0, 0);
        let a = sp.acquire(&m("a"), 0..=100, 100, &[(3, 3)], 0, &LIMITS);
        assert_eq!(a.len(), 2);
        assert_eq!(sp.end_offset(), 10);
        assert_eq!(sp.next_fetch_offset(&LIMITS), None);
        assert!(sp.release_member("a", &LIMITS));
        assert_eq!(sp.next_fetch_offset(&LIMITS), Some(0));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut sp = SharePartition::new(5, 2);
        sp.acquire(&m("a"), 5..=9, 100, &[], 0, &LIMITS);
        sp.acknowledge(
            "a",
            &[(6, 6, vec![ACK_ACCEPT]), (8, 8, vec![ACK_REJECT])],
            &LIMITS,
        )
        .unwrap();
        let snap = sp.snapshot();
        let back = SharePartition::restore(sp.start_offset(), 2, &snap);
        assert_eq!(back.start_offset(), 5);
        assert_eq!(back.end_offset(), 10);
        assert_eq!(back.snapshot(), snap);
        let mut back = back;
        let again = back.acquire(&m("b"), 5..=9, 100, &[], 0, &LIMITS);
        assert_eq!(
            again
                .iter()
                .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
                .collect::<Vec<_>>(),
            vec![(5, 5, 2), (7, 7, 2), (9, 9, 2)]
        );
    }
}
