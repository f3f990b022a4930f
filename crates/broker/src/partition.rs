//! A partition as its owning shard sees it: the log, the idempotent-producer state, the leader
//! epoch, the high watermark, and the waiters parked on it (produce acks waiting for the durable
//! end or the high watermark, fetches waiting for data). Lives on one shard only; other shards
//! reach it by cross-shard message.
//!
//! Offsets kept distinct from the start, because replication will build on them:
//! - log end offset: where the next append goes;
//! - durable end: what this broker's completed flushes wrote (`Log::durable_end`); acks=1
//!   waits for it;
//! - high watermark: what is committed, owned here and moved only by `advance_high_watermark`;
//!   consumers read below it, acks=all and the coordinators wait for it, retention and the
//!   cleaner stay below it. On one replica it follows the durable end at every flush;
//!   replication will move it to what the in-sync replicas hold instead;
//! - last stable offset: the first offset of the oldest open transaction (or the high
//!   watermark): read_committed fetches stop there;
//! - leader epoch: stamped on every batch.

mod role;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::sync::{Semaphore, StaticPermit};

use crate::config::LogConfig;
use crate::error::{ErrorCode, ProduceError};
use crate::metadata::records::LeaderEpoch;
use crate::metrics::PartitionStats;
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::storage::batch::{self, BatchHeader, ControlRecord, ControlType};
use crate::storage::log::cleaner::CleanedLog;
use crate::storage::log::{Log, ReadCursor, RecoveryReport, SegmentScrub};
use crate::storage::record_check::RecordRules;
use crate::storage::segment_check::DamagedRange;
use crate::storage::segment_files::is_segment_gone;
use crate::storage::txn_index::AbortedTxn;
use crate::storage::{read_whole, segment, write_replacing, Storage};
use crate::types::{Offset, ProducerEpoch, ProducerId, TopicPartition};

const PRODUCER_SNAPSHOT_FILE: &str = "producer.snapshot";
const PRODUCER_SNAPSHOT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a produce to this partition got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: Offset,
    pub log_append_time: i64,
    /// The offset after its last batch: the acknowledgement waits until the durable end
    /// (acks=1, `wait_durable`) or the high watermark (acks=all, `wait_high_watermark`) reaches
    /// it.
    pub end: Offset,
}

/// The offsets a fetch reports beside the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: Offset,
    pub high_watermark: Offset,
    pub last_stable: Offset,
    pub log_end: Offset,
}

/// A partition owned by the current shard.
pub struct Partition<S: Storage> {
    pub tp: TopicPartition,
    dir: PathBuf,
    log: Log<S>,
    producers: ProducerStateTable,
    /// Whether this broker leads the partition, as the metadata image says; a partition it does
    /// not lead refuses clients' produce, fetch and offset requests.
    leading: bool,
    /// The leader epoch the image gives it: stamped on every batch appended here.
    leader_epoch: LeaderEpoch,
    /// What consumers may read: at most the log's durable end. On the leader it never moves
    /// back; a follower takes its leader's (`role`).
    high_watermark: Offset,
    /// As leader, the followers' progress and the ISR (`role`); `None` as follower.
    replicas: Option<crate::replication::replica_set::ReplicaSet>,
    /// Whether the image has given this partition a role since it opened (`take_role`).
    role_taken: bool,
    ack_waiters: Vec<AckWaiter>,
    /// Consumers' long polls, woken when the high watermark moves.
    data_waiters: Vec<oneshot::Sender<()>>,
    /// Followers' long polls, woken when the durable end moves: they read up to it.
    follower_waiters: Vec<oneshot::Sender<()>>,
    /// Traffic counters for the metrics endpoint.
    pub stats: PartitionStats,
    /// Producers whose transaction the coordinator has confirmed includes this partition, or is
    /// being asked (KIP-890 verification): only an admitted producer may start a transaction here.
    txn_admitted: HashMap<ProducerId, Admission>,
    /// Verifications take turns, so a producer's batches waiting on one are appended in the
    /// order they arrived.
    admission_turn: Rc<Semaphore>,
    /// Tells verifications apart (see `Admission::Verifying`).
    next_verification: u64,
}

/// Where a producer stands with the transaction coordinator on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// The coordinator is being asked. A marker that ends the producer's transaction meanwhile
    /// removes the entry, so a late "yes" cannot start a transaction the coordinator has already
    /// ended (Kafka's verification guard).
    Verifying {
        epoch: ProducerEpoch,
        verification: u64,
    },
    /// The coordinator confirmed the open transaction at this epoch includes the partition.
    Admitted(ProducerEpoch),
}

/// A verification in progress on one partition: hold it until the verified batch is appended.
pub struct AdmissionTicket {
    pub(crate) verification: u64,
    _turn: StaticPermit,
}

/// Recovery's view of one scanned batch: data batches feed the producer state; a marker ends
/// its producer's transaction and, for ABORT, yields the aborted range for the txn index.
fn replay_batch(
    producers: &mut ProducerStateTable,
    header: &BatchHeader,
    control: Option<ControlRecord>,
) -> Option<AbortedTxn> {
    if !header.is_control() {
        producers.record(header);
        return None;
    }
    let id = ProducerId(header.producer_id);
    let coordinator_epoch = control.map_or(-1, |c| c.coordinator_epoch);
    let first =
        producers.end_transaction(id, ProducerEpoch(header.producer_epoch), coordinator_epoch)?;
    (control.map(|c| c.kind) == Some(ControlType::Abort)).then(|| AbortedTxn {
        producer_id: id,
        first_offset: first,
        last_offset: header.base_offset,
        last_stable_offset: producers
            .first_unstable_offset()
            .unwrap_or(header.next_offset()),
    })
}

pub type PartitionRef<S> = Rc<RefCell<Partition<S>>>;

/// Which offset an acknowledgement waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckLevel {
    /// The leader's durable end: acks=1, and a clean stop's final flush.
    Durable,
    /// The high watermark: acks=all, and the coordinators' own writes.
    HighWatermark,
}

/// An acknowledgement parked until `level` reaches `at`.
struct AckWaiter {
    level: AckLevel,
    at: Offset,
    tx: oneshot::Sender<Result<(), ErrorCode>>,
}

impl<S: Storage> Partition<S> {
    /// Opens the partition's log in `dir`, recovering it and its producer state.
    pub async fn open(
        storage: S,
        tp: TopicPartition,
        dir: PathBuf,
        config: LogConfig,
        clean: bool,
        now_ms: i64,
    ) -> std::io::Result<(Self, RecoveryReport)> {
        let snapshot_path = dir.join(PRODUCER_SNAPSHOT_FILE);
        // The snapshot is read only after a clean stop, and every clean stop rewrites it, so a
        // stale one is never read and is left in place: deleting it here cost an unlink per
        // partition (0.8 ms each on a virtual disk: 8 s for 10,000 partitions).
        let clean_snapshot = if clean {
            read_whole(&storage, &snapshot_path, PRODUCER_SNAPSHOT_MAX_BYTES)
                .await?
                .and_then(|b| ProducerStateTable::decode(&b))
        } else {
            None
        };
        // After a clean stop everything is trusted; after a crash, everything below the newest
        // intact roll snapshot (written once the segments before it were synced).
        let (trusted_below, mut producers) = match clean_snapshot {
            Some(table) => (Offset(i64::MAX), table),
            None => newest_roll_snapshot(&storage, &dir)
                .await?
                .unwrap_or_default(),
        };
        let (log, report) = Log::open(
            storage.clone(),
            dir.clone(),
            config,
            trusted_below,
            now_ms,
            &mut |h: &BatchHeader, control: Option<ControlRecord>| {
                replay_batch(&mut producers, h, control)
            },
        )
        .await?;
        // One replica: everything recovered is committed.
        let high_watermark = log.durable_end();
        let partition = Partition {
            tp,
            dir,
            log,
            producers,
            leading: false,
            leader_epoch: LeaderEpoch(0),
            high_watermark,
            replicas: None,
            role_taken: false,
            ack_waiters: Vec::new(),
            data_waiters: Vec::new(),
            follower_waiters: Vec::new(),
            txn_admitted: HashMap::new(),
            admission_turn: Rc::new(Semaphore::new(1)),
            next_verification: 0,
            stats: PartitionStats::default(),
        };
        Ok((partition, report))
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let hw = self.high_watermark;
        PartitionOffsets {
            log_start: self.log.log_start(),
            high_watermark: hw,
            last_stable: self
                .producers
                .first_unstable_offset()
                .map_or(hw, |first| first.min(hw)),
            log_end: self.log.end(),
        }
    }

