//! Sluice: a Kafka-compatible streaming broker, thread-per-core on glommio (io_uring).
//!
//! Layout, from the socket down:
//! - `network` and `protocol`: connections, frames, one handler per Kafka API;
//! - `shard`: the per-core runtime, cross-core routing, and the metadata controller (shard 0);
//! - `partition` and `producer_state`: a partition's offsets, waiters and idempotence;
//! - `replication`: followers fetching from leaders, the high watermark and the ISR;
//! - `storage`: the log (segments, indexes, group fsync, recovery) behind small I/O traits;
//! - `group`: consumer groups (classic protocol) and committed offsets in `__consumer_offsets`;
//! - `txn`: the transaction coordinator (`__transaction_state`, markers, timeouts);
//! - `coordination`: which internal partitions each coordinator serves (those this broker leads);
//! - `metadata`: topics, ids and the partition-to-shard map;
//! - `memory`: hands memory the allocator keeps unused back to the system (its own thread);
//! - `config`, `limits`, `types`, `error`: settings, bounds, newtypes and Kafka error codes.

pub mod admin;
pub mod config;
pub mod coordination;
pub mod cpuset;
pub mod error;
pub mod group;
pub mod internal_log;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod network;
pub mod partition;
pub mod producer_state;
pub mod protocol;
pub mod quorum;
pub mod replication;
pub mod shard;
pub mod storage;
pub mod txn;
pub mod types;
