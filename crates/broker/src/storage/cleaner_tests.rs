//! Operation-sequence tests of compaction on the simulated disk: random keyed appends and
//! tombstones, rolls, cleanings at random times, crashes (also in the middle of a swap) and
//! reopens. After every step a full read of the log must give, for every key, exactly the latest
//! value written (a tombstone may be gone once `delete.retention.ms` has passed), with offsets
//! only going up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::executor::block_on;

use super::*;
use crate::config::{Config, LogConfig};
use crate::storage::batch::{self, build_batch};
use crate::storage::log::{Log, RecoveryReport};
use crate::storage::mem::MemStorage;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D) % n
    }
}

const RETENTION_MS: i64 = 1_000;

fn compact_config(min_ratio: f64) -> LogConfig {
    let mut config = Config::default().log;
    config.segment_bytes = 1024;
    config.index_interval_bytes = 128;
    config.cleanup_delete = false;
    config.cleanup_compact = true;
    config.delete_retention_ms = RETENTION_MS;
    config.min_cleanable_dirty_ratio = min_ratio;
    config
}

fn dir() -> PathBuf {
    PathBuf::from("/data/compacted-0")
}

fn open(
    storage: &MemStorage,
    config: &LogConfig,
    clean: bool,
) -> (Log<MemStorage>, RecoveryReport) {
    block_on(Log::open(
        storage.clone(),
        dir(),
        config.clone(),
        if clean { Offset(i64::MAX) } else { Offset(0) },
        0,
        &mut |_, _| None,
    ))
    .expect("open")
}

fn flush(log: &mut Log<MemStorage>) {
    if let Some(job) = log.take_flush() {
        let result = block_on(job.run());
        log.complete_flush(result).expect("flush");
    }
}

/// One cleaning, as the shard runs it; true if it rewrote anything.
fn clean(log: &mut Log<MemStorage>, now_ms: i64, budget: usize) -> bool {
    let Some(plan) = log.plan_cleaning(log.durable_end(), now_ms, budget) else {
        return false;
    };
    let Some(cleaned) = block_on(plan.run()).expect("cleaning runs") else {
        return false;
    };
    let finish = log.install_cleaned(cleaned);
    block_on(finish.write()).expect("cleaning finishes");
    true
}

/// What a consumer reading from the log start sees: (offset, key, value) in order.
type Seen = Vec<(Offset, Vec<u8>, Option<Vec<u8>>)>;

fn read_all(log: &Log<MemStorage>) -> Seen {
    let mut seen = Vec::new();
    let mut offset = log.log_start();
    while offset < log.durable_end() {
        let cursor = log
            .cursor_at(offset, log.durable_end())
            .unwrap()
            .expect("readable below the durable end");
        let bytes = block_on(cursor.read(offset, 64 * 1024)).unwrap();
        let before = offset;
        let mut at = 0;
        while let Some(header) = BatchHeader::parse(&bytes[at..]) {
            let size = header.total_bytes();
            if at + size > bytes.len() {
                break;
            }
            let whole = &bytes[at..at + size];
            batch::check_stored_batch(whole).expect("stored batches pass the check");
            let control = header.is_control().then_some(vec![]);
            for r in control
                .or_else(|| records::read_records(whole))
                .expect("test batches")
            {
                let at_offset = Offset(header.base_offset.0 + r.offset_delta);
                if at_offset >= offset {
                    let key = whole[r.key.clone().unwrap()].to_vec();
                    let value = (!r.tombstone).then(|| {
                        let key_end = r.key.clone().unwrap().end;
                        // The value follows its varint length right after the key.
                        let mut p = key_end;
                        let len = batch::read_varlong(whole, &mut p).unwrap() as usize;
                        whole[p..p + len].to_vec()
                    });
                    seen.push((at_offset, key, value));
                }
            }
            offset = offset.max(header.next_offset());
            at += size;
        }
        assert!(
            offset > before,
            "a read at {before} made no progress: {} bytes, segments {:?}",
            bytes.len(),
            log.segments
                .iter()
                .map(|s| (s.base_offset, s.next_offset, s.size, s.readable))
                .collect::<Vec<_>>()
        );
    }
    seen
}

/// Checks the compaction contract against the latest write of every key.
fn check(log: &Log<MemStorage>, latest: &BTreeMap<Vec<u8>, (Offset, Option<Vec<u8>>)>, now: i64) {
    let seen = read_all(log);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "offsets go up");
    let mut last_seen: BTreeMap<Vec<u8>, (Offset, Option<Vec<u8>>)> = BTreeMap::new();
    for (offset, key, value) in seen {
        last_seen.insert(key, (offset, value));
    }
    let horizon = log.cleaner_checkpoint.tombstone_horizon(now, RETENTION_MS);
    for (key, (offset, value)) in latest {
        match last_seen.get(key) {
            Some(got) => assert_eq!(got, &(*offset, value.clone()), "latest of {key:?}"),
            None => assert!(
                value.is_none() && *offset < horizon,
                "key {key:?} lost (latest at {offset}, horizon {horizon})"
            ),
        }
    }
}

