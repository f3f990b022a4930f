//! Log compaction ("cleaning") for topics whose `cleanup.policy` includes `compact`: keeps the
//! latest record of every key, drops tombstones once `delete.retention.ms` has passed since a
//! cleaning first saw them, and drops the records of aborted transactions. Runs on the shard
//! that owns the partition, in the background, in three steps that never hold the log across an
//! await, so appends and fetches carry on meanwhile:
//!
//! 1. `Log::plan_cleaning` (synchronous) picks the cleanable segments: sealed, durable, below
//!    the last stable offset (which the partition keeps at or below its high watermark), older
//!    than `min.compaction.lag.ms`, and only when the dirty share of their bytes reaches
//!    `min.cleanable.dirty.ratio` (or `max.compaction.lag.ms` forces it).
//! 2. `CleaningPlan::run` (async, on the segment files only) builds a key → latest offset map of
//!    the dirty part (bounded by `log.cleaner.dedupe.buffer.size`), then rewrites groups of
//!    adjacent segments (each group at most `segment.bytes`) into `<base>.cleaned` files, synced.
//! 3. `Log::install_cleaned` (synchronous) swaps each group in, if its segments are still the
//!    ones it read: `.cleaned` → `<base>-<end>.swap` (the commit point), the old files removed,
//!    `.swap` → `<base>.log`. Recovery finishes a swap found on disk and drops a `.cleaned` one.
//!    `CleaningFinish::write` then writes the new index files and the cleaner checkpoint.
//!
//! Batches keep their base offset and last offset delta (as Kafka's cleaner does), so offsets,
//! producer sequences and the transaction index keep their meaning; gaps between batches are
//! normal in a compacted log. Compressed batches are kept whole (the broker carries no codecs):
//! they are never dropped, and while one lies below a tombstone the tombstone stays too, so an
//! older value hidden inside it can never resurface.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::{remove_segment_files, slice_of, Log};
use crate::limits;
use crate::storage::batch::{self, BatchHeader, HEADER_BYTES};
use crate::storage::records::{self, RecordRef};
use crate::storage::segment::{self, Segment};
use crate::storage::segment_files::{FileRef, SegmentFile};
use crate::storage::txn_index::AbortedTxn;
use crate::storage::{read_whole, write_atomically, Storage, StorageFile};
use crate::types::{Offset, ProducerId};

/// Where a partition's cleaner progress lives, beside its segments.
pub const CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// What the cleaner remembers of a partition between cleanings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerCheckpoint {
    /// Everything below was cleaned at least once: cleanings look for duplicates above it.
    pub cleaned_to: Offset,
    /// `(offset, time)`, ascending: the tombstones below `offset` were first cleaned by `time`,
    /// so they may go once `time + delete.retention.ms` has passed.
    pub horizons: Vec<(Offset, i64)>,
}

