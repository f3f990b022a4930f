//! `sluice bench produce`, and the producers every workload uses: `--producers` librdkafka
//! clients, each on its own thread, share one open-loop schedule; each record's intended send
//! time travels as its delivery opaque, so the acknowledgement is measured from it (delivery
//! latency). For the end-to-end workload the first 8 bytes of each value carry the same time;
//! other workloads send one value for every record and lend it to librdkafka uncopied, so the
//! generator spends its CPU on the broker's protocol rather than on copying and freeing values.

use std::ffi::{c_void, CString};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::bindings as rdsys;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::ClientContext;

use super::clients::{prepare_topic, producer_config, Topic};
use super::limits::{ADMIN_TIMEOUT, FLUSH_TIMEOUT, KEY_SPACE, QUEUE_FULL_BACKOFF};
use super::progress::{self, Goal};
use super::recorder::Recorder;
use super::report::{Measured, Report};
use super::schedule::{Epoch, Schedule, Tickets};
use super::{Keys, Options};

/// Bytes at the start of each value that carry its intended send time (nanoseconds after the
/// run's epoch, little endian), when the value is long enough.
pub const STAMP_BYTES: usize = 8;

/// Timer slack of the sending threads, in nanoseconds (the kernel's minimum).
const TIMER_SLACK_NS: u64 = 1;

/// What the rest of a value is filled with.
const PAYLOAD_FILL: u8 = b'x';

/// librdkafka's `RD_KAFKA_PARTITION_UA` (a C macro the bindings lack): let the partitioner
/// choose.
const UNASSIGNED_PARTITION: i32 = -1;

/// How the producers make each record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// One value for every record, lent to librdkafka without a copy per record (what Kafka's
    /// own kafka-producer-perf-test sends too).
    Shared,
    /// Each value carries its intended send time in its first `STAMP_BYTES`, for end-to-end
    /// latency; librdkafka copies each one.
    Stamped,
}

pub fn run(opts: &Options) -> Result<Report> {
    let topic = prepare_topic(opts)?;
    let recorder = send_measured(opts, &topic, opts.progress)?;
    Ok(Report::new(
        opts,
        Some(&topic),
        Measured::Delivery,
        &recorder,
    ))
}

/// Connects the producers, sends the records of `opts`' schedule and returns what their
/// delivery reports measured.
pub fn send_measured(opts: &Options, topic: &Topic, show_progress: bool) -> Result<Recorder> {
    let epoch = Epoch::now();
    let recorder = Arc::new(Mutex::new(Recorder::new(epoch.instant())));
    let producers = Producers::connect(opts, topic, epoch, &recorder, Values::Shared)?;
    let schedule = Schedule::new(opts.rate, opts.warmup, opts.limit);
    recorder.lock().unwrap().origin = schedule.measure_from;
    let goal = Goal::of(opts.limit, opts.warmup);
    progress::show(show_progress, goal, &recorder, || {
        producers.run(opts, topic, &schedule)
    })?;
    // `run` dropped the producers, and with them every other handle on the recorder.
    let recorder = Arc::into_inner(recorder).expect("the producers are gone");
    Ok(recorder.into_inner().unwrap())
}

/// Delivery reports of one producer: measured records go to the shared recorder.
struct Deliveries {
    recorder: Arc<Mutex<Recorder>>,
    epoch: Epoch,
    /// Acknowledged records of every producer, warm-up included.
    acked: Arc<AtomicU64>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The intended send time, as `Epoch` nanoseconds.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: usize) {
        let done = Instant::now();
        let mut recorder = self.recorder.lock().unwrap();
        match result {
            Ok(message) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                recorder.completed(self.epoch.decode(intended as u64), done, bytes);
            }
            Err(_) => recorder.error(),
        }
    }
}

/// The producer clients of one run, connected and ready.
pub struct Producers {
    clients: Vec<ThreadedProducer<Deliveries>>,
    /// The value every client lends librdkafka (`Values::Shared`). Declared after `clients` so
    /// that it is dropped after them: librdkafka may read it until a client is destroyed.
    shared_value: Arc<[u8]>,
    values: Values,
    epoch: Epoch,
    acked: Arc<AtomicU64>,
}

impl Producers {
    /// Starts `--producers` clients, each already connected and holding the topic's metadata,
    /// so that the schedule that follows does not include connecting.
    pub fn connect(
        opts: &Options,
        topic: &Topic,
        epoch: Epoch,
        recorder: &Arc<Mutex<Recorder>>,
        values: Values,
    ) -> Result<Producers> {
        let acked = Arc::new(AtomicU64::new(0));
        let config = producer_config(opts);
        let clients = (0..opts.producers)
            .map(|_| {
                let context = Deliveries {
                    recorder: recorder.clone(),
                    epoch,
                    acked: acked.clone(),
                };
                let producer: ThreadedProducer<Deliveries> = config
                    .create_with_context(context)
                    .context("creating a librdkafka producer")?;
                producer
                    .client()
                    .fetch_metadata(Some(&topic.name), ADMIN_TIMEOUT)
                    .with_context(|| format!("metadata of {}", topic.name))?;
                Ok(producer)
            })
            .collect::<Result<_>>()?;
        Ok(Producers {
            clients,
            shared_value: vec![PAYLOAD_FILL; opts.size].into(),
            values,
            epoch,
            acked,
        })
    }

