//! Transactional librdkafka producers, and a transaction that writes one record to every
//! partition of a topic, so that a read_committed reader shows which transactions it sees.

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A producer through `bootstrap` with the transactional id `txn_id`; it still has to
/// initialize its transactions.
pub fn transactional(bootstrap: &str, txn_id: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", txn_id)
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

/// Begins a transaction and writes `{prefix} {p}` to every partition `p`, leaving the
/// transaction open for the caller to flush, commit or abort.
pub fn write_transaction(producer: &BaseProducer, topic: &str, partitions: i32, prefix: &str) {
    producer.begin_transaction().unwrap();
    for p in 0..partitions {
        let value = format!("{prefix} {p}");
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(p)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
}
