//! Operation-sequence tests of the log on the simulated disk: random appends, flushes, rolls,
//! reads at every offset, timestamp lookups, truncation, crashes that tear unsynced writes,
//! corruption, failed fsyncs, and clean and unclean reopens.

use std::path::PathBuf;

use futures::executor::block_on;

use super::*;
use crate::config::Config;
use crate::storage::batch::test_batches::batch;
use crate::storage::mem::MemStorage;

/// A small deterministic generator (xorshift64*), so every failure names a replayable seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn small_config() -> LogConfig {
    let mut config = Config::default().log;
    config.segment_bytes = 2048;
    config.index_interval_bytes = 256;
    config
}

fn dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

fn open(storage: &MemStorage, clean: bool) -> (Log<MemStorage>, RecoveryReport) {
    block_on(Log::open(
        storage.clone(),
        dir(),
        small_config(),
        if clean { Offset(i64::MAX) } else { Offset(0) },
        0,
        &mut |_, _| None,
    ))
    .expect("open")
}

/// `Log::cursor_for_timestamp`, loading the index files it asks for as the shard does.
fn timestamp_cursor(log: &Log<MemStorage>, timestamp: i64) -> Option<ReadCursor<MemStorage>> {
    loop {
        match log.cursor_for_timestamp(timestamp, log.durable_end()) {
            Ok(cursor) => return cursor,
            Err(load) => {
                block_on(load.run()).expect("index load");
            }
        }
    }
}

/// Opens (recovering, nothing trusted) the log in `dir()` with `config`.
fn open_with(storage: &MemStorage, config: LogConfig) -> Log<MemStorage> {
    block_on(Log::open(
        storage.clone(),
        dir(),
        config,
        Offset(0),
        0,
        &mut |_, _| None,
    ))
    .expect("open")
    .0
}

/// A model of what was appended: (base offset, record count, first timestamp) per batch.
#[derive(Default, Clone)]
struct Model {
    batches: Vec<(Offset, i32, i64)>,
}

fn append_random(log: &mut Log<MemStorage>, model: &mut Model, rng: &mut Rng, ts: i64) {
    let count = 1 + rng.below(5) as usize;
    let value = vec![b'x'; rng.below(300) as usize];
    let values: Vec<&[u8]> = (0..count).map(|_| value.as_slice()).collect();
    let bytes = batch(&values, ts, None);
    let header = batch::check_batch(&bytes).unwrap();
    let appended = log
        .append(Bytes::from(bytes.clone()), &header, 0, ts)
        .unwrap();
    assert_eq!(
        appended.base_offset,
        model
            .batches
            .last()
            .map(|(o, n, _)| o.next(*n as i64))
            .unwrap_or(Offset(0))
    );
    model.batches.push((appended.base_offset, count as i32, ts));
}

fn flush(log: &mut Log<MemStorage>) -> Result<Offset, ErrorCode> {
    match log.take_flush() {
        Some(job) => {
            let result = block_on(job.run());
            log.complete_flush(result)
        }
        None => Ok(log.durable_end()),
    }
}

/// Reads every offset below the durable end and checks the first batch returned holds it.
fn check_reads(log: &Log<MemStorage>, model: &Model) {
    check_reads_then(log, model, || {});
}

/// `check_reads`, calling `after_each` after every read.
fn check_reads_then(log: &Log<MemStorage>, model: &Model, mut after_each: impl FnMut()) {
    for &(base, count, _) in &model.batches {
        if base >= log.durable_end() {
            break;
        }
        for offset in [base, base.next(count as i64 - 1)] {
            let cursor = log
                .cursor_at(offset, log.durable_end())
                .unwrap()
                .expect("readable");
            let bytes = block_on(cursor.read(offset, 1)).unwrap();
            let header =
                batch::check_batch(&bytes[..BatchHeader::parse(&bytes).unwrap().total_bytes()])
                    .unwrap();
            assert_eq!(header.base_offset, base, "reading {offset}");
            after_each();
        }
    }
}

#[test]
fn appends_roll_and_every_offset_reads_back() {
    for seed in 1..30 {
        let storage = MemStorage::default();
        let (mut log, _) = open(&storage, false);
        let mut model = Model::default();
        let mut rng = Rng(seed);
        for i in 0..200 {
            append_random(&mut log, &mut model, &mut rng, 1000 + i);
            if rng.below(4) == 0 {
                flush(&mut log).unwrap();
                check_reads(&log, &model);
            }
        }
        flush(&mut log).unwrap();
        assert_eq!(log.durable_end(), log.end());
        assert!(
            log.segment_count() > 3,
            "seed {seed}: small segments must roll"
        );
        check_reads(&log, &model);
        assert!(log
            .cursor_at(log.end(), log.durable_end())
            .unwrap()
            .is_none());
        assert_eq!(
            log.cursor_at(log.end().next(1), log.durable_end()).err(),
            Some(ErrorCode::OffsetOutOfRange)
        );
    }
}

#[test]
fn appends_leave_records_in_the_request_buffer_and_write_stamped_headers() {
    let storage = MemStorage::default();
    let mut config = Config::default().log;
    config.timestamp_type = crate::config::TimestampType::LogAppendTime;
    let mut log = open_with(&storage, config);
    let request = Bytes::from(batch(&[b"a", b"bc", b"def"], 5, None));
    let header = batch::check_batch(&request).unwrap();
    log.append(request.clone(), &header, 7, 1000).unwrap();
    log.append(request.clone(), &header, 7, 2000).unwrap();
    // Both batches' records are the request's own bytes, not copies.
    let bodies = &log.pending[0].bodies;
    assert_eq!(bodies.len(), 2);
    for body in bodies {
        assert_eq!(body.as_ptr(), request[HEADER_BYTES..].as_ptr());
    }
    flush(&mut log).unwrap();
    let cursor = log
        .cursor_at(Offset(0), log.durable_end())
        .unwrap()
        .expect("readable");
    let stored = block_on(cursor.read(Offset(0), 1 << 20)).unwrap();
    let (first, second) = stored.split_at(request.len());
    for (bytes, base, time) in [(first, 0, 1000), (second, 3, 2000)] {
        let written = batch::check_batch(bytes).expect("stamped header, valid CRC");
        assert_eq!(written.base_offset, Offset(base));
        assert_eq!(written.partition_leader_epoch, 7);
        assert_eq!(written.max_timestamp, time);
        assert_eq!(bytes[HEADER_BYTES..], request[HEADER_BYTES..]);
    }
}

#[test]
fn a_flush_of_many_batches_writes_at_most_write_vectors_max_pieces_at_a_time() {
    let storage = MemStorage::default();
    let mut config = Config::default().log;
    config.segment_bytes = 64 << 20;
    let mut log = open_with(&storage, config);
    let mut model = Model::default();
    let mut rng = Rng(11);
    let batches = limits::WRITE_VECTORS_MAX + 100;
    for i in 0..batches {
        append_random(&mut log, &mut model, &mut rng, 1000 + i as i64);
    }
    let job = log.take_flush().expect("pending batches");
    let writes = &job.targets[0].writes;
    assert_eq!(writes.len(), 3, "2 pieces per batch, {batches} batches");
    let mut position = 0;
    for (at, pieces) in writes {
        assert!(pieces.len() <= limits::WRITE_VECTORS_MAX);
        assert_eq!(*at, position, "each write continues the last");
        position += pieces.iter().map(|p| p.len() as u64).sum::<u64>();
    }
    assert_eq!(position, job.bytes());
    let result = block_on(job.run());
    log.complete_flush(result).unwrap();
    assert_eq!(log.durable_end(), log.end());
    check_reads(&log, &model);
}

