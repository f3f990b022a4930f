//! A partition's log: an ordered list of segments, appends with group fsync, reads by offset and
//! timestamp, roll, truncation and crash recovery. Owned by the partition's shard.
//!
//! Appends are synchronous and only note the batch as pending (its header copied and stamped with
//! its offsets, its records left in the request's buffer), so offsets are assigned in arrival
//! order without awaiting. A flush job (`take_flush` → `FlushJob::run` → `complete_flush`) then
//! writes everything pending with vectored writes and one fdatasync per file, however many
//! appends it covers; appends keep arriving while it runs and go into the next job. The durable
//! end (the offset after the last batch a completed job wrote) moves only when a job completes.
//!
//! The log knows nothing of the high watermark: the partition owns it and passes it in as the
//! bound of every consumer-facing read, retention and cleaning. Reads may go up to the durable
//! end, never past it, so nothing served can still be lost.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, ControlRecord, HEADER_BYTES};
use super::epoch_cache::LeaderEpochCache;
use super::index::{OffsetIndex, TimeIndex};
use super::payload::{FileRange, Payload};
use super::sealed_indexes::{IndexCache, Indexes, LazyIndexes};
use super::segment::{self, EncodedIndexes, Lookup, ScanRules, Segment};
use super::segment_check::{self, DamageKind, DamagedRange, Health, Pace, SegmentCheck};
use super::segment_files::{FileRef, SegmentFile, SegmentFiles};
use super::txn_index::{self, AbortedTxn};
use super::{rename_durably, write_synced, Storage, StorageFile};
use crate::config::{FlushPolicy, LogConfig, TimestampType};
use crate::error::ErrorCode;
use crate::limits;
use crate::metadata::records::LeaderEpoch;
use crate::types::Offset;

#[path = "cleaner.rs"]
pub mod cleaner;

/// The log start offset, when DeleteRecords moved it past the first segment's base.
const LOG_START_FILE: &str = "log-start-offset";

/// The leader-epoch cache (see `epoch_cache`), under Kafka's name for it.
const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// A log start offset to persist (write-temp, fsync, rename, fsync dir).
pub struct LogStartCheckpoint<S: Storage> {
    storage: S,
    path: PathBuf,
    contents: Vec<u8>,
}

impl<S: Storage> LogStartCheckpoint<S> {
    pub async fn write(self) -> io::Result<()> {
        super::write_atomically(&self.storage, &self.path, self.contents).await
    }
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time: i64,
}

/// Batches waiting to be written to one segment, from `position` on. Each batch's header, with
/// the fields the broker sets, is copied into `headers`; the rest of the batch stays in the
/// request it arrived in (`bodies` are slices of it, not copies). The flush writes headers and
/// bodies in file order with vectored writes.
#[derive(Debug)]
struct PendingWrite {
    segment_base: Offset,
    position: u64,
    len: u64,
    /// `HEADER_BYTES` per batch, in order.
    headers: Vec<u8>,
    /// Each batch after its header, in order.
    bodies: Vec<Bytes>,
}

impl PendingWrite {
    fn end(&self) -> u64 {
        self.position + self.len
    }

    /// Splits these batches into vectored writes (position, pieces in file order) of at most
    /// `WRITE_VECTORS_MAX` pieces each.
    fn into_vectored_writes(self) -> Vec<(u64, Vec<Bytes>)> {
        let headers = Bytes::from(self.headers);
        let mut pieces = Vec::with_capacity(2 * self.bodies.len());
        for (i, body) in self.bodies.into_iter().enumerate() {
            pieces.push(headers.slice(i * HEADER_BYTES..(i + 1) * HEADER_BYTES));
            pieces.push(body);
        }
        let mut writes = Vec::with_capacity(pieces.len().div_ceil(limits::WRITE_VECTORS_MAX));
        let mut position = self.position;
        let mut pieces = pieces.into_iter().peekable();
        while pieces.peek().is_some() {
            let chunk: Vec<Bytes> = pieces.by_ref().take(limits::WRITE_VECTORS_MAX).collect();
            let len: u64 = chunk.iter().map(|piece| piece.len() as u64).sum();
            writes.push((position, chunk));
            position += len;
        }
        debug_assert_eq!(position, self.position + self.len);
        writes
    }
}

/// The pending write that takes a batch at `position` of segment `segment_base`: the last one
/// when the batch continues it, else a new one.
fn pending_write_for(
    pending: &mut Vec<PendingWrite>,
    segment_base: Offset,
    position: u64,
) -> &mut PendingWrite {
    let continues = pending
        .last()
        .is_some_and(|p| p.segment_base == segment_base && p.end() == position);
    if !continues {
        pending.push(PendingWrite {
            segment_base,
            position,
            len: 0,
            headers: Vec::new(),
            bodies: Vec::new(),
        });
    }
    pending.last_mut().expect("a pending write")
}

/// What happened during recovery, for the log line and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub batches_scanned: usize,
    pub truncated_bytes: u64,
    pub rebuilt_indexes: usize,
    /// Damaged batches found in a trusted active segment (after a clean stop): damage, not a
    /// torn tail.
    pub damaged: Vec<DamagedRange>,
}

/// Called for every batch recovery scans (with the marker, for control batches); returns the
/// aborted transaction an ABORT marker ends, for the segment's txn index.
pub type OnBatch<'a> = dyn FnMut(&BatchHeader, Option<ControlRecord>) -> Option<AbortedTxn> + 'a;

/// A partition's log.
pub struct Log<S: Storage> {
    storage: S,
    /// The shard's open sealed-segment files.
    files: Rc<SegmentFiles<S::File>>,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment<S::File>>,
    log_start: Offset,
    end: Offset,
    /// The offset after the last batch a completed flush wrote (see `durable_end`).
    durable_end: Offset,
    pending: Vec<PendingWrite>,
    /// Segments rolled since the last flush: their index files must be written and synced.
    sealed: Vec<Offset>,
    messages_unsynced: u64,
    /// Producer-state snapshots taken at rolls, written by the next flush: (new segment base, bytes).
    roll_snapshots: Vec<(Offset, Vec<u8>)>,
    flush_running: bool,
    /// Segments the running flush writes to or seals: retention must not delete them under it
    /// (it would write index files for a segment that no longer exists).
    flushing: Vec<Offset>,
    failed: bool,
    /// Damaged ranges recovery cut from the active segment (see `RecoveryReport`).
    damaged_at_open: Vec<DamagedRange>,
    /// How far compaction got, and when it first saw each stretch of tombstones.
    cleaner_checkpoint: cleaner::CleanerCheckpoint,
    /// Where each leader epoch's records start (see `epoch_cache`).
    epochs: LeaderEpochCache,
    /// The cache changed since its file was last written: the next flush (or clean stop)
    /// writes it.
    epochs_unsaved: bool,
    /// A truncation is cutting the active segment (see `begin_truncation`).
    truncating: bool,
}

/// One round of group commit, run without borrowing the log.
pub struct FlushJob<S: Storage> {
    storage: S,
    dir: PathBuf,
    targets: Vec<FlushTarget<S::File>>,
    roll_snapshots: Vec<(Offset, Vec<u8>)>,
    /// The leader-epoch cache's file, when it changed since it was last written.
    epoch_checkpoint: Option<Vec<u8>>,
    sync: bool,
    end: Offset,
}

struct FlushTarget<F> {
    base: Offset,
    file: Option<Rc<F>>,
    /// Vectored writes: (position, pieces in file order).
    writes: Vec<(u64, Vec<Bytes>)>,
    written_to: u64,
    seal: Option<EncodedIndexes>,
}

/// The outcome of a flush job, handed back to `complete_flush`.
pub struct FlushDone<F> {
    opened: Vec<(Offset, Rc<F>)>,
    written: Vec<(Offset, u64)>,
    /// Segments whose seal (data and index files synced) this round wrote.
    sealed: Vec<Offset>,
    end: Offset,
}

impl<S: Storage> FlushJob<S> {
    /// Bytes this round writes to segment files.
    pub fn bytes(&self) -> u64 {
        self.targets
            .iter()
            .flat_map(|t| t.writes.iter())
            .flat_map(|(_, pieces)| pieces.iter())
            .map(|piece| piece.len() as u64)
            .sum()
    }

    /// Writes, syncs and seals; the log is untouched until `complete_flush`.
    pub async fn run(self) -> io::Result<FlushDone<S::File>> {
        // Before any batch of this round: a batch of a new epoch must never be durable while
        // the file that says where the epoch starts is not (replicas would then cut their logs
        // at the wrong place after a crash). Written synchronously, whatever `flush.messages`
        // says, since it changes only at a new epoch or a truncation. An entry written ahead of
        // batches a crash then tears is harmless: recovery cuts the cache at the log end.
        if let Some(checkpoint) = self.epoch_checkpoint {
            let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
            super::write_atomically(&self.storage, &path, checkpoint).await?;
        }
        let mut opened = Vec::new();
        let mut written = Vec::new();
        let mut sealed = Vec::new();
        let mut created_files = false;
        for target in self.targets {
            let file = match target.file {
                Some(file) => file,
                None => {
                    let file = Rc::new(
                        self.storage
                            .open(&segment::log_path(&self.dir, target.base))
                            .await?,
                    );
                    created_files = true;
                    opened.push((target.base, file.clone()));
                    file
                }
            };
            for (position, pieces) in target.writes {
                file.write_vectored_at(pieces, position).await?;
            }
            if self.sync || target.seal.is_some() {
                file.sync_data().await?;
            }
            if let Some(indexes) = target.seal {
                write_index_files(&self.storage, &self.dir, target.base, indexes, true).await?;
                created_files = true;
                sealed.push(target.base);
            }
            written.push((target.base, target.written_to));
        }
        // After the segments before them are synced: a snapshot says "everything below me is
        // durable, with its indexes", which is what recovery trusts.
        let newest_snapshot = self.roll_snapshots.last().map(|(base, _)| *base);
        for (base, bytes) in self.roll_snapshots {
            let path = segment::snapshot_path(&self.dir, base);
            write_file(&self.storage, &path, bytes, true).await?;
            created_files = true;
        }
        if created_files {
            self.storage.sync_dir(&self.dir)?;
        }
        if let Some(newest) = newest_snapshot {
            remove_older_snapshots(&self.storage, &self.dir, newest);
        }
        Ok(FlushDone {
            opened,
            written,
            sealed,
            end: self.end,
        })
    }
}

