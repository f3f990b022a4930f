//! Three `sluice serve` processes on one machine form one metadata quorum (Kafka's combined
//! mode: every broker a controller voter, `controller.quorum.voters`): a topic created through
//! any broker reaches every broker, its partitions spread across them, and the quorum keeps
//! taking metadata changes after its leader is killed; the killed broker restarts and catches up.
//! librdkafka, bootstrapped from one broker, produces to and consumes from each partition's
//! leader, with an idempotent producer and a consumer group whose coordinator may be any broker.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::consumer::read_partitions;
use common::deliveries::{producer, send_waiting};
use common::{free_port, fresh_dir, try_call, Broker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

/// How long the quorum may take to elect a leader, name the cluster, register the brokers or
/// apply a change everywhere: generous, for a loaded 2-core CI machine (each takes well under a
/// second when idle).
const QUORUM_WAIT_MAX: Duration = Duration::from_secs(60);

const NOT_CONTROLLER: i16 = 41;

struct Cluster {
    brokers: Vec<Broker>,
}

impl Cluster {
    fn start() -> Cluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = ports
            .iter()
            .enumerate()
            .map(|(i, (client, controller))| {
                let dir = fresh_dir(&format!("cluster-{}", i + 1));
                let settings = [
                    format!("node.id={}", i + 1),
                    format!(
                        "listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}"
                    ),
                    "controller.listener.names=CONTROLLER".to_string(),
                    format!("controller.quorum.voters={voters}"),
                    // Three brokers share two cores.
                    "cpuset=unpinned".to_string(),
                ];
                let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
                Broker::start_on(dir.clone(), dir.join("broker.log"), 1, *client, &settings)
            })
            .collect();
        Cluster { brokers }
    }

    /// Waits until every running broker logged its registration with the cluster.
    fn wait_registered(&self, running: &[usize]) {
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        for &i in running {
            while !self.brokers[i].log().contains("registered with cluster") {
                assert!(
                    Instant::now() < deadline,
                    "broker {} never registered; log:\n{}",
                    i + 1,
                    self.brokers[i].log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The node id the quorum's leader has, as the latest line any running broker logged says.
    fn leader(&self, running: &[usize]) -> usize {
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        loop {
            let said = running.iter().filter_map(|&i| {
                let log = self.brokers[i].log();
                let line = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("metadata quorum leader is now"))?;
                let id = line
                    .split("leader is now ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                id.parse::<usize>().ok()
            });
            if let Some(id) = said.max() {
                return id;
            }
            assert!(Instant::now() < deadline, "no quorum leader logged");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Creates `topic` through `broker`, asking again while the quorum has no leader.
fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    loop {
        let answer: Result<CreateTopicsResponse, String> =
            try_call(&mut connect(broker), ApiKey::CreateTopics, 7, &request);
        match answer.map(|r| (r.topics[0].error_code, r.topics[0].error_message.clone())) {
            Ok((0, _)) => return,
            Ok((NOT_CONTROLLER, _)) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("creating {topic}: {other:?}; log:\n{}", broker.log()),
        }
    }
}

/// The partition count of `topic` in `broker`'s metadata, or none while it does not know it.
fn partitions_known(broker: &Broker, topic: &str) -> Option<usize> {
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let answer: MetadataResponse =
        try_call(&mut connect(broker), ApiKey::Metadata, 12, &request).ok()?;
    let found = &answer.topics[0];
    (found.error_code == 0).then_some(found.partitions.len())
}

fn wait_for_topic(cluster: &Cluster, running: &[usize], topic: &str, partitions: usize) {
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    for &i in running {
        while partitions_known(&cluster.brokers[i], topic) != Some(partitions) {
            assert!(
                Instant::now() < deadline,
                "broker {} never learned of {topic}; log:\n{}",
                i + 1,
                cluster.brokers[i].log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The partition directories a broker holds for `topic`.
fn partition_dirs(broker: &Broker, topic: &str) -> usize {
    std::fs::read_dir(&broker.data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.rsplit_once('-').is_some_and(|(t, _)| t == topic)
        })
        .count()
}

#[test]
fn three_brokers_share_metadata_through_a_quorum_that_survives_its_leader() {
    let mut cluster = Cluster::start();
    let all = [0, 1, 2];
    cluster.wait_registered(&all);

    // A topic created through one broker reaches all three, its partitions spread over them.
    create_topic(&cluster.brokers[1], "orders", 6);
    wait_for_topic(&cluster, &all, "orders", 6);
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while all
        .iter()
        .any(|&i| partition_dirs(&cluster.brokers[i], "orders") != 2)
    {
        assert!(
            Instant::now() < deadline,
            "the partitions do not spread two per broker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Clients find each partition's leader: every acknowledged record reads back once, and a
    // consumer group commits through whichever broker coordinates it.
    produce_and_consume(&cluster.brokers[0], &cluster.brokers[2], "orders", 6, 300);

    // The quorum's leader dies; the other two elect one and keep taking changes.
    let leader = cluster.leader(&all) - 1;
    cluster.brokers[leader].kill9();
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    create_topic(&cluster.brokers[survivors[0]], "payments", 2);
    wait_for_topic(&cluster, &survivors, "payments", 2);

    // It comes back on its disk and catches up with what it missed.
    cluster.brokers[leader].restart();
    wait_for_topic(&cluster, &[leader], "payments", 2);
    wait_for_topic(&cluster, &[leader], "orders", 6);
    for broker in &mut cluster.brokers {
        assert!(broker.terminate(), "a clean stop; log:\n{}", broker.log());
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
    assert!(
        deliveries.failed.lock().unwrap().is_empty(),
        "{:?}",
        deliveries.failed
    );
    let mut acked: Vec<String> = deliveries
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.2.clone())
        .collect();
    assert_eq!(acked.len(), count);
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

    let mut read: Vec<String> = read_partitions(second, topic, partitions)
        .into_values()
        .flatten()
        .map(|(_, _, value)| value)
        .collect();
    acked.sort();
    read.sort();
    assert_eq!(read, acked, "every acknowledged record, once");

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