#[test]
fn timestamp_lookup_finds_first_record_at_or_after() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(7);
    for i in 0..100 {
        append_random(&mut log, &mut model, &mut rng, 10_000 + i * 10);
    }
    flush(&mut log).unwrap();
    for &(base, _, ts) in &model.batches {
        let cursor = timestamp_cursor(&log, ts).unwrap();
        let (offset, _) = block_on(cursor.find_timestamp(ts, Offset(0)))
            .unwrap()
            .unwrap();
        assert_eq!(offset, base, "timestamp {ts}");
    }
    assert!(timestamp_cursor(&log, 1_000_000).is_none());
}

#[test]
fn a_clean_stop_keeps_the_active_segments_largest_timestamp_when_timestamps_go_back() {
    // Producers' clocks differ: the largest timestamp (200) sits in a batch that neither index
    // notes (too close to the previous entry), and the batches after it are older. The stop
    // must write it into the time index, or the next start, which rescans only after the last
    // offset index entry, would take 120 as the segment's largest and find nothing at 150.
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let small = [&b"s"[..]];
    let large_value = [b'l'; 300];
    for (values, ts) in [
        (&small[..], 100),
        (&small[..], 200),
        (&[&large_value[..]][..], 150),
        (&small[..], 120),
    ] {
        let bytes = batch(values, ts, None);
        let header = batch::check_batch(&bytes).unwrap();
        log.append(Bytes::from(bytes.clone()), &header, 0, ts)
            .unwrap();
    }
    flush(&mut log).unwrap();
    let answer = |log: &Log<MemStorage>| {
        let cursor = timestamp_cursor(log, 150).expect("a record at or after 150");
        block_on(cursor.find_timestamp(150, Offset(0))).unwrap()
    };
    assert_eq!(answer(&log), Some((Offset(1), 200)));
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    let (log, _) = open(&storage, true);
    assert_eq!(answer(&log), Some((Offset(1), 200)), "after a clean stop");
}

#[test]
fn crash_keeps_every_flushed_batch_and_truncates_torn_tails() {
    for seed in 1..40 {
        let storage = MemStorage::default();
        let (mut log, _) = open(&storage, false);
        let mut model = Model::default();
        let mut rng = Rng(seed);
        for i in 0..rng.below(150) + 1 {
            append_random(&mut log, &mut model, &mut rng, i as i64);
            if rng.below(5) == 0 {
                flush(&mut log).unwrap();
            }
        }
        let acked = log.durable_end();
        // A flush job that wrote (part of) its bytes but never synced: then power is lost.
        if let Some(job) = log.take_flush() {
            let _ = block_on(job.run());
        }
        drop(log);
        storage.crash(|_, unsynced| {
            if unsynced == 0 {
                0
            } else {
                (rng.next() as usize) % (unsynced + 1)
            }
        });
        let (mut log, _) = open(&storage, false);
        assert!(
            log.end() >= acked,
            "seed {seed}: acknowledged data lost ({} < {acked})",
            log.end()
        );
        let kept: Vec<_> = model
            .batches
            .iter()
            .filter(|(o, _, _)| *o < log.end())
            .cloned()
            .collect();
        let last = kept.last().unwrap();
        assert_eq!(
            last.0.next(last.1 as i64),
            log.end(),
            "seed {seed}: recovery stops on a batch boundary"
        );
        check_reads(
            &log,
            &Model {
                batches: kept.clone(),
            },
        );
        // The log keeps working after recovery.
        let mut model = Model { batches: kept };
        append_random(&mut log, &mut model, &mut rng, 5);
        flush(&mut log).unwrap();
        check_reads(&log, &model);
    }
}

/// A new log on `storage` holding `count` random batches (from `seed`), flushed and closed.
fn flushed_batches(storage: &MemStorage, seed: u64, count: i64) -> Model {
    let (mut log, _) = open(storage, false);
    let mut model = Model::default();
    let mut rng = Rng(seed);
    for i in 0..count {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    model
}

#[test]
fn corruption_in_the_active_segment_truncates_from_there() {
    let storage = MemStorage::default();
    let model = flushed_batches(&storage, 3, 5);
    let mut logs: Vec<String> = storage
        .list_dir(&dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    let last = dir().join(logs.last().unwrap());
    let len = storage.file_len(&last).unwrap();
    storage.corrupt(&last, len - 3, b"zzz");
    let (log, report) = open(&storage, false);
    assert!(report.truncated_bytes > 0);
    assert_eq!(
        log.end(),
        model.batches[4].0,
        "the corrupt last batch is dropped, the rest kept"
    );
    drop(log);
    // Corruption in an earlier segment drops everything after it, later segments included.
    let first = segment::log_path(&dir(), Offset(0));
    storage.corrupt(&first, 70, b"zzz");
    let (log, _) = open(&storage, false);
    assert_eq!(log.end(), Offset(0));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn a_damaged_base_offset_past_the_segments_reach_truncates_there() {
    // The base offset lies outside the CRC: damage there passes the CRC check, and recovery
    // must still refuse a batch whose offsets its segment cannot index (found by fuzzing).
    for damaged in [i64::MAX, 1 << 40, (u32::MAX as i64) + 1] {
        let storage = MemStorage::default();
        let model = flushed_batches(&storage, 9, 3);
        let second = model.batches[1].0;
        let first_size = BatchHeader::parse(&first_segment(&storage))
            .unwrap()
            .total_bytes();
        let path = segment::log_path(&dir(), Offset(0));
        storage.corrupt(&path, first_size, &damaged.to_be_bytes());
        let (log, report) = open(&storage, false);
        assert!(
            report.truncated_bytes > 0,
            "{damaged}: the damaged batch is cut"
        );
        assert_eq!(log.end(), second, "{damaged}: the batch before it is kept");
    }
}

/// The first segment's log file, whole.
fn first_segment(storage: &MemStorage) -> Vec<u8> {
    let path = segment::log_path(&dir(), Offset(0));
    let file = block_on(storage.open(&path)).unwrap();
    let size = block_on(file.size()).unwrap();
    block_on(file.read_at(0, size as usize)).unwrap().to_vec()
}

#[test]
fn failed_fsync_never_acknowledges_and_fails_the_log() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(11);
    append_random(&mut log, &mut model, &mut rng, 1);
    flush(&mut log).unwrap();
    let acked = log.durable_end();
    append_random(&mut log, &mut model, &mut rng, 2);
    storage.fail_syncs(true);
    assert_eq!(flush(&mut log), Err(ErrorCode::KafkaStorageError));
    assert_eq!(log.durable_end(), acked);
    let bytes = batch(&[b"x"], 3, None);
    let header = batch::check_batch(&bytes).unwrap();
    assert_eq!(
        log.append(Bytes::from(bytes.clone()), &header, 0, 3),
        Err(ErrorCode::KafkaStorageError)
    );
}

#[test]
fn full_disk_never_acknowledges() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(12);
    append_random(&mut log, &mut model, &mut rng, 1);
    storage.fail_writes(true);
    assert_eq!(flush(&mut log), Err(ErrorCode::KafkaStorageError));
    assert_eq!(log.durable_end(), Offset(0));
}

#[test]
fn clean_reopen_trusts_indexes_and_skips_the_scan() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(5);
    for i in 0..150 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    block_on(log.close_plan().run()).unwrap();
    let end = log.end();
    drop(log);
    let (clean, clean_report) = open(&storage, true);
    let (_, dirty_report) = open(&storage, false);
    assert_eq!(clean.end(), end);
    assert_eq!(clean_report.rebuilt_indexes, 0);
    assert!(
        clean_report.batches_scanned < dirty_report.batches_scanned / 2,
        "{clean_report:?} vs {dirty_report:?}"
    );
    check_reads(&clean, &model);
}