fn append(
    log: &mut Log<MemStorage>,
    latest: &mut BTreeMap<Vec<u8>, (Offset, Option<Vec<u8>>)>,
    rng: &mut Rng,
    now: i64,
) {
    let count = 1 + rng.below(4) as usize;
    let owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..count)
        .map(|i| {
            let key = format!("key-{}", rng.below(12)).into_bytes();
            let value = (rng.below(8) != 0).then(|| format!("value-{now}-{i}").into_bytes());
            (key, value)
        })
        .collect();
    let records: Vec<batch::KeyValue> = owned
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let bytes = build_batch(&records, now);
    let header = batch::check_batch(&bytes).unwrap();
    let appended = log
        .append(Bytes::from(bytes.clone()), &header, 0, now)
        .unwrap();
    for (i, (key, value)) in owned.into_iter().enumerate() {
        latest.insert(key, (Offset(appended.base_offset.0 + i as i64), value));
    }
}

#[test]
fn random_appends_cleanings_and_crashes_keep_the_latest_value_of_every_key() {
    for seed in 1..40 {
        let mut rng = Rng(seed);
        let config = compact_config([0.0, 0.3, 0.5][seed as usize % 3]);
        // Two open sealed files at most: reads reopen them all the time.
        let storage = MemStorage::with_sealed_files_open_max(2);
        let (mut log, _) = open(&storage, &config, false);
        let mut latest = BTreeMap::new();
        let mut now = 10_000;
        let mut cleanings = 0;
        for _ in 0..300 {
            now += rng.below(50) as i64;
            match rng.below(20) {
                0..=13 => append(&mut log, &mut latest, &mut rng, now),
                14..=16 => flush(&mut log),
                17..=18 => {
                    flush(&mut log);
                    let budget = [1024 * 1024, 400][rng.below(2) as usize];
                    cleanings += clean(&mut log, now, budget) as usize;
                }
                _ => {
                    // Power loss with everything flushed and an unclean reopen, or a clean stop
                    // and a reopen that loads sealed segments from their index files alone (a
                    // compacted one's end then is only bounded by the next segment's base).
                    flush(&mut log);
                    let clean_stop = rng.below(2) == 0;
                    if clean_stop {
                        block_on(log.close_plan().run()).expect("clean stop");
                    } else {
                        storage.crash(|_, n| n);
                    }
                    drop(log);
                    (log, _) = open(&storage, &config, clean_stop);
                }
            }
            flush(&mut log);
            check(&log, &latest, now);
        }
        assert!(cleanings > 0, "seed {seed}: the test must clean");
    }
}

#[test]
fn a_full_cleaning_leaves_one_record_per_key_and_tombstones_go_after_the_delay() {
    let config = compact_config(0.0);
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, &config, false);
    let mut latest = BTreeMap::new();
    let mut rng = Rng(99);
    let now = 50_000;
    for _ in 0..200 {
        append(&mut log, &mut latest, &mut rng, now);
    }
    flush(&mut log);
    let size_before = log.size_bytes();
    assert!(clean(&mut log, now, 1024 * 1024));
    check(&log, &latest, now);
    assert!(
        log.size_bytes() < size_before / 2,
        "compaction shrinks the log"
    );
    let cleanable_end = log.segments.last().unwrap().base_offset;
    let seen = read_all(&log);
    let below: Vec<_> = seen.iter().filter(|(o, _, _)| *o < cleanable_end).collect();
    let mut keys: Vec<_> = below.iter().map(|(_, k, _)| k.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        below.len(),
        "one record per key below the active segment"
    );
    let tombstones_before = below.iter().filter(|(_, _, v)| v.is_none()).count();
    assert!(tombstones_before > 0, "the test writes tombstones");

    // Before the delay nothing more goes; after it the tombstones do.
    assert!(!clean(&mut log, now + RETENTION_MS - 1, 1024 * 1024));
    // A new write makes the log dirty again, so the next cleaning runs.
    for _ in 0..40 {
        append(&mut log, &mut latest, &mut rng, now + RETENTION_MS);
    }
    flush(&mut log);
    assert!(clean(&mut log, now + RETENTION_MS, 1024 * 1024));
    check(&log, &latest, now + RETENTION_MS);
    let remaining_old_tombstones = read_all(&log)
        .iter()
        .filter(|(o, _, v)| *o < cleanable_end && v.is_none())
        .count();
    assert_eq!(
        remaining_old_tombstones, 0,
        "tombstones older than the delay are gone"
    );
}

#[test]
fn crash_before_the_commit_point_drops_the_copy_and_after_it_finishes_the_swap() {
    for commit in [false, true] {
        let config = compact_config(0.0);
        let storage = MemStorage::default();
        let (mut log, _) = open(&storage, &config, false);
        let mut latest = BTreeMap::new();
        let mut rng = Rng(5);
        for _ in 0..120 {
            append(&mut log, &mut latest, &mut rng, 20_000);
        }
        flush(&mut log);
        let plan = log
            .plan_cleaning(log.durable_end(), 20_000, 1 << 20)
            .unwrap();
        let cleaned = block_on(plan.run()).unwrap().unwrap();
        if commit {
            // Crash right after the rename that commits the first group's swap.
            let group = &cleaned.groups[0];
            let base = group.segment.base_offset;
            storage
                .rename(
                    &cleaned_path(&dir(), base),
                    &swap_path(&dir(), base, group.end),
                )
                .unwrap();
        }
        drop(cleaned);
        drop(log);
        storage.crash(|_, n| n);
        let (log, _) = open(&storage, &config, false);
        let names = storage.list_dir(&dir()).unwrap();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
            "recovery leaves no temporary files: {names:?}"
        );
        check(&log, &latest, 20_000);
    }
}

