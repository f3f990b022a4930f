//! A partition as its owning shard sees it: the log, the idempotent-producer state, the leader
//! epoch, and the waiters parked on it (produce acks waiting for durability, fetches waiting for
//! data). Lives on one shard only; other shards reach it by cross-shard message.
//!
//! Offsets kept distinct from the start, because replication will build on them:
//! - log end offset: where the next append goes;
//! - high watermark: what is durable (on one broker, "committed"), what fetches may read and acks
//!   wait for;
//! - last stable offset: equal to the high watermark until transactions exist;
//! - leader epoch: stamped on every batch.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::config::LogConfig;
use crate::error::ErrorCode;
use crate::producer_state::{ProducerStateTable, SequenceCheck};
use crate::storage::batch::{self, BatchHeader};
use crate::storage::log::{Log, ReadCursor, RecoveryReport};
use crate::storage::{read_whole, segment, write_atomically, Storage};
use crate::types::{Offset, TopicPartition};

const PRODUCER_SNAPSHOT_FILE: &str = "producer.snapshot";
const PRODUCER_SNAPSHOT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a produce to this partition got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: Offset,
    pub log_append_time: i64,
    /// The acknowledgement may be sent once the high watermark reaches this offset.
    pub durable_at: Offset,
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
    leader_epoch: i32,
    ack_waiters: Vec<(Offset, oneshot::Sender<Result<(), ErrorCode>>)>,
    data_waiters: Vec<oneshot::Sender<()>>,
}

pub type PartitionRef<S> = Rc<RefCell<Partition<S>>>;

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
            &mut |h: &BatchHeader| producers.record(h),
        )
        .await?;
        if storage.exists(&snapshot_path) {
            // A snapshot is only valid for the clean stop that wrote it.
            storage.remove_file(&snapshot_path)?;
        }
        let partition = Partition {
            tp,
            dir,
            log,
            producers,
            leader_epoch: 0,
            ack_waiters: Vec::new(),
            data_waiters: Vec::new(),
        };
        Ok((partition, report))
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let hw = self.log.high_watermark();
        PartitionOffsets {
            log_start: self.log.log_start(),
            high_watermark: hw,
            last_stable: hw,
            log_end: self.log.end(),
        }
    }

    pub fn set_log_config(&mut self, config: LogConfig) {
        self.log.set_config(config);
    }

    /// Deletes segments retention no longer keeps (see `Log::apply_retention`).
    pub fn apply_retention(&mut self, now_ms: i64) -> usize {
        self.log.apply_retention(now_ms)
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Deletes whole segments below the log start that an earlier move could not (a flush was
    /// sealing them).
    pub fn remove_segments_below_start(&mut self) -> usize {
        self.log.remove_segments_below_start()
    }

    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    pub fn log_config(&self) -> &LogConfig {
        self.log.config()
    }

    /// Validates and appends a Produce request's records for this partition. Offsets are assigned
    /// here, synchronously, so requests are ordered as they arrive.
    pub fn append(&mut self, records: &Bytes, now_ms: i64) -> Result<ProduceOutcome, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let batches = batch::validate_produce(records, self.log.config().max_message_bytes)?;
        if batches.iter().any(|(h, _, _)| h.is_transactional()) {
            // Transactions arrive with the transaction coordinator; until then a transactional
            // batch cannot have been added to a transaction.
            return Err(ErrorCode::InvalidTxnState);
        }
        let mut first: Option<ProduceOutcome> = None;
        for (header, start, size) in batches {
            let outcome = match self.producers.check(&header)? {
                SequenceCheck::Duplicate(original) => ProduceOutcome {
                    base_offset: original.base_offset,
                    log_append_time: -1,
                    durable_at: original.last_offset.next(1),
                },
                SequenceCheck::Append => {
                    // A roll snapshot holds the state of every batch before the new segment.
                    let rolls = self
                        .log
                        .will_roll(size as u64, header.last_offset_delta, now_ms);
                    let snapshot = rolls.then(|| self.producers.encode());
                    let appended = self.log.append(
                        &records[start..start + size],
                        &header,
                        self.leader_epoch,
                        now_ms,
                    )?;
                    if let Some(bytes) = snapshot {
                        self.log.add_roll_snapshot(appended.base_offset, bytes);
                    }
                    let mut stored = header;
                    stored.base_offset = appended.base_offset;
                    self.producers.record(&stored);
                    ProduceOutcome {
                        base_offset: appended.base_offset,
                        log_append_time: appended.log_append_time,
                        durable_at: appended.last_offset.next(1),
                    }
                }
            };
            first = Some(match first {
                None => outcome,
                Some(f) => ProduceOutcome {
                    durable_at: outcome.durable_at.max(f.durable_at),
                    ..f
                },
            });
        }
        Ok(first.expect("validate_produce returns at least one batch"))
    }

    pub fn cursor_at(&self, offset: Offset) -> Result<Option<ReadCursor<S::File>>, ErrorCode> {
        if self.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        self.log.cursor_at(offset)
    }

    pub fn cursor_for_timestamp(&self, timestamp: i64) -> Option<ReadCursor<S::File>> {
        self.log.cursor_for_timestamp(timestamp)
    }

    /// Wakes everything the new high watermark satisfies (or fails every ack on a storage error).
    fn on_flushed(&mut self, result: Result<Offset, ErrorCode>) {
        match result {
            Ok(hw) => {
                let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ack_waiters)
                    .into_iter()
                    .partition(|(at, _)| *at <= hw);
                self.ack_waiters = waiting;
                for (_, tx) in done {
                    let _ = tx.send(Ok(()));
                }
                for tx in self.data_waiters.drain(..) {
                    let _ = tx.send(());
                }
            }
            Err(code) => {
                for (_, tx) in self.ack_waiters.drain(..) {
                    let _ = tx.send(Err(code));
                }
            }
        }
    }

    /// Deletes the partition's files (topic deletion). Pending acks fail.
    pub fn delete(&mut self) -> std::io::Result<()> {
        self.on_flushed(Err(ErrorCode::UnknownTopicOrPartition));
        self.log.delete()
    }
}

