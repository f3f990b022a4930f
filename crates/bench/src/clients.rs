//! librdkafka for the workloads: client configurations built from the options, the topic a run
//! uses (an existing one, or one created through the admin API and waited on until every
//! partition has a leader), and the partitions' watermarks.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::limits::{ADMIN_TIMEOUT, PRODUCER_QUEUE_MAX_MESSAGES, TOPIC_READY_POLL};
use super::{Keys, Options};

/// The topic a run works on.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub partitions: i32,
}

/// A partition's log start (low) and end (high) offsets.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

fn base_config(opts: &Options) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &opts.bootstrap);
    config
}

/// Applies `--set` last, so it overrides what the generator chose.
fn with_settings(mut config: ClientConfig, opts: &Options) -> ClientConfig {
    for (key, value) in &opts.client_settings {
        config.set(key, value);
    }
    config
}

pub fn producer_config(opts: &Options) -> ClientConfig {
    let mut config = base_config(opts);
    config
        .set("acks", &opts.acks)
        .set("linger.ms", opts.linger_ms.to_string())
        .set("batch.size", opts.batch_size.to_string())
        .set(
            "queue.buffering.max.messages",
            PRODUCER_QUEUE_MAX_MESSAGES.to_string(),
        );
    if opts.keys != Keys::None {
        // Keys land on the partitions a Java producer would choose.
        config.set("partitioner", "murmur2_random");
    }
    with_settings(config, opts)
}

/// A consumer that is assigned partitions (it never joins its group: librdkafka only insists
/// on a group id), commits nothing and never asks the broker to create a topic.
pub fn consumer_config(opts: &Options) -> ClientConfig {
    let mut config = base_config(opts);
    config
        .set("group.id", format!("sluice-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false");
    with_settings(config, opts)
}

pub fn consumer(opts: &Options) -> Result<BaseConsumer> {
    consumer_config(opts)
        .create()
        .context("creating a librdkafka consumer")
}

/// `--topic` when it exists; otherwise that name (or a fresh one) created with `--partitions`.
pub fn prepare_topic(opts: &Options) -> Result<Topic> {
    let probe = consumer(opts)?;
    if let Some(name) = &opts.topic {
        if let Some(partitions) = partition_count(&probe, name)? {
            return Ok(Topic {
                name: name.clone(),
                partitions,
            });
        }
    }
    let name = opts.topic.clone().unwrap_or_else(fresh_topic_name);
    create_topic(opts, &name)?;
    wait_until_led(&probe, &name, opts.partitions)?;
    Ok(Topic {
        name,
        partitions: opts.partitions,
    })
}

fn fresh_topic_name() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("sluice-bench-{}-{millis}", std::process::id())
}

/// The topic's partition count, or `None` when the broker does not know it.
fn partition_count(probe: &BaseConsumer, name: &str) -> Result<Option<i32>> {
    let metadata = probe
        .fetch_metadata(Some(name), ADMIN_TIMEOUT)
        .with_context(|| format!("metadata of {name}"))?;
    let Some(topic) = metadata.topics().first() else {
        return Ok(None);
    };
    match topic.error() {
        None => Ok(Some(topic.partitions().len() as i32)),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(err) => bail!("metadata of {name}: {err:?}"),
    }
}

fn create_topic(opts: &Options, name: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = with_settings(base_config(opts), opts)
        .create()
        .context("creating a librdkafka admin client")?;
    // Replication -1: the broker's default.
    let topic = NewTopic::new(name, opts.partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = block_on(admin.create_topics([&topic], &options))
        .with_context(|| format!("creating topic {name}"))?;
    for result in results {
        if let Err((topic, code)) = result {
            bail!("creating topic {topic}: {code}");
        }
    }
    Ok(())
}

/// Waits until the metadata shows `partitions` partitions, each with a leader.
fn wait_until_led(probe: &BaseConsumer, name: &str, partitions: i32) -> Result<()> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        let metadata = probe.fetch_metadata(Some(name), ADMIN_TIMEOUT)?;
        let led = metadata.topics().first().is_some_and(|t| {
            t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if led {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {name} has no leader for every partition after {ADMIN_TIMEOUT:?}");
        }
        std::thread::sleep(TOPIC_READY_POLL);
    }
}

/// Every partition's watermarks.
pub fn watermarks(consumer: &BaseConsumer, topic: &Topic) -> Result<Vec<Watermarks>> {
    (0..topic.partitions)
        .map(|partition| {
            let (low, high) = watermarks_of(consumer, &topic.name, partition)
                .with_context(|| format!("offsets of {}-{partition}", topic.name))?;
            Ok(Watermarks {
                partition,
                low,
                high,
            })
        })
        .collect()
}

/// One partition's watermarks, asked again while its leader is still settling: Kafka's metadata
/// can name a leader a moment before that broker serves the partition it was just given.
fn watermarks_of(consumer: &BaseConsumer, topic: &str, partition: i32) -> KafkaResult<(i64, i64)> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        match consumer.fetch_watermarks(topic, partition, ADMIN_TIMEOUT) {
            Err(err) if leader_settling(&err) && Instant::now() < deadline => {
                std::thread::sleep(TOPIC_READY_POLL)
            }
            answer => return answer,
        }
    }
}

fn leader_settling(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// Assigns `consumer` the given partitions of `topic`, each from its offset.
pub fn assign(
    consumer: &BaseConsumer,
    topic: &Topic,
    from: impl IntoIterator<Item = (i32, Offset)>,
) -> Result<()> {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in from {
        list.add_partition_offset(&topic.name, partition, offset)?;
    }
    consumer
        .assign(&list)
        .with_context(|| format!("assigning partitions of {}", topic.name))
}

/// Waits until the consumer's group coordinator answers (asking for committed offsets needs
/// it). librdkafka looks the coordinator up as soon as a consumer starts, even one that is only
/// assigned partitions, and Kafka creates its offsets topic (50 partitions) on the first lookup:
/// waiting here keeps that work out of the measurement.
pub fn wait_for_coordinator(consumer: &BaseConsumer, topic: &Topic) -> Result<()> {
    let mut list = TopicPartitionList::new();
    list.add_partition(&topic.name, 0);
    consumer
        .committed_offsets(list, ADMIN_TIMEOUT)
        .map(drop)
        .context("waiting for the group coordinator")
}

/// The partitions consumer `index` of `count` reads: every `count`-th from `index`.
pub fn share(partitions: i32, index: usize, count: usize) -> impl Iterator<Item = i32> {
    (0..partitions).filter(move |p| *p as usize % count == index)
}
