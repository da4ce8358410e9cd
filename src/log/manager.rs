//! LogManager: every partition log under `<data-dir>/logs`, their recovery at startup, the
//! log directory's flusher thread, the recovery-point, log-start-offset and cleaner-offset
//! checkpoints, scheduled flushes (`flush.ms`) and the clean-shutdown marker.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use super::checkpoint::{self, Checkpoint};
use super::config::LogConfig;
use super::flusher::LogFlusher;
use super::partition_log::PartitionLog;

const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
/// Kafka's file for where each compacted log's dirty section starts.
const CLEANER_FILE: &str = "cleaner-offset-checkpoint";
const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

pub type TopicPartition = (String, i32);

pub struct LogManager {
    dir: PathBuf,
    logs: Mutex<HashMap<TopicPartition, Arc<PartitionLog>>>,
    /// Does the logs' owed fsyncs and seals, off the append path.
    flusher: Arc<LogFlusher>,
    /// Read once at startup; consumed as partitions are opened.
    startup: Mutex<Startup>,
}

struct Startup {
    clean: bool,
    recovery_points: Checkpoint,
    log_starts: Checkpoint,
    cleaner_offsets: Checkpoint,
}

/// Splits a partition directory name `<topic>-<partition>`.
pub fn parse_partition_dir(name: &str) -> Option<TopicPartition> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    (!topic.is_empty() && partition >= 0).then(|| (topic.to_string(), partition))
}

const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Kafka's `partition.metadata`: which topic id a partition directory belongs to.
fn write_partition_metadata(dir: &Path, topic_id: Uuid) -> io::Result<()> {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = format!(
        "version: 0\ntopic_id: {}\n",
        crate::kafka_uuid::kafka_uuid(&topic_id)
    );
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    crate::durable::replace(&path, text.as_bytes())
}

fn read_partition_metadata(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("topic_id: "))?;
    crate::kafka_uuid::parse_kafka_uuid(line.trim())
}

