//! The coordinators' failover across three `sluice serve` processes: `__consumer_offsets` and
//! `__transaction_state` have three replicas (Kafka's default replication factors), and a
//! coordinator serves a partition of them only while its broker leads it. Killed with kill -9,
//! a coordinator's broker hands its groups and transactions to the partition's new leader,
//! which replays them from its replica:
//! - a group's committed offsets survive, and a new member resumes exactly where they say
//!   (nothing read twice, nothing skipped), then commits through the new coordinator;
//! - a committed transaction stays committed, the one left open is aborted when a new producer
//!   with the same transactional id initializes (fencing the old one), and read_committed sees
//!   exactly the records of committed transactions;
//! - the killed coordinator, restarted, coordinates nothing before its metadata has caught up:
//!   replaying the quorum's log, it passes through images in which it still leads its old
//!   partitions, and a coordinator acting on one would write markers from a stale log.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{
    create_topic_with, index_of, wait_for_topic, Cluster, LOG_LINES, QUORUM_WAIT_MAX, REPLICA_LAG,
};
use common::consumer::{read_partitions, BoundedClose};
use common::deliveries::{producer, send_waiting};
use common::transactions::{transactional, write_transaction};
use common::{connect, try_call};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use sluice_broker::group::records::{partition_for_group, OFFSETS_TOPIC};
use sluice_broker::txn::state::TXN_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

#[test]
fn committed_offsets_survive_the_group_coordinators_kill() {
    let topic = "orders";
    let partitions = 3;
    let mut cluster = cluster_with(topic, partitions);
    let records = 300;
    produce(&cluster, topic, partitions, records);
    let bootstrap = cluster.bootstrap();

    // The first member reads part of the topic and commits where it stopped.
    let group = "failover-group";
    let first = member(&bootstrap, group, topic);
    let read_first = read_some(&first, records / 2);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("the commit is acknowledged");
    drop(first);

    // Kill the coordinator once the offsets partition is fully in sync (else no follower could
    // take over without losing what the leader alone holds, and none would be elected).
    let coordinator = find_coordinator(&cluster, 0, group, KEY_TYPE_GROUP);
    let survivor = index_of(if coordinator == 1 { 2 } else { 1 });
    let offsets_partition = partition_for_group(group, offsets_partitions(&cluster, survivor));
    wait_led_in_sync(
        &cluster,
        survivor,
        OFFSETS_TOPIC,
        offsets_partition,
        coordinator,
    );
    cluster.brokers[index_of(coordinator)].kill9();
    wait_new_leader(
        &cluster,
        survivor,
        OFFSETS_TOPIC,
        offsets_partition,
        coordinator,
    );
    let new_coordinator = find_coordinator(&cluster, survivor, group, KEY_TYPE_GROUP);
    assert_ne!(new_coordinator, coordinator, "the coordinator moved");

    // A new member resumes from the committed offsets: it reads exactly what the first did not.
    let second = member(&bootstrap, group, topic);
    let read_second = read_some(&second, records - read_first.len());
    let twice: BTreeSet<_> = read_first.intersection(&read_second).collect();
    assert!(
        twice.is_empty(),
        "{} records read twice, such as {:?}{}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        cluster.log_tails(LOG_LINES)
    );
    assert_eq!(
        read_first.len() + read_second.len(),
        records,
        "every record read once"
    );
    // The group goes on committing through its new coordinator.
    second
        .commit_consumer_state(CommitMode::Sync)
        .expect("the new coordinator takes commits");
    let committed = second
        .committed(Duration::from_secs(30))
        .expect("the new coordinator answers OffsetFetch");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum();
    assert_eq!(total, records as i64, "committed at the end: {committed:?}");
    drop(second);
    cluster.stop_all();
}

#[test]
fn transactions_survive_the_transaction_coordinators_kill() {
    let topic = "ledger";
    let partitions = 2;
    let mut cluster = cluster_with(topic, partitions);
    let bootstrap = cluster.bootstrap();
    let txn_id = "failover-ledger";
    let timeout = Duration::from_secs(60);

    // One transaction committed, a second left open with its records written.
    let old = transactional(&bootstrap, txn_id);
    old.init_transactions(timeout).unwrap();
    write_transaction(&old, topic, partitions, "first");
    old.commit_transaction(timeout).unwrap();
    write_transaction(&old, topic, partitions, "open");
    old.flush(timeout).unwrap();

    let coordinator = find_coordinator(&cluster, 0, txn_id, KEY_TYPE_TRANSACTION);
    let survivor = index_of(if coordinator == 1 { 2 } else { 1 });
    let state_partition = partition_for_group(txn_id, txn_partitions(&cluster, survivor));
    wait_led_in_sync(&cluster, survivor, TXN_TOPIC, state_partition, coordinator);
    cluster.brokers[index_of(coordinator)].kill9();
    wait_new_leader(&cluster, survivor, TXN_TOPIC, state_partition, coordinator);

    // A new producer with the same id: the new coordinator aborts the open transaction and
    // fences the old producer.
    let new = transactional(&bootstrap, txn_id);
    new.init_transactions(timeout).unwrap_or_else(|e| {
        panic!(
            "init on the new coordinator: {e}{}",
            cluster.log_tails(LOG_LINES)
        )
    });
    assert!(
        old.commit_transaction(Duration::from_secs(30)).is_err(),
        "the old producer is fenced"
    );
    write_transaction(&new, topic, partitions, "second");
    new.commit_transaction(timeout).unwrap();
    cluster.brokers[index_of(coordinator)].restart();
    assert_no_coordinating_before_catch_up(&cluster, coordinator);

    // librdkafka reads committed by default.
    let read = read_partitions(&cluster.brokers[survivor], topic, partitions);
    for p in 0..partitions {
        let values: Vec<&str> = read.get(&p).map_or(Vec::new(), |r| {
            r.iter().map(|(_, _, v)| v.as_str()).collect()
        });
        assert_eq!(
            values,
            [format!("first {p}"), format!("second {p}")],
            "partition {p}{}",
            cluster.log_tails(LOG_LINES)
        );
    }
    drop((old, new));
    cluster.stop_all();
}

