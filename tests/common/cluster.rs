//! A cluster of three `sluice serve` processes on one machine (brokers 1 and 3 with one shard,
//! broker 2 with two), every broker a voter of one metadata quorum (Kafka's combined mode), and
//! the requests the cluster tests make of it: creating topics while the quorum may still be
//! electing, reading Metadata (leaders, epochs, replicas, ISR) and waiting for it to say
//! something, asking each partition's leader its high watermark, finding which broker holds
//! which partition on disk and reading a replica's log files, stopping every broker cleanly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::netns::Network;
use super::proxy::DelayProxy;
use super::{connect, free_port, fresh_dir, high_watermark, try_call, Broker, Place};

/// How long the quorum may take to elect a leader, name the cluster, register the brokers or
/// apply a change everywhere: generous, for a loaded 2-core CI machine (each takes well under a
/// second when idle).
pub const QUORUM_WAIT_MAX: Duration = Duration::from_secs(60);

pub const NOT_CONTROLLER: i16 = 41;

/// A follower that has not caught up for this long leaves the ISR: seconds, not Kafka's 30, so
/// that a test sees a stuck follower leave.
pub const REPLICA_LAG: &str = "replica.lag.time.max.ms=4000";

/// Lines of each broker's log a failing cluster test shows.
pub const LOG_LINES: usize = 300;

pub struct Cluster {
    pub brokers: Vec<Broker>,
    /// With `Hosting::proxied`, each broker's `DelayProxy`: the address it advertises.
    pub proxies: Vec<DelayProxy>,
}

