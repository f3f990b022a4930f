//! Three `sluice serve` processes on one machine (brokers 1 and 3 with one shard, broker 2 with
//! two, so partitions also land on a shard that is not the controller's) form one metadata quorum (Kafka's combined
//! mode: every broker a controller voter, `controller.quorum.voters`): a topic created through
//! any broker reaches every broker, its partitions spread across them, and the quorum keeps
//! taking metadata changes after its leader is killed; the killed broker restarts and catches up.
//! librdkafka, bootstrapped from one broker, produces to and consumes from each partition's
//! leader, with an idempotent producer and a consumer group whose coordinator may be any broker.
//! Brokers heartbeat to the quorum's leader: one that dies is fenced after its session and leads
//! nothing (its partitions answer LEADER_NOT_AVAILABLE) until it returns; one that stops with
//! SIGTERM is fenced before it exits (a controlled shutdown). Transactions span the three
//! brokers, and clients ride out a broker stopping and returning with nothing acknowledged lost;
//! on a replicated topic, leadership moves (a controlled shutdown, then a preferred election)
//! while a producer and a consumer group run.

mod common;

use std::io::Write;
use std::ops::Range;
use std::time::{Duration, Instant};

use common::cluster::{
    create_spread, create_topic, create_topic_with, index_of, metadata_of, wait_for_topic,
    wait_metadata, wait_spread, Cluster, PartitionSeen, QUORUM_WAIT_MAX, REPLICA_LAG,
};
use common::consumer::read_partitions;
use common::deliveries::{producer, send_waiting, Deliveries, SAFE_PRODUCER};
use common::transactions::{transactional, write_transaction};
use common::{connect, try_call, Broker, RESPONSE_MAX_BYTES};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use sluice_client::blocking::read_frame;
use sluice_client::frame::{self, RequestId};

const LEADER_NOT_AVAILABLE: i16 = 5;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;

/// ElectLeaders (v2, preferred) through `broker` for the first `partitions` partitions of
/// `topic` (`None`: every partition of every topic); the error codes answered for `topic`.
fn elect_preferred(broker: &Broker, topic: &str, partitions: Option<i32>) -> Vec<i16> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let asked = partitions.map(|n| {
        vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions((0..n).collect())]
    });
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(asked)
        .with_timeout_ms(5000);
    let answer: ElectLeadersResponse =
        try_call(&mut connect(broker), ApiKey::ElectLeaders, 2, &request).unwrap();
    answer
        .replica_election_results
        .iter()
        .filter(|r| r.topic.0.as_str() == topic)
        .flat_map(|r| r.partition_result.iter().map(|p| p.error_code))
        .collect()
}

/// CreateTopics for `topic` sent through every broker of `cluster` at the same moment; the
/// error codes answered, sorted.
fn create_through_all_at_once(cluster: &Cluster, topic: &str) -> Vec<i16> {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(3)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let start = std::sync::Barrier::new(cluster.brokers.len());
    let mut codes: Vec<i16> = std::thread::scope(|scope| {
        let asks: Vec<_> = cluster
            .brokers
            .iter()
            .map(|broker| {
                let mut stream = connect(broker);
                let (start, request) = (&start, &request);
                scope.spawn(move || {
                    start.wait();
                    let answer: CreateTopicsResponse =
                        try_call(&mut stream, ApiKey::CreateTopics, 7, request).unwrap();
                    answer.topics[0].error_code
                })
            })
            .collect();
        asks.into_iter().map(|ask| ask.join().unwrap()).collect()
    });
    codes.sort();
    codes
}