impl CleanerCheckpoint {
    /// The text file: `cleaned_to`, then one `offset time` line per horizon.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{}\n", self.cleaned_to.0);
        for (offset, time) in &self.horizons {
            text.push_str(&format!("{} {time}\n", offset.0));
        }
        text.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<CleanerCheckpoint> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        let cleaned_to = Offset(lines.next()?.trim().parse().ok()?);
        let horizons = lines
            .map(|line| {
                let (offset, time) = line.trim().split_once(' ')?;
                Some((Offset(offset.parse().ok()?), time.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(CleanerCheckpoint {
            cleaned_to,
            horizons,
        })
    }

    /// Tombstones below the returned offset have outlived `delete.retention.ms` since their
    /// first cleaning.
    pub fn tombstone_horizon(&self, now_ms: i64, delete_retention_ms: i64) -> Offset {
        self.horizons
            .iter()
            .take_while(|(_, time)| time.saturating_add(delete_retention_ms) <= now_ms)
            .last()
            .map_or(Offset(0), |(offset, _)| *offset)
    }

    /// The checkpoint after a cleaning that cleaned everything below `dirty_end` at `now_ms`.
    /// Expired horizons collapse into the newest of them; beyond the bound, the two oldest merge
    /// into the later one (its tombstones then wait longer, never less).
    pub fn after_cleaning(
        &self,
        dirty_end: Offset,
        now_ms: i64,
        delete_retention_ms: i64,
    ) -> CleanerCheckpoint {
        let expired = self
            .horizons
            .iter()
            .take_while(|(_, time)| time.saturating_add(delete_retention_ms) <= now_ms)
            .count();
        let mut horizons: Vec<(Offset, i64)> = self.horizons[expired.saturating_sub(1)..].to_vec();
        if horizons
            .last()
            .is_none_or(|(offset, _)| *offset < dirty_end)
        {
            horizons.push((dirty_end, now_ms));
        }
        while horizons.len() > limits::CLEANER_HORIZONS_MAX {
            horizons.remove(0);
        }
        CleanerCheckpoint {
            cleaned_to: self.cleaned_to.max(dirty_end),
            horizons,
        }
    }
}

/// Reads a partition's checkpoint; a missing or unreadable one means "never cleaned" (which
/// only costs a full cleaning and keeps tombstones longer).
pub async fn load_checkpoint<S: Storage>(storage: &S, dir: &Path) -> CleanerCheckpoint {
    let path = dir.join(CHECKPOINT_FILE);
    match read_whole(storage, &path, limits::CLEANER_CHECKPOINT_MAX_BYTES).await {
        Ok(Some(bytes)) => CleanerCheckpoint::decode(&bytes).unwrap_or_else(|| {
            tracing::warn!("{}: unreadable; cleaning from the start", path.display());
            CleanerCheckpoint::default()
        }),
        Ok(None) => CleanerCheckpoint::default(),
        Err(err) => {
            tracing::warn!("{}: {err}; cleaning from the start", path.display());
            CleanerCheckpoint::default()
        }
    }
}

/// A sealed segment the cleaner reads.
struct SourceSegment<S: Storage> {
    base: Offset,
    file: FileRef<S>,
    readable: u64,
    /// The next segment's base: where this one's offsets end.
    end: Offset,
    created_ms: i64,
    aborted: Vec<AbortedTxn>,
}

/// One cleaning of one partition, planned while the log was borrowed; runs without it.
pub struct CleaningPlan<S: Storage> {
    storage: S,
    dir: PathBuf,
    sources: Vec<SourceSegment<S>>,
    /// Runs of adjacent sources rewritten into one segment each.
    groups: Vec<Range<usize>>,
    checkpoint: CleanerCheckpoint,
    /// The end of the cleanable part: the first uncleanable segment's base.
    cleanable_end: Offset,
    tombstone_horizon: Offset,
    aborted: Vec<AbortedTxn>,
    index_interval_bytes: u32,
    key_map_budget_bytes: usize,
    delete_retention_ms: i64,
    now_ms: i64,
}

/// One rewritten group, ready to swap in.
pub struct CleanedGroup<S: Storage> {
    /// The segments it replaces: base offsets and the files that were read.
    replaces: Vec<(Offset, FileRef<S>)>,
    end: Offset,
    segment: Segment<S::File>,
}

/// What a run produced: the groups to swap in and the checkpoint to write after them.
pub struct CleanedLog<S: Storage> {
    groups: Vec<CleanedGroup<S>>,
    checkpoint: CleanerCheckpoint,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The writes left after the swap: index files of the new segments, then the checkpoint.
pub struct CleaningFinish<S: Storage> {
    storage: S,
    dir: PathBuf,
    indexes: Vec<(Offset, segment::EncodedIndexes)>,
    checkpoint: Option<CleanerCheckpoint>,
}

/// The latest offset of each key in the dirty part, with the memory it holds.
struct KeyMap {
    latest: HashMap<Bytes, Offset>,
    bytes: usize,
    budget: usize,
}

impl KeyMap {
    /// Adds a batch's keyed records, all or none: false (and nothing added) when the new keys
    /// would pass the budget.
    fn add_batch(&mut self, batch: &Bytes, base: Offset, records: &[RecordRef]) -> bool {
        let new_bytes: usize = records
            .iter()
            .filter_map(|r| r.key.clone())
            .filter(|k| !self.latest.contains_key(&batch[k.clone()]))
            .map(|k| k.len() + limits::CLEANER_KEY_OVERHEAD_BYTES)
            .sum();
        if self.bytes + new_bytes > self.budget {
            return false;
        }
        self.bytes += new_bytes;
        for record in records {
            if let Some(key) = &record.key {
                let offset = records::record_offset(base, record);
                self.latest.insert(batch.slice(key.clone()), offset);
            }
        }
        true
    }

    /// Whether a newer record of `key` exists in the dirty part.
    fn superseded(&self, key: &[u8], offset: Offset) -> bool {
        self.latest.get(key).is_some_and(|latest| *latest > offset)
    }
}

/// Reads a segment's batches in order, in large chunks.
struct BatchReader<'a, F> {
    file: &'a F,
    position: u64,
    readable: u64,
    chunk: Bytes,
    chunk_start: u64,
}

impl<'a, F: StorageFile> BatchReader<'a, F> {
    fn new(file: &'a F, readable: u64) -> Self {
        BatchReader {
            file,
            position: 0,
            readable,
            chunk: Bytes::new(),
            chunk_start: 0,
        }
    }

    async fn next(&mut self) -> io::Result<Option<(BatchHeader, Bytes)>> {
        if self.position + HEADER_BYTES as u64 > self.readable {
            return Ok(None);
        }
        let header_bytes = slice_of(
            self.file,
            &mut self.chunk,
            &mut self.chunk_start,
            self.position,
            HEADER_BYTES as u64,
        )
        .await?;
        let header = BatchHeader::parse(&header_bytes).expect("61 bytes read");
        let size = header.total_bytes() as u64;
        if size == 0 || self.position + size > self.readable {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "batch runs past the segment's readable end",
            ));
        }
        let batch = slice_of(
            self.file,
            &mut self.chunk,
            &mut self.chunk_start,
            self.position,
            size,
        )
        .await?;
        // A damaged batch must not come out of a cleaning with a fresh CRC, as if healthy.
        if batch::check_stored_batch(&batch).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the batch at position {} fails its CRC check; not compacting through it",
                    self.position
                ),
            ));
        }
        self.position += size;
        Ok(Some((header, batch)))
    }
}

