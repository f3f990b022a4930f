//! Replication across three `sluice serve` processes (Kafka's ISR protocol, replication factor
//! 3), held to Kafka's rules:
//! - a record acknowledged to an acks=all producer survives its leader's kill -9: a new leader
//!   (higher leader epoch) has it, at the same offset, and nothing is stored twice;
//! - followers copy the leader's batches verbatim, so once they have caught up every replica of a
//!   partition holds the same bytes, even after a killed leader came back and truncated what it
//!   alone had written;
//! - with fewer in-sync replicas than `min.insync.replicas`, an acks=all Produce is refused
//!   before anything is written (NOT_ENOUGH_REPLICAS) while acks=1 is still taken; it is
//!   accepted again once the missing replica has caught up and rejoined the ISR;
//! - a follower that was killed and missed writes catches up after its restart, rejoins the
//!   ISR and, elected when the leader stops (a controlled shutdown), serves every record;
//! - acks=all produces waiting for their followers give their request memory back
//!   (`queued.max.request.bytes`), so the followers' fetches are still read;
//! - a follower away while its leader deleted records starts over at the leader's log start,
//!   and one in sync follows it there;
//! - OffsetForLeaderEpoch, answered by the leader only, places an old epoch's end where the new
//!   leader's epoch began;
//! - a leader paused (SIGSTOP) past its session is replaced, and an acks=all Produce it reads
//!   once it runs again, still believing it leads, is never acknowledged: its followers now
//!   fetch from the new leader, so the zombie's high watermark cannot pass the record.
//!
//! `replica.lag.time.max.ms=4000` (Kafka's default is 30 s) lets a stuck follower leave the ISR
//! within seconds; the brokers' session timeout (6 s, see `Cluster::start_with`) fences a dead one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::cluster::{
    acknowledged_ends, create_topic_with, fully_in_sync, index_of, metadata_of, partition_log,
    wait_for_topic, wait_high_watermarks, Cluster, PartitionSeen, LOG_LINES, QUORUM_WAIT_MAX,
    REPLICA_LAG,
};
use common::consumer::{read_partitions, Consumed};
use common::deliveries::{producer, send_waiting, Deliveries, SAFE_PRODUCER};
use common::{connect, produce_one, try_call};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

#[test]
fn a_replicated_topic_keeps_every_acknowledged_record_through_a_leader_kill() {
    let mut cluster = Cluster::formed_with(0, &[REPLICA_LAG]);
    let (_, deliveries) = traffic_through_a_leader_kill(&mut cluster, "replicated");
    let read = read_back(&cluster, 0, "replicated", 3, &deliveries);
    check_read_back(&cluster, &deliveries, TRAFFIC_RECORDS, &read);
    cluster.stop_all();
}

#[test]
fn replicas_hold_the_same_bytes() {
    let mut cluster = Cluster::formed_with(0, &[REPLICA_LAG]);
    let (killed, _) = traffic_through_a_leader_kill(&mut cluster, "replicated");
    // A follower's fetches trail the leader's high watermark by a round trip; one that fell
    // out of the ISR meanwhile is not waited for by acks=all. Give every replica the time to
    // reach the leader's end before the brokers stop.
    // Either way: the comparison below says what differs.
    let _ = cluster.wait_same_log_sizes("replicated", 3);
    cluster.stop_all();
    for partition in 0..3 {
        let logs: Vec<(Vec<String>, Vec<u8>)> = cluster
            .brokers
            .iter()
            .map(|b| partition_log(b, "replicated", partition))
            .collect();
        for (i, (segments, bytes)) in logs.iter().enumerate().skip(1) {
            let (first_segments, first) = &logs[0];
            assert!(
                bytes == first,
                "partition {partition}: broker {} holds {} bytes in {segments:?}, broker 1 holds \
                 {} bytes in {first_segments:?}, first difference at byte {:?} (broker {killed} \
                 was killed while leading partition 0){}",
                i + 1,
                bytes.len(),
                first.len(),
                first_difference(first, bytes),
                cluster.log_tails(LOG_LINES)
            );
        }
        assert!(
            !logs[0].1.is_empty(),
            "partition {partition} holds records{}",
            cluster.log_tails(LOG_LINES)
        );
    }
}

