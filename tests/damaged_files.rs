//! Files damaged while the broker was down, on a real file system, with 1 and 2 shards: what a
//! power loss or a bad disk leaves behind. After a kill -9: garbage after the last batch of one
//! active segment, zeros after another's (a size that reached the disk before the data did), an
//! index cut short, a time index overwritten with garbage, an index deleted, and the newest
//! producer snapshot cut in half. After a clean stop: a sealed segment's index cut short.
//! Each restart must serve exactly the acknowledged records at their offsets, answer offsets by
//! timestamp as before, take new records at the next offsets, and never panic.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::deliveries::{producer, send_waiting};
use common::{Broker, SHARD_COUNTS};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "damaged";
const PARTITIONS: i32 = 2;
/// Small segments, so each partition has several sealed ones (and producer snapshots).
const SEGMENT_BYTES: &str = "log.segment.bytes=65536";
const RECORDS: usize = 3000;
const TIMEOUT: Duration = Duration::from_secs(30);

use common::consumer::Consumed as Record;

/// Sends records `from..to` (about 100 bytes each, round robin) with the idempotent producer, one
/// small batch at a time so that batches and segments are many; returns what was acknowledged.
fn produce(broker: &Broker, from: usize, to: usize) -> Vec<(i32, i64, String)> {
    let settings = [
        ("enable.idempotence", "true"),
        ("linger.ms", "0"),
        ("batch.num.messages", "20"),
    ];
    let (producer, deliveries) = producer(broker, &settings);
    for i in from..to {
        let value = format!("{i:06}:{}", "d".repeat(90));
        let record = BaseRecord::<(), _>::to(TOPIC)
            .partition((i % PARTITIONS as usize) as i32)
            .payload(&value);
        send_waiting(&producer, record);
    }
    producer.flush(TIMEOUT).unwrap();
    let failed = deliveries.failed.lock().unwrap();
    assert!(failed.is_empty(), "{:?}", &failed[..1]);
    let acked = deliveries.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), to - from);
    acked
}

/// Every partition from its beginning to its end.
fn read_all(broker: &Broker) -> BTreeMap<i32, Vec<Record>> {
    common::consumer::read_partitions(broker, TOPIC, PARTITIONS)
}

/// The offset ListOffsets answers for `timestamp` in `partition`.
fn offset_for_time(broker: &Broker, partition: i32, timestamp: i64) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(timestamp))
        .unwrap();
    let found = common::consumer::to_the_end(broker)
        .offsets_for_times(tpl, TIMEOUT)
        .unwrap();
    match found.elements()[0].offset() {
        Offset::Offset(o) => o,
        other => panic!("offset for time {timestamp}: {other:?}"),
    }
}

/// What every restart must show: the acknowledged records exactly, in order, at their offsets.
fn check_exactly(cores: usize, read: &BTreeMap<i32, Vec<Record>>, acked: &[(i32, i64, String)]) {
    for p in 0..PARTITIONS {
        // Delivery reports of different batches can arrive in any order (see `Deliveries`).
        let mut want: Vec<(i64, &str)> = acked
            .iter()
            .filter(|(partition, _, _)| *partition == p)
            .map(|(_, offset, value)| (*offset, value.as_str()))
            .collect();
        want.sort_unstable();
        let got: Vec<(i64, &str)> = read
            .get(&p)
            .map(|records| records.iter().map(|(o, _, v)| (*o, v.as_str())).collect())
            .unwrap_or_default();
        assert_eq!(got.len(), want.len(), "cores={cores}: partition {p}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "cores={cores}: partition {p} differs first at {i}: read {:?}, acknowledged {:?}",
                &got[i..(i + 3).min(got.len())],
                &want[i..(i + 3).min(want.len())]
            );
        }
    }
}

/// Offsets by timestamp for a sample of the records: the first offset at or after the timestamp.
fn check_times(stage: &str, broker: &Broker, read: &BTreeMap<i32, Vec<Record>>) {
    for (p, records) in read {
        for (_, timestamp, _) in records.iter().step_by(records.len() / 7) {
            let expected = records.iter().find(|(_, t, _)| t >= timestamp).unwrap().0;
            assert_eq!(
                offset_for_time(broker, *p, *timestamp),
                expected,
                "{stage}: partition {p}, timestamp {timestamp}"
            );
        }
    }
}

