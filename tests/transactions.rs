//! Transactions with librdkafka's transactional producer against the real broker (2 shards, so
//! markers cross shards): committed and aborted transactions, read_committed vs
//! read_uncommitted, the last stable offset holding readers back, zombie fencing,
//! consume-transform-produce with offsets in the transaction, and kill -9 with a transaction
//! open.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Broker;
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);
const CORES: usize = 2;
const SETTINGS: &[&str] = &["group.initial.rebalance.delay.ms=0"];

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

fn transactional(broker: &Broker, id: &str, timeout_ms: u32) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "1")
        .create()
        .unwrap();
    producer
        .init_transactions(TIMEOUT)
        .unwrap_or_else(|e| panic!("init_transactions: {e}\n{}", broker.log()));
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    producer
        .send(
            BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .unwrap();
}

fn plain_producer(broker: &Broker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap()
}

fn reader(broker: &Broker, topic: &str, partitions: i32, isolation: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Polls until `done` says the values read so far are enough, or `wait` passes.
fn read_until(
    consumer: &BaseConsumer,
    wait: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut values = Vec::new();
    let deadline = Instant::now() + wait;
    while !done(&values) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    values
}

fn set(values: &[String]) -> BTreeSet<String> {
    values.iter().cloned().collect()
}

fn named(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn read_committed_sees_exactly_the_committed_transactions() {
    let broker = Broker::start("txn-basic", CORES, SETTINGS);
    create_topic(&broker, "tx", 3);
    let producer = transactional(&broker, "basic", 60_000);
    for (prefix, commit) in [("c0", true), ("a", false), ("c1", true)] {
        producer.begin_transaction().unwrap();
        for i in 0..30 {
            send(&producer, "tx", i % 3, &format!("{prefix}-{i}"));
        }
        if commit {
            producer.commit_transaction(TIMEOUT).unwrap();
        } else {
            producer.flush(TIMEOUT).unwrap();
            producer.abort_transaction(TIMEOUT).unwrap();
        }
    }
    let committed: BTreeSet<String> = named("c0", 30).union(&named("c1", 30)).cloned().collect();
    let everything: BTreeSet<String> = committed.union(&named("a", 30)).cloned().collect();

    let rc = reader(&broker, "tx", 3, "read_committed");
    let got = read_until(&rc, TIMEOUT, |v| v.len() >= 60);
    let extra = read_until(&rc, Duration::from_millis(500), |_| false);
    assert_eq!(set(&got), committed, "read_committed: {}", broker.log());
    assert!(
        extra.is_empty() && got.len() == 60,
        "no aborted or duplicate records"
    );
    let ru = reader(&broker, "tx", 3, "read_uncommitted");
    let all = read_until(&ru, TIMEOUT, |v| v.len() >= 90);
    assert_eq!(
        set(&all),
        everything,
        "read_uncommitted sees every data record"
    );

    // An open transaction holds read_committed back at its first offset, even for records
    // written after it outside any transaction.
    producer.begin_transaction().unwrap();
    for i in 0..3 {
        send(&producer, "tx", i, &format!("open-{i}"));
    }
    producer.flush(TIMEOUT).unwrap();
    let plain = plain_producer(&broker);
    send(&plain, "tx", 0, "plain-after-open");
    plain.flush(TIMEOUT).unwrap();
    let held = read_until(&rc, Duration::from_secs(2), |_| false);
    assert!(held.is_empty(), "read_committed stops at the LSO: {held:?}");
    let seen = read_until(&ru, TIMEOUT, |v| v.len() >= 4);
    assert_eq!(seen.len(), 4, "read_uncommitted reads past it");
    producer.commit_transaction(TIMEOUT).unwrap();
    let released = read_until(&rc, TIMEOUT, |v| v.len() >= 4);
    let mut expected = named("open", 3);
    expected.insert("plain-after-open".to_string());
    assert_eq!(set(&released), expected);
}

#[test]
fn a_new_producer_fences_the_zombie_and_its_records_never_show() {
    let broker = Broker::start("txn-zombie", CORES, SETTINGS);
    create_topic(&broker, "z", 2);
    let zombie = transactional(&broker, "fenced-id", 60_000);
    zombie.begin_transaction().unwrap();
    send(&zombie, "z", 0, "zombie-0");
    send(&zombie, "z", 1, "zombie-1");
    zombie.flush(TIMEOUT).unwrap();

    let successor = transactional(&broker, "fenced-id", 60_000);
    successor.begin_transaction().unwrap();
    send(&successor, "z", 0, "successor-0");
    successor.commit_transaction(TIMEOUT).unwrap();

    // The zombie can no longer write or commit.
    send(&zombie, "z", 1, "zombie-late");
    let committed = zombie.commit_transaction(Duration::from_secs(10));
    assert!(committed.is_err(), "the zombie's commit must fail");

    let rc = reader(&broker, "z", 2, "read_committed");
    let got = read_until(&rc, TIMEOUT, |v| !v.is_empty());
    let more = read_until(&rc, Duration::from_secs(1), |_| false);
    assert_eq!(got, vec!["successor-0".to_string()], "{}", broker.log());
    assert!(more.is_empty(), "zombie records visible: {more:?}");
}

fn group_consumer(broker: &Broker, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&["in"]).unwrap();
    consumer
}

/// Reads up to `n` records from the group consumer, produces their transformation in one
/// transaction with the consumed offsets, and commits or aborts it. Returns how many it read.
fn transform(consumer: &BaseConsumer, producer: &BaseProducer, n: usize, commit: bool) -> usize {
    let mut read = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while read.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            read.push((m.partition(), m.offset(), value));
        }
    }
    producer.begin_transaction().unwrap();
    let mut next = TopicPartitionList::new();
    for (partition, offset, value) in &read {
        send(producer, "out", *partition, &format!("out-{value}"));
        next.add_partition_offset("in", *partition, Offset::Offset(offset + 1))
            .unwrap();
    }
    let metadata = consumer.group_metadata().unwrap();
    producer
        .send_offsets_to_transaction(&next, &metadata, TIMEOUT)
        .unwrap();
    if commit {
        producer.commit_transaction(TIMEOUT).unwrap();
    } else {
        producer.flush(TIMEOUT).unwrap();
        producer.abort_transaction(TIMEOUT).unwrap();
    }
    read.len()
}

