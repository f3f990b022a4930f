//! Sealed segments' offset and time indexes, loaded from their files on first need and held in
//! a per-shard cache of at most `SEALED_INDEXES_LOADED_MAX_BYTES`, least recently used evicted
//! first. Recovery reads no index file of a sealed segment (100,000 segments would be 200,000
//! files), and a consumer reading a long backlog from its start does not pin every index it
//! passed in memory: an evicted index is read again from its files when next needed. A segment's
//! largest timestamp outlives the eviction of its indexes, since retention asks for it every
//! round.
//!
//! Owned by the shard that owns the partitions (one thread, one cache), like `segment_files`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::{Rc, Weak};

use super::index::{OffsetIndex, TimeIndex};
use super::segment::ScanRules;
use crate::types::Offset;

/// A segment's sparse indexes and the largest timestamp they summarize.
#[derive(Debug, Default)]
pub struct Indexes {
    pub(super) index: OffsetIndex,
    pub(super) time_index: TimeIndex,
    /// Largest batch max-timestamp in the segment (-1 when empty)...
    pub(super) max_timestamp: i64,
    /// ...and the relative offset of the batch that reached it.
    pub(super) max_timestamp_at: u32,
}

impl Indexes {
    pub fn empty() -> Self {
        Indexes {
            max_timestamp: -1,
            ..Indexes::default()
        }
    }

    /// Indexes read back from their files: the time index's last entry is the largest
    /// timestamp (`Segment::finish_time_index` put it there).
    pub fn from_files(index: OffsetIndex, time_index: TimeIndex) -> Self {
        let (max_timestamp, max_timestamp_at) = time_index.last().unwrap_or((-1, 0));
        Indexes {
            index,
            time_index,
            max_timestamp,
            max_timestamp_at,
        }
    }

    /// Where to start scanning for `relative` (an offset relative to the segment's base).
    pub fn position_of(&self, relative: u32) -> u64 {
        self.index.lookup(relative).1 as u64
    }

    /// Where to start scanning for the first record with a timestamp of at least `timestamp`.
    pub fn position_at_time(&self, timestamp: i64) -> u64 {
        self.position_of(self.time_index.lookup(timestamp))
    }

    /// Memory the entries take: what the cache's bound counts.
    fn bytes(&self) -> usize {
        self.index.len() * super::index::OFFSET_ENTRY_BYTES
            + self.time_index.len() * super::index::TIME_ENTRY_BYTES
    }
}

/// A sealed segment's indexes in their files: in memory while the shard's cache holds them.
#[derive(Debug)]
pub struct LazyIndexes {
    pub base_offset: Offset,
    pub dir: Rc<Path>,
    /// The `.log` file's size: index entries must point inside it.
    pub log_size: u64,
    /// For rebuilding the indexes from the log when their files turn out damaged.
    pub rules: ScanRules,
    /// Kept once known, across evictions.
    max_timestamp: Cell<Option<i64>>,
    loaded: RefCell<Option<Rc<Indexes>>>,
    /// Its key in the cache's use order while loaded.
    used: Cell<u64>,
    cache: Rc<IndexCache>,
    /// Set when the log lets go of the segment (retention, DeleteRecords, a cleaning swap, a
    /// truncation, a deleted topic): its files are gone or another segment's now.
    retired: Cell<bool>,
    /// Set by the first load that rebuilt the indexes and writes them back to their files.
    rewriting: Cell<bool>,
}

impl LazyIndexes {
    pub fn new(
        base_offset: Offset,
        dir: Rc<Path>,
        log_size: u64,
        rules: ScanRules,
        cache: Rc<IndexCache>,
    ) -> Self {
        LazyIndexes {
            base_offset,
            dir,
            log_size,
            rules,
            max_timestamp: Cell::new(None),
            loaded: RefCell::new(None),
            used: Cell::new(0),
            cache,
            retired: Cell::new(false),
            rewriting: Cell::new(false),
        }
    }

    /// Whether the log has let go of the segment these indexes belong to.
    pub fn is_retired(&self) -> bool {
        self.retired.get()
    }

    /// Claims the writing back of rebuilt indexes: true for the first caller only.
    pub fn claim_rewrite(&self) -> bool {
        !self.rewriting.replace(true)
    }

    /// The indexes if in memory, now the most recently used.
    pub fn get(self: &Rc<Self>) -> Option<Rc<Indexes>> {
        let indexes = self.loaded.borrow().clone()?;
        self.cache.touch(self);
        Some(indexes)
    }

    /// The segment's largest timestamp (-1 when empty), once its indexes were loaded.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp.get()
    }

    /// Holds `indexes` in memory (unless a load that ran meanwhile got there first: both read
    /// the same files) and returns the ones held.
    pub fn install(self: &Rc<Self>, indexes: Indexes) -> Rc<Indexes> {
        if let Some(loaded) = self.get() {
            return loaded;
        }
        self.max_timestamp.set(Some(indexes.max_timestamp));
        let indexes = Rc::new(indexes);
        *self.loaded.borrow_mut() = Some(indexes.clone());
        self.cache.insert(self, indexes.bytes());
        indexes
    }

    /// Whether the indexes are in memory now (for tests and metrics).
    pub fn is_loaded(&self) -> bool {
        self.loaded.borrow().is_some()
    }
}

/// The log's hold on a sealed segment's lazy indexes (readers hold plain `Rc`s): dropping it
/// marks them retired, so a rebuild that a reader started no longer writes index files for a
/// segment that is gone.
#[derive(Debug)]
pub struct HeldIndexes(Rc<LazyIndexes>);