async fn write_file<S: Storage>(
    storage: &S,
    path: &Path,
    bytes: Vec<u8>,
    sync: bool,
) -> io::Result<()> {
    let len = bytes.len() as u64;
    let file = storage.open(path).await?;
    file.write_at(bytes, 0).await?;
    file.truncate(len).await?;
    if sync {
        file.sync_data().await?;
    }
    Ok(())
}

/// Writes a segment's index files, each synced if `sync` (the txn index only if it has
/// entries).
async fn write_index_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    indexes: EncodedIndexes,
    sync: bool,
) -> io::Result<()> {
    let index = segment::index_path(dir, base);
    write_file(storage, &index, indexes.index, sync).await?;
    let time_index = segment::time_index_path(dir, base);
    write_file(storage, &time_index, indexes.time_index, sync).await?;
    if !indexes.txn_index.is_empty() {
        let txn_index = segment::txn_index_path(dir, base);
        write_file(storage, &txn_index, indexes.txn_index, sync).await?;
    }
    Ok(())
}

/// The writes of a clean shutdown, run without borrowing the log. They are not synced one by
/// one: the stop syncs the whole file system once, after every partition wrote its part
/// (`Storage::sync_filesystem`), and only then writes its clean-shutdown marker.
pub struct ClosePlan<S: Storage> {
    storage: S,
    dir: PathBuf,
    /// The segments whose index files the stop writes (base offset, encoded indexes).
    indexes: Vec<(Offset, EncodedIndexes)>,
    /// The leader-epoch cache's file, when it changed since it was last written (an epoch
    /// assigned without records since: see `Log::assign_epoch_start`).
    epoch_checkpoint: Option<Vec<u8>>,
}

impl<S: Storage> ClosePlan<S> {
    pub async fn run(self) -> io::Result<()> {
        if let Some(checkpoint) = self.epoch_checkpoint {
            let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
            super::write_replacing(&self.storage, &path, checkpoint).await?;
        }
        for (base, indexes) in self.indexes {
            write_index_files(&self.storage, &self.dir, base, indexes, false).await?;
        }
        Ok(())
    }
}

/// A segment check for the scrub to run, without borrowing the log.
pub struct SegmentScrub<S: Storage> {
    file: FileRef<S>,
    check: Rc<SegmentCheck>,
}

impl<S: Storage> SegmentScrub<S> {
    /// Runs the check (unless a read ran it meanwhile), calling `pace` after each chunk read.
    pub async fn run(&self, pace: &mut Pace<'_>) -> io::Result<()> {
        let file = self.file.get().await?;
        self.check.health_paced(&*file, pace).await.map(|_| ())
    }
}

/// Where a read starts: a file, a position to scan forward from, and how far is readable.
pub struct ReadCursor<S: Storage> {
    file: FileRef<S>,
    start: ScanStart<S>,
    readable: u64,
    /// The bound the caller passed, when it falls inside this segment's readable batches: no
    /// batch at or past it is served (the read scans headers for it). `None` when the segment's
    /// readable bytes end at or below the bound, as they always do on one replica.
    cut: Option<Offset>,
    /// The segment's check, when it has one (see `segment_check`): reads wait for it and never
    /// serve what it found damaged.
    check: Option<Rc<SegmentCheck>>,
    /// Where the read goes on when this segment ends before the offset it wants (see
    /// `Segment::next_offset_is_bound`), or a timestamp search when this segment holds no match
    /// above the log start.
    then: Option<Box<ReadCursor<S>>>,
}

/// A fetch read: its records, and the sizes they were cut from (see `ReadCursor::read_payload`).
#[derive(Debug)]
pub struct PayloadRead {
    pub records: Payload,
    pub first_batch_bytes: usize,
    pub available_bytes: usize,
}

/// The batch a read starts at, found in its segment file.
struct Located<F> {
    file: Rc<F>,
    position: u64,
    first_batch_bytes: usize,
    /// From `position` to the end of what the segment has readable.
    available_bytes: usize,
}

/// Where a read starts scanning its segment.
enum ScanStart<S: Storage> {
    At(u64),
    /// Where the segment's indexes put `key`: the read loads them first.
    Indexed {
        load: IndexLoad<S>,
        key: IndexKey,
    },
}

/// What a read looks up in a segment's indexes.
enum IndexKey {
    /// An offset relative to the segment's base.
    Offset(u32),
    /// The first record with at least this timestamp.
    Timestamp(i64),
}

impl<S: Storage> ScanStart<S> {
    fn new(lookup: Lookup, storage: &S, key: IndexKey) -> Self {
        match lookup {
            Lookup::At(position) => ScanStart::At(position),
            Lookup::Load(lazy) => ScanStart::Indexed {
                load: IndexLoad {
                    storage: storage.clone(),
                    lazy,
                },
                key,
            },
        }
    }

    /// The position in `file`, the segment's log, which rebuilds the indexes if it must.
    async fn position(&self, file: &S::File) -> io::Result<u64> {
        match self {
            ScanStart::At(position) => Ok(*position),
            ScanStart::Indexed { load, key } => {
                let indexes = load.run_with(Some(file)).await?;
                Ok(match *key {
                    IndexKey::Offset(relative) => indexes.position_of(relative),
                    IndexKey::Timestamp(timestamp) => indexes.position_at_time(timestamp),
                })
            }
        }
    }
}

/// Loads a sealed segment's indexes that recovery left in their files (see
/// `sealed_indexes::LazyIndexes`), without borrowing the log: they land in the slot the segment
/// shares with its readers, and in the shard's index cache.
pub struct IndexLoad<S: Storage> {
    storage: S,
    lazy: Rc<LazyIndexes>,
}

impl<S: Storage> IndexLoad<S> {
    /// The indexes: in memory already, read from their files, or rebuilt from the log when the
    /// files are damaged or missing.
    pub async fn run(&self) -> io::Result<Rc<Indexes>> {
        self.run_with(None).await
    }

    /// `run`, rebuilding from `log` (the segment's open file) if it must.
    async fn run_with(&self, log: Option<&S::File>) -> io::Result<Rc<Indexes>> {
        let lazy = &self.lazy;
        if let Some(indexes) = lazy.get() {
            return Ok(indexes);
        }
        let files = load_indexes(&self.storage, &lazy.dir, lazy.base_offset, lazy.log_size).await;
        let indexes = match files {
            Ok(Some((index, time_index))) => Indexes::from_files(index, time_index),
            // Gone between the check and the read: retention may be deleting the segment, whose
            // open log, if the caller has it, still reads.
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            Ok(None) | Err(_) => {
                tracing::warn!(
                    "segment {} in {}: index files damaged or missing; rebuilding them from the log",
                    lazy.base_offset,
                    lazy.dir.display()
                );
                let indexes = match log {
                    Some(file) => self.rebuild(file).await?,
                    None => {
                        let path = segment::log_path(&lazy.dir, lazy.base_offset);
                        self.rebuild(&self.storage.open_existing(&path).await?)
                            .await?
                    }
                };
                if lazy.claim_rewrite() {
                    self.write_back(&indexes).await;
                }
                indexes
            }
        };
        Ok(lazy.install(indexes))
    }

    /// Writes rebuilt indexes over the damaged or missing files, so that later loads (after an
    /// eviction from the shard's cache, or a restart) read them instead of scanning the segment
    /// again; Kafka rewrites them too. Each file goes to a temp file of its own, is synced and
    /// renamed into place, so a crash leaves the old file or the whole new one. The renames
    /// happen only while the log still holds the segment: checked right before each
    /// (synchronous) rename, so retention, a cleaning swap or a truncation that let go of it
    /// meanwhile keeps its own files. After a failure the damaged files stay: loads after an
    /// eviction scan the segment again, and the next start tries the write again.
    async fn write_back(&self, indexes: &Indexes) {
        let lazy = &self.lazy;
        let files = [
            (
                segment::index_path(&lazy.dir, lazy.base_offset),
                indexes.index.encode(),
            ),
            (
                segment::time_index_path(&lazy.dir, lazy.base_offset),
                indexes.time_index.encode(),
            ),
        ];
        for (path, contents) in files {
            let temp = segment::rebuilt_path(&path);
            let written = write_synced(&self.storage, &temp, contents).await;
            let renamed = written.and_then(|()| {
                if lazy.is_retired() {
                    return Err(io::Error::other("the segment left the log meanwhile"));
                }
                rename_durably(&self.storage, &temp, &path)
            });
            if let Err(err) = renamed {
                if self.storage.exists(&temp) {
                    let _ = self.storage.remove_file(&temp);
                }
                tracing::warn!(
                    "segment {} in {}: rebuilt indexes not written back ({err})",
                    lazy.base_offset,
                    lazy.dir.display()
                );
                return;
            }
        }
        tracing::info!(
            "segment {} in {}: rebuilt index files written",
            lazy.base_offset,
            lazy.dir.display()
        );
    }