#[test]
fn acks_all_below_min_insync_replicas_is_refused() {
    let topic = "guarded";
    let (mut cluster, before) = one_replicated_partition(topic, "3");
    let leader = before.leader;
    let follower = first_follower(&before);
    let at_leader = index_of(leader);

    // All three in sync: acks=all is taken.
    assert_eq!(
        produce_until(&cluster, at_leader, topic, -1, &[]),
        0,
        "acks=all with every replica in sync{}",
        cluster.log_tails(LOG_LINES)
    );

    // One follower dies. Once the leader has dropped it from the ISR (two left, three needed),
    // acks=all is refused before the append and acks=1 is still taken.
    cluster.brokers[index_of(follower)].kill9();
    cluster.wait_metadata(
        at_leader,
        topic,
        "the dead follower out of the ISR",
        |_, partitions| {
            partitions.first().is_some_and(|p| {
                p.leader == leader && p.isr.len() == 2 && !p.isr.contains(&follower)
            })
        },
    );
    // The leader may take the ISR change into its partition a moment after its Metadata shows
    // it; a record it accepted in that moment cannot reach three replicas and is answered
    // NOT_ENOUGH_REPLICAS_AFTER_APPEND or REQUEST_TIMED_OUT (Kafka's DelayedProduce), so those
    // are asked again; anything else is final.
    let refused = produce_until(
        &cluster,
        at_leader,
        topic,
        -1,
        &[NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT],
    );
    assert_eq!(
        refused,
        NOT_ENOUGH_REPLICAS,
        "acks=all with an ISR of 2 below min.insync.replicas=3{}",
        cluster.log_tails(LOG_LINES)
    );
    assert_eq!(
        produce_until(&cluster, at_leader, topic, 1, &[]),
        0,
        "acks=1 does not wait for the ISR{}",
        cluster.log_tails(LOG_LINES)
    );

    // It comes back, catches up and rejoins: acks=all is taken again (the leader may lag its
    // own Metadata by a moment here too, answering NOT_ENOUGH_REPLICAS meanwhile).
    cluster.brokers[index_of(follower)].restart();
    cluster.wait_metadata(
        at_leader,
        topic,
        "the restarted follower back in the ISR",
        |_, partitions| fully_in_sync(partitions, 1),
    );
    assert_eq!(
        produce_until(&cluster, at_leader, topic, -1, &[NOT_ENOUGH_REPLICAS]),
        0,
        "acks=all once the ISR is whole again{}",
        cluster.log_tails(LOG_LINES)
    );
    cluster.stop_all();
}

#[test]
fn produces_waiting_for_followers_leave_room_for_their_fetches() {
    // Each shard may hold one produce's worth of request bytes. Produces waiting for their
    // followers once held theirs, so the followers' fetches, which would answer them, could not
    // be read until the followers fell out of the ISR (`replica.lag.time.max.ms`, 30 s here).
    let budget = [
        "socket.request.max.bytes=262144",
        "queued.max.request.bytes=262144",
    ];
    let mut cluster = Cluster::formed_with(0, &budget);
    let topic = "crowded";
    let partitions = 3;
    replicated_topic(&cluster, topic, partitions, "2");
    let value = "v".repeat(4096);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (sender, deliveries) = producer(
                &cluster.brokers[0],
                &[
                    SAFE_PRODUCER.as_slice(),
                    &[("batch.size", "131072"), ("linger.ms", "20")],
                ]
                .concat(),
            );
            for i in 0..500 {
                send_waiting(
                    &sender,
                    BaseRecord::<(), str>::to(topic)
                        .partition(i % partitions)
                        .payload(&value),
                );
            }
            (sender, deliveries)
        })
        .collect();
    for (sender, deliveries) in &senders {
        flush(&cluster, sender);
        assert_eq!(deliveries.acked.lock().unwrap().len(), 500);
        assert!(deliveries.failed.lock().unwrap().is_empty());
    }
    for broker in &cluster.brokers {
        assert!(
            !broker.log().contains("shrinking the ISR"),
            "a follower fell behind{}",
            cluster.log_tails(LOG_LINES)
        );
    }
    cluster.stop_all();
}