    /// Sends the schedule's records, each client on its own thread, and waits for every
    /// acknowledgement; returns how many records were acknowledged (warm-up included).
    pub fn run(self, opts: &Options, topic: &Topic, schedule: &Schedule) -> Result<u64> {
        let tickets = Tickets::default();
        std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .clients
                .iter()
                .enumerate()
                .map(|(i, producer)| {
                    let sender = Sender::new(opts, topic, self.epoch, i);
                    let (tickets, shared_value) = (&tickets, &self.shared_value[..]);
                    let values = self.values;
                    std::thread::Builder::new()
                        .name(format!("producer-{i}"))
                        .spawn_scoped(scope, move || match values {
                            Values::Stamped => sender.run(producer, schedule, tickets),
                            Values::Shared => {
                                sender.run_shared(producer, schedule, tickets, shared_value)
                            }
                        })
                })
                .collect::<Result<_, _>>()?;
            threads
                .into_iter()
                .try_for_each(|t| t.join().expect("a producer thread panicked"))
        })?;
        Ok(self.acked.load(Ordering::Relaxed))
    }
}

/// One producer thread's record builder.
struct Sender<'a> {
    topic: &'a Topic,
    epoch: Epoch,
    payload: Vec<u8>,
    keys: KeyChooser,
}

impl<'a> Sender<'a> {
    fn new(opts: &Options, topic: &'a Topic, epoch: Epoch, producer: usize) -> Sender<'a> {
        Sender {
            topic,
            epoch,
            payload: vec![PAYLOAD_FILL; opts.size],
            keys: KeyChooser::new(opts.keys, producer),
        }
    }

    /// Sends records whose values carry their intended send time.
    fn run(
        mut self,
        producer: &ThreadedProducer<Deliveries>,
        schedule: &Schedule,
        tickets: &Tickets,
    ) -> Result<()> {
        tighten_timer_slack();
        while let Some(ticket) = tickets.take(schedule) {
            schedule.wait_for(&ticket);
            let stamp = self.epoch.encode(ticket.intended);
            stamp_value(&mut self.payload, stamp);
            let record =
                BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.topic.name, stamp as usize)
                    .payload(&self.payload[..]);
            let record = match self.keys.next(ticket.index) {
                Some(key) => record.key(key),
                None => record.partition((ticket.index % self.topic.partitions as u64) as i32),
            };
            send(producer, record)?;
        }
        producer
            .flush(FLUSH_TIMEOUT)
            .context("waiting for the last acknowledgements")
    }

    /// Sends records that all lend librdkafka `value` (owned by `Producers`, which outlives the
    /// client), through a topic handle taken once rather than looked up by name per record.
    fn run_shared(
        mut self,
        producer: &ThreadedProducer<Deliveries>,
        schedule: &Schedule,
        tickets: &Tickets,
        value: &[u8],
    ) -> Result<()> {
        tighten_timer_slack();
        let handle = TopicHandle::new(producer, &self.topic.name)?;
        while let Some(ticket) = tickets.take(schedule) {
            schedule.wait_for(&ticket);
            let stamp = self.epoch.encode(ticket.intended);
            let key = self.keys.next(ticket.index);
            let partition = match key {
                // librdkafka's partitioner (murmur2, `producer_config`) places keyed records.
                Some(_) => UNASSIGNED_PARTITION,
                None => (ticket.index % self.topic.partitions as u64) as i32,
            };
            handle.send_lent(partition, key, value, stamp as usize)?;
        }
        producer
            .flush(FLUSH_TIMEOUT)
            .context("waiting for the last acknowledgements")
    }
}

/// The kernel may wake a sleeper up to its timer slack (50 us by default) late, which would
/// count as latency; the tightest slack keeps pacing error to a few microseconds. Failing leaves
/// only that error, so it is ignored.
fn tighten_timer_slack() {
    let _ = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS);
}

/// A librdkafka topic handle of one producer client, destroyed on drop (before the client: it
/// lives on the sending thread, which the client outlives).
struct TopicHandle(*mut rdsys::rd_kafka_topic_t);