/// Whether `header` is a data batch of a transaction that was aborted.
fn is_aborted(header: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == ProducerId(header.producer_id)
                && a.first_offset <= header.base_offset
                && header.base_offset <= a.last_offset
        })
}

fn cleaned_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.cleaned", segment::file_stem(base)))
}

/// The commit point of a swap names the offsets it replaces: `<base>-<end>.swap`.
fn swap_path(dir: &Path, base: Offset, end: Offset) -> PathBuf {
    dir.join(format!(
        "{}-{}.swap",
        segment::file_stem(base),
        segment::file_stem(end)
    ))
}

fn parse_swap_name(name: &str) -> Option<(Offset, Offset)> {
    let (base, end) = name.strip_suffix(".swap")?.split_once('-')?;
    let parse = |stem: &str| segment::parse_log_name(&format!("{stem}.log"));
    Some((parse(base)?, parse(end)?))
}

/// Before a log opens: drops unfinished cleanings (`.cleaned`) and finishes committed swaps
/// (`.swap`): the segments it replaces go, then it becomes `<base>.log`.
pub fn recover_swaps<S: Storage>(storage: &S, dir: &Path) -> io::Result<()> {
    let names = storage.list_dir(dir)?;
    let mut changed = false;
    for name in &names {
        if name.ends_with(".cleaned") {
            storage.remove_file(&dir.join(name))?;
            changed = true;
        }
    }
    for name in &names {
        let Some((base, end)) = parse_swap_name(name) else {
            continue;
        };
        tracing::info!(
            "{}: finishing an interrupted cleaning of {base}..{end}",
            dir.display()
        );
        for replaced in names
            .iter()
            .filter_map(|n| segment::parse_log_name(n))
            .filter(|b| (base..end).contains(b))
        {
            remove_segment_files(storage, dir, replaced);
        }
        storage.rename(&dir.join(name), &segment::log_path(dir, base))?;
        changed = true;
    }
    if changed {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

impl<S: Storage> Log<S> {
    /// Plans a cleaning if one is due: see the module comment. `stable` is the partition's last
    /// stable offset, itself at most its high watermark: nothing of an open transaction, nor
    /// anything not yet committed, is touched.
    pub fn plan_cleaning(
        &self,
        stable: Offset,
        now_ms: i64,
        key_map_budget_bytes: usize,
    ) -> Option<CleaningPlan<S>> {
        let config = &self.config;
        assert!(stable <= self.durable_end, "cleaning past the durable end");
        if !config.cleanup_compact || self.flush_running || self.failed {
            return None;
        }
        let cleanable = self
            .segments
            .windows(2)
            .take_while(|pair| {
                let (seg, next) = (&pair[0], &pair[1]);
                seg.file.is_written()
                    && !self.sealed.contains(&seg.base_offset)
                    && next.base_offset <= stable
                    && seg.max_timestamp().is_some_and(|newest| {
                        now_ms.saturating_sub(newest) >= config.min_compaction_lag_ms
                    })
            })
            .count();
        if cleanable == 0 {
            return None;
        }
        let cleanable_end = self.segments[cleanable].base_offset;
        let checkpoint = self.cleaner_checkpoint.clone();
        let segments = &self.segments[..cleanable];
        let is_dirty = |i: usize| {
            let end = self.segments[i + 1].base_offset;
            end > checkpoint.cleaned_to
        };
        let dirty_bytes: u64 = (0..cleanable)
            .filter(|&i| is_dirty(i))
            .map(|i| segments[i].size)
            .sum();
        let total_bytes: u64 = segments.iter().map(|s| s.size).sum();
        let first_dirty = (0..cleanable).find(|&i| is_dirty(i))?;
        let ratio = dirty_bytes as f64 / total_bytes.max(1) as f64;
        let overdue = segments[first_dirty].max_timestamp().is_some_and(|newest| {
            newest >= 0 && now_ms.saturating_sub(newest) >= config.max_compaction_lag_ms
        });
        if ratio < config.min_cleanable_dirty_ratio && !overdue {
            return None;
        }
        let sources: Vec<SourceSegment<S>> = (0..cleanable)
            .map(|i| {
                let seg = &self.segments[i];
                SourceSegment {
                    base: seg.base_offset,
                    file: seg
                        .file_ref(&self.storage, &self.dir)
                        .expect("checked above"),
                    readable: seg.readable,
                    end: self.segments[i + 1].base_offset,
                    created_ms: seg.created_ms,
                    aborted: seg.aborted.clone(),
                }
            })
            .collect();
        let groups = group_sources(&sources, segments, config.segment_bytes);
        Some(CleaningPlan {
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            groups,
            tombstone_horizon: checkpoint.tombstone_horizon(now_ms, config.delete_retention_ms),
            aborted: self.aborted_between(sources[0].base, cleanable_end),
            sources,
            checkpoint,
            cleanable_end,
            index_interval_bytes: config.index_interval_bytes,
            key_map_budget_bytes,
            delete_retention_ms: config.delete_retention_ms,
            now_ms,
        })
    }

    /// Swaps in the cleaned groups whose segments are still the ones that were read (retention
    /// or DeleteRecords may have removed some meanwhile: those groups are dropped). A failed
    /// rename fails the partition: recovery finishes or drops the swap at the next start.
    pub fn install_cleaned(&mut self, cleaned: CleanedLog<S>) -> CleaningFinish<S> {
        let mut finish = CleaningFinish {
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            indexes: Vec::new(),
            checkpoint: Some(cleaned.checkpoint),
        };
        for group in cleaned.groups {
            let base = group.segment.base_offset;
            let Some(at) = self.still_current(&group) else {
                tracing::info!(
                    "{}: segments changed during cleaning; dropping the cleaned copy of {base}",
                    self.dir.display()
                );
                let _ = self.storage.remove_file(&cleaned_path(&self.dir, base));
                finish.checkpoint = None;
                continue;
            };
            if let Err(err) = self.swap_files(&group) {
                tracing::error!(
                    "{}: swapping in the cleaned segment {base} failed, failing the partition: {err}",
                    self.dir.display()
                );
                self.failed = true;
                finish.checkpoint = None;
                break;
            }
            let indexes = group.segment.encode_indexes();
            finish.indexes.push((
                base,
                indexes.expect("a cleaned segment's indexes are built"),
            ));
            let replaced = group.replaces.len();
            let mut segment = group.segment;
            // Sealed from birth: its file joins the shard's cache like any sealed segment's.
            segment.seal_file(&self.files, true);
            self.segments.splice(at..at + replaced, [segment]);
        }
        if let Some(checkpoint) = &finish.checkpoint {
            self.cleaner_checkpoint = checkpoint.clone();
        }
        finish
    }

    /// Where the group's segments still sit, unchanged, in the log.
    fn still_current(&self, group: &CleanedGroup<S>) -> Option<usize> {
        let (first, _) = group.replaces.first()?;
        let at = self.segments.iter().position(|s| s.base_offset == *first)?;
        let current = self.segments.get(at..at + group.replaces.len())?;
        let same = current
            .iter()
            .zip(&group.replaces)
            .all(|(seg, (base, file))| {
                seg.base_offset == *base && seg.file.is(file) && !self.sealed.contains(base)
            });
        let below_active = at + group.replaces.len() < self.segments.len();
        (same && below_active && !self.flush_running && self.storage.exists(&self.dir))
            .then_some(at)
    }

    fn swap_files(&self, group: &CleanedGroup<S>) -> io::Result<()> {
        let base = group.segment.base_offset;
        let swap = swap_path(&self.dir, base, group.end);
        self.storage.rename(&cleaned_path(&self.dir, base), &swap)?;
        self.storage.sync_dir(&self.dir)?;
        for (replaced, _) in &group.replaces {
            remove_segment_files(&self.storage, &self.dir, *replaced);
        }
        self.storage
            .rename(&swap, &segment::log_path(&self.dir, base))?;
        self.storage.sync_dir(&self.dir)
    }
}

/// Adjacent sources grouped so each group fits one segment (`segment.bytes`, and offsets within
/// the index's 32-bit relative range).
fn group_sources<S: Storage, G: StorageFile>(
    sources: &[SourceSegment<S>],
    segments: &[Segment<G>],
    segment_bytes: u64,
) -> Vec<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, source) in sources.iter().enumerate() {
        let fits = groups.last().is_some_and(|g| {
            let span = source.end.0 - sources[g.start].base.0;
            size + segments[i].size <= segment_bytes && span <= i32::MAX as i64
        });
        match groups.last_mut() {
            Some(group) if fits => {
                group.end = i + 1;
                size += segments[i].size;
            }
            _ => {
                groups.push(i..i + 1);
                size = segments[i].size;
            }
        }
    }
    groups
}