/// Where a cluster's three brokers run, beyond the loopback and fresh directories of
/// `start_with`: each in a namespace of `network`, each keeping its data on `disks[i]`, and
/// with `proxied` each reached by clients and the other brokers only through a `DelayProxy`.
#[derive(Default)]
pub struct Hosting<'a> {
    pub network: Option<&'a Network>,
    pub disks: Option<&'a [PathBuf]>,
    pub proxied: bool,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Three brokers, each also given the `key=value` settings in `extra` (a test's own
    /// replication timing, say); restarts keep them.
    pub fn start_with(extra: &[&str]) -> Cluster {
        Cluster::start_hosted(&Hosting::default(), extra)
    }

    /// `start_with`, each broker placed as `host` says: in a namespace of its network, at its
    /// address there, and keeping its data on a disk of its own.
    pub fn start_hosted(host: &Hosting, extra: &[&str]) -> Cluster {
        let places = (0..3)
            .map(|i| match host.network {
                Some(network) => (network.address(i), Some(network.namespace(i))),
                None => ("127.0.0.1".to_string(), None),
            })
            .collect();
        // The proxies listen where every broker can reach them: the test's own end of the
        // namespaces' bridge, or the loopback.
        let proxy_host = host.proxied.then(|| {
            host.network
                .map_or("127.0.0.1".to_string(), Network::gateway)
        });
        Cluster::start_at(places, host.disks, proxy_host.as_deref(), extra)
    }

    /// Three brokers, the `i`th at `places[i]`: (address, namespace); its data on `disks[i]`
    /// if given (its log then beside, not on, that disk), else in a fresh directory.
    /// With `proxy_host`, each broker advertises a `DelayProxy` there in front of its client
    /// listener.
    fn start_at(
        places: Vec<(String, Option<String>)>,
        disks: Option<&[PathBuf]>,
        proxy_host: Option<&str>,
        extra: &[&str],
    ) -> Cluster {
        let ports = quorum_ports(3);
        let hosts: Vec<&str> = places.iter().map(|(host, _)| host.as_str()).collect();
        let proxies: Vec<DelayProxy> = proxy_host.map_or(Vec::new(), |proxy_host| {
            (0..ports.len())
                .map(|i| {
                    let target = format!("{}:{}", hosts[i], ports[i].0);
                    DelayProxy::start(proxy_host, target.parse().unwrap())
                })
                .collect()
        });
        let brokers = (0..ports.len())
            .map(|i| {
                let dir = fresh_dir(&format!("cluster-{}", i + 1));
                let data_dir = disks.map_or(dir.clone(), |disks| disks[i].clone());
                let mut settings = voter_settings(&hosts, &ports, i);
                settings.extend([
                    // Fence a silent broker within seconds, not Kafka's 9, yet never one that a
                    // loaded CI machine merely slowed down.
                    "broker.heartbeat.interval.ms=500".to_string(),
                    "broker.session.timeout.ms=6000".to_string(),
                ]);
                if let Some(proxy) = proxies.get(i) {
                    settings.push(format!(
                        "advertised.listeners=PLAINTEXT://{}",
                        proxy.address()
                    ));
                }
                settings.extend(extra.iter().map(|s| s.to_string()));
                let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
                let place = Place {
                    host: places[i].0.clone(),
                    netns: places[i].1.clone(),
                };
                let client = ports[i].0;
                Broker::start_at(
                    place,
                    data_dir,
                    dir.join("broker.log"),
                    1 + i % 2,
                    client,
                    &settings,
                )
            })
            .collect();
        Cluster { brokers, proxies }
    }

    /// Three brokers, registered, every one live (unfenced) in the metadata of broker `via`
    /// (the one a test then creates topics through).
    pub fn formed(via: usize) -> Cluster {
        Cluster::formed_with(via, &[])
    }

    /// `formed`, the brokers started with the extra settings of `start_with`.
    pub fn formed_with(via: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with(extra).formed_from(via)
    }

    /// `formed_with`, the brokers placed as `host` says (see `start_hosted`).
    pub fn formed_hosted(host: &Hosting, via: usize, extra: &[&str]) -> Cluster {
        Cluster::start_hosted(host, extra).formed_from(via)
    }

    /// Three voters as `formed_with` starts them, and `observers` broker-only nodes
    /// (`process.roles=broker`, node ids 4, 5, ...) that follow their quorum; formed once every
    /// one is live in broker `via`'s metadata.
    pub fn formed_with_observers(via: usize, observers: usize, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster::start_with(extra);
        let voters = cluster.brokers[0]
            .settings()
            .iter()
            .find_map(|s| {
                s.strip_prefix("controller.quorum.voters=")
                    .map(String::from)
            })
            .expect("a voter names the voters");
        cluster.add_observers(observers, &voters, extra);
        let all: Vec<usize> = (0..cluster.brokers.len()).collect();
        cluster.wait_registered(&all);
        let ids: Vec<i32> = (1..=cluster.brokers.len() as i32).collect();
        wait_metadata(&cluster.brokers[via], "any", "every broker live", |b, _| {
            b == ids
        });
        cluster
    }

    /// Kafka's dedicated-controller layout: three controller-only voters
    /// (`process.roles=controller`, node ids 1-3, listening only on their controller listeners)
    /// and `brokers` broker-only nodes (node ids 4, 5, ...) observing their quorum; formed once
    /// every broker is live in the first broker's metadata.
    pub fn formed_dedicated(brokers: usize, extra: &[&str]) -> Cluster {
        let ports = quorum_ports(3);
        let voters = (0..3)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[i].1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            brokers: Vec::new(),
            proxies: Vec::new(),
        };
        // A controller has no client listener: the harness waits for its controller listener.
        for (i, &(_, controller)) in ports.iter().enumerate() {
            let settings = [
                format!("node.id={}", i + 1),
                "process.roles=controller".to_string(),
                format!("listeners=CONTROLLER://127.0.0.1:{controller}"),
                "controller.listener.names=CONTROLLER".to_string(),
                format!("controller.quorum.voters={voters}"),
                "cpuset=unpinned".to_string(),
            ];
            cluster
                .brokers
                .push(start_node(i + 1, controller, &settings, extra));
        }
        cluster.add_observers(brokers, &voters, extra);
        let first = cluster.brokers.len() - brokers;
        cluster.formed_brokers(first)
    }

    /// Starts `count` broker-only nodes (node ids after the last started) following `voters`.
    fn add_observers(&mut self, count: usize, voters: &str, extra: &[&str]) {
        for _ in 0..count {
            let node = self.brokers.len() + 1;
            let client = free_port();
            let settings = [
                format!("node.id={node}"),
                "process.roles=broker".to_string(),
                format!("listeners=PLAINTEXT://127.0.0.1:{client}"),
                "controller.listener.names=CONTROLLER".to_string(),
                format!("controller.quorum.voters={voters}"),
                "cpuset=unpinned".to_string(),
                "broker.heartbeat.interval.ms=500".to_string(),
                "broker.session.timeout.ms=6000".to_string(),
            ];
            self.brokers
                .push(start_node(node, client, &settings, extra));
        }
    }

    /// This cluster once its brokers from index `first` on are registered and live in the
    /// metadata of broker `first`.
    fn formed_brokers(self, first: usize) -> Cluster {
        let brokers: Vec<usize> = (first..self.brokers.len()).collect();
        self.wait_registered(&brokers);
        let ids: Vec<i32> = brokers.iter().map(|&i| i as i32 + 1).collect();
        wait_metadata(&self.brokers[first], "any", "every broker live", |b, _| {
            b == ids
        });
        self
    }

    /// This cluster once it is formed as `formed` says.
    fn formed_from(self, via: usize) -> Cluster {
        let cluster = self;
        cluster.wait_registered(&[0, 1, 2]);
        wait_metadata(
            &cluster.brokers[via],
            "any",
            "three live brokers",
            |b, _| b == [1, 2, 3],
        );
        cluster
    }

    /// Waits until every running broker logged its registration with the cluster.
    pub fn wait_registered(&self, running: &[usize]) {
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

    /// The node id of the metadata quorum's leader: of the leaders the `running` brokers logged
    /// (each logs every new leader it learns of, with its term), the one of the highest term.
    pub fn leader(&self, running: &[usize]) -> usize {
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        loop {
            let latest = running
                .iter()
                .filter_map(|&i| {
                    let log = self.brokers[i].log();
                    let line = log
                        .lines()
                        .rev()
                        .find(|l| l.contains("metadata quorum leader is now"))?;
                    let (_, said) = line.split_once("leader is now ")?;
                    let (id, term) = said.split_once(" (term ")?;
                    let term: u64 = term.trim_end_matches(')').parse().ok()?;
                    Some((term, id.parse::<usize>().ok()?))
                })
                .max();
            if let Some((_, id)) = latest {
                return id;
            }
            assert!(Instant::now() < deadline, "no quorum leader logged");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of every broker's log, each under a heading: what a failing
    /// cluster test prints, since the cause may lie with any of the three.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut all = String::new();
        for (i, broker) in self.brokers.iter().enumerate() {
            let log = broker.log();
            let kept: Vec<&str> = log.lines().collect();
            let from = kept.len().saturating_sub(lines);
            all.push_str(&format!(
                "\n--- broker {} ({}), last {} lines ---\n{}\n",
                i + 1,
                broker.log_file.display(),
                kept.len() - from,
                kept[from..].join("\n")
            ));
        }
        all
    }

    /// Every broker's address (its proxy's, where it has one), so that a client outlives any
    /// one of them.
    pub fn bootstrap(&self) -> String {
        let addresses: Vec<String> = if self.proxies.is_empty() {
            self.brokers.iter().map(Broker::bootstrap).collect()
        } else {
            self.proxies
                .iter()
                .map(|p| p.address().to_string())
                .collect()
        };
        addresses.join(",")
    }

    /// Each of the `seen` partitions' high watermark as its leader answers it, -1 where there
    /// is none (no leader, a leader down or refusing).
    pub fn high_watermarks(&self, topic: &str, seen: &[PartitionSeen]) -> Vec<i64> {
        seen.iter()
            .map(|p| {
                if p.leader <= 0 {
                    return -1;
                }
                high_watermark(&self.brokers[index_of(p.leader)], topic, p.index).unwrap_or(-1)
            })
            .collect()
    }

    /// Waits (at most `QUORUM_WAIT_MAX`) until every broker holds as many segment bytes as the
    /// others for each of `partitions` partitions of `topic` (a follower trails its leader by a
    /// fetch): `Ok` with the sizes once they match, `Err` with them if they never did.
    pub fn wait_same_log_sizes(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<Vec<Vec<u64>>, Vec<Vec<u64>>> {
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        loop {
            let sizes: Vec<Vec<u64>> = (0..partitions)
                .map(|p| self.brokers.iter().map(|b| log_size(b, topic, p)).collect())
                .collect();
            if sizes.iter().all(|s| s.iter().all(|&x| x == s[0])) {
                return Ok(sizes);
            }
            if Instant::now() >= deadline {
                return Err(sizes);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops every running broker with SIGTERM (a controlled shutdown); each must exit cleanly
    /// within `QUORUM_WAIT_MAX`.
    pub fn stop_all(&mut self) {
        for i in 0..self.brokers.len() {
            if self.brokers[i].is_running() {
                let stopped = self.brokers[i].terminate_within(QUORUM_WAIT_MAX);
                assert_eq!(
                    stopped,
                    Some(true),
                    "broker {} stops cleanly{}",
                    i + 1,
                    self.log_tails(LOG_LINES)
                );
            }
        }
    }

    /// `wait_metadata` against broker `via`, showing every broker's log tail if it times out.
    pub fn wait_metadata(
        &self,
        via: usize,
        topic: &str,
        what: &str,
        holds: impl Fn(&[i32], &[PartitionSeen]) -> bool,
    ) -> Vec<PartitionSeen> {
        wait_metadata_or(&self.brokers[via], topic, what, holds, || {
            self.log_tails(200)
        })
    }
}

/// Node `node` on the loopback with `settings` and then the test's `extra` settings, in a fresh
/// directory; started once `port` accepts connections.
fn start_node(node: usize, port: u16, settings: &[String], extra: &[&str]) -> Broker {
    let dir = fresh_dir(&format!("cluster-{node}"));
    let mut all: Vec<&str> = settings.iter().map(String::as_str).collect();
    all.extend(extra);
    let place = Place {
        host: "127.0.0.1".to_string(),
        netns: None,
    };
    let log = dir.join("broker.log");
    Broker::start_at(place, dir, log, 1, port, &all)
}

/// A client and a controller port for each of `count` brokers.
pub fn quorum_ports(count: usize) -> Vec<(u16, u16)> {
    (0..count).map(|_| (free_port(), free_port())).collect()
}

/// The settings that make the broker with index `i` (node id `i + 1`) listen on its host and
/// `ports` and vote, with every other broker on theirs, in one metadata quorum.
pub fn voter_settings(hosts: &[&str], ports: &[(u16, u16)], i: usize) -> Vec<String> {
    let voters = ports
        .iter()
        .zip(hosts)
        .enumerate()
        .map(|(n, ((_, controller), host))| format!("{}@{host}:{controller}", n + 1))
        .collect::<Vec<_>>()
        .join(",");
    let (client, controller) = ports[i];
    let host = hosts[i];
    vec![
        format!("node.id={}", i + 1),
        format!("listeners=PLAINTEXT://{host}:{client},CONTROLLER://{host}:{controller}"),
        "controller.listener.names=CONTROLLER".to_string(),
        format!("controller.quorum.voters={voters}"),
        // Several brokers share the machine's cores.
        "cpuset=unpinned".to_string(),
    ]
}

/// The index in `Cluster::brokers` of the broker with node id `node` (1, 2, 3 in start order).
pub fn index_of(node: i32) -> usize {
    usize::try_from(node - 1).unwrap_or_else(|_| panic!("no broker has node id {node}"))
}

/// Creates `topic` through `broker` (one replica per partition, no topic configs), asking
/// again while the quorum has no leader.
pub fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    create_topic_with(broker, topic, partitions, 1, &[]);
}

/// Creates `topic` through `broker` with `replication_factor` replicas per partition and the
/// topic configs `configs` (`min.insync.replicas`, say), asking again while the quorum has no
/// leader; any other refusal fails the test with the broker's answer and log.
pub fn create_topic_with(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) {
    let configs = configs
        .iter()
        .map(|(name, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs)])
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
pub fn partitions_known(broker: &Broker, topic: &str) -> Option<usize> {
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let mut stream = connect(broker);
    stream.set_read_timeout(Some(METADATA_ANSWER_WAIT)).ok()?;
    let answer: MetadataResponse = try_call(&mut stream, ApiKey::Metadata, 12, &request).ok()?;
    let found = &answer.topics[0];
    (found.error_code == 0).then_some(found.partitions.len())
}

/// Waits until each of the `running` brokers knows `topic` with `partitions` partitions.
pub fn wait_for_topic(cluster: &Cluster, running: &[usize], topic: &str, partitions: usize) {
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

/// A partition as Metadata (v12) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSeen {
    pub index: i32,
    pub error: i16,
    /// The leader's node id, -1 for none.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Node ids in assignment order (the order Kafka elects leaders in).
    pub replicas: Vec<i32>,
    /// Node ids, sorted (the ISR's order carries no meaning).
    pub isr: Vec<i32>,
}

/// How long `metadata_of` waits for an answer: a restarting broker answers nothing until its
/// metadata has caught up, and a caller polling the cluster should move on meanwhile.
const METADATA_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What `broker`'s Metadata says: the live brokers' ids (sorted), and each partition of `topic`
/// in index order (never creating it); none while the broker does not answer.
pub fn metadata_of(broker: &Broker, topic: &str) -> Option<(Vec<i32>, Vec<PartitionSeen>)> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let mut stream = connect(broker);
    stream.set_read_timeout(Some(METADATA_ANSWER_WAIT)).ok()?;
    let answer: MetadataResponse = try_call(&mut stream, ApiKey::Metadata, 12, &request).ok()?;
    let mut brokers: Vec<i32> = answer.brokers.iter().map(|b| b.node_id.0).collect();
    brokers.sort();
    let mut partitions: Vec<PartitionSeen> = answer.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|n| n.0).collect();
            isr.sort();
            PartitionSeen {
                index: p.partition_index,
                error: p.error_code,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                isr,
            }
        })
        .collect();
    partitions.sort_by_key(|p| p.index);
    Some((brokers, partitions))
}

