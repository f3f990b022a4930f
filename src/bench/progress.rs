//! The progress line on stderr while a workload runs: elapsed time, the rate over the last
//! interval, p99 so far, records and errors. Rewritten in place on a terminal, one line per
//! interval otherwise (`--progress` into a file or pipe).

use std::io::{IsTerminal, Write};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::limits::PROGRESS_INTERVAL;
use super::recorder::Recorder;

/// Runs `work` on this thread while another prints progress from `recorder` (when `enabled`).
pub fn show<T>(enabled: bool, recorder: &Mutex<Recorder>, work: impl FnOnce() -> T) -> T {
    if !enabled {
        return work();
    }
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|scope| {
        scope.spawn(|| print_until(&done, recorder));
        let result = work();
        *done.0.lock().unwrap() = true;
        done.1.notify_all();
        result
    })
}

fn print_until(done: &(Mutex<bool>, Condvar), recorder: &Mutex<Recorder>) {
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_records = 0;
    let mut finished = done.0.lock().unwrap();
    while !*finished {
        finished = done.1.wait_timeout(finished, PROGRESS_INTERVAL).unwrap().0;
        let (records, line) = {
            let r = recorder.lock().unwrap();
            (
                r.records,
                line(started.elapsed(), r.records - last_records, &r),
            )
        };
        last_records = records;
        let mut stderr = std::io::stderr().lock();
        // Write errors on stderr are ignored: progress is a courtesy.
        let _ = if terminal {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
    }
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
}

/// One progress line; `recent` records arrived in the last interval.
fn line(elapsed: Duration, recent: u64, recorder: &Recorder) -> String {
    let rate = recent as f64 / PROGRESS_INTERVAL.as_secs_f64();
    let p99 = if recorder.latency.is_empty() {
        "-".to_string()
    } else {
        format!(
            "{:.2} ms",
            recorder.latency.value_at_quantile(0.99) as f64 / 1000.0
        )
    };
    format!(
        "{:7.1} s  {rate:>10.0} msgs/s  p99 {p99}  {} records  {} errors",
        elapsed.as_secs_f64(),
        recorder.records,
        recorder.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_shows_rate_p99_and_counts() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        r.completed(origin, origin + Duration::from_millis(3), 1024);
        r.error();
        let text = line(Duration::from_secs(2), 500, &r);
        assert!(text.contains("500 msgs/s"), "{text}");
        assert!(text.contains("p99 3.00 ms"), "{text}");
        assert!(text.contains("1 records  1 errors"), "{text}");
    }
}
