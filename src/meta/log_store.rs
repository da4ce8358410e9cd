//! The durable Raft log store of the metadata quorum (openraft `RaftLogStorage`).
//!
//! The log lives in memory as a `BTreeMap` (bounded by snapshots and purging) and on disk in the
//! write-ahead file of `wal.rs`. Every mutation updates memory first, so readers see it at once,
//! and is then queued to the WAL writer, which makes it durable in submission order:
//! `save_vote`, `truncate_after` and `purge` return after the fsync, and the `append` callback
//! fires after the fsync.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use parking_lot::Mutex;

use super::types::{Entry, LogId, TypeConfig, Vote};
use super::wal::{self, Done, Encoded, WalWriter};

/// The metadata log store. Cheap to clone; clones share state (a clone is also the log reader).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    mem: Mutex<MemLog>,
    wal: WalWriter,
}

struct MemLog {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Opens the log in `dir` (created by the caller), replaying and repairing the WAL. Blocking.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let (recovered, wal) = wal::open(dir)?;
        if recovered.torn_bytes > 0 {
            tracing::warn!(
                bytes = recovered.torn_bytes,
                "metadata log: dropped a torn tail at open"
            );
        }
        tracing::info!(
            entries = recovered.entries.len(),
            last_purged = ?recovered.last_purged,
            committed = ?recovered.committed,
            "metadata log opened"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                mem: Mutex::new(MemLog {
                    entries: recovered.entries,
                    last_purged: recovered.last_purged,
                    vote: recovered.vote,
                    committed: recovered.committed,
                }),
                wal,
            }),
        })
    }

    /// Flushes and stops the WAL writer; later writes fail. Blocking; idempotent.
    pub fn close(&self) {
        self.shared.wal.close();
    }

    /// Queues `records` and waits until they are durable.
    async fn write_durable(&self, records: Vec<Encoded>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.wal.submit(records, Done::Reply(tx))?;
        rx.await
            .map_err(|_| io::Error::other("metadata log writer stopped"))?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mem = self.shared.mem.lock();
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.mem.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.shared.mem.lock();
        let last_log_id = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or_else(|| mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_durable(vec![Encoded::vote(vote)?]).await?;
        self.shared.mem.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let record = Encoded::committed(committed.as_ref())?;
        let mut mem = self.shared.mem.lock();
        // Not awaited: the record rides on this or the next fsync. Losing it in a crash only
        // means re-applying from an older committed id, which openraft handles.
        self.shared.wal.submit(vec![record], Done::Nothing)?;
        mem.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.mem.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let records = entries
            .iter()
            .map(Encoded::entry)
            .collect::<io::Result<Vec<_>>>()?;
        let mut mem = self.shared.mem.lock();
        // Memory and file see the same order of mutations: both are updated under this lock.
        self.shared.wal.submit(records, Done::Flushed(callback))?;
        mem.entries.split_off(&first);
        for entry in entries {
            mem.entries.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_upto = last_log_id.map(|l| l.index);
        let record = Encoded::truncate_after(keep_upto)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut mem = self.shared.mem.lock();
            self.shared.wal.submit(vec![record], Done::Reply(tx))?;
            match keep_upto {
                Some(index) => drop(mem.entries.split_off(&(index + 1))),
                None => mem.entries.clear(),
            }
        }
        rx.await
            .map_err(|_| io::Error::other("metadata log writer stopped"))?
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let record = Encoded::purge(&log_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut mem = self.shared.mem.lock();
            self.shared.wal.submit(vec![record], Done::Reply(tx))?;
            let kept = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = kept;
            if mem.last_purged.as_ref() < Some(&log_id) {
                mem.last_purged = Some(log_id);
            }
        }
        rx.await
            .map_err(|_| io::Error::other("metadata log writer stopped"))?
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::TypeConfigExt;
    use openraft::StorageError;

    use super::super::state_machine::MetaStateMachine;
    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, MetaStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, MetaStateMachine), StorageError<TypeConfig>>
        {
            let io_err = |e: io::Error| StorageError::read(TypeConfig::err_from_error(&e));
            let dir = tempfile::tempdir().map_err(io_err)?;
            let log = LogStore::open(dir.path()).map_err(io_err)?;
            let sm = MetaStateMachine::open(dir.path()).map_err(io_err)?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's conformance suite for `RaftLogStorage` + `RaftStateMachine`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(Builder).await.expect("storage suite");
    }
}