#[test]
fn consume_transform_produce_is_exactly_once() {
    let broker = Broker::start("txn-ctp", CORES, SETTINGS);
    create_topic(&broker, "in", 3);
    create_topic(&broker, "out", 3);
    let plain = plain_producer(&broker);
    for i in 0..30 {
        send(&plain, "in", i % 3, &format!("v{i}"));
    }
    plain.flush(TIMEOUT).unwrap();

    let producer = transactional(&broker, "ctp", 60_000);
    let consumer = group_consumer(&broker, "ctp-group");
    assert_eq!(transform(&consumer, &producer, 10, true), 10);
    // An aborted round: its output vanishes and its offsets are not committed.
    assert!(transform(&consumer, &producer, 10, false) > 0);
    drop(consumer);
    // A new member resumes from the committed offsets and finishes the job.
    let consumer = group_consumer(&broker, "ctp-group");
    let mut total = 0;
    let deadline = Instant::now() + TIMEOUT;
    while total < 20 && Instant::now() < deadline {
        total += transform(&consumer, &producer, 20 - total, true);
    }
    assert_eq!(total, 20, "the aborted records are read again");

    let rc = reader(&broker, "out", 3, "read_committed");
    let out = read_until(&rc, TIMEOUT, |v| v.len() >= 30);
    let extra = read_until(&rc, Duration::from_millis(500), |_| false);
    let expected: BTreeSet<String> = (0..30).map(|i| format!("out-v{i}")).collect();
    assert_eq!(set(&out), expected);
    assert!(
        out.len() == 30 && extra.is_empty(),
        "each output exactly once"
    );
    let mut positions = TopicPartitionList::new();
    for p in 0..3 {
        positions.add_partition("in", p);
    }
    let committed = consumer.committed_offsets(positions, TIMEOUT).unwrap();
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(10),
            "partition {}",
            e.partition()
        );
    }
    consumer.commit_consumer_state(CommitMode::Sync).ok();
}

#[test]
fn kill_9_with_a_transaction_open_then_the_timeout_aborts_it() {
    let mut broker = Broker::start("txn-kill9", CORES, SETTINGS);
    create_topic(&broker, "k", 2);
    let stuck = transactional(&broker, "stuck", 4_000);
    stuck.begin_transaction().unwrap();
    send(&stuck, "k", 0, "lost-0");
    send(&stuck, "k", 1, "lost-1");
    stuck.flush(TIMEOUT).unwrap();
    broker.kill9();
    drop(stuck);
    broker.restart();

    // Another transactional producer commits after the stuck one: read_committed sees it only
    // once the broker has aborted the stuck transaction (its timeout is 4 s).
    let later = transactional(&broker, "later", 60_000);
    later.begin_transaction().unwrap();
    send(&later, "k", 0, "after-0");
    send(&later, "k", 1, "after-1");
    later.commit_transaction(TIMEOUT).unwrap();
    let rc = reader(&broker, "k", 2, "read_committed");
    let got = read_until(&rc, TIMEOUT, |v| v.len() >= 2);
    let extra = read_until(&rc, Duration::from_millis(500), |_| false);
    assert_eq!(set(&got), named("after", 2), "{}", broker.log());
    assert!(extra.is_empty());
    assert!(broker.log().contains("timed out"), "aborted by the timeout");

    // The stuck id works again.
    let revived = transactional(&broker, "stuck", 60_000);
    revived.begin_transaction().unwrap();
    send(&revived, "k", 1, "revived");
    revived.commit_transaction(TIMEOUT).unwrap();
    let got = read_until(&rc, TIMEOUT, |v| !v.is_empty());
    assert_eq!(got, vec!["revived".to_string()]);
}
