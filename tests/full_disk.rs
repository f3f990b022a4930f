//! A disk that fills up, for real: the broker's data dir is a small tmpfs, and librdkafka fills
//! it with acks=all records, with 1 and 2 shards. What a Kafka user expects:
//! - produce gets KAFKA_STORAGE_ERROR once a write fails, and the partition stays failed until
//!   a restart (as Kafka takes a failed log dir offline until then), with a log line; nothing
//!   panics and the broker keeps answering;
//! - a stop after the failure does not claim to be clean, so the next start recovers the logs;
//!   that start works on the still-full disk, serves reads, and refuses what needs space
//!   (produce, CreateTopics) with KAFKA_STORAGE_ERROR;
//! - once there is space again, the restarted broker holds every acknowledged record at the
//!   offset it was acknowledged with, and takes new records.
//!
//! That is a broker alone, which no replica could take over from. In a cluster the broker stops
//! instead, as Kafka's do when their last log dir fails, so that its partitions move to replicas
//! that can still write (the last test).
//!
//! Mounting a tmpfs needs root (CAP_SYS_ADMIN), which `.ci/run` has; elsewhere the test says it
//! was skipped.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{
    create_topic_with, fully_in_sync, index_of, wait_for_topic, Cluster, Hosting, QUORUM_WAIT_MAX,
    REPLICA_LAG,
};
use common::consumer::read_partitions;
use common::deliveries::{producer, send_waiting, Deliveries, SAFE_PRODUCER};
use common::tmpfs::Tmpfs;
use common::{call, connect, create_topic, fresh_dir, one_record_batch, Broker, SHARD_COUNTS};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseRecord, Producer};

const TOPIC: &str = "filled";
const PARTITIONS: i32 = 2;
/// Small enough to fill in a second, large enough for the broker's own files.
const DISK_MIB: usize = 12;
/// 1 KiB values, round robin: each partition's share alone is more than the disk holds, so every
/// partition meets the full disk.
const RECORDS: usize = PARTITIONS as usize * (DISK_MIB + 2) * 1024;
/// Each broker's disk in the cluster test: room for everything it writes but the filler.
const CLUSTER_DISK_MIB: usize = 256;
/// Kafka's error code for a failed write (KafkaStorageException).
const KAFKA_STORAGE_ERROR: i16 = 56;

fn value(i: usize) -> String {
    format!("{i:08}:{}", "x".repeat(1015))
}

