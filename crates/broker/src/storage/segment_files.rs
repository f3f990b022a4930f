//! The shard's open sealed-segment files. A sealed segment (one no longer appended to) keeps no
//! file open: a read opens it on demand through this cache, which keeps at most
//! `SEALED_SEGMENT_FILES_OPEN_MAX` of them open per shard and closes the least recently used
//! first. File descriptors are a process resource, so the bound is per shard (one thread, one
//! cache) rather than per partition: 10,000 partitions of 10 segments would otherwise hold
//! 100,000 of them.
//!
//! A read keeps the `Rc` of the file it got, so a file evicted (or whose segment is deleted)
//! while a read uses it stays open until that read ends: the bound is soft by the number of
//! reads in flight. Active segments are not counted here: each partition keeps its one open.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{Storage, StorageFile};

/// One sealed segment's place in the cache: its file while open, and whether the segment still
/// exists (once deleted or replaced, its path may name another file, or none).
#[derive(Debug)]
pub struct SealedFile<F> {
    open: RefCell<Option<Rc<F>>>,
    /// Its key in the cache's use order while open.
    used: Cell<u64>,
    gone: Cell<bool>,
}

/// A shard's cache of open sealed-segment files, least recently used evicted first.
#[derive(Debug)]
pub struct SegmentFiles<F> {
    max: usize,
    uses: Cell<u64>,
    /// Open files by their last use, oldest first.
    by_use: RefCell<BTreeMap<u64, Rc<SealedFile<F>>>>,
}

/// The error a read gets when its sealed segment was deleted or replaced before the read
/// opened it: the caller looks the offset up again.
#[derive(Debug)]
struct SegmentGone;

impl fmt::Display for SegmentGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the segment was deleted or replaced during the read")
    }
}

impl std::error::Error for SegmentGone {}

/// Whether `err` says the segment a read wanted is gone (see `SegmentGone`).
pub fn is_segment_gone(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<SegmentGone>())
}

fn segment_gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, SegmentGone)
}

impl<F: StorageFile> SegmentFiles<F> {
    pub fn new(max: usize) -> Self {
        SegmentFiles {
            max,
            uses: Cell::new(0),
            by_use: RefCell::new(BTreeMap::new()),
        }
    }

    /// Sealed-segment files open in the cache (not counting evicted ones reads still hold).
    pub fn open_count(&self) -> usize {
        self.by_use.borrow().len()
    }

    /// Makes a sealed segment's handle; `file`, when the segment still has it open, goes into
    /// the cache as just used.
    pub fn seal(self: &Rc<Self>, file: Option<Rc<F>>) -> SealedSegment<F> {
        let slot = Rc::new(SealedFile {
            open: RefCell::new(None),
            used: Cell::new(0),
            gone: Cell::new(false),
        });
        if let Some(file) = file {
            self.insert(&slot, file);
        }
        SealedSegment {
            slot,
            files: self.clone(),
        }
    }

    /// The segment's file: from the cache, or opened at `path` (and cached).
    async fn get<S: Storage<File = F>>(
        &self,
        slot: &Rc<SealedFile<F>>,
        storage: &S,
        path: &Path,
    ) -> io::Result<Rc<F>> {
        if let Some(file) = self.touch(slot) {
            return Ok(file);
        }
        if slot.gone.get() {
            return Err(segment_gone());
        }
        let opened = storage.open_existing(path).await;
        // Checked again after the await: the segment may have been deleted meanwhile, or a
        // cleaning may have renamed another file to `path`, which must not be read as this one.
        if slot.gone.get() {
            return Err(segment_gone());
        }
        let file = Rc::new(opened?);
        if let Some(opened_meanwhile) = self.touch(slot) {
            return Ok(opened_meanwhile);
        }
        self.insert(slot, file.clone());
        Ok(file)
    }

