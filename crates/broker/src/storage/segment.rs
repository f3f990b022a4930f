//! One segment of a partition log: a `.log` file of record batches named by its 20-digit base
//! offset, with its sparse offset and time indexes. Owned by the partition's shard.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::batch::BatchHeader;
use super::index::{OffsetIndex, TimeIndex};
use super::sealed_indexes::{HeldIndexes, Indexes, LazyIndexes};
use super::segment_check::SegmentCheck;
use super::segment_files::{FileRef, SegmentFile, SegmentFiles};
use super::txn_index::{self, AbortedTxn};
use super::{Storage, StorageFile};
use crate::config::LogConfig;
use crate::limits;
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

/// Where a rebuilt index file is written before it is renamed over `index_file` (a name of its
/// own: a cleaning writes the same segment's new index files through `<stem>.tmp`).
pub fn rebuilt_path(index_file: &Path) -> PathBuf {
    let mut name = index_file.as_os_str().to_owned();
    name.push(REBUILT_SUFFIX);
    PathBuf::from(name)
}

/// The suffix of `rebuilt_path`: recovery removes such files, which a crash left half written.
pub const REBUILT_SUFFIX: &str = ".rebuilt";

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
    /// The offset and time indexes: in memory, or still in their files until first needed.
    indexes: SegmentIndexes,
    /// Whether the index files on disk hold the indexes and `aborted` (a clean stop then need
    /// not write them again).
    pub indexes_saved: bool,
    bytes_since_index: u64,
    /// When the segment was created, for `segment.ms` rolls.
    pub created_ms: i64,
    /// Transactions aborted by markers in this segment.
    pub aborted: Vec<AbortedTxn>,
    /// The check of its batches its first read runs: only for a sealed segment recovery did
    /// not read (what this process wrote or scanned is known whole).
    pub check: Option<Rc<SegmentCheck>>,
}

/// A segment's index files, encoded, as a seal or a clean stop writes them.
pub struct EncodedIndexes {
    pub index: Vec<u8>,
    pub time_index: Vec<u8>,
    /// Empty when the segment aborted nothing (no file is written then).
    pub txn_index: Vec<u8>,
}

/// Where a segment's indexes are.
#[derive(Debug)]
enum SegmentIndexes {
    /// In memory: built by appends or a recovery scan, or read from the files.
    Built(Indexes),
    /// A sealed segment's, left in their files by recovery and in memory only while the
    /// shard's cache holds them (see `sealed_indexes`, `log::IndexLoad`).
    Lazy(HeldIndexes),
}

/// What a scan of a segment checks batches against and indexes them by.
#[derive(Debug, Clone, Copy)]
pub struct ScanRules {
    pub index_interval_bytes: u32,
    /// A batch longer than this is damage, not data.
    pub batch_max_bytes: u64,
}

impl ScanRules {
    pub fn of(config: &LogConfig) -> Self {
        ScanRules {
            index_interval_bytes: config.index_interval_bytes,
            // Generous: the topic's limit may have been lowered since the batch was written.
            batch_max_bytes: (config
                .max_message_bytes
                .max(limits::RECOVERY_READ_CHUNK_BYTES) as u64)
                * 16,
        }
    }
}