impl<S: Storage> CleaningPlan<S> {
    /// Builds the key map, then writes every group's cleaned copy. Temporary files are removed
    /// on failure.
    pub async fn run(self) -> io::Result<Option<CleanedLog<S>>> {
        let Some((keys, dirty_end)) = self.build_key_map().await? else {
            return Ok(None);
        };
        let mut cleaned = CleanedLog {
            groups: Vec::new(),
            checkpoint: self.checkpoint.after_cleaning(
                dirty_end,
                self.now_ms,
                self.delete_retention_ms,
            ),
            bytes_before: 0,
            bytes_after: 0,
        };
        let mut opaque_seen = false;
        for group in &self.groups {
            let base = self.sources[group.start].base;
            match self
                .clean_group(group.clone(), &keys, &mut opaque_seen)
                .await
            {
                Ok(Some(segment)) => {
                    cleaned.bytes_before += self.sources[group.clone()]
                        .iter()
                        .map(|s| s.readable)
                        .sum::<u64>();
                    cleaned.bytes_after += segment.size;
                    cleaned.groups.push(CleanedGroup {
                        replaces: self.sources[group.clone()]
                            .iter()
                            .map(|s| (s.base, s.file.clone()))
                            .collect(),
                        end: self.sources[group.end - 1].end,
                        segment,
                    });
                }
                Ok(None) => {}
                Err(err) => {
                    for done in cleaned.groups.iter().map(|g| g.segment.base_offset) {
                        let _ = self.storage.remove_file(&cleaned_path(&self.dir, done));
                    }
                    let _ = self.storage.remove_file(&cleaned_path(&self.dir, base));
                    return Err(err);
                }
            }
        }
        Ok(Some(cleaned))
    }