#[test]
fn three_brokers_share_metadata_through_a_quorum_that_survives_its_leader() {
    let mut cluster = Cluster::formed(1);
    let all = [0, 1, 2];
    let described: DescribeClusterResponse = try_call(
        &mut connect(&cluster.brokers[1]),
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    )
    .unwrap();
    let mut ids: Vec<i32> = described.brokers.iter().map(|b| b.broker_id.0).collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3], "DescribeCluster lists every live broker");

    // A topic created through one broker reaches all three, its partitions spread over them.
    create_spread(&cluster, 1, "orders");

    // Every broker asked at once to create one topic: one creates it and the others answer
    // TOPIC_ALREADY_EXISTS, as Kafka's single controller would, never NOT_CONTROLLER.
    assert_eq!(
        create_through_all_at_once(&cluster, "contested"),
        [0, 36, 36]
    );

    // Clients find each partition's leader: every acknowledged record reads back once, and a
    // consumer group commits through whichever broker coordinates it.
    produce_and_consume(&cluster.brokers[0], &cluster.brokers[2], "orders", 6, 300);

    // A transaction over partitions of all three brokers: markers and verifications cross them.
    create_spread(&cluster, 1, "ledger");
    commit_and_abort_across_brokers(&cluster.brokers[2], &cluster.brokers[0], "ledger", 6);

    // The quorum's leader dies; the other two elect one and keep taking changes. Once its
    // session is over it is fenced: it is no longer listed and its partitions have no leader.
    let leader = cluster.leader(&all) - 1;
    let dead = leader as i32 + 1;
    cluster.brokers[leader].kill9();
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let fenced = wait_metadata(
        &cluster.brokers[survivors[0]],
        "orders",
        "the dead broker fenced",
        |brokers, partitions| {
            !brokers.contains(&dead)
                && partitions.iter().all(|p| {
                    (p.leader == -1 && p.error == LEADER_NOT_AVAILABLE)
                        || (p.leader != dead && p.error == 0)
                })
        },
    );
    let leaderless = fenced.iter().filter(|p| p.leader == -1).count();
    assert_eq!(
        leaderless, 2,
        "the dead broker led two partitions: {fenced:?}"
    );
    // A preferred election cannot bring them back while their one replica is fenced.
    let elections = elect_preferred(&cluster.brokers[survivors[0]], "orders", None);
    assert_eq!(
        elections, [PREFERRED_LEADER_NOT_AVAILABLE; 2],
        "every partition asked for, those needing nothing left out"
    );
    create_topic(&cluster.brokers[survivors[0]], "payments", 2);
    wait_for_topic(&cluster, &survivors, "payments", 2);
    wait_spread(&cluster, &survivors, "payments", 1);

    // It comes back on its disk, catches up with what it missed, is unfenced and leads its
    // partitions again under a new leader epoch.
    cluster.brokers[leader].restart();
    wait_for_topic(&cluster, &[leader], "payments", 2);
    wait_for_topic(&cluster, &[leader], "orders", 6);
    let back = wait_metadata(
        &cluster.brokers[survivors[1]],
        "orders",
        "the restarted broker leading again",
        |brokers, partitions| {
            brokers == [1, 2, 3] && partitions.iter().all(|p| p.error == 0 && p.leader > 0)
        },
    );
    let elections = elect_preferred(&cluster.brokers[survivors[0]], "orders", Some(6));
    assert_eq!(elections, [ELECTION_NOT_NEEDED; 6]);
    for (before, after) in fenced.iter().zip(&back) {
        if before.leader == -1 {
            assert_eq!(after.leader, dead, "{back:?}");
            assert!(
                after.leader_epoch > before.leader_epoch,
                "a new leader epoch: {fenced:?} then {back:?}"
            );
        }
    }

    // A controlled shutdown: the broker is fenced before it exits, so its partitions are
    // leaderless (not unreachable) as soon as it is gone.
    let stopping = survivors[1];
    assert!(cluster.brokers[stopping].terminate(), "a clean stop");
    let log = cluster.brokers[stopping].log();
    assert!(log.contains("controlled shutdown: fenced"), "log:\n{log}");
    let gone = stopping as i32 + 1;
    wait_metadata(
        &cluster.brokers[leader],
        "orders",
        "the stopped broker fenced",
        |brokers, partitions| {
            !brokers.contains(&gone) && partitions.iter().filter(|p| p.leader == -1).count() == 2
        },
    );
    cluster.stop_all();
}

