//! Fetch sizing (KIP-74) against the real broker, with 1 and 2 shards: librdkafka consumers
//! whose limits are below, near or above the record batches still read everything in order, and
//! raw Fetch requests get exactly the bytes Kafka's rules give (at most `max_bytes` in all and
//! `partition_max_bytes` per partition, filled in request order, except the first batch of the
//! first partition that returns records, which goes out whole).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::deliveries::Deliveries;
use common::{Broker, SHARD_COUNTS};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sluice_client::blocking::read_frame;
use sluice_client::frame::{self, RequestId};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Record `i` of a test: its index, then a fill byte it chooses, `size` bytes in all.
fn sized(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("{i:08}").into_bytes();
    value.resize(size, b'a' + (i % 26) as u8);
    value
}

/// Sends `values[i]` to partition `i % partitions`, each in a batch of its own, and waits for
/// every acknowledgement.
fn produce(broker: &Broker, topic: &str, partitions: usize, values: &[Vec<u8>]) {
    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "2000000")
        .set("linger.ms", "0")
        .create_with_context(deliveries.clone())
        .unwrap();
    for (i, value) in values.iter().enumerate() {
        let record = BaseRecord::<(), _>::to(topic)
            .partition((i % partitions) as i32)
            .payload(value);
        producer.send(record).unwrap();
        producer.flush(TIMEOUT).unwrap();
    }
    assert!(deliveries.failed.lock().unwrap().is_empty());
}

fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    let mut s = common::connect(broker);
    common::create_topic(&mut s, topic, partitions);
}

/// Reads every partition from the beginning with a consumer configured by `settings` until
/// `expected` records arrived, and checks they are the ones `produce` sent, in order, each once.
fn consume_everything(
    broker: &Broker,
    topic: &str,
    partitions: usize,
    values: &[Vec<u8>],
    settings: &[(&str, &str)],
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "sluice-tests-unused")
        .set("enable.auto.commit", "false");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    let mut count = 0;
    let deadline = Instant::now() + TIMEOUT;
    while count < values.len() {
        assert!(
            Instant::now() < deadline,
            "{settings:?}: read {count} of {} records",
            values.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = m.payload().unwrap_or_default().to_vec();
                read.entry(m.partition())
                    .or_default()
                    .push((m.offset(), value));
                count += 1;
            }
            Some(Err(e)) => panic!("{settings:?}: consume error: {e}"),
            None => {}
        }
    }
    for p in 0..partitions {
        let want: Vec<(i64, Vec<u8>)> = values
            .iter()
            .skip(p)
            .step_by(partitions)
            .enumerate()
            .map(|(offset, v)| (offset as i64, v.clone()))
            .collect();
        let got = read.remove(&(p as i32)).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{settings:?}: partition {p}");
        assert!(got == want, "{settings:?}: partition {p} out of order");
    }
}

/// The case a librdkafka consumer once never made progress in: a per-partition limit far above
/// the total, records close to the total, and the smallest receive buffer librdkafka allows
/// for that total (an answer above it drops the connection).
#[test]
fn a_partition_limit_above_the_total_makes_progress() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch-partition-above-total", cores, &[]);
        create_topic(&broker, "big", 3);
        let values: Vec<Vec<u8>> = (0..12).map(|i| sized(i, 900_000)).collect();
        produce(&broker, "big", 3, &values);
        consume_everything(
            &broker,
            "big",
            3,
            &values,
            &[
                ("max.partition.fetch.bytes", "20000000"),
                ("fetch.max.bytes", "1000000"),
                ("receive.message.max.bytes", "1000512"),
            ],
        );
    }
}

/// Batches just below, at and just above the total limit, with no room to spare in the receive
/// buffer: the first batch goes out whole, and nothing else is added past the limit.
#[test]
fn records_near_the_total_limit_are_read() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch-near-total", cores, &[]);
        create_topic(&broker, "near", 2);
        let sizes = [
            990_000, 999_000, 999_900, 500_000, 499_000, 10_000, 995_000, 999_800,
        ];
        let values: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| sized(i, *s))
            .collect();
        produce(&broker, "near", 2, &values);
        consume_everything(
            &broker,
            "near",
            2,
            &values,
            &[
                ("max.partition.fetch.bytes", "1000000"),
                ("fetch.max.bytes", "1000000"),
                ("receive.message.max.bytes", "1000512"),
            ],
        );
    }
}