/// Waits (at most `QUORUM_WAIT_MAX`) until broker `node`'s log says, in its last run, that its
/// metadata caught up; fails if a coordinator took a partition in that run before.
fn assert_no_coordinating_before_catch_up(cluster: &Cluster, node: i32) {
    let log_file = &cluster.brokers[index_of(node)].log_file;
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    loop {
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        let last_run: Vec<&str> = log
            .lines()
            .rev()
            .take_while(|line| !line.contains(" starting: "))
            .collect();
        if let Some(caught_up) = last_run
            .iter()
            .position(|line| line.contains("metadata caught up"))
        {
            // `last_run` is newest first: what comes after the catch-up line came before it.
            let early: Vec<&&str> = last_run[caught_up..]
                .iter()
                .filter(|line| line.contains("coordinating at leader epoch"))
                .collect();
            assert!(
                early.is_empty(),
                "broker {node} coordinated before its metadata caught up: {early:#?}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker {node}'s metadata never caught up{}",
            cluster.log_tails(LOG_LINES)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three brokers, and `topic` with `partitions` partitions of three replicas known to all of
/// them.
fn cluster_with(topic: &str, partitions: i32) -> Cluster {
    let cluster = Cluster::formed_with(0, &[REPLICA_LAG]);
    create_topic_with(&cluster.brokers[0], topic, partitions, 3, &[]);
    wait_for_topic(&cluster, &[0, 1, 2], topic, partitions as usize);
    cluster
}

/// Writes `count` records, each acknowledged by every in-sync replica, round-robin over the
/// partitions.
fn produce(cluster: &Cluster, topic: &str, partitions: i32, count: usize) {
    let (sender, deliveries) = producer(
        &cluster.brokers[0],
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ],
    );
    for i in 0..count {
        let value = format!("record {i}");
        send_waiting(
            &sender,
            BaseRecord::<(), str>::to(topic)
                .partition(i as i32 % partitions)
                .payload(&value),
        );
    }
    sender.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(deliveries.acked.lock().unwrap().len(), count);
}

/// A group member that commits only when told to.
fn member(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> BoundedClose<rdkafka::consumer::DefaultConsumerContext> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let consumer = BoundedClose::new(consumer);
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Polls until `count` records were read (or the wait runs out); their values.
fn read_some(
    consumer: &BoundedClose<rdkafka::consumer::DefaultConsumerContext>,
    count: usize,
) -> BTreeSet<String> {
    let mut read = BTreeSet::new();
    let deadline = Instant::now() + 2 * QUORUM_WAIT_MAX;
    while read.len() < count && Instant::now() < deadline {
        // Errors while a broker is away are transient: librdkafka retries them itself.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(read.len(), count, "records read in the group");
    read
}

/// The node id FindCoordinator names for `key` through broker index `via`, asking again while
/// it answers an error (the internal topic being created or loaded).
fn find_coordinator(cluster: &Cluster, via: usize, key: &str, key_type: i8) -> i32 {
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(key.to_string()))
        .with_key_type(key_type);
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    loop {
        let answer: Result<FindCoordinatorResponse, String> = try_call(
            &mut connect(&cluster.brokers[via]),
            ApiKey::FindCoordinator,
            3,
            &request,
        );
        if let Ok(r) = &answer {
            if r.error_code == 0 {
                return r.node_id.0;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {key}: {answer:?}{}",
            cluster.log_tails(LOG_LINES)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn offsets_partitions(cluster: &Cluster, via: usize) -> i32 {
    internal_partitions(cluster, via, OFFSETS_TOPIC)
}

fn txn_partitions(cluster: &Cluster, via: usize) -> i32 {
    internal_partitions(cluster, via, TXN_TOPIC)
}

fn internal_partitions(cluster: &Cluster, via: usize, topic: &str) -> i32 {
    let seen = cluster.wait_metadata(via, topic, "the internal topic", |_, p| !p.is_empty());
    seen.len() as i32
}

/// Waits until partition `p` of `topic` is led by `leader` with three replicas, all in sync.
fn wait_led_in_sync(cluster: &Cluster, via: usize, topic: &str, p: i32, leader: i32) {
    cluster.wait_metadata(
        via,
        topic,
        "the coordinator's partition in sync",
        |_, seen| {
            seen.get(p as usize)
                .is_some_and(|s| s.leader == leader && s.replicas.len() == 3 && s.isr.len() == 3)
        },
    );
}

/// Waits until partition `p` of `topic` has a leader other than `old`.
fn wait_new_leader(cluster: &Cluster, via: usize, topic: &str, p: i32, old: i32) {
    cluster.wait_metadata(via, topic, "a new coordinator elected", |_, seen| {
        seen.get(p as usize)
            .is_some_and(|s| s.leader != old && s.leader != -1)
    });
}
