//! The coordinator's housekeeping, as Kafka's `TransactionStateManager` does it: a transaction
//! Ongoing for longer than its timeout is aborted with its producer's epoch bumped, so that the
//! producer is fenced (every `transaction.abort.timed.out.transaction.cleanup.interval.ms`);
//! a transactional id idle for `transactional.id.expiration.ms` after its last transaction is
//! forgotten, with a tombstone.

use std::sync::Arc;

use super::metadata::{TxnResult, TxnState};
use super::TransactionCoordinator;
use crate::replica::now_ms;

impl TransactionCoordinator {
    /// Aborts transactions past their timeout.
    pub async fn abort_timed_out(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<String> = self
            .txns
            .lock()
            .iter()
            .filter(|(_, h)| {
                let e = h.lock();
                !e.busy
                    && e.meta.state == TxnState::Ongoing
                    && e.meta.start_ms.saturating_add(i64::from(e.meta.timeout_ms)) < now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Ok(owner) = self.owner(&id) else { continue };
            let Some(handle) = self.entry(&id) else {
                continue;
            };
            let next = {
                let mut e = handle.lock();
                if e.busy || e.meta.state != TxnState::Ongoing {
                    continue;
                }
                e.busy = true;
                e.meta.fence_epoch().prepare_end(TxnResult::Abort, now_ms())
            };
            tracing::info!(transactional_id = %id, producer_id = next.producer_id,
                "aborting a transaction that passed its timeout");
            match self.transition(&id, &handle, owner, next.clone()).await {
                Ok(()) => self.send_markers(id, next, owner),
                Err(e) => {
                    tracing::info!(transactional_id = %id, error = ?e, "aborting a timed-out transaction failed")
                }
            }
        }
    }

    /// Forgets transactional ids idle past `transactional.id.expiration.ms`.
    pub async fn expire_ids(&self) {
        let now = now_ms();
        let expiration = self.config.id_expiration_ms;
        let due: Vec<String> = self
            .txns
            .lock()
            .iter()
            .filter(|(_, h)| {
                let e = h.lock();
                !e.busy
                    && matches!(
                        e.meta.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
                    && e.meta.last_update_ms.saturating_add(expiration) <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Ok(owner) = self.owner(&id) else { continue };
            let Some(handle) = self.entry(&id) else {
                continue;
            };
            {
                let mut e = handle.lock();
                if e.busy || e.meta.last_update_ms.saturating_add(expiration) > now {
                    continue;
                }
                e.busy = true;
            }
            let written = self.write(&id, owner, None).await;
            handle.lock().busy = false;
            if written.is_ok() && self.still_owner(owner) {
                self.txns.lock().remove(&id);
                tracing::info!(transactional_id = %id, "expired an idle transactional id");
            }
        }
    }
}