    async fn rebuild(&self, file: &S::File) -> io::Result<Indexes> {
        let lazy = &self.lazy;
        let mut seg = Segment::<S::File>::new(lazy.base_offset, SegmentFile::Unwritten, 0);
        let mut report = RecoveryReport::default();
        let mut no_feed = |_: &BatchHeader, _: Option<ControlRecord>| None;
        // A check may have trimmed a segment cut short since recovery took its size.
        let (rules, size) = (lazy.rules, lazy.log_size.min(file.size().await?));
        scan_batches(
            file,
            &mut seg,
            rules,
            size,
            false,
            &mut report,
            &mut no_feed,
        )
        .await?;
        seg.finish_time_index();
        Ok(seg.into_built_indexes().expect("a scan builds indexes"))
    }
}

impl<S: Storage> Log<S> {
    /// Opens (or creates) the log in `dir`, recovering it.
    ///
    /// Segments whose base offset is below `trusted_below` were synced, with their index files,
    /// before something durable said so (a clean stop: `Offset(i64::MAX)`; a roll snapshot: its
    /// offset): the sealed ones among them are not read here (see `SealedLoad`). Every other
    /// segment is scanned from its start, each batch CRC-checked, and, unless trusted, fed to
    /// `on_batch` in order (producer state is rebuilt from them): the active one always, since a
    /// clean stop says its bytes were synced, not that the disk kept them.
    pub async fn open(
        storage: S,
        dir: PathBuf,
        config: LogConfig,
        trusted_below: Offset,
        now_ms: i64,
        on_batch: &mut OnBatch<'_>,
    ) -> io::Result<(Log<S>, RecoveryReport)> {
        if !storage.exists(&dir) {
            storage.create_dir_all(&dir)?;
            // The new directory's entry must be durable before anything in it is acknowledged.
            if let Some(parent) = dir.parent() {
                storage.sync_dir(parent)?;
            }
        }
        cleaner::recover_swaps(&storage, &dir)?;
        let names: HashSet<String> = storage.list_dir(&dir)?.into_iter().collect();
        remove_half_rebuilt_indexes(&storage, &dir, &names);
        let mut bases: Vec<Offset> = names
            .iter()
            .filter_map(|n| segment::parse_log_name(n))
            .collect();
        bases.sort();
        let shared_dir: Rc<Path> = Rc::from(dir.as_path());
        let files = storage.segment_files();
        let index_cache = storage.index_cache();
        let mut report = RecoveryReport::default();
        let saved_epochs = load_epoch_checkpoint(&storage, &dir).await?;
        let mut epochs = saved_epochs.clone().unwrap_or_default();
        let mut segments = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let next_base = bases.get(i + 1).copied();
            let mut seg = Segment::new(base, SegmentFile::Unwritten, now_ms);
            if let Some(next_base) = next_base.filter(|_| base < trusted_below) {
                let sealed = SealedLoad {
                    dir: &shared_dir,
                    names: &names,
                    next_base,
                    files: &files,
                    index_cache: &index_cache,
                    rules: ScanRules::of(&config),
                };
                sealed.load(&storage, &mut seg).await?;
                segments.push(seg);
                continue;
            }
            let intact = load_segment(
                &storage,
                &dir,
                &mut seg,
                &config,
                trusted_below,
                next_base.is_none(),
                &mut report,
                &mut |h: &BatchHeader, control: Option<ControlRecord>| {
                    epochs.note_batch(LeaderEpoch(h.partition_leader_epoch), h.base_offset);
                    on_batch(h, control)
                },
            )
            .await?;
            if intact && next_base.is_some() {
                // Sealed: closed until a read wants it, so a restart holds no descriptor per
                // segment.
                seg.seal_file(&files, false);
            }
            segments.push(seg);
            if !intact {
                // Everything after a corrupt batch is gone, later segments included (as Kafka does).
                for &later in &bases[i + 1..] {
                    report.truncated_bytes += storage
                        .open(&segment::log_path(&dir, later))
                        .await?
                        .size()
                        .await?;
                    remove_segment_files(&storage, &dir, later);
                }
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::new(Offset(0), SegmentFile::Unwritten, now_ms));
        }
        report.segments = segments.len();
        let end = segments
            .last()
            .map(|s| s.next_offset)
            .unwrap_or(segments[0].base_offset);
        // DeleteRecords may have moved the start inside the first segment.
        let checkpoint = super::read_whole(&storage, &dir.join(LOG_START_FILE), 64)
            .await?
            .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<i64>().ok())
            .map(Offset);
        let log_start = checkpoint
            .unwrap_or(Offset(0))
            .clamp(segments[0].base_offset, end);
        let cleaner_checkpoint = cleaner::load_checkpoint(&storage, &dir).await;
        // Entries past a torn tail, or below a start DeleteRecords or retention moved, may still
        // be in the file (those moves do not write it at once).
        epochs.truncate_from_end(end);
        epochs.truncate_from_start(log_start);
        let epochs_unsaved = match &saved_epochs {
            Some(saved) => *saved != epochs,
            None => !epochs.entries().is_empty(),
        };
        let log = Log {
            storage,
            files,
            dir,
            config,
            segments,
            log_start,
            end,
            durable_end: end,
            pending: Vec::new(),
            sealed: Vec::new(),
            messages_unsynced: 0,
            roll_snapshots: Vec::new(),
            flush_running: false,
            flushing: Vec::new(),
            failed: false,
            damaged_at_open: report.damaged.clone(),
            cleaner_checkpoint,
            epochs,
            epochs_unsaved,
            truncating: false,
        };
        log.assert_offsets_ordered();
        Ok((log, report))
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Notes a transaction aborted by the marker just appended (it lives in the last segment).
    pub fn add_aborted(&mut self, aborted: AbortedTxn) {
        self.segments
            .last_mut()
            .expect("a log has a segment")
            .aborted
            .push(aborted);
    }

    /// The aborted transactions with records in `[from, to)`, oldest first.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.segments
            .iter()
            .filter(|s| s.next_offset > from || s.base_offset >= from)
            .flat_map(|s| s.aborted.iter())
            .filter(|a| a.overlaps(from, to))
            .copied()
            .collect()
    }
    /// Log end offset: the offset the next append gets.
    pub fn end(&self) -> Offset {
        self.end
    }
    /// The durable end: the offset after the last batch a completed flush wrote, fsynced under
    /// the default `flush.messages` of 1 (with a larger value, written to the page cache, as in
    /// Kafka). Kafka's log end offset as a follower reports it: everything below it survives a
    /// crash of this broker. Reads never go past it.
    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }

    /// `log_start <= durable_end <= end`: nothing readable lies below the start, and only what
    /// was appended can be durable.
    fn assert_offsets_ordered(&self) {
        assert!(
            self.log_start <= self.durable_end && self.durable_end <= self.end,
            "{}: offsets out of order: log start {}, durable end {}, end {}",
            self.dir.display(),
            self.log_start,
            self.durable_end,
            self.end
        );
    }
    pub fn is_failed(&self) -> bool {
        self.failed
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies changed topic configs: sizes and ages on the next append, retention on the next
    /// check, limits on the next produce.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn has_pending(&self) -> bool {
        self.has_unwritten_batches() || self.epochs_unsaved
    }

    /// Batches, seals or roll snapshots not yet handed to a flush.
    fn has_unwritten_batches(&self) -> bool {
        !self.pending.is_empty() || !self.sealed.is_empty() || !self.roll_snapshots.is_empty()
    }

    /// The epoch of the newest entry in the leader-epoch cache (Kafka's `latestEpoch`).
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest().map(|e| e.epoch)
    }

    /// Where `epoch` ends in this log, with the log end as the end of the latest epoch (see
    /// `LeaderEpochCache::end_offset_for`); `None` where Kafka answers UNDEFINED (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.end)
    }

    /// Records that `epoch` starts at `start` (a broker becoming leader at a new epoch: the log
    /// end, before any record of it is written, as Kafka's `makeLeader` does). Without the entry
    /// a follower holding records of an older epoch past this log's end could not learn where
    /// that epoch ended here. Written by the next flush or clean stop.
    pub fn assign_epoch_start(&mut self, epoch: LeaderEpoch, start: Offset) {
        self.epochs_unsaved |= self.epochs.assign(epoch, start);
    }

    /// The leader-epoch cache's entries (for tests and diagnostics).
    pub fn epoch_entries(&self) -> &[super::epoch_cache::EpochEntry] {
        self.epochs.entries()
    }

    /// Records the producer state as of a roll (everything below `base`, the new segment's base);
    /// the next flush writes it durably after the sealed segments, so recovery can start there.
    pub fn add_roll_snapshot(&mut self, base: Offset, bytes: Vec<u8>) {
        self.roll_snapshots.push((base, bytes));
    }

    /// Appends one validated batch (a complete v2 batch) and returns the offsets it got. Only the
    /// batch's header is copied, to set the broker-owned fields; the records are written from
    /// `batch` itself, which the flush holds until they are on disk.
    pub fn append(
        &mut self,
        batch: Bytes,
        header: &BatchHeader,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Appended, ErrorCode> {
        self.check_appendable()?;
        if let Some(latest) = self.latest_epoch().filter(|latest| leader_epoch < latest.0) {
            // Only a leader acting on a stale image gets here: its batch would put an older epoch
            // after a newer one, which no follower's divergence check could then find.
            tracing::warn!(
                "log {}: refusing an append at leader epoch {leader_epoch}, below the log's \
                 latest epoch {}",
                self.dir.display(),
                latest.0
            );
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let size = batch.len() as u64;
        debug_assert_eq!(size as usize, header.total_bytes());
        self.maybe_roll(size, self.end, header.last_offset_delta, now_ms);
        let base_offset = self.end;
        let mut stamped: [u8; HEADER_BYTES] = batch[..HEADER_BYTES]
            .try_into()
            .expect("a validated batch has a header");
        let body = batch.slice(HEADER_BYTES..);
        batch::assign_offset(&mut stamped, base_offset, leader_epoch);
        let log_append_time = match self.config.timestamp_type {
            TimestampType::LogAppendTime => {
                batch::set_log_append_time(&mut stamped, &body, now_ms);
                now_ms
            }
            TimestampType::CreateTime => -1,
        };
        Ok(self.add_batch(stamped, body, log_append_time))
    }

    /// Appends a batch exactly as the leader wrote it (a follower's append): its offsets, leader
    /// epoch and timestamps are kept, and it must be a complete stored batch (the caller checks
    /// its CRC). It may start past the log end, never below: a compacted leader log has gaps
    /// between batches, and the follower's log keeps them, as Kafka's does.
    pub fn append_replicated(
        &mut self,
        batch: Bytes,
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<Appended, ErrorCode> {
        self.check_appendable()?;
        if header.base_offset < self.end || batch.len() != header.total_bytes() {
            return Err(ErrorCode::CorruptMessage);
        }
        let size = batch.len() as u64;
        if size > ScanRules::of(&self.config).batch_max_bytes {
            // Recovery would take it for damage and cut the log there.
            return Err(ErrorCode::MessageTooLarge);
        }
        self.maybe_roll(size, header.base_offset, header.last_offset_delta, now_ms);
        let active_base = self.segments.last().expect("active segment").base_offset;
        if header.last_offset().0 - active_base.0 > i32::MAX as i64 {
            // Only after a gap of 2^31 offsets into an empty active segment: the index could not
            // say where its records are.
            return Err(ErrorCode::CorruptMessage);
        }
        let stamped: [u8; HEADER_BYTES] = batch[..HEADER_BYTES]
            .try_into()
            .expect("a whole batch has a header");
        let log_append_time = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            -1
        };
        Ok(self.add_batch(stamped, batch.slice(HEADER_BYTES..), log_append_time))
    }

    /// Refuses appends to a failed log, and during a truncation (only a follower truncates, and
    /// its fetcher appends again once the truncation is done).
    fn check_appendable(&self) -> Result<(), ErrorCode> {
        if self.failed {
            return Err(ErrorCode::KafkaStorageError);
        }
        if self.truncating {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        Ok(())
    }

    /// Notes a batch, its header as stored (`stamped`) and the records after it (`body`), as
    /// pending in the active segment, and its epoch in the cache.
    fn add_batch(
        &mut self,
        stamped: [u8; HEADER_BYTES],
        body: Bytes,
        log_append_time: i64,
    ) -> Appended {
        let stored_header = BatchHeader::parse(&stamped).expect("a whole header");
        let size = stored_header.total_bytes() as u64;
        let base_offset = stored_header.base_offset;
        self.epochs_unsaved |= self.epochs.note_batch(
            LeaderEpoch(stored_header.partition_leader_epoch),
            base_offset,
        );
        let active = self
            .segments
            .last_mut()
            .expect("a log always has an active segment");
        let position = active.size;
        let pending = pending_write_for(&mut self.pending, active.base_offset, position);
        pending.headers.extend_from_slice(&stamped);
        pending.bodies.push(body);
        pending.len += size;
        active.note_batch(&stored_header, position, self.config.index_interval_bytes);
        self.end = stored_header.next_offset();
        debug_assert!(self.log_start <= self.durable_end && self.durable_end <= self.end);
        self.messages_unsynced += stored_header.record_count as u64;
        Appended {
            base_offset,
            last_offset: stored_header.last_offset(),
            log_append_time,
        }
    }

    /// Whether appending a batch of `incoming` bytes starting at offset `first` (the log end,
    /// unless a replicated batch follows a gap) now starts a new segment: it would not fit, the
    /// active segment is older than `segment.ms`, or the batch's offsets would not fit the
    /// index's 32-bit relative offsets.
    pub fn will_roll(
        &self,
        incoming: u64,
        first: Offset,
        last_offset_delta: i32,
        now_ms: i64,
    ) -> bool {
        let active = self.segments.last().expect("active segment");
        let full = active.size > 0 && active.size + incoming > self.config.segment_bytes;
        let old = active.size > 0 && now_ms - active.created_ms >= self.config.segment_ms;
        let last_relative = first.0 + last_offset_delta as i64 - active.base_offset.0;
        let offsets_overflow = active.size > 0 && last_relative > i32::MAX as i64;
        full || old || offsets_overflow
    }

    /// Rolls if `will_roll` says so; the new segment starts at `first`, the batch's offset.
    fn maybe_roll(&mut self, incoming: u64, first: Offset, last_offset_delta: i32, now_ms: i64) {
        if self.will_roll(incoming, first, last_offset_delta, now_ms) {
            let active = self.segments.last_mut().expect("active segment");
            active.finish_time_index();
            self.sealed.push(active.base_offset);
            self.segments
                .push(Segment::new(first, SegmentFile::Unwritten, now_ms));
        }
    }

    /// Takes everything pending as one flush job, unless one is already running.
    pub fn take_flush(&mut self) -> Option<FlushJob<S>> {
        if self.flush_running || self.failed || self.truncating || !self.has_pending() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let sealed = std::mem::take(&mut self.sealed);
        let mut targets: Vec<FlushTarget<S::File>> = Vec::new();
        for write in pending {
            let target = self.target_for(&mut targets, write.segment_base);
            target.written_to = write.end();
            target.writes.extend(write.into_vectored_writes());
        }
        for base in sealed {
            let seg = self.segment(base).expect("sealed segment exists");
            let seal = seg
                .encode_indexes()
                .expect("a segment sealed by a roll has built indexes");
            let size = seg.size;
            let target = self.target_for(&mut targets, base);
            target.written_to = size;
            target.seal = Some(seal);
        }
        targets.sort_by_key(|t| t.base);
        self.flushing = targets.iter().map(|t| t.base).collect();
        let sync = match self.config.flush {
            FlushPolicy::Durable => true,
            FlushPolicy::EveryMessages(n) => self.messages_unsynced >= n,
        };
        if sync {
            self.messages_unsynced = 0;
        }
        self.flush_running = true;
        Some(FlushJob {
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            targets,
            roll_snapshots: std::mem::take(&mut self.roll_snapshots),
            epoch_checkpoint: self.take_epoch_checkpoint(),
            sync,
            end: self.end,
        })
    }

    /// The cache's file contents when it changed since last written; it counts as written from
    /// here (a failed write fails the log).
    fn take_epoch_checkpoint(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.epochs_unsaved).then(|| self.epochs.encode())
    }

    fn target_for<'a>(
        &self,
        targets: &'a mut Vec<FlushTarget<S::File>>,
        base: Offset,
    ) -> &'a mut FlushTarget<S::File> {
        if let Some(i) = targets.iter().position(|t| t.base == base) {
            return &mut targets[i];
        }
        let file = self.segment(base).and_then(|s| s.file.open_file());
        targets.push(FlushTarget {
            base,
            file,
            writes: Vec::new(),
            written_to: 0,
            seal: None,
        });
        targets.last_mut().expect("just pushed")
    }

    fn segment(&self, base: Offset) -> Option<&Segment<S::File>> {
        self.segments.iter().find(|s| s.base_offset == base)
    }

    /// Applies a finished flush job. On error the log is failed: nothing after the last good
    /// flush is ever acknowledged, and every later append is refused until a restart recovers.
    pub fn complete_flush(
        &mut self,
        result: io::Result<FlushDone<S::File>>,
    ) -> Result<Offset, ErrorCode> {
        self.flush_running = false;
        self.flushing.clear();
        let done = match result {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(
                    "log {}: write or fsync failed, failing the partition: {err}",
                    self.dir.display()
                );
                self.failed = true;
                return Err(ErrorCode::KafkaStorageError);
            }
        };
        for (base, file) in done.opened {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.base_offset == base) {
                seg.file = SegmentFile::Open(file);
            }
        }
        for (base, written_to) in done.written {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.base_offset == base) {
                seg.readable = seg.readable.max(written_to);
            }
        }
        for base in done.sealed {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.base_offset == base) {
                seg.indexes_saved = true;
                // Kept open in the cache: lagging readers are likely to want it next.
                seg.seal_file(&self.files, true);
            }
        }
        assert!(
            done.end >= self.durable_end,
            "the durable end must not move back"
        );
        self.durable_end = done.end;
        self.assert_offsets_ordered();
        Ok(self.durable_end)
    }

    /// The cut a read bounded by `upto` needs: none when the readable bytes end there anyway.
    fn cut_at(&self, upto: Offset) -> Option<Offset> {
        assert!(
            upto <= self.durable_end,
            "a read bound ({upto}) past the durable end ({})",
            self.durable_end
        );
        (upto < self.durable_end).then_some(upto)
    }

    /// Finds where to read `offset` from, serving nothing at or past `upto` (the partition's high
    /// watermark for consumers; at most the durable end, a batch boundary). `Ok(None)`: nothing
    /// readable there yet. OFFSET_OUT_OF_RANGE outside log start..=log end.
    pub fn cursor_at(
        &self,
        offset: Offset,
        upto: Offset,
    ) -> Result<Option<ReadCursor<S>>, ErrorCode> {
        if offset < self.log_start || offset > self.end {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let cut = self.cut_at(upto);
        if offset >= upto {
            return Ok(None);
        }
        let holding = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let i = self.first_reaching(holding, offset);
        let seg = &self.segments[i];
        // Its last batch may end before `offset`: then the read goes on in the next segment
        // with records (whose first batch is the answer).
        let then = if seg.next_offset_is_bound && i + 1 < self.segments.len() {
            self.cursor_in(self.first_reaching(i + 1, offset), offset, cut, None)
                .map(Box::new)
        } else {
            None
        };
        Ok(self.cursor_in(i, offset, cut, then))
    }

    /// The first segment from `i` on whose records may reach `offset`: compaction may have
    /// emptied a segment, or its end.
    fn first_reaching(&self, mut i: usize, offset: Offset) -> usize {
        while i + 1 < self.segments.len()
            && self.segments[i].next_offset <= offset.max(self.segments[i].base_offset)
        {
            i += 1;
        }
        i
    }

    fn cursor_in(
        &self,
        i: usize,
        offset: Offset,
        cut: Option<Offset>,
        then: Option<Box<ReadCursor<S>>>,
    ) -> Option<ReadCursor<S>> {
        let seg = &self.segments[i];
        let key = IndexKey::Offset(seg.relative_to_base(offset));
        let start = ScanStart::new(seg.lookup(offset), &self.storage, key);
        Some(ReadCursor {
            file: seg.file_ref(&self.storage, &self.dir)?,
            start,
            readable: seg.readable,
            cut: cut.filter(|c| *c < seg.next_offset),
            check: seg.check.clone(),
            then,
        })
    }

    /// The checks no read has run yet (see `segment_check`), for the scrub.
    pub fn unchecked_segments(&self) -> Vec<SegmentScrub<S>> {
        self.segments
            .iter()
            .filter_map(|seg| {
                let check = seg.check.as_ref().filter(|c| c.found().is_none())?;
                Some(SegmentScrub {
                    file: seg.file_ref(&self.storage, &self.dir)?,
                    check: check.clone(),
                })
            })
            .collect()
    }

    /// Damaged ranges the checks that ran found (a file trimmed counts as one).
    pub fn damaged_ranges(&self) -> usize {
        let checked: usize = self
            .segments
            .iter()
            .filter_map(|seg| seg.check.as_ref()?.found())
            .map(|h| h.damaged.len() + usize::from(h.trimmed.is_some()))
            .sum();
        checked + self.damaged_at_open.len()
    }

    /// The damaged ranges `damaged_ranges` counts: those recovery cut from the active segment,
    /// then those the checks found, oldest segment first.
    pub fn damaged(&self) -> Vec<DamagedRange> {
        let checked = self
            .segments
            .iter()
            .filter_map(|seg| seg.check.as_ref())
            .flat_map(|check| check.damaged());
        self.damaged_at_open
            .iter()
            .copied()
            .chain(checked)
            .collect()
    }

    fn index_load(&self, lazy: Rc<LazyIndexes>) -> IndexLoad<S> {
        IndexLoad {
            storage: self.storage.clone(),
            lazy,
        }
    }

    /// Loads for every segment whose indexes are still in their files (the cleaner reads the
    /// largest timestamps of all it may clean).
    pub fn unloaded_indexes(&self) -> Vec<IndexLoad<S>> {
        self.segments
            .iter()
            .filter_map(|s| s.unloaded_indexes())
            .map(|lazy| self.index_load(lazy))
            .collect()
    }

    /// Where to scan for the first record with timestamp >= `target`, in the first segment whose
    /// records reach it; `Ok(None)` if no readable record does. When that segment starts below
    /// the log start, its reaching records may all lie below it: the search then goes on in the
    /// next segment that reaches the target (any later one holds a match above the log start).
    /// The search finds nothing at or past `upto` (the partition's high watermark; at most the
    /// durable end). `Err`: a segment on the way has its largest timestamp still in its index
    /// files; load them and ask again.
    pub fn cursor_for_timestamp(
        &self,
        target: i64,
        upto: Offset,
    ) -> Result<Option<ReadCursor<S>>, IndexLoad<S>> {
        let cut = self.cut_at(upto);
        let mut segments = self
            .segments
            .iter()
            .filter(|s| s.readable > 0 && s.base_offset < upto);
        let Some((first, mut cursor)) = self.first_reaching_time(&mut segments, target, cut)?
        else {
            return Ok(None);
        };
        if first < self.log_start {
            cursor.then = self
                .first_reaching_time(&mut segments, target, cut)?
                .map(|(_, next)| Box::new(next));
        }
        Ok(Some(cursor))
    }

    /// The first of `segments` whose records reach `target`: its base offset and a cursor for
    /// the search in it.
    #[allow(clippy::type_complexity)]
    fn first_reaching_time<'a>(
        &self,
        segments: &mut impl Iterator<Item = &'a Segment<S::File>>,
        target: i64,
        cut: Option<Offset>,
    ) -> Result<Option<(Offset, ReadCursor<S>)>, IndexLoad<S>>
    where
        S::File: 'a,
    {
        for seg in segments {
            let Some(max_timestamp) = seg.max_timestamp() else {
                let lazy = seg.unloaded_indexes().expect("no timestamp: not loaded");
                return Err(self.index_load(lazy));
            };
            if max_timestamp < target {
                continue;
            }
            let Some(file) = seg.file_ref(&self.storage, &self.dir) else {
                return Ok(None);
            };
            let cursor = ReadCursor {
                file,
                start: ScanStart::new(
                    seg.time_lookup(target),
                    &self.storage,
                    IndexKey::Timestamp(target),
                ),
                readable: seg.readable,
                cut: cut.filter(|c| *c < seg.next_offset),
                check: seg.check.clone(),
                then: None,
            };
            return Ok(Some((seg.base_offset, cursor)));
        }
        Ok(None)
    }

    /// What a clean shutdown must write: index files beside each written segment that has none
    /// on disk yet (the active one; sealed ones got theirs when sealed, and stay closed).
    pub fn close_plan(&self) -> ClosePlan<S> {
        let indexes = self
            .segments
            .iter()
            .filter(|s| s.file.is_written())
            .filter(|s| s.file.open_file().is_some() || !s.indexes_saved)
            .filter_map(|s| Some((s.base_offset, s.encode_indexes()?)))
            .collect();
        ClosePlan {
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            indexes,
            // The log is not written after a stop: no need to note the file as written.
            epoch_checkpoint: self.epochs_unsaved.then(|| self.epochs.encode()),
        }
    }

    /// Deletes whole segments below the log start and, under `cleanup.policy` delete, the oldest
    /// whole segments that retention no longer keeps: those whose newest record is older than
    /// `retention.ms`, and while the log is larger than `retention.bytes`. The active segment and
    /// any segment not wholly below `upto` (the partition's high watermark: consumers may not
    /// have seen what lies above it) always stay. Moves the log start offset; returns how many
    /// segments went.
    pub fn apply_retention(&mut self, now_ms: i64, upto: Offset) -> usize {
        let below_start = self.remove_segments_below_start();
        if !self.config.cleanup_delete {
            return below_start;
        }
        self.apply_time_and_size_retention(now_ms, upto) + below_start
    }

    fn apply_time_and_size_retention(&mut self, now_ms: i64, upto: Offset) -> usize {
        let (expired, _) = self.expired_segments(now_ms, upto);
        for seg in self.segments.drain(..expired) {
            remove_segment_files(&self.storage, &self.dir, seg.base_offset);
        }
        if expired > 0 {
            self.log_start = self.log_start.max(self.segments[0].base_offset);
            self.epochs_unsaved |= self.epochs.truncate_from_start(self.log_start);
            tracing::info!(
                "{}: retention deleted {expired} segments; log start is now {}",
                self.dir.display(),
                self.log_start
            );
        }
        self.assert_offsets_ordered();
        expired
    }

    /// What retention needs loaded before it can decide about the next segment: one whose
    /// largest timestamp is still in its index files. Load it and apply retention again.
    pub fn retention_index_load(&self, now_ms: i64, upto: Offset) -> Option<IndexLoad<S>> {
        if !self.config.cleanup_delete {
            return None;
        }
        let (_, undecided) = self.expired_segments(now_ms, upto);
        undecided.map(|lazy| self.index_load(lazy))
    }

    /// How many of the oldest segments retention deletes now: those whose newest record is older
    /// than `retention.ms`, and while the log is larger than `retention.bytes`; never the active
    /// one, nor one not wholly below `upto` (at most the durable end) or still being sealed.
    /// Also the indexes of the segment it stopped at, when it stopped only because that
    /// segment's largest timestamp is not loaded.
    fn expired_segments(&self, now_ms: i64, upto: Offset) -> (usize, Option<Rc<LazyIndexes>>) {
        assert!(upto <= self.durable_end, "retention past the durable end");
        let config = &self.config;
        let mut remaining: u64 = self.segments.iter().map(|s| s.size).sum();
        let sealed = &self.segments[..self.segments.len() - 1];
        for (i, seg) in sealed.iter().enumerate() {
            let settled = seg.next_offset <= upto && !self.is_being_sealed(seg.base_offset);
            if !settled {
                return (i, None);
            }
            let too_big = config.retention_bytes > 0 && remaining > config.retention_bytes as u64;
            if !too_big {
                if config.retention_ms <= 0 {
                    return (i, None);
                }
                let Some(max_timestamp) = seg.max_timestamp() else {
                    return (i, seg.unloaded_indexes());
                };
                let too_old = max_timestamp >= 0 && now_ms - max_timestamp > config.retention_ms;
                if !too_old {
                    return (i, None);
                }
            }
            remaining -= seg.size;
        }
        (sealed.len(), None)
    }

    /// Whether a flush has yet to finish writing to or sealing the segment: rolled since the last
    /// flush started, or part of the running one. Retention leaves such a segment for a later
    /// round, without waiting for a moment when no flush runs (under steady load there is none).
    fn is_being_sealed(&self, base: Offset) -> bool {
        self.sealed.contains(&base) || self.flushing.contains(&base)
    }

    /// Deletes the whole segments that lie below the log start (never the active one, nor one a
    /// flush is still sealing: those go at a later call). Returns how many went.
    pub fn remove_segments_below_start(&mut self) -> usize {
        let below = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.next_offset <= self.log_start && !self.is_being_sealed(s.base_offset))
            .count();
        for seg in self.segments.drain(..below) {
            remove_segment_files(&self.storage, &self.dir, seg.base_offset);
        }
        below
    }

    /// DeleteRecords: makes `offset` (at most the durable end; the partition holds it to its high
    /// watermark) the log start, deleting whole segments below it. Returns the new log start and
    /// the checkpoint to write durably before answering (the start may now fall inside a
    /// segment, which file names cannot say).
    pub fn advance_log_start(
        &mut self,
        offset: Offset,
    ) -> Result<(Offset, LogStartCheckpoint<S>), ErrorCode> {
        if offset > self.durable_end || offset.0 < 0 {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        self.log_start = self.log_start.max(offset);
        self.epochs_unsaved |= self.epochs.truncate_from_start(self.log_start);
        self.assert_offsets_ordered();
        self.remove_segments_below_start();
        Ok((self.log_start, self.log_start_checkpoint()))
    }

    /// Empties the log and starts it again at `offset`, above its end (or anywhere when it holds
    /// no record): what a follower does that fell below its leader's log start, or whose first
    /// batch from there begins below it (Kafka's `truncateFullyAndStartAt`). Every segment goes
    /// and the epoch cache is emptied; the returned checkpoint says where the log now starts. A
    /// crash before it is written reopens an empty log at 0, which the leader again answers
    /// OFFSET_OUT_OF_RANGE. Nothing may be pending (WouldBlock): flush first.
    pub fn restart_at(&mut self, offset: Offset, now_ms: i64) -> io::Result<LogStartCheckpoint<S>> {
        if !self.is_quiet() || self.truncating {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "restart with writes pending",
            ));
        }
        if offset <= self.end && self.log_start < self.end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a log holding records restarts only above its end",
            ));
        }
        for seg in self.segments.drain(..) {
            remove_segment_files(&self.storage, &self.dir, seg.base_offset);
        }
        self.segments
            .push(Segment::new(offset, SegmentFile::Unwritten, now_ms));
        self.log_start = offset;
        self.end = offset;
        self.durable_end = offset;
        self.messages_unsynced = 0;
        self.epochs_unsaved |= self.epochs.truncate_from_end(Offset(0));
        self.assert_offsets_ordered();
        Ok(self.log_start_checkpoint())
    }

    /// The log start as it stands, to write durably.
    fn log_start_checkpoint(&self) -> LogStartCheckpoint<S> {
        LogStartCheckpoint {
            storage: self.storage.clone(),
            path: self.dir.join(LOG_START_FILE),
            contents: self.log_start.0.to_string().into_bytes(),
        }
    }

    /// Removes every record at or after `offset`, which must start a batch (what a diverged
    /// replica does); the durable end comes down with it. Nothing may be pending: flush first.
    /// `begin_truncation`, `Truncation::run` and `finish_truncation` in one, for a caller that
    /// may hold the log across the awaits.
    pub async fn truncate_to(&mut self, offset: Offset) -> io::Result<()> {
        let Some(truncation) = self.begin_truncation(offset)? else {
            return Ok(());
        };
        let done = truncation.run().await;
        self.finish_truncation(done)
    }

    /// Whether nothing written waits for a flush and none runs: a truncation may begin.
    pub fn is_quiet(&self) -> bool {
        !self.has_unwritten_batches() && !self.flush_running
    }

    /// Starts removing every record at or after `offset` (a batch boundary): later segments go
    /// at once, the log end, durable end and epoch cache come down to `offset`, and the
    /// returned truncation cuts the segment holding it, without borrowing the log. Until
    /// `finish_truncation`, appends and flushes are refused. `None` when `offset` is at or past
    /// the end: no record goes, but epochs that start at the end (with no record yet) do. Nothing
    /// may be pending (WouldBlock): flush first.
    pub fn begin_truncation(&mut self, offset: Offset) -> io::Result<Option<Truncation<S>>> {
        // The epoch cache's file may be unsaved: it is written later, and a crash meanwhile
        // leaves entries past the new end that recovery cuts.
        if !self.is_quiet() || self.truncating {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "truncate with writes pending",
            ));
        }
        if offset >= self.end {
            // A broker that became leader recorded its epoch's start at its log end, and may
            // have lost the leadership before appending anything: as a follower, that entry
            // names an epoch the leader's log never had, and every fetch naming it would be told
            // to truncate here again (Kafka cuts the cache at the log end in this case too).
            self.epochs_unsaved |= self.epochs.truncate_from_end(self.end);
            return Ok(None);
        }
        if offset < self.log_start {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "truncate below the log start",
            ));
        }
        // Later segments go first: a crash before the cut below must not leave them to follow
        // a shortened segment at the next recovery.
        while self.segments.len() > 1
            && self
                .segments
                .last()
                .is_some_and(|s| s.base_offset >= offset)
        {
            let seg = self.segments.pop().expect("checked");
            remove_segment_files(&self.storage, &self.dir, seg.base_offset);
        }
        let seg = self.segments.last().expect("one segment remains");
        let Some(file) = seg.file_ref(&self.storage, &self.dir) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "segment file missing",
            ));
        };
        let truncation = Truncation {
            rules: ScanRules::of(&self.config),
            offset,
            base: seg.base_offset,
            created_ms: seg.created_ms,
            file,
            start: ScanStart::new(
                seg.lookup(offset),
                &self.storage,
                IndexKey::Offset(seg.relative_to_base(offset)),
            ),
            readable: seg.readable,
        };
        self.epochs_unsaved |= self.epochs.truncate_from_end(offset);
        self.end = offset;
        self.durable_end = self.durable_end.min(offset);
        self.truncating = true;
        self.assert_offsets_ordered();
        Ok(Some(truncation))
    }

    /// The scan that feeds recovery's `on_batch` every batch from `from` on (producer state
    /// rebuilt after a truncation, from a roll snapshot at `from`), run without borrowing the
    /// log.
    pub fn replay_from(&self, from: Offset) -> Replay<S> {
        let segments = self
            .segments
            .iter()
            .filter(|s| s.next_offset > from && s.readable > 0)
            .filter_map(|s| {
                Some((
                    s.base_offset,
                    s.file_ref(&self.storage, &self.dir)?,
                    s.readable,
                ))
            })
            .collect();
        Replay {
            rules: ScanRules::of(&self.config),
            from,
            segments,
        }
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Installs the segment a truncation cut. On an error the log is failed: its active
    /// segment's file may be cut or not, and only recovery can tell.
    pub fn finish_truncation(&mut self, done: io::Result<Segment<S::File>>) -> io::Result<()> {
        self.truncating = false;
        let rebuilt = match done {
            Ok(rebuilt) => rebuilt,
            Err(err) => {
                tracing::error!(
                    "log {}: truncation failed, failing the partition: {err}",
                    self.dir.display()
                );
                self.failed = true;
                return Err(err);
            }
        };
        let seg = self.segments.last_mut().expect("a log has a segment");
        assert_eq!(
            seg.base_offset, rebuilt.base_offset,
            "the truncated segment"
        );
        let end = self.end;
        let aborted = seg.aborted.iter().filter(|a| a.last_offset < end).copied();
        let aborted = aborted.collect();
        *seg = rebuilt;
        seg.aborted = aborted;
        Ok(())
    }

    /// Removes the log's directory (topic deletion).
    pub fn delete(&self) -> io::Result<()> {
        self.storage.remove_dir_all(&self.dir)
    }
}

