//! Partition replication across brokers, Kafka's ISR protocol with one stricter rule (a follower
//! reports only what it has fsynced). Everything here runs on the shard that owns the partition:
//! - `replica_set`: the leader's view of its followers, the high watermark and ISR decisions;
//! - `fetcher`: the follower side, one task per (shard, leader broker) pulling every partition
//!   that pair shares with Fetch v17, appending what it gets and fetching again once it is
//!   durable.
//!
//! The partition's own part (its role, high watermark and ISR requests) is in
//! `partition::role`; the shard's wiring (fetcher tasks, the ISR expiration timer, AlterPartition
//! to the controller) in `shard::replicas`.
//!
//! docs/architecture.md ("Replication") says why the rules keep every acknowledged record.

pub mod fetcher;
pub mod replica_set;

use std::time::Duration;

/// The follower-side settings, under Kafka's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `replica.fetch.max.bytes`: bytes asked per partition in one fetch (a larger first batch
    /// still comes whole).
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: bytes asked in one fetch, all partitions together.
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`: how long the leader may hold a follower's fetch for data.
    pub fetch_wait_max: Duration,
    /// `replica.fetch.min.bytes`: the data a fetch waits for before it is answered.
    pub fetch_min_bytes: i32,
    /// `replica.fetch.backoff.ms`: the pause after a failed fetch.
    pub fetch_backoff: Duration,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> ReplicaConfig {
        ReplicaConfig {
            fetch_max_bytes: 1024 * 1024,
            fetch_response_max_bytes: 10 * 1024 * 1024,
            fetch_wait_max: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_backoff: Duration::from_millis(1000),
            lag_time_max: Duration::from_millis(30_000),
        }
    }
}