impl TopicHandle {
    fn new(producer: &ThreadedProducer<Deliveries>, name: &str) -> Result<TopicHandle> {
        let name = CString::new(name).context("a topic name with a NUL byte")?;
        // SAFETY: the client is alive, `name` is NUL-terminated, and a null configuration asks
        // for the client's default topic configuration (as rust-rdkafka's own `send` does).
        let handle = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        ensure!(
            !handle.is_null(),
            "librdkafka refused a handle for topic {name:?}"
        );
        Ok(TopicHandle(handle))
    }

    /// Hands librdkafka a record whose value it reads in place (no `RD_KAFKA_MSG_F_COPY`); the
    /// key is copied, as always. Waits while the queue is full (the intended send time stays, so
    /// the wait counts as latency).
    fn send_lent(
        &self,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
        opaque: usize,
    ) -> Result<()> {
        let (key_ptr, key_len) = key.map_or((std::ptr::null(), 0), |k| (k.as_ptr(), k.len()));
        loop {
            // SAFETY: the handle is alive; librdkafka copies the key before returning and only
            // reads `value`, which the caller keeps alive until the client is destroyed. The
            // opaque is the intended send time, which `Deliveries` reads back as a `usize`.
            let rc = unsafe {
                rdsys::rd_kafka_produce(
                    self.0,
                    partition,
                    0,
                    value.as_ptr() as *mut c_void,
                    value.len(),
                    key_ptr as *const c_void,
                    key_len,
                    opaque as *mut c_void,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            // SAFETY: reads this thread's last librdkafka error, set by the call above.
            match unsafe { rdsys::rd_kafka_last_error() } {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__QUEUE_FULL => {
                    std::thread::sleep(QUEUE_FULL_BACKOFF)
                }
                err => bail!("sending a record: {}", RDKafkaErrorCode::from(err)),
            }
        }
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_topic_new` and destroyed once, while the client lives.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0) }
    }
}

/// Hands the record to librdkafka, waiting while its queue is full (the intended send time
/// stays, so the wait counts as latency).
fn send(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_BACKOFF);
            }
            Err((err, _)) => bail!("sending a record: {err}"),
        }
    }
}

/// Writes the intended send time into the start of a value long enough to hold it.
pub fn stamp_value(value: &mut [u8], stamp: u64) {
    if let Some(head) = value.get_mut(..STAMP_BYTES) {
        head.copy_from_slice(&stamp.to_le_bytes());
    }
}

/// The intended send time written by `stamp_value`, if the value holds one.
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let head = value.get(..STAMP_BYTES)?;
    Some(u64::from_le_bytes(head.try_into().ok()?))
}

/// Record keys for `--keys`: none, or `key-N` for N in `KEY_SPACE`, at random or in turn.
struct KeyChooser {
    keys: Keys,
    /// xorshift64 state (never 0).
    state: u64,
    buffer: Vec<u8>,
}

impl KeyChooser {
    fn new(keys: Keys, producer: usize) -> KeyChooser {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        KeyChooser {
            keys,
            state: (clock ^ (producer as u64).rotate_left(32)) | 1,
            buffer: Vec::new(),
        }
    }

    /// The key of record `index`.
    fn next(&mut self, index: u64) -> Option<&[u8]> {
        let n = match self.keys {
            Keys::None => return None,
            Keys::Random => self.random() % KEY_SPACE,
            Keys::RoundRobin => index % KEY_SPACE,
        };
        self.buffer.clear();
        write!(self.buffer, "key-{n}").expect("writing to a Vec");
        Some(&self.buffer)
    }

    fn random(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_fit_values_of_eight_bytes_or_more() {
        let mut value = vec![PAYLOAD_FILL; 16];
        stamp_value(&mut value, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&value), Some(0x0102_0304_0506_0708));
        assert_eq!(&value[STAMP_BYTES..], &[PAYLOAD_FILL; 8]);
        let mut short = vec![PAYLOAD_FILL; 4];
        stamp_value(&mut short, 7);
        assert_eq!((short.as_slice(), read_stamp(&short)), (&b"xxxx"[..], None));
    }

    #[test]
    fn keys_come_from_the_key_space() {
        let mut none = KeyChooser::new(Keys::None, 0);
        assert_eq!(none.next(3), None);
        let mut turn = KeyChooser::new(Keys::RoundRobin, 0);
        assert_eq!(turn.next(KEY_SPACE + 3), Some(&b"key-3"[..]));
        let mut random = KeyChooser::new(Keys::Random, 1);
        let keys: std::collections::HashSet<Vec<u8>> =
            (0..100).map(|i| random.next(i).unwrap().to_vec()).collect();
        assert!(keys.len() > 50, "random keys vary: {keys:?}");
        let numbers = keys
            .iter()
            .map(|k| String::from_utf8_lossy(&k[4..]).parse::<u64>());
        assert!(numbers.into_iter().all(|n| n.unwrap() < KEY_SPACE));
    }
}