impl HeldIndexes {
    pub fn new(lazy: LazyIndexes) -> Self {
        HeldIndexes(Rc::new(lazy))
    }

    /// A reader's handle.
    pub fn shared(&self) -> Rc<LazyIndexes> {
        self.0.clone()
    }
}

impl std::ops::Deref for HeldIndexes {
    type Target = Rc<LazyIndexes>;

    fn deref(&self) -> &Rc<LazyIndexes> {
        &self.0
    }
}

impl Drop for HeldIndexes {
    fn drop(&mut self) {
        self.0.retired.set(true);
    }
}

/// A shard's loaded sealed-segment indexes, least recently used evicted first once their entries
/// take more than `max_bytes`.
#[derive(Debug)]
pub struct IndexCache {
    max_bytes: usize,
    bytes: Cell<usize>,
    uses: Cell<u64>,
    /// Loaded indexes by their last use, oldest first, with their size. Weak: a deleted
    /// segment's indexes go with it, and its entry is dropped when reached.
    by_use: RefCell<BTreeMap<u64, (Weak<LazyIndexes>, usize)>>,
}

impl IndexCache {
    pub fn new(max_bytes: usize) -> Self {
        IndexCache {
            max_bytes,
            bytes: Cell::new(0),
            uses: Cell::new(0),
            by_use: RefCell::new(BTreeMap::new()),
        }
    }

    /// Bytes of index entries the cache holds (deleted segments' included until reached).
    pub fn loaded_bytes(&self) -> usize {
        self.bytes.get()
    }

    fn next_use(&self) -> u64 {
        let next = self.uses.get() + 1;
        self.uses.set(next);
        next
    }

    fn touch(&self, lazy: &Rc<LazyIndexes>) {
        let mut by_use = self.by_use.borrow_mut();
        if let Some(entry) = by_use.remove(&lazy.used.get()) {
            lazy.used.set(self.next_use());
            by_use.insert(lazy.used.get(), entry);
        }
    }

    fn insert(&self, lazy: &Rc<LazyIndexes>, bytes: usize) {
        lazy.used.set(self.next_use());
        let mut by_use = self.by_use.borrow_mut();
        by_use.insert(lazy.used.get(), (Rc::downgrade(lazy), bytes));
        self.bytes.set(self.bytes.get() + bytes);
        // The newest stays even alone over the bound: a read needs the index it just loaded.
        while self.bytes.get() > self.max_bytes && by_use.len() > 1 {
            let Some((_, (oldest, size))) = by_use.pop_first() else {
                break;
            };
            self.bytes.set(self.bytes.get() - size);
            if let Some(oldest) = oldest.upgrade() {
                // A read that holds the `Rc` keeps using it until it ends.
                oldest.loaded.borrow_mut().take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy(cache: &Rc<IndexCache>, base: i64) -> Rc<LazyIndexes> {
        let rules = ScanRules {
            index_interval_bytes: 4096,
            batch_max_bytes: 1 << 20,
        };
        Rc::new(LazyIndexes::new(
            Offset(base),
            Rc::from(Path::new("/data")),
            1 << 20,
            rules,
            cache.clone(),
        ))
    }

    /// Indexes of `entries` offset entries and as many time entries (20 bytes per pair).
    fn indexes(entries: u32, max_timestamp: i64) -> Indexes {
        let mut index = OffsetIndex::default();
        let mut time_index = TimeIndex::default();
        for i in 1..=entries {
            index.push(i, i * 100);
            time_index.push(max_timestamp - (entries - i) as i64, i);
        }
        Indexes::from_files(index, time_index)
    }

    #[test]
    fn evicts_the_least_recently_used_over_the_byte_bound_and_keeps_timestamps() {
        let cache = Rc::new(IndexCache::new(100));
        let segments: Vec<_> = (0..4).map(|i| lazy(&cache, i * 10)).collect();
        for (i, s) in segments.iter().take(2).enumerate() {
            s.install(indexes(2, 1_000 + i as i64)); // 40 bytes each
        }
        assert!(segments[0].get().is_some()); // the first is now the most recent
        segments[2].install(indexes(2, 1_002)); // 120 bytes: the second goes
        assert!(segments[0].is_loaded() && !segments[1].is_loaded() && segments[2].is_loaded());
        assert_eq!(cache.loaded_bytes(), 80);
        assert_eq!(
            segments[1].max_timestamp(),
            Some(1_001),
            "kept after eviction"
        );
        assert_eq!(segments[3].max_timestamp(), None, "never loaded");
    }

    #[test]
    fn an_index_larger_than_the_bound_stays_until_the_next_load() {
        let cache = Rc::new(IndexCache::new(10));
        let (a, b) = (lazy(&cache, 0), lazy(&cache, 10));
        let held = a.install(indexes(3, 5));
        assert!(a.is_loaded());
        b.install(indexes(3, 6));
        assert!(!a.is_loaded() && b.is_loaded());
        assert_eq!(held.position_of(2), 200, "a read holding it still uses it");
    }

    #[test]
    fn a_dropped_segment_frees_its_indexes_and_its_entry_goes_when_reached() {
        let cache = Rc::new(IndexCache::new(50));
        let gone = lazy(&cache, 0);
        let weak = Rc::downgrade(&gone);
        gone.install(indexes(2, 1));
        drop(gone);
        assert!(weak.upgrade().is_none());
        let kept = lazy(&cache, 10);
        kept.install(indexes(2, 2));
        assert_eq!(
            cache.loaded_bytes(),
            40,
            "the dropped one's entry was evicted"
        );
        assert!(kept.is_loaded());
    }
}