/// A scan of the log's batches from an offset on (see `Log::replay_from`).
pub struct Replay<S: Storage> {
    rules: ScanRules,
    from: Offset,
    /// The segments to scan: base offset, file, readable bytes.
    segments: Vec<(Offset, FileRef<S>, u64)>,
}

impl<S: Storage> Replay<S> {
    /// Feeds every batch from `from` on to `on_batch`, in order, as recovery's scan does (what it
    /// returns is dropped: the log's txn index already holds those ranges).
    pub async fn run(self, on_batch: &mut OnBatch<'_>) -> io::Result<()> {
        let from = self.from;
        for (base, file, readable) in self.segments {
            let file = file.get().await?;
            let mut scratch = Segment::<S::File>::new(base, SegmentFile::Unwritten, 0);
            let mut report = RecoveryReport::default();
            let mut feed = |h: &BatchHeader, control: Option<ControlRecord>| {
                if h.base_offset >= from {
                    on_batch(h, control);
                }
                None
            };
            scan_batches(
                &*file,
                &mut scratch,
                self.rules,
                readable,
                false,
                &mut report,
                &mut feed,
            )
            .await?;
        }
        Ok(())
    }
}

/// The cut of the segment that holds a truncation's offset (see `Log::begin_truncation`),
/// run without borrowing the log.
pub struct Truncation<S: Storage> {
    rules: ScanRules,
    offset: Offset,
    base: Offset,
    created_ms: i64,
    file: FileRef<S>,
    /// Where to scan for the batch at `offset` from.
    start: ScanStart<S>,
    readable: u64,
}