    pub fn set_log_config(&mut self, config: LogConfig) {
        self.log.set_config(config);
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    /// Where `epoch` ends in this replica's log (the latest ends at the log end); `None` where
    /// Kafka answers UNDEFINED (-1, -1). OffsetForLeaderEpoch's answer.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.log.end_offset_for_epoch(epoch)
    }

    /// The leader's check of a follower's fetch (Fetch v12+ `LastFetchedEpoch`): `Some((E, O))`,
    /// Fetch's `DivergingEpoch`, when the follower's log diverged from this one: this log's end
    /// of `last_fetched_epoch` is at an older epoch E or below `fetch_offset` (the follower then
    /// truncates to O and fetches again, with no records in this answer). OFFSET_OUT_OF_RANGE when
    /// this log knows no end for the epoch, or when `fetch_offset` is below the log start (after
    /// the divergence check, as Kafka orders them). -1 (no epoch sent): no check.
    pub fn diverging_epoch(
        &self,
        last_fetched_epoch: i32,
        fetch_offset: Offset,
    ) -> Result<Option<(LeaderEpoch, Offset)>, ErrorCode> {
        if last_fetched_epoch == -1 {
            return Ok(None);
        }
        let (epoch, end) = self
            .log
            .end_offset_for_epoch(LeaderEpoch(last_fetched_epoch))
            .ok_or(ErrorCode::OffsetOutOfRange)?;
        if epoch.0 < last_fetched_epoch || end < fetch_offset {
            return Ok(Some((epoch, end)));
        }
        if fetch_offset < self.log.log_start() {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        Ok(None)
    }

    /// Refuses a client's request unless this broker leads the partition, under the leader
    /// epoch the client knows when it names one (-1: it does not): an older epoch is
    /// FENCED_LEADER_EPOCH (the client's metadata is stale), a newer one UNKNOWN_LEADER_EPOCH
    /// (this broker's is), as Kafka answers (KIP-320).
    pub fn check_leader(&self, client_epoch: i32) -> Result<(), ErrorCode> {
        if !self.leading {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        match client_epoch {
            -1 => Ok(()),
            e if e < self.leader_epoch.0 => Err(ErrorCode::FencedLeaderEpoch),
            e if e > self.leader_epoch.0 => Err(ErrorCode::UnknownLeaderEpoch),
            _ => Ok(()),
        }
    }

    /// Deletes whole segments below the log start that an earlier move could not (a flush was
    /// sealing them).
    pub fn remove_segments_below_start(&mut self) -> usize {
        self.log.remove_segments_below_start()
    }

    /// Bytes in the partition's segments.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// Segment checks no read has run yet, for the scrub.
    pub fn unchecked_segments(&self) -> Vec<SegmentScrub<S>> {
        self.log.unchecked_segments()
    }

    /// Damaged ranges found in the partition's segments since the start.
    pub fn damaged_ranges(&self) -> usize {
        self.log.damaged_ranges()
    }

    /// The damaged ranges `damaged_ranges` counts, for DescribeLogDirs.
    pub fn damaged(&self) -> Vec<DamagedRange> {
        self.log.damaged()
    }

    /// Whether the log failed a write or a truncation: it refuses every append until a restart
    /// recovers it.
    pub fn log_failed(&self) -> bool {
        self.log.is_failed()
    }

    pub fn log_config(&self) -> &LogConfig {
        self.log.config()
    }

    /// Validates and appends a Produce request's records for this partition. Offsets are assigned
    /// here, synchronously, so requests are ordered as they arrive.
    pub fn append(&mut self, records: &Bytes, now_ms: i64) -> Result<ProduceOutcome, ProduceError> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError.into());
        }
        let config = self.log.config();
        let rules = RecordRules {
            tp: &self.tp,
            compacted: config.cleanup_compact,
            timestamp_type: config.timestamp_type,
            timestamp_before_max_ms: config.timestamp_before_max_ms,
            timestamp_after_max_ms: config.timestamp_after_max_ms,
            now_ms,
        };
        let batches = batch::validate_produce(records, config.max_message_bytes, &rules)?;
        let mut first: Option<ProduceOutcome> = None;
        for (header, start, size) in batches {
            self.check_transaction(&header)?;
            let outcome = match self.producers.check(&header)? {
                SequenceCheck::Duplicate(original) => ProduceOutcome {
                    base_offset: original.base_offset,
                    log_append_time: -1,
                    end: original.last_offset.next(1),
                },
                SequenceCheck::Append => {
                    let outcome =
                        self.append_batch(records.slice(start..start + size), &header, now_ms)?;
                    self.stats.bytes_in += size as u64;
                    self.stats.batches_in += 1;
                    self.stats.records_in += header.record_count.max(0) as u64;
                    let mut stored = header;
                    stored.base_offset = outcome.base_offset;
                    self.producers.record(&stored);
                    outcome
                }
            };
            first = Some(match first {
                None => outcome,
                Some(f) => ProduceOutcome {
                    end: outcome.end.max(f.end),
                    ..f
                },
            });
        }
        Ok(first.expect("validate_produce returns at least one batch"))
    }

    /// A transactional batch may start a transaction only for a producer the coordinator has
    /// added this partition for; a producer with a transaction open here may not write outside
    /// it.
    fn check_transaction(&self, header: &BatchHeader) -> Result<(), ErrorCode> {
        if !header.has_producer_id() {
            return if header.is_transactional() {
                Err(ErrorCode::InvalidRecord)
            } else {
                Ok(())
            };
        }
        let id = ProducerId(header.producer_id);
        let epoch = ProducerEpoch(header.producer_epoch);
        let known = self.producers.transaction_of(id);
        if known.is_some_and(|(current, _)| epoch < current) {
            // Fenced: a newer epoch (a new instance, or the coordinator's abort) wrote here.
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        let open = known.and_then(|(e, first)| first.map(|_| e));
        match (header.is_transactional(), open) {
            (true, Some(open_epoch)) if open_epoch == epoch => Ok(()),
            (true, _) if self.txn_admitted.get(&id) == Some(&Admission::Admitted(epoch)) => Ok(()),
            (true, _) => Err(ErrorCode::InvalidTxnState),
            (false, Some(_)) => Err(ErrorCode::InvalidTxnState),
            (false, None) => Ok(()),
        }
    }

    /// Appends one validated batch, taking a producer snapshot first if it rolls the segment.
    fn append_batch(
        &mut self,
        bytes: Bytes,
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<ProduceOutcome, ErrorCode> {
        // A roll snapshot holds the state of every batch before the new segment.
        let rolls = self.log.will_roll(
            bytes.len() as u64,
            self.log.end(),
            header.last_offset_delta,
            now_ms,
        );
        let snapshot = rolls.then(|| self.producers.encode());
        let appended = self
            .log
            .append(bytes, header, self.leader_epoch.0, now_ms)?;
        if let Some(snapshot) = snapshot {
            self.log.add_roll_snapshot(appended.base_offset, snapshot);
        }
        Ok(ProduceOutcome {
            base_offset: appended.base_offset,
            log_append_time: appended.log_append_time,
            end: appended.last_offset.next(1),
        })
    }

    /// A follower's append: the batches of a Fetch answer from the leader, stored exactly as the
    /// leader wrote them (offsets, epochs, timestamps). Each is checked (header and CRC) and fed
    /// to the producer state and the aborted-transaction index as recovery feeds them
    /// (`replay_batch`): the leader already ran the producer checks. Batches wholly below the log
    /// end are held already and skipped; one that starts past it follows a gap compaction left in
    /// the leader's log. The answer may end with a partial batch (the fetch's size limit cut it):
    /// it is left for the next fetch. Returns the new log end. On an error, the batches before
    /// the bad one stay appended. Not counted in `stats`, which are clients' traffic (Kafka
    /// counts replication apart too).
    pub fn append_replicated(&mut self, records: &Bytes, now_ms: i64) -> Result<Offset, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let mut at = 0;
        while let Some(header) = BatchHeader::parse(&records[at..]) {
            let size = header.total_bytes();
            if size == 0 {
                return Err(ErrorCode::CorruptMessage);
            }
            if size > records.len() - at {
                break;
            }
            let bytes = records.slice(at..at + size);
            at += size;
            let header = batch::check_stored_batch(&bytes)?;
            if header.next_offset() <= self.log.end() {
                continue;
            }
            if header.base_offset < self.log.end() {
                // Straddles the log end: the leader's batches do not line up with ours.
                return Err(ErrorCode::CorruptMessage);
            }
            let rolls = self.log.will_roll(
                size as u64,
                header.base_offset,
                header.last_offset_delta,
                now_ms,
            );
            let snapshot = rolls.then(|| self.producers.encode());
            let control = if header.is_control() {
                batch::control_record(&bytes)
            } else {
                None
            };
            self.log.append_replicated(bytes, &header, now_ms)?;
            if let Some(snapshot) = snapshot {
                self.log.add_roll_snapshot(header.base_offset, snapshot);
            }
            if let Some(aborted) = replay_batch(&mut self.producers, &header, control) {
                self.log.add_aborted(aborted);
            }
        }
        Ok(self.log.end())
    }

    /// Appends a batch the broker built itself (transactional offsets): no sequence checks, but
    /// the same transaction rules as a producer's batch.
    pub fn append_broker_batch(
        &mut self,
        bytes: impl Into<Bytes>,
        now_ms: i64,
    ) -> Result<ProduceOutcome, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let bytes = bytes.into();
        let header = batch::check_batch(&bytes)?;
        self.check_transaction(&header)?;
        let outcome = self.append_batch(bytes, &header, now_ms)?;
        let mut stored = header;
        stored.base_offset = outcome.base_offset;
        self.producers.record(&stored);
        Ok(outcome)
    }

    /// Whether a transactional batch of `producer` at `epoch` needs the coordinator's word before
    /// it may be appended: no transaction of that epoch is open here and none is admitted. (A
    /// fenced epoch needs nothing: the append refuses it.)
    pub fn needs_admission(&self, producer: ProducerId, epoch: ProducerEpoch) -> bool {
        let known = self.producers.transaction_of(producer);
        let fenced = known.is_some_and(|(current, _)| epoch < current);
        let open = known.is_some_and(|(e, first)| e == epoch && first.is_some());
        let admitted = self.txn_admitted.get(&producer) == Some(&Admission::Admitted(epoch));
        !fenced && !open && !admitted
    }

    /// What a confirmed verification leaves behind (for tests of what follows admission).
    #[cfg(test)]
    pub fn admit_transaction(&mut self, producer: ProducerId, epoch: ProducerEpoch) {
        self.txn_admitted
            .insert(producer, Admission::Admitted(epoch));
    }

    /// The turn at verifying an admission here: at most one verification runs per partition.
    pub fn admission_turn(&self) -> Rc<Semaphore> {
        self.admission_turn.clone()
    }

    /// Starts asking the coordinator about `producer`'s transaction (holding the turn).
    pub fn begin_verification(
        &mut self,
        producer: ProducerId,
        epoch: ProducerEpoch,
        turn: StaticPermit,
    ) -> AdmissionTicket {
        self.next_verification += 1;
        let verification = self.next_verification;
        self.txn_admitted.insert(
            producer,
            Admission::Verifying {
                epoch,
                verification,
            },
        );
        AdmissionTicket {
            verification,
            _turn: turn,
        }
    }

    /// The coordinator answered: admits the producer if it said yes and no marker ended the
    /// transaction meanwhile. Returns whether the producer is admitted.
    pub fn finish_verification(
        &mut self,
        producer: ProducerId,
        ticket: &AdmissionTicket,
        confirmed: bool,
    ) -> bool {
        let Some(Admission::Verifying {
            epoch,
            verification,
        }) = self.txn_admitted.get(&producer).copied()
        else {
            return false;
        };
        if verification != ticket.verification {
            return false;
        }
        if confirmed {
            self.txn_admitted
                .insert(producer, Admission::Admitted(epoch));
        } else {
            self.txn_admitted.remove(&producer);
        }
        confirmed
    }

    /// Writes a COMMIT or ABORT marker ending `producer`'s transaction here (whether or not it
    /// wrote anything), and records an aborted range in the txn index. A marker from an older
    /// epoch than the producer's is refused, and one from a coordinator older than the one that
    /// wrote the producer's last marker here.
    pub fn write_marker(
        &mut self,
        producer: ProducerId,
        epoch: ProducerEpoch,
        control: ControlType,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<ProduceOutcome, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        if self
            .producers
            .transaction_of(producer)
            .is_some_and(|(current, _)| epoch < current)
        {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        self.producers
            .check_coordinator(producer, coordinator_epoch)?;
        let bytes =
            batch::build_control_batch(producer.0, epoch.0, control, coordinator_epoch, now_ms);
        let header = BatchHeader::parse(&bytes).expect("a built batch has a header");
        let outcome = self.append_batch(Bytes::from(bytes), &header, now_ms)?;
        self.txn_admitted.remove(&producer);
        if let Some(first) = self
            .producers
            .end_transaction(producer, epoch, coordinator_epoch)
        {
            if control == ControlType::Abort {
                let marker = outcome.base_offset;
                let stable = self
                    .producers
                    .first_unstable_offset()
                    .unwrap_or(marker.next(1));
                self.log.add_aborted(AbortedTxn {
                    producer_id: producer,
                    first_offset: first,
                    last_offset: marker,
                    last_stable_offset: stable,
                });
            }
        }
        Ok(outcome)
    }

    /// The aborted transactions a read_committed fetch of `[from, to)` must be told about.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.log.aborted_between(from, to)
    }

    /// Where a consumer reads `offset` from: nothing at or past the high watermark is served.
    pub fn cursor_at(&self, offset: Offset) -> Result<Option<ReadCursor<S>>, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        self.log.cursor_at(offset, self.high_watermark)
    }

    /// Where a follower reads `offset` from: up to the log end as reads see it (what completed
    /// flushes wrote, `Log::durable_end`), past the high watermark, which waits for the
    /// followers themselves; also where a coordinator replays its internal partition from.
    /// Never for consumers.
    pub fn follower_cursor_at(&self, offset: Offset) -> Result<Option<ReadCursor<S>>, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        self.log.cursor_at(offset, self.log.durable_end())
    }

    /// Whether `level` has reached `at`.
    fn reached(&self, level: AckLevel, at: Offset) -> bool {
        match level {
            AckLevel::Durable => self.log.durable_end() >= at,
            AckLevel::HighWatermark => self.high_watermark >= at,
        }
    }

    /// Answers the acknowledgements whose offset is now reached.
    fn wake_acks(&mut self) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ack_waiters)
            .into_iter()
            .partition(|w| self.reached(w.level, w.at));
        self.ack_waiters = waiting;
        for w in done {
            let _ = w.tx.send(Ok(()));
        }
    }

    /// A flush completed: answers what the new durable end satisfies, moves the high watermark
    /// as far as the replicas allow (`role`; on one replica, to the durable end) and wakes the
    /// followers' long polls. On a storage error every ack fails.
    fn on_flushed(&mut self, result: Result<Offset, ErrorCode>) {
        match result {
            Ok(durable_end) if !self.role_taken => {
                // Not placed by an image yet (only between opening and taking a role, and in
                // tests): one replica's rule, the durable end is committed.
                self.wake_acks();
                self.advance_high_watermark(durable_end);
            }
            Ok(_) => {
                self.wake_acks();
                self.advance_committed();
                for tx in self.follower_waiters.drain(..) {
                    let _ = tx.send(());
                }
            }
            Err(code) => {
                for w in self.ack_waiters.drain(..) {
                    let _ = w.tx.send(Err(code));
                }
            }
        }
    }

    /// The one place the high watermark moves: forward only, never past the durable end. Answers
    /// the acks=all waiters it satisfies and wakes the fetches parked for data.
    fn advance_high_watermark(&mut self, to: Offset) {
        assert!(
            to >= self.high_watermark,
            "{}: high watermark moving back from {} to {to}",
            self.tp,
            self.high_watermark
        );
        assert!(
            to <= self.log.durable_end(),
            "{}: high watermark {to} past the durable end {}",
            self.tp,
            self.log.durable_end()
        );
        if to == self.high_watermark {
            return;
        }
        self.high_watermark = to;
        self.wake_acks();
        for tx in self.data_waiters.drain(..) {
            let _ = tx.send(());
        }
    }

    /// Deletes the partition's files (its topic deleted, or its replica moved away). Pending
    /// acks fail with `why`.
    pub fn delete(&mut self, why: ErrorCode) -> std::io::Result<()> {
        self.on_flushed(Err(why));
        self.log.delete()
    }
}

