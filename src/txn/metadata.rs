//! One transactional id's state, and the transitions Kafka's `TransactionMetadata` allows:
//! pure, no I/O. A transition is computed here, persisted to `__transaction_state` by the
//! coordinator, and only then takes effect; while one is in flight the id is busy
//! (CONCURRENT_TRANSACTIONS).

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

/// Kafka's transaction states, with their ids in `TransactionLogValue.TransactionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            7 => Self::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name ListTransactions and DescribeTransactions report (Kafka's `TransactionState`
    /// names, as `kafka-transactions` prints them).
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
            Self::Dead => "Dead",
            Self::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        (0..=7).filter_map(Self::from_id).find(|s| s.name() == name)
    }
}

/// A topic partition in a transaction.
pub type TopicPartition = (String, i32);

/// What the coordinator knows of a transactional id (Kafka's `TransactionMetadata`, the part
/// written to the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhausted), or -1.
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, for a producer retrying InitProducerId (KIP-360).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Kafka rotates the producer id when the epoch would pass this.
pub const MAX_EPOCH: i16 = i16::MAX - 1;

/// The outcome of EndTxn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnResult {
    Commit,
    Abort,
}

impl TxnMetadata {
    /// A new transactional id's state before its first InitProducerId is persisted.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        Self {
            producer_id,
            previous_producer_id: -1,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    pub fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= MAX_EPOCH
    }

    /// InitProducerId on an Empty or completed transaction: the next epoch (a new producer
    /// id at epoch 0 when the epoch is exhausted, which the caller allocates). With
    /// `expected_epoch` (a producer retrying with its current id and epoch, KIP-360) the epoch
    /// must be the current or the last one.
    pub fn bump_for_init(
        &self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        new_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Self, ResponseError> {
        let mut next = self.clone();
        next.timeout_ms = timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        if let Some(pid) = new_producer_id {
            next.previous_producer_id = self.producer_id;
            next.producer_id = pid;
            next.producer_epoch = 0;
            next.last_producer_epoch = -1;
            return Ok(next);
        }
        // Kafka's `prepareIncrementProducerEpoch`.
        let bumped = self.producer_epoch + 1;
        let (epoch, last) = match expected_epoch {
            None => (bumped, -1),
            Some(e) if self.producer_epoch == -1 || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            // A retry of an InitProducerId whose response the producer never got.
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(ResponseError::ProducerFenced),
        };
        next.producer_epoch = epoch;
        next.last_producer_epoch = last;
        Ok(next)
    }

    /// Fences the current producer of an Ongoing transaction (a new InitProducerId, or a
    /// timeout): the epoch moves on and the transaction will be aborted with it.
    pub fn fence_epoch(&self) -> Self {
        let mut next = self.clone();
        if self.producer_epoch < MAX_EPOCH {
            next.last_producer_epoch = self.producer_epoch;
            next.producer_epoch = self.producer_epoch + 1;
        }
        next
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the transaction is Ongoing with these partitions.
    pub fn add_partitions(&self, partitions: &[TopicPartition], now_ms: i64) -> Self {
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.start_ms = now_ms;
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        next
    }

    /// EndTxn: PrepareCommit or PrepareAbort.
    pub fn prepare_end(&self, result: TxnResult, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.state = match result {
            TxnResult::Commit => TxnState::PrepareCommit,
            TxnResult::Abort => TxnState::PrepareAbort,
        };
        next.last_update_ms = now_ms;
        next
    }

    /// Every marker written: CompleteCommit or CompleteAbort, no partitions left.
    pub fn complete(&self, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next
    }

    /// The id expired (`transactional.id.expiration.ms`): its tombstone is written.
    pub fn dead(&self, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.state = TxnState::Dead;
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next
    }

    /// Whether `(producer_id, epoch)` is this transaction's current producer.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            Err(ResponseError::InvalidProducerIdMapping)
        } else if epoch != self.producer_epoch {
            Err(ResponseError::ProducerFenced)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn init_bumps_the_epoch_and_kip_360_retries_are_recognised() {
        let m = TxnMetadata::new(7, 60_000, 0);
        let first = m.bump_for_init(60_000, None, None, 1).expect("init");
        assert_eq!((first.producer_id, first.producer_epoch), (7, 0));
        let second = first.bump_for_init(60_000, Some(0), None, 2).expect("init");
        assert_eq!(second.producer_epoch, 1);
        // A retry with the epoch before the bump gets the same epoch again.
        let retry = second
            .bump_for_init(60_000, Some(0), None, 3)
            .expect("retry");
        assert_eq!(retry.producer_epoch, 1);
        // Any other epoch is fenced.
        assert_eq!(
            second.bump_for_init(60_000, Some(5), None, 3),
            Err(ResponseError::ProducerFenced)
        );
        // A rotation starts a new producer id at epoch 0.
        let rotated = second
            .bump_for_init(60_000, None, Some(99), 4)
            .expect("rotate");
        assert_eq!(
            (
                rotated.producer_id,
                rotated.producer_epoch,
                rotated.previous_producer_id
            ),
            (99, 0, 7)
        );
    }

    #[test]
    fn a_transaction_goes_ongoing_prepare_complete() {
        let m = TxnMetadata::new(1, 1_000, 0)
            .bump_for_init(1_000, None, None, 0)
            .expect("init");
        let ongoing = m.add_partitions(&[tp("a", 0)], 10);
        assert_eq!((ongoing.state, ongoing.start_ms), (TxnState::Ongoing, 10));
        let more = ongoing.add_partitions(&[tp("b", 1)], 20);
        assert_eq!(
            more.start_ms, 10,
            "the transaction started with its first partition"
        );
        assert_eq!(more.partitions.len(), 2);
        let prepared = more.prepare_end(TxnResult::Abort, 30);
        assert_eq!(prepared.state, TxnState::PrepareAbort);
        let done = prepared.complete(40);
        assert_eq!(done.state, TxnState::CompleteAbort);
        assert!(done.partitions.is_empty());
        assert_eq!(done.check_producer(1, 0), Ok(()));
        assert_eq!(
            done.check_producer(1, 1),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            done.check_producer(2, 0),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(done.fence_epoch().producer_epoch, 1);
        assert_eq!(
            TxnState::by_name("PrepareAbort"),
            Some(TxnState::PrepareAbort)
        );
    }
}
