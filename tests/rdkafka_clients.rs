//! librdkafka (through the rdkafka crate, built from source) against the real broker, with 1
//! and 2 shards: admin operations, every acks level, the idempotent producer, consuming with
//! assign/seek/from-beginning, offsets by timestamp, and kill -9 in the middle of a stream.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::deliveries::{send_waiting, Deliveries};
use common::{Broker, SHARD_COUNTS};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap()
}

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin(broker).create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

fn producer(
    broker: &Broker,
    settings: &[(&str, &str)],
) -> (ThreadedProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "2");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    (
        config.create_with_context(deliveries.clone()).unwrap(),
        deliveries,
    )
}

fn consumer(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.auto.commit", "false")
        .set("group.id", "sluice-tests-unused")
        .create()
        .unwrap()
}

/// A consumed record: (partition, offset, key, value, headers, timestamp).
type Consumed = (i32, i64, Option<String>, String, Vec<(String, String)>, i64);

/// Assigns every partition from `offset` and reads until `expected` records arrived.
fn consume_all(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    offset: Offset,
    expected: usize,
) -> Vec<Consumed> {
    let consumer = consumer(broker);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, offset).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while out.len() < expected && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|Header { key, value }| {
                                (
                                    key.to_string(),
                                    String::from_utf8_lossy(value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers,
                    m.timestamp().to_millis().unwrap_or(-1),
                ));
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    // A little longer, to catch duplicates beyond what was expected.
    let until = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push((
                m.partition(),
                m.offset(),
                None,
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                vec![],
                -1,
            ));
        }
    }
    out
}

#[test]
fn admin_creates_grows_and_deletes_topics() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("admin", cores, &[]);
        let admin = admin(&broker);
        let opts = AdminOptions::new();
        create_topic(&broker, "orders", 3);
        let again = block_on(admin.create_topics(
            [&NewTopic::new("orders", 3, TopicReplication::Fixed(1))],
            &opts,
        ))
        .unwrap();
        assert_eq!(
            again[0],
            Err(("orders".to_string(), RDKafkaErrorCode::TopicAlreadyExists))
        );
        let bad = block_on(admin.create_topics(
            [&NewTopic::new("bad/name", 1, TopicReplication::Fixed(1))],
            &opts,
        ))
        .unwrap();
        assert_eq!(
            bad[0],
            Err(("bad/name".to_string(), RDKafkaErrorCode::InvalidTopic))
        );
        let rf3 = block_on(admin.create_topics(
            [&NewTopic::new("rf3", 1, TopicReplication::Fixed(3))],
            &opts,
        ))
        .unwrap();
        assert_eq!(
            rf3[0],
            Err((
                "rf3".to_string(),
                RDKafkaErrorCode::InvalidReplicationFactor
            ))
        );

        let grown =
            block_on(admin.create_partitions([&NewPartitions::new("orders", 5)], &opts)).unwrap();
        assert!(grown[0].is_ok(), "{grown:?}");
        let shrink =
            block_on(admin.create_partitions([&NewPartitions::new("orders", 2)], &opts)).unwrap();
        assert_eq!(
            shrink[0],
            Err(("orders".to_string(), RDKafkaErrorCode::InvalidPartitions))
        );
        let md = consumer(&broker)
            .fetch_metadata(Some("orders"), TIMEOUT)
            .unwrap();
        assert_eq!(md.topics()[0].partitions().len(), 5);

        // The new partitions take writes.
        let (producer, deliveries) = producer(&broker, &[]);
        producer
            .send(BaseRecord::<(), _>::to("orders").partition(4).payload("p4"))
            .unwrap();
        producer.flush(TIMEOUT).unwrap();
        assert_eq!(deliveries.acked.lock().unwrap().len(), 1);

        let deleted = block_on(admin.delete_topics(&["orders"], &opts)).unwrap();
        assert!(deleted[0].is_ok(), "{deleted:?}");
        let missing = block_on(admin.delete_topics(&["orders"], &opts)).unwrap();
        assert_eq!(
            missing[0],
            Err((
                "orders".to_string(),
                RDKafkaErrorCode::UnknownTopicOrPartition
            ))
        );
        assert!(
            !broker.data_dir.join("orders-0").exists(),
            "partition directories are removed"
        );

        let configs = block_on(
            admin.describe_configs([&rdkafka::admin::ResourceSpecifier::Broker(1)], &opts),
        )
        .unwrap();
        let broker_config = configs[0].as_ref().unwrap();
        assert!(broker_config.get("log.flush.interval.messages").is_some());
    }
}

