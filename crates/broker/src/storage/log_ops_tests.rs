//! Random operation sequences against a model of the log: appends whose timestamps sometimes go
//! back (producers' clocks differ), flushes, rolls, truncations, DeleteRecords, new leader
//! epochs, power losses that tear unsynced writes, clean stops, and index files damaged while
//! stopped, each stop followed by a reopen. Whenever everything is
//! flushed, every batch from the log start on reads back at its offsets, and every lookup by
//! timestamp answers what the model says: the first record from the log start on whose timestamp
//! is at least the target, and that record's timestamp. The leader-epoch cache agrees with the
//! epochs of the batches the log holds.

use super::*;

/// What the log holds: each batch's base offset and its records' timestamps, in offset order,
/// the leader epoch of each batch, the log start (DeleteRecords), and the epoch appends get now.
#[derive(Default)]
struct Appended {
    batches: Vec<(Offset, Vec<i64>)>,
    epochs: Vec<i32>,
    start: Offset,
    epoch: i32,
}

impl Appended {
    fn end(&self) -> Offset {
        self.batches
            .last()
            .map(|(base, ts)| base.next(ts.len() as i64))
            .unwrap_or(Offset(0))
    }

    /// Keeps the batches below `end`, which must be a batch boundary.
    fn cut(&mut self, end: Offset) {
        self.batches.retain(|(base, _)| *base < end);
        self.epochs.truncate(self.batches.len());
        assert_eq!(self.end(), end, "the log ends on a batch boundary");
    }

    /// Every record from the log start on: (offset, timestamp).
    fn records(&self) -> impl Iterator<Item = (Offset, i64)> + '_ {
        self.batches
            .iter()
            .flat_map(|(base, ts)| {
                ts.iter()
                    .enumerate()
                    .map(|(i, t)| (base.next(i as i64), *t))
            })
            .filter(|(offset, _)| *offset >= self.start)
    }

    /// The first record from the log start on with a timestamp of at least `target`.
    fn lookup(&self, target: i64) -> Option<(Offset, i64)> {
        self.records().find(|(_, t)| *t >= target)
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
        let at = log
            .append(Bytes::from(bytes.clone()), &header, appended.epoch, *ts)
            .unwrap()
            .base_offset;
        assert_eq!(at, appended.end());
        appended
            .batches
            .push((at, (0..count as i64).map(|i| *ts + i).collect()));
        appended.epochs.push(appended.epoch);
    }
}

/// Reads at every batch's first record from the log start on and at its last: each must return
/// the batch that holds it.
fn check_reads_from_start(log: &Log<MemStorage>, appended: &Appended, context: &str) {
    assert_eq!(log.log_start(), appended.start, "{context}");
    for (base, timestamps) in &appended.batches {
        let last = base.next(timestamps.len() as i64 - 1);
        if last < appended.start {
            continue;
        }
        for offset in [(*base).max(appended.start), last] {
            let cursor = log
                .cursor_at(offset, log.durable_end())
                .unwrap()
                .expect("readable");
            let bytes = block_on(cursor.read(offset, 1)).unwrap();
            let header = BatchHeader::parse(&bytes).expect("a batch");
            assert_eq!(header.base_offset, *base, "{context}: reading {offset}");
        }
    }
}

/// The leader-epoch cache against the batches: an entry where each run of batches of one epoch
/// starts (or at the log start, for the run it cuts), none elsewhere but one at the log end for
/// an epoch assigned before any record of it; entries rise in both fields.
fn check_epochs(log: &Log<MemStorage>, appended: &Appended, context: &str) {
    let entries: Vec<(i32, Offset)> = log
        .epoch_entries()
        .iter()
        .map(|e| (e.epoch.0, e.start))
        .collect();
    let mut expected: Vec<(i32, Offset)> = Vec::new();
    for ((base, timestamps), &epoch) in appended.batches.iter().zip(&appended.epochs) {
        if base.next(timestamps.len() as i64) <= appended.start {
            continue;
        }
        if expected.last().is_none_or(|(last, _)| *last != epoch) {
            expected.push((epoch, (*base).max(appended.start)));
        }
    }
    let (recorded, beyond) = entries.split_at(expected.len().min(entries.len()));
    assert_eq!(recorded, expected, "{context}: epochs of the batches held");
    match beyond {
        [] => {}
        [(epoch, start)] => {
            assert_eq!(*start, log.end(), "{context}: an epoch without records");
            assert!(
                expected.last().is_none_or(|(last, _)| last < epoch),
                "{context}"
            );
        }
        _ => panic!("{context}: entries past the batches: {entries:?}"),
    }
    assert_eq!(
        LeaderEpochCache::decode(&log.epochs.encode()).as_ref(),
        Ok(&log.epochs),
        "{context}: the file reads back"
    );
    assert_eq!(
        log.latest_epoch().map(|e| e.0),
        entries.last().map(|e| e.0),
        "{context}"
    );
}