#[test]
fn a_follower_that_restarts_catches_up() {
    let topic = "catching-up";
    let (mut cluster, before) = one_replicated_partition(topic, "2");
    let leader = before.leader;
    // Kafka elects the first replica in assignment order that is in the ISR: once the leader
    // stops, that is this follower (if it is back in the ISR by then).
    let follower = first_follower(&before);

    let (sender, deliveries) = producer(&cluster.brokers[index_of(leader)], &SAFE_PRODUCER);
    send_phase(&sender, topic, 1, 0..CATCH_UP_RECORDS);
    flush(&cluster, &sender);

    // The follower misses half the records: the leader goes on with an ISR of two.
    cluster.brokers[index_of(follower)].kill9();
    send_phase(&sender, topic, 1, CATCH_UP_RECORDS..2 * CATCH_UP_RECORDS);
    flush(&cluster, &sender);

    cluster.brokers[index_of(follower)].restart();
    let live = index_of(leader);
    cluster.wait_metadata(
        live,
        topic,
        "the restarted follower back in the ISR",
        |_, partitions| fully_in_sync(partitions, 1),
    );

    // A controlled shutdown of the leader hands the partition to an in-sync replica.
    let after = stop_leader(&mut cluster, topic, leader, before.leader_epoch, follower);
    assert_eq!(
        after[0].leader,
        follower,
        "the first in-sync replica in assignment order {:?} leads: {after:?}{}",
        before.replicas,
        cluster.log_tails(LOG_LINES)
    );

    let read = read_back(&cluster, index_of(follower), topic, 1, &deliveries);
    check_read_back(&cluster, &deliveries, 2 * CATCH_UP_RECORDS, &read);
    drop(sender);
    cluster.stop_all();
}

/// A follower that was away while its leader deleted the records it would fetch next
/// (DeleteRecords) starts over at the leader's log start, and one in sync follows the leader's
/// log start: once the ISR is whole, every replica starts where the leader does, and the one that
/// was away, elected, serves every acknowledged record from there on.
#[test]
fn followers_start_where_their_leader_does() {
    let mut cluster = Cluster::formed_with(0, &[REPLICA_LAG]);
    let topic = "trimmed";
    let before = replicated_topic(&cluster, topic, 1, "2");
    let leader = before[0].leader;
    let away = first_follower(&before[0]);
    let (sender, deliveries) = producer(&cluster.brokers[index_of(leader)], &SAFE_PRODUCER);
    send_phase(&sender, topic, 1, 0..CATCH_UP_RECORDS);
    flush(&cluster, &sender);

    cluster.brokers[index_of(away)].kill9();
    send_phase(&sender, topic, 1, CATCH_UP_RECORDS..2 * CATCH_UP_RECORDS);
    flush(&cluster, &sender);
    let start = (CATCH_UP_RECORDS + CATCH_UP_RECORDS / 2) as i64;
    delete_records_before(&cluster, index_of(leader), topic, start);
    send_phase(
        &sender,
        topic,
        1,
        2 * CATCH_UP_RECORDS..3 * CATCH_UP_RECORDS,
    );
    flush(&cluster, &sender);

    cluster.brokers[index_of(away)].restart();
    cluster.wait_metadata(
        index_of(leader),
        topic,
        "the restarted follower back in the ISR",
        |_, partitions| fully_in_sync(partitions, 1),
    );
    for broker in &cluster.brokers {
        let saved = broker.data_dir.join(format!("{topic}-0/log-start-offset"));
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        while std::fs::read_to_string(&saved).ok().as_deref() != Some(&start.to_string()) {
            assert!(
                Instant::now() < deadline,
                "{} never started at {start}{}",
                saved.display(),
                cluster.log_tails(LOG_LINES)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let stopped = cluster.brokers[index_of(leader)].terminate_within(QUORUM_WAIT_MAX);
    assert_eq!(stopped, Some(true), "{}", cluster.log_tails(LOG_LINES));
    cluster.wait_metadata(
        index_of(away),
        topic,
        "the returned follower leads",
        |_, p| p.first().is_some_and(|p| p.leader == away),
    );
    let read = read_back(&cluster, index_of(away), topic, 1, &deliveries);
    let read: Vec<(i64, String)> = read[&0].iter().map(|(o, _, v)| (*o, v.clone())).collect();
    let mut kept: Vec<(i64, String)> = deliveries
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, offset, _)| *offset >= start)
        .map(|(_, offset, value)| (*offset, value.clone()))
        .collect();
    kept.sort();
    assert_eq!(read, kept, "{}", cluster.log_tails(LOG_LINES));
    drop(sender);
    cluster.stop_all();
}

/// DeleteRecords through broker `via`: `topic`'s partition 0 starts at `offset`.
fn delete_records_before(cluster: &Cluster, via: usize, topic: &str, offset: i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])]);
    let answer: DeleteRecordsResponse = try_call(
        &mut common::connect(&cluster.brokers[via]),
        ApiKey::DeleteRecords,
        2,
        &request,
    )
    .unwrap();
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(
        (partition.error_code, partition.low_watermark),
        (0, offset),
        "DeleteRecords{}",
        cluster.log_tails(LOG_LINES)
    );
}

