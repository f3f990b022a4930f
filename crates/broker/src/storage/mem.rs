//! A simulated disk for tests: files in memory that remember what was synced, so a test can
//! "crash" (drop every unsynced byte, or keep a torn prefix of it) and inject write or sync
//! failures. Single-threaded, like a shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::sealed_indexes::IndexCache;
use super::segment_files::SegmentFiles;
use super::{Storage, StorageFile};
use crate::limits;

#[derive(Debug, Default, Clone)]
struct FileState {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// A byte the disk can no longer read: reads covering it fail (a bad sector).
    unreadable_at: Option<usize>,
}

/// A file's contents, shared by its name and its open handles: like an inode, a handle keeps
/// reading and writing it after a rename or an unlink.
type Inode = Rc<RefCell<FileState>>;

#[derive(Debug, Default)]
struct Disk {
    files: BTreeMap<PathBuf, Inode>,
    fail_writes: bool,
    fail_syncs: bool,
}

/// An in-memory disk shared by the handles a test clones from it, with its own cache of open
/// sealed-segment files (a shard's, in the broker).
#[derive(Debug, Clone)]
pub struct MemStorage {
    disk: Rc<RefCell<Disk>>,
    segment_files: Rc<SegmentFiles<MemFile>>,
    index_cache: Rc<IndexCache>,
    /// Handles open now, like a process's file descriptors.
    open_files: Rc<Cell<usize>>,
}

impl Default for MemStorage {
    fn default() -> Self {
        MemStorage::with_sealed_files_open_max(limits::SEALED_SEGMENT_FILES_OPEN_MAX)
    }
}

/// A handle to one simulated file.
#[derive(Debug)]
pub struct MemFile {
    disk: Rc<RefCell<Disk>>,
    inode: Inode,
    open_files: Rc<Cell<usize>>,
}