    /// The latest offset of every key from the checkpoint up to where the budget allows (at
    /// most the cleanable end), and that end. `None` when not even one batch fits the budget.
    async fn build_key_map(&self) -> io::Result<Option<(KeyMap, Offset)>> {
        let mut keys = KeyMap {
            latest: HashMap::new(),
            bytes: 0,
            budget: self.key_map_budget_bytes,
        };
        let from = self.checkpoint.cleaned_to;
        for source in self.sources.iter().filter(|s| s.end > from) {
            let file = source.file.get().await?;
            let mut reader = BatchReader::new(&*file, source.readable);
            while let Some((header, batch)) = reader.next().await? {
                if header.base_offset < from || is_aborted(&header, &self.aborted) {
                    continue;
                }
                let Some(records) = records::read_records(&batch) else {
                    continue;
                };
                if !keys.add_batch(&batch, header.base_offset, &records) {
                    if header.base_offset <= from {
                        tracing::warn!(
                            "{}: one batch's keys exceed log.cleaner.dedupe.buffer.size; not cleaning",
                            self.dir.display()
                        );
                        return Ok(None);
                    }
                    return Ok(Some((keys, header.base_offset)));
                }
            }
        }
        Ok(Some((keys, self.cleanable_end)))
    }

    /// Writes one group's cleaned copy to `<base>.cleaned`, synced; `None` when nothing in it
    /// changes (a single segment with nothing to drop stays as it is).
    async fn clean_group(
        &self,
        group: Range<usize>,
        keys: &KeyMap,
        opaque_seen: &mut bool,
    ) -> io::Result<Option<Segment<S::File>>> {
        let first = &self.sources[group.start];
        let path = cleaned_path(&self.dir, first.base);
        let file = Rc::new(self.storage.open(&path).await?);
        file.truncate(0).await?;
        let mut segment = Segment::new(
            first.base,
            SegmentFile::Open(file.clone()),
            first.created_ms,
        );
        let mut buffer: Vec<u8> = Vec::new();
        let mut written = 0u64;
        let mut changed = group.len() > 1;
        for source in &self.sources[group] {
            let source_file = source.file.get().await?;
            let mut reader = BatchReader::new(&*source_file, source.readable);
            while let Some((header, batch)) = reader.next().await? {
                let kept = self.clean_batch(&header, &batch, keys, opaque_seen);
                let Some(kept) = kept else {
                    changed = true;
                    continue;
                };
                changed |= kept.len() != batch.len();
                let position = written + buffer.len() as u64;
                let kept_header = BatchHeader::parse(&kept).expect("a whole batch");
                segment.note_batch(&kept_header, position, self.index_interval_bytes);
                buffer.extend_from_slice(&kept);
                if buffer.len() >= limits::CLEANER_WRITE_CHUNK_BYTES {
                    let len = buffer.len() as u64;
                    file.write_at(std::mem::take(&mut buffer), written).await?;
                    written += len;
                }
            }
            segment.aborted.extend(source.aborted.iter().copied());
        }
        if !changed {
            drop(file);
            self.storage.remove_file(&path)?;
            return Ok(None);
        }
        if !buffer.is_empty() {
            let len = buffer.len() as u64;
            file.write_at(buffer, written).await?;
            written += len;
        }
        file.sync_data().await?;
        segment.readable = written;
        segment.finish_time_index();
        debug_assert_eq!(segment.size, written);
        Ok(Some(segment))
    }

