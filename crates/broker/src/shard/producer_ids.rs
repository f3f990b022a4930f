//! The broker side of producer ids: each shard hands out ids from its current block and asks
//! the controller (shard 0) for the next block when it runs out, as Kafka's
//! RPCProducerIdManager asks its controller quorum. Blocks come from ProducerIds records, so no
//! two blocks overlap, across shards, brokers and restarts, and no id is handed out twice.
//! One allocator per shard, used only on its executor.

use std::future::Future;

use futures::lock::Mutex;

use crate::error::ErrorCode;
use crate::types::ProducerId;

/// A range of producer ids, `next..end`, taken by one ProducerIds record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub next: ProducerId,
    pub end: ProducerId,
}

impl ProducerIdBlock {
    /// The next id, or none when the block is used up.
    fn take(&mut self) -> Option<ProducerId> {
        (self.next < self.end).then(|| {
            let id = self.next;
            self.next = ProducerId(id.0 + 1);
            id
        })
    }
}

/// Hands out producer ids from blocks.
#[derive(Default)]
pub struct ProducerIdAllocator {
    /// Held across the wait for a new block, so that callers meanwhile wait for it rather than
    /// each asking for (and wasting) a block of its own.
    block: Mutex<Option<ProducerIdBlock>>,
}

impl ProducerIdAllocator {
    /// The next id of the current block, first getting a block from `next_block` when there is
    /// none left (its error is the caller's answer).
    pub async fn allocate<F, Fut>(&self, next_block: F) -> Result<ProducerId, ErrorCode>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ProducerIdBlock, ErrorCode>>,
    {
        let mut block = self.block.lock().await;
        if let Some(id) = block.as_mut().and_then(ProducerIdBlock::take) {
            return Ok(id);
        }
        let mut fresh = next_block().await?;
        let id = fresh
            .take()
            .expect("the controller hands out blocks that are not empty");
        *block = Some(fresh);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn ids_come_from_the_block_and_a_new_block_is_asked_for_when_it_runs_out() {
        let allocator = ProducerIdAllocator::default();
        let mut asked = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = block_on(allocator.allocate(|| {
                let start = 100 * (asked.len() as i64 + 1);
                asked.push(start);
                async move {
                    Ok(ProducerIdBlock {
                        next: ProducerId(start),
                        end: ProducerId(start + 2),
                    })
                }
            }));
            ids.push(id.unwrap().0);
        }
        assert_eq!(ids, [100, 101, 200, 201, 300]);
        assert_eq!(asked, [100, 200, 300]);
        let refused = block_on(allocator.allocate(|| async { Err(ErrorCode::StaleBrokerEpoch) }));
        assert_eq!(refused, Ok(ProducerId(301)), "the block is not used up yet");
        let refused = block_on(allocator.allocate(|| async { Err(ErrorCode::StaleBrokerEpoch) }));
        assert_eq!(refused, Err(ErrorCode::StaleBrokerEpoch));
    }
}