#[test]
fn truncate_drops_later_records_and_segments() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(9);
    for i in 0..120 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    let segments_before = log.segment_count();
    let cut = model.batches[40].0;
    block_on(log.truncate_to(cut)).unwrap();
    assert_eq!(log.end(), cut);
    assert_eq!(log.durable_end(), cut);
    assert!(log.segment_count() < segments_before);
    model.batches.truncate(40);
    check_reads(&log, &model);
    append_random(&mut log, &mut model, &mut rng, 500);
    flush(&mut log).unwrap();
    check_reads(&log, &model);
    drop(log);
    let (reopened, _) = open(&storage, false);
    assert_eq!(
        reopened.end(),
        model
            .batches
            .last()
            .map(|(o, n, _)| o.next(*n as i64))
            .unwrap()
    );
}

#[test]
fn segments_roll_by_age_on_the_callers_clock() {
    let storage = MemStorage::default();
    let mut config = small_config();
    config.segment_bytes = 1 << 30;
    config.segment_ms = 1000;
    let mut log = open_with(&storage, config);
    let bytes = batch(&[b"x"], 0, None);
    let header = batch::check_batch(&bytes).unwrap();
    log.append(Bytes::from(bytes.clone()), &header, 0, 10)
        .unwrap();
    log.append(Bytes::from(bytes.clone()), &header, 0, 999)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(Bytes::from(bytes.clone()), &header, 0, 1000)
        .unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "a segment older than segment.ms rolls on the next append"
    );
    flush(&mut log).unwrap();
    assert!(
        storage.exists(&segment::index_path(&dir(), Offset(0))),
        "the rolled segment's index is written"
    );
    assert!(storage.exists(&segment::log_path(&dir(), Offset(2))));
}

#[test]
fn huge_offset_deltas_roll_instead_of_overflowing_relative_offsets() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    // A compressed batch may legitimately claim many records in few bytes: fake one by editing
    // the header of a real batch (codec gzip, lastOffsetDelta near i32::MAX).
    let mut bytes = batch(&[b"x"], 0, None);
    bytes[22] |= 1;
    bytes[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
    bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let header = batch::check_batch(&bytes).unwrap();
    for _ in 0..3 {
        log.append(Bytes::from(bytes.clone()), &header, 0, 0)
            .unwrap();
    }
    assert_eq!(
        log.segment_count(),
        3,
        "each batch whose offsets overflow the segment starts a new one"
    );
    flush(&mut log).unwrap();
    let end = log.end();
    drop(log);
    let (reopened, _) = open(&storage, false);
    assert_eq!(reopened.end(), end);
}

#[test]
fn retention_deletes_whole_old_segments_and_moves_the_log_start() {
    let storage = MemStorage::default();
    let mut config = small_config();
    config.retention_bytes = 6000;
    let mut log = open_with(&storage, config.clone());
    let mut model = Model::default();
    let mut rng = Rng(21);
    for i in 0..200 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    let before = log.segment_count();
    assert_eq!(
        log.apply_retention(1_000, log.durable_end()),
        0,
        "nothing below the durable end yet: nothing goes"
    );
    flush(&mut log).unwrap();
    let mut compact_only = config.clone();
    compact_only.cleanup_delete = false;
    log.set_config(compact_only);
    assert_eq!(
        log.apply_retention(1_000, log.durable_end()),
        0,
        "cleanup.policy=compact: retention never deletes"
    );
    log.set_config(config.clone());
    let deleted = log.apply_retention(1_000, log.durable_end());
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    let kept: u64 = model
        .batches
        .iter()
        .filter(|(o, _, _)| *o >= log.log_start())
        .count() as u64;
    assert!(kept > 0 && log.log_start() > Offset(0));
    assert_eq!(
        log.cursor_at(Offset(0), log.durable_end()).err(),
        Some(ErrorCode::OffsetOutOfRange)
    );
    let remaining = Model {
        batches: model
            .batches
            .iter()
            .filter(|(o, _, _)| *o >= log.log_start())
            .cloned()
            .collect(),
    };
    check_reads(&log, &remaining);
    assert!(log.segment_count() >= 1);
    // The start offset survives a reopen: it is where the first remaining segment begins.
    let start = log.log_start();
    drop(log);
    let reopened = open_with(&storage, config);
    assert_eq!(reopened.log_start(), start);

    // By time: everything but the active segment is older than retention.ms.
    let storage = MemStorage::default();
    let mut config = small_config();
    config.retention_ms = 1000;
    let mut log = open_with(&storage, config);
    let mut model = Model::default();
    for i in 0..100 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    assert_eq!(
        log.apply_retention(1000, log.durable_end()),
        0,
        "not old enough yet"
    );
    assert!(log.apply_retention(5000, log.durable_end()) > 0);
    assert_eq!(log.segment_count(), 1, "only the active segment stays");
}

#[test]
fn retention_runs_while_a_flush_is_in_flight_but_spares_what_it_writes() {
    // Under steady produce load a flush is nearly always running: retention must not wait for a
    // moment without one, only leave alone the segments that flush writes or seals.
    let storage = MemStorage::default();
    let mut config = small_config();
    config.retention_ms = 1000;
    let mut log = open_with(&storage, config.clone());
    let (mut model, mut rng) = (Model::default(), Rng(5));
    for i in 0..100 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    let durable_segments = log.segment_count();
    // More appends roll into new segments; their flush starts and is still running.
    for i in 100..200 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    let in_flight = log.take_flush().expect("a flush to run");
    let deleted = log.apply_retention(5_000, log.durable_end());
    assert_eq!(
        deleted,
        durable_segments - 1,
        "every durable, sealed segment goes; the one the flush seals stays"
    );
    let result = block_on(in_flight.run());
    log.complete_flush(result).unwrap();
    let remaining = Model {
        batches: model
            .batches
            .iter()
            .filter(|(o, _, _)| *o >= log.log_start())
            .cloned()
            .collect(),
    };
    check_reads(&log, &remaining);
    assert!(
        log.apply_retention(5_000, log.durable_end()) > 0,
        "the rest goes once sealed"
    );
    assert_eq!(log.segment_count(), 1);
    drop(log);
    let reopened = open_with(&storage, config);
    assert_eq!(reopened.segment_count(), 1, "deleted segments stay deleted");
}

#[test]
fn delete_records_moves_the_start_inside_a_segment_and_survives_reopen() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(33);
    for i in 0..100 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    assert_eq!(
        log.advance_log_start(Offset(1)).err(),
        Some(ErrorCode::OffsetOutOfRange),
        "above the durable end"
    );
    flush(&mut log).unwrap();
    let segments = log.segment_count();
    let (base, count, _) = model.batches[60];
    let target = base.next(count as i64 / 2);
    let (low, checkpoint) = log.advance_log_start(target).unwrap();
    block_on(checkpoint.write()).unwrap();
    assert_eq!(low, target);
    assert!(
        log.segment_count() < segments,
        "whole segments below the start are deleted"
    );
    assert_eq!(
        log.cursor_at(base.next(-1), log.durable_end()).err(),
        Some(ErrorCode::OffsetOutOfRange)
    );
    assert!(log.cursor_at(target, log.durable_end()).unwrap().is_some());
    assert_eq!(
        log.advance_log_start(Offset(0)).unwrap().0,
        target,
        "the start never moves back"
    );
    drop(log);
    let (reopened, _) = open(&storage, false);
    assert_eq!(reopened.log_start(), target);
    let (clean, _) = open(&storage, true);
    assert_eq!(clean.log_start(), target);
}

