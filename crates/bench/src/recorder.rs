//! What a run measured: a latency histogram of every measured record (microseconds, from
//! hdrhistogram), counts of records, bytes and errors, and a timeline of fixed-width slots for
//! the over-time plots. One `Recorder` is shared (behind a mutex) by the threads of one side of a
//! run: the producers' delivery callbacks, or the consumers.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::limits::{
    LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS, SLOT_SIGNIFICANT_DIGITS, SLOT_WIDTH_START,
    TIMELINE_SLOTS_MAX,
};

/// A histogram of latencies in microseconds, from 1 us to `LATENCY_MAX_US`.
pub fn latency_histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, significant_digits)
        .expect("the latency bounds are valid")
}

/// Records one latency, rounding below 1 us up to it and clamping above the top.
fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(1));
}

/// The records of one time slot.
#[derive(Debug, Clone)]
pub struct Slot {
    pub records: u64,
    /// Latencies, when the run measures any.
    pub latency: Option<Histogram<u64>>,
}

/// Slots of equal width from the start of the measurement, for plots over time.
#[derive(Debug, Clone)]
pub struct Timeline {
    width: Duration,
    slots: Vec<Slot>,
}

impl Default for Timeline {
    fn default() -> Timeline {
        Timeline {
            width: SLOT_WIDTH_START,
            slots: Vec::new(),
        }
    }
}

impl Timeline {
    pub fn width(&self) -> Duration {
        self.width
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot holding `offset` after the start, created (and the timeline coarsened) as needed.
    fn slot(&mut self, offset: Duration) -> &mut Slot {
        let mut index = (offset.as_nanos() / self.width.as_nanos()) as usize;
        while index >= TIMELINE_SLOTS_MAX {
            self.coarsen();
            index /= 2;
        }
        if self.slots.len() <= index {
            let empty = Slot {
                records: 0,
                latency: None,
            };
            self.slots.resize(index + 1, empty);
        }
        &mut self.slots[index]
    }

    /// Merges neighbouring slots, doubling the width.
    fn coarsen(&mut self) {
        let merged = self.slots.chunks(2).map(merge_slots).collect();
        self.slots = merged;
        self.width *= 2;
    }

    fn add(&mut self, offset: Duration, records: u64, latency: Option<Duration>) {
        let slot = self.slot(offset);
        slot.records += records;
        if let Some(latency) = latency {
            let histogram = slot
                .latency
                .get_or_insert_with(|| latency_histogram(SLOT_SIGNIFICANT_DIGITS));
            record_latency(histogram, latency);
        }
    }
}

fn merge_slots(pair: &[Slot]) -> Slot {
    let mut merged = pair[0].clone();
    for other in &pair[1..] {
        merged.records += other.records;
        match (&mut merged.latency, &other.latency) {
            (Some(mine), Some(theirs)) => mine.add(theirs).expect("same bounds"),
            (mine @ None, Some(theirs)) => *mine = Some(theirs.clone()),
            (_, None) => {}
        }
    }
    merged
}

/// Everything one side of a run measured.
#[derive(Debug)]
pub struct Recorder {
    /// Start of the measurement (the end of the warm-up): timeline offsets count from here.
    pub origin: Instant,
    pub latency: Histogram<u64>,
    pub timeline: Timeline,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    /// When the last measured record completed.
    pub last: Option<Instant>,
}

impl Recorder {
    pub fn new(origin: Instant) -> Recorder {
        Recorder {
            origin,
            latency: latency_histogram(LATENCY_SIGNIFICANT_DIGITS),
            timeline: Timeline::default(),
            records: 0,
            bytes: 0,
            errors: 0,
            last: None,
        }
    }

    /// A record intended at `intended` completed (acknowledged or received) at `done`. Records
    /// intended before the origin are warm-up and ignored; the slot is the intended time's, so a
    /// stall shows where the delayed records were meant to go.
    pub fn completed(&mut self, intended: Instant, done: Instant, bytes: usize) {
        let Some(offset) = intended.checked_duration_since(self.origin) else {
            return;
        };
        let latency = super::schedule::latency(intended, done);
        record_latency(&mut self.latency, latency);
        self.timeline.add(offset, 1, Some(latency));
        self.count(done, 1, bytes as u64);
    }

    /// `records` records of `bytes` in all arrived at `at`, with no latency to measure (a
    /// catch-up read, where the records were written long before).
    pub fn arrived(&mut self, at: Instant, records: u64, bytes: u64) {
        let offset = at.saturating_duration_since(self.origin);
        self.timeline.add(offset, records, None);
        self.count(at, records, bytes);
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    fn count(&mut self, at: Instant, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// Time from the origin to the last completion.
    pub fn elapsed(&self) -> Duration {
        self.last.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(self.origin)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn warmup_records_are_not_measured() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin + 100 * MS);
        r.completed(origin, origin + 5 * MS, 10);
        r.completed(origin + 100 * MS, origin + 103 * MS, 10);
        assert_eq!((r.records, r.bytes), (1, 10));
        assert!(r.latency.equivalent(r.latency.max(), 3000));
        assert_eq!(r.elapsed(), 3 * MS);
    }

    #[test]
    fn records_land_in_the_slot_of_their_intended_time() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        r.completed(origin + 500 * MS, origin + 2600 * MS, 1);
        r.completed(origin + 1500 * MS, origin + 1501 * MS, 1);
        let slots = r.timeline.slots();
        assert_eq!(slots.len(), 2);
        let first = slots[0].latency.as_ref().unwrap();
        assert!(first.equivalent(first.max(), 2_100_000), "{}", first.max());
        assert_eq!(slots[1].records, 1);
    }

    #[test]
    fn a_long_run_coarsens_the_timeline_instead_of_growing_it() {
        let origin = Instant::now();
        let mut r = Recorder::new(origin);
        let seconds = 3 * TIMELINE_SLOTS_MAX as u64;
        for s in 0..seconds {
            r.arrived(origin + Duration::from_secs(s), 2, 2);
        }
        let t = &r.timeline;
        assert!(t.slots().len() <= TIMELINE_SLOTS_MAX);
        assert_eq!(t.width(), SLOT_WIDTH_START * 4);
        assert_eq!(
            t.slots().iter().map(|s| s.records).sum::<u64>(),
            2 * seconds
        );
    }
}
