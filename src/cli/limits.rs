//! Bounds and timeouts of the admin CLI's client, with their unit last in the name.

use std::time::Duration;

/// Largest response frame the client reads; a bigger size prefix is treated as corruption.
pub const RESPONSE_FRAME_MAX_BYTES: usize = 128 * 1024 * 1024;

/// How long connecting to a broker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one read or write on a broker connection may block (above any fetch long poll).
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest record batch `sluice produce` sends (below Kafka's default `message.max.bytes`).
pub const PRODUCE_BATCH_MAX_BYTES: usize = 512 * 1024;

/// Bytes one fetch asks for, in all and per partition.
pub const FETCH_MAX_BYTES: i32 = 16 * 1024 * 1024;
pub const FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;

/// How long one fetch waits on the broker for new records.
pub const FETCH_MAX_WAIT_MS: i32 = 500;

/// How long the admin requests that take a timeout let the broker work.
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// Largest input line or file `sluice produce` accepts.
pub const PRODUCE_INPUT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// How often FindCoordinator is asked again while the coordinator is not available yet...
pub const COORDINATOR_RETRIES: usize = 50;
/// ...and how long to wait between those tries.
pub const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// How often `sluice produce` asks again for a topic the broker is auto-creating (UNKNOWN_TOPIC
/// or LEADER_NOT_AVAILABLE meanwhile)...
pub const TOPIC_CREATION_RETRIES: usize = 25;
/// ...and how long to wait between those tries.
pub const TOPIC_CREATION_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// How often a long command (`sluice produce` of a large input) updates its progress line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long `sluice topic reassign --wait` waits for the moves to complete...
pub const REASSIGNMENT_WAIT: Duration = Duration::from_secs(600);
/// ...and how often it asks.
pub const REASSIGNMENT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often a change the quorum could not take yet (NOT_CONTROLLER: it is electing a leader) is
/// sent again...
pub const CONTROLLER_RETRIES: usize = 100;
/// ...and how long to wait between those tries.
pub const CONTROLLER_RETRY_BACKOFF: Duration = Duration::from_millis(200);
