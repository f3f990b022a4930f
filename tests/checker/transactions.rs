//! The checker's transactional producer: while the faults run, it writes transactions of a few
//! records each (the unique values `t<n>`) over the checked topic, and commits or aborts each
//! as a seeded draw says. Its ledger says which values each outcome covers, so the checker can
//! hold read_committed consumers to it: a committed transaction's records are all visible, an
//! aborted one's never are.
//!
//! A transaction whose end the client could not learn (a fatal error, or an end that kept
//! failing until its limit) has an unknown outcome: its values are held only to the rules every
//! record is held to (stored where acknowledged, at one offset). The producer is then replaced
//! by a new one with the same transactional id, whose initialization settles the old
//! transaction (Kafka commits it if its commit was already decided, aborts it otherwise), so no
//! transaction stays open to hold the last stable offset back.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaError};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::{Reporter, Rng};

/// The transactional id of the checker's producer.
const TRANSACTIONAL_ID: &str = "checker-transactions";
/// Records in one transaction: between 1 and this many, spread over the partitions.
const RECORDS_PER_TRANSACTION_MAX: u64 = 8;
/// One commit, abort or initialization call's limit; a retriable failure is retried.
const CALL_MAX: Duration = Duration::from_secs(30);
/// How long one transaction's end (or one producer's initialization) may keep failing
/// retriably before its outcome is given up as unknown: longer than any fault lasts.
const SETTLE_MAX: Duration = Duration::from_secs(240);
/// Kafka's default; no fault outlasts it, so the coordinator never aborts a transaction on
/// its own while the producer still works on it.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How a transaction ended, as its producer learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Committed,
    Aborted,
    Unknown,
}

/// What the transactional producer did: the values of each outcome, every record the brokers
/// acknowledged (committed, aborted or unknown: an acknowledged record is stored whatever
/// its transaction's fate), and what went wrong that must not.
#[derive(Default)]
pub struct Ledger {
    pub committed: BTreeSet<String>,
    pub aborted: BTreeSet<String>,
    pub unknown: BTreeSet<String>,
    /// (committed, aborted, unknown) transaction counts.
    pub counts: (usize, usize, usize),
    pub acked: Vec<(i32, i64, String)>,
    /// Values `t0..t<sent>` were handed to the producer.
    pub sent: u64,
    pub anomalies: Vec<String>,
}

/// The producer's thread; `stop` lets it finish the transaction it is in and hands the ledger
/// back.
pub struct Transactions {
    stop: Arc<AtomicBool>,
    reporter: Reporter,
    thread: Option<JoinHandle<Ledger>>,
}

impl Transactions {
    pub fn start(
        bootstrap: &str,
        topic: &'static str,
        partitions: i32,
        seed: u64,
        log: &Path,
    ) -> Transactions {
        let reporter = Reporter::writing_to(log);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            bootstrap: bootstrap.to_string(),
            topic,
            partitions,
            reporter: reporter.clone(),
            rng: Rng(seed ^ 0x7472_616E_7361_6374),
            stop: stop.clone(),
            ledger: Ledger::default(),
        };
        Transactions {
            stop,
            reporter,
            thread: Some(std::thread::spawn(move || writer.run())),
        }
    }

    /// Asks the producer to stop after the transaction it is in.
    pub fn stop_sending(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the producer to settle its last transaction; its ledger.
    pub fn finish(mut self) -> Ledger {
        self.stop_sending();
        let mut ledger = self
            .thread
            .take()
            .map(|thread| thread.join().expect("the transactional producer's thread"))
            .unwrap_or_default();
        ledger.acked = self.reporter.0.lock().unwrap().acked.clone();
        ledger
    }
}

impl Drop for Transactions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The state of the producer's thread.
struct Writer {
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    reporter: Reporter,
    rng: Rng,
    stop: Arc<AtomicBool>,
    ledger: Ledger,
}

impl Writer {
    fn run(mut self) -> Ledger {
        let Some(mut producer) = self.initialized() else {
            return self.ledger;
        };
        while !self.stop.load(Ordering::SeqCst) {
            let (values, outcome) = self.transaction(&producer);
            if outcome == Outcome::Unknown {
                // Settle it: a new producer with the same id fences this one.
                drop(producer);
                let Some(next) = self.initialized() else {
                    self.record(values, outcome);
                    return self.ledger;
                };
                producer = next;
            }
            self.record(values, outcome);
            std::thread::sleep(self.rng.millis(0, 50));
        }
        self.ledger
    }

    /// Notes a transaction's outcome in the ledger and in the delivery-report log (for reading
    /// after a failure: `committed t5 t6 t7`).
    fn record(&mut self, values: Vec<String>, outcome: Outcome) {
        {
            let mut reports = self.reporter.0.lock().unwrap();
            let _ = writeln!(reports.log, "{outcome:?} {}", values.join(" "));
        }
        let (set, count) = match outcome {
            Outcome::Committed => (&mut self.ledger.committed, &mut self.ledger.counts.0),
            Outcome::Aborted => (&mut self.ledger.aborted, &mut self.ledger.counts.1),
            Outcome::Unknown => (&mut self.ledger.unknown, &mut self.ledger.counts.2),
        };
        *count += 1;
        set.extend(values);
    }