    /// The slot's file if open, now the most recently used.
    fn touch(&self, slot: &Rc<SealedFile<F>>) -> Option<Rc<F>> {
        let file = slot.open.borrow().clone()?;
        let mut by_use = self.by_use.borrow_mut();
        by_use.remove(&slot.used.get());
        slot.used.set(self.next_use());
        by_use.insert(slot.used.get(), slot.clone());
        Some(file)
    }

    fn insert(&self, slot: &Rc<SealedFile<F>>, file: Rc<F>) {
        *slot.open.borrow_mut() = Some(file);
        slot.used.set(self.next_use());
        let mut by_use = self.by_use.borrow_mut();
        by_use.insert(slot.used.get(), slot.clone());
        while by_use.len() > self.max {
            let Some((_, oldest)) = by_use.pop_first() else {
                break;
            };
            oldest.open.borrow_mut().take();
        }
    }

    fn next_use(&self) -> u64 {
        let next = self.uses.get() + 1;
        self.uses.set(next);
        next
    }

    /// Drops the slot's file from the cache (closing it unless a read holds it) and marks the
    /// segment gone.
    fn forget(&self, slot: &SealedFile<F>) {
        slot.gone.set(true);
        if slot.open.borrow_mut().take().is_some() {
            self.by_use.borrow_mut().remove(&slot.used.get());
        }
    }
}

/// A sealed segment's hold on its file, owned by the segment: dropping it (the segment was
/// deleted, replaced by a cleaning, or its log closed) takes the file out of the cache.
#[derive(Debug)]
pub struct SealedSegment<F: StorageFile> {
    slot: Rc<SealedFile<F>>,
    files: Rc<SegmentFiles<F>>,
}

impl<F: StorageFile> SealedSegment<F> {
    /// A way for a read to get the file at `path` later, without borrowing the segment.
    pub fn file_ref<S: Storage<File = F>>(&self, storage: &S, path: PathBuf) -> FileRef<S> {
        FileRef::Sealed {
            storage: storage.clone(),
            files: self.files.clone(),
            slot: self.slot.clone(),
            path,
        }
    }

    fn is(&self, slot: &Rc<SealedFile<F>>) -> bool {
        Rc::ptr_eq(&self.slot, slot)
    }
}

impl<F: StorageFile> Drop for SealedSegment<F> {
    fn drop(&mut self) {
        self.files.forget(&self.slot);
    }
}

/// A segment's file as a read or a cleaning holds it: open already (an active segment), or
/// opened through the shard's cache when first needed (a sealed one).
pub enum FileRef<S: Storage> {
    Open(Rc<S::File>),
    Sealed {
        storage: S,
        files: Rc<SegmentFiles<S::File>>,
        slot: Rc<SealedFile<S::File>>,
        path: PathBuf,
    },
}

impl<S: Storage> Clone for FileRef<S> {
    fn clone(&self) -> Self {
        match self {
            FileRef::Open(file) => FileRef::Open(file.clone()),
            FileRef::Sealed {
                storage,
                files,
                slot,
                path,
            } => FileRef::Sealed {
                storage: storage.clone(),
                files: files.clone(),
                slot: slot.clone(),
                path: path.clone(),
            },
        }
    }
}

impl<S: Storage> FileRef<S> {
    /// The open file. Fails with a "segment gone" error (`is_segment_gone`) when the sealed
    /// segment was deleted or replaced before this opened it.
    pub async fn get(&self) -> io::Result<Rc<S::File>> {
        match self {
            FileRef::Open(file) => Ok(file.clone()),
            FileRef::Sealed {
                storage,
                files,
                slot,
                path,
            } => files.get(slot, storage, path).await,
        }
    }
}

/// Where a segment's `.log` file is.
#[derive(Debug)]
pub enum SegmentFile<F: StorageFile> {
    /// Not created yet: between a roll and the flush that writes the segment's first bytes.
    Unwritten,
    /// Held open: the active segment, or a sealed one whose seal a flush is still writing.
    Open(Rc<F>),
    /// Sealed and durable: opened on demand through the shard's cache.
    Sealed(SealedSegment<F>),
}