/// A broker whose process is gone is fenced without waiting out its session: the quorum
/// leader's connections to its controller listener are refused. Here the session is longer
/// than any wait of the test (`QUORUM_WAIT_MAX`), so only that can fence it, as the quorum's
/// leader (a new leader, who heard nothing from it) and as a follower. A paused broker refuses
/// nothing (the kernel still takes its connections) and keeps its session.
#[test]
fn a_killed_broker_is_fenced_without_waiting_out_its_session() {
    const LONG_SESSION: &str = "broker.session.timeout.ms=180000";
    let mut cluster = Cluster::formed_with(0, &[LONG_SESSION]);
    let all = [0, 1, 2];
    create_spread(&cluster, 0, "watched");
    let fenced_without = |cluster: &Cluster, gone: usize, survivor: usize| {
        let dead = gone as i32 + 1;
        wait_metadata(
            &cluster.brokers[survivor],
            "watched",
            "the killed broker fenced",
            |brokers, partitions| {
                !brokers.contains(&dead) && partitions.iter().all(|p| p.leader != dead)
            },
        );
    };

    let all_listed = |brokers: &[i32], _: &[PartitionSeen]| brokers == [1, 2, 3];
    let leader = cluster.leader(&all) - 1;
    cluster.brokers[leader].kill9();
    fenced_without(&cluster, leader, (leader + 1) % 3);
    cluster.brokers[leader].restart();
    wait_metadata(&cluster.brokers[leader], "watched", "all back", all_listed);

    let leader = cluster.leader(&all) - 1;
    let (follower, paused) = ((leader + 1) % 3, (leader + 2) % 3);
    cluster.brokers[follower].kill9();
    fenced_without(&cluster, follower, leader);
    cluster.brokers[follower].restart();
    wait_metadata(&cluster.brokers[leader], "watched", "all back", all_listed);

    // With a quorum of the other two, a paused broker could be fenced; it is not.
    let pid = Pid::from_raw(cluster.brokers[paused].pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let listed = metadata_of(&cluster.brokers[leader], "watched").map(|(brokers, _)| brokers);
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(
        listed,
        Some(vec![1, 2, 3]),
        "a paused broker keeps its session"
    );
    cluster.stop_all();
}

/// A broker restarting in a cluster starts from an empty metadata image and replays the
/// quorum's log: it answers no request until it has caught up (its image holds its own new
/// registration), as Kafka's brokers process none before their initial catch-up. Alone, with
/// no quorum, it keeps a Metadata request waiting rather than answer that a topic does not
/// exist (which makes librdkafka fail the records it holds for that topic's partitions); once
/// the other two are back, it answers, with the topic.
#[test]
fn a_restarted_broker_answers_once_its_metadata_has_caught_up() {
    let mut cluster = Cluster::formed(0);
    create_spread(&cluster, 0, "kept");
    for broker in &mut cluster.brokers {
        broker.kill9();
    }
    cluster.brokers[0].restart();
    let mut stream = connect(&cluster.brokers[0]);
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("kept"))))]))
        .with_allow_auto_topic_creation(false);
    let id = RequestId {
        correlation_id: 7,
        client_id: "catch-up",
    };
    let frame = frame::encode_request(ApiKey::Metadata, 12, id, &request).unwrap();
    stream.write_all(&frame).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let early = read_frame(&mut stream, RESPONSE_MAX_BYTES);
    assert!(
        early.is_err(),
        "a broker with no quorum answered from the metadata it had: {early:?}"
    );

    cluster.brokers[1].restart();
    cluster.brokers[2].restart();
    stream.set_read_timeout(Some(QUORUM_WAIT_MAX)).unwrap();
    let answer = read_frame(&mut stream, RESPONSE_MAX_BYTES).expect("an answer once caught up");
    let answer: MetadataResponse = frame::decode_response(ApiKey::Metadata, 12, 7, answer).unwrap();
    let topic = &answer.topics[0];
    assert_eq!(topic.error_code, 0, "{answer:?}");
    assert_eq!(topic.partitions.len(), 6, "{answer:?}");
    let log = cluster.brokers[0].log();
    assert!(log.contains("metadata caught up"), "log:\n{log}");
    cluster.stop_all();
}