    /// What remains of one batch: the same bytes, a rebuilt batch with fewer records, or
    /// nothing.
    fn clean_batch(
        &self,
        header: &BatchHeader,
        batch: &Bytes,
        keys: &KeyMap,
        opaque_seen: &mut bool,
    ) -> Option<Bytes> {
        if header.is_control() {
            return Some(batch.clone());
        }
        if is_aborted(header, &self.aborted) {
            return None;
        }
        let Some(records) = records::read_records(batch) else {
            *opaque_seen = true;
            return Some(batch.clone());
        };
        let kept: Vec<&RecordRef> = records
            .iter()
            .filter(|r| self.keep_record(r, batch, header.base_offset, keys, *opaque_seen))
            .collect();
        if kept.is_empty() {
            None
        } else if kept.len() == records.len() {
            Some(batch.clone())
        } else {
            Some(Bytes::from(records::rebuild_batch(batch, &kept)))
        }
    }

    fn keep_record(
        &self,
        record: &RecordRef,
        batch: &[u8],
        base: Offset,
        keys: &KeyMap,
        opaque_seen: bool,
    ) -> bool {
        let Some(key) = &record.key else {
            // Written before the topic was compacted: nothing to compare it with.
            return true;
        };
        let offset = records::record_offset(base, record);
        if keys.superseded(&batch[key.clone()], offset) {
            return false;
        }
        // A tombstone past its horizon goes, unless a compressed batch below it may still hold
        // an older value of its key.
        let tombstone_expired = record.tombstone && offset < self.tombstone_horizon;
        !tombstone_expired || opaque_seen
    }
}