/// Sends `count` 1 KiB records from `first` on, round robin over the partitions, and waits for
/// every delivery report (failures come after `message.timeout.ms`).
fn produce(broker: &Broker, first: usize, count: usize) -> Deliveries {
    let settings = [
        ("acks", "all"),
        ("linger.ms", "5"),
        ("message.timeout.ms", "4000"),
    ];
    let (producer, deliveries) = producer(broker, &settings);
    for i in first..first + count {
        let value = value(i);
        let partition = (i % PARTITIONS as usize) as i32;
        let record = BaseRecord::<(), _>::to(TOPIC)
            .partition(partition)
            .payload(&value);
        send_waiting(&producer, record);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    deliveries
}

/// Appends a zigzag varint (the record format's integers).
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A valid v2 batch of one record with a value of `len` bytes (CRC included).
fn batch_with_value(len: usize) -> Vec<u8> {
    let mut body = vec![0u8, 0, 0]; // attributes, timestamp delta, offset delta
    put_varint(&mut body, -1); // no key
    put_varint(&mut body, len as i64);
    body.resize(body.len() + len, b'v');
    body.push(0); // no headers
    let mut record = Vec::new();
    put_varint(&mut record, body.len() as i64);
    record.extend_from_slice(&body);
    // The fixed header of one_record_batch, then this record: fix the length and the CRC.
    let mut batch = one_record_batch();
    batch.truncate(61);
    batch.extend_from_slice(&record);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// One raw Produce v9 of a one-record batch of 64 KiB (more than the free space left inside the
/// last page of a log file): the partition's error code.
fn produce_error_code(broker: &Broker, partition: i32) -> i16 {
    let data = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(Bytes::from(batch_with_value(64 << 10))));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_data(vec![data])]);
    let response: ProduceResponse = call(&mut connect(broker), ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

/// CreateTopics v7 of one single-partition topic: its error code.
fn create_topic_error_code(broker: &Broker, topic: &str) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response: CreateTopicsResponse =
        call(&mut connect(broker), ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

fn metadata_answers(broker: &Broker) -> bool {
    let response: MetadataResponse = call(
        &mut connect(broker),
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
    );
    !response.brokers.is_empty()
}

/// Every partition from its beginning to its end: partition -> [(offset, value)].
fn read_all(broker: &Broker) -> BTreeMap<i32, Vec<(i64, String)>> {
    common::consumer::read_partitions(broker, TOPIC, PARTITIONS)
        .into_iter()
        .map(|(p, records)| (p, records.into_iter().map(|(o, _, v)| (o, v)).collect()))
        .collect()
}

fn fill_then_recover(cores: usize, mount_dir: &Path, log_file: PathBuf) {
    let disk = Tmpfs::mount(mount_dir, DISK_MIB).expect("mount");
    // Small segments, so rolls (new files) meet the full disk too.
    let settings = ["log.segment.bytes=1048576"];
    let mut broker = Broker::start_in(mount_dir.join("data"), log_file, cores, &settings);
    create_topic(&mut connect(&broker), TOPIC, PARTITIONS);
    assert_eq!(
        produce_error_code(&broker, 0),
        0,
        "a valid batch, space left"
    );

    // Fill it: some records acknowledged, the rest refused, every partition failed.
    let filled = produce(&broker, 0, RECORDS);
    let acked = filled.acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "cores={cores}: nothing was acknowledged");
    assert!(
        acked.len() < RECORDS && !filled.failed.lock().unwrap().is_empty(),
        "cores={cores}: {} of {RECORDS} records acknowledged on a {DISK_MIB} MiB disk",
        acked.len()
    );
    for partition in 0..PARTITIONS {
        assert_eq!(
            produce_error_code(&broker, partition),
            KAFKA_STORAGE_ERROR,
            "cores={cores}: partition {partition} after the disk filled"
        );
    }
    assert!(metadata_answers(&broker), "cores={cores}: metadata");
    assert!(
        broker
            .log()
            .contains("write or fsync failed, failing the partition"),
        "cores={cores}: the failure is logged:\n{}",
        broker.log()
    );

    // A stop now is not clean: no marker, a non-zero exit status.
    let stopped = broker.terminate_within(Duration::from_secs(30));
    assert_eq!(
        stopped,
        Some(false),
        "cores={cores}: SIGTERM after failed writes"
    );
    assert!(!broker.data_dir.join(".clean_shutdown").exists());

    // Restarted on the still-full disk, it recovers and serves every acknowledged record; a write
    // that finds no space fails its partition again.
    broker.restart();
    assert_eq!(broker.log().matches(RECOVERING).count(), 2, "cores={cores}");
    check_acknowledged(cores, &read_all(&broker), &acked);
    let ballast = broker.data_dir.join("ballast");
    let _ = std::fs::write(&ballast, vec![0u8; DISK_MIB << 20]);
    assert_eq!(produce_error_code(&broker, 0), KAFKA_STORAGE_ERROR);
    assert_eq!(
        create_topic_error_code(&broker, "later"),
        KAFKA_STORAGE_ERROR,
        "cores={cores}: the metadata file cannot be rewritten"
    );

    // Space again: the failed partition stays failed until a restart, as in Kafka; after a
    // crash and a restart everything takes writes again and nothing acknowledged is lost.
    std::fs::remove_file(&ballast).unwrap();
    disk.resize(DISK_MIB * 4);
    assert_eq!(produce_error_code(&broker, 0), KAFKA_STORAGE_ERROR);
    broker.kill9();
    broker.restart();
    assert_eq!(
        create_topic_error_code(&broker, "later"),
        0,
        "cores={cores}"
    );
    let after = produce(&broker, RECORDS, 100);
    assert_eq!(after.acked.lock().unwrap().len(), 100, "cores={cores}");
    let read = read_all(&broker);
    check_acknowledged(cores, &read, &acked);
    check_acknowledged(cores, &read, &after.acked.lock().unwrap());
    assert!(
        !broker.log().contains("panicked"),
        "cores={cores}:\n{}",
        broker.log()
    );
}

const RECOVERING: &str = "recovering (no clean-shutdown marker)";

/// Every acknowledged record is at its offset, and each partition's offsets are consecutive.
fn check_acknowledged(
    cores: usize,
    read: &BTreeMap<i32, Vec<(i64, String)>>,
    acked: &[(i32, i64, String)],
) {
    for (partition, offset, value) in acked {
        let records = &read[partition];
        let position = records.partition_point(|(o, _)| o < offset);
        assert_eq!(
            records.get(position),
            Some(&(*offset, value.clone())),
            "cores={cores}: acknowledged record at {partition}/{offset} must be there"
        );
    }
    for records in read.values() {
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "cores={cores}: offsets stay consecutive");
    }
}