/// A log of many sealed segments on a disk whose sealed-file cache holds `open_max` files.
fn many_segments(open_max: usize, seed: u64) -> (MemStorage, Log<MemStorage>, Model) {
    let storage = MemStorage::with_sealed_files_open_max(open_max);
    let (mut log, _) = open(&storage, false);
    let mut model = Model::default();
    let mut rng = Rng(seed);
    for i in 0..300 {
        append_random(&mut log, &mut model, &mut rng, 1000 + i);
        if rng.below(4) == 0 {
            flush(&mut log).unwrap();
        }
    }
    flush(&mut log).unwrap();
    assert!(log.segment_count() > 10, "seed {seed}: small segments roll");
    (storage, log, model)
}

#[test]
fn sealed_segments_read_back_through_a_cache_of_two_files() {
    for seed in 1..10 {
        let (storage, log, model) = many_segments(2, seed);
        // The cache's two plus the active segment's file, after every flush and every read.
        assert!(storage.open_files() <= 3);
        check_reads_then(&log, &model, || {
            assert!(
                storage.open_files() <= 3,
                "seed {seed}: {} open",
                storage.open_files()
            );
        });
        assert_eq!(storage.segment_files().open_count(), 2);
    }
}

#[test]
fn deleted_segments_leave_the_cache_and_close_their_files() {
    let (storage, mut log, model) = many_segments(4, 3);
    check_reads(&log, &model);
    assert_eq!(storage.open_files(), 5);
    let active_base = log.segments.last().unwrap().base_offset;
    let (start, _) = log.advance_log_start(active_base).unwrap();
    assert_eq!(start, active_base);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(storage.segment_files().open_count(), 0);
    assert_eq!(storage.open_files(), 1, "only the active segment's file");
}

#[test]
fn reopen_after_a_crash_opens_only_the_segments_it_must_scan() {
    for seed in 1..10 {
        let (storage, log, model) = many_segments(2, seed);
        let segments = log.segment_count();
        let active_base = log.segments.last().unwrap().base_offset;
        let end = log.end();
        storage.crash(|_, n| n);
        drop(log);
        assert_eq!(storage.open_files(), 0);
        // As after a roll snapshot at the active segment's base: the sealed ones are trusted.
        let (log, report) = block_on(Log::open(
            storage.clone(),
            dir(),
            small_config(),
            active_base,
            0,
            &mut |_, _| None,
        ))
        .expect("reopen");
        assert_eq!((log.segment_count(), log.end()), (segments, end));
        assert_eq!(
            report.rebuilt_indexes, 1,
            "seed {seed}: only the active one is scanned"
        );
        assert_eq!(
            storage.open_files(),
            1,
            "seed {seed}: only the active file is open"
        );
        check_reads_then(&log, &model, || assert!(storage.open_files() <= 3));
        let ts = model.batches[0].2;
        let cursor = timestamp_cursor(&log, ts).expect("a sealed segment holds it");
        let (offset, _) = block_on(cursor.find_timestamp(ts, Offset(0)))
            .unwrap()
            .unwrap();
        assert_eq!(offset, Offset(0));
    }
}

#[test]
fn reopen_after_a_clean_stop_opens_only_the_active_segment() {
    let (storage, log, model) = many_segments(2, 5);
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    assert_eq!(storage.open_files(), 0);
    let (log, report) = open(&storage, true);
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(storage.open_files(), 1, "only the active file is open");
    check_reads_then(&log, &model, || assert!(storage.open_files() <= 3));
}

/// What a timestamp lookup answers for each batch's timestamp.
fn timestamp_answers(log: &Log<MemStorage>, model: &Model) -> Vec<Option<(Offset, i64)>> {
    model
        .batches
        .iter()
        .map(|&(_, _, ts)| {
            let cursor = timestamp_cursor(log, ts).expect("a segment holds it");
            block_on(cursor.find_timestamp(ts, Offset(0))).unwrap()
        })
        .collect()
}

/// `many_segments` stopped cleanly, with what its timestamp lookups answered before the stop.
fn stopped_cleanly(seed: u64) -> (MemStorage, Model, Vec<Option<(Offset, i64)>>) {
    let (storage, log, model) = many_segments(4, seed);
    let expected = timestamp_answers(&log, &model);
    block_on(log.close_plan().run()).unwrap();
    (storage, model, expected)
}

/// Sealed segments of `log` whose largest timestamp is not known yet (indexes never loaded).
fn unloaded(log: &Log<MemStorage>) -> usize {
    log.unloaded_indexes().len()
}

#[test]
fn a_reopen_leaves_sealed_indexes_in_their_files_until_a_read_needs_them() {
    let (storage, log, model) = many_segments(4, 3);
    block_on(log.close_plan().run()).unwrap();
    let segments = log.segment_count();
    drop(log);
    let (log, report) = open(&storage, true);
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(
        unloaded(&log),
        segments - 1,
        "only the active one in memory"
    );
    // One read in the third segment loads that segment's indexes and no other's.
    let (base, _, _) = model.batches[model.batches.len() / 3];
    let cursor = log
        .cursor_at(base, log.durable_end())
        .unwrap()
        .expect("readable");
    block_on(cursor.read(base, 1)).unwrap();
    assert_eq!(unloaded(&log), segments - 2);
    check_reads(&log, &model);
    assert_eq!(unloaded(&log), 0, "every segment read once");
}

#[test]
fn damaged_or_missing_index_files_found_after_a_reopen_are_rebuilt_from_the_log() {
    let (storage, model, expected) = stopped_cleanly(5);
    let bases: Vec<Offset> = {
        let (log, _) = open(&storage, true);
        log.segments.iter().map(|s| s.base_offset).collect()
    };
    // An entry pointing past the end of its log, and a time index gone.
    let index = segment::index_path(&dir(), bases[1]);
    assert!(
        storage.file_len(&index).unwrap_or(0) >= 8,
        "it has an entry"
    );
    let intact = storage.file_bytes(&index).unwrap();
    storage.corrupt(&index, 4, &[0xff; 4]);
    storage
        .remove_file(&segment::time_index_path(&dir(), bases[2]))
        .unwrap();
    let (log, _) = open(&storage, true);
    check_reads(&log, &model);
    assert_eq!(timestamp_answers(&log, &model), expected);
    // The first read of each wrote its rebuilt indexes back, synced.
    assert_eq!(storage.file_bytes(&index).unwrap(), intact);
    assert!(storage.exists(&segment::time_index_path(&dir(), bases[2])));
    assert_no_rebuilt_files(&storage);
    drop(log);
    storage.crash(|_, _| 0);
    let (log, _) = open(&storage, true);
    // Their files are trusted again.
    assert!(log.segments[1].unloaded_indexes().is_some());
    assert!(log.segments[2].unloaded_indexes().is_some());
    check_reads(&log, &model);
    assert_eq!(timestamp_answers(&log, &model), expected);
}

fn assert_no_rebuilt_files(storage: &MemStorage) {
    let names = storage.list_dir(&dir()).unwrap();
    assert!(
        !names.iter().any(|n| n.ends_with(segment::REBUILT_SUFFIX)),
        "{names:?}"
    );
}