impl<S: Storage> CleaningFinish<S> {
    /// Writes the new segments' index files, then the checkpoint (when every group went in).
    /// Until then a restart rebuilds the indexes by scanning and cleans again from the old
    /// checkpoint, which is safe.
    pub async fn write(self) -> io::Result<()> {
        for (base, indexes) in self.indexes {
            write_atomically(
                &self.storage,
                &segment::index_path(&self.dir, base),
                indexes.index,
            )
            .await?;
            write_atomically(
                &self.storage,
                &segment::time_index_path(&self.dir, base),
                indexes.time_index,
            )
            .await?;
            if !indexes.txn_index.is_empty() {
                write_atomically(
                    &self.storage,
                    &segment::txn_index_path(&self.dir, base),
                    indexes.txn_index,
                )
                .await?;
            }
        }
        if let Some(checkpoint) = self.checkpoint {
            write_atomically(
                &self.storage,
                &self.dir.join(CHECKPOINT_FILE),
                checkpoint.encode(),
            )
            .await?;
        }
        Ok(())
    }

    /// The checkpoint this finish writes (when every group was swapped in).
    pub fn checkpoint(&self) -> Option<&CleanerCheckpoint> {
        self.checkpoint.as_ref()
    }
}

#[cfg(test)]
#[path = "cleaner_tests.rs"]
mod tests;