/// OffsetForLeaderEpoch across a leader change, as a consumer asks it to check its position
/// (KIP-320): only the leader answers; after a controlled shutdown hands the partition to a
/// follower at a newer epoch, the new leader places the old epoch's end where its own began,
/// its own epoch's end at its log end, and refuses a current epoch that is stale (fenced) or
/// newer than its own.
#[test]
fn offset_for_leader_epoch_places_epochs_across_a_leader_change() {
    let topic = "epochs";
    let (mut cluster, before) = one_replicated_partition(topic, "1");
    let (leader, old) = (before.leader, before.leader_epoch);
    let follower = first_follower(&before);
    // Acknowledged by all three replicas: every one holds them under the old epoch.
    for _ in 0..3 {
        let code = produce_until(&cluster, index_of(leader), topic, -1, &[]);
        assert_eq!(code, 0, "{}", cluster.log_tails(LOG_LINES));
    }
    assert_eq!(epoch_end(&cluster, leader, topic, -1, old), (0, old, 3));
    assert_eq!(
        epoch_end(&cluster, follower, topic, -1, old),
        (NOT_LEADER_OR_FOLLOWER, -1, -1)
    );

    let after = stop_leader(&mut cluster, topic, leader, old, follower);
    let (leader, new) = (after[0].leader, after[0].leader_epoch);
    // Two more records under the new epoch, once the new leader has taken the partition.
    for _ in 0..2 {
        let code = produce_until(
            &cluster,
            index_of(leader),
            topic,
            -1,
            &[NOT_LEADER_OR_FOLLOWER],
        );
        assert_eq!(code, 0, "{}", cluster.log_tails(LOG_LINES));
    }
    assert_eq!(epoch_end(&cluster, leader, topic, -1, old), (0, old, 3));
    assert_eq!(epoch_end(&cluster, leader, topic, new, new), (0, new, 5));
    assert_eq!(
        epoch_end(&cluster, leader, topic, new, new + 1),
        (0, -1, -1)
    );
    assert_eq!(
        epoch_end(&cluster, leader, topic, old, new),
        (FENCED_LEADER_EPOCH, -1, -1)
    );
    assert_eq!(
        epoch_end(&cluster, leader, topic, new + 1, new),
        (UNKNOWN_LEADER_EPOCH, -1, -1)
    );
    cluster.stop_all();
}

/// Broker `node`'s OffsetForLeaderEpoch answer (v4, as a consumer) for partition 0 of `topic`:
/// (error code, leader epoch, end offset).
fn epoch_end(
    cluster: &Cluster,
    node: i32,
    topic: &str,
    current: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let broker = &cluster.brokers[index_of(node)];
    let answer: Result<OffsetForLeaderEpochResponse, String> = try_call(
        &mut connect(broker),
        ApiKey::OffsetForLeaderEpoch,
        4,
        &request,
    );
    match answer {
        Ok(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        }
        Err(e) => panic!(
            "OffsetForLeaderEpoch to broker {node}: {e}{}",
            cluster.log_tails(LOG_LINES)
        ),
    }
}

/// Records written before a follower dies, and again while it is away.
const CATCH_UP_RECORDS: usize = 2000;

/// Records `traffic_through_a_leader_kill` sends, a third in each phase.
const TRAFFIC_RECORDS: usize = 900;