/// Whether Metadata shows `count` partitions, each led, with three replicas, all in the ISR.
pub fn fully_in_sync(partitions: &[PartitionSeen], count: usize) -> bool {
    partitions.len() == count
        && partitions
            .iter()
            .all(|p| p.error == 0 && p.leader > 0 && p.replicas.len() == 3 && p.isr == [1, 2, 3])
}

/// Waits until `broker`'s Metadata satisfies `holds`, describing the wait as `what`.
pub fn wait_metadata(
    broker: &Broker,
    topic: &str,
    what: &str,
    holds: impl Fn(&[i32], &[PartitionSeen]) -> bool,
) -> Vec<PartitionSeen> {
    wait_metadata_or(broker, topic, what, holds, || broker.log())
}

/// `wait_metadata`, showing `logs()` if the wait times out.
fn wait_metadata_or(
    broker: &Broker,
    topic: &str,
    what: &str,
    holds: impl Fn(&[i32], &[PartitionSeen]) -> bool,
    logs: impl Fn() -> String,
) -> Vec<PartitionSeen> {
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    loop {
        let seen = metadata_of(broker, topic);
        if let Some((brokers, partitions)) = &seen {
            if holds(brokers, partitions) {
                return partitions.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: metadata stays {seen:?}; log:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until each running broker holds `each` partition directories of `topic`.
pub fn wait_spread(cluster: &Cluster, running: &[usize], topic: &str, each: usize) {
    let deadline = Instant::now() + QUORUM_WAIT_MAX;
    while running
        .iter()
        .any(|&i| partition_dirs(&cluster.brokers[i], topic) != each)
    {
        assert!(
            Instant::now() < deadline,
            "{topic}'s partitions do not spread {each} per broker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates a six-partition `topic` through broker `via` and waits until each of the three holds
/// two of its partitions.
pub fn create_spread(cluster: &Cluster, via: usize, topic: &str) {
    let all = [0, 1, 2];
    create_topic(&cluster.brokers[via], topic, 6);
    wait_for_topic(cluster, &all, topic, 6);
    wait_spread(cluster, &all, topic, 2);
}

/// The partition directories a broker holds for `topic`.
pub fn partition_dirs(broker: &Broker, topic: &str) -> usize {
    std::fs::read_dir(&broker.data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.rsplit_once('-').is_some_and(|(t, _)| t == topic)
        })
        .count()
}

/// The offset just past the last record `acked` acknowledged in each of `partitions` partitions
/// (0 where none was): where each partition's high watermark must be before a read from the
/// start can find every acknowledged record.
pub fn acknowledged_ends(acked: &[(i32, i64, String)], partitions: i32) -> Vec<i64> {
    let mut ends = vec![0; partitions as usize];
    for (partition, offset, _) in acked {
        let end = &mut ends[*partition as usize];
        *end = (*end).max(offset + 1);
    }
    ends
}

/// Waits at most `limit` until the high watermarks `seen()` answers (one a partition) reach
/// `ends`: a consumer stops at the high watermark, and a newly elected leader's may trail what
/// was acknowledged until its followers fetch again. `Ok` with the high watermarks once they do,
/// `Err` with them if they never did.
pub fn wait_high_watermarks(
    ends: &[i64],
    limit: Duration,
    mut seen: impl FnMut() -> Vec<i64>,
) -> Result<Vec<i64>, Vec<i64>> {
    let deadline = Instant::now() + limit;
    loop {
        let high_watermarks = seen();
        let reached = high_watermarks.len() == ends.len()
            && high_watermarks.iter().zip(ends).all(|(hw, end)| hw >= end);
        if reached {
            return Ok(high_watermarks);
        }
        if Instant::now() >= deadline {
            return Err(high_watermarks);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names of `topic`'s `partition`'s segment files on `broker`, in offset order (they are
/// named by base offset, zero-padded to 20 digits); none where it holds no such partition.
pub fn segment_names(broker: &Broker, topic: &str, partition: i32) -> Vec<String> {
    let dir = broker.data_dir.join(format!("{topic}-{partition}"));
    let mut segments: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    name.strip_suffix(".log").is_some_and(|base| {
                        base.len() == 20 && base.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    segments.sort();
    segments
}

/// The total size of a partition's segment files on `broker`: its log end, in bytes.
pub fn log_size(broker: &Broker, topic: &str, partition: i32) -> u64 {
    let dir = broker.data_dir.join(format!("{topic}-{partition}"));
    segment_names(broker, topic, partition)
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|m| m.len())
        .sum()
}

/// A partition as `broker` stores it: its segment names and their bytes concatenated (where
/// each replica rolled its segments does not matter).
pub fn partition_log(broker: &Broker, topic: &str, partition: i32) -> (Vec<String>, Vec<u8>) {
    let dir = broker.data_dir.join(format!("{topic}-{partition}"));
    let segments = segment_names(broker, topic, partition);
    let mut bytes = Vec::new();
    for name in &segments {
        bytes.extend(std::fs::read(dir.join(name)).unwrap_or_default());
    }
    (segments, bytes)
}
