//! How many client connections the listener holds: Kafka's `max.connections` (the listener
//! stops accepting until one closes) and `max.connections.per.ip` with
//! `max.connections.per.ip.overrides` (a new connection over its address's limit is closed at
//! once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

pub struct ConnectionLimits {
    max: usize,
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    counts: Mutex<Counts>,
    /// Notified whenever a connection closes.
    closed: Notify,
}

/// A held connection slot; released when dropped.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max: usize, per_ip: usize, overrides: HashMap<IpAddr, usize>) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            per_ip,
            overrides,
            counts: Mutex::new(Counts::default()),
            closed: Notify::new(),
        })
    }

    /// Parses `max.connections.per.ip.overrides`: `host:count,host:count`, hosts as IP
    /// addresses or names (resolved now).
    pub fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, usize>, String> {
        let mut out = HashMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (host, count) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("{part:?} is not host:count"))?;
            let count: usize = count
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the count is not a number"))?;
            let host = host.trim().trim_start_matches('[').trim_end_matches(']');
            let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    use std::net::ToSocketAddrs;
                    (host, 0)
                        .to_socket_addrs()
                        .map_err(|e| format!("{part:?}: cannot resolve {host}: {e}"))?
                        .map(|a| a.ip())
                        .collect()
                }
            };
            for ip in ips {
                out.insert(ip, count);
            }
        }
        Ok(out)
    }

    fn limit_for(&self, ip: &IpAddr) -> usize {
        self.overrides.get(ip).copied().unwrap_or(self.per_ip)
    }

    /// Waits until the listener may hold one more connection.
    pub async fn wait_for_room(&self) {
        loop {
            let closed = self.closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if self.counts.lock().total < self.max {
                return;
            }
            closed.await;
        }
    }

    /// Admits a connection from `ip`, or returns the limit it would exceed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, usize> {
        let mut counts = self.counts.lock();
        let limit = self.limit_for(&ip);
        let from_ip = counts.by_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limit {
            return Err(limit);
        }
        if counts.total >= self.max {
            return Err(self.max);
        }
        counts.total += 1;
        *counts.by_ip.entry(ip).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock();
        debug_assert!(counts.total > 0);
        counts.total -= 1;
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
        drop(counts);
        self.limits.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let overrides = ConnectionLimits::parse_overrides("10.0.0.2:3").expect("parses");
        let limits = ConnectionLimits::new(4, 1, overrides);
        let first = limits.admit(a).expect("first from a");
        assert_eq!(limits.admit(a).err(), Some(1));
        let from_b: Vec<Slot> = (0..3).map(|_| limits.admit(b).expect("b")).collect();
        assert_eq!(limits.admit(b).err(), Some(3));
        drop(first);
        let again = limits.admit(a).expect("a again after a close");
        assert_eq!(limits.admit("10.0.0.3".parse().unwrap()).err(), Some(4));
        drop((again, from_b));
        assert!(ConnectionLimits::parse_overrides("nocount").is_err());
    }
}
