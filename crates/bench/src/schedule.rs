//! Open-loop pacing. Every record has an intended send time fixed before the run starts
//! (`start + index / rate`); latency is measured from that time, not from the moment the record
//! was handed to the client. A generator that falls behind (a slow broker, a full queue) sends at
//! once but keeps measuring from the schedule, so the stall shows in the latency instead of
//! silently lowering the offered load (coordinated omission). Without a rate the run is closed
//! loop: each record's intended time is simply when it was sent.
//!
//! Producers on several threads share one schedule through `Tickets`, which hands out record
//! indexes and decides when the run is over (a record count or a duration, after a warm-up whose
//! records are sent but not measured).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this many measured records.
    Records(u64),
    /// When intended send times reach this far past the warm-up.
    Duration(Duration),
}

/// The fixed timetable of one run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Intended send time of record 0.
    pub start: Instant,
    /// Gap between intended send times; `None` sends as fast as the client accepts.
    interval: Option<Duration>,
    /// Records intended before this instant are warm-up: sent, not measured.
    pub measure_from: Instant,
    limit: Limit,
}

impl Schedule {
    /// A timetable starting now at `rate` records/s in total (`None`: unpaced).
    pub fn new(rate: Option<f64>, warmup: Duration, limit: Limit) -> Schedule {
        Schedule::starting_at(Instant::now(), rate, warmup, limit)
    }

    pub fn starting_at(
        start: Instant,
        rate: Option<f64>,
        warmup: Duration,
        limit: Limit,
    ) -> Schedule {
        Schedule {
            start,
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            measure_from: start + warmup,
            limit,
        }
    }

    /// When record `index` is meant to be sent: on the timetable when paced, `now` otherwise.
    pub fn intended(&self, index: u64, now: Instant) -> Instant {
        match self.interval {
            // Multiplying the nanoseconds keeps rounding from accumulating over long runs.
            Some(interval) => {
                let nanos = interval.as_nanos().saturating_mul(index as u128);
                self.start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
            }
            None => now,
        }
    }

    /// Whether a record intended at `intended` counts in the results (it is past the warm-up).
    pub fn is_measured(&self, intended: Instant) -> bool {
        intended >= self.measure_from
    }

    /// Whether a record intended at `intended` is past the end of a timed run.
    fn is_past_end(&self, intended: Instant) -> bool {
        match self.limit {
            Limit::Duration(d) => intended >= self.measure_from + d,
            Limit::Records(_) => false,
        }
    }

    /// Sleeps until the ticket's intended send time when paced; unpaced tickets are due when
    /// taken, so this reads no clock for them (it would be one more read per record).
    pub fn wait_for(&self, ticket: &Ticket) {
        if self.interval.is_some() {
            wait_until(ticket.intended);
        }
    }
}

/// A fixed instant, taken before any client starts, that lets an intended send time travel as
/// nanoseconds: in a delivery opaque, or in a record's value for the end-to-end workload.
#[derive(Debug, Clone, Copy)]
pub struct Epoch(Instant);

impl Epoch {
    pub fn now() -> Epoch {
        Epoch(Instant::now())
    }

    pub fn instant(&self) -> Instant {
        self.0
    }

    pub fn encode(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.0).as_nanos() as u64
    }

    pub fn decode(&self, nanos: u64) -> Instant {
        self.0 + Duration::from_nanos(nanos)
    }
}

/// Sleeps until `intended`; returns at once when already past it (behind schedule).
fn wait_until(intended: Instant) {
    let now = Instant::now();
    if intended > now {
        std::thread::sleep(intended - now);
    }
}

/// Latency of a record intended at `intended` and completed at `done`.
pub fn latency(intended: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(intended)
}

/// One record to send: its index in the run and its intended send time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    pub index: u64,
    pub intended: Instant,
}

/// Hands out the records of one run to the producer threads, in schedule order.
#[derive(Debug, Default)]
pub struct Tickets {
    next: AtomicU64,
    measured: AtomicU64,
}

impl Tickets {
    /// The next record to send, or `None` when the run is over.
    pub fn take(&self, schedule: &Schedule) -> Option<Ticket> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let intended = schedule.intended(index, Instant::now());
        if schedule.is_past_end(intended) {
            return None;
        }
        if let Limit::Records(n) = schedule.limit {
            if schedule.is_measured(intended) && self.measured.fetch_add(1, Ordering::Relaxed) >= n
            {
                return None;
            }
        }
        Some(Ticket { index, intended })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn paced_records_are_intended_on_a_fixed_timetable() {
        let start = Instant::now();
        let s = Schedule::starting_at(start, Some(1000.0), Duration::ZERO, Limit::Records(10));
        let late = start + 60 * MS;
        assert_eq!(s.intended(0, late), start);
        assert_eq!(s.intended(1, late), start + MS);
        assert_eq!(s.intended(250, late), start + 250 * MS);
    }

    #[test]
    fn a_generator_behind_schedule_measures_from_the_intended_time() {
        let start = Instant::now();
        let s = Schedule::starting_at(start, Some(1000.0), Duration::ZERO, Limit::Records(100));
        // Record 10 was due at 10 ms; a stall let it out at 50 ms and it was acked at 51 ms.
        let sent = start + 50 * MS;
        let acked = start + 51 * MS;
        let intended = s.intended(10, sent);
        assert_eq!(latency(intended, acked), 41 * MS);
    }

    #[test]
    fn unpaced_records_are_intended_when_sent() {
        let start = Instant::now();
        let s = Schedule::starting_at(start, None, Duration::ZERO, Limit::Records(10));
        let now = start + 7 * MS;
        assert_eq!(s.intended(123, now), now);
        assert_eq!(latency(now, now + 2 * MS), 2 * MS);
    }

    #[test]
    fn a_record_limit_counts_only_records_after_the_warmup() {
        // 1000 records/s with 5 ms of warm-up: records 0..5 are warm-up, then 3 measured.
        let start = Instant::now() + Duration::from_secs(3600);
        let s = Schedule::starting_at(start, Some(1000.0), 5 * MS, Limit::Records(3));
        let tickets = Tickets::default();
        let taken: Vec<_> = std::iter::from_fn(|| tickets.take(&s)).collect();
        assert_eq!(taken.len(), 8);
        assert_eq!(
            taken.iter().filter(|t| s.is_measured(t.intended)).count(),
            3
        );
        assert_eq!(taken.last().unwrap().intended, start + 7 * MS);
    }

    #[test]
    fn a_duration_limit_stops_at_the_first_record_due_after_it() {
        let start = Instant::now() + Duration::from_secs(3600);
        let s = Schedule::starting_at(start, Some(1000.0), 2 * MS, Limit::Duration(10 * MS));
        let tickets = Tickets::default();
        let count = std::iter::from_fn(|| tickets.take(&s)).count();
        assert_eq!(
            count, 12,
            "2 ms of warm-up and 10 ms measured at 1 record/ms"
        );
    }

    #[test]
    fn intended_times_survive_the_trip_through_nanoseconds() {
        let epoch = Epoch::now();
        let start = epoch.instant() + 3 * MS;
        let s = Schedule::starting_at(start, Some(5000.0), Duration::ZERO, Limit::Records(1));
        let t = s.intended(12_345, start);
        assert_eq!(epoch.decode(epoch.encode(t)), t);
    }
}