/// Leadership moving while clients run: an idempotent acks=all producer writes every partition
/// and a consumer group reads, while one broker stops (a controlled shutdown) and returns. Its
/// partitions have one replica, so they are leaderless meanwhile: the producer holds their
/// records and sends them to the returned leader (new leader epoch), no record fails, every
/// acknowledged record is stored once, and the group reads them all.
#[test]
fn clients_ride_out_a_broker_stopping_and_returning() {
    let mut cluster = Cluster::formed(0);
    create_spread(&cluster, 0, "stream");

    let group = std::thread::spawn({
        let bootstrap = cluster.brokers[2].bootstrap();
        move || read_in_group(&bootstrap, "stream", "riders", RIDE_RECORDS)
    });
    let (sender, deliveries) = producer(&cluster.brokers[0], &SAFE_PRODUCER);
    let send = |from: usize, to: usize| send_paced(&sender, "stream", 6, "ride", from..to);
    let third = RIDE_RECORDS / 3;
    send(0, third);
    // Broker 2 (two shards) stops cleanly: fenced first, its partitions leaderless.
    assert!(cluster.brokers[1].terminate(), "a clean stop");
    send(third, 2 * third);
    cluster.brokers[1].restart();
    send(2 * third, RIDE_RECORDS);
    sender.flush(Duration::from_secs(120)).unwrap();
    check_stored_once(&cluster.brokers[0], &deliveries, "stream", 6, RIDE_RECORDS);
    let read = group.join().expect("the group reader");
    assert_eq!(read.len(), RIDE_RECORDS, "the group read every record");
    cluster.stop_all();
}

/// Leadership moves while clients run, on a replicated topic (3 replicas, min.insync.replicas
/// 2): a controlled shutdown (SIGTERM) of the broker leading partition 0 moves its leaderships
/// to in-sync followers before it stops, and once it is back in every ISR a preferred election
/// gives each partition its first replica again. An idempotent acks=all producer and a consumer
/// group run throughout: no delivery fails, every acknowledged record is stored once, and the
/// group reads every one.
#[test]
fn leadership_moves_while_clients_run() {
    let mut cluster = Cluster::formed_with(
        0,
        &[
            REPLICA_LAG,
            // The preferred election is the test's, not the controller's own rebalance.
            "auto.leader.rebalance.enable=false",
        ],
    );
    let topic = "moving";
    create_topic_with(
        &cluster.brokers[0],
        topic,
        3,
        3,
        &[("min.insync.replicas", "2")],
    );
    let all_in_sync = |_: &[i32], seen: &[common::cluster::PartitionSeen]| {
        seen.len() == 3 && seen.iter().all(|p| p.isr.len() == 3 && p.leader > 0)
    };
    wait_metadata(
        &cluster.brokers[0],
        topic,
        "three in-sync replicas",
        all_in_sync,
    );

    let group = std::thread::spawn({
        let bootstrap = cluster.brokers[2].bootstrap();
        move || read_in_group(&bootstrap, topic, "movers", RIDE_RECORDS)
    });
    let (sender, deliveries) = producer(&cluster.brokers[0], &SAFE_PRODUCER);
    let send = |from: usize, to: usize| send_paced(&sender, topic, 3, "move", from..to);
    let third = RIDE_RECORDS / 3;
    send(0, third);
    let seen = wait_metadata(&cluster.brokers[0], topic, "a leader", all_in_sync);
    let stopping = index_of(seen[0].leader);
    assert!(cluster.brokers[stopping].terminate(), "a clean stop");
    send(third, 2 * third);
    cluster.brokers[stopping].restart();
    wait_metadata(
        &cluster.brokers[(stopping + 1) % 3],
        topic,
        "the restarted broker back in every ISR",
        all_in_sync,
    );
    // Its partitions are led by others now: a preferred election gives them back.
    let codes = elect_preferred(&cluster.brokers[(stopping + 1) % 3], topic, Some(3));
    assert!(
        codes.iter().all(|&c| c == 0 || c == ELECTION_NOT_NEEDED),
        "preferred elections: {codes:?}"
    );
    wait_metadata(
        &cluster.brokers[0],
        topic,
        "every partition led by its first replica",
        |_, seen| seen.iter().all(|p| p.replicas.first() == Some(&p.leader)),
    );
    send(2 * third, RIDE_RECORDS);
    sender.flush(Duration::from_secs(120)).unwrap();
    check_stored_once(&cluster.brokers[0], &deliveries, topic, 3, RIDE_RECORDS);
    let read = group.join().expect("the group reader");
    assert_eq!(read.len(), RIDE_RECORDS, "the group read every record");
    cluster.stop_all();
}

/// Records the producer writes while a broker stops and returns.
const RIDE_RECORDS: usize = 600;