impl<F: StorageFile> SegmentFile<F> {
    /// The file, if the segment holds it open.
    pub fn open_file(&self) -> Option<Rc<F>> {
        match self {
            SegmentFile::Open(file) => Some(file.clone()),
            _ => None,
        }
    }

    pub fn is_written(&self) -> bool {
        !matches!(self, SegmentFile::Unwritten)
    }

    /// Whether `file` is this segment's file (the same open file, or the same sealed segment).
    pub fn is<S: Storage<File = F>>(&self, file: &FileRef<S>) -> bool {
        match (self, file) {
            (SegmentFile::Open(mine), FileRef::Open(theirs)) => Rc::ptr_eq(mine, theirs),
            (SegmentFile::Sealed(mine), FileRef::Sealed { slot, .. }) => mine.is(slot),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::storage::mem::{MemFile, MemStorage};

    fn sealed_files(storage: &MemStorage, count: usize) -> Vec<(SealedSegment<MemFile>, PathBuf)> {
        let files = storage.segment_files();
        (0..count)
            .map(|i| {
                let path = PathBuf::from(format!("/d/{i}.log"));
                block_on(storage.open(&path)).unwrap();
                (files.seal(None), path)
            })
            .collect()
    }

    #[test]
    fn keeps_at_most_the_bound_open_evicting_the_least_recently_used() {
        let storage = MemStorage::with_sealed_files_open_max(2);
        let segments = sealed_files(&storage, 4);
        let get = |i: usize| {
            let (seg, path) = &segments[i];
            block_on(seg.file_ref(&storage, path.clone()).get()).unwrap()
        };
        for i in [0, 1, 0, 2, 3, 0] {
            drop(get(i));
            assert!(storage.segment_files().open_count() <= 2);
            assert_eq!(storage.open_files(), storage.segment_files().open_count());
        }
        // 0 was used last, 3 before it: 1 and 2 were evicted.
        let open: Vec<bool> = segments
            .iter()
            .map(|(s, _)| s.slot.open.borrow().is_some())
            .collect();
        assert_eq!(open, [true, false, false, true]);
    }

    #[test]
    fn an_evicted_file_stays_readable_while_a_read_holds_it() {
        let storage = MemStorage::with_sealed_files_open_max(1);
        let segments = sealed_files(&storage, 3);
        let held = block_on(
            segments[0]
                .0
                .file_ref(&storage, segments[0].1.clone())
                .get(),
        )
        .unwrap();
        block_on(held.write_at(b"kept".to_vec(), 0)).unwrap();
        for (seg, path) in &segments[1..] {
            drop(block_on(seg.file_ref(&storage, path.clone()).get()).unwrap());
        }
        assert_eq!(storage.segment_files().open_count(), 1);
        assert_eq!(storage.open_files(), 2, "the bound plus the read in flight");
        assert_eq!(&block_on(held.read_at(0, 4)).unwrap()[..], b"kept");
        drop(held);
        assert_eq!(storage.open_files(), 1);
    }

    #[test]
    fn a_dropped_segment_leaves_the_cache_and_cannot_be_reopened() {
        let storage = MemStorage::with_sealed_files_open_max(4);
        let mut segments = sealed_files(&storage, 2);
        let (seg, path) = segments.pop().unwrap();
        let file_ref = seg.file_ref(&storage, path);
        drop(block_on(file_ref.get()).unwrap());
        assert_eq!(storage.open_files(), 1);
        drop(seg);
        assert_eq!(storage.open_files(), 0);
        assert_eq!(storage.segment_files().open_count(), 0);
        let err = block_on(file_ref.get()).expect_err("gone");
        assert!(is_segment_gone(&err));
    }
}
