//! Hands memory the allocator keeps but nobody uses back to the operating system. Runs on a
//! thread of its own, not on any shard.
//!
//! glibc's malloc gives each thread that allocates an arena and never returns the free middle of
//! an arena's heaps on its own: a burst of produce traffic (request frames, pending write
//! buffers of a few MiB each) left a 2-shard broker resident at 2.8 GiB while it held 56 MiB in
//! live allocations, for good. Every `sluice.memory.release.interval.ms` this thread compares the
//! process's anonymous resident memory with what the allocator has handed out. When the free
//! part passes `FREE_MEMORY_RELEASE_MIN_BYTES` and also what is in use, it calls `malloc_trim`,
//! which drops the free pages of every arena (`MADV_DONTNEED`): resident memory stays within
//! about twice the live allocations. A shard whose arena is being trimmed waits for it on its
//! next allocation (40-180 ms for 0.35-2 GiB of free memory on the development VM), so trims are
//! kept for when a load has passed: under a steady load, buffers are freed and reallocated all
//! the time and the free part stays below the live one. Where no such pause is acceptable,
//! `sluice.memory.release.interval.ms=0` turns the thread off.

use std::time::{Duration, Instant};

use crate::limits::FREE_MEMORY_RELEASE_MIN_BYTES;

/// What one release did, for the log line and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Bytes in live allocations when the trim started.
    pub allocated_bytes: u64,
    pub resident_before_bytes: u64,
    pub resident_after_bytes: u64,
    pub took: Duration,
}

/// Starts the thread that looks for free memory to release every `interval`, for the life of
/// the process.
pub fn start_releasing(interval: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("memory".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            if let Some(released) = release_unused(FREE_MEMORY_RELEASE_MIN_BYTES) {
                tracing::debug!(
                    "released free memory: resident {} MiB ({} MiB allocated) -> {} MiB in {} ms",
                    released.resident_before_bytes >> 20,
                    released.allocated_bytes >> 20,
                    released.resident_after_bytes >> 20,
                    released.took.as_millis()
                );
            }
        })?;
    Ok(())
}

/// Trims the allocator when the resident memory no allocation uses is more than `min_bytes`
/// and more than what allocations use; `None` when it is not (or the resident size cannot be
/// read).
pub fn release_unused(min_bytes: u64) -> Option<Released> {
    let resident_before_bytes = anonymous_resident_bytes()?;
    let allocated_bytes = allocated_bytes();
    let free_bytes = resident_before_bytes.saturating_sub(allocated_bytes);
    if free_bytes <= min_bytes || free_bytes <= allocated_bytes {
        return None;
    }
    let started = Instant::now();
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the kernel;
    // it takes each arena's lock, so allocations on other threads simply wait for it.
    unsafe { nix::libc::malloc_trim(0) };
    Some(Released {
        allocated_bytes,
        resident_before_bytes,
        resident_after_bytes: anonymous_resident_bytes()?,
        took: started.elapsed(),
    })
}

/// Bytes the allocator has handed out and not had back: small allocations in its arenas plus
/// the large ones it mapped on their own.
fn allocated_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics (under its arena locks).
    let info = unsafe { nix::libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

/// The process's resident memory that is not backed by files (`RssAnon` in /proc/self/status).
pub fn anonymous_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