/// A batch larger than both limits is still delivered (librdkafka raises `fetch.max.bytes` to
/// its `message.max.bytes`, so that is lowered too).
#[test]
fn a_batch_larger_than_both_limits_is_delivered() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch-batch-above-limits", cores, &[]);
        create_topic(&broker, "large", 2);
        let values: Vec<Vec<u8>> = (0..6).map(|i| sized(i, 300_000)).collect();
        produce(&broker, "large", 2, &values);
        consume_everything(
            &broker,
            "large",
            2,
            &values,
            &[
                ("message.max.bytes", "1000"),
                ("max.partition.fetch.bytes", "50000"),
                ("fetch.max.bytes", "100000"),
            ],
        );
    }
}

/// Many partitions, each limited to a few small batches, under a total that holds only a few
/// partitions' worth: every fetch fills some in request order and the rest catch up later.
#[test]
fn many_partitions_with_small_limits_are_read() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch-many-small", cores, &[]);
        let partitions = 16;
        create_topic(&broker, "many", partitions as i32);
        let values: Vec<Vec<u8>> = (0..partitions * 12).map(|i| sized(i, 700)).collect();
        produce(&broker, "many", partitions, &values);
        consume_everything(
            &broker,
            "many",
            partitions,
            &values,
            &[
                ("message.max.bytes", "1000"),
                ("max.partition.fetch.bytes", "2000"),
                ("fetch.max.bytes", "5000"),
            ],
        );
    }
}

/// The sizes of the record batches of a partition, read whole with one raw fetch.
fn batch_sizes(s: &mut TcpStream, topic: &str, partition: i32) -> Vec<usize> {
    let (_, answer) = fetch(s, topic, &[partition], 64 << 20, 64 << 20);
    let records = answer[0].clone();
    let mut sizes = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        sizes.push(len);
        at += len;
    }
    assert_eq!(at, records.len(), "whole batches");
    sizes
}

/// One raw Fetch v12 from offset 0 of `partitions`, in that order: the response frame's size,
/// and each partition's record bytes.
fn fetch(
    s: &mut TcpStream,
    topic: &str,
    partitions: &[i32],
    max_bytes: i32,
    partition_max_bytes: i32,
) -> (usize, Vec<Vec<u8>>) {
    let version = 12;
    let parts = partitions
        .iter()
        .map(|p| {
            FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(0)
                .with_partition_max_bytes(partition_max_bytes)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(parts)]);
    let id = RequestId {
        correlation_id: 7,
        client_id: "fetch-sizing",
    };
    let bytes = frame::encode_request(ApiKey::Fetch, version, id, &request).unwrap();
    s.write_all(&bytes).unwrap();
    let body = read_frame(s, common::RESPONSE_MAX_BYTES).unwrap();
    let size = body.len();
    let r: FetchResponse = frame::decode_response(ApiKey::Fetch, version, 7, body).unwrap();
    let answered = &r.responses[0].partitions;
    assert_eq!(answered.len(), partitions.len());
    let records = answered
        .iter()
        .zip(partitions)
        .map(|(a, p)| {
            assert_eq!((a.partition_index, a.error_code), (*p, 0));
            a.records.as_ref().map(|r| r.to_vec()).unwrap_or_default()
        })
        .collect();
    (size, records)
}

/// Kafka's sizing of a fetch from offset 0 of partitions holding `batches`, in request order
/// (ReplicaManager's read loop and LogSegment.read), written out again independently of the
/// broker's code.
fn kafka_sizes(
    batches: &[&Vec<usize>],
    max_bytes: usize,
    partition_max_bytes: usize,
) -> Vec<usize> {
    let mut left = max_bytes;
    let mut min_one = true;
    batches
        .iter()
        .map(|sizes| {
            let Some(&first) = sizes.first() else {
                return 0;
            };
            let available: usize = sizes.iter().sum();
            let limit = partition_max_bytes.min(left);
            let adjusted = if min_one { limit.max(first) } else { limit };
            let len = if adjusted == 0 || adjusted < first {
                0
            } else {
                adjusted.min(available)
            };
            if len > 0 {
                min_one = false;
            }
            left -= len.min(left);
            len
        })
        .collect()
}