impl<S: Storage> Truncation<S> {
    /// Finds the batch at the offset, cuts the file there and syncs it, and rebuilds the
    /// segment's indexes from what is left.
    pub async fn run(self) -> io::Result<Segment<S::File>> {
        // The segment becomes the active one again: it keeps its file open from here on.
        let file = self.file.get().await?;
        let scan_from = self.start.position(&file).await?;
        let offset = self.offset;
        let found = find_batch(&*file, scan_from, self.readable, |h| {
            h.next_offset() > offset
        })
        .await?;
        let position = match found {
            Some((position, header)) if header.base_offset == offset => position,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{offset} is not a batch boundary"),
                ))
            }
            None => self.readable,
        };
        file.truncate(position).await?;
        file.sync_data().await?;
        let mut rebuilt = Segment::new(self.base, SegmentFile::Open(file.clone()), self.created_ms);
        let mut report = RecoveryReport::default();
        scan_batches(
            &*file,
            &mut rebuilt,
            self.rules,
            position,
            false,
            &mut report,
            &mut |_, _| None,
        )
        .await?;
        rebuilt.readable = position;
        Ok(rebuilt)
    }
}

impl<S: Storage> ReadCursor<S> {
    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes` (at least
    /// that first batch). A sealed segment's file is opened here, and held only while the read
    /// runs.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> io::Result<Bytes> {
        let Some(found) = self.locate(offset).await? else {
            return Ok(Bytes::new());
        };
        let len = max_bytes
            .max(found.first_batch_bytes)
            .min(found.available_bytes);
        found.file.read_at(found.position, len).await
    }

    /// Reads from the batch holding `offset` as many bytes as `len_of(first batch size, bytes
    /// available)` says (fetch sizing, `protocol::fetch_sizing`): as a range of the segment file
    /// for the socket writer to sendfile when it is at least `zero_copy_min_bytes` long and its
    /// pages are in the page cache, else as bytes. `None` when no batch at or after `offset` is
    /// readable.
    pub async fn read_payload(
        &self,
        offset: Offset,
        len_of: impl FnOnce(usize, usize) -> usize,
        zero_copy_min_bytes: usize,
    ) -> io::Result<Option<PayloadRead>> {
        let Some(found) = self.locate(offset).await? else {
            return Ok(None);
        };
        let len = len_of(found.first_batch_bytes, found.available_bytes);
        assert!(len <= found.available_bytes, "a read past the readable end");
        let read = |records| PayloadRead {
            records,
            first_batch_bytes: found.first_batch_bytes,
            available_bytes: found.available_bytes,
        };
        if len == 0 {
            return Ok(Some(read(Payload::default())));
        }
        if len >= zero_copy_min_bytes {
            if let Some(fd) = found.file.dup_fd() {
                let range = FileRange {
                    file: Arc::new(fd),
                    offset: found.position,
                    len,
                };
                if range.is_cached() {
                    return Ok(Some(read(Payload::File(range))));
                }
            }
        }
        let bytes = found.file.read_at(found.position, len).await?;
        Ok(Some(read(Payload::Bytes(bytes))))
    }

    /// Where the batch holding `offset` starts, its size and the bytes readable from there to
    /// the end of its segment. Follows the cursor into the next segment when compaction emptied
    /// the end of this one. `None` when no batch at or after `offset` is readable.
    async fn locate(&self, offset: Offset) -> io::Result<Option<Located<S::File>>> {
        let mut cursor = self;
        loop {
            let file = cursor.file.get().await?;
            let health = cursor.health(&file).await?;
            let readable = health
                .as_ref()
                .map_or(cursor.readable, |h| h.end.min(cursor.readable));
            let wanted = |h: &BatchHeader| h.next_offset() > offset;
            let scan_from = cursor.start.position(&file).await?;
            if let Some((position, first)) = find_batch(&*file, scan_from, readable, wanted).await?
            {
                // Nothing at or past the caller's bound: the first batch there ends the read.
                let mut stop = readable;
                if let Some(cut) = cursor.cut {
                    if first.base_offset >= cut {
                        return Ok(None);
                    }
                    let beyond = |h: &BatchHeader| h.base_offset >= cut;
                    if let Some((at, _)) = find_batch(&*file, position, readable, beyond).await? {
                        stop = at;
                    }
                }
                // Never a damaged batch, nor one after it in the same answer.
                if let Some(health) = &health {
                    if let Some(damage) = health.damage_at(position) {
                        return Err(segment_check::damaged(*damage));
                    }
                    stop = health
                        .next_damage_after(position)
                        .map_or(stop, |d| d.min(stop));
                }
                let available_bytes = (stop - position) as usize;
                return Ok(Some(Located {
                    file,
                    position,
                    first_batch_bytes: first.total_bytes().min(available_bytes),
                    available_bytes,
                }));
            }
            if let Some(damage) = health.as_ref().and_then(|h| h.tail_holding(offset)) {
                return Err(segment_check::damaged(*damage));
            }
            match &cursor.then {
                Some(next) => cursor = next,
                None => return Ok(None),
            }
        }
    }

    /// What the segment's check found (running it if no read did yet); `None` for a segment
    /// without one.
    async fn health(&self, file: &S::File) -> io::Result<Option<Rc<Health>>> {
        match &self.check {
            Some(check) => Ok(Some(check.health(file).await?)),
            None => Ok(None),
        }
    }

    /// The first record at or after offset `log_start` with timestamp >= `target`: its offset
    /// and timestamp. Searches this segment, then the one `then` names if this holds none.
    pub async fn find_timestamp(
        &self,
        target: i64,
        log_start: Offset,
    ) -> io::Result<Option<(Offset, i64)>> {
        let mut cursor = Some(self);
        while let Some(here) = cursor {
            if let Some(found) = here.find_timestamp_here(target, log_start).await? {
                return Ok(Some(found));
            }
            cursor = here.then.as_deref();
        }
        Ok(None)
    }

    async fn find_timestamp_here(
        &self,
        target: i64,
        log_start: Offset,
    ) -> io::Result<Option<(Offset, i64)>> {
        let file = self.file.get().await?;
        let health = self.health(&file).await?;
        let readable = health
            .as_ref()
            .map_or(self.readable, |h| h.end.min(self.readable));
        let mut from = self.start.position(&file).await?;
        loop {
            let wanted =
                |h: &BatchHeader| h.max_timestamp >= target && h.last_offset() >= log_start;
            let Some((position, header)) = find_batch(&*file, from, readable, wanted).await? else {
                return Ok(None);
            };
            if self.cut.is_some_and(|cut| header.base_offset >= cut) {
                return Ok(None);
            }
            if health
                .as_ref()
                .is_some_and(|h| h.damage_at(position).is_some())
            {
                // Its timestamps cannot be trusted: the answer is a later batch's.
                from = position + header.total_bytes() as u64;
                continue;
            }
            let bytes = file.read_at(position, header.total_bytes()).await?;
            if let Some(found) = batch::first_record_at_or_after(&bytes, target, log_start) {
                return Ok(Some(found));
            }
            from = position + header.total_bytes() as u64;
        }
    }
}

/// Scans batch headers from `from` to the first batch matching `wanted`, below `readable`.
async fn find_batch<F: StorageFile>(
    file: &F,
    from: u64,
    readable: u64,
    wanted: impl Fn(&BatchHeader) -> bool,
) -> io::Result<Option<(u64, BatchHeader)>> {
    let mut position = from;
    while position + HEADER_BYTES as u64 <= readable {
        let bytes = file.read_at(position, HEADER_BYTES).await?;
        let header = BatchHeader::parse(&bytes).ok_or_else(|| corrupt("short header read"))?;
        let size = header.total_bytes() as u64;
        if size == 0 || position + size > readable {
            return Err(corrupt("batch length runs past the readable end"));
        }
        if wanted(&header) {
            return Ok(Some((position, header)));
        }
        position += size;
    }
    Ok(None)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The leader-epoch cache as its file last saved it; `None` when there is no file, or it does
/// not decode. Either way recovery then rebuilds the cache from the batches it scans (as Kafka
/// does for a log without the file): a missing file is a log written before the cache existed,
/// or a new one; a damaged one is logged. What the rebuilt cache lacks are the epochs of trusted
/// sealed segments, which recovery does not read: a follower asking about them is told they end
/// where the first known epoch starts.
async fn load_epoch_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
) -> io::Result<Option<LeaderEpochCache>> {
    let path = dir.join(EPOCH_CHECKPOINT_FILE);
    let bytes =
        match super::read_whole(storage, &path, limits::LEADER_EPOCH_CHECKPOINT_MAX_BYTES).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!("{err}; rebuilding the leader-epoch cache from recovery's scan");
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
    match LeaderEpochCache::decode(&bytes) {
        Ok(cache) => Ok(Some(cache)),
        Err(err) => {
            tracing::warn!(
                "{}: {err}; rebuilding the leader-epoch cache from recovery's scan",
                path.display()
            );
            Ok(None)
        }
    }
}

/// Keeps only the newest roll snapshot: older ones describe states recovery no longer needs.
fn remove_older_snapshots<S: Storage>(storage: &S, dir: &Path, newest: Offset) {
    let Ok(names) = storage.list_dir(dir) else {
        return;
    };
    for base in names
        .iter()
        .filter_map(|n| segment::parse_snapshot_name(n))
        .filter(|b| *b < newest)
    {
        if let Err(err) = storage.remove_file(&segment::snapshot_path(dir, base)) {
            tracing::warn!(
                "could not remove an old producer snapshot in {}: {err}",
                dir.display()
            );
        }
    }
}

/// Removes index files a crash left half written back (see `IndexLoad::write_back`).
fn remove_half_rebuilt_indexes<S: Storage>(storage: &S, dir: &Path, names: &HashSet<String>) {
    for name in names
        .iter()
        .filter(|n| n.ends_with(segment::REBUILT_SUFFIX))
    {
        if let Err(err) = storage.remove_file(&dir.join(name)) {
            tracing::warn!("could not remove {name} in {}: {err}", dir.display());
        }
    }
}

fn remove_segment_files<S: Storage>(storage: &S, dir: &Path, base: Offset) {
    for path in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
        segment::txn_index_path(dir, base),
    ] {
        if storage.exists(&path) {
            if let Err(err) = storage.remove_file(&path) {
                tracing::warn!("could not remove {}: {err}", path.display());
            }
        }
    }
}