#[test]
fn indexes_rebuilt_after_the_log_let_go_of_their_segment_are_not_written_back() {
    let (storage, _model, _) = stopped_cleanly(6);
    let (log, _) = open(&storage, true);
    let base = log.segments[1].base_offset;
    let index = segment::index_path(&dir(), base);
    storage.corrupt(&index, 4, &[0xff; 4]);
    let damaged = storage.file_bytes(&index).unwrap();
    let load = log
        .unloaded_indexes()
        .into_iter()
        .nth(1)
        .expect("the second segment's indexes are in their files");
    // As when retention, a cleaning swap or a deleted topic takes the segment while a read
    // that started before rebuilds its indexes: the rebuild serves that read, and the files,
    // no longer the log's, stay as they were.
    drop(log);
    let indexes = block_on(load.run()).expect("rebuilt from the log file");
    assert!(
        indexes.position_of(u32::MAX) > 0,
        "the rebuilt index has entries"
    );
    assert_eq!(storage.file_bytes(&index).unwrap(), damaged);
    assert_no_rebuilt_files(&storage);
}

#[test]
fn recovery_removes_index_files_a_crash_left_half_written_back() {
    let (storage, model, _) = stopped_cleanly(7);
    let half = dir().join(format!(
        "{}.index{}",
        segment::file_stem(Offset(0)),
        segment::REBUILT_SUFFIX
    ));
    block_on(write_synced(&storage, &half, vec![1, 2, 3])).unwrap();
    let (log, _) = open(&storage, true);
    assert_no_rebuilt_files(&storage);
    check_reads(&log, &model);
}

#[test]
fn sealed_segments_a_recovery_scanned_keep_their_largest_timestamps_through_a_clean_stop() {
    // A recovery that trusts nothing scans every segment (as when the newest producer snapshot
    // or a sealed segment's index file is lost) and builds their indexes; the clean stop after
    // it writes them. The next start reads each sealed segment's largest timestamp from its time
    // index's last entry, which must be that timestamp, not the last sparse entry: lookups by
    // time (and retention by time) depend on it.
    for seed in 1..6 {
        let (storage, log, model) = many_segments(4, seed);
        let expected = timestamp_answers(&log, &model);
        storage.crash(|_, n| n);
        drop(log);
        let (log, report) = open(&storage, false);
        assert_eq!(report.rebuilt_indexes, log.segment_count());
        assert_eq!(timestamp_answers(&log, &model), expected, "seed {seed}");
        block_on(log.close_plan().run()).unwrap();
        drop(log);
        let (log, report) = open(&storage, true);
        assert_eq!(report.rebuilt_indexes, 0);
        assert_eq!(
            timestamp_answers(&log, &model),
            expected,
            "seed {seed}: after the clean stop"
        );
    }
}

#[test]
fn retention_after_a_reopen_loads_the_timestamps_it_needs_and_no_more() {
    let mut config = small_config();
    config.retention_ms = 1_000;
    let storage = MemStorage::default();
    let mut log = open_with(&storage, config.clone());
    // Old records first (timestamps 1000..), then new ones (100_000..).
    let mut model = Model::default();
    let mut rng = Rng(11);
    for i in 0..150 {
        let ts = if i < 100 { 1_000 + i } else { 100_000 + i };
        append_random(&mut log, &mut model, &mut rng, ts);
    }
    flush(&mut log).unwrap();
    block_on(log.close_plan().run()).unwrap();
    let segments = log.segment_count();
    drop(log);
    let reopen = || {
        block_on(Log::open(
            storage.clone(),
            dir(),
            config.clone(),
            Offset(i64::MAX),
            0,
            &mut |_, _| None,
        ))
        .expect("reopen")
        .0
    };
    let mut log = reopen();
    assert_eq!(
        log.apply_retention(100_500, log.durable_end()),
        0,
        "no age known: nothing goes yet"
    );
    let mut loads = 0;
    while let Some(load) = log.retention_index_load(100_500, log.durable_end()) {
        block_on(load.run()).unwrap();
        loads += 1;
    }
    let deleted = log.apply_retention(100_500, log.durable_end());
    assert!(deleted > 0, "the old segments go");
    assert_eq!(loads, deleted + 1, "each deleted one, and the one kept");
    assert_eq!(unloaded(&log), segments - 1 - loads);
    assert!(log.segments[0].max_timestamp().unwrap() >= 100_000);
    check_reads(
        &log,
        &Model {
            batches: model
                .batches
                .iter()
                .filter(|(o, _, _)| *o >= log.log_start())
                .copied()
                .collect(),
        },
    );
}

#[test]
fn sealed_indexes_in_memory_stay_under_the_cache_bound_while_everything_reads_back() {
    let (storage, model, expected) = stopped_cleanly(9);
    // Room for about two segments' indexes (small_config indexes every 256 bytes of 2 KiB).
    let bound = 2 * 8 * 20;
    let storage = storage.with_loaded_indexes_max_bytes(bound);
    let (log, _) = open(&storage, true);
    check_reads_then(&log, &model, || {
        assert!(
            storage.index_cache_bytes() <= bound,
            "{}",
            storage.index_cache_bytes()
        );
    });
    assert_eq!(timestamp_answers(&log, &model), expected);
    assert!(storage.index_cache_bytes() <= bound);
    assert_eq!(
        unloaded(&log),
        0,
        "every timestamp known, if not every index held"
    );
}

#[path = "log_ops_tests.rs"]
mod ops;

/// The batches of segment `base`'s log file: position and header, in file order.
fn batches_in(storage: &MemStorage, base: Offset) -> Vec<(usize, BatchHeader)> {
    let bytes = storage
        .file_bytes(&segment::log_path(&dir(), base))
        .unwrap();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = BatchHeader::parse(&bytes[at..]).unwrap();
        found.push((at, header));
        at += header.total_bytes();
    }
    found
}

/// The first sealed segment of at least three batches (the log stopped cleanly), its batches,
/// and the next segment's base.
fn sealed_of_three_batches(storage: &MemStorage) -> (Offset, Vec<(usize, BatchHeader)>, Offset) {
    let (log, _) = open(storage, true);
    let bases: Vec<Offset> = log.segments.iter().map(|s| s.base_offset).collect();
    bases
        .windows(2)
        .map(|pair| (pair[0], batches_in(storage, pair[0]), pair[1]))
        .find(|(_, batches, _)| batches.len() >= 3)
        .expect("a sealed segment of three batches")
}

/// Reads at `offset` as a fetch does, up to `max_bytes`.
fn read_at(log: &Log<MemStorage>, offset: Offset, max_bytes: usize) -> io::Result<Bytes> {
    let cursor = log
        .cursor_at(offset, log.durable_end())
        .unwrap()
        .expect("readable");
    block_on(cursor.read(offset, max_bytes))
}

/// The base offsets of the batches in `bytes`, each whole and passing its CRC check.
fn healthy_batches(bytes: &[u8]) -> Vec<Offset> {
    let mut bases = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let total = BatchHeader::parse(&bytes[at..]).unwrap().total_bytes();
        let header = batch::check_stored_batch(&bytes[at..at + total]).expect("a healthy batch");
        bases.push(header.base_offset);
        at += total;
    }
    bases
}

/// What the check of segment `base` found (it must have run).
fn health_of(log: &Log<MemStorage>, base: Offset) -> Rc<Health> {
    let seg = log.segments.iter().find(|s| s.base_offset == base).unwrap();
    seg.check.as_ref().expect("checked").found().expect("ran")
}

