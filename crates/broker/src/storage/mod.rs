//! Storage: the partition log and everything beneath it (segments, indexes, recovery), plus the
//! small I/O traits it is written against.
//!
//! Everything here runs on the shard (core) that owns the partition; nothing is shared between
//! cores. The traits let tests swap the io_uring-backed files for a simulated disk that can lose
//! unsynced writes or fail on command.

pub mod batch;
pub mod epoch_cache;
pub mod fs;
pub mod index;
pub mod log;
pub mod mem;
pub mod payload;
pub mod record_check;
pub mod record_walk;
pub mod records;
pub mod sealed_indexes;
pub mod segment;
pub mod segment_check;
pub mod segment_files;
pub mod txn_index;

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use sealed_indexes::IndexCache;
use segment_files::SegmentFiles;

/// One open file: positional reads and writes, fdatasync, truncate.
///
/// Futures are not `Send`: every file belongs to one shard (thread-per-core by design).
#[allow(async_fn_in_trait)]
pub trait StorageFile: 'static {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()>;
    /// Writes `pieces` back to back from `pos` in one vectored write, without copying them
    /// together; at most `WRITE_VECTORS_MAX` of them.
    async fn write_vectored_at(&self, pieces: Vec<Bytes>, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos`; fewer only at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    async fn sync_data(&self) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    /// A descriptor of its own for the same open file, for sending ranges of it with sendfile;
    /// `None` where there is no kernel file (the simulated disk), and reads copy instead.
    fn dup_fd(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

/// A directory tree of files: what the log and the metadata store need from a file system.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;
    /// Opens a file for reading and writing, creating it if missing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens a file that must exist (NotFound otherwise): a sealed segment deleted meanwhile
    /// must not come back as an empty file.
    async fn open_existing(&self, path: &Path) -> io::Result<Self::File>;
    /// A file's length, without opening it.
    fn file_size(&self, path: &Path) -> io::Result<u64>;
    /// The calling shard's cache of open sealed-segment files.
    fn segment_files(&self) -> Rc<SegmentFiles<Self::File>>;
    /// The calling shard's cache of loaded sealed-segment indexes.
    fn index_cache(&self) -> Rc<IndexCache>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes directory entries (creations, renames) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes everything written on the file system that holds `path` durable, file data and
    /// directory entries alike (`syncfs`): one call where a clean stop would otherwise sync
    /// thousands of files one by one.
    fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
}

/// Wall-clock milliseconds, behind a trait so tests control time.
pub trait Clock: 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Writes `contents` to `path` atomically and durably: temp file, fsync, rename, fsync directory.
pub async fn write_atomically<S: Storage>(
    storage: &S,
    path: &Path,
    contents: Vec<u8>,
) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    write_synced(storage, &temp, contents).await?;
    rename_durably(storage, &temp, path)
}

/// Replaces whatever `path` held with `contents`, and syncs it.
pub async fn write_synced<S: Storage>(
    storage: &S,
    path: &Path,
    contents: Vec<u8>,
) -> io::Result<()> {
    let len = contents.len() as u64;
    let file = storage.open(path).await?;
    file.truncate(0).await?;
    file.write_at(contents, 0).await?;
    file.truncate(len).await?;
    file.sync_data().await
}

/// Renames `from` to `to`, then syncs their directory so the rename survives a crash.
pub fn rename_durably<S: Storage>(storage: &S, from: &Path, to: &Path) -> io::Result<()> {
    storage.rename(from, to)?;
    let dir = to
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    storage.sync_dir(&dir)
}

/// `write_atomically` without its syncs: the caller makes the file and its rename durable later,
/// with many others, by `Storage::sync_filesystem`.
pub async fn write_replacing<S: Storage>(
    storage: &S,
    path: &Path,
    contents: Vec<u8>,
) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    let len = contents.len() as u64;
    let file = storage.open(&temp).await?;
    file.write_at(contents, 0).await?;
    // Cuts what a longer temp file, left by a crash, had beyond the new contents.
    file.truncate(len).await?;
    drop(file);
    storage.rename(&temp, path)
}

/// Reads a whole (small) file, or `None` if it does not exist.
pub async fn read_whole<S: Storage>(
    storage: &S,
    path: &Path,
    max_bytes: usize,
) -> io::Result<Option<Bytes>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let file = storage.open(path).await?;
    let size = file.size().await? as usize;
    if size > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is {size} bytes, over {max_bytes}", path.display()),
        ));
    }
    Ok(Some(file.read_at(0, size).await?))
}
