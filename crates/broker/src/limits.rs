//! Every bound Sluice enforces, in one place, with its unit last in the name.
//!
//! A queue, buffer or request size that is not listed here is a bug: untrusted input must never
//! size an allocation before it has been checked against one of these.

/// Default for `socket.request.max.bytes`: the largest request frame a client may send (Kafka's default).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Default for `message.max.bytes`: the largest record batch a producer may send (Kafka's default).
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;

/// Requests one connection may have in flight (read but not yet answered) before reading pauses.
pub const CONNECTION_IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Socket read buffer per connection.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;

/// The buffers one connection may hold beyond the request bytes it has been sent: a frame's
/// buffer grows (doubling, so a large frame is copied few times) as its bytes arrive, never more
/// than this past them. With the read buffer, a connection that announces a large frame and
/// stalls holds at most this plus `CONNECTION_READ_BUFFER_BYTES`; the request bytes themselves
/// count against the shard's `queued.max.request.bytes`. (A frame may also take a free buffer
/// from the shard's pool, which the pool's own bounds cover.)
pub const CONNECTION_FRAME_AHEAD_MAX_BYTES: usize = 1024 * 1024;

/// The first buffer a frame that the pool cannot serve is read into (then doubled as it fills).
pub const FRAME_BUFFER_INITIAL_BYTES: usize = 4 * 1024;

