//! The coordinator's entry points, with Kafka's `TransactionCoordinator` rules and errors:
//! InitProducerId (epoch bumps, zombie fencing, KIP-360 retries), AddPartitionsToTxn and its
//! KIP-890 verify-only form, AddOffsetsToTxn, EndTxn, DescribeTransactions and
//! ListTransactions.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use super::metadata::{TopicPartition, TxnMetadata, TxnResult, TxnState};
use super::{Owner, TransactionCoordinator, TxnEntry, TxnHandle};
use crate::group::OFFSETS_TOPIC;
use crate::replica::now_ms;

/// DescribeTransactions' view of one transactional id.
#[derive(Debug, Clone)]
pub struct DescribedTxn {
    pub state: TxnState,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<TopicPartition>,
}

/// ListTransactions' view of one transactional id.
#[derive(Debug, Clone)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

/// What a KIP-890 verification found: per partition, none or the error.
pub type VerifyOutcome = Vec<(TopicPartition, Option<ResponseError>)>;

/// Why InitProducerId must wait: the ongoing transaction it fenced is being aborted.
enum InitStep {
    Done(i64, i16),
    /// The epoch is exhausted: allocate a new producer id and try again.
    NeedsProducerId,
}

impl TransactionCoordinator {
    /// InitProducerId with a transactional id: the producer id and its new epoch.
    pub async fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        let owner = self.owner(transactional_id)?;
        let handle = match self.entry(transactional_id) {
            Some(h) => h,
            None => {
                let producer_id = self.new_producer_id().await?;
                let created = Arc::new(Mutex::new(TxnEntry {
                    meta: TxnMetadata::new(producer_id, timeout_ms, now_ms()),
                    busy: false,
                }));
                self.txns
                    .lock()
                    .entry(transactional_id.to_string())
                    .or_insert(created)
                    .clone()
            }
        };
        let mut new_producer_id = None;
        loop {
            match self
                .init_step(
                    transactional_id,
                    &handle,
                    owner,
                    timeout_ms,
                    expected,
                    new_producer_id,
                )
                .await?
            {
                InitStep::Done(pid, epoch) => {
                    tracing::info!(
                        transactional_id,
                        producer_id = pid,
                        producer_epoch = epoch,
                        partition = owner.partition,
                        "initialized transactional id"
                    );
                    return Ok((pid, epoch));
                }
                InitStep::NeedsProducerId => {
                    new_producer_id = Some(self.new_producer_id().await?);
                }
            }
        }
    }

    async fn new_producer_id(&self) -> Result<i64, ResponseError> {
        self.producer_ids.next(&self.meta).await.map_err(|e| {
            tracing::warn!(error = %e, "allocating a producer id block failed");
            ResponseError::CoordinatorLoadInProgress
        })
    }

    async fn init_step(
        self: &Arc<Self>,
        transactional_id: &str,
        handle: &TxnHandle,
        owner: Owner,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        new_producer_id: Option<i64>,
    ) -> Result<InitStep, ResponseError> {
        let (next, fencing) = {
            let mut entry = handle.lock();
            if entry.busy {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let m = entry.meta.clone();
            // KIP-360: a producer that names its id and epoch is fenced unless it is this
            // transaction's producer (or retries after a rotation it never heard of).
            let valid = expected.is_none_or(|(pid, epoch)| {
                m.producer_epoch == -1
                    || pid == m.producer_id
                    || (pid == m.previous_producer_id && epoch >= super::metadata::MAX_EPOCH)
            });
            if !valid {
                return Err(ResponseError::ProducerFenced);
            }
            let next = match m.state {
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    let rotate =
                        m.epoch_exhausted() && expected.is_none_or(|(_, e)| e == m.producer_epoch);
                    if rotate && new_producer_id.is_none() {
                        return Ok(InitStep::NeedsProducerId);
                    }
                    let next = m.bump_for_init(
                        timeout_ms,
                        expected.map(|(_, e)| e),
                        new_producer_id.filter(|_| rotate),
                        now_ms(),
                    )?;
                    (next, false)
                }
                // Fence the producer and abort its transaction; the client retries.
                TxnState::Ongoing => (
                    m.fence_epoch().prepare_end(TxnResult::Abort, now_ms()),
                    true,
                ),
                TxnState::PrepareCommit
                | TxnState::PrepareAbort
                | TxnState::Dead
                | TxnState::PrepareEpochFence => return Err(ResponseError::ConcurrentTransactions),
            };
            entry.busy = true;
            next
        };
        self.transition(transactional_id, handle, owner, next.clone())
            .await?;
        if fencing {
            self.send_markers(transactional_id.to_string(), next, owner);
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(InitStep::Done(next.producer_id, next.producer_epoch))
    }

    /// The entry of a transactional id named by a producer request, checked against the
    /// producer's id and epoch.
    fn producer_entry(&self, transactional_id: &str) -> Result<(TxnHandle, Owner), ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let owner = self.owner(transactional_id)?;
        let handle = self
            .entry(transactional_id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        Ok((handle, owner))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
    /// `__consumer_offsets` partition): the transaction is Ongoing with them.
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<(), ResponseError> {
        let (handle, owner) = self.producer_entry(transactional_id)?;
        let next = {
            let mut entry = handle.lock();
            entry.meta.check_producer(producer_id, producer_epoch)?;
            if entry.busy {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let m = &entry.meta;
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    return Err(ResponseError::ConcurrentTransactions)
                }
                TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => {
                    return Ok(())
                }
                _ => {}
            }
            let next = m.add_partitions(partitions, now_ms());
            entry.busy = true;
            next
        };
        self.transition(transactional_id, &handle, owner, next)
            .await
    }

    /// AddOffsetsToTxn: the group's offsets partition joins the transaction.
    pub async fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<(), ResponseError> {
        let partition = (OFFSETS_TOPIC.to_string(), self.groups.partition_for(group));
        self.add_partitions(transactional_id, producer_id, producer_epoch, &[partition])
            .await
    }

    /// AddPartitionsToTxn v4+ with verify_only (KIP-890, from a partition leader): whether
    /// each partition is in the producer's ongoing transaction. A partition that is not gets
    /// TRANSACTION_ABORTABLE, as Kafka answers.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<VerifyOutcome, ResponseError> {
        let (handle, _) = self.producer_entry(transactional_id)?;
        let entry = handle.lock();
        let m = &entry.meta;
        if m.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| {
                let error =
                    (!m.partitions.contains(p)).then_some(ResponseError::TransactionAbortable);
                (p.clone(), error)
            })
            .collect())
    }

    /// EndTxn from a client (or the abort of a fenced or timed-out transaction, with the
    /// bumped epoch, `from_client` false).
    pub async fn end_transaction(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        result: TxnResult,
    ) -> Result<(), ResponseError> {
        let (handle, owner) = self.producer_entry(transactional_id)?;
        let next = {
            let mut entry = handle.lock();
            let m = &entry.meta;
            if m.producer_id != producer_id {
                return Err(ResponseError::InvalidProducerIdMapping);
            }
            if producer_epoch != m.producer_epoch {
                return Err(ResponseError::ProducerFenced);
            }
            if entry.busy {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let retried = match (m.state, result) {
                (TxnState::Ongoing, _) => None,
                (TxnState::CompleteCommit, TxnResult::Commit)
                | (TxnState::CompleteAbort, TxnResult::Abort) => Some(Ok(())),
                (TxnState::PrepareCommit, TxnResult::Commit)
                | (TxnState::PrepareAbort, TxnResult::Abort) => {
                    Some(Err(ResponseError::ConcurrentTransactions))
                }
                _ => {
                    tracing::debug!(
                        transactional_id,
                        state = m.state.name(),
                        ?result,
                        "EndTxn in a state that does not allow it"
                    );
                    Some(Err(ResponseError::InvalidTxnState))
                }
            };
            if let Some(answer) = retried {
                return answer;
            }
            let next = m.prepare_end(result, now_ms());
            entry.busy = true;
            next
        };
        self.transition(transactional_id, &handle, owner, next.clone())
            .await?;
        self.send_markers(transactional_id.to_string(), next, owner);
        Ok(())
    }

    /// DescribeTransactions for one id.
    pub fn describe(&self, transactional_id: &str) -> Result<DescribedTxn, ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.owner(transactional_id)?;
        let handle = self
            .entry(transactional_id)
            .ok_or(ResponseError::TransactionalIdNotFound)?;
        let entry = handle.lock();
        let m = &entry.meta;
        if m.state == TxnState::Dead {
            return Err(ResponseError::TransactionalIdNotFound);
        }
        Ok(DescribedTxn {
            state: m.state,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            timeout_ms: m.timeout_ms,
            start_ms: m.start_ms,
            partitions: m.partitions.iter().cloned().collect(),
        })
    }

    /// ListTransactions: the ids coordinated here, filtered by state and producer id (empty
    /// filters match all) and by having started more than `min_duration_ms` ago (-1: any), as
    /// Kafka's `listTransactionStates` filters them.
    pub fn list(
        &self,
        states: &[TxnState],
        producer_ids: &[i64],
        min_duration_ms: i64,
    ) -> Vec<ListedTxn> {
        let now = now_ms();
        let mut out: Vec<ListedTxn> = self
            .txns
            .lock()
            .iter()
            .filter_map(|(id, h)| {
                let e = h.lock();
                let m = &e.meta;
                let matches = m.state != TxnState::Dead
                    && (states.is_empty() || states.contains(&m.state))
                    && (producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
                    && (min_duration_ms < 0 || now.saturating_sub(m.start_ms) > min_duration_ms);
                matches.then(|| ListedTxn {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    state: m.state,
                })
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}