/// How a read finds where to start in a segment.
pub enum Lookup {
    /// At this position.
    At(u64),
    /// Through the segment's indexes, which must be loaded first.
    Load(Rc<LazyIndexes>),
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
            indexes: SegmentIndexes::Built(Indexes::empty()),
            indexes_saved: false,
            bytes_since_index: 0,
            created_ms,
            aborted: Vec::new(),
            check: None,
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
        self.indexes = SegmentIndexes::Built(Indexes::from_files(index, time_index));
    }

    /// Leaves the indexes in their files until first needed (a sealed segment at recovery).
    pub fn set_lazy_indexes(&mut self, lazy: LazyIndexes) {
        self.indexes = SegmentIndexes::Lazy(HeldIndexes::new(lazy));
    }

    /// The indexes whose largest timestamp is not known yet, for the caller to load (`None`
    /// once it is, even if the indexes were evicted since).
    pub fn unloaded_indexes(&self) -> Option<Rc<LazyIndexes>> {
        match &self.indexes {
            SegmentIndexes::Lazy(lazy) if lazy.max_timestamp().is_none() => Some(lazy.shared()),
            _ => None,
        }
    }

    /// The largest batch max-timestamp (-1 when the segment is empty); `None` until the
    /// indexes that hold it are loaded.
    pub fn max_timestamp(&self) -> Option<i64> {
        match &self.indexes {
            SegmentIndexes::Built(indexes) => Some(indexes.max_timestamp),
            SegmentIndexes::Lazy(lazy) => lazy.max_timestamp(),
        }
    }

    /// The indexes a scan built (`None` for indexes still in, or loaded from, their files).
    pub fn into_built_indexes(self) -> Option<Indexes> {
        match self.indexes {
            SegmentIndexes::Built(indexes) => Some(indexes),
            SegmentIndexes::Lazy(_) => None,
        }
    }

    /// The indexes appends and scans add to: only ever a segment's own, built ones.
    fn built_mut(&mut self) -> &mut Indexes {
        match &mut self.indexes {
            SegmentIndexes::Built(indexes) => indexes,
            SegmentIndexes::Lazy(_) => unreachable!("batches are noted only in built indexes"),
        }
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
        let indexes = self.built_mut();
        if indexes.max_timestamp >= 0 {
            indexes
                .time_index
                .push(indexes.max_timestamp, indexes.max_timestamp_at);
        }
    }

    /// The index files' contents; `None` for indexes that came from their files (nothing to
    /// write). The time index ends on the largest timestamp, as `finish_time_index` ends it (the
    /// active segment's is not finished yet): a start reads that timestamp from the last entry.
    pub fn encode_indexes(&self) -> Option<EncodedIndexes> {
        let SegmentIndexes::Built(indexes) = &self.indexes else {
            return None;
        };
        let mut time_index = indexes.time_index.clone();
        if indexes.max_timestamp >= 0 {
            time_index.push(indexes.max_timestamp, indexes.max_timestamp_at);
        }
        Some(EncodedIndexes {
            index: indexes.index.encode(),
            time_index: time_index.encode(),
            txn_index: txn_index::encode(&self.aborted),
        })
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

    /// Whether every offset of `header`'s batch lies within this segment's reach: at or above
    /// its base, and within the 32-bit offsets (relative to the base) its indexes hold. Only a
    /// batch read back from disk can fail this: its base offset lies outside the CRC, so damage
    /// there passes the CRC check.
    pub fn reaches(&self, header: &BatchHeader) -> bool {
        header.base_offset >= self.base_offset
            && header.last_offset().0 - self.base_offset.0 <= u32::MAX as i64
    }

    /// Records that a batch was placed at `position`: advances the end and adds index entries
    /// every `interval` bytes (the first batch of a segment needs none: position 0 is implied).
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, interval: u32) {
        let size = header.total_bytes() as u64;
        let relative = self.relative(header.base_offset);
        let since_index = self.bytes_since_index;
        let indexes = self.built_mut();
        let after_last_entry = indexes
            .index
            .last()
            .is_none_or(|(_, p)| (p as u64) < position);
        let indexed = position > 0 && since_index >= interval as u64 && after_last_entry;
        if indexed {
            indexes.index.push(relative, position as u32);
        }
        if header.max_timestamp > indexes.max_timestamp {
            indexes.max_timestamp = header.max_timestamp;
            indexes.max_timestamp_at = relative;
            if position == 0 || indexed || since_index == 0 {
                indexes.time_index.push(header.max_timestamp, relative);
            }
        }
        self.bytes_since_index = if indexed { size } else { since_index + size };
        self.size = self.size.max(position + size);
        self.next_offset = header.next_offset();
    }

    /// Where to start scanning for `offset`: a position, or the indexes to load first.
    pub fn lookup(&self, offset: Offset) -> Lookup {
        let relative = self.relative_to_base(offset);
        match &self.indexes {
            SegmentIndexes::Built(indexes) => Lookup::At(indexes.position_of(relative)),
            SegmentIndexes::Lazy(lazy) => match lazy.get() {
                Some(indexes) => Lookup::At(indexes.position_of(relative)),
                None => Lookup::Load(lazy.shared()),
            },
        }
    }

    /// `offset` relative to the base (offsets below the base count as the base).
    pub fn relative_to_base(&self, offset: Offset) -> u32 {
        self.relative(offset.max(self.base_offset))
    }

    /// Where to start scanning for the first record at or after `timestamp`: a position, or
    /// the indexes to load first.
    pub fn time_lookup(&self, timestamp: i64) -> Lookup {
        match &self.indexes {
            SegmentIndexes::Built(indexes) => Lookup::At(indexes.position_at_time(timestamp)),
            SegmentIndexes::Lazy(lazy) => match lazy.get() {
                Some(indexes) => Lookup::At(indexes.position_at_time(timestamp)),
                None => Lookup::Load(lazy.shared()),
            },
        }
    }
}
