//! Files damaged while the broker was down, on a real file system, with 1 and 2 shards: what a
//! power loss or a bad disk leaves behind. After a kill -9: garbage after the last batch of one
//! active segment, zeros after another's (a size that reached the disk before the data did), an
//! index cut short, a time index overwritten with garbage, an index deleted, and the newest
//! producer snapshot cut in half. After a clean stop: a sealed segment's index cut short.
//! Each restart must serve exactly the acknowledged records at their offsets, answer offsets by
//! timestamp as before, take new records at the next offsets, and never panic.
//!
//! Segments damaged while the broker was stopped cleanly (a failing disk, a careless operator): a
//! byte flipped in a sealed segment and in the active one, a sealed segment cut short inside a
//! batch. No fetch may ever answer a batch whose CRC fails; a consumer gets CORRUPT_MESSAGE at
//! the damaged batch and reads on after DeleteRecords moves the log start past it; the offsets
//! lost with a cut-short tail or a damaged active segment are skipped, never wedging a reader.
//! DescribeLogDirs reports each damaged range in Sluice's tagged field, and `sluice log-dirs
//! describe` prints them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::deliveries::{producer, send_waiting};
use common::{Broker, SHARD_COUNTS};
use futures::executor::block_on;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_client::damaged_ranges::{self, DamageKind, DamagedRange, DAMAGED_RANGES_TAG};

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

/// A batch in a segment file: its position and length, and its offsets (first..next).
#[derive(Debug, Clone, Copy)]
struct StoredBatch {
    position: usize,
    len: usize,
    first: i64,
    next: i64,
}

/// The batches of a segment file, from their headers.
fn stored_batches(path: &Path) -> Vec<StoredBatch> {
    let bytes = std::fs::read(path).unwrap();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let first = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = 12 + i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let delta = i32::from_be_bytes(bytes[at + 23..at + 27].try_into().unwrap());
        found.push(StoredBatch {
            position: at,
            len,
            first,
            next: first + delta as i64 + 1,
        });
        at += len;
    }
    found
}

/// Flips one bit of the byte before the last of `batch` (in its records: the CRC covers it).
fn flip_byte_in(path: &Path, batch: StoredBatch) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[batch.position + batch.len - 2] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

/// One raw Fetch (v12) of `partition` at `offset`: its error code and records.
fn raw_fetch(s: &mut std::net::TcpStream, partition: i32, offset: i64) -> (i16, Vec<u8>) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(64 << 10)])]);
    let response: FetchResponse = common::call(s, ApiKey::Fetch, 12, &request);
    let data = &response.responses[0].partitions[0];
    let records = data
        .records
        .as_ref()
        .map(|r| r.to_vec())
        .unwrap_or_default();
    (data.error_code, records)
}

/// Fetches `partition` with raw Fetch requests from `from` to `end`, checking every batch of
/// every answer is whole and passes its CRC check. Returns the offset ranges answered
/// CORRUPT_MESSAGE, stepping past each to the next offset `damaged` (first..next) names.
fn fetch_all_checking_crcs(
    broker: &Broker,
    partition: i32,
    from: i64,
    end: i64,
    damaged: &[(i64, i64)],
) -> Vec<i64> {
    const CORRUPT_MESSAGE: i16 = 2;
    let mut s = common::connect(broker);
    let mut refused_at = Vec::new();
    let mut offset = from;
    while offset < end {
        let (error, records) = raw_fetch(&mut s, partition, offset);
        if error == CORRUPT_MESSAGE {
            let (_, next) = damaged
                .iter()
                .find(|(first, next)| (*first..*next).contains(&offset))
                .unwrap_or_else(|| panic!("partition {partition}: {offset} refused as corrupt"));
            refused_at.push(offset);
            offset = *next;
            continue;
        }
        assert_eq!(error, 0, "partition {partition} at {offset}");
        assert!(
            !records.is_empty(),
            "partition {partition}: nothing at {offset}"
        );
        let mut at = 0;
        while at < records.len() {
            let len =
                12 + i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
            let batch = &records[at..at + len];
            let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
            assert_eq!(
                crc32c::crc32c(&batch[21..]),
                crc,
                "partition {partition}: a batch failing its CRC served at {offset}"
            );
            let first = i64::from_be_bytes(batch[..8].try_into().unwrap());
            let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
            offset = offset.max(first + delta as i64 + 1);
            at += len;
        }
    }
    refused_at
}

/// A librdkafka consumer reading `partition` from its beginning until an error or its end:
/// what it read, and the error that stopped it, if one did.
fn consume_until_error(broker: &Broker, partition: i32) -> (Vec<Record>, Option<KafkaError>) {
    let consumer: BaseConsumer = common::consumer::to_the_end(broker);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => read.push((
                m.offset(),
                m.timestamp().to_millis().unwrap_or(-1),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return (read, None),
            Some(Err(e)) => return (read, Some(e)),
            None => {}
        }
    }
    panic!("partition {partition}: neither an error nor the end");
}

