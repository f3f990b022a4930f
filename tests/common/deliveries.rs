//! librdkafka delivery reports, collected: what the broker acknowledged and what failed; the
//! settings of a producer that must lose nothing; and a send that waits while the producer's
//! queue is full.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// The settings of a producer that must lose nothing and store nothing twice: idempotent,
/// acknowledged by every in-sync replica, and patient enough to outlast a leader election.
pub const SAFE_PRODUCER: [(&str, &str); 4] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "120000"),
];

/// Acknowledged records: (partition, offset, value).
pub type Acked = Arc<Mutex<Vec<(i32, i64, String)>>>;

/// A producer context recording each delivery report; clones share the records. Reports are
/// pushed as they are served, which is not offset order: `flush` serves the report queue on the
/// caller's thread while the threaded producer's own poll thread serves it too, so two batches'
/// reports can land in either order. Sort before comparing positions.
#[derive(Clone, Default)]
pub struct Deliveries {
    pub acked: Acked,
    /// Each failure as `error: value`.
    pub failed: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                self.acked
                    .lock()
                    .unwrap()
                    .push((m.partition(), m.offset(), value));
            }
            Err((e, m)) => self.failed.lock().unwrap().push(format!(
                "{e}: {:?}",
                m.payload().map(String::from_utf8_lossy)
            )),
        }
    }
}

/// A producer for `broker` with these settings, and the reports it will collect.
pub fn producer(
    broker: &super::Broker,
    settings: &[(&str, &str)],
) -> (ThreadedProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer = config.create_with_context(deliveries.clone()).unwrap();
    (producer, deliveries)
}

/// Sends `record`, waiting while librdkafka's queue is full; any other refusal fails the test.
pub fn send_waiting<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'_, K, P>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}