/// Sends `{prefix} {i}` for each `i` in `range` to partition `i % partitions`, 5 ms apart, so
/// that the traffic spans what the test does to a broker meanwhile.
fn send_paced(
    sender: &ThreadedProducer<Deliveries>,
    topic: &str,
    partitions: usize,
    prefix: &str,
    range: Range<usize>,
) {
    for i in range {
        let value = format!("{prefix} {i}");
        send_waiting(
            sender,
            BaseRecord::<(), str>::to(topic)
                .partition((i % partitions) as i32)
                .payload(&value),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks the producer's delivery reports against what `partitions` partitions of `topic` hold,
/// read through `broker`: no delivery failed, `count` records were acknowledged, and each is
/// stored once.
fn check_stored_once(
    broker: &Broker,
    deliveries: &Deliveries,
    topic: &str,
    partitions: i32,
    count: usize,
) {
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
    assert_eq!(acked.len(), count);
    let mut stored: Vec<String> = read_partitions(broker, topic, partitions)
        .into_values()
        .flatten()
        .map(|(_, _, value)| value)
        .collect();
    stored.sort();
    assert_eq!(stored, acked, "every acknowledged record stored once");
}

/// A group member reading `topic` until it has seen `count` distinct records (or
/// `QUORUM_WAIT_MAX` twice over passed), committing as it goes; what it read.
fn read_in_group(
    bootstrap: &str,
    topic: &str,
    group: &str,
    count: usize,
) -> std::collections::BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .create()
        .unwrap();
    let consumer = common::consumer::BoundedClose::new(consumer);
    consumer.subscribe(&[topic]).unwrap();
    let mut read = std::collections::BTreeSet::new();
    let deadline = Instant::now() + 2 * QUORUM_WAIT_MAX;
    while read.len() < count && Instant::now() < deadline {
        // Errors while a broker is away (its connections refused, its partitions leaderless)
        // are transient: librdkafka retries them itself.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    read
}

/// Through `producer_at`, a transactional producer writes one record to every partition and
/// commits, then one more and aborts; a read_committed consumer through `reader_at` sees the
/// committed records only.
fn commit_and_abort_across_brokers(
    producer_at: &Broker,
    reader_at: &Broker,
    topic: &str,
    partitions: i32,
) {
    let producer = transactional(&producer_at.bootstrap(), "cluster-ledger");
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    for (prefix, commit) in [("committed", true), ("aborted", false)] {
        write_transaction(&producer, topic, partitions, prefix);
        producer.flush(timeout).unwrap();
        if commit {
            producer.commit_transaction(timeout).unwrap();
        } else {
            producer.abort_transaction(timeout).unwrap();
        }
    }
    // librdkafka reads committed by default: offset 0 of each partition, and past the markers.
    let read = read_partitions(reader_at, topic, partitions);
    for p in 0..partitions {
        let values: Vec<&str> = read.get(&p).map_or(Vec::new(), |r| {
            r.iter().map(|(_, _, v)| v.as_str()).collect()
        });
        assert_eq!(
            values,
            [format!("committed {p}")],
            "partition {p}: {read:?}"
        );
    }
}

/// Produces `count` records (idempotent, acks=all) through `first`, reads every partition back
/// through `second`, and consumes them in a group that commits its offsets.
fn produce_and_consume(
    first: &Broker,
    second: &Broker,
    topic: &str,
    partitions: i32,
    count: usize,
) {
    let (sender, deliveries) = producer(
        first,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
        ],
    );
    for i in 0..count {
        let value = format!("record {i}");
        let key = i.to_string();
        send_waiting(&sender, BaseRecord::to(topic).key(&key).payload(&value));
    }
    sender.flush(Duration::from_secs(60)).unwrap();
    check_stored_once(second, &deliveries, topic, partitions, count);
    let used = deliveries
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.0)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        used.len() > 1,
        "records went to more than one partition: {used:?}"
    );

    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", second.bootstrap())
        .set("group.id", "cluster-readers")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    group.subscribe(&[topic]).unwrap();
    let mut consumed = 0;
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while consumed < count {
        assert!(
            Instant::now() < deadline,
            "the group read {consumed} of {count}"
        );
        match group.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                assert!(m.payload().is_some());
                consumed += 1;
            }
            Some(Err(err)) => panic!("group consumer: {err}"),
            None => {}
        }
    }
    group.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed = group
        .committed(Duration::from_secs(30))
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0))
        .sum::<i64>();
    assert_eq!(
        committed as usize, count,
        "the group committed every partition's end"
    );
}