impl LogManager {
    /// Prepares the log directory. Whether the last shutdown was clean is decided here, and
    /// the marker removed, so a crash from now on is seen as unclean.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            std::fs::remove_file(&marker)?;
            crate::durable::sync_dir(dir)?;
        }
        let recovery_points = checkpoint::read(&dir.join(RECOVERY_POINT_FILE));
        let log_starts = checkpoint::read(&dir.join(LOG_START_FILE));
        let cleaner_offsets = checkpoint::read(&dir.join(CLEANER_FILE));
        let has_logs = std::fs::read_dir(dir)?.any(|e| e.is_ok_and(|e| e.path().is_dir()));
        if !clean && has_logs {
            tracing::info!(dir = %dir.display(), "no clean-shutdown marker: logs will be recovered");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            logs: Mutex::new(HashMap::new()),
            flusher: LogFlusher::start("log-flusher")?,
            startup: Mutex::new(Startup {
                clean,
                recovery_points,
                log_starts,
                cleaner_offsets,
            }),
        })
    }

    /// Partition directories present on disk.
    pub fn partitions_on_disk(&self) -> io::Result<Vec<TopicPartition>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(tp) = parse_partition_dir(&entry.file_name().to_string_lossy()) {
                    out.push(tp);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn partition_dir(&self, tp: &TopicPartition) -> PathBuf {
        self.dir.join(format!("{}-{}", tp.0, tp.1))
    }

    /// Opens an existing partition log (recovering it if needed) or creates an empty one.
    /// A directory left by an older topic of the same name (other topic id) is removed first.
    pub fn get_or_open(
        &self,
        tp: &TopicPartition,
        topic_id: Uuid,
        config: Arc<LogConfig>,
        now_ms: i64,
    ) -> io::Result<Arc<PartitionLog>> {
        if let Some(log) = self.logs.lock().get(tp) {
            return Ok(log.clone());
        }
        let dir = self.partition_dir(tp);
        match read_partition_metadata(&dir) {
            Some(id) if id != topic_id => {
                tracing::info!(topic = %tp.0, partition = tp.1, "removing the log of an older topic with the same name");
                std::fs::remove_dir_all(&dir)?;
            }
            _ => {}
        }
        let (clean, recovery_point, log_start, cleaner_offset) = {
            let s = self.startup.lock();
            (
                s.clean,
                s.recovery_points.get(tp).copied().unwrap_or(0),
                s.log_starts.get(tp).copied().unwrap_or(0),
                s.cleaner_offsets.get(tp).copied(),
            )
        };
        let existed = dir.exists();
        let log = PartitionLog::open_with_flusher(
            &dir,
            config,
            recovery_point,
            log_start,
            clean || !existed,
            now_ms,
            Some(self.flusher.clone()),
        )?;
        if let (true, Some(offset)) = (existed, cleaner_offset) {
            // Ignored when outside the log (a recreated topic): cleaning then starts over.
            log.set_cleaner_checkpoint(offset);
        }
        write_partition_metadata(&dir, topic_id)?;
        if !existed {
            crate::durable::sync_dir(&self.dir)?;
        }
        Ok(self.logs.lock().entry(tp.clone()).or_insert(log).clone())
    }

    /// Forgets a partition and removes its directory.
    pub fn delete(&self, tp: &TopicPartition) -> io::Result<()> {
        let log = self.logs.lock().remove(tp);
        match log {
            Some(log) => log.delete(),
            None => {
                let dir = self.partition_dir(tp);
                match std::fs::remove_dir_all(dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    fn all(&self) -> Vec<(TopicPartition, Arc<PartitionLog>)> {
        self.logs
            .lock()
            .iter()
            .map(|(tp, l)| (tp.clone(), l.clone()))
            .collect()
    }

    /// Flushes logs whose `flush.ms` is due.
    pub fn flush_due(&self, now_ms: i64) {
        for (tp, log) in self.all() {
            if let Err(e) = log.flush_if_due(now_ms) {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "scheduled flush failed");
            }
        }
    }

    /// Writes the recovery-point, log-start-offset and cleaner-offset checkpoints.
    pub fn write_checkpoints(&self) -> io::Result<()> {
        let logs = self.all();
        let mut recovery = BTreeMap::new();
        let mut starts = BTreeMap::new();
        for (tp, log) in &logs {
            recovery.insert(tp.clone(), log.recovery_point());
            starts.insert(tp.clone(), log.log_start_offset());
        }
        checkpoint::write(&self.dir.join(RECOVERY_POINT_FILE), &recovery)?;
        checkpoint::write(&self.dir.join(LOG_START_FILE), &starts)?;
        self.write_cleaner_checkpoint()
    }

    /// Writes `cleaner-offset-checkpoint`: where each compacted log's dirty section starts.
    /// Call it after a cleaning round; a stale file only makes the cleaner redo some work.
    pub fn write_cleaner_checkpoint(&self) -> io::Result<()> {
        let offsets: Checkpoint = self
            .all()
            .into_iter()
            .filter_map(|(tp, log)| log.cleaner_checkpoint().map(|o| (tp, o)))
            .collect();
        let path = self.dir.join(CLEANER_FILE);
        if offsets.is_empty() && !path.exists() {
            return Ok(());
        }
        checkpoint::write(&path, &offsets)
    }

    /// Finishes the flusher's queue, flushes and closes every log, writes the checkpoints,
    /// then the clean-shutdown marker. Blocking.
    pub fn shutdown(&self) -> io::Result<()> {
        self.flusher.stop();
        for (tp, log) in self.all() {
            if let Err(e) = log.close() {
                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "closing log failed");
                return Err(e);
            }
        }
        self.write_checkpoints()?;
        crate::durable::replace(&self.dir.join(CLEAN_SHUTDOWN_FILE), b"")
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        // Normally done by `shutdown`; stops the thread when a test drops the manager.
        self.flusher.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaner_checkpoint_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tp: TopicPartition = ("compacted".into(), 0);
        let id = Uuid::new_v4();
        let config = Arc::new(LogConfig {
            segment_bytes: 1024,
            ..LogConfig::default()
        });
        {
            let logs = LogManager::open(dir.path()).expect("open");
            let log = logs.get_or_open(&tp, id, config.clone(), 0).expect("log");
            for i in 0..20 {
                let raw = crate::log::testing::encode_batch(
                    1,
                    i,
                    100,
                    kafka_protocol::records::Compression::None,
                );
                let view = crate::log::batch::validate_produce_batch(&raw).expect("valid");
                log.append_as_leader(&view, 0, 0).expect("append");
            }
            assert_eq!(log.cleaner_checkpoint(), None);
            log.set_cleaner_checkpoint(12);
            // Outside the log: ignored.
            log.set_cleaner_checkpoint(99);
            assert_eq!(log.cleaner_checkpoint(), Some(12));
            logs.shutdown().expect("shutdown");
        }
        let text = std::fs::read_to_string(dir.path().join(CLEANER_FILE)).expect("file");
        assert_eq!(text, "0\n1\ncompacted 0 12\n");
        let logs = LogManager::open(dir.path()).expect("reopen");
        let log = logs.get_or_open(&tp, id, config, 0).expect("log");
        assert_eq!(log.cleaner_checkpoint(), Some(12));
    }

    #[test]
    fn partition_dir_names() {
        assert_eq!(
            parse_partition_dir("chat-topic-3"),
            Some(("chat-topic".into(), 3))
        );
        assert_eq!(parse_partition_dir("a-b-c-0"), Some(("a-b-c".into(), 0)));
        assert_eq!(parse_partition_dir("meta"), None);
        assert_eq!(parse_partition_dir("x-abc"), None);
    }
}