/// Every produced record comes back exactly once, in order per partition, with key, value,
/// headers and timestamp intact.
fn round_trip(cores: usize, acks: &str) {
    let broker = Broker::start(&format!("acks{acks}"), cores, &[]);
    let topic = "round-trip";
    create_topic(&broker, topic, 4);
    let (producer, deliveries) =
        producer(&broker, &[("acks", acks), ("enable.idempotence", "false")]);
    let n = 2000;
    for i in 0..n {
        let value = format!("value-{i}");
        let key = format!("key-{}", i % 17);
        let headers = OwnedHeaders::new().insert(Header {
            key: "h",
            value: Some(&format!("hv-{i}")),
        });
        let record = BaseRecord::to(topic)
            .partition(i % 4)
            .key(&key)
            .payload(&value)
            .headers(headers)
            .timestamp(1_600_000_000_000 + i as i64);
        producer.send(record).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert!(
        deliveries.failed.lock().unwrap().is_empty(),
        "{:?}",
        deliveries.failed.lock().unwrap()
    );
    let consumed = consume_all(&broker, topic, 4, Offset::Beginning, n as usize);
    assert_eq!(
        consumed.len(),
        n as usize,
        "acks={acks} cores={cores}: exactly once"
    );
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut last_index: HashMap<i32, i64> = HashMap::new();
    for (partition, offset, key, value, headers, timestamp) in consumed {
        let i: i64 = value.strip_prefix("value-").unwrap().parse().unwrap();
        assert_eq!(i % 4, partition as i64);
        assert_eq!(key, Some(format!("key-{}", i % 17)));
        assert_eq!(headers, vec![("h".to_string(), format!("hv-{i}"))]);
        assert_eq!(timestamp, 1_600_000_000_000 + i);
        let expected = next_offset.entry(partition).or_insert(0);
        assert_eq!(offset, *expected, "consecutive offsets");
        *expected += 1;
        let last = last_index.entry(partition).or_insert(-1);
        assert!(i > *last, "in order per partition");
        *last = i;
    }
}

#[test]
fn records_round_trip_with_acks_all() {
    for cores in SHARD_COUNTS {
        round_trip(cores, "all");
    }
}

#[test]
fn records_round_trip_with_acks_1_and_0() {
    for cores in SHARD_COUNTS {
        round_trip(cores, "1");
        round_trip(cores, "0");
    }
}

#[test]
fn idempotent_producer_writes_exactly_once_in_order() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("idempotent", cores, &[]);
        create_topic(&broker, "idem", 3);
        let (producer, deliveries) = producer(
            &broker,
            &[
                ("enable.idempotence", "true"),
                ("max.in.flight.requests.per.connection", "5"),
            ],
        );
        let n = 3000;
        for i in 0..n {
            producer
                .send(
                    BaseRecord::<(), _>::to("idem")
                        .partition(i % 3)
                        .payload(&format!("{i}")),
                )
                .unwrap();
        }
        producer.flush(TIMEOUT).unwrap();
        assert_eq!(deliveries.acked.lock().unwrap().len(), n as usize);
        let consumed = consume_all(&broker, "idem", 3, Offset::Beginning, n as usize);
        assert_eq!(consumed.len(), n as usize);
        let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, _, _, v, _, _) in consumed {
            per_partition.entry(p).or_default().push(v.parse().unwrap());
        }
        for values in per_partition.values() {
            assert!(
                values.windows(2).all(|w| w[0] < w[1]),
                "in order, no duplicates"
            );
        }
    }
}