/// The newest roll snapshot that reads back intact: its offset and the producer state below it.
async fn newest_roll_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
) -> std::io::Result<Option<(Offset, ProducerStateTable)>> {
    if !storage.exists(dir) {
        return Ok(None);
    }
    let mut bases: Vec<Offset> = storage
        .list_dir(dir)?
        .iter()
        .filter_map(|n| segment::parse_snapshot_name(n))
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
        log::warn!(
            "producer snapshot {base} in {} is damaged; trying an older one",
            dir.display()
        );
    }
    Ok(None)
}

/// A clean stop: waits for pending writes, then writes index files and the producer snapshot.
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
    write_atomically(storage, &path, snapshot).await
}

/// Starts a flush job for the partition if one is due and none is running; it re-arms itself
/// until nothing is pending, so appends that arrive during a flush ride the next one.
pub fn schedule_flush<S: Storage>(this: &PartitionRef<S>) {
    let Some(job) = this.borrow_mut().log.take_flush() else {
        return;
    };
    let this = this.clone();
    glommio::spawn_local(async move {
        let result = job.run().await;
        {
            let mut p = this.borrow_mut();
            let flushed = p.log.complete_flush(result);
            p.on_flushed(flushed);
        }
        schedule_flush(&this);
    })
    .detach();
}

/// DeleteRecords: moves the log start to `offset` (-1: the high watermark), durably; returns the
/// new low watermark.
pub async fn delete_records<S: Storage>(
    this: &PartitionRef<S>,
    offset: i64,
) -> Result<Offset, ErrorCode> {
    let (low, checkpoint) = {
        let mut p = this.borrow_mut();
        let target = if offset == -1 {
            p.log.high_watermark()
        } else {
            Offset(offset)
        };
        p.log.advance_log_start(target)?
    };
    checkpoint.write().await.map_err(|err| {
        log::error!("persisting the log start offset: {err}");
        ErrorCode::KafkaStorageError
    })?;
    Ok(low)
}

/// Resolves once the high watermark reaches `offset` (or the partition fails).
pub async fn wait_durable<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
) -> Result<(), ErrorCode> {
    let rx = {
        let mut p = this.borrow_mut();
        if p.log.is_failed() {
            return Err(ErrorCode::KafkaStorageError);
        }
        if p.log.high_watermark() >= offset {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        p.ack_waiters.push((offset, tx));
        rx
    };
    schedule_flush(this);
    rx.await.unwrap_or(Err(ErrorCode::KafkaStorageError))
}

/// Resolves when data past `offset` may have become readable (the high watermark moved).
pub fn data_arrival<S: Storage>(
    this: &PartitionRef<S>,
    offset: Offset,
) -> Option<oneshot::Receiver<()>> {
    let mut p = this.borrow_mut();
    if p.log.high_watermark() > offset {
        return None;
    }
    // Fetches that timed out dropped their receivers: forget them so idle partitions under
    // long polls do not accumulate waiters.
    p.data_waiters.retain(|tx| !tx.is_canceled());
    let (tx, rx) = oneshot::channel();
    p.data_waiters.push(tx);
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
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
            Err(ErrorCode::OutOfOrderSequenceNumber)
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
}