fn check(log: &Log<MemStorage>, appended: &Appended, context: &str) {
    assert_eq!(log.end(), appended.end(), "{context}");
    check_epochs(log, appended, context);
    check_reads_from_start(log, appended, context);
    let mut targets: Vec<i64> = appended.records().map(|(_, t)| t).collect();
    targets.sort_unstable();
    targets.dedup();
    if let Some(&max) = targets.last() {
        targets.extend([max + 1, -1]);
    }
    for target in targets {
        let found = timestamp_cursor(log, target)
            .and_then(|cursor| block_on(cursor.find_timestamp(target, log.log_start())).unwrap());
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
    let acked = log.durable_end();
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

/// A clean stop, then one sealed segment's offset or time index damaged the ways a load can
/// tell (cut short, an entry past the end of its log, gone), then a reopen. The next check's
/// reads load every segment's indexes: the damaged one is rebuilt from its log and, unless it
/// was gone (recovery scanned that segment; a clean stop writes it), written back.
fn damage_an_index_while_stopped(
    storage: &MemStorage,
    mut log: Log<MemStorage>,
    appended: &Appended,
    rng: &mut Rng,
    context: &str,
) -> Log<MemStorage> {
    flush(&mut log).unwrap();
    block_on(log.close_plan().run()).unwrap();
    // Sealed segments holding offsets from the log start on (the check reads those).
    let bases: Vec<Offset> = log.segments.iter().map(|s| s.base_offset).collect();
    let sealed: Vec<Offset> = bases
        .windows(2)
        .filter(|pair| pair[1] > appended.start)
        .map(|pair| pair[0])
        .collect();
    drop(log);
    let Some(&base) = sealed.get(rng.below(sealed.len() as u64 + 1) as usize) else {
        return open(storage, true).0;
    };
    let time_index = rng.below(2) == 0;
    let path = if time_index {
        segment::time_index_path(&dir(), base)
    } else {
        segment::index_path(&dir(), base)
    };
    let intact = storage.file_bytes(&path).unwrap();
    let removed = match rng.below(3) {
        0 if !intact.is_empty() => {
            let file = block_on(storage.open(&path)).unwrap();
            block_on(file.truncate(intact.len() as u64 / 2 + 3)).unwrap();
            false
        }
        1 if !time_index && intact.len() >= 8 => {
            storage.corrupt(&path, 4, &[0xff; 4]);
            false
        }
        _ => {
            storage.remove_file(&path).unwrap();
            true
        }
    };
    let (log, _) = open(storage, true);
    check(
        &log,
        appended,
        &format!("{context}, after damage to {path:?}"),
    );
    if !removed {
        // Rebuilt, its sparse entries may differ from the ones appends chose; it must load.
        let size = storage.file_len(&segment::log_path(&dir(), base)).unwrap() as u64;
        let files = block_on(load_indexes(storage, &dir(), base, size)).unwrap();
        assert!(files.is_some(), "{context}: {path:?} written back");
    }
    let names = storage.list_dir(&dir()).unwrap();
    assert!(
        !names.iter().any(|n| n.ends_with(segment::REBUILT_SUFFIX)),
        "{context}"
    );
    log
}

/// Truncates at a batch boundary at or after the log start.
fn truncate_at_a_random_batch(log: &mut Log<MemStorage>, appended: &mut Appended, rng: &mut Rng) {
    flush(log).unwrap();
    let cuts: Vec<Offset> = appended
        .batches
        .iter()
        .map(|(base, _)| *base)
        .filter(|base| *base >= appended.start)
        .collect();
    if cuts.is_empty() {
        return;
    }
    let cut = cuts[rng.below(cuts.len() as u64) as usize];
    block_on(log.truncate_to(cut)).unwrap();
    appended.cut(cut);
}

/// DeleteRecords at a random offset in the first third of what is left (inside a batch, often),
/// persisted as the broker does before answering.
fn delete_records(log: &mut Log<MemStorage>, appended: &mut Appended, rng: &mut Rng) {
    flush(log).unwrap();
    let left = (appended.end().0 - appended.start.0) as u64;
    let target = appended.start.next(rng.below(left / 3 + 1) as i64);
    let (start, checkpoint) = log.advance_log_start(target).unwrap();
    block_on(checkpoint.write()).unwrap();
    assert_eq!(start, target);
    appended.start = target;
}

/// This broker becomes leader at a new epoch: its start is the log end, before any record.
fn new_leader_epoch(log: &mut Log<MemStorage>, appended: &mut Appended, rng: &mut Rng) {
    appended.epoch += 1 + rng.below(2) as i32;
    log.assign_epoch_start(LeaderEpoch(appended.epoch), log.end());
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
            match rng.below(13) {
                0..=4 => append_some(&mut log, &mut appended, &mut rng, &mut ts),
                12 => new_leader_epoch(&mut log, &mut appended, &mut rng),
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
                9 => {
                    truncate_at_a_random_batch(&mut log, &mut appended, &mut rng);
                    check(&log, &appended, &format!("{context}, after a truncation"));
                }
                10 => {
                    delete_records(&mut log, &mut appended, &mut rng);
                    check(&log, &appended, &format!("{context}, after DeleteRecords"));
                }
                _ => {
                    log =
                        damage_an_index_while_stopped(&storage, log, &appended, &mut rng, &context);
                }
            }
        }
    }
}