/// Reads every batch of `model` at its base offset: those in `damaged` (first..next) fail as
/// damaged, every other answer is healthy batches starting with the one asked for (or, for
/// offsets in `gone`, with the batch at its end).
fn check_reads_around(
    log: &Log<MemStorage>,
    model: &Model,
    damaged: (Offset, Offset),
    gone: (Offset, Offset),
) {
    for &(base, _, _) in &model.batches {
        let read = read_at(log, base, 4096);
        if (damaged.0..damaged.1).contains(&base) {
            let err = read.map(|b| healthy_batches(&b)).unwrap_err();
            assert!(segment_check::is_damaged(&err), "{base}: {err}");
            continue;
        }
        let first = healthy_batches(&read.unwrap())[0];
        let expected = if (gone.0..gone.1).contains(&base) {
            gone.1
        } else {
            base
        };
        assert_eq!(first, expected, "reading {base}");
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_never_served_and_reads_go_on_after_it() {
    let (storage, model, _) = stopped_cleanly(7);
    let (base, batches, _) = sealed_of_three_batches(&storage);
    let (position, damaged) = batches[1];
    let path = segment::log_path(&dir(), base);
    // A byte of the records, which the CRC covers.
    let at = position + damaged.total_bytes() - 2;
    let byte = storage.file_bytes(&path).unwrap()[at];
    storage.corrupt(&path, at, &[byte ^ 0x10]);
    let (log, report) = open(&storage, true);
    assert_eq!(report.truncated_bytes, 0, "sealed segments wait for a read");
    // A read from the segment's start stops before the damaged batch.
    let before = read_at(&log, base, 1 << 20).unwrap();
    assert_eq!(healthy_batches(&before), vec![batches[0].1.base_offset]);
    let range = (damaged.base_offset, damaged.next_offset());
    check_reads_around(&log, &model, range, (Offset(0), Offset(0)));
    let health = health_of(&log, base);
    assert_eq!(
        health.damaged,
        vec![segment_check::Damage {
            position: position as u64,
            len: damaged.total_bytes() as u64,
            first: range.0,
            next: range.1,
        }]
    );
    assert_eq!(health.trimmed, None);
    assert_eq!(
        log.damaged(),
        vec![DamagedRange {
            kind: DamageKind::Corrupt,
            segment: base,
            position: position as u64,
            bytes: damaged.total_bytes() as u64,
            first: range.0,
            next: Some(range.1),
        }]
    );
    // Timestamp lookups step over it.
    for &(_, _, ts) in &model.batches {
        let cursor = timestamp_cursor(&log, ts).expect("a segment holds it");
        let (offset, _) = block_on(cursor.find_timestamp(ts, Offset(0)))
            .unwrap()
            .expect("found");
        assert!(!(range.0..range.1).contains(&offset));
    }
    // DeleteRecords to the offset after it: everything from the log start on reads.
    let mut log = log;
    log.advance_log_start(range.1).unwrap();
    let rest = Model {
        batches: model
            .batches
            .iter()
            .copied()
            .filter(|(b, _, _)| *b >= range.1)
            .collect(),
    };
    check_reads(&log, &rest);
}

#[test]
fn a_damaged_batch_length_in_a_sealed_segment_fails_reads_to_the_segments_end() {
    let (storage, model, _) = stopped_cleanly(8);
    let (base, batches, next_base) = sealed_of_three_batches(&storage);
    let (position, damaged) = batches[1];
    // The length lies outside the CRC: from here on no batch can be found. (One that ran just
    // past the file's end would look like a file cut short, and be trimmed.)
    let path = segment::log_path(&dir(), base);
    storage.corrupt(&path, position + 8, &0x7f00_0000i32.to_be_bytes());
    let (log, _) = open(&storage, true);
    let before = read_at(&log, base, 1 << 20).unwrap();
    assert_eq!(healthy_batches(&before), vec![batches[0].1.base_offset]);
    check_reads_around(
        &log,
        &model,
        (damaged.base_offset, next_base),
        (Offset(0), Offset(0)),
    );
    let health = health_of(&log, base);
    assert_eq!(health.end, position as u64);
    assert_eq!(health.damaged.len(), 1);
    assert_eq!(health.damaged[0].next, next_base);
}

#[test]
fn a_sealed_segment_cut_short_is_trimmed_and_reads_go_on_in_the_next_segment() {
    let (storage, model, _) = stopped_cleanly(9);
    let (base, batches, next_base) = sealed_of_three_batches(&storage);
    let (position, cut) = batches[1];
    let path = segment::log_path(&dir(), base);
    let file = block_on(storage.open(&path)).unwrap();
    block_on(file.truncate((position + cut.total_bytes() / 2) as u64)).unwrap();
    drop(file);
    let (log, _) = open(&storage, true);
    // The offsets cut off are gone, as over a gap compaction leaves.
    check_reads_around(
        &log,
        &model,
        (Offset(0), Offset(0)),
        (cut.base_offset, next_base),
    );
    assert_eq!(
        storage.file_len(&path),
        Some(position),
        "trimmed to its last whole batch"
    );
    let health = health_of(&log, base);
    assert_eq!(health.trimmed, Some((position as u64, cut.base_offset)));
    assert!(health.damaged.is_empty());
    assert_eq!(
        log.damaged(),
        vec![DamagedRange {
            kind: DamageKind::Lost,
            segment: base,
            position: position as u64,
            bytes: (cut.total_bytes() / 2) as u64,
            first: cut.base_offset,
            next: Some(next_base),
        }]
    );
    // Found once: the next start finds the segment whole.
    drop(log);
    let (log, _) = open(&storage, true);
    read_at(&log, base, 1).unwrap();
    let health = health_of(&log, base);
    assert_eq!((health.end, health.trimmed), (position as u64, None));
}

#[test]
fn a_flipped_byte_in_the_active_segment_after_a_clean_stop_truncates_from_there() {
    let (storage, log, model) = many_segments(4, 6);
    let active = log.segments.last().unwrap().base_offset;
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    let batches = batches_in(&storage, active);
    let (position, damaged) = *batches.last().unwrap();
    let path = segment::log_path(&dir(), active);
    let at = position + damaged.total_bytes() - 2;
    let byte = storage.file_bytes(&path).unwrap()[at];
    storage.corrupt(&path, at, &[byte ^ 0x01]);
    let (log, report) = open(&storage, true);
    assert_eq!(report.truncated_bytes, damaged.total_bytes() as u64);
    assert_eq!(log.end(), damaged.base_offset);
    assert_eq!(log.damaged_ranges(), 1);
    assert_eq!(
        report.damaged,
        vec![DamagedRange {
            kind: DamageKind::Truncated,
            segment: active,
            position: position as u64,
            bytes: damaged.total_bytes() as u64,
            first: damaged.base_offset,
            next: None,
        }]
    );
    assert_eq!(log.damaged(), report.damaged);
    let kept = Model {
        batches: model
            .batches
            .iter()
            .copied()
            .filter(|(b, _, _)| *b < damaged.base_offset)
            .collect(),
    };
    check_reads(&log, &kept);
}

#[test]
fn the_scrub_checks_each_unread_sealed_segment_once_at_its_pace() {
    let (storage, model, _) = stopped_cleanly(10);
    let (base, batches, _) = sealed_of_three_batches(&storage);
    let path = segment::log_path(&dir(), base);
    let at = batches[2].0 + 30;
    let byte = storage.file_bytes(&path).unwrap()[at];
    storage.corrupt(&path, at, &[!byte]);
    let (log, _) = open(&storage, true);
    let sealed = log.segment_count() - 1;
    let sealed_bytes: usize = log.segments[..sealed]
        .iter()
        .map(|s| {
            storage
                .file_len(&segment::log_path(&dir(), s.base_offset))
                .unwrap()
        })
        .sum();
    // One read runs its segment's check: the scrub finds the others.
    read_at(&log, model.batches[0].0, 1).unwrap();
    let pending = log.unchecked_segments();
    assert_eq!(pending.len(), sealed - 1);
    let mut paced = 0;
    for scrub in &pending {
        let mut pace = |bytes: usize| {
            paced += bytes;
            Box::pin(async {}) as futures::future::LocalBoxFuture<'static, ()>
        };
        block_on(scrub.run(&mut pace)).unwrap();
    }
    let first_size = storage
        .file_len(&segment::log_path(&dir(), Offset(0)))
        .unwrap();
    assert_eq!(paced, sealed_bytes - first_size, "every byte paced once");
    assert!(log.unchecked_segments().is_empty());
    assert_eq!(log.damaged_ranges(), 1, "the flipped byte");
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_without_index_files_costs_no_other_segment() {
    let (storage, model, _) = stopped_cleanly(11);
    let (base, batches, _) = sealed_of_three_batches(&storage);
    let (position, damaged) = batches[1];
    let path = segment::log_path(&dir(), base);
    let at = position + damaged.total_bytes() - 2;
    let byte = storage.file_bytes(&path).unwrap()[at];
    storage.corrupt(&path, at, &[byte ^ 0x40]);
    storage
        .remove_file(&segment::index_path(&dir(), base))
        .unwrap();
    storage
        .remove_file(&segment::time_index_path(&dir(), base))
        .unwrap();
    let (log, report) = open(&storage, true);
    assert_eq!(report.truncated_bytes, 0);
    let range = (damaged.base_offset, damaged.next_offset());
    check_reads_around(&log, &model, range, (Offset(0), Offset(0)));
}

#[test]
fn a_read_waiting_for_a_paced_scrub_makes_it_stop_pacing() {
    use futures::channel::oneshot;
    use futures::executor::LocalPool;
    use futures::future::LocalBoxFuture;
    use futures::task::LocalSpawnExt;
    use std::cell::Cell;

    let storage = MemStorage::default();
    let mut config = small_config();
    config.segment_bytes = 2 << 20;
    let open_at = |trusted_below| {
        block_on(Log::open(
            storage.clone(),
            dir(),
            config.clone(),
            trusted_below,
            0,
            &mut |_, _| None,
        ))
        .unwrap()
        .0
    };
    let mut log = open_at(Offset(0));
    let value = vec![b'v'; 100_000];
    for ts in 0..30 {
        let bytes = batch(&[&value], ts, None);
        let header = batch::check_batch(&bytes).unwrap();
        log.append(Bytes::from(bytes), &header, 0, ts).unwrap();
        flush(&mut log).unwrap();
    }
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    let log = open_at(Offset(i64::MAX));
    // The first segment, over 1 MiB: its check reads it in more than one chunk.
    let scrub = log.unchecked_segments().into_iter().next().unwrap();
    let (wake, slept) = oneshot::channel::<()>();
    let mut slept = Some(slept);
    let paces = Rc::new(Cell::new(0));
    let counted = paces.clone();
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner
        .spawn_local(async move {
            let mut pace = move |_| -> LocalBoxFuture<'static, ()> {
                counted.set(counted.get() + 1);
                match slept.take() {
                    Some(rx) => Box::pin(async move {
                        let _ = rx.await;
                    }),
                    None => Box::pin(async {}),
                }
            };
            scrub.run(&mut pace).await.unwrap();
        })
        .unwrap();
    pool.run_until_stalled();
    assert_eq!(paces.get(), 1, "the scrub sleeps after its first chunk");
    let cursor = log
        .cursor_at(Offset(0), log.durable_end())
        .unwrap()
        .unwrap();
    let read = spawner
        .spawn_local_with_handle(async move { cursor.read(Offset(0), 1).await })
        .unwrap();
    pool.run_until_stalled();
    wake.send(()).unwrap();
    assert!(!pool.run_until(read).unwrap().is_empty());
    assert_eq!(paces.get(), 1, "no more pacing once a read waits");
}

#[test]
fn a_sealed_segment_the_disk_cannot_read_fails_reads_as_damaged_and_no_others() {
    let (storage, model, _) = stopped_cleanly(12);
    let (base, batches, next_base) = sealed_of_three_batches(&storage);
    let path = segment::log_path(&dir(), base);
    // The check reads the segment (under 1 MiB) in one chunk: a bad byte anywhere fails it all.
    storage.fail_reads_at(&path, batches[2].0 + 10);
    let (log, _) = open(&storage, true);
    check_reads_around(&log, &model, (base, next_base), (Offset(0), Offset(0)));
    let health = health_of(&log, base);
    assert_eq!(health.end, 0);
    assert!(health
        .read_error
        .as_deref()
        .unwrap()
        .contains("injected read"));
}

/// The offsets each batch returned by `bytes` starts at.
fn batch_bases(mut bytes: &[u8]) -> Vec<Offset> {
    let mut bases = Vec::new();
    while !bytes.is_empty() {
        let header = BatchHeader::parse(bytes).expect("whole batches");
        bases.push(header.base_offset);
        bytes = &bytes[header.total_bytes()..];
    }
    bases
}

#[test]
fn a_read_bound_below_the_durable_end_serves_nothing_at_or_past_it() {
    let storage = MemStorage::default();
    let mut log = open_with(&storage, Config::default().log);
    let mut model = Model::default();
    let mut rng = Rng(5);
    for i in 0..10 {
        append_random(&mut log, &mut model, &mut rng, 1000 + 100 * i);
    }
    flush(&mut log).unwrap();
    assert_eq!(log.durable_end(), log.end());
    let bases: Vec<Offset> = model.batches.iter().map(|(o, _, _)| *o).collect();
    // A high watermark below the durable end, as replication will leave it.
    let upto = bases[6];
    for from in [Offset(0), bases[3], upto.next(-1)] {
        let cursor = log.cursor_at(from, upto).unwrap().expect("below the bound");
        let read = block_on(cursor.read(from, 1 << 20)).unwrap();
        let holding = bases.iter().rposition(|b| *b <= from).unwrap();
        assert_eq!(batch_bases(&read), bases[holding..6], "reading from {from}");
        let payload = block_on(cursor.read_payload(from, |_, available| available, usize::MAX));
        let payload = payload.unwrap().expect("readable");
        assert_eq!(
            payload.records.len(),
            read.len(),
            "the fetch path stops there too"
        );
    }
    for at_or_past in [upto, bases[8], log.end()] {
        assert!(log.cursor_at(at_or_past, upto).unwrap().is_none());
    }
    let whole = log
        .cursor_at(Offset(0), log.durable_end())
        .unwrap()
        .unwrap();
    let read = block_on(whole.read(Offset(0), 1 << 20)).unwrap();
    assert_eq!(
        batch_bases(&read),
        bases,
        "bounded by the durable end: all of it"
    );

    // ListOffsets by timestamp finds nothing at or past the bound either.
    let below = |ts| {
        let cursor = log.cursor_for_timestamp(ts, upto).ok()??;
        block_on(cursor.find_timestamp(ts, Offset(0))).unwrap()
    };
    assert_eq!(below(1300), Some((bases[3], 1300)));
    assert_eq!(below(1800), None);
    let found = timestamp_cursor(&log, 1800).expect("below the durable end");
    assert_eq!(
        block_on(found.find_timestamp(1800, Offset(0))).unwrap(),
        Some((bases[8], 1800))
    );
}

#[test]
fn a_read_bound_cuts_only_the_segment_it_falls_in() {
    let storage = MemStorage::default();
    let mut log = open_with(&storage, small_config());
    let mut model = Model::default();
    let mut rng = Rng(13);
    for i in 0..60 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    assert!(log.segment_count() > 5);
    let bases: Vec<Offset> = model.batches.iter().map(|(o, _, _)| *o).collect();
    let upto = bases[40];
    for (i, &base) in bases[..40].iter().enumerate() {
        let cursor = log.cursor_at(base, upto).unwrap().expect("below the bound");
        let bounded = batch_bases(&block_on(cursor.read(base, 1 << 20)).unwrap());
        let whole = log.cursor_at(base, log.durable_end()).unwrap().unwrap();
        let unbounded = batch_bases(&block_on(whole.read(base, 1 << 20)).unwrap());
        assert_eq!(bounded.first(), Some(&bases[i]));
        let below: Vec<Offset> = unbounded.into_iter().filter(|b| *b < upto).collect();
        assert_eq!(
            bounded, below,
            "reading from {base}: the same batches, up to the bound"
        );
    }
}

#[test]
fn retention_keeps_every_segment_not_wholly_below_its_bound() {
    let storage = MemStorage::default();
    let mut config = small_config();
    config.retention_bytes = 1;
    let mut log = open_with(&storage, config);
    let mut model = Model::default();
    let mut rng = Rng(8);
    for i in 0..120 {
        append_random(&mut log, &mut model, &mut rng, i);
    }
    flush(&mut log).unwrap();
    let upto = model.batches[60].0;
    assert!(log.apply_retention(1_000, upto) > 0);
    assert!(log.log_start() < upto);
    let last_below = upto.next(-1);
    assert!(
        log.cursor_at(last_below, upto).unwrap().is_some(),
        "the segment holding the bound's last offset stays"
    );
    assert!(log.apply_retention(1_000, log.durable_end()) > 0);
    assert!(log.log_start() > upto);
}

#[test]
#[should_panic(expected = "past the durable end")]
fn a_read_bound_past_the_durable_end_is_a_bug() {
    let storage = MemStorage::default();
    let mut log = open_with(&storage, Config::default().log);
    let bytes = batch(&[b"a"], 0, None);
    let header = batch::check_batch(&bytes).unwrap();
    log.append(Bytes::from(bytes), &header, 0, 0).unwrap();
    let _ = log.cursor_at(Offset(0), log.end());
}

/// Appends one small batch at leader epoch `epoch`; returns its base offset.
fn append_at_epoch(log: &mut Log<MemStorage>, epoch: i32) -> Offset {
    let bytes = batch(&[b"v"], 0, None);
    let header = batch::check_batch(&bytes).unwrap();
    log.append(Bytes::from(bytes), &header, epoch, 0)
        .unwrap()
        .base_offset
}

/// A leader acting on a stale image (a restarted broker replaying the quorum's log) may believe
/// it leads at an epoch the log has moved past: its batch would put an older epoch after a newer
/// one, where no follower's divergence check could find it, so it is refused.
#[test]
fn an_append_below_the_latest_epoch_is_refused() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    append_at_epoch(&mut log, 18);
    let end = log.end();
    let bytes = batch(&[b"v"], 0, None);
    let header = batch::check_batch(&bytes).unwrap();
    assert_eq!(
        log.append(Bytes::from(bytes), &header, 15, 0).err(),
        Some(ErrorCode::NotLeaderOrFollower)
    );
    assert_eq!(log.end(), end, "nothing appended");
    assert_eq!(
        append_at_epoch(&mut log, 18),
        end,
        "the current epoch appends"
    );
}

fn epoch_pairs(log: &Log<MemStorage>) -> Vec<(i32, i64)> {
    log.epoch_entries()
        .iter()
        .map(|e| (e.epoch.0, e.start.0))
        .collect()
}

#[test]
fn the_epoch_cache_is_written_with_the_flush_and_survives_crashes() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    let path = dir().join(EPOCH_CHECKPOINT_FILE);
    append_at_epoch(&mut log, 0);
    log.assign_epoch_start(LeaderEpoch(2), log.end());
    append_at_epoch(&mut log, 2);
    append_at_epoch(&mut log, 2);
    assert_eq!(epoch_pairs(&log), [(0, 0), (2, 1)]);
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(0)),
        Some((LeaderEpoch(0), Offset(1)))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(2)),
        Some((LeaderEpoch(2), Offset(3))),
        "the latest epoch ends at the log end"
    );
    assert!(storage.file_bytes(&path).is_none());
    flush(&mut log).unwrap();
    assert_eq!(storage.file_bytes(&path).unwrap(), b"0\n2\n0 0\n2 1\n");

    // An epoch assigned without records, then power loss: recovery drops it with the log end.
    log.assign_epoch_start(LeaderEpoch(3), log.end());
    assert!(log.has_pending(), "the changed cache waits for a flush");
    flush(&mut log).unwrap();
    drop(log);
    storage.crash(|_, _| 0);
    let (mut log, _) = open(&storage, false);
    assert_eq!(epoch_pairs(&log), [(0, 0), (2, 1)]);

    // Unflushed batches of a new epoch torn by power loss: their entry goes with them.
    append_at_epoch(&mut log, 4);
    flush(&mut log).unwrap();
    append_at_epoch(&mut log, 5);
    let job = log.take_flush().unwrap();
    drop(job);
    drop(log);
    storage.crash(|_, _| 0);
    let (mut log, _) = open(&storage, false);
    assert_eq!(log.end(), Offset(4));
    assert_eq!(epoch_pairs(&log), [(0, 0), (2, 1), (4, 3)]);

    // Truncation and DeleteRecords cut it from either end.
    block_on(log.truncate_to(Offset(2))).unwrap();
    assert_eq!(epoch_pairs(&log), [(0, 0), (2, 1)]);
    flush(&mut log).unwrap();
    let (_, checkpoint) = log.advance_log_start(Offset(2)).unwrap();
    block_on(checkpoint.write()).unwrap();
    assert_eq!(epoch_pairs(&log), [(2, 2)]);
    flush(&mut log).unwrap();
    assert_eq!(storage.file_bytes(&path).unwrap(), b"0\n1\n2 2\n");
}

