//! A small disk that can fill up for real: a tmpfs of a fixed size. `fill` takes every byte it
//! has left (a file allocated beside the broker's data), so the broker's next write fails with
//! ENOSPC as on a full disk; `drain` gives the space back.
//!
//! Mounting needs root (CAP_SYS_ADMIN). A disk made by `named` lives under a directory named
//! after the test's process id; one left by a test process that is gone (killed before dropping
//! its `Tmpfs`) is unmounted by the next `named`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The prefix of each named disk's directory, followed by the test's process id.
const MOUNT_DIR_PREFIX: &str = "sluice-tmpfs-";
/// The file `fill` allocates, at the disk's root (a broker's data lives in `data/`).
const FILLER: &str = "filler";

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `dir` (which exists); `None` if it cannot (not root).
    pub fn mount(dir: &Path, mib: usize) -> Option<Tmpfs> {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "sluice-test"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Mounts a fresh tmpfs of `mib` MiB named `name`, in a directory of this test process.
    pub fn named(name: &str, mib: usize) -> Result<Tmpfs, String> {
        unmount_orphans(MOUNT_DIR_PREFIX);
        let dir =
            std::env::temp_dir().join(format!("{MOUNT_DIR_PREFIX}{}-{name}", std::process::id()));
        let _ = Command::new("umount").arg("-l").arg(&dir).output();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let disk = Tmpfs::mount(&dir, mib)
            .ok_or_else(|| format!("mounting a tmpfs at {} (root?)", dir.display()))?;
        std::fs::create_dir_all(disk.data()).map_err(|e| e.to_string())?;
        Ok(disk)
    }

    /// Where a broker keeps its data on this disk.
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }

    pub fn resize(&self, mib: usize) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remounting {}", self.0.display());
    }

    /// Allocates every byte the disk has left, so that the next write that needs a page fails;
    /// the bytes it took. Writers race it, so it tries again with what is left then.
    pub fn fill(&self) -> u64 {
        let filler = self.0.join(FILLER);
        let mut taken = 0;
        for _ in 0..10 {
            let free = self.free_bytes();
            if free == 0 {
                break;
            }
            let allocated = Command::new("fallocate")
                .args(["-o", &taken.to_string(), "-l", &free.to_string()])
                .arg(&filler)
                .output()
                .is_ok_and(|o| o.status.success());
            if allocated {
                taken += free;
            }
        }
        taken
    }

    /// Gives back what `fill` took.
    pub fn drain(&self) {
        let _ = std::fs::remove_file(self.0.join(FILLER));
    }

    fn free_bytes(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.0)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Unmounts what is mounted under a directory of the temp dir named `<prefix><pid>-...` by a
/// test process `pid` that is gone.
pub fn unmount_orphans(prefix: &str) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = std::env::temp_dir().join(prefix).display().to_string();
    for point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = point.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        let gone = pid
            .parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            let _ = Command::new("umount").arg("-l").arg(point).output();
        }
    }
}
