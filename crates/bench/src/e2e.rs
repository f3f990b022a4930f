//! `sluice bench e2e`: end-to-end latency. Consumers are assigned the topic's partitions at
//! their end offsets before anything is sent; then the producers send on the open-loop
//! schedule, each value carrying its intended send time, and the consumers measure from that
//! time to receipt. The run ends when every acknowledged record has arrived; records still
//! missing `E2E_DRAIN_TIMEOUT` after the producers finished count as errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::Offset;

use super::clients::{
    assign, consumer, prepare_topic, share, wait_for_coordinator, watermarks, Topic,
};
use super::limits::{CONSUMER_POLL, E2E_DRAIN_TIMEOUT};
use super::produce::{read_stamp, Producers, Values, STAMP_BYTES};
use super::progress::{self, Goal};
use super::recorder::Recorder;
use super::report::{Measured, Report};
use super::schedule::{Epoch, Schedule};
use super::Options;

pub fn run(opts: &Options) -> Result<Report> {
    ensure!(
        opts.size >= STAMP_BYTES,
        "e2e needs --size {STAMP_BYTES} or more: each value carries its intended send time"
    );
    let topic = prepare_topic(opts)?;
    let consumers = connect_consumers(opts, &topic)?;
    let epoch = Epoch::now();
    let delivered = Arc::new(Mutex::new(Recorder::new(epoch.instant())));
    let received = Mutex::new(Recorder::new(epoch.instant()));
    let producers = Producers::connect(opts, &topic, epoch, &delivered, Values::Stamped)?;
    let schedule = Schedule::new(opts.rate, opts.warmup, opts.limit);
    delivered.lock().unwrap().origin = schedule.measure_from;
    received.lock().unwrap().origin = schedule.measure_from;
    let flow = Flow::default();
    let goal = Goal::of(opts.limit, opts.warmup);
    progress::show(opts.progress, goal, &received, || {
        std::thread::scope(|scope| {
            let threads: Vec<_> = consumers
                .iter()
                .enumerate()
                .map(|(i, consumer)| {
                    let (received, flow) = (&received, &flow);
                    std::thread::Builder::new()
                        .name(format!("consumer-{i}"))
                        .spawn_scoped(scope, move || receive(consumer, epoch, received, flow))
                })
                .collect::<Result<_, _>>()?;
            let sent = producers.run(opts, &topic, &schedule);
            flow.finish(*sent.as_ref().unwrap_or(&0));
            let received = threads
                .into_iter()
                .try_for_each(|t| t.join().expect("a consumer thread panicked"));
            sent.and(received)
        })
    })?;
    let mut report = received.into_inner().unwrap();
    let missing = flow.missing();
    report.errors += delivered.lock().unwrap().errors + missing;
    if missing > 0 {
        eprintln!("{missing} acknowledged records never arrived");
    }
    Ok(Report::new(opts, Some(&topic), Measured::EndToEnd, &report))
}

/// `--consumers` clients, each assigned its share of the partitions at their current ends.
fn connect_consumers(opts: &Options, topic: &Topic) -> Result<Vec<BaseConsumer>> {
    let probe = consumer(opts)?;
    let marks = watermarks(&probe, topic)?;
    (0..opts.consumers)
        .map(|i| {
            let client = consumer(opts)?;
            let mine = share(topic.partitions, i, opts.consumers);
            assign(
                &client,
                topic,
                mine.map(|p| (p, Offset::Offset(marks[p as usize].high))),
            )
            .context("assigning the end-to-end consumers")?;
            wait_for_coordinator(&client, topic)?;
            Ok(client)
        })
        .collect()
}

/// Records acknowledged and arrived, shared by the producers' side and the consumers.
#[derive(Default)]
struct Flow {
    arrived: AtomicU64,
    /// Set when the producers are done: records acknowledged and when.
    finished: Mutex<Option<(u64, Instant)>>,
}

impl Flow {
    fn finish(&self, acked: u64) {
        *self.finished.lock().unwrap() = Some((acked, Instant::now()));
    }

    /// Whether consumers can stop: everything acknowledged arrived, or waited long enough.
    fn is_over(&self) -> bool {
        let Some((acked, at)) = *self.finished.lock().unwrap() else {
            return false;
        };
        self.arrived.load(Ordering::Relaxed) >= acked || at.elapsed() > E2E_DRAIN_TIMEOUT
    }

    fn missing(&self) -> u64 {
        let acked = self.finished.lock().unwrap().map_or(0, |(acked, _)| acked);
        acked.saturating_sub(self.arrived.load(Ordering::Relaxed))
    }
}

fn receive(
    consumer: &BaseConsumer,
    epoch: Epoch,
    recorder: &Mutex<Recorder>,
    flow: &Flow,
) -> Result<()> {
    while !flow.is_over() {
        match consumer.poll(CONSUMER_POLL) {
            Some(Ok(message)) => {
                let now = Instant::now();
                let value = message.payload().unwrap_or_default();
                let mut recorder = recorder.lock().unwrap();
                match read_stamp(value) {
                    Some(stamp) => {
                        let bytes = value.len() + message.key().map_or(0, <[u8]>::len);
                        recorder.completed(epoch.decode(stamp), now, bytes);
                    }
                    None => recorder.error(),
                }
                flow.arrived.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(err)) => bail!("consuming: {err}"),
            None => {}
        }
    }
    Ok(())
}