/// Creates `topic` (three partitions, replication factor 3, `min.insync.replicas=2`) and sends
/// it `TRAFFIC_RECORDS` unique values through an idempotent acks=all producer in three phases:
/// the broker leading partition 0 is killed (kill -9) after the first, once a new leader has
/// been elected the second is sent, and once the killed broker is back in every ISR the third.
/// Returns the killed broker's node id and the producer's delivery reports, every record
/// reported; fails if any delivery failed.
fn traffic_through_a_leader_kill(cluster: &mut Cluster, topic: &str) -> (i32, Deliveries) {
    let before = replicated_topic(cluster, topic, 3, "2");
    let killed = before[0].leader;
    let survivor = index_of(if killed == 1 { 2 } else { 1 });
    let (sender, deliveries) = producer(&cluster.brokers[survivor], &SAFE_PRODUCER);
    let third = TRAFFIC_RECORDS / 3;

    // Phase 1; the leader dies with the end of it still in flight, so some records may be
    // written on it and not yet acknowledged: the producer sends them again to the new leader.
    send_phase(&sender, topic, 3, 0..third);
    cluster.brokers[index_of(killed)].kill9();
    cluster.wait_metadata(
        survivor,
        topic,
        "a new leader for partition 0",
        |_, partitions| {
            partitions
                .first()
                .is_some_and(|p| new_leader(p, killed, before[0].leader_epoch))
        },
    );

    // Phase 2, with one replica of every partition gone (an ISR of two, enough for min 2).
    send_phase(&sender, topic, 3, third..2 * third);

    // The killed broker returns on its disk, drops whatever it alone had written, catches up and
    // rejoins every ISR.
    cluster.brokers[index_of(killed)].restart();
    cluster.wait_metadata(
        survivor,
        topic,
        "the restarted broker back in every ISR",
        |_, partitions| fully_in_sync(partitions, 3),
    );

    // Phase 3.
    send_phase(&sender, topic, 3, 2 * third..TRAFFIC_RECORDS);
    flush(cluster, &sender);
    assert_none_failed(cluster, &deliveries);
    (killed, deliveries)
}

/// Creates `topic` through broker 1 with `partitions` partitions, three replicas each and
/// `min.insync.replicas` = `min_insync`, and waits until every broker knows it and Metadata
/// shows each partition led with all three replicas in sync. What Metadata then says.
fn replicated_topic(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    min_insync: &str,
) -> Vec<PartitionSeen> {
    create_topic_with(
        &cluster.brokers[0],
        topic,
        partitions,
        3,
        &[("min.insync.replicas", min_insync)],
    );
    wait_for_topic(cluster, &[0, 1, 2], topic, partitions as usize);
    cluster.wait_metadata(
        0,
        topic,
        "every partition with three replicas, all in sync",
        |_, seen| fully_in_sync(seen, partitions as usize),
    )
}

/// Three brokers and a one-partition `topic` created as `replicated_topic` does: the cluster, and
/// the partition as Metadata then shows it.
fn one_replicated_partition(topic: &str, min_insync: &str) -> (Cluster, PartitionSeen) {
    let cluster = Cluster::formed_with(0, &[REPLICA_LAG]);
    let seen = replicated_topic(&cluster, topic, 1, min_insync);
    (cluster, seen[0].clone())
}

/// Whether `partition` is led by a broker other than `old`, under an epoch above `epoch`. The
/// error code is not looked at: Kafka's Metadata answers NONE while a replica is down (from
/// v1 on), but whether it does is not what these tests are about.
fn new_leader(partition: &PartitionSeen, old: i32, epoch: i32) -> bool {
    partition.leader > 0 && partition.leader != old && partition.leader_epoch > epoch
}

/// Stops broker `leader`, leading partition 0 of `topic` at `epoch`, with a controlled shutdown,
/// which hands the partition to an in-sync replica, and waits until broker `follower` names a new
/// leader: what its Metadata then says.
fn stop_leader(
    cluster: &mut Cluster,
    topic: &str,
    leader: i32,
    epoch: i32,
    follower: i32,
) -> Vec<PartitionSeen> {
    let stopped = cluster.brokers[index_of(leader)].terminate_within(QUORUM_WAIT_MAX);
    assert_eq!(
        stopped,
        Some(true),
        "the leader stops cleanly{}",
        cluster.log_tails(LOG_LINES)
    );
    cluster.wait_metadata(
        index_of(follower),
        topic,
        "a new leader once the old one stopped",
        |_, partitions| {
            partitions
                .first()
                .is_some_and(|p| new_leader(p, leader, epoch))
        },
    )
}

