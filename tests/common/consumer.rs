//! librdkafka consumers for reading partitions to their end in tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Broker;

/// How long a read to the end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A consumer that commits nothing and reports each partition's end (`PartitionEOF`); the
/// caller assigns the partitions.
pub fn to_the_end(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "sluice-tests-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap()
}

/// One consumed record: (offset, timestamp, value).
pub type Consumed = (i64, i64, String);

/// Reads partitions `0..partitions` of `topic` from their beginning to their end.
pub fn read_partitions(
    broker: &Broker,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<Consumed>> {
    let consumer = to_the_end(broker);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut read: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    let mut at_end = 0;
    let deadline = Instant::now() + READ_TIMEOUT;
    while at_end < partitions {
        assert!(Instant::now() < deadline, "never reached the end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => read.entry(m.partition()).or_default().push((
                m.offset(),
                m.timestamp().to_millis().unwrap_or(-1),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    read
}