#[test]
fn checkpoint_round_trips_and_horizons_stay_bounded() {
    let mut checkpoint = CleanerCheckpoint::default();
    for i in 1..100 {
        checkpoint = checkpoint.after_cleaning(Offset(i * 10), i * 100, 1_000);
        assert!(checkpoint.horizons.len() <= limits::CLEANER_HORIZONS_MAX);
        assert_eq!(
            CleanerCheckpoint::decode(&checkpoint.encode()),
            Some(checkpoint.clone())
        );
    }
    assert_eq!(checkpoint.cleaned_to, Offset(990));
    // Cleanings at times <= 9_900 - 1_000 have expired: tombstones below their offsets may go.
    assert_eq!(checkpoint.tombstone_horizon(9_900, 1_000), Offset(890));
    assert_eq!(checkpoint.tombstone_horizon(0, 1_000), Offset(0));
    assert_eq!(CleanerCheckpoint::decode(b"12\nnonsense\n"), None);
}

#[test]
fn aborted_transactional_records_go_and_markers_stay() {
    let config = compact_config(0.0);
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, &config, false);
    let committed = build_batch(&[(Some(b"a"), Some(b"committed"))], 1);
    let header = batch::check_batch(&committed).unwrap();
    log.append(Bytes::from(committed.clone()), &header, 0, 1)
        .unwrap();
    let aborted = batch::build_transactional_batch(&[(Some(b"b"), Some(b"aborted"))], 2, 7, 0);
    let header = batch::check_batch(&aborted).unwrap();
    let first = log
        .append(Bytes::from(aborted.clone()), &header, 0, 2)
        .unwrap()
        .base_offset;
    let marker = batch::build_control_batch(7, 0, batch::ControlType::Abort, 0, 3);
    let header = BatchHeader::parse(&marker).unwrap();
    let marker_offset = log
        .append(Bytes::from(marker.clone()), &header, 0, 3)
        .unwrap()
        .base_offset;
    log.add_aborted(AbortedTxn {
        producer_id: ProducerId(7),
        first_offset: first,
        last_offset: marker_offset,
        last_stable_offset: marker_offset.next(1),
    });
    let mut latest = BTreeMap::new();
    latest.insert(b"a".to_vec(), (Offset(0), Some(b"committed".to_vec())));
    let mut rng = Rng(3);
    // Other keys roll the segment holding the transaction out of the active one.
    while log.segment_count() < 3 {
        append(&mut log, &mut latest, &mut rng, 10);
    }
    flush(&mut log);
    assert!(clean(&mut log, 10, 1 << 20));
    let seen = read_all(&log);
    assert!(
        seen.iter().all(|(_, key, _)| key != b"b"),
        "aborted record gone"
    );
    check(&log, &latest, 10);
    let cursor = log
        .cursor_at(marker_offset, log.durable_end())
        .unwrap()
        .unwrap();
    let bytes = block_on(cursor.read(marker_offset, 1)).unwrap();
    let header = BatchHeader::parse(&bytes).unwrap();
    assert!(
        header.is_control() && header.base_offset == marker_offset,
        "the marker stays"
    );
}

#[test]
fn a_cleaning_refuses_a_batch_that_fails_its_crc_check() {
    let config = compact_config(0.0);
    let storage = MemStorage::default();
    let (mut log, _) = open(&storage, &config, false);
    let mut latest = BTreeMap::new();
    let mut rng = Rng(7);
    let now = 50_000;
    for _ in 0..200 {
        append(&mut log, &mut latest, &mut rng, now);
    }
    flush(&mut log);
    block_on(log.close_plan().run()).unwrap();
    drop(log);
    // A byte of the first batch's records, while the broker was down.
    let path = segment::log_path(&dir(), Offset(0));
    let at = HEADER_BYTES + 3;
    let byte = storage.file_bytes(&path).unwrap()[at];
    storage.corrupt(&path, at, &[!byte]);
    let damaged = storage.file_bytes(&path).unwrap();
    let (log, _) = open(&storage, &config, true);
    // The largest timestamps the plan needs, as the shard loads them first.
    for load in log.unloaded_indexes() {
        block_on(load.run()).unwrap();
    }
    let plan = log
        .plan_cleaning(log.durable_end(), now, 1024 * 1024)
        .expect("dirty");
    let err = block_on(plan.run()).err().expect("refused");
    assert!(err.to_string().contains("fails its CRC check"), "{err}");
    assert_eq!(
        storage.file_bytes(&path).unwrap(),
        damaged,
        "left as it was"
    );
}