    /// A new producer with the checker's transactional id, its transactions initialized; `None`
    /// (noted as an anomaly) if that never succeeds.
    fn initialized(&mut self) -> Option<ThreadedProducer<Reporter>> {
        let producer: ThreadedProducer<Reporter> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("transactional.id", TRANSACTIONAL_ID)
            .set("linger.ms", "5")
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(self.reporter.clone())
            .unwrap();
        let started = Instant::now();
        loop {
            match producer.init_transactions(CALL_MAX) {
                Ok(()) => return Some(producer),
                Err(e) if retriable(&e) && started.elapsed() < SETTLE_MAX => {}
                Err(e) => {
                    self.anomaly(format!(
                        "the transactional producer did not initialize: {e}"
                    ));
                    return None;
                }
            }
        }
    }

    /// Writes one transaction and ends it as the draw says; its values and how it ended.
    fn transaction(&mut self, producer: &ThreadedProducer<Reporter>) -> (Vec<String>, Outcome) {
        if let Err(e) = producer.begin_transaction() {
            self.anomaly(format!("begin_transaction: {e}"));
            return (Vec::new(), Outcome::Unknown);
        }
        let count = 1 + self.rng.below(RECORDS_PER_TRANSACTION_MAX);
        let mut values = Vec::new();
        for _ in 0..count {
            let n = self.ledger.sent;
            let value = format!("t{n}");
            let partition = (n % self.partitions as u64) as i32;
            if let Err(e) = send_waiting(producer, self.topic, partition, &value) {
                // The transaction cannot commit now; the end below learns why.
                eprintln!("the transactional producer refused {value}: {e}");
                break;
            }
            self.ledger.sent += 1;
            values.push(value);
        }
        let outcome = if self.rng.below(4) == 0 {
            // Aborted records must reach the log for read_committed to have something to
            // hide: an abort alone purges what librdkafka has not sent yet.
            if let Err(e) = producer.flush(CALL_MAX) {
                eprintln!("the transactional producer did not flush before its abort: {e}");
            }
            self.abort(producer)
        } else {
            self.commit(producer)
        };
        (values, outcome)
    }

    fn commit(&mut self, producer: &ThreadedProducer<Reporter>) -> Outcome {
        let started = Instant::now();
        loop {
            match producer.commit_transaction(CALL_MAX) {
                Ok(()) => return Outcome::Committed,
                Err(e) if requires_abort(&e) => return self.abort(producer),
                Err(e) if retriable(&e) && started.elapsed() < SETTLE_MAX => {}
                Err(e) => return self.unknown("commit", e),
            }
        }
    }

    fn abort(&mut self, producer: &ThreadedProducer<Reporter>) -> Outcome {
        let started = Instant::now();
        loop {
            match producer.abort_transaction(CALL_MAX) {
                Ok(()) => return Outcome::Aborted,
                Err(e) if retriable(&e) && started.elapsed() < SETTLE_MAX => {}
                Err(e) => return self.unknown("abort", e),
            }
        }
    }

    /// A transaction end that failed for good: an anomaly. With one producer per transactional
    /// id and no fault longer than the transaction timeout, nothing should fence it, and no
    /// fault lasts long enough to keep an end failing until `SETTLE_MAX`.
    fn unknown(&mut self, end: &str, error: KafkaError) -> Outcome {
        let kind = if fatal(&error) { "fatally" } else { "for good" };
        self.anomaly(format!("the transaction's {end} failed {kind}: {error}"));
        Outcome::Unknown
    }

    fn anomaly(&mut self, what: String) {
        eprintln!("transactions: {what}");
        self.ledger.anomalies.push(what);
    }
}

/// Sends one record, waiting while librdkafka's queue is full.
fn send_waiting(
    producer: &ThreadedProducer<Reporter>,
    topic: &str,
    partition: i32,
    value: &str,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::<(), str>::to(topic)
        .partition(partition)
        .payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn transaction_error(error: &KafkaError) -> Option<&RDKafkaError> {
    match error {
        KafkaError::Transaction(e) => Some(e),
        _ => None,
    }
}

/// rust-rdkafka's commit flushes first: a flush that timed out (a fault holds deliveries back)
/// leaves the transaction as it was, to commit again.
fn retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Flush(_))
        || transaction_error(error).is_some_and(RDKafkaError::is_retriable)
}

fn requires_abort(error: &KafkaError) -> bool {
    transaction_error(error).is_some_and(RDKafkaError::txn_requires_abort)
}

fn fatal(error: &KafkaError) -> bool {
    transaction_error(error).is_some_and(RDKafkaError::is_fatal)
}