/// The first replica of `partition`, in assignment order, that does not lead it.
fn first_follower(partition: &PartitionSeen) -> i32 {
    *partition
        .replicas
        .iter()
        .find(|&&r| r != partition.leader)
        .unwrap_or_else(|| panic!("no follower: {partition:?}"))
}

/// Sends the values `record <i>` for `i` in `range`, round-robin over `partitions` partitions,
/// a little apart so that the traffic spans the time a test does something to a broker.
fn send_phase(
    sender: &ThreadedProducer<Deliveries>,
    topic: &str,
    partitions: usize,
    range: Range<usize>,
) {
    for i in range {
        let value = format!("record {i}");
        send_waiting(
            sender,
            BaseRecord::<(), str>::to(topic)
                .partition((i % partitions) as i32)
                .payload(&value),
        );
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until every record sent has a delivery report.
fn flush(cluster: &Cluster, sender: &ThreadedProducer<Deliveries>) {
    if let Err(e) = sender.flush(Duration::from_secs(150)) {
        panic!(
            "the producer still has records unreported: {e}{}",
            cluster.log_tails(LOG_LINES)
        );
    }
}

/// Fails the test, with every broker's log, if any delivery failed.
fn assert_none_failed(cluster: &Cluster, deliveries: &Deliveries) {
    let failed = deliveries.failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} deliveries failed, the first: {:?}{}",
        failed.len(),
        &failed[..failed.len().min(10)],
        cluster.log_tails(LOG_LINES)
    );
}

/// Every record of `partitions` partitions of `topic`, read through broker `via` (librdkafka
/// reads each partition from its leader); a failed read shows every broker's log. A consumer
/// stops at the high watermark, and a newly elected leader's may trail what was acknowledged
/// until its followers fetch again, so the read waits first for each leader's high watermark to
/// pass the last offset `deliveries` acknowledged there (or for `QUORUM_WAIT_MAX`: then what
/// is missing is left for `check_read_back` to show).
fn read_back(
    cluster: &Cluster,
    via: usize,
    topic: &str,
    partitions: i32,
    deliveries: &Deliveries,
) -> BTreeMap<i32, Vec<Consumed>> {
    let ends = acknowledged_ends(&deliveries.acked.lock().unwrap(), partitions);
    // Each partition's high watermark as the leader broker `via`'s Metadata names answers it.
    let high_watermarks = || match metadata_of(&cluster.brokers[via], topic) {
        Some((_, partitions)) => cluster.high_watermarks(topic, &partitions),
        None => Vec::new(),
    };
    if let Err(seen) = wait_high_watermarks(&ends, QUORUM_WAIT_MAX, high_watermarks) {
        eprintln!("high watermarks {seen:?} never reached the acknowledged ends {ends:?}");
    }
    catch_unwind(AssertUnwindSafe(|| {
        read_partitions(&cluster.brokers[via], topic, partitions)
    }))
    .unwrap_or_else(|_| {
        panic!(
            "reading {topic} back failed{}",
            cluster.log_tails(LOG_LINES)
        )
    })
}

