//! Bytes on their way to a socket: either in memory, or a range of a segment file that the kernel
//! copies from the page cache to the socket itself (sendfile), so a fetch never brings record
//! bytes into user space.
//!
//! A file range holds its own duplicate of the segment's descriptor: it is `Send` (a fetch answer
//! crosses shards), and it keeps the file's data alive even if retention deletes the segment or
//! compaction swaps it before the range is sent. The bytes it names are below the high watermark
//! when it is made, so they never change: segments are append-only below it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;

/// `len` bytes of an open file, starting at `offset`.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: Arc<OwnedFd>,
    pub offset: u64,
    pub len: usize,
}

impl FileRange {
    /// Whether the first and last pages of the range are in the page cache, asked without
    /// waiting for the disk (`preadv2` with `RWF_NOWAIT`). The socket writer's `sendfile` reads
    /// the file synchronously on the shard's thread: a range that must come from the disk is read
    /// through io_uring instead, which also brings it into the cache.
    pub fn is_cached(&self) -> bool {
        let last = self.offset + self.len.saturating_sub(1) as u64;
        self.byte_is_cached(self.offset) && self.byte_is_cached(last)
    }

    fn byte_is_cached(&self, position: u64) -> bool {
        let mut byte = [0u8; 1];
        let iov = nix::libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: one iovec over a live one-byte buffer; the descriptor is open (owned by `self`).
        let read = unsafe {
            nix::libc::preadv2(
                self.file.as_raw_fd(),
                &iov,
                1,
                position as nix::libc::off_t,
                nix::libc::RWF_NOWAIT,
            )
        };
        read == 1
    }

    /// Reads up to `max` bytes from the start of the range (the writer's fallback while a socket
    /// is full; the pages are in the cache, see `is_cached`).
    pub fn read_head(&self, max: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; self.len.min(max)];
        let read = nix::sys::uio::pread(
            self.file.as_ref(),
            &mut buf,
            self.offset as nix::libc::off_t,
        )?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file shorter than the range being sent",
            ));
        }
        buf.truncate(read);
        Ok(Bytes::from(buf))
    }

    /// The range without its first `n` bytes.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.offset += n as u64;
        self.len -= n;
    }
}

/// Bytes to send: in memory, or a file range the kernel sends.
#[derive(Debug, Clone)]
pub enum Payload {
    Bytes(Bytes),
    File(FileRange),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Bytes(Bytes::new())
    }
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(bytes) => bytes.len(),
            Payload::File(range) => range.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `len` bytes (fetch sizing cuts a read to the answer's limits).
    pub fn truncate(&mut self, len: usize) {
        match self {
            Payload::Bytes(bytes) => bytes.truncate(len),
            Payload::File(range) => range.len = range.len.min(len),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Bytes(bytes)
    }
}
