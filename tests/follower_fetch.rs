//! Fetch v17 as a follower sends it, over a raw socket, against two real brokers (one metadata
//! quorum, a topic assigned to both): the leader serves a replica the partition's assignment
//! names, by topic id, up to its log end; it refuses one that is not assigned (UNKNOWN_LEADER_EPOCH
//! when the request names the leader epoch, NOT_LEADER_OR_FOLLOWER when it does not), an
//! unknown topic id (UNKNOWN_TOPIC_ID), and the other broker refuses the follower as not the
//! leader, pointing it at the leader (`CurrentLeader`, `NodeEndpoints`).

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::{quorum_ports, voter_settings};
use common::{connect, fresh_dir, produce_one, try_call, Broker};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// How long the quorum may take to form, register both brokers or open the partition.
const WAIT_MAX: Duration = Duration::from_secs(60);

const FOLLOWER_FETCH_VERSION: i16 = 17;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// Two brokers (node ids 1 and 2), both voters of one metadata quorum.
fn two_brokers() -> Vec<Broker> {
    let ports = quorum_ports(2);
    (0..ports.len())
        .map(|i| {
            let dir = fresh_dir(&format!("follower-fetch-{}", i + 1));
            let settings = voter_settings(&["127.0.0.1"; 2], &ports, i);
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            Broker::start_on(
                dir.clone(),
                dir.join("broker.log"),
                1,
                ports[i].0,
                &settings,
            )
        })
        .collect()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Asks `broker` until `answer` gives something (the quorum forming, the topic reaching it).
fn eventually<T>(broker: &Broker, what: &str, mut answer: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(found) = answer() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no answer; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates `topic`, one partition on brokers 1 (leader) and 2, and waits until broker 1 has
/// opened it: its topic id.
fn create_on_both(brokers: &[Broker], topic: &str) -> Uuid {
    let assignment = CreatableReplicaAssignment::default()
        .with_partition_index(0)
        .with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![assignment])])
        .with_timeout_ms(5000);
    eventually(&brokers[0], "creating the topic", || {
        let r: CreateTopicsResponse =
            try_call(&mut connect(&brokers[0]), ApiKey::CreateTopics, 7, &request).ok()?;
        // NOT_CONTROLLER while the quorum forms; INVALID_REPLICA_ASSIGNMENT until broker 2
        // has registered.
        (r.topics[0].error_code == 0).then_some(())
    });
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    eventually(&brokers[0], "the topic reaching both brokers", || {
        let ids: Vec<Uuid> = brokers
            .iter()
            .filter_map(|b| {
                let r: MetadataResponse =
                    try_call(&mut connect(b), ApiKey::Metadata, 12, &metadata).ok()?;
                let t = &r.topics[0];
                let p = t.partitions.first()?;
                (t.error_code == 0 && p.leader_id.0 == 1).then_some(t.topic_id)
            })
            .collect();
        (ids.len() == 2).then(|| ids[0])
    })
}

/// Produces `count` one-record batches to broker 1 (acks=1).
fn produce(broker: &Broker, topic: &str, count: usize) {
    let mut s = connect(broker);
    for _ in 0..count {
        eventually(broker, "producing", || {
            (produce_one(&mut s, topic, 1).ok()? == 0).then_some(())
        });
    }
}

/// A v17 fetch of partition 0 of `topic_id` from offset 0, as replica `replica` would send it.
fn follower_fetch(
    s: &mut TcpStream,
    topic_id: Uuid,
    replica: i32,
    leader_epoch: i32,
) -> FetchResponse {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(leader_epoch)
        .with_fetch_offset(0)
        .with_last_fetched_epoch(-1)
        .with_log_start_offset(0)
        .with_partition_max_bytes(1 << 20)
        .with_replica_directory_id(Uuid::new_v4());
    let request = FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(replica))
                .with_replica_epoch(7),
        )
        .with_max_wait_ms(10)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        // A follower reads to the log end whatever it sends.
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![partition])]);
    try_call(s, ApiKey::Fetch, FOLLOWER_FETCH_VERSION, &request)
        .unwrap_or_else(|e| panic!("Fetch v{FOLLOWER_FETCH_VERSION}: {e}"))
}

#[test]
fn the_leader_serves_assigned_followers_up_to_its_log_end() {
    let brokers = two_brokers();
    let topic_id = create_on_both(&brokers, "replicated");
    produce(&brokers[0], "replicated", 5);
    let mut s = connect(&brokers[0]);

    let r = follower_fetch(&mut s, topic_id, 2, 0);
    assert_eq!(r.responses[0].topic_id, topic_id);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "an assigned follower");
    // Broker 2's own fetcher replicates meanwhile: the high watermark is wherever its disk is.
    assert!((0..=5).contains(&p.high_watermark), "{}", p.high_watermark);
    assert_eq!(
        (p.diverging_epoch.epoch, p.diverging_epoch.end_offset),
        (-1, -1)
    );
    let records = p.records.clone().unwrap();
    let batch_len = common::one_record_batch().len();
    assert_eq!(
        records.len(),
        5 * batch_len,
        "every batch up to the log end"
    );
    let last_base = i64::from_be_bytes(records[4 * batch_len..][..8].try_into().unwrap());
    assert_eq!(last_base, 4);

    let refused = |r: FetchResponse| r.responses[0].partitions[0].error_code;
    assert_eq!(
        refused(follower_fetch(&mut s, topic_id, 3, 0)),
        UNKNOWN_LEADER_EPOCH,
        "not assigned, naming the epoch"
    );
    assert_eq!(
        refused(follower_fetch(&mut s, topic_id, 3, -1)),
        NOT_LEADER_OR_FOLLOWER,
        "not assigned, naming no epoch"
    );
    assert_eq!(
        refused(follower_fetch(&mut s, topic_id, 1, -1)),
        NOT_LEADER_OR_FOLLOWER,
        "the leader itself"
    );

    let unknown = follower_fetch(&mut s, Uuid::new_v4(), 2, 0);
    assert_eq!(refused(unknown.clone()), UNKNOWN_TOPIC_ID);
    assert_ne!(unknown.responses[0].topic_id, topic_id);

    // Broker 2 does not lead: it points the follower at broker 1.
    let r = follower_fetch(&mut connect(&brokers[1]), topic_id, 2, -1);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, 1);
    let leader: Vec<(i32, String)> = r
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, format!("{}:{}", e.host.as_str(), e.port)))
        .collect();
    assert_eq!(leader, [(1, brokers[0].bootstrap())]);
}
