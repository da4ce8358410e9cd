//! Share sessions (KIP-932): a member's ShareFetch session on a broker, keyed by
//! (group, member). Epoch 0 opens a session (replacing one the member had) with the
//! partitions of that request; each later request must carry the session's next epoch, and
//! may add partitions and forget some; epoch -1 closes it. A closed or replaced session's
//! acquired records are released by the caller.

use std::collections::HashMap;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use uuid::Uuid;

pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// A (topic id, partition) in a session.
pub type SessionPartition = (Uuid, i32);

/// What a share request did to its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionContext {
    /// A new session: the response lists every partition.
    Full,
    /// The next request of an open session: the response lists partitions with news.
    Incremental,
    /// The session was closed (epoch -1).
    Final,
}

struct ShareSession {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: Vec<SessionPartition>,
}

pub struct ShareSessions {
    sessions: Mutex<HashMap<(String, String), ShareSession>>,
    /// The most sessions this broker keeps (Kafka's share session cache size).
    max_sessions: usize,
}

fn next(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// The result of a ShareFetch's session step: the context, the partitions to fetch, and
/// whether an earlier session of the member was replaced (its records must be released).
pub struct FetchSession {
    pub context: SessionContext,
    pub partitions: Vec<SessionPartition>,
    pub replaced: Option<Vec<SessionPartition>>,
}

impl ShareSessions {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
        }
    }

    /// Applies a ShareFetch's epoch, added and forgotten partitions.
    pub fn fetch(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        add: &[SessionPartition],
        forget: &[SessionPartition],
    ) -> Result<FetchSession, ResponseError> {
        let key = (group.to_string(), member.to_string());
        let mut sessions = self.sessions.lock();
        match epoch {
            INITIAL_EPOCH => {
                let replaced = sessions.remove(&key).map(|s| s.partitions);
                if sessions.len() >= self.max_sessions {
                    return Err(ResponseError::ShareSessionLimitReached);
                }
                let mut partitions = Vec::with_capacity(add.len());
                for p in add {
                    if !partitions.contains(p) {
                        partitions.push(*p);
                    }
                }
                sessions.insert(
                    key,
                    ShareSession {
                        next_epoch: 1,
                        partitions: partitions.clone(),
                    },
                );
                Ok(FetchSession {
                    context: SessionContext::Full,
                    partitions,
                    replaced,
                })
            }
            FINAL_EPOCH => {
                let s = sessions
                    .remove(&key)
                    .ok_or(ResponseError::ShareSessionNotFound)?;
                Ok(FetchSession {
                    context: SessionContext::Final,
                    partitions: s.partitions,
                    replaced: None,
                })
            }
            _ => {
                let s = sessions
                    .get_mut(&key)
                    .ok_or(ResponseError::ShareSessionNotFound)?;
                if s.next_epoch != epoch {
                    return Err(ResponseError::InvalidShareSessionEpoch);
                }
                s.next_epoch = next(epoch);
                s.partitions.retain(|p| !forget.contains(p));
                for p in add {
                    if !s.partitions.contains(p) {
                        s.partitions.push(*p);
                    }
                }
                Ok(FetchSession {
                    context: SessionContext::Incremental,
                    partitions: s.partitions.clone(),
                    replaced: None,
                })
            }
        }
    }

    /// Applies a ShareAcknowledge's epoch: it needs an open session (epoch 0 is invalid),
    /// and -1 closes it, returning its partitions.
    pub fn acknowledge(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
    ) -> Result<(SessionContext, Vec<SessionPartition>), ResponseError> {
        if epoch == INITIAL_EPOCH {
            return Err(ResponseError::InvalidShareSessionEpoch);
        }
        let key = (group.to_string(), member.to_string());
        let mut sessions = self.sessions.lock();
        if epoch == FINAL_EPOCH {
            let s = sessions
                .remove(&key)
                .ok_or(ResponseError::ShareSessionNotFound)?;
            return Ok((SessionContext::Final, s.partitions));
        }
        let s = sessions
            .get_mut(&key)
            .ok_or(ResponseError::ShareSessionNotFound)?;
        if s.next_epoch != epoch {
            return Err(ResponseError::InvalidShareSessionEpoch);
        }
        s.next_epoch = next(epoch);
        Ok((SessionContext::Incremental, s.partitions.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs() {
        let s = ShareSessions::new(10);
        let t = Uuid::new_v4();
        assert_eq!(
            s.fetch("g", "m", 1, &[], &[]).err(),
            Some(ResponseError::ShareSessionNotFound)
        );
        let f = s.fetch("g", "m", 0, &[(t, 0)], &[]).unwrap();
        assert_eq!(f.context, SessionContext::Full);
        assert_eq!(
            s.fetch("g", "m", 2, &[], &[]).err(),
            Some(ResponseError::InvalidShareSessionEpoch)
        );
        let f = s.fetch("g", "m", 1, &[(t, 1)], &[(t, 0)]).unwrap();
        assert_eq!(f.partitions, vec![(t, 1)]);
        assert_eq!(
            s.acknowledge("g", "m", 2).unwrap().0,
            SessionContext::Incremental
        );
        assert_eq!(s.acknowledge("g", "m", -1).unwrap().1, vec![(t, 1)]);
        assert!(s.acknowledge("g", "m", 3).is_err());
    }
}