/// Loads one segment's state by scanning it whole, each batch CRC-checked: its indexes are
/// built, batches of untrusted segments are fed to `on_batch`, and a torn or corrupt tail is
/// truncated. A trusted segment scanned here is the active one (trusted sealed ones load without
/// a scan, see `SealedLoad`): a clean stop says its bytes were synced, not that the disk kept
/// them. Returns false if the segment had to be truncated (later segments are then dropped).
#[allow(clippy::too_many_arguments)]
async fn load_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    seg: &mut Segment<S::File>,
    config: &LogConfig,
    trusted_below: Offset,
    active: bool,
    report: &mut RecoveryReport,
    on_batch: &mut OnBatch<'_>,
) -> io::Result<bool> {
    let trusted = seg.base_offset < trusted_below;
    assert!(active || !trusted, "trusted sealed segments load unscanned");
    let file = Rc::new(
        storage
            .open(&segment::log_path(dir, seg.base_offset))
            .await?,
    );
    seg.file = SegmentFile::Open(file.clone());
    let size = file.size().await?;
    if trusted {
        seg.aborted = load_txn_index(storage, dir, seg.base_offset).await?;
    } else {
        report.rebuilt_indexes += 1;
    }
    let mut feed = |h: &BatchHeader, control: Option<ControlRecord>| {
        if trusted {
            // Its producer state came from a snapshot and its aborted list from its file.
            None
        } else {
            on_batch(h, control)
        }
    };
    let valid_end = scan_batches(
        &*file,
        seg,
        ScanRules::of(config),
        size,
        true,
        report,
        &mut feed,
    )
    .await?;
    seg.readable = valid_end;
    if valid_end < size {
        tracing::warn!(
            "segment {} in {}: {} bytes after position {valid_end} are torn or corrupt; truncating \
             (offsets from {} on are lost)",
            seg.base_offset,
            dir.display(),
            size - valid_end,
            seg.next_offset
        );
        let end = seg.next_offset;
        seg.aborted.retain(|a| a.last_offset < end);
        report.truncated_bytes += size - valid_end;
        if trusted {
            // Synced before the stop: what fails now was damaged on disk, not torn by a crash.
            report.damaged.push(DamagedRange {
                kind: DamageKind::Truncated,
                segment: seg.base_offset,
                position: valid_end,
                bytes: size - valid_end,
                first: seg.next_offset,
                next: None,
            });
            crate::metrics::with(|m| m.log_damage_found(1));
        }
        file.truncate(valid_end).await?;
        file.sync_data().await?;
        return Ok(false);
    }
    Ok(true)
}