/// The newest roll snapshot that reads back intact: its offset and the producer state below it.
async fn newest_roll_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
) -> std::io::Result<Option<(Offset, ProducerStateTable)>> {
    newest_roll_snapshot_at_or_below(storage, dir, Offset(i64::MAX)).await
}

/// `newest_roll_snapshot`, among those taken at or below `limit`.
async fn newest_roll_snapshot_at_or_below<S: Storage>(
    storage: &S,
    dir: &Path,
    limit: Offset,
) -> std::io::Result<Option<(Offset, ProducerStateTable)>> {
    if !storage.exists(dir) {
        return Ok(None);
    }
    let mut bases: Vec<Offset> = storage
        .list_dir(dir)?
        .iter()
        .filter_map(|n| segment::parse_snapshot_name(n))
        .filter(|base| *base <= limit)
        .collect();
    bases.sort();
    for base in bases.into_iter().rev() {
        let bytes = read_whole(
            storage,
            &segment::snapshot_path(dir, base),
            PRODUCER_SNAPSHOT_MAX_BYTES,
        )
        .await?;
        if let Some(table) = bytes.and_then(|b| ProducerStateTable::decode(&b)) {
            return Ok(Some((base, table)));
        }
        tracing::warn!(
            "producer snapshot {base} in {} is damaged; trying an older one",
            dir.display()
        );
    }
    Ok(None)
}

