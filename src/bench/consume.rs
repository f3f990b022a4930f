//! `sluice bench consume`: catch-up throughput. `--consumers` clients, each on its own thread
//! and assigned every n-th partition (no group, so no rebalance in the measurement), read from
//! the beginning everything the topic holds when the run starts. An empty topic is first filled
//! with `--records` (or `--duration`) records at full speed; that part is not measured.
//! `--reader fetch` reads with plain Fetch requests instead of librdkafka (see `fetch`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::Offset;

use super::clients::{
    assign, consumer_config, prepare_topic, share, wait_for_coordinator, watermarks, Topic,
    Watermarks,
};
use super::fetch;
use super::limits::{CONSUMER_POLL, CONSUME_STALL_TIMEOUT};
use super::produce::send_measured;
use super::progress;
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
    progress::show(opts.progress, &recorder, || {
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
    let mut ends: HashMap<i32, i64> = mine
        .iter()
        .filter(|w| w.high > w.low)
        .map(|w| (w.partition, w.high))
        .collect();
    assign(
        consumer,
        topic,
        ends.keys().map(|p| (*p, Offset::Beginning)),
    )?;
    let mut last_record = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(CONSUMER_POLL) {
            Some(Ok(message)) => {
                last_record = Instant::now();
                let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                recorder
                    .lock()
                    .unwrap()
                    .arrived(last_record, 1, bytes as u64);
                if ends.get(&message.partition()) <= Some(&(message.offset() + 1)) {
                    ends.remove(&message.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => drop(ends.remove(&partition)),
            Some(Err(err)) => bail!("consuming {}: {err}", topic.name),
            None if last_record.elapsed() > CONSUME_STALL_TIMEOUT => bail!(
                "no records from {} partitions {:?} for {CONSUME_STALL_TIMEOUT:?}",
                topic.name,
                ends.keys().collect::<Vec<_>>()
            ),
            None => {}
        }
    }
    Ok(())
}
