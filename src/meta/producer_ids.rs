//! Producer id allocation: this broker takes blocks of ids from the metadata log (so an id is
//! never handed out twice, across restarts and brokers) and serves InitProducerId from its
//! current block.

use tokio::sync::Mutex;

use super::image::{ApplyOutcome, MetadataRecord};
use super::{MetadataQuorum, ProposeError};

/// Kafka's block size (`ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIdAllocator {
    broker_id: i32,
    /// (next id, end of block, exclusive)
    block: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn new(broker_id: i32) -> Self {
        Self {
            broker_id,
            block: Mutex::new((0, 0)),
        }
    }

    /// The next unused producer id, taking a new block from the quorum when needed.
    pub async fn next(&self, meta: &MetadataQuorum) -> Result<i64, ProposeError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let outcome = meta
                .propose(MetadataRecord::AllocateProducerIds {
                    broker_id: self.broker_id,
                    block_size: BLOCK_SIZE,
                })
                .await?;
            match outcome {
                ApplyOutcome::ProducerIdBlock { first, size } => *block = (first, first + size),
                other => {
                    return Err(ProposeError::Unavailable(format!(
                        "unexpected producer id allocation outcome {other:?}"
                    )))
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
