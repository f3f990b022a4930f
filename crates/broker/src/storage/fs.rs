//! The real storage: glommio's io_uring-backed buffered files on the shard's own ring.
//!
//! Directory operations are rare (topic creation, segment roll) and use std::fs directly.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{BufferedFile, OpenOptions};

use super::sealed_indexes::IndexCache;
use super::segment_files::SegmentFiles;
use super::{Storage, StorageFile};
use crate::limits;

thread_local! {
    /// This shard's open sealed-segment files: file descriptors are bounded per process, and a
    /// shard is one thread.
    static SEGMENT_FILES: Rc<SegmentFiles<UringFile>> =
        Rc::new(SegmentFiles::new(limits::SEALED_SEGMENT_FILES_OPEN_MAX));
    /// This shard's loaded sealed-segment indexes.
    static INDEX_CACHE: Rc<IndexCache> =
        Rc::new(IndexCache::new(limits::SEALED_INDEXES_LOADED_MAX_BYTES));
}

/// Files opened through glommio on the current shard's io_uring.
#[derive(Debug, Clone, Copy, Default)]
pub struct UringStorage;

/// A file on the current shard's io_uring.
#[derive(Debug)]
pub struct UringFile(BufferedFile);

fn to_io(err: glommio::GlommioError<()>) -> io::Error {
    io::Error::other(err.to_string())
}

/// A short write to a regular file means the disk is full: fail, never acknowledge.
fn check_whole(written: usize, total: usize) -> io::Result<()> {
    if written != total {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {total} bytes"),
        ));
    }
    Ok(())
}

impl StorageFile for UringFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        let total = buf.len();
        let written = self.0.write_at(buf, pos).await.map_err(to_io)?;
        check_whole(written, total)
    }

    async fn write_vectored_at(&self, pieces: Vec<Bytes>, pos: u64) -> io::Result<()> {
        debug_assert!(pieces.len() <= limits::WRITE_VECTORS_MAX);
        let total = pieces.iter().map(Bytes::len).sum();
        let written = self.0.write_vectored_at(pieces, pos).await.map_err(to_io)?;
        check_whole(written, total)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let result = self.0.read_at(pos, len).await.map_err(to_io)?;
        Ok(Bytes::copy_from_slice(&result))
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.0.fdatasync().await.map_err(to_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.truncate(len).await.map_err(to_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.0.file_size().await.map_err(to_io)
    }

    fn dup_fd(&self) -> Option<OwnedFd> {
        // SAFETY: the descriptor is open for as long as `self.0` lives, which spans this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) };
        match fd.try_clone_to_owned() {
            Ok(owned) => Some(owned),
            Err(err) => {
                // Out of descriptors: the caller reads through io_uring instead.
                tracing::warn!("dup of a segment file failed: {err}");
                None
            }
        }
    }
}

async fn open_with(path: &Path, create: bool) -> io::Result<UringFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .buffered_open(path)
        .await
        .map_err(to_io)?;
    Ok(UringFile(file))
}

impl Storage for UringStorage {
    type File = UringFile;

    async fn open(&self, path: &Path) -> io::Result<UringFile> {
        open_with(path, true).await
    }

    async fn open_existing(&self, path: &Path) -> io::Result<UringFile> {
        open_with(path, false).await
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn segment_files(&self) -> Rc<SegmentFiles<UringFile>> {
        SEGMENT_FILES.with(Rc::clone)
    }

    fn index_cache(&self) -> Rc<IndexCache> {
        INDEX_CACHE.with(Rc::clone)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        let dir = std::fs::File::open(path)?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    #[test]
    fn a_vectored_write_puts_its_pieces_back_to_back() {
        let dir = std::env::temp_dir().join(format!("sluice-fs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vectored");
        let read = LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = UringStorage.open(&path).await.unwrap();
                file.write_at(b"0123456789".to_vec(), 0).await.unwrap();
                let frame = Bytes::from_static(b"..abc..defgh..");
                let pieces = vec![frame.slice(2..5), Bytes::new(), frame.slice(7..12)];
                file.write_vectored_at(pieces, 4).await.unwrap();
                file.sync_data().await.unwrap();
                file.read_at(0, 100).await.unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&read[..], b"0123abcdefgh");
    }
}
