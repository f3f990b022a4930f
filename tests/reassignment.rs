//! Partition reassignments on a cluster of three brokers, driven by `sluice topic reassign`
//! (AlterPartitionReassignments and ListPartitionReassignments) while an idempotent acks=all
//! librdkafka producer writes: a partition on one broker moves to the other two (its data copied
//! by replica fetches, its leadership handed over when the move completes), the broker it left
//! deletes its copy, nothing acknowledged is lost or stored twice; a move to a broker that is
//! down waits, is listed, and is cancelled; a broker that was down while a move took a partition
//! away deletes its stray copy when it returns; a move naming a broker that does not exist is
//! refused with Kafka's INVALID_REPLICA_ASSIGNMENT.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{
    create_topic_with, index_of, metadata_of, partition_dirs, wait_metadata, Cluster,
    QUORUM_WAIT_MAX, REPLICA_LAG,
};
use common::consumer::read_partitions;
use common::deliveries::{producer, send_waiting, Deliveries, SAFE_PRODUCER};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const TOPIC: &str = "moved";
const PARTITIONS: i32 = 3;
/// Records sent in each of the test's three phases.
const PHASE_RECORDS: usize = 150;

/// `sluice topic reassign` against `bootstrap` with `args`.
fn reassign(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topic", "reassign", TOPIC, "--bootstrap", bootstrap])
        .args(args)
        .output()
        .unwrap()
}

fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sluice failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sends `phase`'s records to every partition, 5 ms apart, so that they span the moves.
fn send_phase(sender: &ThreadedProducer<Deliveries>, phase: usize) {
    for i in phase * PHASE_RECORDS..(phase + 1) * PHASE_RECORDS {
        let value = format!("r{i}");
        send_waiting(
            sender,
            BaseRecord::<(), str>::to(TOPIC)
                .partition(i as i32 % PARTITIONS)
                .payload(&value),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The brokers `assignment` places partitions on, as `sluice topic reassign` takes them.
fn assignment(replicas: &[Vec<i32>]) -> String {
    replicas
        .iter()
        .map(|r| r.iter().map(i32::to_string).collect::<Vec<_>>().join(":"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn partitions_move_between_brokers_while_a_producer_writes() {
    let mut cluster = Cluster::formed_with(0, &[REPLICA_LAG, "auto.leader.rebalance.enable=false"]);
    let bootstrap = cluster.brokers[0].bootstrap();
    create_topic_with(&cluster.brokers[0], TOPIC, PARTITIONS, 1, &[]);
    let placed = wait_metadata(
        &cluster.brokers[0],
        TOPIC,
        "every partition led",
        |_, seen| seen.len() == PARTITIONS as usize && seen.iter().all(|p| p.leader > 0),
    );
    let (sender, deliveries) = producer(&cluster.brokers[0], &SAFE_PRODUCER);
    send_phase(&sender, 0);

    // Partition 0 leaves its broker for the other two; the others stay. The move completes
    // while the producer writes, once both new replicas have caught up.
    let from = placed[0].leader;
    let others: Vec<i32> = (1..=3).filter(|&b| b != from).collect();
    let mut target: Vec<Vec<i32>> = placed.iter().map(|p| p.replicas.clone()).collect();
    target[0] = others.clone();
    let moving = std::thread::spawn({
        let bootstrap = bootstrap.clone();
        let target = assignment(&target);
        move || reassign(&bootstrap, &["--replica-assignment", &target, "--wait"])
    });
    send_phase(&sender, 1);
    let out = succeeded(&moving.join().unwrap());
    assert!(out.contains("no move of moved under way"), "{out}");
    let moved = wait_metadata(
        &cluster.brokers[0],
        TOPIC,
        "partition 0 on its new replicas",
        |_, seen| {
            let p = &seen[0];
            p.replicas == others && p.isr == others && p.leader == others[0]
        },
    );
    assert!(
        moved[0].leader_epoch > placed[0].leader_epoch,
        "a new leader term"
    );
    let left = &cluster.brokers[index_of(from)];
    let kept = placed.iter().filter(|p| p.leader == from).count() - 1;
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while partition_dirs(left, TOPIC) != kept {
        assert!(
            Instant::now() < deadline,
            "broker {from} keeps partition 0's copy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A move to a broker that is down waits (listed), and is cancelled.
    let down = others[1];
    let stays = moved
        .iter()
        .position(|p| !p.replicas.contains(&down))
        .expect("a partition without a replica on the broker to stop");
    assert!(cluster.brokers[index_of(down)].terminate());
    // Partitions before it keep their replicas: the assignment lists partitions from 0.
    let mut waiting: Vec<Vec<i32>> = moved[..=stays].iter().map(|p| p.replicas.clone()).collect();
    waiting[stays] = vec![moved[stays].leader, down];
    let listed = succeeded(&reassign(
        &bootstrap,
        &["--replica-assignment", &assignment(&waiting), "--json"],
    ));
    assert!(
        listed.contains(&format!("\"partition\":{stays},"))
            && listed.contains(&format!("\"adding\":[{down}]")),
        "the move to broker {down} is under way: {listed}"
    );
    send_phase(&sender, 2);
    let cancelled = succeeded(&reassign(&bootstrap, &["--cancel"]));
    assert!(
        cancelled.contains("no move of moved under way"),
        "{cancelled}"
    );
    let (_, now) = metadata_of(&cluster.brokers[0], TOPIC).unwrap();
    assert_eq!(
        now[stays].replicas, moved[stays].replicas,
        "the cancel reverts the move"
    );
    // Partition 0 moves off the stopped broker, back to the one it first left: the stopped
    // broker finds its copy a stray when it returns, and deletes it.
    let back = assignment(&[vec![others[0], from]]);
    succeeded(&reassign(
        &bootstrap,
        &["--replica-assignment", &back, "--wait"],
    ));
    let stray = cluster.brokers[index_of(down)]
        .data_dir
        .join(format!("{TOPIC}-0"));
    assert!(stray.exists(), "broker {down} keeps its copy while down");
    cluster.brokers[index_of(down)].restart();
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while stray.exists() {
        assert!(
            Instant::now() < deadline,
            "broker {down} keeps its stray copy of partition 0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A broker that does not exist is refused, as Kafka refuses it.
    let refused = reassign(&bootstrap, &["--replica-assignment", "9"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("INVALID_REPLICA_ASSIGNMENT") && said.contains("broker 9"),
        "{said}"
    );

    sender.flush(Duration::from_secs(120)).unwrap();
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
    assert_eq!(acked.len(), 3 * PHASE_RECORDS);
    let mut stored: Vec<String> = read_partitions(&cluster.brokers[0], TOPIC, PARTITIONS)
        .into_values()
        .flatten()
        .map(|(_, _, value)| value)
        .collect();
    stored.sort();
    assert_eq!(stored, acked, "every acknowledged record stored once");
    cluster.stop_all();
}
