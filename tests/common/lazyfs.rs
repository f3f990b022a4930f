//! A disk that can lose power: a LazyFS mount (third_party/lazyfs, built by
//! `scripts/build-lazyfs`). LazyFS is a FUSE file system with a page cache of its own: what a
//! process writes reaches the directory underneath only when it is synced, and `power_loss`
//! drops everything that was not, as a power cut drops the kernel's dirty pages. A broker whose
//! data dir is `path()` and that is killed (-9) together with a `power_loss` restarts on exactly
//! what it had made durable.
//!
//! Needs root (FUSE), the fuse3 package and what `scripts/build-lazyfs` says it needs; `mount`
//! says what is missing. Each mount lives under a directory named after the test's process id;
//! a mount left by a test process that is gone (killed before dropping its `LazyFs`) is
//! unmounted by the next `mount`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long LazyFS may take to mount, or to confirm that it dropped its unsynced data.
const LAZYFS_WAIT_MAX: Duration = Duration::from_secs(30);

/// The prefix of each mount's directory, followed by the test's process id.
const MOUNT_DIR_PREFIX: &str = "sluice-lazyfs-";

pub struct LazyFs {
    daemon: Child,
    dir: PathBuf,
    /// Where fault commands are written (LazyFS reads this FIFO).
    commands: PathBuf,
    /// The lines LazyFS writes once a command is done.
    done: Receiver<String>,
}

impl LazyFs {
    /// Mounts a fresh LazyFS named `name`: empty, its synced data kept in a directory beside
    /// the mount point.
    pub fn mount(name: &str) -> Result<LazyFs, String> {
        let binary = build()?;
        super::tmpfs::unmount_orphans(MOUNT_DIR_PREFIX);
        let dir =
            std::env::temp_dir().join(format!("{MOUNT_DIR_PREFIX}{}-{name}", std::process::id()));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("mnt"))
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["lower", "mnt"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        let (commands, done) = (dir.join("commands.fifo"), dir.join("done.fifo"));
        let config = dir.join("lazyfs.toml");
        std::fs::write(&config, config_text(&commands, &done)).map_err(|e| e.to_string())?;
        let log = File::create(dir.join("lazyfs.log")).map_err(|e| e.to_string())?;
        let subdir = format!("subdir={}", dir.join("lower").display());
        let daemon = Command::new(&binary)
            .arg(dir.join("mnt"))
            .arg("--config-path")
            .arg(&config)
            .args([
                "-o",
                "allow_other",
                "-o",
                "modules=subdir",
                "-o",
                &subdir,
                "-f",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let mut lazyfs = LazyFs {
            daemon,
            dir,
            commands,
            done: mpsc::channel().1,
        };
        lazyfs.wait_mounted()?;
        lazyfs.done = read_lines(lazyfs.dir.join("done.fifo"));
        Ok(lazyfs)
    }

    /// The mount point: what a broker's data dir should be.
    pub fn path(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Drops every write that was not synced, and waits until LazyFS says it has.
    pub fn power_loss(&self) {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.commands)
            .expect("LazyFS's command FIFO");
        fifo.write_all(b"lazyfs::clear-cache\n").unwrap();
        let said = self.done.recv_timeout(LAZYFS_WAIT_MAX);
        assert_eq!(
            said.as_deref(),
            Ok("finished::clear-cache"),
            "LazyFS did not confirm the power loss; its log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lazyfs.log")).unwrap_or_default()
    }

    fn wait_mounted(&mut self) -> Result<(), String> {
        let mount = self.path();
        let deadline = Instant::now() + LAZYFS_WAIT_MAX;
        while !is_mounted(&mount) {
            if let Ok(Some(status)) = self.daemon.try_wait() {
                return Err(format!("LazyFS exited with {status}:\n{}", self.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!("LazyFS did not mount:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // Lazily: a broker still running on it (a test that failed) keeps it until it exits.
        let _ = Command::new("umount").arg("-l").arg(self.path()).output();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// LazyFS's configuration: the two FIFOs, a cache that never evicts (so nothing unsynced
/// reaches the directory underneath before a sync), no operation log.
fn config_text(commands: &Path, done: &Path) -> String {
    format!(
        "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
         [cache]\napply_eviction=false\n\
         [cache.simple]\ncustom_size=\"1gb\"\nblocks_per_page=1\n\
         [filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
        commands.display(),
        done.display()
    )
}

/// The binary, built first if need be.
fn build() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-lazyfs");
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Reads the lines LazyFS writes to the FIFO at `path`, on a thread of its own: opening a FIFO
/// for reading waits for its writer, which LazyFS opens once it runs.
fn read_lines(path: PathBuf) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok(fifo) = File::open(&path) else {
            return;
        };
        for line in BufReader::new(fifo).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = path.display().to_string();
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(path.as_str()))
}
