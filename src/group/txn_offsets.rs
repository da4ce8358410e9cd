//! Offsets committed inside a transaction (TxnOffsetCommit, `sendOffsetsToTransaction`), as
//! Kafka's `GroupMetadataManager` keeps them: written to `__consumer_offsets` as the
//! producer's transactional batch, held as the producer's pending offsets, and made the
//! group's committed offsets only when the transaction's COMMIT marker is written there (an
//! ABORT drops them). OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT for a
//! partition with pending offsets.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::offsets::{offset_records, CommittedOffset, OffsetCommit};
use super::records::partition_for;
use super::{append_error, GroupCoordinator, GroupEntry, OFFSETS_TOPIC};
use crate::log::batch::{self, BatchProducer};
use crate::log::producer_state::AppendOrigin;
use crate::log::producer_state::ProducerError;
use crate::log::LogError;
use crate::replica::{now_ms, PartitionError, Written};

/// The producer a TxnOffsetCommit comes from, and the member it commits for.
#[derive(Debug, Clone)]
pub struct TxnCommitter {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
}

/// A producer's pending offsets in one group: partition -> offset.
pub type PendingOffsets = HashMap<(String, i32), CommittedOffset>;

impl GroupEntry {
    /// Takes in the pending offsets of `producer_id` as committed (COMMIT) or drops them.
    fn complete_transaction(&mut self, producer_id: i64, commit: bool) {
        let Some(pending) = self.pending_txn.remove(&producer_id) else {
            return;
        };
        if commit {
            for ((topic, partition), committed) in pending {
                self.commit_replicated(&topic, partition, committed);
            }
        }
    }
}

/// How a failed `__consumer_offsets` append answers a TxnOffsetCommit (Kafka's
/// `GroupMetadataManager.storeOffsets` mapping).
fn txn_append_error(e: &PartitionError) -> ResponseError {
    match e {
        PartitionError::Log(LogError::Producer(ProducerError::InvalidProducerEpoch(_))) => {
            ResponseError::InvalidProducerEpoch
        }
        _ => append_error(e),
    }
}

impl GroupCoordinator {
    /// TxnOffsetCommit: an error code per entry, in order, or the error for the whole request.
    pub async fn txn_commit_offsets(
        &self,
        group_id: &str,
        committer: &TxnCommitter,
        commits: Vec<OffsetCommit>,
    ) -> Result<Vec<i16>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.check_coordinator(group_id)?;
        let image = self.meta.image();
        let handle = self.get_or_create(group_id);
        let (mut errors, accepted) = self.screen_commits(&image, &commits, now_ms());
        let written = {
            let entry = handle.lock();
            // Kafka checks the member only when the request names one (KIP-447).
            let named = committer.generation >= 0
                || !committer.member_id.is_empty()
                || committer.group_instance_id.is_some();
            if named {
                if let Err(e) = entry.group.validate_offset_commit(
                    &committer.member_id,
                    committer.group_instance_id.as_deref(),
                    committer.generation,
                ) {
                    return Ok(vec![e.code(); commits.len()]);
                }
            }
            if accepted.is_empty() {
                return Ok(errors);
            }
            self.append_transactional(
                group_id,
                committer,
                &offset_records(group_id, &commits, &accepted),
            )
        };
        let stored = match written {
            Err(e) => Err(e),
            Ok(w) => self.replicated(&w).await.map(|()| w),
        };
        match stored {
            Ok(w) => {
                let mut entry = handle.lock();
                let pending = entry.pending_txn.entry(committer.producer_id).or_default();
                for (n, (i, value)) in accepted.into_iter().enumerate() {
                    let c = &commits[i];
                    pending.insert(
                        (c.topic.clone(), c.partition),
                        CommittedOffset {
                            value,
                            record_offset: w.record_offset(n),
                        },
                    );
                }
            }
            Err(e) => {
                for (i, _) in &accepted {
                    errors[*i] = e.code();
                }
            }
        }
        Ok(errors)
    }

    /// Appends offset records as `committer`'s transactional batch (coordinator origin: the
    /// producer epoch is checked, not the sequence). Call with the group's lock held.
    fn append_transactional(
        &self,
        group: &str,
        committer: &TxnCommitter,
        records: &[(Bytes, Option<Bytes>)],
    ) -> Result<Written, ResponseError> {
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, self.partition_for(group))
            .ok_or(ResponseError::NotCoordinator)?;
        let refs: Vec<batch::KeyValue<'_>> = records
            .iter()
            .map(|(k, v)| (Some(&k[..]), v.as_deref()))
            .collect();
        let producer = BatchProducer {
            producer_id: committer.producer_id,
            producer_epoch: committer.producer_epoch,
            transactional: true,
        };
        let raw = batch::encode_records_batch(&refs, now_ms(), Some(producer));
        let view = batch::check_batch(&raw).map_err(|_| ResponseError::UnknownServerError)?;
        let info = partition
            .append_from(&view, -1, now_ms(), AppendOrigin::Coordinator)
            .map_err(|e| txn_append_error(&e))?;
        Ok(Written::new(partition, &info))
    }

    /// A transaction's marker was written (and replicated) to these `__consumer_offsets`
    /// partitions: the producer's pending offsets in their groups become committed, or go.
    pub fn complete_transaction(&self, producer_id: i64, partitions: &[i32], commit: bool) {
        let n = self.config.offsets_partitions;
        let groups: Vec<_> = self
            .groups
            .lock()
            .iter()
            .filter(|(id, _)| partitions.contains(&partition_for(id, n)))
            .map(|(_, h)| h.clone())
            .collect();
        for handle in groups {
            handle.lock().complete_transaction(producer_id, commit);
        }
    }

    /// Whether a transaction has offsets pending for `topic`/`partition` in `group` (OffsetFetch
    /// with `require_stable`).
    pub fn has_pending_offsets(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.group(group).is_some_and(|h| {
            h.lock()
                .pending_txn
                .values()
                .any(|pending| pending.contains_key(&key))
        })
    }
}