#[test]
fn seek_and_offsets_by_timestamp() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("seek", cores, &[]);
        create_topic(&broker, "times", 1);
        let (producer, _) = producer(&broker, &[("linger.ms", "0")]);
        for i in 0..20i64 {
            producer
                .send(
                    BaseRecord::<(), _>::to("times")
                        .partition(0)
                        .payload(&format!("{i}"))
                        .timestamp(1_000_000 + i * 1000),
                )
                .unwrap();
            producer.flush(TIMEOUT).unwrap(); // one batch per record
        }
        let consumer = consumer(&broker);
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset("times", 0, Offset::Offset(1_005_500))
            .unwrap();
        let found = consumer.offsets_for_times(query, TIMEOUT).unwrap();
        assert_eq!(
            found.find_partition("times", 0).unwrap().offset(),
            Offset::Offset(6)
        );
        let mut beyond = TopicPartitionList::new();
        beyond
            .add_partition_offset("times", 0, Offset::Offset(9_000_000))
            .unwrap();
        let found = consumer.offsets_for_times(beyond, TIMEOUT).unwrap();
        assert_eq!(
            found.find_partition("times", 0).unwrap().offset(),
            Offset::End
        );
        let (low, high) = consumer.fetch_watermarks("times", 0, TIMEOUT).unwrap();
        assert_eq!((low, high), (0, 20));

        let from_12 = consume_all(&broker, "times", 1, Offset::Offset(12), 8);
        assert_eq!(
            from_12.iter().map(|c| c.3.clone()).collect::<Vec<_>>(),
            (12..20).map(|i| i.to_string()).collect::<Vec<_>>()
        );
        let from_end = consume_all(&broker, "times", 1, Offset::End, 0);
        assert!(from_end.is_empty());
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("times", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let first = loop {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                break m.unwrap().offset();
            }
        };
        assert_eq!(first, 0);
        consumer
            .seek("times", 0, Offset::Offset(17), TIMEOUT)
            .unwrap();
        let after_seek = loop {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                if m.offset() >= 17 {
                    break m.offset();
                }
            }
        };
        assert_eq!(after_seek, 17);
    }
}

/// The offset `offsets_for_times` finds for `timestamp` in partition 0 of `topic`.
fn offset_for_time(consumer: &BaseConsumer, topic: &str, timestamp: i64) -> Offset {
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, 0, Offset::Offset(timestamp))
        .unwrap();
    let found = consumer.offsets_for_times(query, TIMEOUT).unwrap();
    found.find_partition(topic, 0).unwrap().offset()
}

#[test]
fn timestamps_and_offsets_resolve_in_sealed_segments_after_clean_and_crash_restarts() {
    // One record per batch and a segment per batch: after a restart every segment but the last
    // is sealed, its indexes left in their files until a lookup needs them.
    let mut broker = Broker::start("lazy-indexes", 1, &[]);
    let topic = NewTopic::new("sealed", 1, TopicReplication::Fixed(1))
        .set("segment.bytes", "100")
        .set("index.interval.bytes", "1");
    let created = block_on(admin(&broker).create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let (producer, _) = producer(&broker, &[("linger.ms", "0")]);
    for i in 0..30i64 {
        let value = i.to_string();
        let record = BaseRecord::<(), _>::to("sealed")
            .partition(0)
            .payload(&value)
            .timestamp(2_000_000 + i * 1000);
        producer.send(record).unwrap();
        producer.flush(TIMEOUT).unwrap();
    }
    drop(producer);
    for clean in [true, false] {
        if clean {
            assert!(broker.terminate(), "exit status 0 after SIGTERM");
        } else {
            broker.kill9();
        }
        broker.restart();
        let consumer = consumer(&broker);
        let what = if clean { "clean" } else { "crash" };
        for (timestamp, offset) in [(2_005_500, 6), (2_000_000, 0), (2_029_000, 29)] {
            assert_eq!(
                offset_for_time(&consumer, "sealed", timestamp),
                Offset::Offset(offset),
                "{what} restart: timestamp {timestamp}"
            );
        }
        assert_eq!(offset_for_time(&consumer, "sealed", 9_000_000), Offset::End);
        let from_17 = consume_all(&broker, "sealed", 1, Offset::Offset(17), 13);
        assert_eq!(
            from_17.iter().map(|c| c.3.clone()).collect::<Vec<_>>(),
            (17..30).map(|i| i.to_string()).collect::<Vec<_>>(),
            "{what} restart"
        );
    }
}

#[test]
fn kill9_mid_stream_loses_no_acknowledged_record_and_duplicates_none() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start("kill9", cores, &[]);
        create_topic(&broker, "durable", 4);
        let (producer, deliveries) = producer(
            &broker,
            &[
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "60000"),
                ("reconnect.backoff.max.ms", "200"),
            ],
        );
        let n = 20_000;
        let producer = Arc::new(producer);
        // A paced stream, so the kill lands in the middle of it.
        let sender = {
            let producer = producer.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let value = format!("{i}");
                    let record = BaseRecord::<(), _>::to("durable")
                        .partition(i % 4)
                        .payload(&value);
                    send_waiting(&producer, record);
                    if i % 200 == 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        let deadline = std::time::Instant::now() + TIMEOUT;
        while deliveries.acked.lock().unwrap().len() < n as usize / 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress before the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        broker.kill9();
        let killed = deliveries.acked.lock().unwrap().len() < n as usize;
        std::thread::sleep(Duration::from_millis(200));
        broker.restart();
        sender.join().unwrap();
        producer.flush(Duration::from_secs(60)).unwrap();
        assert!(killed, "the broker was killed mid-stream");
        let acked: Vec<String> = deliveries
            .acked
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, v)| v.clone())
            .collect();
        assert!(
            deliveries.failed.lock().unwrap().is_empty(),
            "{:?}",
            &deliveries.failed.lock().unwrap()[..1]
        );
        assert_eq!(acked.len(), n as usize);
        let consumed = consume_all(&broker, "durable", 4, Offset::Beginning, n as usize);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, _, _, v, _, _) in &consumed {
            *counts.entry(v.clone()).or_default() += 1;
        }
        for v in &acked {
            assert_eq!(
                counts.get(v),
                Some(&1),
                "cores={cores}: acknowledged record {v} must be there exactly once"
            );
        }
        assert_eq!(consumed.len(), n as usize, "no duplicates");
        assert!(
            broker.log().contains("recover") || broker.log().contains("recovering"),
            "the restart recovered the logs"
        );
    }
}

