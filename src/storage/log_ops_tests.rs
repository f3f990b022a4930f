//! Random operation sequences against a model of the log: appends whose timestamps sometimes go
//! back (producers' clocks differ), flushes, rolls, truncations, power losses that tear unsynced
//! writes, and clean stops, each stop followed by a reopen. Whenever everything is flushed, every
//! batch reads back at its offsets and every lookup by timestamp answers what the model says:
//! the first record at or after the timestamp, with its batch's largest timestamp.

use super::*;

/// What the log holds: each batch's base offset and its records' timestamps, in offset order.
#[derive(Default)]
struct Appended(Vec<(Offset, Vec<i64>)>);

impl Appended {
    fn end(&self) -> Offset {
        self.0
            .last()
            .map(|(base, ts)| base.next(ts.len() as i64))
            .unwrap_or(Offset(0))
    }

    /// Keeps the batches below `end`, which must be a batch boundary.
    fn cut(&mut self, end: Offset) {
        self.0.retain(|(base, _)| *base < end);
        assert_eq!(self.end(), end, "the log ends on a batch boundary");
    }

    /// The first record with a timestamp of at least `target`, and its batch's largest.
    fn lookup(&self, target: i64) -> Option<(Offset, i64)> {
        self.0.iter().find_map(|(base, timestamps)| {
            let i = timestamps.iter().position(|&t| t >= target)?;
            Some((base.next(i as i64), *timestamps.iter().max().unwrap()))
        })
    }

    fn as_model(&self) -> Model {
        let batches = self
            .0
            .iter()
            .map(|(base, ts)| (*base, ts.len() as i32, ts[0]))
            .collect();
        Model { batches }
    }
}

/// Appends 1-4 batches of 1-5 records; each batch's first timestamp moves from the last one by
/// -50..+100 ms (a record's timestamp is its batch's first plus its index).
fn append_some(log: &mut Log<MemStorage>, appended: &mut Appended, rng: &mut Rng, ts: &mut i64) {
    for _ in 0..1 + rng.below(4) {
        *ts = (*ts + rng.below(151) as i64 - 50).max(0);
        let value = vec![b'x'; rng.below(300) as usize];
        let count = 1 + rng.below(5) as usize;
        let values: Vec<&[u8]> = (0..count).map(|_| value.as_slice()).collect();
        let bytes = batch(&values, *ts, None);
        let header = batch::check_batch(&bytes).unwrap();
        let at = log.append(&bytes, &header, 0, *ts).unwrap().base_offset;
        assert_eq!(at, appended.end());
        appended
            .0
            .push((at, (0..count as i64).map(|i| *ts + i).collect()));
    }
}

fn check(log: &Log<MemStorage>, appended: &Appended, context: &str) {
    assert_eq!(log.end(), appended.end(), "{context}");
    check_reads(log, &appended.as_model());
    let mut targets: Vec<i64> = appended.0.iter().flat_map(|(_, ts)| ts.clone()).collect();
    targets.sort_unstable();
    targets.dedup();
    if let Some(&max) = targets.last() {
        targets.extend([max + 1, -1]);
    }
    for target in targets {
        let found = timestamp_cursor(log, target)
            .and_then(|cursor| block_on(cursor.find_timestamp(target)).unwrap());
        assert_eq!(
            found,
            appended.lookup(target),
            "{context}: timestamp {target}"
        );
    }
}

/// Power is lost with a flush job's writes possibly torn; the reopen keeps every flushed batch
/// and whole unflushed ones only.
fn crash_and_reopen(
    storage: &MemStorage,
    log: Log<MemStorage>,
    appended: &mut Appended,
    rng: &mut Rng,
) -> Log<MemStorage> {
    let mut log = log;
    let acked = log.high_watermark();
    if let Some(job) = log.take_flush() {
        let _ = block_on(job.run());
    }
    drop(log);
    let tear = rng.next() as usize;
    storage.crash(|_, unsynced| tear % (unsynced + 1));
    let (log, _) = open(storage, false);
    assert!(log.end() >= acked, "acknowledged records lost");
    appended.cut(log.end());
    log
}

fn clean_stop_and_reopen(storage: &MemStorage, mut log: Log<MemStorage>) -> Log<MemStorage> {
    flush(&mut log).unwrap();
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    let (log, report) = open(storage, true);
    assert_eq!(report.truncated_bytes, 0);
    log
}

fn truncate_at_a_random_batch(log: &mut Log<MemStorage>, appended: &mut Appended, rng: &mut Rng) {
    flush(log).unwrap();
    if appended.0.is_empty() {
        return;
    }
    let (cut, _) = appended.0[rng.below(appended.0.len() as u64) as usize];
    block_on(log.truncate_to(cut)).unwrap();
    appended.cut(cut);
}

#[test]
fn random_operation_sequences_keep_every_batch_and_every_timestamp_answer() {
    for seed in 1..=60 {
        let storage = MemStorage::default();
        let (mut log, _) = open(&storage, false);
        let mut appended = Appended::default();
        let mut rng = Rng(seed);
        let mut ts = 1_000;
        for step in 0..80 {
            let context = format!("seed {seed}, step {step}");
            match rng.below(10) {
                0..=4 => append_some(&mut log, &mut appended, &mut rng, &mut ts),
                5 | 6 => {
                    flush(&mut log).unwrap();
                    check(&log, &appended, &context);
                }
                7 => {
                    log = crash_and_reopen(&storage, log, &mut appended, &mut rng);
                    check(&log, &appended, &format!("{context}, after a crash"));
                }
                8 => {
                    log = clean_stop_and_reopen(&storage, log);
                    check(&log, &appended, &format!("{context}, after a clean stop"));
                }
                _ => {
                    truncate_at_a_random_batch(&mut log, &mut appended, &mut rng);
                    check(&log, &appended, &format!("{context}, after a truncation"));
                }
            }
        }
    }
}