#[test]
fn a_full_disk_fails_produce_with_storage_errors_and_loses_no_acknowledged_record() {
    for cores in SHARD_COUNTS {
        let scratch = fresh_dir("full-disk");
        let mount_dir = scratch.join("disk");
        std::fs::create_dir_all(&mount_dir).unwrap();
        let log_file = scratch.join("broker.log");
        if Tmpfs::mount(&mount_dir, 1).is_none() {
            eprintln!("skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
            return;
        }
        fill_then_recover(cores, &mount_dir, log_file);
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

/// In a cluster, a broker whose disk fills stops, with a log line and a non-zero exit status, as
/// Kafka's brokers stop when their last log dir fails: the partition it led moves to another
/// in-sync replica, an acks=all producer goes on through it and loses nothing it was told was
/// written, and once there is space again the restarted broker rejoins every ISR.
#[test]
fn in_a_cluster_a_full_disk_stops_the_broker_and_its_partitions_fail_over() {
    let disks: Result<Vec<Tmpfs>, String> = (1..=3)
        .map(|node| Tmpfs::named(&format!("cluster-{node}"), CLUSTER_DISK_MIB))
        .collect();
    let disks = match disks {
        Ok(disks) => disks,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let paths: Vec<PathBuf> = disks.iter().map(Tmpfs::data).collect();
    let host = Hosting {
        network: None,
        disks: Some(&paths),
        proxied: false,
    };
    let mut cluster = Cluster::formed_hosted(&host, 0, &[REPLICA_LAG]);
    let topic = "replicated";
    create_topic_with(
        &cluster.brokers[0],
        topic,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
    );
    wait_for_topic(&cluster, &[0, 1, 2], topic, PARTITIONS as usize);
    let seen = cluster.wait_metadata(0, topic, "every replica in sync", |_, seen| {
        fully_in_sync(seen, PARTITIONS as usize)
    });
    let filled = seen[0].leader;
    let survivor = index_of(if filled == 1 { 2 } else { 1 });
    let (sender, deliveries) = producer(&cluster.brokers[survivor], &SAFE_PRODUCER);
    let mut sent = 0;
    let mut send = |count: usize| {
        for _ in 0..count {
            let value = value(sent);
            let record = BaseRecord::<(), str>::to(topic)
                .partition((sent % PARTITIONS as usize) as i32)
                .payload(&value);
            send_waiting(&sender, record);
            sent += 1;
        }
    };
    send(200);
    sender.flush(Duration::from_secs(60)).unwrap();

    // Records keep coming while the disk is full, so the broker meets it at its next write.
    disks[index_of(filled)].fill();
    let broker = &mut cluster.brokers[index_of(filled)];
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    let status = loop {
        send(20);
        if let Some(status) = broker.wait_exit(Duration::from_millis(200)) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "broker {filled} still runs on a full disk{}",
            broker.log()
        );
    };
    assert!(!status.success(), "a failed disk is not a clean stop");
    assert!(
        broker
            .log()
            .contains("its log failed a write; stopping the broker"),
        "the broker says why it stopped{}",
        broker.log()
    );
    cluster.wait_metadata(survivor, topic, "partition 0 led elsewhere", |_, seen| {
        seen[0].leader > 0 && seen[0].leader != filled
    });
    send(200);
    sender.flush(Duration::from_secs(120)).unwrap();
    assert!(
        deliveries.failed.lock().unwrap().is_empty(),
        "deliveries failed: {:?}",
        deliveries.failed.lock().unwrap()
    );

    disks[index_of(filled)].drain();
    cluster.brokers[index_of(filled)].restart();
    cluster.wait_metadata(
        survivor,
        topic,
        "the broker back in every ISR",
        |_, seen| fully_in_sync(seen, PARTITIONS as usize),
    );
    let read = read_partitions(&cluster.brokers[survivor], topic, PARTITIONS);
    let acked = deliveries.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), sent, "every record acknowledged");
    for (partition, offset, value) in &acked {
        let stored = read[partition].iter().find(|(o, _, _)| o == offset);
        assert_eq!(
            stored.map(|(_, _, v)| v),
            Some(value),
            "acknowledged record at {partition}/{offset}"
        );
    }
    cluster.stop_all();
}