#[test]
fn a_missing_or_damaged_epoch_checkpoint_is_rebuilt_from_the_scanned_batches() {
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, false);
    for epoch in [1, 1, 3, 3, 3, 6] {
        append_at_epoch(&mut log, epoch);
    }
    flush(&mut log).unwrap();
    let expected = epoch_pairs(&log);
    assert_eq!(expected, [(1, 0), (3, 2), (6, 5)]);
    drop(log);
    let path = dir().join(EPOCH_CHECKPOINT_FILE);
    for damage in [
        None,
        Some(&b"0\n3\n1 0\n"[..]),
        Some(&b"0\n2\n3 1\n1 4\n"[..]),
    ] {
        match damage {
            None => storage.remove_file(&path).unwrap(),
            Some(text) => block_on(super::super::write_atomically(
                &storage,
                &path,
                text.to_vec(),
            ))
            .unwrap(),
        }
        let (mut log, _) = open(&storage, false);
        assert_eq!(epoch_pairs(&log), expected, "{damage:?}");
        assert!(log.has_pending(), "the rebuilt cache is written back");
        flush(&mut log).unwrap();
        assert_eq!(
            LeaderEpochCache::decode(&storage.file_bytes(&path).unwrap())
                .unwrap()
                .entries(),
            log.epoch_entries()
        );
    }
}