/// Default for `sluice.request.receive.timeout.ms`: how long a request frame may take to arrive,
/// from its first byte to its last (time spent waiting for the shard's request memory excluded).
pub const REQUEST_RECEIVE_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default for `connections.max.idle.ms` (Kafka's): a connection that sends and is sent nothing
/// this long is closed.
pub const CONNECTIONS_MAX_IDLE_MS_DEFAULT: u64 = 600_000;

/// Default for `max.connections` and `max.connections.per.ip` (Kafka's: no limit).
pub const CONNECTIONS_MAX_DEFAULT: i64 = i32::MAX as i64;

/// Request frames at least this long are read into a reused buffer (see `network::frame_pool`);
/// zeroing a smaller one afresh costs little.
pub const FRAME_POOL_FRAME_MIN_BYTES: usize = 64 * 1024;

/// Largest buffer a shard keeps for reuse: room for a produce request at the clients' default
/// `max.request.size` (1 MB) with some to spare. Larger frames get a buffer of their own.
pub const FRAME_POOL_BUFFER_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Free frame buffers a shard keeps, so at most 32 MiB per shard held for reuse.
pub const FRAME_POOL_BUFFERS_MAX: usize = 16;

/// A new pooled buffer is this multiple, so frames of about the same size fit each other's.
pub const FRAME_POOL_ROUNDING_BYTES: usize = 64 * 1024;

/// How long a shard waits for every other shard to join the cross-shard mesh at start. Joining
/// takes milliseconds; a shard whose executor died before joining would otherwise leave the
/// others waiting for good, the broker neither serving nor exiting.
pub const SHARD_MESH_JOIN_TIMEOUT_MS: u64 = 30_000;

/// Messages queued between two shards in one direction before the sender waits.
pub const CROSS_SHARD_QUEUE_DEPTH: usize = 1024;

/// Producer batches remembered per producer and partition for duplicate detection (Kafka's 5).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;

/// Pieces (batch headers and batch records) in one vectored write of a flush: Linux's `IOV_MAX`,
/// beyond which `writev` fails. A flush of more batches makes more writes.
pub const WRITE_VECTORS_MAX: usize = 1024;

/// Blocking file operations (buffered writes, fdatasyncs) io_uring runs at once for one shard,
/// each on a kernel worker thread: enough group commits of different partitions in flight
/// together to keep the disk's queue full (16 writers appending with O_DSYNC kept 12 writes in
/// flight at this VM's disk and wrote the most). Linux's own bound is four per CPU at most.
pub const SHARD_BLOCKING_IO_WORKERS_MAX: u32 = 16;

/// Chunk read at a time when recovery scans a segment (and when a segment check reads one).
pub const RECOVERY_READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Highest `sluice.log.scrub.bytes.per.sec`: 10 GiB/s, faster than any disk, so the setting's
/// range says "unbounded" without an overflow in the pacing arithmetic.
pub const SCRUB_BYTES_PER_SEC_MAX: u64 = 10 << 30;

/// How long the scrub waits between rounds over a shard's partitions: a round finds the
/// segments whose checks no read ran (partitions opened or moved since the last round).
pub const SCRUB_ROUND_INTERVAL_MS: u64 = 60_000;

/// Largest `max_wait_ms` a fetch may park for, whatever the client asks.
pub const FETCH_MAX_WAIT_MS: u64 = 30_000;

/// Most record bytes one fetch answer holds, whatever the client asks (Kafka's broker-side
/// `fetch.max.bytes` default); only a first batch larger than this goes out beyond it
/// (`protocol::fetch_sizing`).
pub const FETCH_RESPONSE_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Record sets at least this long leave a fetch as a file range the kernel sends (sendfile)
/// rather than as bytes read into memory: below a few pages, one copy into the response costs
/// less than the extra system call (`sluice.fetch.zero.copy` turns the path off).
pub const FETCH_ZERO_COPY_MIN_BYTES: usize = 16 * 1024;

/// While a socket is full, the writer sends this much of a file range through an ordinary async
/// write, which waits for room without blocking the shard, then goes back to sendfile.
pub const SOCKET_FULL_COPY_BYTES: usize = 64 * 1024;

/// Partitions a single topic may have.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_BYTES: usize = 249;

/// Producer ids the controller hands a broker at a time (one ProducerIds record each).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Largest metadata record (one frame of the metadata file); a larger length is damage.
pub const METADATA_RECORD_MAX_BYTES: usize = 1024 * 1024;

/// Groups one shard coordinates at most; joins and commits for new groups beyond it are refused.
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;

/// Default for `group.max.size`: members (and pending member ids) one group may hold.
pub const GROUP_MAX_SIZE_DEFAULT: i64 = 1_000;

/// The protocol metadata one member may send in JoinGroup, all protocols together.
pub const GROUP_MEMBER_METADATA_MAX_BYTES: usize = 1024 * 1024;

/// How often each shard checks its groups' session, rebalance and sync deadlines.
pub const GROUP_TICK_MS: u64 = 100;

/// Chunk read at a time when a shard replays an internal partition at start.
pub const INTERNAL_LOAD_READ_BYTES: usize = 1024 * 1024;

/// Largest batch the offsets topic accepts (`max.message.bytes` of `__consumer_offsets`).
pub const OFFSETS_TOPIC_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A partition of an internal topic (`__consumer_offsets`, `__transaction_state`) is compacted
/// (its live state rewritten, older segments dropped) once it has at least this many segments...
pub const INTERNAL_COMPACT_MIN_SEGMENTS: usize = 3;

/// ...and this many times more records written since its last compaction than it has live.
pub const INTERNAL_COMPACT_GARBAGE_RATIO: i64 = 2;

/// How often each shard considers compacting its internal partitions.
pub const INTERNAL_COMPACT_CHECK_MS: i64 = 1_000;

/// Records per batch when a coordinator rewrites an internal partition's live state.
pub const INTERNAL_COMPACT_BATCH_RECORDS: usize = 1_000;

/// Largest `.txnindex` file recovery reads (34-byte entries: about 250,000 aborted transactions
/// per segment).
pub const TXN_INDEX_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Entries a partition's `leader-epoch-checkpoint` may hold: one per leader epoch that wrote
/// records still in the log (a new leader every minute for two months). A file announcing more
/// is treated as damaged and the cache is rebuilt from what recovery scans.
pub const LEADER_EPOCH_CHECKPOINT_ENTRIES_MAX: usize = 100_000;

/// The largest `leader-epoch-checkpoint` file read: the entry limit at 31 bytes an entry (a
/// 10-digit epoch, a space, a 19-digit offset, a newline) plus the version and count lines.
pub const LEADER_EPOCH_CHECKPOINT_MAX_BYTES: usize = LEADER_EPOCH_CHECKPOINT_ENTRIES_MAX * 31 + 16;

/// How often each shard looks for transactions open longer than their timeout.
pub const TXN_TICK_MS: u64 = 200;

/// Wait before the first retry of a transaction's remaining markers; it doubles with each
/// retry up to `TXN_MARKER_RETRY_MAX_MS` (a partition's leader may be away for minutes).
pub const TXN_MARKER_RETRY_MS: u64 = 100;

/// The longest wait between retries of a transaction's remaining markers.
pub const TXN_MARKER_RETRY_MAX_MS: u64 = 5_000;

/// Largest HTTP request head the admin endpoint reads.
pub const ADMIN_REQUEST_MAX_BYTES: usize = 8 * 1024;

/// The smallest `log.cleaner.dedupe.buffer.size` accepted: room for a useful key map.
pub const CLEANER_DEDUPE_BUFFER_MIN_BYTES: usize = 1024 * 1024;

/// What one key costs the cleaner's key map beyond its bytes (hash table slot, offset, vector
/// header): counted against `log.cleaner.dedupe.buffer.size`.
pub const CLEANER_KEY_OVERHEAD_BYTES: usize = 64;

/// Cleaned bytes the cleaner buffers before one write to the new segment file.
pub const CLEANER_WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// Tombstone horizons a partition's cleaner checkpoint remembers (one per cleaning still inside
/// `delete.retention.ms`); older ones merge, keeping tombstones longer, never shorter.
pub const CLEANER_HORIZONS_MAX: usize = 32;

/// The largest cleaner checkpoint file read back.
pub const CLEANER_CHECKPOINT_MAX_BYTES: usize = 4096;

/// Most partitions one DescribeTopicPartitions answer lists before it hands back a cursor, whatever
/// the client asks (Kafka's `max.request.partition.size.limit` default).
pub const DESCRIBE_TOPIC_PARTITIONS_MAX: i32 = 2000;

/// Damaged ranges one DescribeLogDirs partition lists (the first ones, in segment order): a
/// disk that damaged every batch of a large partition would otherwise make an answer of many
/// MB. `sluice_partition_damaged_ranges` counts them all, and the log names each.
pub const LOG_DIRS_DAMAGED_RANGES_MAX: usize = 1_000;

/// Partitions a shard opens (recovers) at once at start: enough to overlap their file reads,
/// few enough to bound the memory of their recovery scans.
pub const RECOVERY_PARTITIONS_IN_FLIGHT: usize = 32;

/// Partitions a shard closes at once at a clean stop: their fsyncs overlap (one journal commit
/// covers many), where one at a time 10,000 partitions took 30 s to stop.
pub const CLOSE_PARTITIONS_IN_FLIGHT: usize = 32;

/// Sealed-segment `.log` files one shard keeps open at once (file descriptors), least recently
/// read closed first. Each partition also keeps its active segment open, so a broker holds about
/// partitions + shards x this many: with 10,000 partitions on 2 shards, 12,000, inside this
/// VM's hard limit of 20,000 where one descriptor per segment (100,000) was not. 1,000 covers
/// a consumer group catching up on 1,000 partitions of one shard at once; beyond it a read
/// reopens its file (one open(2), microseconds).
pub const SEALED_SEGMENT_FILES_OPEN_MAX: usize = 1_000;

/// Bytes of sealed segments' index entries one shard keeps in memory at once, least recently
/// used evicted first (an evicted index is read from its files again when next needed). At the
/// default `index.interval.bytes` of 4 KiB that is the indexes of about 25 GiB of log being read.
pub const SEALED_INDEXES_LOADED_MAX_BYTES: usize = 128 * 1024 * 1024;

/// Free resident memory the allocator may always keep (more is handed back once it also
/// exceeds the memory in use): the buffers an idle broker reuses without faulting pages in.
pub const FREE_MEMORY_RELEASE_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// Record errors one refused Produce partition lists (KIP-467 `record_errors`). Kafka lists
/// every one; a batch of a million tiny keyless records would make a response of tens of MB.
/// Records past the limit are refused all the same (clients report them as refused for another
/// record's sake).
pub const PRODUCE_RECORD_ERRORS_MAX: usize = 1_000;

/// Brokers one cluster may register: bounds what the quorum leader keeps per broker (its last
/// heartbeat). Kafka clusters run up to a few hundred brokers.
pub const CLUSTER_BROKERS_MAX: usize = 4_096;

/// How often the quorum leader's controller checks which brokers are alive: fencing happens at
/// most this long after a session expires, unfencing this long after a heartbeat.
pub const BROKER_LIVENESS_CHECK_INTERVAL_MS: u64 = 200;

/// How often each shard of a broker in a cluster looks for a partition whose log failed a write
/// (`liveness::stop_on_storage_failure`): the broker stops at most this long after its disk
/// fills or fails.
pub const STORAGE_FAILURE_CHECK_INTERVAL_MS: u64 = 200;

/// How long a stopping broker waits for the quorum to fence it (so that clients learn at once
/// that it leads nothing) before it stops anyway: the quorum may have lost its majority.
pub const CONTROLLED_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// Voters (and learners) a metadata quorum's membership may name. KRaft clusters run 3 or 5
/// controllers; the bound only keeps a decoded membership from naming millions of nodes.
pub const QUORUM_MEMBERS_MAX: usize = 64;

/// Entries one quorum AppendEntries message may carry (openraft's `max_payload_entries` is 300
/// by default): bounds what one decoded message allocates before its bytes are checked.
pub const QUORUM_APPEND_ENTRIES_MAX: usize = 1_024;

/// Segment size of the metadata quorum's log: entries are small (a topic's records are a few
/// hundred bytes) and snapshots let the log be purged, so a segment rarely fills.
pub const QUORUM_LOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes one read of the metadata log takes at a time (at least one whole batch).
pub const QUORUM_LOG_READ_BYTES: usize = 1024 * 1024;

/// Largest quorum state file (the vote and the last purged log id: 40 bytes today).
pub const QUORUM_STATE_MAX_BYTES: usize = 4096;

/// Largest metadata log entry: one proposal's records (creating a topic of 10,000 partitions
/// is about 1 MB of partition records).
pub const QUORUM_ENTRY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Largest message between quorum members: an AppendEntries of `QUORUM_APPEND_ENTRIES_MAX`
/// small entries, or a whole snapshot of the metadata image (a cluster of 10,000 topics is a few
/// MB).
pub const QUORUM_FRAME_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A quorum frame that has begun must arrive whole within this: a member that stalls mid-frame
/// is disconnected rather than holding its buffer.
pub const QUORUM_FRAME_RECEIVE_TIMEOUT_MS: u64 = 10_000;

/// Connections a member accepts on its controller listener at once: each other member opens a
/// few (replication, heartbeats, snapshots).
pub const QUORUM_PEER_CONNECTIONS_MAX: usize = 64;

/// The quorum leader's heartbeat: well inside the election timeout, so that a member on a loaded
/// machine does not start elections (Kafka's controllers fetch every 500 ms or so).
pub const QUORUM_HEARTBEAT_INTERVAL_MS: u64 = 250;

/// A member that hears no leader for a random time in this range starts an election (Kafka's
/// `controller.quorum.election.timeout.ms` is 1,000).
pub const QUORUM_ELECTION_TIMEOUT_MIN_MS: u64 = 1_000;
pub const QUORUM_ELECTION_TIMEOUT_MAX_MS: u64 = 2_000;

/// How long a member waits before trying again to name the cluster or register.
pub const QUORUM_RETRY_INTERVAL_MS: u64 = 200;

/// How long a member waits for the leader to answer a forwarded proposal.
pub const QUORUM_PROPOSE_TIMEOUT_MS: u64 = 10_000;

/// How many times the controller decides a change again when the quorum refused it because
/// another broker's change committed first.
pub const CONTROLLER_REDECIDE_ATTEMPTS: u32 = 3;

/// How often a shard waiting for a newer metadata image looks for one.
pub const IMAGE_POLL_INTERVAL_MS: u64 = 10;

/// Longest a quorum member holds an observer's image fetch open waiting for a newer image...
pub const QUORUM_IMAGE_WAIT_MAX_MS: u64 = 1_000;
/// ...what an observer asks for, and how long it waits for the answer beyond that.
pub const OBSERVER_FETCH_WAIT_MS: u32 = 500;
pub const OBSERVER_FETCH_TIMEOUT_MS: u64 = 5_000;

/// How long a request to another broker (a transaction marker, a transaction verification) may
/// take, connecting included, before the connection is dropped and the caller retries or fails.
pub const PEER_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// How long a leader waits, after the controller refused an ISR change, before it asks for one
/// again (the refusal is settled by a later image or registration, not by asking at once).
pub const ISR_CHANGE_RETRY_BACKOFF_MS: i64 = 1_000;

/// The largest fetch answer a replica fetcher reads: its own ask (`replica.fetch.response.max.bytes`,
/// at most `FETCH_RESPONSE_MAX_BYTES`) or a single first batch above it, which a produce request
/// (`socket.request.max.bytes`, at most 100 MiB by default) bounds; framing on top.
pub const REPLICA_FETCH_ANSWER_MAX_BYTES: usize = 128 * 1024 * 1024;

/// The largest answer another broker may send to one request: these answers are error codes per
/// partition, kilobytes even for a transaction over thousands of partitions.
pub const PEER_RESPONSE_MAX_BYTES: usize = 1024 * 1024;