/// A clean stop: waits for pending writes to reach the disk, then writes index files and the
/// producer snapshot, unsynced: the caller syncs the file system once every partition has
/// closed, before it writes the clean-shutdown marker that makes the next start trust them.
pub async fn close<S: Storage>(this: &PartitionRef<S>, storage: &S) -> std::io::Result<()> {
    let end = this.borrow().log.end();
    wait_durable(this, end)
        .await
        .map_err(|e| std::io::Error::other(format!("final flush failed: {e}")))?;
    let (plan, snapshot, path) = {
        let p = this.borrow();
        (
            p.log.close_plan(),
            p.producers.encode(),
            p.dir.join(PRODUCER_SNAPSHOT_FILE),
        )
    };
    plan.run().await?;
    write_replacing(storage, &path, snapshot).await
}

/// A diverged follower's truncation: removes every record at or after `offset` (a batch
/// boundary), from the log and its epoch cache, and rebuilds the producer state to match what is
/// left the way a start does: from the newest roll snapshot at or below `offset` (later ones
/// describe records that are gone, and are deleted so no recovery trusts them), replaying the
/// batches after it. Pending writes are flushed first. The high watermark comes down to the new
/// log end if it was above: a follower's may move back (Kafka caps it to the log end too).
pub async fn truncate_to<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
) -> std::io::Result<()> {
    let truncation = when_quiet(this, |log| log.begin_truncation(offset)).await?;
    let Some(truncation) = truncation else {
        return Ok(());
    };
    {
        let mut p = this.borrow_mut();
        // Not `advance_high_watermark`, which only moves forward: this is the one place the
        // high watermark moves back, on a follower whose log lost records above it.
        p.high_watermark = p.high_watermark.min(offset);
    }
    let done = truncation.run().await;
    this.borrow_mut().log.finish_truncation(done)?;

    let (storage, dir) = remove_roll_snapshots(this, |base| base > offset)?;
    let (from, mut producers) = newest_roll_snapshot_at_or_below(&storage, &dir, offset)
        .await?
        .unwrap_or_default();
    let replay = this.borrow().log.replay_from(from);
    replay
        .run(&mut |h: &BatchHeader, control: Option<ControlRecord>| {
            replay_batch(&mut producers, h, control)
        })
        .await?;
    let mut p = this.borrow_mut();
    if p.log.end() != offset {
        return Err(std::io::Error::other(
            "appended to during a truncation: producer state not rebuilt",
        ));
    }
    p.producers = producers;
    Ok(())
}

/// A follower below its leader's log start starts over there: its log is emptied and starts at
/// `offset` (see `Log::restart_at`: above its end, or anywhere while it holds no record), with
/// no producer state (its producers' batches are gone) and `offset` as its high watermark, as
/// Kafka's `truncateFullyAndStartAt` leaves a replica.
pub async fn restart_at<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
    now_ms: i64,
) -> std::io::Result<()> {
    let checkpoint = when_quiet(this, |log| log.restart_at(offset, now_ms)).await?;
    {
        let mut p = this.borrow_mut();
        p.high_watermark = offset;
        p.producers = ProducerStateTable::default();
    }
    remove_roll_snapshots(this, |_| true)?;
    checkpoint.write().await
}

