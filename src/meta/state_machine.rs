//! The metadata state machine (openraft `RaftStateMachine`): applies committed records to the
//! `MetadataImage`, publishes every new image on a watch channel, and keeps the durable snapshot
//! (`snapshot.bin`: the serialized image with its last applied log id and membership).
//!
//! The image itself is in memory. On restart openraft installs the snapshot from disk and
//! re-applies the log up to the persisted committed id (see `log_store.rs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::{ApplyOutcome, MetadataImage};
use super::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use super::wal::{decode_frame, encode_frame};

pub(super) const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_TMP_FILE: &str = "snapshot.bin.tmp";
/// Upper bound of the snapshot metadata frame.
const MAX_SNAPSHOT_META_LEN: usize = 64 << 20;
/// Upper bound of a snapshot's data, on disk and on the wire.
pub(super) const MAX_SNAPSHOT_LEN: usize = 1 << 30;

/// The snapshot data: everything needed to rebuild the state machine.
#[derive(Serialize)]
struct SnapshotPayloadRef<'a> {
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    image: &'a MetadataImage,
}

#[derive(Deserialize)]
struct SnapshotPayload {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image: MetadataImage,
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The durable current snapshot, shared by the state machine and its snapshot builders.
pub(super) struct SnapshotStore {
    dir: PathBuf,
    state: tokio::sync::Mutex<SnapshotState>,
}

struct SnapshotState {
    meta: Option<SnapshotMeta>,
    /// After `close` nothing is written any more (a restart may already own the directory).
    closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SaveMode {
    /// An installed snapshot replaces whatever is there, unless it is the same one.
    Replace,
    /// A locally built snapshot never replaces a newer one (it may race with an install).
    IfNewer,
}

impl SnapshotStore {
    /// Loads and verifies the snapshot file in `dir`, if any. Blocking.
    fn open(dir: &Path) -> io::Result<Self> {
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP_FILE));
        let meta = match fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => Some(decode_snapshot_file(&bytes)?.0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            state: tokio::sync::Mutex::new(SnapshotState {
                meta,
                closed: false,
            }),
        })
    }

    async fn save(&self, meta: &SnapshotMeta, data: &[u8], mode: SaveMode) -> io::Result<()> {
        let mut state = self.state.lock().await;
        if state.closed {
            return Ok(());
        }
        if let Some(current) = &state.meta {
            let skip = match mode {
                SaveMode::Replace => current.last_log_id == meta.last_log_id,
                SaveMode::IfNewer => current.last_log_id >= meta.last_log_id,
            };
            if skip {
                return Ok(());
            }
        }
        let header = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut file_bytes = encode_frame(&header)?;
        file_bytes.extend_from_slice(&encode_frame(data)?);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &file_bytes))
            .await
            .map_err(io::Error::other)??;
        state.meta = Some(meta.clone());
        Ok(())
    }

    async fn load(&self) -> io::Result<Option<Snapshot>> {
        let state = self.state.lock().await;
        let Some(meta) = state.meta.clone() else {
            return Ok(None);
        };
        let path = self.dir.join(SNAPSHOT_FILE);
        let bytes = tokio::task::spawn_blocking(move || fs::read(path))
            .await
            .map_err(io::Error::other)??;
        let (file_meta, data) = decode_snapshot_file(&bytes)?;
        if file_meta != meta {
            return Err(invalid_data(
                "snapshot file does not match its recorded metadata",
            ));
        }
        Ok(Some(Snapshot {
            meta,
            snapshot: data,
        }))
    }

    /// Stops all further snapshot writes; waits for one in progress.
    pub(super) async fn close(&self) {
        self.state.lock().await.closed = true;
    }
}

fn write_atomically(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::durable::replace(&dir.join(SNAPSHOT_FILE), bytes)
}

fn decode_snapshot_file(bytes: &[u8]) -> io::Result<(SnapshotMeta, SnapshotData)> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| invalid_data(format!("snapshot file: {what}: {e}"));
    let (header, header_len) =
        decode_frame(bytes, MAX_SNAPSHOT_META_LEN).map_err(|e| corrupt("metadata", &e))?;
    let meta: SnapshotMeta = serde_json::from_slice(header).map_err(|e| corrupt("metadata", &e))?;
    let rest = &bytes[header_len..];
    let (data, data_len) = decode_frame(rest, MAX_SNAPSHOT_LEN).map_err(|e| corrupt("data", &e))?;
    if data_len != rest.len() {
        return Err(invalid_data("snapshot file: trailing bytes"));
    }
    Ok((meta, data.to_vec()))
}

/// The metadata state machine. Owned by openraft; readers use the watch channels.
pub struct MetaStateMachine {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image_tx: watch::Sender<Arc<MetadataImage>>,
    applied_tx: watch::Sender<Option<u64>>,
    snapshots: Arc<SnapshotStore>,
}

