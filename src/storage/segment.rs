//! One segment of a partition log: a `.log` file of record batches named by its 20-digit base
//! offset, with its sparse offset and time indexes. Owned by the partition's shard.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::batch::BatchHeader;
use super::index::{OffsetIndex, TimeIndex};
use super::segment_files::{FileRef, SegmentFile, SegmentFiles};
use super::txn_index::{self, AbortedTxn};
use super::{Storage, StorageFile};
use crate::types::Offset;

/// Kafka's file name for a segment: the base offset as 20 digits.
pub fn file_stem(base: Offset) -> String {
    format!("{:020}", base.0)
}

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base)))
}
pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base)))
}
pub fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base)))
}

/// The segment's aborted-transaction index (written only when the segment holds ABORT markers).
pub fn txn_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.txnindex", file_stem(base)))
}

/// A producer-state snapshot taken when the segment starting at `base` was rolled to: the state
/// of every batch below `base`.
pub fn snapshot_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.snapshot", file_stem(base)))
}

/// Parses `00000000000000000042.snapshot` into offset 42.
pub fn parse_snapshot_name(name: &str) -> Option<Offset> {
    parse_log_name(&format!("{}.log", name.strip_suffix(".snapshot")?))
}

/// Parses `00000000000000000042.log` into offset 42.
pub fn parse_log_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// A segment's in-memory state.
#[derive(Debug)]
pub struct Segment<F: StorageFile> {
    pub base_offset: Offset,
    /// The `.log` file: open (active), opened on demand (sealed), or not created yet.
    pub file: SegmentFile<F>,
    /// Bytes appended, including those not yet written.
    pub size: u64,
    /// Bytes at or below the high watermark: what fetches may read.
    pub readable: u64,
    /// Offset after the last appended batch.
    pub next_offset: Offset,
    /// Whether `next_offset` is only an upper bound (the next segment's base): recovery loaded
    /// the segment from its index files without reading its last batch. Exact but for a
    /// compacted segment whose last batches were dropped.
    pub next_offset_is_bound: bool,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Whether the index files on disk hold `index`, `time_index` and `aborted` (a clean stop
    /// then need not write them again).
    pub indexes_saved: bool,
    bytes_since_index: u64,
    /// Largest batch max-timestamp in the segment (-1 when empty)...
    pub max_timestamp: i64,
    /// ...and the relative offset of the batch that reached it.
    max_timestamp_at: u32,
    /// When the segment was created, for `segment.ms` rolls.
    pub created_ms: i64,
    /// Transactions aborted by markers in this segment.
    pub aborted: Vec<AbortedTxn>,
}

/// A segment's index files, encoded, as a seal or a clean stop writes them.
pub struct EncodedIndexes {
    pub index: Vec<u8>,
    pub time_index: Vec<u8>,
    /// Empty when the segment aborted nothing (no file is written then).
    pub txn_index: Vec<u8>,
}

impl<F: StorageFile> Segment<F> {
    pub fn new(base_offset: Offset, file: SegmentFile<F>, created_ms: i64) -> Self {
        Segment {
            base_offset,
            file,
            size: 0,
            readable: 0,
            next_offset: base_offset,
            next_offset_is_bound: false,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            indexes_saved: false,
            bytes_since_index: 0,
            max_timestamp: -1,
            max_timestamp_at: 0,
            created_ms,
            aborted: Vec::new(),
        }
    }

    /// How a read reaches the file (`None` while it is not created yet).
    pub fn file_ref<S: Storage<File = F>>(&self, storage: &S, dir: &Path) -> Option<FileRef<S>> {
        match &self.file {
            SegmentFile::Unwritten => None,
            SegmentFile::Open(file) => Some(FileRef::Open(file.clone())),
            SegmentFile::Sealed(sealed) => {
                Some(sealed.file_ref(storage, log_path(dir, self.base_offset)))
            }
        }
    }

    /// Takes the entries (and the largest timestamp) from index files read back.
    pub fn set_indexes(&mut self, index: OffsetIndex, time_index: TimeIndex) {
        if let Some((timestamp, at)) = time_index.last() {
            self.max_timestamp = timestamp;
            self.max_timestamp_at = at;
        }
        self.index = index;
        self.time_index = time_index;
    }

    /// Hands an open file to the shard's cache now that the segment is sealed and durable:
    /// reads open it on demand from here on. `keep_open` leaves it open as just used.
    pub fn seal_file(&mut self, files: &Rc<SegmentFiles<F>>, keep_open: bool) {
        if let SegmentFile::Open(file) = &self.file {
            let file = keep_open.then(|| file.clone());
            self.file = SegmentFile::Sealed(files.seal(file));
        }
    }

    /// Called once no more batches come: the time index gets the segment's largest timestamp,
    /// so recovery can take it from the index file without reading the segment.
    pub fn finish_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            self.time_index
                .push(self.max_timestamp, self.max_timestamp_at);
        }
    }

    pub fn encode_indexes(&self) -> EncodedIndexes {
        EncodedIndexes {
            index: self.index.encode(),
            time_index: self.time_index.encode(),
            txn_index: txn_index::encode(&self.aborted),
        }
    }

    fn relative(&self, offset: Offset) -> u32 {
        let delta = offset.0 - self.base_offset.0;
        assert!(
            (0..=u32::MAX as i64).contains(&delta),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        delta as u32
    }

    /// Records that a batch was placed at `position`: advances the end and adds index entries
    /// every `interval` bytes (the first batch of a segment needs none: position 0 is implied).
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, interval: u32) {
        let size = header.total_bytes() as u64;
        let after_last_entry = self.index.last().is_none_or(|(_, p)| (p as u64) < position);
        if position > 0 && self.bytes_since_index >= interval as u64 && after_last_entry {
            let relative = self.relative(header.base_offset);
            self.index.push(relative, position as u32);
            self.bytes_since_index = 0;
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            let relative = self.relative(header.base_offset);
            self.max_timestamp_at = relative;
            if position == 0 || self.bytes_since_index == 0 {
                self.time_index.push(header.max_timestamp, relative);
            }
        }
        self.bytes_since_index += size;
        self.size = self.size.max(position + size);
        self.next_offset = header.next_offset();
    }

    /// Whether this segment may hold `offset` (given the next segment's base as the upper bound).
    pub fn relative_lookup(&self, offset: Offset) -> u64 {
        self.index
            .lookup(self.relative(offset.max(self.base_offset)))
            .1 as u64
    }

    /// Where to start scanning for the first record at or after `timestamp`.
    pub fn time_lookup(&self, timestamp: i64) -> u64 {
        let relative = self.time_index.lookup(timestamp);
        self.index.lookup(relative).1 as u64
    }
}
