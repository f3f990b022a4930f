//! Bounds, timeouts and client defaults of `sluice bench`, with their unit last in the name.

use std::time::Duration;

/// Highest latency the histograms track (one hour); longer ones are counted as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Precision of the whole-run latency histogram (0.1%)...
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// ...and of each time slot's histogram for the latency-over-time plot (1%: they are many).
pub const SLOT_SIGNIFICANT_DIGITS: u8 = 2;

/// Width of a latency-over-time slot at the start of a run...
pub const SLOT_WIDTH_START: Duration = Duration::from_secs(1);
/// ...and the most slots kept: a longer run merges neighbours, doubling the width.
pub const TIMELINE_SLOTS_MAX: usize = 600;

/// Producers or consumers one run may start (each is a client with its own threads).
pub const CLIENTS_MAX: usize = 256;

/// Records one producer's librdkafka queue holds before `send` answers QueueFull (librdkafka's
/// default). A deeper queue only grows the heap: with 1,000,000 the generator faulted in a
/// gigabyte of message copies per run and sent about 3% fewer records a second (P1)...
pub const PRODUCER_QUEUE_MAX_MESSAGES: u32 = 100_000;
/// ...and how long the sender then waits before trying again.
pub const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// Blocks the generator's allocator takes from the heap rather than from a mapping of their
/// own: above a fetch response of 16 partitions x 1 MiB, and half of the 64 MiB heap that
/// glibc gives each thread's arena, so such a block fits in one...
pub const ALLOCATOR_MMAP_THRESHOLD_BYTES: i32 = 32 * 1024 * 1024;
/// ...and free bytes at the top of a heap before it gives them back to the kernel.
pub const ALLOCATOR_TRIM_THRESHOLD_BYTES: i32 = 1024 * 1024 * 1024;

/// How long a producer waits, after its last send, for the outstanding acknowledgements.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a metadata, watermark or topic creation request may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a just-created topic is looked up until every partition has a leader.
pub const TOPIC_READY_POLL: Duration = Duration::from_millis(100);

/// How long one consumer poll blocks (the loops check their exit conditions in between).
pub const CONSUMER_POLL: Duration = Duration::from_millis(100);
/// Most messages a catch-up consumer takes from librdkafka in one call (4 MiB of 1 KiB
/// records)...
pub const CONSUME_BATCH_MESSAGES: usize = 4096;
/// ...and how long a call waits to fill that batch: the messages of the run's last call reach
/// the recorder up to this late.
pub const CONSUME_BATCH_WAIT: Duration = Duration::from_millis(10);
/// A catch-up consumer that receives nothing for this long while behind gives up.
pub const CONSUME_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long e2e consumers wait, after the producers finished, for records still missing.
pub const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Sizes of `consume --reader fetch`'s requests, librdkafka's defaults: the longest the broker
/// may wait for data (fetch.wait.max.ms)...
pub const FETCH_MAX_WAIT_MS: i32 = 500;
/// ...the most it returns of one partition (max.partition.fetch.bytes)...
pub const FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// ...and of the whole response (fetch.max.bytes).
pub const FETCH_RESPONSE_MAX_BYTES: usize = 50 * 1024 * 1024;
/// Largest response it reads (receive.message.max.bytes): a broker may exceed
/// `FETCH_RESPONSE_MAX_BYTES` to return a batch larger than it.
pub const FETCH_RESPONSE_READ_MAX_BYTES: usize = 100_000_000;

/// Distinct keys `--keys random|round-robin` draw from.
pub const KEY_SPACE: u64 = 10_000;

/// Bytes one write of the loopback baseline sends.
pub const LOOPBACK_CHUNK_BYTES: usize = 1024 * 1024;

/// How often the progress bar is updated.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Width of the progress bar, in characters between its brackets.
pub const PROGRESS_BAR_CELLS: usize = 24;