impl MetaStateMachine {
    /// Opens the state machine over `dir` (created by the caller). Blocking. The image starts
    /// empty; openraft restores it from the snapshot and the log when Raft starts.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let image = Arc::new(MetadataImage::default());
        let (image_tx, _) = watch::channel(image.clone());
        let (applied_tx, _) = watch::channel(None);
        Ok(Self {
            image,
            last_applied: None,
            last_membership: StoredMembership::default(),
            image_tx,
            applied_tx,
            snapshots: Arc::new(SnapshotStore::open(dir)?),
        })
    }

    pub(super) fn subscribe_image(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image_tx.subscribe()
    }

    /// The index of the last applied log entry, published after the image.
    pub(super) fn subscribe_applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied_tx.subscribe()
    }

    pub(super) fn snapshot_store(&self) -> Arc<SnapshotStore> {
        self.snapshots.clone()
    }

    fn publish(&self) {
        self.image_tx.send_replace(self.image.clone());
        self.applied_tx
            .send_replace(self.last_applied.as_ref().map(|l| l.index));
    }
}

/// A consistent view of the state machine, serialized into a snapshot off the apply path.
pub struct MetaSnapshotBuilder {
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for MetaSnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = serde_json::to_vec(&SnapshotPayloadRef {
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            image: &self.image,
        })
        .map_err(io::Error::other)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        self.snapshots.save(&meta, &data, SaveMode::IfNewer).await?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = MetaSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // The next image is built once per batch, and published before any proposer is told
        // its record was applied, so a proposer always sees its own change in the image.
        let mut next: Option<MetadataImage> = None;
        let mut responders = Vec::new();
        let mut applied_any = false;
        let result = loop {
            let (entry, responder) = match entries.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let outcome = match &entry.payload {
                EntryPayload::Blank => ApplyOutcome::Ok,
                EntryPayload::Normal(record) => next
                    .get_or_insert_with(|| (*self.image).clone())
                    .apply(record),
                EntryPayload::Membership(membership) => {
                    self.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    ApplyOutcome::Ok
                }
            };
            self.last_applied = Some(entry.log_id);
            applied_any = true;
            if let Some(responder) = responder {
                responders.push((responder, outcome));
            }
        };
        if let Some(image) = next {
            self.image = Arc::new(image);
        }
        if applied_any {
            self.publish();
        }
        for (responder, outcome) in responders {
            responder.send(outcome);
        }
        result
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaSnapshotBuilder {
            image: self.image.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let payload: SnapshotPayload = serde_json::from_slice(&snapshot)
            .map_err(|e| invalid_data(format!("snapshot data: {e}")))?;
        if payload.last_applied != meta.last_log_id
            || payload.last_membership != meta.last_membership
        {
            return Err(invalid_data("snapshot data does not match its metadata"));
        }
        // Durable first: once installed, a crash must come back to this state.
        self.snapshots
            .save(meta, &snapshot, SaveMode::Replace)
            .await?;
        self.image = Arc::new(payload.image);
        self.last_applied = payload.last_applied;
        self.last_membership = payload.last_membership;
        self.publish();
        tracing::info!(last_log_id = ?meta.last_log_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.snapshots.load().await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::entry::RaftEntry;
    use uuid::Uuid;

    use super::super::image::{MetadataRecord, TopicImage};
    use super::super::types::Entry;
    use super::*;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::CreateTopic(TopicImage {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            partitions: vec![],
            configs: BTreeMap::new(),
        })
    }

    fn normal(index: u64, record: MetadataRecord) -> Entry {
        Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), record)
    }

    async fn apply(sm: &mut MetaStateMachine, entries: Vec<Entry>) {
        let items = entries.into_iter().map(|e| Ok((e, None)));
        sm.apply(futures::stream::iter(items)).await.unwrap();
    }

    #[tokio::test]
    async fn apply_publishes_image_and_snapshot_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        let images = sm.subscribe_image();
        let applied = sm.subscribe_applied();
        apply(&mut sm, vec![normal(1, topic("a")), normal(2, topic("b"))]).await;
        assert!(images.borrow().topic("a").is_some());
        assert!(images.borrow().topic("b").is_some());
        assert_eq!(*applied.borrow(), Some(2));

        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.as_ref().map(|l| l.index), Some(2));
        drop(sm);

        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("snapshot on disk");
        assert_eq!(current.meta, snap.meta);
        let images = sm.subscribe_image();
        sm.install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(images.borrow().topics.len(), 2);
        assert_eq!(sm.applied_state().await.unwrap().0, snap.meta.last_log_id);
    }

    #[tokio::test]
    async fn corrupt_snapshot_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        apply(&mut sm, vec![normal(1, topic("a"))]).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        drop(sm);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = MetaStateMachine::open(dir.path())
            .err()
            .expect("corruption detected");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn install_rejects_mismatched_or_garbage_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = MetaStateMachine::open(dir.path()).unwrap();
        let meta = SnapshotMeta::default();
        let err = sm
            .install_snapshot(&meta, b"not json".to_vec())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
