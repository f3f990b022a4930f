//! The progress bar on stderr while a workload runs: how far it is towards its goal (a record
//! count or a duration), elapsed time, the rate over the last interval, p99 so far, records and
//! errors. Rewritten in place on a terminal, one line per interval otherwise (`--progress` into
//! a file or pipe).

use std::io::{IsTerminal, Write};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::limits::{PROGRESS_BAR_CELLS, PROGRESS_INTERVAL};
use super::recorder::Recorder;
use super::schedule::Limit;

/// Where a run ends, for the bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// When the recorder holds this many records.
    Records(u64),
    /// This long after the progress started (warm-up included).
    Time(Duration),
}

impl Goal {
    /// The goal of a run that sends for `warmup`, then until `limit`.
    pub fn of(limit: Limit, warmup: Duration) -> Goal {
        match limit {
            Limit::Records(n) => Goal::Records(n),
            Limit::Duration(d) => Goal::Time(warmup + d),
        }
    }

    /// How much of the way is done, from 0 to 1.
    fn fraction(self, elapsed: Duration, records: u64) -> f64 {
        let done = match self {
            Goal::Records(0) => 1.0,
            Goal::Records(n) => records as f64 / n as f64,
            Goal::Time(t) if t.is_zero() => 1.0,
            Goal::Time(t) => elapsed.as_secs_f64() / t.as_secs_f64(),
        };
        done.clamp(0.0, 1.0)
    }
}

/// Runs `work` on this thread while another prints progress towards `goal` from `recorder`
/// (when `enabled`).
pub fn show<T>(
    enabled: bool,
    goal: Goal,
    recorder: &Mutex<Recorder>,
    work: impl FnOnce() -> T,
) -> T {
    if !enabled {
        return work();
    }
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|scope| {
        scope.spawn(|| print_until(&done, goal, recorder));
        let result = work();
        *done.0.lock().unwrap() = true;
        done.1.notify_all();
        result
    })
}

fn print_until(done: &(Mutex<bool>, Condvar), goal: Goal, recorder: &Mutex<Recorder>) {
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
                line(goal, started.elapsed(), r.records - last_records, &r),
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
fn line(goal: Goal, elapsed: Duration, recent: u64, recorder: &Recorder) -> String {
    let fraction = goal.fraction(elapsed, recorder.records);
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
        "{} {:3.0}% {:7.1} s  {rate:>10.0} msgs/s  p99 {p99}  {} records  {} errors",
        bar(fraction),
        fraction * 100.0,
        elapsed.as_secs_f64(),
        recorder.records,
        recorder.errors
    )
}

/// `[#####     ]`, `PROGRESS_BAR_CELLS` wide, filled by `fraction`.
fn bar(fraction: f64) -> String {
    let filled = (fraction * PROGRESS_BAR_CELLS as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled),
        " ".repeat(PROGRESS_BAR_CELLS - filled)
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
        let text = line(Goal::Records(4), Duration::from_secs(2), 500, &r);
        assert!(text.contains("500 msgs/s"), "{text}");
        assert!(text.contains("p99 3.00 ms"), "{text}");
        assert!(text.contains("1 records  1 errors"), "{text}");
    }

    #[test]
    fn the_bar_fills_towards_a_record_count_or_a_duration() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        for _ in 0..3 {
            r.completed(origin, origin, 1);
        }
        let text = line(Goal::Records(4), Duration::from_secs(1), 3, &r);
        let half = "#".repeat(PROGRESS_BAR_CELLS * 3 / 4);
        assert!(text.starts_with(&format!("[{half} ")), "{text}");
        assert!(text.contains(" 75% "), "{text}");

        let goal = Goal::of(
            Limit::Duration(Duration::from_secs(30)),
            Duration::from_secs(10),
        );
        assert_eq!(goal, Goal::Time(Duration::from_secs(40)));
        let text = line(goal, Duration::from_secs(10), 0, &r);
        assert!(text.contains(" 25% "), "{text}");
        let text = line(goal, Duration::from_secs(50), 0, &r);
        assert!(text.starts_with(&bar(1.0)), "{text}");
        assert!(text.contains("100% "), "{text}");
    }
}