/// What recovery knows when it loads a trusted sealed segment.
struct SealedLoad<'a, F: StorageFile> {
    dir: &'a Rc<Path>,
    /// The names in the log's directory.
    names: &'a HashSet<String>,
    next_base: Offset,
    files: &'a Rc<SegmentFiles<F>>,
    index_cache: &'a Rc<IndexCache>,
    rules: ScanRules,
}

impl<F: StorageFile> SealedLoad<'_, F> {
    /// Loads a trusted sealed segment without opening its log or reading its offset and time
    /// indexes (they load on first need; see `sealed_indexes::LazyIndexes`): its size from the
    /// directory, its end from the next segment's base (an upper bound: see
    /// `Segment::next_offset_is_bound`), its aborted transactions from its txn index if it has
    /// one. Index files damaged or missing are rebuilt from the log when first needed, and its
    /// batches are checked by its first read or the scrub (see `segment_check`), so damage in
    /// one sealed segment costs no other segment anything.
    async fn load<S: Storage<File = F>>(
        &self,
        storage: &S,
        seg: &mut Segment<F>,
    ) -> io::Result<()> {
        let base = seg.base_offset;
        let has = |path: PathBuf| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| self.names.contains(n))
        };
        let size = storage.file_size(&segment::log_path(self.dir, base))?;
        let (dir, cache) = (self.dir.clone(), self.index_cache.clone());
        seg.set_lazy_indexes(LazyIndexes::new(base, dir, size, self.rules, cache));
        if has(segment::txn_index_path(self.dir, base)) {
            seg.aborted = load_txn_index(storage, self.dir, base).await?;
        }
        seg.size = size;
        seg.readable = size;
        seg.next_offset = if size == 0 { base } else { self.next_base };
        seg.next_offset_is_bound = size > 0;
        seg.indexes_saved = true;
        let batch_max_bytes = self.rules.batch_max_bytes;
        seg.check = Some(Rc::new(SegmentCheck::new(
            base,
            self.dir.clone(),
            self.next_base,
            batch_max_bytes,
        )));
        seg.file = SegmentFile::Sealed(self.files.seal(None));
        Ok(())
    }
}