/// The segment files of a partition with this extension, oldest first.
fn files(broker: &Broker, partition: i32, extension: &str) -> Vec<PathBuf> {
    let dir = broker.data_dir.join(format!("{TOPIC}-{partition}"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

fn cut(path: &Path, keep: impl Fn(u64) -> u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = file.metadata().unwrap().len();
    file.set_len(keep(size)).unwrap();
}

/// The damage a crash and a bad disk leave, spread over both partitions.
fn damage_after_crash(broker: &Broker) {
    let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    append(files(broker, 0, "log").last().unwrap(), &garbage);
    append(files(broker, 1, "log").last().unwrap(), &[0u8; 4096]);
    cut(files(broker, 0, "index").last().unwrap(), |size| {
        size.saturating_sub(5)
    });
    let sealed_time_index = &files(broker, 0, "timeindex")[1];
    let size = std::fs::metadata(sealed_time_index).unwrap().len() as usize;
    std::fs::write(sealed_time_index, &garbage[..size.min(garbage.len())]).unwrap();
    std::fs::remove_file(&files(broker, 1, "index")[1]).unwrap();
    let snapshots = files(broker, 1, "snapshot");
    assert!(!snapshots.is_empty(), "rolls wrote producer snapshots");
    cut(snapshots.last().unwrap(), |size| size / 2);
}

fn restart_and_check(cores: usize, stage: &str, broker: &mut Broker, acked: &[(i32, i64, String)]) {
    broker.restart();
    let read = read_all(broker);
    check_exactly(cores, &read, acked);
    check_times(&format!("cores={cores}, {stage}"), broker, &read);
    assert!(!broker.log().contains("panicked"), "{}", broker.log());
}

#[test]
fn damaged_segment_index_and_snapshot_files_lose_no_acknowledged_record() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start("damaged", cores, &[SEGMENT_BYTES]);
        common::create_topic(&mut common::connect(&broker), TOPIC, PARTITIONS);
        let mut acked = produce(&broker, 0, RECORDS);
        assert!(
            files(&broker, 0, "log").len() >= 3 && files(&broker, 1, "log").len() >= 3,
            "cores={cores}: several segments per partition"
        );

        broker.kill9();
        damage_after_crash(&broker);
        restart_and_check(cores, "after kill -9", &mut broker, &acked);
        assert!(
            broker.log().contains("torn or corrupt; truncating"),
            "cores={cores}: the torn tails were found:\n{}",
            broker.log()
        );
        // New records continue the offsets (the tails' bytes are gone, not counted).
        acked.extend(produce(&broker, RECORDS, RECORDS + 100));
        restart_check_after_clean_stop(cores, &mut broker, &acked);
    }
}

/// A clean stop trusts the index files at the next start; one cut short is rebuilt on its first
/// read and written back, so the start after that finds nothing to rebuild.
fn restart_check_after_clean_stop(cores: usize, broker: &mut Broker, acked: &[(i32, i64, String)]) {
    assert!(broker.terminate(), "cores={cores}: a clean stop");
    for p in 0..PARTITIONS {
        cut(&files(broker, p, "index")[0], |size| size / 2 + 3);
    }
    let count = |broker: &Broker, line: &str| broker.log().matches(line).count();
    let rebuilt = "damaged or missing; rebuilding";
    let written = "rebuilt index files written";
    let before = (count(broker, rebuilt), count(broker, written));
    restart_and_check(cores, "after a clean stop", broker, acked);
    assert!(broker.log().contains("clean start"), "cores={cores}");
    let cut_indexes = PARTITIONS as usize;
    assert_eq!(
        (count(broker, rebuilt), count(broker, written)),
        (before.0 + cut_indexes, before.1 + cut_indexes),
        "cores={cores}: each cut index rebuilt and written back"
    );

    assert!(broker.terminate(), "cores={cores}: a clean stop");
    let before = count(broker, rebuilt);
    restart_and_check(cores, "after the indexes were written back", broker, acked);
    assert_eq!(
        count(broker, rebuilt),
        before,
        "cores={cores}: nothing left to rebuild"
    );
}
