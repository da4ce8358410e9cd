//! The request memory budget (Kafka's `queued.max.request.bytes`): one pool, shared by every
//! connection, that a request's bytes are taken from before its frame is read and returned
//! when the request has been handled. When the pool is spent, connections stop reading their
//! sockets until memory comes back: backpressure instead of unbounded buffering.
//!
//! As Kafka's non-strict `SimpleMemoryPool`, a lease is granted while any memory is left, so
//! the pool may overdraw by at most one frame (`socket.request.max.bytes`): the most a broker
//! holds for requests is the budget plus one largest frame, and a frame larger than what is
//! left never starves behind small ones.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

pub struct MemoryPool {
    capacity: i64,
    available: AtomicI64,
    /// Notified whenever a lease is returned.
    returned: Notify,
}

/// Bytes taken from the pool; returned when dropped.
pub struct Lease {
    pool: Arc<MemoryPool>,
    bytes: i64,
}

impl MemoryPool {
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        assert!(capacity > 0, "a memory pool needs a positive capacity");
        Arc::new(Self {
            capacity,
            available: AtomicI64::new(capacity),
            returned: Notify::new(),
        })
    }

    /// Bytes leased now (may exceed the capacity by less than one lease).
    pub fn in_use(&self) -> i64 {
        self.capacity - self.available.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Takes `bytes` if any memory is left, else `None`.
    pub fn try_lease(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a > 0).then(|| a.saturating_sub(bytes))
            })
            .ok()
            .map(|_| Lease {
                pool: self.clone(),
                bytes,
            })
    }

    /// Takes `bytes`, waiting while the pool is spent.
    pub async fn lease(self: &Arc<Self>, bytes: usize) -> Lease {
        loop {
            let returned = self.returned.notified();
            let mut returned = std::pin::pin!(returned);
            returned.as_mut().enable();
            if let Some(lease) = self.try_lease(bytes) {
                return lease;
            }
            returned.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let after = self.pool.available.fetch_add(self.bytes, Ordering::AcqRel) + self.bytes;
        debug_assert!(after <= self.pool.capacity, "more returned than leased");
        self.pool.returned.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overdraws_by_at_most_one_lease_and_waits_when_spent() {
        let pool = MemoryPool::new(100);
        let a = pool.try_lease(60).expect("room");
        let b = pool
            .try_lease(60)
            .expect("some room left: overdraw allowed");
        assert_eq!(pool.in_use(), 120);
        assert!(pool.try_lease(1).is_none(), "spent");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.lease(50).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let c = waiter.await.expect("lease after a return");
        assert_eq!(pool.in_use(), 110);
        drop((b, c));
        assert_eq!(pool.in_use(), 0);
    }
}