/// Kafka's DeleteRecords, through librdkafka's admin client: the log start moves to `offset`.
fn delete_records_before(broker: &Broker, partition: i32, offset: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .unwrap();
    let done = block_on(admin.delete_records(&tpl, &AdminOptions::new())).unwrap();
    assert_eq!(done.elements()[0].error(), Ok(()), "DeleteRecords");
}

/// The acknowledged records of `partition` outside `lost` (first..next ranges), by offset.
fn acked_outside(
    acked: &[(i32, i64, String)],
    partition: i32,
    lost: &[(i64, i64)],
) -> Vec<(i64, String)> {
    let mut want: Vec<(i64, String)> = acked
        .iter()
        .filter(|(p, o, _)| *p == partition && !lost.iter().any(|(a, b)| (*a..*b).contains(o)))
        .map(|(_, o, v)| (*o, v.clone()))
        .collect();
    want.sort();
    want
}

fn offsets_and_values(read: &[Record]) -> Vec<(i64, String)> {
    read.iter().map(|(o, _, v)| (*o, v.clone())).collect()
}

#[test]
fn damaged_segments_after_a_clean_stop_are_never_served_and_readers_move_past_them() {
    for cores in SHARD_COUNTS {
        // With one shard reads find the damage (no scrub); with two, the scrub finds it first.
        let scrub = if cores == 1 {
            "sluice.log.scrub.bytes.per.sec=0"
        } else {
            "sluice.log.scrub.bytes.per.sec=1073741824"
        };
        let mut broker = Broker::start("damaged-segments", cores, &[SEGMENT_BYTES, scrub]);
        common::create_topic(&mut common::connect(&broker), TOPIC, PARTITIONS);
        let acked = produce(&broker, 0, RECORDS);
        let end = |p: i32| acked.iter().filter(|(q, _, _)| *q == p).count() as i64;
        assert!(broker.terminate(), "cores={cores}: a clean stop");

        // Partition 0: a byte flipped in the second batch of its second (sealed) segment.
        let logs0 = files(&broker, 0, "log");
        assert!(logs0.len() >= 3, "cores={cores}: several segments");
        let flipped = stored_batches(&logs0[1])[1];
        let flipped_segment = base_offset_of(&logs0[1]);
        flip_byte_in(&logs0[1], flipped);
        let damaged = (flipped.first, flipped.next);
        // Partition 1: its first segment cut short inside its middle batch, and a byte flipped
        // in a batch of its active segment.
        let logs1 = files(&broker, 1, "log");
        let first_segment = stored_batches(&logs1[0]);
        let cut_at = first_segment[first_segment.len() / 2];
        cut(&logs1[0], |_| (cut_at.position + cut_at.len / 2) as u64);
        let second_base = stored_batches(&logs1[1])[0].first;
        let active = stored_batches(logs1.last().unwrap());
        let torn = active[active.len() / 2];
        flip_byte_in(logs1.last().unwrap(), torn);
        let lost1 = [(cut_at.first, second_base), (torn.first, end(1))];
        let ranges = [
            vec![DamagedRange {
                kind: DamageKind::Corrupt,
                segment_base_offset: flipped_segment,
                position: flipped.position as i64,
                size_bytes: flipped.len as i64,
                first_offset: damaged.0,
                last_offset: damaged.1 - 1,
            }],
            vec![
                // Recovery finds the damaged active segment first; the cut one is found later.
                DamagedRange {
                    kind: DamageKind::Truncated,
                    segment_base_offset: base_offset_of(logs1.last().unwrap()),
                    position: torn.position as i64,
                    size_bytes: std::fs::metadata(logs1.last().unwrap()).unwrap().len() as i64
                        - torn.position as i64,
                    first_offset: torn.first,
                    last_offset: -1,
                },
                DamagedRange {
                    kind: DamageKind::Lost,
                    segment_base_offset: base_offset_of(&logs1[0]),
                    position: cut_at.position as i64,
                    size_bytes: (cut_at.len / 2) as i64,
                    first_offset: cut_at.first,
                    last_offset: second_base - 1,
                },
            ],
        ];

        broker.restart();
        if cores > 1 {
            let deadline = std::time::Instant::now() + TIMEOUT;
            while !(broker.log().contains("fail their check")
                && broker.log().contains("cut short inside a batch"))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the scrub found nothing"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Raw fetches never see a batch failing its CRC; partition 0 answers CORRUPT_MESSAGE
        // at the damaged batch only, partition 1 skips what it lost.
        let refused = fetch_all_checking_crcs(&broker, 0, 0, end(0), &[damaged]);
        assert_eq!(refused, vec![damaged.0], "cores={cores}");
        let refused = fetch_all_checking_crcs(&broker, 1, 0, torn.first, &[]);
        assert!(refused.is_empty(), "cores={cores}");
        let log = broker.log();
        for line in [
            "fail their check",
            "cut short inside a batch",
            "torn or corrupt; truncating",
        ] {
            assert!(log.contains(line), "cores={cores}: {line}:\n{log}");
        }
        assert!(!log.contains("panicked"), "{log}");

        // librdkafka reads partition 0 up to the damaged batch, then reports the corrupt
        // message (librdkafka's name for error 2, CORRUPT_MESSAGE, is INVALID_MSG); after
        // DeleteRecords past it, everything after it.
        let (read, error) = consume_until_error(&broker, 0);
        assert!(
            matches!(
                error,
                Some(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::InvalidMessage
                ))
            ),
            "cores={cores}: {error:?}"
        );
        let before = acked_outside(&acked, 0, &[(damaged.0, i64::MAX)]);
        assert_eq!(offsets_and_values(&read), before, "cores={cores}");
        delete_records_before(&broker, 0, damaged.1);
        let (read, error) = consume_until_error(&broker, 0);
        assert!(error.is_none(), "cores={cores}: {error:?}");
        let after = acked_outside(&acked, 0, &[(0, damaged.1)]);
        assert_eq!(offsets_and_values(&read), after, "cores={cores}");

        // Partition 1 reads to its end without an error, past the offsets it lost.
        let (read, error) = consume_until_error(&broker, 1);
        assert!(error.is_none(), "cores={cores}: {error:?}");
        assert_eq!(
            offsets_and_values(&read),
            acked_outside(&acked, 1, &lost1),
            "cores={cores}"
        );

        let metrics = broker.admin_get("/metrics");
        let found: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("sluice_log_damaged_ranges_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(
            found, 3.0,
            "cores={cores}: the two flipped bytes and the cut:\n{metrics}"
        );
        // Partition 0: the flipped byte; partition 1: the cut and the damaged active segment.
        for (p, ranges) in [(0, 1), (1, 2)] {
            let gauge = format!("partition=\"{p}\"}} {ranges}");
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("sluice_partition_damaged_ranges{")
                        && l.contains(&format!("topic=\"{TOPIC}\""))
                        && l.ends_with(&gauge)),
                "cores={cores}: partition {p}:\n{metrics}"
            );
        }
        check_log_dirs(cores, &broker, &ranges);
        assert!(broker.terminate());
    }
}

