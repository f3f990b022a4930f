//! `sluice bench consume`: catch-up throughput. `--consumers` clients, each on its own thread
//! and assigned every n-th partition (no group, so no rebalance in the measurement), read from
//! the beginning everything the topic holds when the run starts. An empty topic is first filled
//! with `--records` (or `--duration`) records at full speed; that part is not measured.
//! `--reader fetch` reads with plain Fetch requests instead of librdkafka (see `fetch`).

use std::ffi::c_int;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::Offset;

use super::clients::{
    assign, consumer_config, prepare_topic, share, wait_for_coordinator, watermarks, Topic,
    Watermarks,
};
use super::fetch;
use super::limits::{CONSUME_BATCH_MESSAGES, CONSUME_BATCH_WAIT, CONSUME_STALL_TIMEOUT};
use super::produce::send_measured;
use super::progress::{self, Goal};
use super::recorder::Recorder;
use super::report::{Measured, Report};
use super::{Options, Reader};

pub fn run(opts: &Options) -> Result<Report> {
    let topic = prepare_topic(opts)?;
    let consumers = (0..opts.consumers)
        .map(|_| {
            consumer_config(opts)
                // Reaching the end is reported, which ends a partition whose last offsets are
                // not records (transaction markers).
                .set("enable.partition.eof", "true")
                .create::<BaseConsumer>()
                .context("creating a librdkafka consumer")
                .and_then(|client| {
                    wait_for_coordinator(&client, &topic)?;
                    Ok(client)
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut marks = watermarks(&consumers[0], &topic)?;
    if backlog(&marks) == 0 {
        prefill(opts, &topic)?;
        marks = watermarks(&consumers[0], &topic)?;
    }
    let leader = match opts.reader {
        Reader::Librdkafka => None,
        Reader::Fetch => Some(fetch::leader_address(&consumers[0], &topic)?),
    };
    let recorder = Mutex::new(Recorder::new(Instant::now()));
    let goal = Goal::Records(backlog(&marks).max(0) as u64);
    progress::show(opts.progress, goal, &recorder, || {
        std::thread::scope(|scope| {
            let threads: Vec<_> = consumers
                .iter()
                .enumerate()
                .map(|(i, consumer)| {
                    let mine: Vec<Watermarks> = share(topic.partitions, i, consumers.len())
                        .map(|p| marks[p as usize])
                        .collect();
                    let (topic, recorder, leader) = (&topic, &recorder, &leader);
                    std::thread::Builder::new()
                        .name(format!("consumer-{i}"))
                        .spawn_scoped(scope, move || match leader {
                            None => catch_up(consumer, topic, &mine, recorder),
                            Some(address) => fetch::catch_up(address, topic, &mine, recorder),
                        })
                })
                .collect::<Result<_, _>>()?;
            threads
                .into_iter()
                .try_for_each(|t| t.join().expect("a consumer thread panicked"))
        })
    })?;
    let recorder = recorder.into_inner().unwrap();
    Ok(Report::new(
        opts,
        Some(&topic),
        Measured::Throughput,
        &recorder,
    ))
}

fn backlog(marks: &[Watermarks]) -> i64 {
    marks.iter().map(|w| w.high - w.low).sum()
}

/// Fills the topic as fast as the producers go.
fn prefill(opts: &Options, topic: &Topic) -> Result<()> {
    let fill = Options {
        rate: None,
        warmup: Duration::ZERO,
        ..opts.clone()
    };
    let filled = send_measured(&fill, topic, false)?;
    ensure!(
        filled.errors == 0,
        "filling {}: {} records failed",
        topic.name,
        filled.errors
    );
    eprintln!(
        "filled {} with {} records ({:.0} MB) in {:.1} s",
        topic.name,
        filled.records,
        filled.bytes as f64 / 1e6,
        filled.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads `mine` from their start to the end offsets they had when the run began.
fn catch_up(
    consumer: &BaseConsumer,
    topic: &Topic,
    mine: &[Watermarks],
    recorder: &Mutex<Recorder>,
) -> Result<()> {
    let mut ends = PartitionEnds::new(mine);
    assign(
        consumer,
        topic,
        mine.iter()
            .filter(|w| w.high > w.low)
            .map(|w| (w.partition, Offset::Beginning)),
    )?;
    let mut queue = BatchQueue::new(consumer)?;
    let mut last_record = Instant::now();
    while !ends.all_reached() {
        let (mut records, mut bytes) = (0, 0);
        let read = queue.read(CONSUME_BATCH_WAIT, |message| match message.err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {
                records += 1;
                bytes += message.len + message.key_len;
                ends.reached(message.partition, message.offset + 1);
                Ok(())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                ends.reached(message.partition, i64::MAX);
                Ok(())
            }
            err => bail!("consuming {}: {}", topic.name, RDKafkaErrorCode::from(err)),
        })?;
        if records > 0 {
            last_record = Instant::now();
            recorder
                .lock()
                .unwrap()
                .arrived(last_record, records, bytes as u64);
        } else if read == 0 && last_record.elapsed() > CONSUME_STALL_TIMEOUT {
            bail!(
                "no records from {} partitions {:?} for {CONSUME_STALL_TIMEOUT:?}",
                topic.name,
                ends.missing()
            );
        }
    }
    Ok(())
}

/// The offset each partition is read up to, by partition id.
struct PartitionEnds {
    /// `None` once reached, or for a partition this consumer does not read.
    ends: Vec<Option<i64>>,
    left: usize,
}

impl PartitionEnds {
    fn new(mine: &[Watermarks]) -> PartitionEnds {
        let size = mine
            .iter()
            .map(|w| w.partition as usize + 1)
            .max()
            .unwrap_or(0);
        let mut ends = vec![None; size];
        for w in mine.iter().filter(|w| w.high > w.low) {
            ends[w.partition as usize] = Some(w.high);
        }
        let left = ends.iter().flatten().count();
        PartitionEnds { ends, left }
    }

    /// Notes that `partition` was read up to (not including) `next`.
    fn reached(&mut self, partition: i32, next: i64) {
        let Some(slot) = self.ends.get_mut(partition as usize) else {
            return;
        };
        if slot.is_some_and(|end| end <= next) {
            *slot = None;
            self.left -= 1;
        }
    }

    fn all_reached(&self) -> bool {
        self.left == 0
    }

    fn missing(&self) -> Vec<usize> {
        (0..self.ends.len())
            .filter(|p| self.ends[*p].is_some())
            .collect()
    }
}

/// A consumer's message queue read many messages per call (`rd_kafka_consume_batch_queue`).
/// rust-rdkafka's `poll` returns one message per call, each as an event it wraps in a fresh
/// `Arc` and times with two clock reads: at a million records a second that was a third of the
/// generator's CPU on the cores it shares with the broker, so the generator, not the broker, set
/// the rate. Reading in batches leaves librdkafka's own work per record (parsing, one op each),
/// which every Kafka application pays.
struct BatchQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Room for the messages of one call.
    slots: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl BatchQueue {
    fn new(consumer: &BaseConsumer) -> Result<BatchQueue> {
        // SAFETY: the client is alive; the queue reference taken here is released on drop,
        // before the client (the queue lives on the reading thread, which the client outlives).
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        ensure!(
            !queue.is_null(),
            "the librdkafka client has no consumer queue"
        );
        Ok(BatchQueue {
            queue,
            slots: vec![std::ptr::null_mut(); CONSUME_BATCH_MESSAGES],
        })
    }

    /// Waits up to `wait` for up to `CONSUME_BATCH_MESSAGES` messages (returning as soon as the
    /// batch is full, so `wait` only matters when the queue runs dry), hands each to `each` and frees it. Returns how many were read; the first
    /// error of `each` ends the batch (its messages are still freed).
    fn read(
        &mut self,
        wait: Duration,
        mut each: impl FnMut(&rdsys::rd_kafka_message_t) -> Result<()>,
    ) -> Result<usize> {
        // SAFETY: the queue is alive and `slots` has room for the count passed.
        let read = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue,
                wait.as_millis() as c_int,
                self.slots.as_mut_ptr(),
                self.slots.len(),
            )
        };
        ensure!(read >= 0, "librdkafka could not read its consumer queue");
        let messages = &self.slots[..read as usize];
        // SAFETY: librdkafka filled the first `read` slots with messages this caller owns.
        let handled = messages.iter().try_for_each(|m| each(unsafe { &**m }));
        for message in messages {
            // SAFETY: each message is freed once, and not used after.
            unsafe { rdsys::rd_kafka_message_destroy(*message) }
        }
        handled.map(|()| read as usize)
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: releases the reference `rd_kafka_queue_get_consumer` took, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(partition: i32, low: i64, high: i64) -> Watermarks {
        Watermarks {
            partition,
            low,
            high,
        }
    }

    #[test]
    fn a_partition_ends_at_its_high_watermark_or_its_reported_end() {
        // Partition 1 is empty, so never waited for; partition 4 is another consumer's.
        let mut ends = PartitionEnds::new(&[marks(0, 0, 10), marks(1, 5, 5), marks(2, 3, 7)]);
        assert_eq!(ends.missing(), [0, 2]);
        ends.reached(0, 9);
        ends.reached(4, 100);
        assert_eq!(ends.missing(), [0, 2]);
        ends.reached(0, 10);
        ends.reached(0, 11);
        assert_eq!(ends.missing(), [2]);
        assert!(!ends.all_reached());
        // A transaction marker can be the last offset: librdkafka then reports the end instead.
        ends.reached(2, i64::MAX);
        assert!(ends.all_reached());
    }
}
