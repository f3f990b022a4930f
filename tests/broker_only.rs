//! Nodes of one role only. A broker-only node (`process.roles=broker`, not a voter): three
//! voters form the metadata quorum and a fourth broker observes it. The fourth registers, takes
//! partitions, answers Metadata and takes topic creations (forwarded to the quorum's leader),
//! follows the quorum to a new leader after the old one is killed, and rejoins after a restart;
//! librdkafka, bootstrapped from the fourth broker alone, loses nothing it was acknowledged.
//! Controller-only nodes (`process.roles=controller`): three dedicated controllers and two
//! brokers, Kafka's production layout.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    create_topic_with, index_of, wait_metadata, Cluster, PartitionSeen, QUORUM_WAIT_MAX,
    REPLICA_LAG,
};
use common::consumer::read_partitions;
use common::deliveries::{producer, send_waiting, SAFE_PRODUCER};
use rdkafka::producer::{BaseRecord, Producer};

/// The broker-only node's index in `Cluster::brokers` (node id 4).
const OBSERVER: usize = 3;
const PARTITIONS: i32 = 4;
const RECORDS: usize = 400;

fn every_partition_led_in_sync(seen: &[PartitionSeen]) -> bool {
    seen.len() == PARTITIONS as usize
        && seen
            .iter()
            .all(|p| p.leader > 0 && p.isr.len() == p.replicas.len())
}

#[test]
fn a_broker_only_node_follows_the_quorum_and_serves_its_partitions() {
    let mut cluster = Cluster::formed_with_observers(
        OBSERVER,
        1,
        &[REPLICA_LAG, "auto.leader.rebalance.enable=false"],
    );
    let observer = &cluster.brokers[OBSERVER];
    let log = observer.log();
    assert!(log.contains("observing the metadata quorum"), "log:\n{log}");
    assert!(!log.contains("metadata quorum member"), "log:\n{log}");

    // Created through the observer: its controller forwards the records to the quorum's leader.
    create_topic_with(observer, "spread", PARTITIONS, 2, &[]);
    let seen = wait_metadata(
        observer,
        "spread",
        "every partition led, in sync",
        |_, seen| every_partition_led_in_sync(seen),
    );
    assert!(
        seen.iter().any(|p| p.replicas.contains(&4)),
        "the broker-only node holds replicas: {seen:?}"
    );

    let (sender, deliveries) = producer(observer, &SAFE_PRODUCER);
    let send = |from: usize, to: usize| {
        for i in from..to {
            let value = format!("r{i}");
            send_waiting(
                &sender,
                BaseRecord::<(), str>::to("spread")
                    .partition(i as i32 % PARTITIONS)
                    .payload(&value),
            );
        }
    };
    send(0, RECORDS / 2);
    sender.flush(Duration::from_secs(60)).unwrap();

    // The quorum's leader dies: the observer follows the new one, and changes still commit
    // through it.
    let leader = cluster.leader(&[0, 1, 2]);
    cluster.brokers[index_of(leader as i32)].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != index_of(leader as i32)).collect();
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while cluster.leader(&survivors) == leader {
        assert!(Instant::now() < deadline, "no new quorum leader");
        std::thread::sleep(Duration::from_millis(50));
    }
    create_topic_with(&cluster.brokers[OBSERVER], "after-failover", 1, 1, &[]);
    cluster.brokers[index_of(leader as i32)].restart();

    // The observer restarts: it catches up from the voters, registers again and rejoins.
    assert!(cluster.brokers[OBSERVER].terminate(), "a clean stop");
    cluster.brokers[OBSERVER].restart();
    cluster.wait_registered(&[OBSERVER]);
    wait_metadata(
        &cluster.brokers[OBSERVER],
        "spread",
        "every partition led, in sync again",
        |brokers, seen| brokers == [1, 2, 3, 4] && every_partition_led_in_sync(seen),
    );
    send(RECORDS / 2, RECORDS);
    sender.flush(Duration::from_secs(60)).unwrap();

    let failed = deliveries.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    let mut acked: Vec<String> = deliveries
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.2.clone())
        .collect();
    acked.sort();
    assert_eq!(acked.len(), RECORDS);
    let mut stored: Vec<String> = read_partitions(&cluster.brokers[OBSERVER], "spread", PARTITIONS)
        .into_values()
        .flatten()
        .map(|(_, _, value)| value)
        .collect();
    stored.sort();
    assert_eq!(stored, acked, "every acknowledged record stored once");
    // The observer first: with the voters gone it would wait out its controlled shutdown.
    assert!(cluster.brokers[OBSERVER].terminate(), "a clean stop");
    cluster.stop_all();
}

/// Kafka's dedicated-controller layout: three controller-only voters and two broker-only nodes.
/// The controllers never register (clients see two brokers), the brokers take every partition,
/// and killing the quorum's leader leaves the brokers serving and taking new topics.
#[test]
fn dedicated_controllers_serve_brokers_that_hold_every_partition() {
    let mut cluster = Cluster::formed_dedicated(2, &[REPLICA_LAG]);
    let first = 3;
    for controller in &cluster.brokers[..3] {
        let log = controller.log();
        assert!(!log.contains("registered with cluster"), "log:\n{log}");
    }
    create_topic_with(&cluster.brokers[first], "two-brokers", 2, 2, &[]);
    let seen = wait_metadata(
        &cluster.brokers[first],
        "two-brokers",
        "both partitions on both brokers, in sync",
        |brokers, seen| {
            brokers == [4, 5]
                && seen.len() == 2
                && seen.iter().all(|p| p.leader > 3 && p.isr == [4, 5])
        },
    );
    assert!(seen.iter().all(|p| p.replicas.iter().all(|&r| r > 3)));

    let (sender, deliveries) = producer(&cluster.brokers[first], &SAFE_PRODUCER);
    for i in 0..100 {
        let value = format!("d{i}");
        send_waiting(
            &sender,
            BaseRecord::<(), str>::to("two-brokers")
                .partition(i % 2)
                .payload(&value),
        );
    }
    sender.flush(Duration::from_secs(60)).unwrap();
    let leader = cluster.leader(&[0, 1, 2]);
    cluster.brokers[index_of(leader as i32)].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != index_of(leader as i32)).collect();
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while cluster.leader(&survivors) == leader {
        assert!(Instant::now() < deadline, "no new quorum leader");
        std::thread::sleep(Duration::from_millis(50));
    }
    create_topic_with(&cluster.brokers[first + 1], "after-failover", 1, 2, &[]);
    let failed = deliveries.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed deliveries: {failed:?}");
    let stored = read_partitions(&cluster.brokers[first + 1], "two-brokers", 2)
        .into_values()
        .flatten()
        .count();
    assert_eq!(stored, 100, "every acknowledged record stored once");
    // The brokers first: with the controllers gone they would wait out their controlled
    // shutdowns.
    for broker in &mut cluster.brokers[first..] {
        assert!(broker.terminate(), "a clean stop");
    }
    cluster.brokers[index_of(leader as i32)].restart();
    cluster.stop_all();
}