/// Runs `op` on the log once everything written to it is durable and no flush runs (`op`
/// answers WouldBlock while one does).
async fn when_quiet<S: Storage, T>(
    this: &PartitionRef<S>,
    mut op: impl FnMut(&mut Log<S>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    loop {
        let end = this.borrow().log.end();
        wait_durable(this, end).await.map_err(|e| {
            std::io::Error::other(format!("flush before cutting the log failed: {e}"))
        })?;
        match op(&mut this.borrow_mut().log) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        // The flush that reached the end may still be running (writing the epoch checkpoint,
        // or a next round it armed).
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Deletes the producer-state snapshots taken at segment rolls whose base `gone` picks (they
/// describe records no longer in the log, and no recovery may trust them). Returns the storage
/// and directory they were in.
fn remove_roll_snapshots<S: Storage>(
    this: &PartitionRef<S>,
    gone: impl Fn(Offset) -> bool,
) -> std::io::Result<(S, PathBuf)> {
    let (storage, dir) = {
        let p = this.borrow();
        (p.log.storage().clone(), p.dir.clone())
    };
    for base in storage
        .list_dir(&dir)?
        .iter()
        .filter_map(|n| segment::parse_snapshot_name(n))
        .filter(|base| gone(*base))
    {
        storage.remove_file(&segment::snapshot_path(&dir, base))?;
    }
    Ok((storage, dir))
}

/// Starts a flush job for the partition if one is due and none is running; it re-arms itself
/// until nothing is pending, so appends that arrive during a flush ride the next one.
pub fn schedule_flush<S: Storage>(this: &PartitionRef<S>) {
    let Some(job) = this.borrow_mut().log.take_flush() else {
        return;
    };
    let this = this.clone();
    glommio::spawn_local(async move {
        let (bytes, started) = (job.bytes(), std::time::Instant::now());
        let result = job.run().await;
        crate::metrics::with(|m| m.flushed(bytes, started.elapsed()));
        {
            let mut p = this.borrow_mut();
            let flushed = p.log.complete_flush(result);
            p.on_flushed(flushed);
        }
        schedule_flush(&this);
    })
    .detach();
}

/// DeleteRecords: moves the log start to `offset` (-1: the high watermark; never past it),
/// durably; returns the new low watermark.
pub async fn delete_records<S: Storage>(
    this: &PartitionRef<S>,
    offset: i64,
) -> Result<Offset, ErrorCode> {
    let hw = this.borrow().high_watermark;
    let target = if offset == -1 { hw } else { Offset(offset) };
    if target > hw {
        return Err(ErrorCode::OffsetOutOfRange);
    }
    move_log_start(this, target).await
}

/// A follower's log start follows its leader's (moved there by DeleteRecords or retention), up
/// to its own high watermark, as Kafka's followers do: what the leader no longer serves goes
/// here too.
pub async fn follow_log_start<S: Storage>(
    this: &PartitionRef<S>,
    leader_log_start: Offset,
) -> Result<(), ErrorCode> {
    let (start, hw) = {
        let p = this.borrow();
        (p.log.log_start(), p.high_watermark)
    };
    let target = leader_log_start.min(hw);
    if target > start {
        move_log_start(this, target).await?;
    }
    Ok(())
}

/// Moves the log start to `target` (at most the durable end), durably; the new log start.
async fn move_log_start<S: Storage>(
    this: &PartitionRef<S>,
    target: Offset,
) -> Result<Offset, ErrorCode> {
    let (low, checkpoint) = this.borrow_mut().log.advance_log_start(target)?;
    checkpoint.write().await.map_err(|err| {
        tracing::error!("persisting the log start offset: {err}");
        ErrorCode::KafkaStorageError
    })?;
    Ok(low)
}

/// What one cleaning of a compacted partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleaningReport {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Deletes the segments retention no longer keeps (see `Log::apply_retention`), first loading
/// the index files of those whose age it must know (recovery leaves them unread).
pub async fn apply_retention<S: Storage>(this: &PartitionRef<S>, now_ms: i64) -> usize {
    loop {
        let load = {
            let p = this.borrow();
            p.log.retention_index_load(now_ms, p.high_watermark)
        };
        let Some(load) = load else { break };
        if let Err(err) = load.run().await {
            tracing::warn!(
                "{}: retention could not load an index: {err}",
                this.borrow().tp
            );
            break;
        }
    }
    let mut p = this.borrow_mut();
    let hw = p.high_watermark;
    p.log.apply_retention(now_ms, hw)
}

/// Where to scan for the first record with a timestamp of at least `timestamp` below the high
/// watermark (see `Log::cursor_for_timestamp`), loading the index files of the segments on the
/// way.
pub async fn cursor_for_timestamp<S: Storage>(
    this: &PartitionRef<S>,
    timestamp: i64,
) -> std::io::Result<Option<ReadCursor<S>>> {
    loop {
        let found = {
            let p = this.borrow();
            p.log.cursor_for_timestamp(timestamp, p.high_watermark)
        };
        match found {
            Ok(cursor) => return Ok(cursor),
            Err(load) => {
                load.run().await?;
            }
        }
    }
}

/// Cleans a compacted partition if a cleaning is due (see `storage::log::cleaner`): plans under
/// a short borrow, reads and writes segment files without one, swaps under another.
pub async fn clean<S: Storage>(
    this: &PartitionRef<S>,
    now_ms: i64,
    key_map_budget_bytes: usize,
) -> std::io::Result<Option<CleaningReport>> {
    // Its age decides what may be cleaned: a segment's largest timestamp is in its index files.
    let loads = this.borrow().log.unloaded_indexes();
    for load in loads {
        load.run().await?;
    }
    let plan = {
        let p = this.borrow();
        // Nothing of an open transaction, nor anything not yet committed.
        let stable = p.offsets().last_stable;
        p.log.plan_cleaning(stable, now_ms, key_map_budget_bytes)
    };
    let Some(plan) = plan else {
        return Ok(None);
    };
    let cleaned: Option<CleanedLog<S>> = match plan.run().await {
        Ok(cleaned) => cleaned,
        // Retention or DeleteRecords removed a segment it was about to read: plan again later.
        Err(err) if is_segment_gone(&err) => None,
        Err(err) => return Err(err),
    };
    let Some(cleaned) = cleaned else {
        return Ok(None);
    };
    let report = CleaningReport {
        bytes_before: cleaned.bytes_before,
        bytes_after: cleaned.bytes_after,
    };
    let finish = this.borrow_mut().log.install_cleaned(cleaned);
    finish.write().await?;
    Ok(Some(report))
}

/// Resolves once the leader's durable end reaches `offset` (acks=1: on this broker's disk), or
/// the partition fails.
pub async fn wait_durable<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
) -> Result<(), ErrorCode> {
    wait_for(this, AckLevel::Durable, offset).await
}

/// Resolves once the high watermark reaches `offset` (acks=all: committed), or the partition
/// fails.
pub async fn wait_high_watermark<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
) -> Result<(), ErrorCode> {
    wait_for(this, AckLevel::HighWatermark, offset).await
}

async fn wait_for<S: Storage>(
    this: &PartitionRef<S>,
    level: AckLevel,
    at: Offset,
) -> Result<(), ErrorCode> {
    let rx = {
        let mut p = this.borrow_mut();
        if p.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        if p.reached(level, at) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        p.ack_waiters.push(AckWaiter { level, at, tx });
        rx
    };
    schedule_flush(this);
    rx.await.unwrap_or(Err(ErrorCode::KafkaStorageError))
}

/// Resolves when data past `offset` may have become readable: for a consumer when the high
/// watermark moved, for a follower (`follower`) when the durable end did.
pub fn data_arrival<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
    follower: bool,
) -> Option<oneshot::Receiver<()>> {
    let mut p = this.borrow_mut();
    let readable = if follower {
        p.log.durable_end()
    } else {
        p.high_watermark
    };
    if readable > offset {
        return None;
    }
    let waiters = if follower {
        &mut p.follower_waiters
    } else {
        &mut p.data_waiters
    };
    // Fetches that timed out dropped their receivers: forget them so idle partitions under
    // long polls do not accumulate waiters.
    waiters.retain(|tx| !tx.is_canceled());
    let (tx, rx) = oneshot::channel();
    waiters.push(tx);
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{BrokerId, PartitionEpoch, PartitionState};

    impl Partition<MemStorage> {
        /// The image makes broker 1, the only replica, leader at `epoch` (or, `leading` false,
        /// broker 2 leads at it).
        fn set_leadership(&mut self, leading: bool, epoch: LeaderEpoch) {
            let leader = BrokerId(if leading { 1 } else { 2 });
            let state = PartitionState {
                replicas: vec![BrokerId(1)],
                adding: Vec::new(),
                removing: Vec::new(),
                isr: vec![leader],
                leader,
                leader_epoch: epoch,
                partition_epoch: PartitionEpoch(0),
            };
            self.take_role(BrokerId(1), &state, 0);
        }
    }
    use crate::storage::batch::test_batches::batch;
    use crate::storage::mem::MemStorage;
    use futures::executor::block_on;

    fn flush(p: &mut Partition<MemStorage>) {
        if let Some(job) = p.log.take_flush() {
            let result = block_on(job.run());
            let flushed = p.log.complete_flush(result);
            p.on_flushed(flushed);
        }
    }

    fn record(seq: i32) -> Bytes {
        Bytes::from(batch(&[&[b'x'; 100]], seq as i64, Some((7, 0, seq))))
    }

    #[test]
    fn crash_recovery_starts_from_the_newest_roll_snapshot() {
        let storage = MemStorage::default();
        let mut config = Config::default().log;
        config.segment_bytes = 1024;
        config.index_interval_bytes = 0;
        let dir = PathBuf::from("/data/p-0");
        let tp = TopicPartition::new("p", 0);
        let open = || {
            block_on(Partition::open(
                storage.clone(),
                tp.clone(),
                dir.clone(),
                config.clone(),
                false,
                0,
            ))
            .unwrap()
        };
        let (mut p, _) = open();
        for seq in 0..60 {
            p.append(&record(seq), 0).unwrap();
            if seq % 7 == 0 {
                flush(&mut p);
            }
        }
        flush(&mut p);
        assert!(p.log.segment_count() > 5);
        let snapshots = storage
            .list_dir(&dir)
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".snapshot"))
            .count();
        assert_eq!(snapshots, 1, "only the newest roll snapshot is kept");
        let expected = p.producers.clone();
        drop(p);
        storage.crash(|_, _| 0);

        let (mut p, report) = open();
        assert_eq!(
            p.producers, expected,
            "producer state rebuilt from the snapshot plus the active segment"
        );
        assert!(
            report.batches_scanned < 30,
            "segments below the snapshot are not rescanned: {report:?}"
        );
        let retry = p.append(&record(59), 0).unwrap();
        assert_eq!(
            retry.base_offset,
            Offset(59),
            "a retried batch gets its original offset after the crash"
        );
        assert_eq!(
            p.append(&record(61), 0),
            Err(ErrorCode::OutOfOrderSequenceNumber.into())
        );
        drop(p);

        // Without any snapshot the full scan reaches the same state.
        for name in storage.list_dir(&dir).unwrap() {
            if name.ends_with(".snapshot") {
                storage.remove_file(&dir.join(name)).unwrap();
            }
        }
        let (p, report) = open();
        assert_eq!(p.producers, expected);
        assert_eq!(report.batches_scanned, 60);
    }

    /// A plain batch from producer 20 (never transactional).
    fn plain(seq: i32) -> Bytes {
        Bytes::from(batch(&[&[b'p'; 100]], seq as i64, Some((20, 0, seq))))
    }

    fn transactional(seq: i32, producer: i64) -> Bytes {
        let mut b = batch(&[&[b't'; 100]], seq as i64, Some((producer, 0, seq)));
        let attributes = i16::from_be_bytes([b[21], b[22]]) | 0x10;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn transactions_hold_back_the_lso_and_aborts_survive_crashes_and_clean_stops() {
        let storage = MemStorage::default();
        let mut config = Config::default().log;
        config.segment_bytes = 1024;
        let dir = PathBuf::from("/data/t-0");
        let tp = TopicPartition::new("t", 0);
        let open = |clean: bool| {
            let opened = block_on(Partition::open(
                storage.clone(),
                tp.clone(),
                dir.clone(),
                config.clone(),
                clean,
                0,
            ));
            opened.unwrap().0
        };
        let (p7, p8, p9) = (ProducerId(7), ProducerId(8), ProducerId(9));
        let epoch = ProducerEpoch(0);
        let mut p = open(false);
        assert_eq!(
            p.append(&transactional(0, 7), 0),
            Err(ErrorCode::InvalidTxnState.into()),
            "not added to a transaction by the coordinator"
        );
        p.admit_transaction(p7, epoch);
        assert_eq!(
            p.append(&transactional(0, 7), 0).unwrap().base_offset,
            Offset(0)
        );
        assert_eq!(
            p.append(&plain(0), 0).unwrap().base_offset,
            Offset(1),
            "others write past an open transaction"
        );
        assert_eq!(
            p.append(&Bytes::from(batch(&[b"x"], 0, Some((7, 0, 1)))), 0),
            Err(ErrorCode::InvalidTxnState.into()),
            "no plain writes while its transaction is open"
        );
        flush(&mut p);
        assert_eq!(p.offsets().high_watermark, Offset(2));
        assert_eq!(
            p.offsets().last_stable,
            Offset(0),
            "held at the open transaction"
        );
        p.append(&transactional(1, 7), 0).unwrap();
        let abort = p.write_marker(p7, epoch, ControlType::Abort, 2, 0).unwrap();
        assert_eq!(abort.base_offset, Offset(3));
        p.admit_transaction(p8, epoch);
        p.append(&transactional(0, 8), 0).unwrap();
        p.write_marker(p8, epoch, ControlType::Commit, 0, 0)
            .unwrap();
        flush(&mut p);
        let offsets = p.offsets();
        assert_eq!(offsets.last_stable, offsets.high_watermark);
        let aborted = AbortedTxn {
            producer_id: p7,
            first_offset: Offset(0),
            last_offset: Offset(3),
            last_stable_offset: Offset(4),
        };
        assert_eq!(p.aborted_between(Offset(0), Offset(6)), vec![aborted]);
        assert_eq!(p.aborted_between(Offset(4), Offset(6)), vec![]);
        assert_eq!(
            p.write_marker(p7, ProducerEpoch(-1), ControlType::Commit, 0, 0),
            Err(ErrorCode::InvalidProducerEpoch),
            "a marker from an older epoch"
        );
        // Enough plain records to roll several segments (the abort's segment is sealed and a
        // roll snapshot is written after it), then an open transaction at the end.
        for seq in 1..30 {
            p.append(&plain(seq), 0).unwrap();
            flush(&mut p);
        }
        p.admit_transaction(p9, epoch);
        let open_at = p.append(&transactional(0, 9), 0).unwrap().base_offset;
        flush(&mut p);
        assert!(p.log.segment_count() > 3);
        assert_eq!(p.offsets().last_stable, open_at);
        let state = (p.offsets(), p.aborted_between(Offset(0), Offset(100)));
        drop(p);

        storage.crash(|_, _| 0);
        let mut p = open(false);
        assert_eq!(
            (p.offsets(), p.aborted_between(Offset(0), Offset(100))),
            state,
            "after a crash"
        );
        assert_eq!(
            p.write_marker(p7, epoch, ControlType::Commit, 1, 0),
            Err(ErrorCode::TransactionCoordinatorFenced),
            "the coordinator epoch of p7's abort, replayed from the log, fences an older one"
        );
        let p = Rc::new(RefCell::new(p));
        block_on(close(&p, &storage)).unwrap();
        drop(p);
        // The stop's one sync, then power loss: what the close wrote must all be there.
        storage.sync_filesystem(Path::new("/")).unwrap();
        storage.crash(|_, _| 0);
        let mut p = open(true);
        assert_eq!(
            (p.offsets(), p.aborted_between(Offset(0), Offset(100))),
            state,
            "after a clean stop and a power loss"
        );
        assert_eq!(
            p.write_marker(p7, epoch, ControlType::Commit, 1, 0),
            Err(ErrorCode::TransactionCoordinatorFenced),
            "and from the producer snapshot"
        );
        p.write_marker(p9, epoch, ControlType::Commit, 0, 0)
            .unwrap();
        flush(&mut p);
        assert_eq!(p.offsets().last_stable, p.offsets().high_watermark);
    }

    #[test]
    fn a_marker_during_verification_keeps_a_late_yes_from_starting_a_transaction() {
        let mut p = open_plain(&MemStorage::default());
        let (producer, epoch) = (ProducerId(7), ProducerEpoch(0));
        assert!(p.needs_admission(producer, epoch));
        let turn = p.admission_turn();
        let permit = turn.try_acquire_static_permit(1).unwrap();
        let ticket = p.begin_verification(producer, epoch, permit);
        assert!(
            turn.try_acquire_static_permit(1).is_err(),
            "one verification at a time"
        );
        p.write_marker(producer, epoch, ControlType::Abort, 0, 0)
            .unwrap();
        assert!(!p.finish_verification(producer, &ticket, true));
        assert!(p.needs_admission(producer, epoch));
        assert_eq!(
            p.append(&transactional(0, 7), 0),
            Err(ErrorCode::InvalidTxnState.into())
        );
        drop(ticket);

        let permit = turn.try_acquire_static_permit(1).unwrap();
        let ticket = p.begin_verification(producer, epoch, permit);
        assert!(p.finish_verification(producer, &ticket, true));
        assert!(!p.needs_admission(producer, epoch));
        p.append(&transactional(0, 7), 0).unwrap();
        assert!(
            !p.needs_admission(producer, epoch),
            "its transaction is open here"
        );
        assert!(
            p.needs_admission(producer, ProducerEpoch(1)),
            "a new epoch asks again"
        );
    }

    fn open_plain(storage: &MemStorage) -> Partition<MemStorage> {
        let opened = block_on(Partition::open(
            storage.clone(),
            TopicPartition::new("h", 0),
            PathBuf::from("/data/h-0"),
            Config::default().log,
            false,
            0,
        ));
        opened.unwrap().0
    }

    fn waiter(p: &mut Partition<MemStorage>, level: AckLevel, at: Offset) -> AckReceiver {
        let (tx, rx) = oneshot::channel();
        p.ack_waiters.push(AckWaiter { level, at, tx });
        rx
    }

    type AckReceiver = oneshot::Receiver<Result<(), ErrorCode>>;

    #[test]
    fn on_one_replica_the_high_watermark_is_the_durable_end_after_every_flush() {
        let storage = MemStorage::default();
        let mut p = open_plain(&storage);
        for round in 0..5 {
            for seq in 0..3 {
                p.append(&plain(round * 3 + seq), 0).unwrap();
            }
            assert!(p.offsets().high_watermark < p.offsets().log_end);
            assert!(
                p.cursor_at(p.offsets().high_watermark).unwrap().is_none(),
                "nothing at or past the high watermark is served"
            );
            flush(&mut p);
            assert_eq!(p.offsets().high_watermark, p.log.durable_end());
            assert_eq!(p.offsets().high_watermark, p.offsets().log_end);
        }
        drop(p);
        let p = open_plain(&storage);
        assert_eq!(
            p.offsets().high_watermark,
            Offset(15),
            "everything recovered is committed"
        );
    }

    #[test]
    fn acks_one_waits_for_the_durable_end_and_acks_all_for_the_high_watermark() {
        let storage = MemStorage::default();
        let p = Rc::new(RefCell::new(open_plain(&storage)));
        let end = p.borrow_mut().append(&plain(0), 0).unwrap().end;
        let (mut leader, mut all) = {
            let mut p = p.borrow_mut();
            let leader = waiter(&mut p, AckLevel::Durable, end);
            (leader, waiter(&mut p, AckLevel::HighWatermark, end))
        };
        let mut arrival = data_arrival(&p, Offset(0), false).expect("nothing readable yet");
        // The flush alone, with the high watermark held back as replication will hold it.
        {
            let mut p = p.borrow_mut();
            let job = p.log.take_flush().unwrap();
            let durable_end = p.log.complete_flush(block_on(job.run())).unwrap();
            assert_eq!(durable_end, end);
            p.wake_acks();
        }
        assert_eq!(leader.try_recv(), Ok(Some(Ok(()))), "on the leader's disk");
        assert_eq!(all.try_recv(), Ok(None), "not committed yet");
        assert_eq!(arrival.try_recv(), Ok(None));
        assert!(p.borrow().cursor_at(Offset(0)).unwrap().is_none());
        p.borrow_mut().advance_high_watermark(end);
        assert_eq!(all.try_recv(), Ok(Some(Ok(()))));
        assert_eq!(arrival.try_recv(), Ok(Some(())), "parked fetches wake");
        assert!(p.borrow().cursor_at(Offset(0)).unwrap().is_some());
        assert_eq!(block_on(wait_high_watermark(&p, end)), Ok(()));
        assert_eq!(block_on(wait_durable(&p, end)), Ok(()));
    }

    #[test]
    fn followers_read_past_the_high_watermark_up_to_the_durable_end() {
        let storage = MemStorage::default();
        let mut p = open_plain(&storage);
        p.append(&plain(0), 0).unwrap();
        flush(&mut p);
        let hw = p.offsets().high_watermark;
        let end = p.append(&plain(1), 0).unwrap().end;
        // The flush alone, with the high watermark held back as replication will hold it.
        let job = p.log.take_flush().unwrap();
        p.log.complete_flush(block_on(job.run())).unwrap();
        assert!(hw < end && p.offsets().high_watermark == hw);
        let readable = |cursor: Option<ReadCursor<MemStorage>>| {
            let read = |_, available| available;
            let cursor = cursor.expect("something readable");
            let payload = block_on(cursor.read_payload(Offset(0), read, usize::MAX));
            payload.unwrap().unwrap().available_bytes
        };
        let consumer = readable(p.cursor_at(Offset(0)).unwrap());
        let follower = readable(p.follower_cursor_at(Offset(0)).unwrap());
        assert_eq!(
            consumer,
            plain(0).len(),
            "consumers stop at the high watermark"
        );
        assert_eq!(
            follower,
            plain(0).len() + plain(1).len(),
            "followers read on"
        );
        assert!(p.cursor_at(hw).unwrap().is_none());
        assert!(p.follower_cursor_at(hw).unwrap().is_some());
        // Appended, not flushed: not readable by anyone yet.
        let unflushed = p.append(&plain(2), 0).unwrap().end;
        assert!(p.follower_cursor_at(end).unwrap().is_none());
        assert_eq!(
            p.follower_cursor_at(unflushed.next(1)).err(),
            Some(ErrorCode::OffsetOutOfRange)
        );
    }

    #[test]
    fn retention_and_delete_records_leave_the_high_watermark_where_it_is() {
        let storage = MemStorage::default();
        let mut config = Config::default().log;
        config.segment_bytes = 1024;
        config.retention_bytes = 1;
        let opened = block_on(Partition::open(
            storage.clone(),
            TopicPartition::new("r", 0),
            PathBuf::from("/data/r-0"),
            config,
            false,
            0,
        ));
        let p = Rc::new(RefCell::new(opened.unwrap().0));
        for seq in 0..30 {
            p.borrow_mut().append(&plain(seq), 0).unwrap();
            flush(&mut p.borrow_mut());
        }
        let hw = p.borrow().offsets().high_watermark;
        assert!(block_on(apply_retention(&p, 0)) > 0);
        assert_eq!(p.borrow().offsets().high_watermark, hw);
        assert_eq!(
            block_on(delete_records(&p, hw.next(1).0)),
            Err(ErrorCode::OffsetOutOfRange),
            "never past the high watermark"
        );
        assert_eq!(block_on(delete_records(&p, -1)), Ok(hw));
        assert_eq!(p.borrow().offsets().high_watermark, hw);
        assert_eq!(p.borrow().offsets().log_start, hw);
    }

    /// Everything the partition's log holds, as a Fetch from offset 0 would return it.
    fn log_bytes(p: &Partition<MemStorage>) -> Bytes {
        let cursor = p.cursor_at(Offset(0)).unwrap().expect("records");
        block_on(cursor.read(Offset(0), 1 << 20)).unwrap()
    }

    /// A leader partition at epoch 3 with plain and transactional batches, an abort, a commit
    /// and an open transaction, all flushed.
    fn leader_with_transactions() -> Partition<MemStorage> {
        let mut leader = open_plain(&MemStorage::default());
        leader.set_leadership(true, LeaderEpoch(3));
        let epoch = ProducerEpoch(0);
        leader.append(&plain(0), 0).unwrap();
        leader.admit_transaction(ProducerId(7), epoch);
        leader.append(&transactional(0, 7), 0).unwrap();
        leader.append(&plain(1), 0).unwrap();
        leader
            .write_marker(ProducerId(7), epoch, ControlType::Abort, 0, 0)
            .unwrap();
        leader.admit_transaction(ProducerId(8), epoch);
        leader.append(&transactional(0, 8), 0).unwrap();
        flush(&mut leader);
        leader
    }

    #[test]
    fn a_follower_appends_the_leaders_batches_as_they_are() {
        let leader = leader_with_transactions();
        let records = log_bytes(&leader);
        let mut follower = open_plain(&MemStorage::default());
        // The answer cut inside its last batch: that batch waits for the next fetch.
        let cut = records.slice(..records.len() - 10);
        let end = follower.append_replicated(&cut, 0).unwrap();
        assert_eq!(end, Offset(4));
        assert_eq!(
            follower.append_replicated(&records.slice(..30), 0),
            Ok(Offset(4)),
            "a partial header alone"
        );
        // The whole answer again: what is held is skipped.
        assert_eq!(follower.append_replicated(&records, 0), Ok(Offset(5)));
        flush(&mut follower);
        assert_eq!(log_bytes(&follower), records, "stored byte for byte");
        assert_eq!(follower.offsets(), leader.offsets());
        assert_eq!(follower.producers, leader.producers);
        assert_eq!(
            follower.aborted_between(Offset(0), Offset(10)),
            leader.aborted_between(Offset(0), Offset(10))
        );
        assert_eq!(follower.log.epoch_entries(), leader.log.epoch_entries());
        assert_eq!(
            follower.log.latest_epoch(),
            Some(LeaderEpoch(3)),
            "the leader's epoch, not the follower's"
        );
    }

    #[test]
    fn a_follower_refuses_damaged_or_misplaced_batches() {
        let leader = leader_with_transactions();
        let records = log_bytes(&leader);
        let first = BatchHeader::parse(&records).unwrap().total_bytes();
        let mut damaged = records.to_vec();
        damaged[first + 70] ^= 1;
        let mut follower = open_plain(&MemStorage::default());
        assert_eq!(
            follower.append_replicated(&Bytes::from(damaged), 0),
            Err(ErrorCode::CorruptMessage)
        );
        assert_eq!(
            follower.offsets().log_end,
            Offset(1),
            "the batch before stays"
        );
        assert_eq!(
            follower.append_replicated(&plain_at(1, 3), 0),
            Ok(Offset(4))
        );
        assert_eq!(
            follower.append_replicated(&plain_at(2, 3), 0),
            Err(ErrorCode::CorruptMessage),
            "a batch straddling the log end does not line up with ours"
        );
        assert_eq!(follower.offsets().log_end, Offset(4));
    }

    /// A follower with small segments (rolls, roll snapshots) holding the leader's records.
    fn follower_of(storage: &MemStorage, records: &Bytes) -> Partition<MemStorage> {
        let mut config = Config::default().log;
        config.segment_bytes = 400;
        let opened = block_on(Partition::open(
            storage.clone(),
            TopicPartition::new("f", 0),
            PathBuf::from("/data/f-0"),
            config,
            false,
            0,
        ));
        let mut follower = opened.unwrap().0;
        follower.append_replicated(records, 0).unwrap();
        flush(&mut follower);
        follower
    }

    #[test]
    fn a_follower_below_its_leaders_log_start_starts_over_there() {
        let records = log_bytes(&leader_with_transactions());
        let storage = MemStorage::default();
        let follower = Rc::new(RefCell::new(follower_of(&storage, &records)));
        assert_eq!(
            block_on(restart_at(&follower, Offset(3), 0)).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidInput),
            "only above its end"
        );
        block_on(restart_at(&follower, Offset(40), 0)).unwrap();
        {
            let p = follower.borrow();
            let at_40 = PartitionOffsets {
                log_start: Offset(40),
                high_watermark: Offset(40),
                last_stable: Offset(40),
                log_end: Offset(40),
            };
            assert_eq!(p.offsets(), at_40);
            assert_eq!(p.producers, ProducerStateTable::default());
            assert!(p.log.epoch_entries().is_empty());
            assert!(p.aborted_between(Offset(0), Offset(100)).is_empty());
        }
        // Empty, it may start lower: where the leader's first batch from 40 begins.
        block_on(restart_at(&follower, Offset(38), 0)).unwrap();
        {
            let mut p = follower.borrow_mut();
            assert_eq!(p.append_replicated(&plain_at(38, 5), 0), Ok(Offset(43)));
            flush(&mut p);
        }
        drop(follower);
        // Reopened (no roll snapshot of the old records left to trust), it starts at 38.
        let reopened = follower_of(&storage, &Bytes::new());
        assert_eq!(reopened.offsets().log_start, Offset(38));
        assert_eq!(reopened.offsets().log_end, Offset(43));
        assert_eq!(reopened.producers, ProducerStateTable::default());
    }

    #[test]
    fn a_follower_log_start_follows_its_leaders_up_to_its_high_watermark() {
        let records = log_bytes(&leader_with_transactions());
        let storage = MemStorage::default();
        let follower = Rc::new(RefCell::new(follower_of(&storage, &records)));
        follower.borrow_mut().follow_high_watermark(Offset(3));
        block_on(follow_log_start(&follower, Offset(5))).unwrap();
        assert_eq!(
            follower.borrow().offsets().log_start,
            Offset(3),
            "capped at its HW"
        );
        block_on(follow_log_start(&follower, Offset(1))).unwrap();
        assert_eq!(
            follower.borrow().offsets().log_start,
            Offset(3),
            "never back"
        );
        drop(follower);
        let reopened = follower_of(&storage, &Bytes::new());
        assert_eq!(reopened.offsets().log_start, Offset(3), "durably");
    }

    #[test]
    fn a_truncated_follower_matches_one_that_never_held_the_cut_records() {
        let mut leader = leader_with_transactions();
        for seq in 2..12 {
            leader.append(&plain(seq), 0).unwrap();
        }
        leader.set_leadership(true, LeaderEpoch(5));
        leader.append(&plain(12), 0).unwrap();
        flush(&mut leader);
        let records = log_bytes(&leader);
        let mut bases = Vec::new();
        let mut at = 0;
        while at < records.len() {
            let header = BatchHeader::parse(&records[at..]).unwrap();
            bases.push((header.base_offset, at));
            at += header.total_bytes();
        }
        for &(cut, bytes) in bases.iter().rev() {
            let storage = MemStorage::default();
            let follower = Rc::new(RefCell::new(follower_of(&storage, &records)));
            assert!(follower.borrow().log.segment_count() > 2);
            block_on(truncate_to(&follower, cut)).unwrap();
            let expected = follower_of(&MemStorage::default(), &records.slice(..bytes));
            let p = follower.borrow();
            let context = format!("truncated at {cut}");
            assert_eq!(p.offsets(), expected.offsets(), "{context}");
            assert_eq!(p.producers, expected.producers, "{context}");
            assert_eq!(
                p.aborted_between(Offset(0), Offset(100)),
                expected.aborted_between(Offset(0), Offset(100)),
                "{context}"
            );
            assert_eq!(
                p.log.epoch_entries(),
                expected.log.epoch_entries(),
                "{context}"
            );
            drop(p);
            // Power loss right after: recovery must not trust a snapshot of the cut records.
            drop(follower);
            storage.crash(|_, _| 0);
            let reopened = follower_of(&storage, &Bytes::new());
            assert_eq!(
                reopened.producers, expected.producers,
                "{context}, reopened"
            );
            assert_eq!(
                reopened.offsets(),
                expected.offsets(),
                "{context}, reopened"
            );
        }
    }

    /// A broker that led at epoch 3 without appending anything, then follows a leader whose log
    /// never had epoch 3: told to truncate at its own end (the leader's end of epoch 1), it drops
    /// the empty epoch, so its next fetch names epoch 1 and the two agree.
    #[test]
    fn truncating_at_the_log_end_drops_an_epoch_that_holds_no_record() {
        let mut p = open_plain(&MemStorage::default());
        p.set_leadership(true, LeaderEpoch(1));
        p.append(&plain(0), 0).unwrap();
        p.set_leadership(true, LeaderEpoch(3));
        p.set_leadership(false, LeaderEpoch(4));
        flush(&mut p);
        assert_eq!(p.latest_epoch(), Some(LeaderEpoch(3)));
        let p = Rc::new(RefCell::new(p));
        block_on(truncate_to(&p, Offset(1))).unwrap();
        assert_eq!(p.borrow().latest_epoch(), Some(LeaderEpoch(1)));
        assert_eq!(p.borrow().offsets().log_end, Offset(1));
    }

    #[test]
    fn becoming_leader_at_a_new_epoch_starts_it_at_the_log_end() {
        let mut p = open_plain(&MemStorage::default());
        p.append(&plain(0), 0).unwrap();
        p.set_leadership(true, LeaderEpoch(2));
        assert_eq!(p.log.latest_epoch(), Some(LeaderEpoch(2)));
        assert_eq!(
            p.end_offset_for_epoch(LeaderEpoch(0)),
            Some((LeaderEpoch(0), Offset(1))),
            "epoch 0 ends where epoch 2 starts, before any record of it"
        );
        p.set_leadership(false, LeaderEpoch(3));
        p.set_leadership(true, LeaderEpoch(1));
        assert_eq!(
            p.log.latest_epoch(),
            Some(LeaderEpoch(2)),
            "as follower, or older: none"
        );
        assert_eq!(
            p.append(&plain(1), 0).unwrap_err().code,
            ErrorCode::NotLeaderOrFollower,
            "a leader at an epoch older than the log's (a stale image) writes nothing"
        );
        p.set_leadership(true, LeaderEpoch(2));
        p.append(&plain(1), 0).unwrap();
        assert_eq!(
            p.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(2)))
        );
        assert_eq!(p.end_offset_for_epoch(LeaderEpoch(4)), None);
    }

    /// The memo's cases of the leader's DivergingEpoch check.
    #[test]
    fn the_leader_tells_a_diverged_follower_where_to_cut() {
        let mut p = open_plain(&MemStorage::default());
        // Epoch 1 holds 0..3, epoch 3 holds 3..5.
        p.set_leadership(true, LeaderEpoch(1));
        for seq in 0..3 {
            p.append(&plain(seq), 0).unwrap();
        }
        p.set_leadership(true, LeaderEpoch(3));
        for seq in 3..5 {
            p.append(&plain(seq), 0).unwrap();
        }
        flush(&mut p);
        let at = |e: i32, o: i64| Some((LeaderEpoch(e), Offset(o)));
        assert_eq!(p.diverging_epoch(-1, Offset(9)), Ok(None), "no check asked");
        assert_eq!(p.diverging_epoch(3, Offset(4)), Ok(None), "in step");
        assert_eq!(
            p.diverging_epoch(1, Offset(3)),
            Ok(None),
            "epoch 1 ends at 3 here too"
        );
        assert_eq!(
            p.diverging_epoch(1, Offset(4)),
            Ok(at(1, 3)),
            "the follower has epoch-1 records past where ours end"
        );
        assert_eq!(
            p.diverging_epoch(2, Offset(4)),
            Ok(at(1, 3)),
            "an epoch this log never had: E < LastFetchedEpoch"
        );
        assert_eq!(
            p.diverging_epoch(3, Offset(6)),
            Ok(at(3, 5)),
            "past our end at the latest epoch"
        );
        assert_eq!(
            p.diverging_epoch(4, Offset(5)),
            Err(ErrorCode::OffsetOutOfRange),
            "an epoch newer than ours: undefined"
        );
        let (_, checkpoint) = p.log.advance_log_start(Offset(3)).unwrap();
        block_on(checkpoint.write()).unwrap();
        assert_eq!(
            p.diverging_epoch(3, Offset(2)),
            Err(ErrorCode::OffsetOutOfRange),
            "below the log start"
        );
        assert_eq!(
            p.diverging_epoch(0, Offset(4)),
            Ok(at(0, 3)),
            "older than every entry: ends where the first starts"
        );
    }

    /// A producer-less plain batch of `count` records stamped at `base`, as a leader stores it.
    fn plain_at(base: i64, count: usize) -> Bytes {
        let values: Vec<&[u8]> = (0..count).map(|_| &b"g"[..]).collect();
        let mut b = batch(&values, 0, None);
        batch::assign_offset(&mut b, Offset(base), 0);
        Bytes::from(b)
    }

    #[test]
    fn a_follower_keeps_the_gaps_of_a_compacted_leader_log() {
        let mut follower = open_plain(&MemStorage::default());
        let mut records = plain_at(0, 2).to_vec();
        records.extend_from_slice(&plain_at(7, 3));
        assert_eq!(
            follower.append_replicated(&Bytes::from(records), 0),
            Ok(Offset(10))
        );
        flush(&mut follower);
        let cursor = follower.cursor_at(Offset(4)).unwrap().expect("readable");
        let read = block_on(cursor.read(Offset(4), 1)).unwrap();
        assert_eq!(BatchHeader::parse(&read).unwrap().base_offset, Offset(7));
    }

    #[test]
    #[should_panic(expected = "moving back")]
    fn the_high_watermark_never_moves_back() {
        let storage = MemStorage::default();
        let mut p = open_plain(&storage);
        p.append(&plain(0), 0).unwrap();
        p.append(&plain(1), 0).unwrap();
        flush(&mut p);
        p.advance_high_watermark(Offset(1));
    }

    #[test]
    #[should_panic(expected = "past the durable end")]
    fn the_high_watermark_never_passes_the_durable_end() {
        let storage = MemStorage::default();
        let mut p = open_plain(&storage);
        p.append(&plain(0), 0).unwrap();
        p.advance_high_watermark(Offset(1));
    }
}