/// Checks what was read back against the producer's delivery reports, `sent` records in all:
/// none failed, each acknowledged (partition, offset, value) is stored exactly there, no value is
/// stored twice, and nothing is stored that was not acknowledged (only a record whose delivery
/// failed could be, and none may fail).
fn check_read_back(
    cluster: &Cluster,
    deliveries: &Deliveries,
    sent: usize,
    read: &BTreeMap<i32, Vec<Consumed>>,
) {
    assert_none_failed(cluster, deliveries);
    let acked = deliveries.acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        sent,
        "every record sent has a report{}",
        cluster.log_tails(LOG_LINES)
    );

    let mut stored: BTreeMap<(i32, i64), &str> = BTreeMap::new();
    let mut twice = Vec::new();
    let mut values = BTreeSet::new();
    for (&partition, records) in read {
        for (offset, _, value) in records {
            stored.insert((partition, *offset), value);
            if !values.insert(value.as_str()) {
                twice.push((partition, *offset, value.clone()));
            }
        }
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|(p, o, v)| stored.get(&(*p, *o)) != Some(&v.as_str()))
        .map(|(p, o, v)| (p, o, v, stored.get(&(*p, *o))))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records are not stored where they were acknowledged (partition, \
         offset, value, what is stored there), the first: {:?}{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        cluster.log_tails(LOG_LINES)
    );
    assert!(
        twice.is_empty(),
        "values stored twice (partition, offset, value): {:?}{}",
        &twice[..twice.len().min(20)],
        cluster.log_tails(LOG_LINES)
    );
    let acked_values: BTreeSet<&str> = acked.iter().map(|(_, _, v)| v.as_str()).collect();
    let unacked: Vec<_> = stored
        .iter()
        .filter(|(_, v)| !acked_values.contains(*v))
        .collect();
    assert!(
        unacked.is_empty(),
        "stored but never acknowledged ((partition, offset), value): {:?}{}",
        &unacked[..unacked.len().min(20)],
        cluster.log_tails(LOG_LINES)
    );
}

/// Sends one raw Produce (v9, one record, the given `acks`) for partition 0 of `topic` to
/// broker `at` and returns its error code, asking again for `QUORUM_WAIT_MAX` while the answer
/// is one of `transient`; a lost connection fails the test.
fn produce_until(cluster: &Cluster, at: usize, topic: &str, acks: i16, transient: &[i16]) -> i16 {
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    loop {
        let code =
            produce_one(&mut connect(&cluster.brokers[at]), topic, acks).unwrap_or_else(|e| {
                panic!(
                    "Produce (acks={acks}) to broker {}: {e}{}",
                    at + 1,
                    cluster.log_tails(LOG_LINES)
                )
            });
        if !transient.contains(&code) || Instant::now() >= deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_paused_leader_never_acknowledges_an_acks_all_write_after_its_replacement() {
    let topic = "zombie";
    let (mut cluster, before) = one_replicated_partition(topic, "2");
    let leader = before.leader;
    let survivor = index_of(first_follower(&before));
    let mut stream = connect(&cluster.brokers[index_of(leader)]);
    assert_eq!(
        produce_one(&mut stream, topic, -1),
        Ok(0),
        "the leader takes a write"
    );
    let pid = Pid::from_raw(cluster.brokers[index_of(leader)].pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    // Sent while it is paused: the kernel queues the request, and the leader reads it only
    // after SIGCONT, at the epoch it had.
    let zombie_answer = std::thread::spawn(move || produce_one(&mut stream, topic, -1));
    let after = cluster.wait_metadata(survivor, topic, "a new leader", |_, seen| {
        new_leader(&seen[0], leader, before.leader_epoch)
    });
    let new_leader_at = index_of(after[0].leader);
    let transient = [NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS];
    assert_eq!(
        produce_until(&cluster, new_leader_at, topic, -1, &transient),
        0,
        "the new leader takes writes"
    );
    kill(pid, Signal::SIGCONT).unwrap();
    let code = zombie_answer.join().unwrap();
    eprintln!("the replaced leader answered the write it read late with {code:?}");
    assert!(
        matches!(code, Ok(code) if code != 0),
        "the replaced leader answered an acks=all write it read after its replacement with \
         {code:?}, not an error{}",
        cluster.log_tails(LOG_LINES)
    );
    // Back in the ISR, it holds what the new leader holds: its own write is cut.
    cluster.wait_metadata(survivor, topic, "the old leader back in sync", |_, seen| {
        fully_in_sync(seen, 1)
    });
    let sizes = cluster.wait_same_log_sizes(topic, 1);
    assert!(sizes.is_ok(), "replica log sizes: {sizes:?}");
    cluster.stop_all();
    let (_, first) = partition_log(&cluster.brokers[0], topic, 0);
    for broker in &cluster.brokers[1..] {
        assert_eq!(
            partition_log(broker, topic, 0).1,
            first,
            "the replicas hold the same bytes"
        );
    }
}

/// The first position at which two byte strings differ, if they do (one a prefix of the other
/// differs at the shorter one's end).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    (common < a.len().max(b.len())).then_some(common)
}
