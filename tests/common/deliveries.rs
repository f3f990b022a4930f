//! librdkafka delivery reports, collected: what the broker acknowledged and what failed.

use std::sync::{Arc, Mutex};

use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

/// Acknowledged records: (partition, offset, value).
pub type Acked = Arc<Mutex<Vec<(i32, i64, String)>>>;

/// A producer context recording each delivery report; clones share the records.
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
