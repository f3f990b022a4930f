//! What a test that overran its time limit was doing. The test runner (cargo-nextest, see
//! `.config/nextest.toml`) ends such a test with SIGTERM; this module catches it and prints the
//! stacks of every thread of the test process (a hung client call shows up there) and, for each
//! broker the test still runs, its threads and the tail of its log, before the process exits. A
//! hang then fails in minutes with its cause in the output instead of eating CI's time limit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Lines of each broker log printed after an overrun.
const LOG_TAIL_LINES: usize = 80;
/// Frames printed per thread.
const STACK_FRAMES_MAX: usize = 40;

/// The write end of the pipe the SIGTERM handler wakes the reporting thread through.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The brokers the test runs now: (pid, log file).
static BROKERS: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

/// Installs the SIGTERM report once per process.
pub fn report_on_sigterm() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let (read_end, write_end) = nix::unistd::pipe().expect("a pipe");
        WAKE_FD.store(
            std::os::fd::IntoRawFd::into_raw_fd(write_end),
            Ordering::SeqCst,
        );
        std::thread::Builder::new()
            .name("overrun-report".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                if std::fs::File::from(read_end).read_exact(&mut byte).is_ok() {
                    report();
                    std::process::exit(1);
                }
            })
            .expect("a reporting thread");
        let action = SigAction::new(
            SigHandler::Handler(on_sigterm),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only calls write(2), which is async-signal-safe.
        unsafe { sigaction(Signal::SIGTERM, &action) }.expect("a SIGTERM handler");
    });
}

extern "C" fn on_sigterm(_: nix::libc::c_int) {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    // SAFETY: writes one byte from a static buffer to a descriptor this module owns.
    unsafe { nix::libc::write(fd, b"!".as_ptr().cast(), 1) };
}

/// Remembers a running broker, to report on it.
pub fn broker_started(pid: u32, log: &Path) {
    BROKERS.lock().unwrap().push((pid, log.to_path_buf()));
}

/// Forgets a broker that stopped.
pub fn broker_stopped(pid: u32) {
    BROKERS.lock().unwrap().retain(|(p, _)| *p != pid);
}

fn report() {
    eprintln!("\n=== the test overran its time limit; the test process's threads:");
    eprintln!("{}", stacks(std::process::id()));
    let brokers = BROKERS.lock().map(|b| b.clone()).unwrap_or_default();
    for (pid, log) in brokers {
        eprintln!("=== broker {pid}: threads");
        eprintln!("{}", thread_dump(pid));
        eprintln!(
            "=== broker {pid}: last {LOG_TAIL_LINES} lines of {}",
            log.display()
        );
        eprintln!("{}", tail(&log, LOG_TAIL_LINES));
    }
}

/// User-space stacks of every thread of `pid`, from gdb (installed by scripts/test).
pub fn stacks(pid: u32) -> String {
    let backtrace = format!("thread apply all bt {STACK_FRAMES_MAX}");
    match Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string(), "-ex", &backtrace])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(err) => format!("(no stacks: gdb did not run: {err})"),
    }
}

/// Each thread of `pid` with its state and kernel wait channel from /proc, then its stacks.
pub fn thread_dump(pid: u32) -> String {
    let mut dump = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path();
            let read = |name: &str| {
                std::fs::read_to_string(path.join(name))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let stat = read("stat");
            // The state follows the parenthesised name: "pid (comm) S ...".
            let state = stat.rsplit(") ").next().unwrap_or("").split(' ').next();
            dump += &format!(
                "{} {:?} state {} wchan {} {}\n",
                task.file_name().to_string_lossy(),
                read("comm"),
                state.unwrap_or("?"),
                read("wchan"),
                read("schedstat"),
            );
        }
    }
    dump + &stacks(pid)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