/// A trusted segment's aborted transactions (none when it has no txn index file).
async fn load_txn_index<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
) -> io::Result<Vec<AbortedTxn>> {
    let path = segment::txn_index_path(dir, base);
    let Some(bytes) = super::read_whole(storage, &path, limits::TXN_INDEX_MAX_BYTES).await? else {
        return Ok(Vec::new());
    };
    txn_index::decode(&bytes).ok_or_else(|| corrupt("torn transaction index"))
}

async fn load_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    base: Offset,
    log_size: u64,
) -> io::Result<Option<(OffsetIndex, TimeIndex)>> {
    let cap = (log_size as usize / 2).max(64 * 1024);
    let index = read_index_file(storage, &segment::index_path(dir, base), cap).await?;
    let time_index = read_index_file(storage, &segment::time_index_path(dir, base), cap).await?;
    Ok(match (index, time_index) {
        (Some(i), Some(t)) => OffsetIndex::decode(&i, log_size).zip(TimeIndex::decode(&t)),
        _ => None,
    })
}

/// An index file's bytes; `None` when it is missing, or larger than any index of its segment
/// could be (damage, like a file that does not decode: the caller rebuilds the indexes from the
/// log instead of failing every read of the segment).
async fn read_index_file<S: Storage>(
    storage: &S,
    path: &Path,
    cap: usize,
) -> io::Result<Option<Bytes>> {
    if storage.file_size(path).is_ok_and(|size| size > cap as u64) {
        return Ok(None);
    }
    super::read_whole(storage, path, cap).await
}

/// Scans batches from the start to `size`, feeding each to the segment's indexes, and returns the
/// end of the last valid batch. A batch is valid when it is complete, continues the offsets,
/// and (with `verify`) passes the CRC check.
#[allow(clippy::too_many_arguments)]
async fn scan_batches<F: StorageFile, G: StorageFile>(
    file: &F,
    seg: &mut Segment<G>,
    rules: ScanRules,
    size: u64,
    verify: bool,
    report: &mut RecoveryReport,
    on_batch: &mut OnBatch<'_>,
) -> io::Result<u64> {
    let mut position = 0;
    let mut chunk = Bytes::new();
    let mut chunk_start = position;
    while position + HEADER_BYTES as u64 <= size {
        let header_bytes = slice_of(
            file,
            &mut chunk,
            &mut chunk_start,
            position,
            HEADER_BYTES as u64,
        )
        .await?;
        let Some(header) = BatchHeader::parse(&header_bytes) else {
            break;
        };
        let total = header.total_bytes() as u64;
        // Offsets only go up; compaction may leave gaps between batches.
        let continues = header.base_offset >= seg.next_offset && seg.reaches(&header);
        if total == 0
            || total > rules.batch_max_bytes
            || position + total > size
            || header.magic != 2
            || !continues
        {
            break;
        }
        if verify {
            let whole = slice_of(file, &mut chunk, &mut chunk_start, position, total).await?;
            if batch::check_stored_batch(&whole).is_err() {
                break;
            }
        }
        seg.note_batch(&header, position, rules.index_interval_bytes);
        let control = if header.is_control() {
            let whole = slice_of(file, &mut chunk, &mut chunk_start, position, total).await?;
            batch::control_record(&whole)
        } else {
            None
        };
        if let Some(aborted) = on_batch(&header, control) {
            seg.aborted.push(aborted);
        }
        report.batches_scanned += 1;
        position += total;
    }
    Ok(position)
}

/// Returns `len` bytes at `position`, reading the file in large chunks.
async fn slice_of<F: StorageFile>(
    file: &F,
    chunk: &mut Bytes,
    chunk_start: &mut u64,
    position: u64,
    len: u64,
) -> io::Result<Bytes> {
    let chunk_end = *chunk_start + chunk.len() as u64;
    if position < *chunk_start || position + len > chunk_end {
        let want = (len as usize).max(limits::RECOVERY_READ_CHUNK_BYTES);
        *chunk = file.read_at(position, want).await?;
        *chunk_start = position;
        if (chunk.len() as u64) < len {
            return Err(corrupt("segment shorter than its size"));
        }
    }
    let at = (position - *chunk_start) as usize;
    Ok(chunk.slice(at..at + len as usize))
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