/// Bytes of a Fetch v12 response that are not records, for one topic of a few partitions.
const FRAMING_MAX_BYTES: usize = 1024;

#[test]
fn raw_fetches_are_sized_exactly_as_kafka_sizes_them() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch-raw-sizing", cores, &[]);
        let partitions = 5;
        create_topic(&broker, "raw", partitions);
        // Partition 4 stays empty; the others get batches of assorted sizes.
        let sizes = [1_000, 30_000, 5_000, 120_000, 800, 60_000, 9_000, 250_000];
        let values: Vec<Vec<u8>> = (0..4 * sizes.len())
            .map(|i| sized(i, sizes[(i / 4 + i % 4) % sizes.len()]))
            .collect();
        produce(&broker, "raw", 4, &values);
        let mut s = common::connect(&broker);
        let batches: Vec<Vec<usize>> = (0..partitions)
            .map(|p| batch_sizes(&mut s, "raw", p))
            .collect();
        assert!(batches[4].is_empty());
        let mut returned: usize = batches.iter().flatten().sum();
        // With 2 shards, partitions 0, 2, 4 share one and 1, 3 the other. In [2, 3, 1, ...] under
        // max_bytes 200000 and partition_max_bytes 100000, partition 3's shard reads it as if it
        // came first (its 120 KB first batch whole) and so reads partition 1 short; the exact
        // answer gives 3 nothing, and 1 is read again for its full share.
        let orders: [Vec<i32>; 4] = [
            vec![0, 1, 2, 3, 4],
            vec![4, 3, 2, 1, 0],
            vec![2, 4, 0, 3, 1],
            vec![2, 3, 1, 0, 4],
        ];
        let limits = [
            0, 1, 700, 5_000, 29_999, 100_000, 200_000, 300_000, 1_000_000,
        ];
        for order in &orders {
            let in_order: Vec<&Vec<usize>> = order.iter().map(|p| &batches[*p as usize]).collect();
            for max_bytes in limits {
                for partition_max_bytes in limits {
                    let (frame_size, got) = fetch(
                        &mut s,
                        "raw",
                        order,
                        max_bytes as i32,
                        partition_max_bytes as i32,
                    );
                    let got: Vec<usize> = got.iter().map(Vec::len).collect();
                    let what = format!(
                        "cores={cores} order={order:?} max_bytes={max_bytes} \
                         partition_max_bytes={partition_max_bytes}"
                    );
                    assert_eq!(
                        got,
                        kafka_sizes(&in_order, max_bytes, partition_max_bytes),
                        "{what}"
                    );
                    // The answer never exceeds max_bytes but by the one first batch.
                    let first_batch = in_order.iter().find_map(|b| b.first()).unwrap();
                    let records: usize = got.iter().sum();
                    returned += records;
                    assert!(records <= max_bytes.max(*first_batch), "{what}: {records}");
                    assert!(
                        frame_size <= records + FRAMING_MAX_BYTES,
                        "{what}: {frame_size}"
                    );
                }
            }
        }
        // The partitions' traffic counters count what the answers returned, not what the
        // shards read ahead (they learn it just after each answer is sent).
        let deadline = Instant::now() + TIMEOUT;
        while bytes_out(&broker) != returned as f64 {
            assert!(
                Instant::now() < deadline,
                "cores={cores}: bytes out {} != {returned} returned",
                bytes_out(&broker)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Record bytes fetches returned, summed over the partitions' counters.
fn bytes_out(broker: &Broker) -> f64 {
    broker
        .admin_get("/metrics")
        .lines()
        .filter(|l| l.starts_with("sluice_partition_bytes_out_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