#[test]
fn sigterm_stops_cleanly_and_restart_keeps_everything() {
    let mut broker = Broker::start("sigterm", 2, &[]);
    create_topic(&broker, "kept", 2);
    let (producer, _) = producer(&broker, &[]);
    for i in 0..500 {
        producer
            .send(
                BaseRecord::<(), _>::to("kept")
                    .partition(i % 2)
                    .payload(&format!("{i}")),
            )
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    drop(producer);
    assert!(broker.terminate(), "exit status 0 after SIGTERM");
    assert!(broker.data_dir.join(".clean_shutdown").exists());
    broker.restart();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !broker.log().contains("clean start") {
        assert!(std::time::Instant::now() < deadline, "{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        consume_all(&broker, "kept", 2, Offset::Beginning, 500).len(),
        500
    );
}

#[test]
fn a_recreated_topic_starts_empty_even_over_a_stale_directory() {
    let mut broker = Broker::start("recreate", 2, &[]);
    create_topic(&broker, "old", 1);
    let (first, _) = producer(&broker, &[]);
    for i in 0..10 {
        first
            .send(
                BaseRecord::<(), _>::to("old")
                    .partition(0)
                    .payload(&format!("{i}")),
            )
            .unwrap();
    }
    first.flush(TIMEOUT).unwrap();
    drop(first);
    // Delete and re-create under the same name: the new topic is empty.
    let opts = AdminOptions::new();
    assert!(block_on(admin(&broker).delete_topics(&["old"], &opts)).unwrap()[0].is_ok());
    create_topic(&broker, "old", 1);
    assert!(consume_all(&broker, "old", 1, Offset::Beginning, 0).is_empty());
    // A directory left behind under a new topic's name (a crash mid-deletion) is not adopted.
    let (second, _) = producer(&broker, &[]);
    second
        .send(BaseRecord::<(), _>::to("old").partition(0).payload("x"))
        .unwrap();
    second.flush(TIMEOUT).unwrap();
    drop(second);
    assert!(broker.terminate());
    let stale = broker.data_dir.join("ghost-0");
    std::fs::create_dir_all(&stale).unwrap();
    for entry in std::fs::read_dir(broker.data_dir.join("old-0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), stale.join(entry.file_name())).unwrap();
    }
    broker.restart();
    create_topic(&broker, "ghost", 1);
    let consumer = consumer(&broker);
    let (low, high) = consumer.fetch_watermarks("ghost", 0, TIMEOUT).unwrap();
    assert_eq!(
        (low, high),
        (0, 0),
        "the stale segment was removed, not served"
    );
}

#[test]
fn retention_bytes_deletes_old_segments_while_clients_run() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("retention", cores, &["log.retention.check.interval.ms=100"]);
        let topic = NewTopic::new("bounded", 2, TopicReplication::Fixed(1))
            .set("segment.bytes", "16384")
            .set("retention.bytes", "50000");
        assert!(
            block_on(admin(&broker).create_topics([&topic], &AdminOptions::new())).unwrap()[0]
                .is_ok()
        );
        let (producer, deliveries) = producer(&broker, &[("linger.ms", "0")]);
        let value = "x".repeat(1000);
        for i in 0..600 {
            producer
                .send(
                    BaseRecord::<(), _>::to("bounded")
                        .partition(i % 2)
                        .payload(&value),
                )
                .unwrap();
            if i % 50 == 0 {
                producer.flush(TIMEOUT).unwrap();
            }
        }
        producer.flush(TIMEOUT).unwrap();
        assert_eq!(deliveries.acked.lock().unwrap().len(), 600);
        let consumer = consumer(&broker);
        let deadline = std::time::Instant::now() + TIMEOUT;
        let (low, high) = loop {
            let (low, high) = consumer.fetch_watermarks("bounded", 0, TIMEOUT).unwrap();
            if low > 0 {
                break (low, high);
            }
            assert!(std::time::Instant::now() < deadline, "retention never ran");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(high, 300);
        assert!(
            high - low < 120,
            "about retention.bytes of 1 KiB records stay ({low}..{high})"
        );
        // A consumer that starts from the beginning is moved to the new log start.
        let kept = consume_all(
            &broker,
            "bounded",
            1,
            Offset::Beginning,
            (high - low) as usize,
        );
        assert_eq!(kept.first().map(|c| c.1), Some(low));
        assert_eq!(kept.len() as i64, high - low);
        let dir_bytes: u64 = std::fs::read_dir(broker.data_dir.join("bounded-0"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            dir_bytes < 100_000,
            "disk use is bounded: {dir_bytes} bytes"
        );
    }
}

/// Reads a partition from its beginning to its end: (offset, key, value; `None` for a tombstone).
fn read_to_end(broker: &Broker, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let consumer = common::consumer::to_the_end(broker);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
}

/// Sends keyed records (a `None` value is a tombstone) and waits for every acknowledgement.
fn send_keyed(broker: &Broker, topic: &str, records: &[(String, Option<String>)]) {
    let (producer, deliveries) = producer(broker, &[]);
    for (key, value) in records {
        let mut record = BaseRecord::<_, String>::to(topic).key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert_eq!(deliveries.failed.lock().unwrap().len(), 0);
    assert_eq!(deliveries.acked.lock().unwrap().len(), records.len());
}

/// Waits until a full read satisfies `done`; returns that read.
fn read_until(
    broker: &Broker,
    topic: &str,
    what: &str,
    done: impl Fn(&[(i64, String, Option<String>)]) -> bool,
) -> Vec<(i64, String, Option<String>)> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let read = read_to_end(broker, topic);
        if done(&read) {
            return read;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {read:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn compaction_keeps_the_latest_value_per_key_and_drops_tombstones_after_the_delay() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("compaction", cores, &["log.cleaner.backoff.ms=100"]);
        let topic = NewTopic::new("table", 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.bytes", "4096")
            .set("min.cleanable.dirty.ratio", "0.01")
            .set("delete.retention.ms", "2000");
        let created = block_on(admin(&broker).create_topics([&topic], &AdminOptions::new()));
        assert!(created.unwrap()[0].is_ok());
        // Five versions of 40 keys, then tombstones for the first ten.
        let mut records: Vec<(String, Option<String>)> = Vec::new();
        for version in 0..5 {
            for key in 0..40 {
                records.push((format!("key-{key}"), Some(format!("v{version}-{key:->60}"))));
            }
        }
        records.extend((0..10).map(|key| (format!("key-{key}"), None)));
        send_keyed(&broker, "table", &records);
        // Writes of other keys fill the active segment, so the tables' keys become cleanable.
        let filler = |tag: &str| -> Vec<(String, Option<String>)> {
            (0..60)
                .map(|i| (format!("filler-{tag}-{i}"), Some("y".repeat(100))))
                .collect()
        };
        send_keyed(&broker, "table", &filler("a"));
        let table_keys =
            |read: &[(i64, String, Option<String>)]| -> BTreeMap<String, Vec<Option<String>>> {
                let mut keys: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
                for (_, key, value) in read.iter().filter(|(_, k, _)| k.starts_with("key-")) {
                    keys.entry(key.clone()).or_default().push(value.clone());
                }
                keys
            };
        let compacted = read_until(&broker, "table", "one record per key", |read| {
            table_keys(read).values().all(|values| values.len() == 1)
        });
        let keys = table_keys(&compacted);
        assert_eq!(keys.len(), 40, "every key keeps its latest record");
        for key in 0..40 {
            let expected = (key >= 10).then(|| format!("v4-{key:->60}"));
            assert_eq!(keys[&format!("key-{key}")], vec![expected], "key-{key}");
        }
        assert!(compacted.windows(2).all(|w| w[0].0 < w[1].0));

        // After delete.retention.ms, the next cleaning (the log is dirty again) drops the
        // tombstones; the live keys stay.
        std::thread::sleep(Duration::from_millis(2100));
        send_keyed(&broker, "table", &filler("b"));
        let cleaned = read_until(&broker, "table", "tombstones removed", |read| {
            table_keys(read).len() == 30
        });
        let keys = table_keys(&cleaned);
        assert!(keys.values().all(|v| v.len() == 1 && v[0].is_some()));
        let cleanings = metric_sum(&broker, "sluice_cleanings_total");
        assert!(cleanings >= 2.0, "cleanings counted: {cleanings}");

        // Records without a key have no "latest value": refused, as Kafka does.
        let (producer, deliveries) = producer(&broker, &[]);
        producer
            .send(BaseRecord::<(), _>::to("table").payload("no key"))
            .unwrap();
        producer.flush(TIMEOUT).unwrap();
        let failed = deliveries.failed.lock().unwrap().clone();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].contains("InvalidRecord") || failed[0].contains("invalid"),
            "{failed:?}"
        );

        // A restart reads the compacted segments back the same way.
        let mut broker = broker;
        broker.kill9();
        broker.restart();
        assert_eq!(read_to_end(&broker, "table"), read_to_end(&broker, "table"));
        assert_eq!(table_keys(&read_to_end(&broker, "table")), keys);
    }
}

#[test]
fn broker_defaults_change_at_run_time_and_persist() {
    use rdkafka::admin::{AlterConfig, ConfigSource, ResourceSpecifier};
    let mut broker = Broker::start("dynamic-broker-config", 2, &[]);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let topic = NewTopic::new("pinned", 1, TopicReplication::Fixed(1)).set("retention.ms", "1000");
    let plain = NewTopic::new("plain", 2, TopicReplication::Fixed(1));
    let created = block_on(admin(&broker).create_topics([&topic, &plain], &opts)).unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    // The cluster default changes every topic that does not override it, live and for good.
    let change = AlterConfig::new(ResourceSpecifier::Broker(1))
        .set("log.retention.ms", "3600000")
        .set("log.cleanup.policy", "compact,delete");
    let altered = block_on(admin(&broker).alter_configs([&change], &opts)).unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let check = |broker: &Broker| {
        let described = block_on(admin(broker).describe_configs(
            [
                &ResourceSpecifier::Topic("plain"),
                &ResourceSpecifier::Topic("pinned"),
                &ResourceSpecifier::Broker(1),
            ],
            &opts,
        ))
        .unwrap();
        let plain = described[0].as_ref().unwrap();
        let retention = plain.get("retention.ms").unwrap();
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.source, ConfigSource::DynamicDefaultBroker);
        assert_eq!(
            plain.get("cleanup.policy").unwrap().value.as_deref(),
            Some("compact,delete")
        );
        let pinned = described[1].as_ref().unwrap();
        assert_eq!(
            pinned.get("retention.ms").unwrap().value.as_deref(),
            Some("1000"),
            "a topic override wins over the broker default"
        );
        let broker_entry = described[2].as_ref().unwrap();
        let entry = broker_entry.get("log.retention.ms").unwrap();
        assert_eq!(entry.value.as_deref(), Some("3600000"));
        assert_eq!(entry.source, ConfigSource::DynamicDefaultBroker);
    };
    check(&broker);
    broker.kill9();
    broker.restart();
    check(&broker);

    // Static-only keys and bad values are refused (INVALID_CONFIG: the rdkafka crate drops
    // per-resource errors of AlterConfigs, so tests/python checks the code): nothing changes.
    for (key, value) in [("num.partitions", "3"), ("log.retention.ms", "soon")] {
        let change = AlterConfig::new(ResourceSpecifier::Broker(1)).set(key, value);
        block_on(admin(&broker).alter_configs([&change], &opts)).unwrap();
        check(&broker);
    }
}

/// The value of record `i` in the zero-copy test: its index, then 4 KiB of a byte it chooses.
fn big_value(i: usize) -> String {
    let fill = char::from(b'a' + (i % 26) as u8);
    format!("{i:08}{}", fill.to_string().repeat(4096))
}

fn metric_sum(broker: &Broker, family: &str) -> f64 {
    broker
        .admin_get("/metrics")
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn large_fetches_go_from_the_page_cache_to_the_socket_byte_exact() {
    for cores in SHARD_COUNTS {
        for zero_copy in [true, false] {
            let broker = Broker::start(
                &format!("zero-copy-{zero_copy}"),
                cores,
                &[&format!("sluice.fetch.zero.copy={zero_copy}")],
            );
            create_topic(&broker, "big", 2);
            let (producer, deliveries) = producer(&broker, &[]);
            let n = 3000;
            for i in 0..n {
                let value = big_value(i);
                let record = BaseRecord::<(), _>::to("big")
                    .partition((i % 2) as i32)
                    .payload(&value);
                producer.send(record).unwrap();
            }
            producer.flush(TIMEOUT).unwrap();
            assert!(deliveries.failed.lock().unwrap().is_empty());

            let consumed = consume_all(&broker, "big", 2, Offset::Beginning, n);
            assert_eq!(consumed.len(), n, "zero_copy={zero_copy} cores={cores}");
            let mut next_offset: HashMap<i32, i64> = HashMap::new();
            for (partition, offset, _, value, _, _) in consumed {
                let i: usize = value[..8].parse().unwrap();
                assert_eq!(value, big_value(i), "byte-exact");
                assert_eq!(i % 2, partition as usize);
                let expected = next_offset.entry(partition).or_insert(0);
                assert_eq!(offset, *expected, "consecutive offsets");
                *expected += 1;
            }
            let sendfile = metric_sum(&broker, "sluice_fetch_sendfile_bytes_total");
            if zero_copy {
                assert!(
                    sendfile > (n * 4096) as f64 / 2.0,
                    "sendfile carried {sendfile}"
                );
            } else {
                assert_eq!(sendfile, 0.0);
            }
        }
    }
}

/// Delivery reports by value: `None` for an acknowledged record, else librdkafka's error code.
#[derive(Clone, Default)]
struct Outcomes(Arc<std::sync::Mutex<HashMap<String, Option<RDKafkaErrorCode>>>>);

impl rdkafka::ClientContext for Outcomes {}

impl rdkafka::producer::ProducerContext for Outcomes {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let (message, code) = match result {
            Ok(m) => (m, None),
            Err((KafkaError::MessageProduction(code), m)) => (m, Some(*code)),
            Err((e, _)) => panic!("not a produce error: {e}"),
        };
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        self.0.lock().unwrap().insert(value, code);
    }
}

/// Sends 100 records to a compacted topic, every tenth without a key, with `settings`; returns
/// each record's outcome by index.
fn produce_every_tenth_keyless(
    broker: &Broker,
    topic: &str,
    settings: &[(&str, &str)],
) -> Vec<Option<RDKafkaErrorCode>> {
    let outcomes = Outcomes::default();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<Outcomes> =
        config.create_with_context(outcomes.clone()).unwrap();
    for i in 0..100 {
        let value = format!("value-{i}");
        let key = format!("key-{i}");
        let record = BaseRecord::to(topic).partition(0).payload(&value);
        let record = if i % 10 == 0 {
            record
        } else {
            record.key(&key)
        };
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    let outcomes = outcomes.0.lock().unwrap();
    (0..100)
        .map(|i| {
            *outcomes
                .get(&format!("value-{i}"))
                .expect("a delivery report")
        })
        .collect()
}

#[test]
fn keyless_records_to_a_compacted_topic_fail_alone_with_record_errors() {
    let broker = Broker::start("record-errors", 1, &[]);
    let topic =
        NewTopic::new("keyed", 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let created = block_on(admin(&broker).create_topics([&topic], &AdminOptions::new()));
    assert!(created.unwrap()[0].is_ok());
    let keyless = |i: usize| i.is_multiple_of(10);

    // One batch of all hundred: the ten keyless records are named, the others refused with them.
    let one_batch = [("linger.ms", "1000"), ("batch.num.messages", "1000")];
    let outcomes = produce_every_tenth_keyless(&broker, "keyed", &one_batch);
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if keyless(i) {
            RDKafkaErrorCode::InvalidRecord
        } else {
            RDKafkaErrorCode::InvalidDifferentRecord
        };
        assert_eq!(*outcome, Some(expected), "record {i} of one batch");
    }

    // One record per batch: the ninety keyed ones are stored.
    let outcomes = produce_every_tenth_keyless(&broker, "keyed", &[("batch.num.messages", "1")]);
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = keyless(i).then_some(RDKafkaErrorCode::InvalidRecord);
        assert_eq!(*outcome, expected, "record {i} alone in its batch");
    }
    let consumer = consumer(&broker);
    let (low, high) = consumer
        .fetch_watermarks("keyed", 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!(
        (low, high),
        (0, 90),
        "nothing of the refused batch is stored"
    );
}

#[test]
fn clients_follow_advertised_listeners_and_describe_configs_reports_them() {
    use rdkafka::admin::ResourceSpecifier;
    let port = common::free_port();
    let dir = common::fresh_dir("advertised-listeners");
    let listeners = format!("listeners=PLAINTEXT://127.0.0.1:{port}");
    let advertised = format!("advertised.listeners=PLAINTEXT://localhost:{port}");
    let broker = Broker::start_on(
        dir.clone(),
        dir.join("broker.log"),
        2,
        port,
        &[&listeners, &advertised],
    );
    // Metadata answers the advertised name, not the address the client bootstrapped from.
    let metadata = consumer(&broker).fetch_metadata(None, TIMEOUT).unwrap();
    let brokers: Vec<(String, i32)> = metadata
        .brokers()
        .iter()
        .map(|b| (b.host().to_string(), b.port()))
        .collect();
    assert_eq!(brokers, vec![("localhost".to_string(), i32::from(port))]);

    // Producing and consuming go through the advertised address ("localhost" on IPv4: the
    // broker listens on 127.0.0.1 only).
    let topic = "through-advertised";
    create_topic(&broker, topic, 2);
    let (producer, deliveries) = producer(&broker, &[("broker.address.family", "v4")]);
    for i in 0..100 {
        let value = format!("value-{i}");
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(i % 2)
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert!(deliveries.failed.lock().unwrap().is_empty());
    assert_eq!(
        consume_all(&broker, topic, 2, Offset::Beginning, 100).len(),
        100
    );

    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let described =
        block_on(admin(&broker).describe_configs([&ResourceSpecifier::Broker(1)], &opts)).unwrap();
    let entries = described[0].as_ref().unwrap();
    let value = |key: &str| entries.get(key).and_then(|e| e.value.clone());
    assert_eq!(
        value("listeners"),
        Some(format!("PLAINTEXT://127.0.0.1:{port}"))
    );
    assert_eq!(
        value("advertised.listeners"),
        Some(format!("PLAINTEXT://localhost:{port}"))
    );
    assert_eq!(value("process.roles").as_deref(), Some("broker,controller"));
    assert_eq!(value("node.id").as_deref(), Some("1"));
    assert_eq!(value("controller.quorum.voters").as_deref(), Some(""));
    assert_eq!(value("controller.listener.names").as_deref(), Some(""));
}

#[test]
fn each_listener_answers_its_own_advertised_address() {
    use kafka_protocol::messages::{
        ApiKey, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    };
    let (port, other) = (common::free_port(), common::free_port());
    let dir = common::fresh_dir("two-listeners");
    let settings = [
        format!("listeners=PLAINTEXT://127.0.0.1:{port},OTHER://127.0.0.1:{other}"),
        format!("advertised.listeners=PLAINTEXT://localhost:{port},OTHER://127.0.0.1:{other}"),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,OTHER:PLAINTEXT".to_string(),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let _broker = Broker::start_on(dir.clone(), dir.join("broker.log"), 2, port, &settings);
    for (connect_to, host, answered_port) in
        [(port, "localhost", port), (other, "127.0.0.1", other)]
    {
        // Several connections, so that both shards' accept loops answer.
        for _ in 0..4 {
            let mut kafka = std::net::TcpStream::connect(("127.0.0.1", connect_to)).unwrap();
            let metadata: MetadataResponse = common::call(
                &mut kafka,
                ApiKey::Metadata,
                12,
                &MetadataRequest::default(),
            );
            let broker = &metadata.brokers[0];
            assert_eq!(
                (broker.host.as_str(), broker.port),
                (host, i32::from(answered_port))
            );
            let cluster: DescribeClusterResponse = common::call(
                &mut kafka,
                ApiKey::DescribeCluster,
                0,
                &DescribeClusterRequest::default(),
            );
            let broker = &cluster.brokers[0];
            assert_eq!(
                (broker.host.as_str(), broker.port),
                (host, i32::from(answered_port))
            );
        }
    }
}
