//! librdkafka consumers for reading partitions to their end in tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
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

/// How long dropping a group consumer may take before the test goes on without it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A group consumer whose close cannot hang the test. librdkafka (2.12) can wait forever in an
/// (un)assign call made from a rebalance callback while the consumer closes: once its group
/// handler has terminated, it drops such a request unanswered (`rd_kafka_cgrp_op_serve`), and
/// nothing tells the callback beforehand (`rd_kafka_consumer_closed` turns true in the same
/// step). A revoke served by the close (rdkafka's `Drop`) then hung a test for 40 minutes. So the
/// consumer is dropped on a thread of its own; one still closing after `CLOSE_TIMEOUT` is left
/// to the process's exit, with a line saying so, and the test goes on.
pub struct BoundedClose<C: ConsumerContext + 'static>(Option<BaseConsumer<C>>);

impl<C: ConsumerContext + 'static> BoundedClose<C> {
    pub fn new(consumer: BaseConsumer<C>) -> BoundedClose<C> {
        BoundedClose(Some(consumer))
    }
}

impl<C: ConsumerContext + 'static> std::ops::Deref for BoundedClose<C> {
    type Target = BaseConsumer<C>;

    fn deref(&self) -> &BaseConsumer<C> {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<C: ConsumerContext + 'static> Drop for BoundedClose<C> {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        if wait.recv_timeout(CLOSE_TIMEOUT).is_err() {
            eprintln!(
                "a consumer was still closing after {CLOSE_TIMEOUT:?} (librdkafka's close race); \
                 the test goes on without it"
            );
        }
    }
}
