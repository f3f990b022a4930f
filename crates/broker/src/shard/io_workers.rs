//! How many blocking file operations io_uring runs at once for one shard: runs on each shard's
//! own thread, once, as the shard starts.
//!
//! io_uring cannot complete a buffered write or an fdatasync on ext4 without blocking, so it
//! hands them to kernel worker threads (io-wq), one pool per thread that submits. Linux sizes
//! that pool when the thread creates its first ring: at most that ring's submission entries, and
//! at most four per CPU. glommio probes the kernel's io_uring operations once per process with a
//! ring of 2 entries, on whichever executor thread starts first. That thread's pool was capped
//! at 2 workers: on a 2-core machine shard 0 ran 2 of its partitions' group commits at a time
//! while shard 1 ran 8, and shard 0's flushes took 65-74 ms against shard 1's 16-22 ms under P1
//! (`sluice_flush_seconds`). Setting the bound explicitly gives every shard the same one.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::libc;

use crate::limits::SHARD_BLOCKING_IO_WORKERS_MAX;

/// `IORING_REGISTER_IOWQ_MAX_WORKERS` from `<linux/io_uring.h>` (Linux 5.15).
const IORING_REGISTER_IOWQ_MAX_WORKERS: libc::c_uint = 19;

/// `sizeof(struct io_uring_params)`: the setup call only reads and fills it.
const IO_URING_PARAMS_BYTES: usize = 120;

/// Sets the calling thread's bound on io_uring workers for blocking file operations to
/// `SHARD_BLOCKING_IO_WORKERS_MAX` and leaves the bound for other work (sockets) as it is.
pub fn set_blocking_workers_bound() -> std::io::Result<()> {
    // The pool belongs to the thread, not to a ring: registering through a ring of one entry
    // made for the purpose sets it for glommio's rings too.
    let ring = one_entry_ring()?;
    let mut bounds = [SHARD_BLOCKING_IO_WORKERS_MAX, 0];
    register_worker_bounds(&ring, &mut bounds)
}

fn one_entry_ring() -> std::io::Result<OwnedFd> {
    let mut params = [0u8; IO_URING_PARAMS_BYTES];
    // SAFETY: io_uring_setup reads and writes `params`, which is as large as the kernel's struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            params.as_mut_ptr(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn register_worker_bounds(ring: &OwnedFd, bounds: &mut [libc::c_uint; 2]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: IORING_REGISTER_IOWQ_MAX_WORKERS reads and writes exactly two u32s.
    let result = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_IOWQ_MAX_WORKERS,
            bounds.as_mut_ptr(),
            2 as libc::c_uint,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    /// The calling thread's current bounds: [blocking file operations, other work].
    fn worker_bounds() -> std::io::Result<[libc::c_uint; 2]> {
        let ring = one_entry_ring()?;
        // Zeros ask without changing anything; the kernel writes the current values back.
        let mut bounds = [0, 0];
        register_worker_bounds(&ring, &mut bounds)?;
        Ok(bounds)
    }

    #[test]
    fn every_executor_thread_gets_the_same_bound_whichever_started_first() {
        // Two executors one after the other: glommio's small probe ring lands on the first.
        let bounds: Vec<[u32; 2]> = (0..2)
            .map(|_| {
                LocalExecutorBuilder::default()
                    .spawn(|| async {
                        set_blocking_workers_bound().unwrap();
                        worker_bounds().unwrap()
                    })
                    .unwrap()
                    .join()
                    .unwrap()
            })
            .collect();
        for [blocking, _] in bounds {
            assert_eq!(blocking, SHARD_BLOCKING_IO_WORKERS_MAX);
        }
    }
}
