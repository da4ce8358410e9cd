//! LogFlusher: the one thread per log directory that does the slow, blocking disk work of the
//! append path: the fsyncs that `flush.messages` and `flush.ms` ask for, and sealing and
//! fsyncing a segment after a roll. Appends only record what is owed
//! (`PartitionLog::request_io`) and never wait for the disk on an async worker while holding a
//! partition's lock; a producer that must not be acknowledged before its data is on disk
//! awaits `PartitionLog::wait_durable` instead.
//!
//! The queue holds each log at most once (a log with work owed is queued; more work for it is
//! folded into what it already owes), so it is bounded by the number of logs, and concurrent
//! appends to one log share one fsync.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use super::partition_log::PartitionLog;

#[derive(Default)]
struct Queue {
    logs: VecDeque<Weak<PartitionLog>>,
    stopping: bool,
}

pub struct LogFlusher {
    queue: Mutex<Queue>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogFlusher {
    /// Starts the flusher thread.
    pub fn start(name: &str) -> std::io::Result<Arc<Self>> {
        let flusher = Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let worker = flusher.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || worker.run())?;
        *flusher.thread.lock() = Some(handle);
        Ok(flusher)
    }

    /// Queues `log`, which has just been marked as owing work. The caller guarantees that it
    /// is not queued already (`PartitionLog::request_io` keeps that flag).
    pub(super) fn enqueue(&self, log: Weak<PartitionLog>) {
        let mut q = self.queue.lock();
        q.logs.push_back(log);
        drop(q);
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let next = {
                let mut q = self.queue.lock();
                loop {
                    if let Some(log) = q.logs.pop_front() {
                        break Some(log);
                    }
                    if q.stopping {
                        break None;
                    }
                    self.wake.wait(&mut q);
                }
            };
            let Some(log) = next else { return };
            if let Some(log) = log.upgrade() {
                log.do_owed_io();
            }
        }
    }

    /// Finishes the work queued so far, then stops the thread. Idempotent.
    pub fn stop(&self) {
        self.queue.lock().stopping = true;
        self.wake.notify_all();
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the log flusher thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::config::LogConfig;

    #[test]
    fn flush_messages_one_makes_every_append_durable_off_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flusher = LogFlusher::start("test-flusher").expect("start");
        let config = Arc::new(LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        });
        let log = PartitionLog::open_with_flusher(
            dir.path(),
            config,
            0,
            0,
            true,
            0,
            Some(flusher.clone()),
        )
        .expect("open");
        for i in 0..20 {
            let raw = crate::log::testing::encode_batch(
                1,
                i,
                10,
                kafka_protocol::records::Compression::None,
            );
            let view = crate::log::batch::validate_produce_batch(&raw).expect("valid");
            let info = log.append_as_leader(&view, 0, 1).expect("append");
            let upto = info
                .durable_after
                .expect("flush.messages=1 asks for a flush");
            assert_eq!(upto, info.last_offset + 1);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(log.wait_durable(upto))
                .expect("durable");
            assert!(log.recovery_point() > info.last_offset);
        }
        flusher.stop();
    }
}