/// The base offset in a segment file's name.
fn base_offset_of(path: &Path) -> i64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// DescribeLogDirs at every flexible version reports `ranges[p]` for partition `p` in Sluice's
/// tagged field (v1 has none), and `sluice log-dirs describe` prints them.
fn check_log_dirs(cores: usize, broker: &Broker, ranges: &[Vec<DamagedRange>; 2]) {
    use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
    let mut s = common::connect(broker);
    for version in 1..=4 {
        let response: DescribeLogDirsResponse = common::call(
            &mut s,
            ApiKey::DescribeLogDirs,
            version,
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        let topic = response.results[0]
            .topics
            .iter()
            .find(|t| t.name.as_str() == TOPIC)
            .expect("the topic is listed");
        for p in &topic.partitions {
            let field = p.unknown_tagged_fields.get(&DAMAGED_RANGES_TAG);
            let found = field.map(|bytes| damaged_ranges::decode(bytes).unwrap());
            let want = (version >= 2).then(|| ranges[p.partition_index as usize].clone());
            assert_eq!(
                found, want,
                "cores={cores}, v{version}, partition {}",
                p.partition_index
            );
        }
    }

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["log-dirs", "describe", "--topic", TOPIC, "--bootstrap"])
            .arg(broker.bootstrap())
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let table = cli(&[]);
    let corrupt = &ranges[0][0];
    let row0 = table
        .lines()
        .find(|l| l.contains(&format!(" {TOPIC}  0  ")))
        .unwrap_or_else(|| panic!("cores={cores}: no row for partition 0:\n{table}"));
    assert!(
        row0.ends_with(&format!(
            "corrupt {}-{} ({:020}.log, {} bytes at {})",
            corrupt.first_offset,
            corrupt.last_offset,
            corrupt.segment_base_offset,
            corrupt.size_bytes,
            corrupt.position
        )),
        "cores={cores}:\n{table}"
    );
    let row1 = table
        .lines()
        .find(|l| l.contains(&format!(" {TOPIC}  1  ")))
        .unwrap_or_else(|| panic!("cores={cores}: no row for partition 1:\n{table}"));
    let (truncated, lost) = (&ranges[1][0], &ranges[1][1]);
    for text in [
        format!("truncated {}- ", truncated.first_offset),
        format!("lost {}-{} ", lost.first_offset, lost.last_offset),
    ] {
        assert!(row1.contains(&text), "cores={cores}: {text}:\n{table}");
    }

    let json = cli(&["--json"]);
    let expected = format!(
        "\"damaged\":[{{\"kind\":\"corrupt\",\"first_offset\":{},\"last_offset\":{},\
         \"segment\":\"{:020}.log\",\"position\":{},\"size_bytes\":{}}}]",
        corrupt.first_offset,
        corrupt.last_offset,
        corrupt.segment_base_offset,
        corrupt.position,
        corrupt.size_bytes
    );
    assert!(
        json.contains(&expected),
        "cores={cores}: {expected}\n{json}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let partitions = parsed[0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), PARTITIONS as usize, "{json}");
    assert_eq!(
        partitions[1]["damaged"].as_array().unwrap().len(),
        2,
        "{json}"
    );
}