impl Drop for MemFile {
    fn drop(&mut self) {
        self.open_files.set(self.open_files.get() - 1);
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl MemStorage {
    /// An empty disk whose sealed-segment file cache keeps at most `max` files open.
    pub fn with_sealed_files_open_max(max: usize) -> Self {
        MemStorage {
            disk: Rc::default(),
            segment_files: Rc::new(SegmentFiles::new(max)),
            index_cache: Rc::new(IndexCache::new(limits::SEALED_INDEXES_LOADED_MAX_BYTES)),
            open_files: Rc::default(),
        }
    }

    /// This disk with a loaded-index cache of at most `max_bytes` of entries.
    pub fn with_loaded_indexes_max_bytes(mut self, max_bytes: usize) -> Self {
        self.index_cache = Rc::new(IndexCache::new(max_bytes));
        self
    }

    pub fn index_cache_bytes(&self) -> usize {
        self.index_cache.loaded_bytes()
    }

    /// Files open now (handles not yet dropped).
    pub fn open_files(&self) -> usize {
        self.open_files.get()
    }

    fn handle(&self, inode: Inode) -> MemFile {
        self.open_files.set(self.open_files.get() + 1);
        MemFile {
            disk: self.disk.clone(),
            inode,
            open_files: self.open_files.clone(),
        }
    }

    /// Makes every later write fail (a full disk), or stop failing.
    pub fn fail_writes(&self, fail: bool) {
        self.disk.borrow_mut().fail_writes = fail;
    }

    /// Makes every later fdatasync fail, or stop failing.
    pub fn fail_syncs(&self, fail: bool) {
        self.disk.borrow_mut().fail_syncs = fail;
    }

    /// Simulates power loss: each file keeps what was synced plus `keep_unsynced(path, n)` bytes of
    /// what was written after (a torn write), never more than was written.
    pub fn crash(&self, mut keep_unsynced: impl FnMut(&Path, usize) -> usize) {
        let mut disk = self.disk.borrow_mut();
        for (path, file) in disk.files.iter_mut() {
            let mut file = file.borrow_mut();
            let synced_len = file.synced.len().min(file.data.len());
            let unsynced = file.data.len() - synced_len;
            let keep = keep_unsynced(path, unsynced).min(unsynced);
            let mut survived = file.synced.clone();
            survived.truncate(synced_len);
            survived.extend_from_slice(&file.data[synced_len..synced_len + keep]);
            file.data = survived.clone();
            file.synced = survived;
        }
    }

    /// Overwrites bytes of a file directly (corruption on disk), synced.
    pub fn corrupt(&self, path: &Path, at: usize, bytes: &[u8]) {
        let disk = self.disk.borrow();
        let mut file = disk.files.get(path).expect("file exists").borrow_mut();
        file.data[at..at + bytes.len()].copy_from_slice(bytes);
        file.synced = file.data.clone();
    }

    /// Makes every read of `path` that covers byte `at` fail, as a bad sector does.
    pub fn fail_reads_at(&self, path: &Path, at: usize) {
        let disk = self.disk.borrow();
        disk.files
            .get(path)
            .expect("file exists")
            .borrow_mut()
            .unreadable_at = Some(at);
    }

    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.disk
            .borrow()
            .files
            .get(path)
            .map(|f| f.borrow().data.clone())
    }

    pub fn file_len(&self, path: &Path) -> Option<usize> {
        self.disk
            .borrow()
            .files
            .get(path)
            .map(|f| f.borrow().data.len())
    }
}

impl StorageFile for MemFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        if self.disk.borrow().fail_writes {
            return Err(injected("write"));
        }
        let mut file = self.inode.borrow_mut();
        let end = pos as usize + buf.len();
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[pos as usize..end].copy_from_slice(&buf);
        Ok(())
    }

    async fn write_vectored_at(&self, pieces: Vec<Bytes>, pos: u64) -> io::Result<()> {
        assert!(pieces.len() <= limits::WRITE_VECTORS_MAX, "too many pieces");
        self.write_at(pieces.concat(), pos).await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let file = self.inode.borrow();
        let data = file.data.as_slice();
        let start = (pos as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        if file
            .unreadable_at
            .is_some_and(|at| (start..end).contains(&at))
        {
            return Err(injected("read"));
        }
        Ok(Bytes::copy_from_slice(&data[start..end]))
    }

    async fn sync_data(&self) -> io::Result<()> {
        if self.disk.borrow().fail_syncs {
            return Err(injected("fdatasync"));
        }
        let mut file = self.inode.borrow_mut();
        file.synced = file.data.clone();
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inode.borrow_mut().data.resize(len as usize, 0);
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.inode.borrow().data.len() as u64)
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    async fn open(&self, path: &Path) -> io::Result<MemFile> {
        let inode = self
            .disk
            .borrow_mut()
            .files
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        Ok(self.handle(inode))
    }

    async fn open_existing(&self, path: &Path) -> io::Result<MemFile> {
        let inode = self.disk.borrow().files.get(path).cloned();
        let inode = inode.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(self.handle(inode))
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        let disk = self.disk.borrow();
        let file = disk
            .files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let len = file.borrow().data.len();
        Ok(len as u64)
    }

    fn index_cache(&self) -> Rc<IndexCache> {
        self.index_cache.clone()
    }

    fn segment_files(&self) -> Rc<SegmentFiles<MemFile>> {
        self.segment_files.clone()
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.borrow();
        Ok(disk
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let disk = self.disk.borrow();
        disk.files.contains_key(path) || disk.files.keys().any(|p| p.starts_with(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.disk.borrow_mut().files.remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk
            .borrow_mut()
            .files
            .retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        let file = disk
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        disk.files.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn sync_filesystem(&self, _path: &Path) -> io::Result<()> {
        let disk = self.disk.borrow();
        if disk.fail_syncs {
            return Err(injected("syncfs"));
        }
        for inode in disk.files.values() {
            let mut file = inode.borrow_mut();
            file.synced = file.data.clone();
        }
        Ok(())
    }
}
