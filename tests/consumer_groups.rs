//! Consumer groups with librdkafka (through the rdkafka crate) against the real broker, with 1
//! and 2 shards: three members sharing a topic under the range, roundrobin and cooperative-sticky
//! assignors while one leaves and another joins (commit sync, async and auto), resuming from
//! committed offsets across kill -9 and SIGTERM restarts, static membership, DeleteGroups and
//! DescribeGroups/ListGroups, and commits for partitions that do not exist.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consumer::BoundedClose;
use common::deliveries::Deliveries;
use common::{Broker, SHARD_COUNTS};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Broker settings for every test here: no initial rebalance delay, so groups form at once.
const GROUP_SETTINGS: &[&str] = &["group.initial.rebalance.delay.ms=0"];

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap()
}

fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin(broker).create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

/// The last lines of the broker's log, for assertion messages.
fn log_tail(broker: &Broker) -> String {
    let log = broker.log();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!(
        "broker log ({}), last lines:\n{}",
        broker.data_dir.join("broker.log").display(),
        lines[from..].join("\n")
    )
}

fn producer(broker: &Broker) -> (ThreadedProducer<Deliveries>, Deliveries) {
    let deliveries = Deliveries::default();
    let producer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "2")
        .create_with_context(deliveries.clone())
        .unwrap();
    (producer, deliveries)
}

/// Writes `r-{i}` for every i in `range` to partition i % partitions; returns what was acked.
fn produce_values(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    range: std::ops::Range<usize>,
) -> Vec<(i32, i64, String)> {
    let (producer, deliveries) = producer(broker);
    let n = range.len();
    for i in range {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(i as i32 % partitions)
                    .key(&format!("k{i}"))
                    .payload(&format!("r-{i}")),
            )
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    assert!(
        deliveries.failed.lock().unwrap().is_empty(),
        "{:?}",
        deliveries.failed.lock().unwrap()
    );
    let acked = deliveries.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), n);
    acked
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

/// What a group member's callbacks saw.
#[derive(Clone, Default)]
struct GroupEvents {
    /// Commit the consumed positions synchronously when partitions are revoked.
    commit_on_revoke: bool,
    /// The member uses the cooperative-sticky assignor: rebalances add and remove partitions
    /// incrementally instead of replacing the whole assignment.
    cooperative: bool,
    /// (when, "assign" | "revoke" | "error", partitions)
    rebalances: Shared<(Instant, String, Vec<i32>)>,
    /// Failed commits (other than "nothing to commit").
    commit_errors: Arc<Mutex<Vec<String>>>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    parts.sort_unstable();
    parts
}

impl GroupEvents {
    fn rebalance_count(&self) -> usize {
        self.rebalances.lock().unwrap().len()
    }

    fn rebalance_log(&self) -> Vec<(String, Vec<i32>)> {
        self.rebalances
            .lock()
            .unwrap()
            .iter()
            .map(|(_, kind, parts)| (kind.clone(), parts.clone()))
            .collect()
    }
}

impl ClientContext for GroupEvents {}

impl ConsumerContext for GroupEvents {
    /// rdkafka's own `rebalance` asks librdkafka for the group's rebalance protocol, a request
    /// to librdkafka's main thread that can deadlock when the callback runs while the consumer
    /// is being dropped (seen as a hung test). The protocol is known here: no request needed.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        // A rebalance event can still be queued when `close` has already terminated the
        // consumer's group handling; librdkafka then drops an (un)assign request unanswered
        // (`rd_kafka_cgrp_op_serve` on a terminated group) and the call waits forever, which hung
        // a consumer being dropped. A closed consumer has nothing left to assign or revoke.
        if consumer.closed() {
            return;
        }
        let applied = match (assign, self.cooperative) {
            (true, true) => consumer.incremental_assign(tpl),
            (true, false) => consumer.assign(tpl),
            (false, true) => consumer.incremental_unassign(tpl),
            (false, false) => consumer.unassign(),
        };
        if let Err(e) = applied {
            self.commit_errors
                .lock()
                .unwrap()
                .push(format!("applying a rebalance: {e}"));
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let entry = match rebalance {
            Rebalance::Assign(tpl) => ("assign".to_string(), partitions_of(tpl)),
            Rebalance::Revoke(tpl) => {
                if self.commit_on_revoke {
                    match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                        Err(e) => self
                            .commit_errors
                            .lock()
                            .unwrap()
                            .push(format!("commit on revoke: {e}")),
                    }
                }
                ("revoke".to_string(), partitions_of(tpl))
            }
            Rebalance::Error(e) => (format!("error {e}"), vec![]),
        };
        self.rebalances
            .lock()
            .unwrap()
            .push((Instant::now(), entry.0, entry.1));
    }

    /// Served for auto-commits (manual commits report through their return value).
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed: Vec<String> = offsets
            .elements()
            .iter()
            .filter_map(|e| {
                e.error()
                    .err()
                    .map(|err| format!("{}/{}: {err}", e.topic(), e.partition()))
            })
            .collect();
        if !failed.is_empty() {
            self.commit_errors
                .lock()
                .unwrap()
                .push(format!("auto-commit partitions: {failed:?}"));
        }
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self
                .commit_errors
                .lock()
                .unwrap()
                .push(format!("auto-commit: {e}")),
        }
    }
}

/// A group member with test-friendly timeouts: earliest reset (so a lost commit shows up as
/// re-reading from the start), manual commits unless `settings` say otherwise.
fn group_consumer(
    broker: &Broker,
    group: &str,
    settings: &[(&str, &str)],
    events: GroupEvents,
) -> BoundedClose<GroupEvents> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    BoundedClose::new(config.create_with_context(events).unwrap())
}

fn assigned<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Vec<i32> {
    partitions_of(&consumer.assignment().unwrap())
}

/// The group's committed offsets for `topic`, read by a client that does not join the group.
fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let consumer = group_consumer(broker, group, &[], GroupEvents::default());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
    (0..partitions)
        .map(|p| got.find_partition(topic, p).unwrap().offset())
        .collect()
}

fn high_watermarks(broker: &Broker, topic: &str, partitions: i32) -> Vec<Offset> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| Offset::Offset(consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap().1))
        .collect()
}

/// A consumed record: (partition, offset, value).
type Record = (i32, i64, String);

/// Polls until `n` records arrived, and not one more.
fn take<C: ConsumerContext>(consumer: &BaseConsumer<C>, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(e)) => eprintln!("consumer error (continuing): {e}"),
            None => {}
        }
    }
    out
}

/// Polls until `n` records arrived, then one second more to catch anything beyond them.
fn drain<C: ConsumerContext>(consumer: &BaseConsumer<C>, n: usize) -> Vec<Record> {
    let mut out = take(consumer, n);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// a. Three members share a topic while one leaves and another joins.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Commits {
    /// commit_consumer_state(Sync) after processing (and on revoke): no duplicates allowed.
    Sync,
    /// commit_consumer_state(Async) after processing: duplicates allowed, no loss.
    Async,
    /// enable.auto.commit=true every 100 ms: duplicates allowed, no loss.
    Auto,
}

struct Member {
    name: String,
    consumer: BoundedClose<GroupEvents>,
    events: GroupEvents,
    mode: Commits,
    uncommitted: usize,
    last_commit: Instant,
    poll_errors: Vec<String>,
}

impl Member {
    fn join(
        broker: &Broker,
        group: &str,
        topic: &str,
        strategy: &str,
        mode: Commits,
        name: &str,
    ) -> Member {
        let mut settings = vec![
            ("partition.assignment.strategy", strategy),
            ("client.id", name),
        ];
        if mode == Commits::Auto {
            settings.push(("enable.auto.commit", "true"));
            settings.push(("auto.commit.interval.ms", "100"));
        }
        let events = GroupEvents {
            commit_on_revoke: mode == Commits::Sync,
            cooperative: strategy == "cooperative-sticky",
            ..GroupEvents::default()
        };
        let consumer = group_consumer(broker, group, &settings, events.clone());
        consumer.subscribe(&[topic]).unwrap();
        Member {
            name: name.to_string(),
            consumer,
            events,
            mode,
            uncommitted: 0,
            last_commit: Instant::now(),
            poll_errors: Vec::new(),
        }
    }

    /// Serves callbacks, takes what has arrived (value -> members that consumed it) and
    /// commits as its mode says.
    fn poll(&mut self, consumed: &mut HashMap<String, Vec<String>>) {
        let mut timeout = Duration::from_millis(5);
        for _ in 0..500 {
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => {
                    let value =
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    consumed.entry(value).or_default().push(self.name.clone());
                    self.uncommitted += 1;
                    timeout = Duration::ZERO;
                }
                Some(Err(e)) => self.poll_errors.push(e.to_string()),
                None => break,
            }
        }
        if self.uncommitted == 0
            || (self.uncommitted < 100 && self.last_commit.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        let result = match self.mode {
            Commits::Auto => Ok(()),
            Commits::Sync => self.consumer.commit_consumer_state(CommitMode::Sync),
            Commits::Async => self.consumer.commit_consumer_state(CommitMode::Async),
        };
        self.last_commit = Instant::now();
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                self.uncommitted = 0
            }
            // Failed (e.g. REBALANCE_IN_PROGRESS while the group completes a rebalance): kept
            // as uncommitted, so the next poll tries again.
            Err(e) => self
                .events
                .commit_errors
                .lock()
                .unwrap()
                .push(format!("{:?} commit: {e}", self.mode)),
        }
    }

    /// The final commit before shutting down (sync, whatever the mode; auto-commit does its
    /// own).
    fn commit_before_shutdown(&self) {
        if self.mode == Commits::Auto {
            return;
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self
                .events
                .commit_errors
                .lock()
                .unwrap()
                .push(format!("final commit: {e}")),
        }
    }

    fn partitions(&self) -> Vec<i32> {
        assigned(&self.consumer)
    }

    /// Closes the consumer (revoke, final commit, LeaveGroup) as dropping it would, but keeps
    /// the records that polling hands out meanwhile: librdkafka stores their offsets, so a
    /// commit during the close covers them, and dropping them unseen would count as loss.
    fn close(self, consumed: &mut HashMap<String, Vec<String>>) {
        self.consumer.close_queue().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while !self.consumer.closed() {
            assert!(Instant::now() < deadline, "{} did not close", self.name);
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                consumed.entry(value).or_default().push(self.name.clone());
            }
        }
    }
}

/// The members' assignments are disjoint and cover `0..partitions`; each member holds one or
/// more partitions when `everyone` is set.
fn covers(members: &[Member], partitions: i32, everyone: bool) -> bool {
    let all: Vec<Vec<i32>> = members.iter().map(|m| m.partitions()).collect();
    let union: BTreeSet<i32> = all.iter().flatten().copied().collect();
    let total: usize = all.iter().map(|a| a.len()).sum();
    union == (0..partitions).collect::<BTreeSet<i32>>()
        && total == partitions as usize
        && (!everyone || all.iter().all(|a| !a.is_empty()))
}

fn describe(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            format!(
                "{}: assigned {:?}, positions {:?}, rebalances {:?}, commit errors {:?}, poll \
                 errors {:?}",
                m.name,
                m.partitions(),
                m.consumer
                    .position()
                    .map(|tpl| tpl
                        .elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect::<Vec<_>>())
                    .unwrap_or_default(),
                m.events.rebalance_log(),
                m.events.commit_errors.lock().unwrap(),
                m.poll_errors
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls every member until the assignment is complete and spread over all of them.
fn settle(
    broker: &Broker,
    members: &mut [Member],
    consumed: &mut HashMap<String, Vec<String>>,
    partitions: i32,
    what: &str,
) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    loop {
        for m in members.iter_mut() {
            m.poll(consumed);
        }
        if covers(members, partitions, true) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the group never settled\n{}\n{}",
            describe(members),
            log_tail(broker)
        );
    }
}

fn group_shares_a_topic(strategy: &str, mode: Commits) {
    for cores in SHARD_COUNTS {
        let started = Instant::now();
        let broker = Broker::start(&format!("group-{strategy}"), cores, GROUP_SETTINGS);
        let topic = "work";
        let partitions = 6;
        create_topic(&broker, topic, partitions);
        let group = format!("workers-{strategy}");
        let mut members: Vec<Member> = (0..3)
            .map(|i| Member::join(&broker, &group, topic, strategy, mode, &format!("m{i}")))
            .collect();
        // value -> the members that consumed it
        let mut consumed: HashMap<String, Vec<String>> = HashMap::new();
        let formed = settle(
            &broker,
            &mut members,
            &mut consumed,
            partitions,
            "three members",
        );

        let (producer, deliveries) = producer(&broker);
        let n = 3000;
        let mut produced = 0;
        let mut leave: Option<(Instant, Duration)> = None;
        let mut rebalanced: Option<Duration> = None;
        let mut joined = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Keyed records, a little ahead of consumption, so that the leave and the join
            // happen mid-stream: until the member that joins holds partitions, no more than a
            // few hundred beyond the point where it joins.
            let newcomer_assigned = joined && !members.last().unwrap().partitions().is_empty();
            let cap = match (leave.is_some(), newcomer_assigned) {
                (false, _) => n / 3 + 300,
                (true, false) => 2 * n / 3 + 300,
                (true, true) => n,
            };
            while produced < cap.min(consumed.len() + 500) {
                let (key, value) = (format!("key-{}", produced % 97), format!("v-{produced}"));
                let record = BaseRecord::to(topic).key(&key).payload(&value);
                match producer.send(record) {
                    Ok(()) => produced += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                    Err((e, _)) => panic!("send: {e}"),
                }
            }
            for m in members.iter_mut() {
                m.poll(&mut consumed);
            }
            if leave.is_none() && consumed.len() >= n / 3 {
                // A member closes (LeaveGroup); the others take over its partitions.
                let leaver = members.remove(0);
                let at = Instant::now();
                leaver.close(&mut consumed);
                leave = Some((at, at.elapsed()));
            }
            if let (Some((at, close)), None) = (leave, rebalanced) {
                if covers(&members, partitions, false) {
                    let took = at.elapsed();
                    rebalanced = Some(took);
                    eprintln!(
                        "group-rebalance-after-leave: strategy={strategy} commits={mode:?} \
                         cores={cores}: {} ms (the leaving member's close took {} ms)",
                        took.as_millis(),
                        close.as_millis()
                    );
                }
            }
            if rebalanced.is_some() && !joined && consumed.len() >= 2 * n / 3 {
                members.push(Member::join(&broker, &group, topic, strategy, mode, "m3"));
                joined = true;
            }
            let acked = deliveries.acked.lock().unwrap().clone();
            if joined && acked.len() == n && acked.iter().all(|(_, _, v)| consumed.contains_key(v))
            {
                break;
            }
            assert!(
                deliveries.failed.lock().unwrap().is_empty(),
                "{:?}",
                deliveries.failed.lock().unwrap()
            );
            if Instant::now() > deadline {
                // Which records never arrived: per partition, their offsets.
                let mut missing: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
                for (p, offset, v) in &acked {
                    if !consumed.contains_key(v) {
                        missing.entry(*p).or_default().push(*offset);
                    }
                }
                let missing: BTreeMap<i32, String> = missing
                    .into_iter()
                    .map(|(p, mut o)| {
                        o.sort_unstable();
                        (
                            p,
                            format!("{} records, offsets {}..={}", o.len(), o[0], o[o.len() - 1]),
                        )
                    })
                    .collect();
                panic!(
                    "strategy={strategy} cores={cores}: produced {produced}, acked {}, \
                     consumed {} distinct; left: {leave:?}, rebalanced: {rebalanced:?}, joined: \
                     {joined}\nmissing: {missing:?}\ncommitted: {:?}\nends: {:?}\n{}\n{}",
                    acked.len(),
                    consumed.len(),
                    committed(&broker, &group, topic, partitions),
                    high_watermarks(&broker, topic, partitions),
                    describe(&members),
                    log_tail(&broker)
                );
            }
        }
        // The member that joined got its share.
        settle(
            &broker,
            &mut members,
            &mut consumed,
            partitions,
            "after the join",
        );
        // Committing before shutdown, the group's committed offsets reach the end of every
        // partition.
        let ends = high_watermarks(&broker, topic, partitions);
        let deadline = Instant::now() + TIMEOUT;
        let mut last_check = Instant::now();
        loop {
            for m in members.iter_mut() {
                m.poll(&mut consumed);
            }
            if last_check.elapsed() > Duration::from_millis(300) {
                last_check = Instant::now();
                for m in &members {
                    m.commit_before_shutdown();
                }
                let now = committed(&broker, &group, topic, partitions);
                if now == ends {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "strategy={strategy} cores={cores}: committed {now:?}, ends {ends:?}\n{}\n{}",
                    describe(&members),
                    log_tail(&broker)
                );
            }
        }
        let summary = describe(&members);
        drop(members);

        let acked = deliveries.acked.lock().unwrap().clone();
        let missing: Vec<&String> = acked
            .iter()
            .map(|(_, _, v)| v)
            .filter(|v| !consumed.contains_key(*v))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        let duplicates: Vec<(&String, &Vec<String>)> =
            consumed.iter().filter(|(_, by)| by.len() > 1).collect();
        let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
        for by in consumed.values() {
            for name in by {
                *per_member.entry(name.as_str()).or_default() += 1;
            }
        }
        eprintln!(
            "group {strategy} commits={mode:?} cores={cores}: {n} records, formed in {} ms, \
             {} duplicates, per member {per_member:?}, total {} ms",
            formed.as_millis(),
            duplicates.len(),
            started.elapsed().as_millis()
        );
        assert_eq!(consumed.len(), n, "only produced values were consumed");
        if mode == Commits::Sync {
            let mut sample: Vec<_> = duplicates.iter().take(10).collect();
            sample.sort();
            assert!(
                duplicates.is_empty(),
                "strategy={strategy} cores={cores}: committing synchronously after processing \
                 and on revoke, no record may be consumed twice; {} were, e.g. {sample:?}\n{summary}",
                duplicates.len()
            );
        }
        assert!(
            per_member.len() >= 2,
            "the work was spread over the members: {per_member:?}"
        );
        assert!(
            per_member.contains_key("m3"),
            "the member that joined mid-stream consumed records: {per_member:?}"
        );
    }
}

#[test]
fn group_with_range_assignor_and_sync_commits_consumes_everything_once() {
    group_shares_a_topic("range", Commits::Sync);
}

#[test]
fn group_with_roundrobin_assignor_and_async_commits_loses_nothing() {
    group_shares_a_topic("roundrobin", Commits::Async);
}

#[test]
fn group_with_cooperative_sticky_assignor_and_auto_commit_loses_nothing() {
    group_shares_a_topic("cooperative-sticky", Commits::Auto);
}

// ---------------------------------------------------------------------------------------------
// b. Committed offsets: a new member resumes from them, also after kill -9 and SIGTERM.

/// A new member of `group` reads exactly `expected` (order aside), commits and closes.
fn resume_and_check(broker: &Broker, group: &str, topic: &str, expected: &[Record], what: &str) {
    let consumer = group_consumer(broker, group, &[], GroupEvents::default());
    consumer.subscribe(&[topic]).unwrap();
    let mut got = drain(&consumer, expected.len());
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(consumer);
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    if got != want {
        let first_unexpected = got.iter().find(|r| !want.contains(r));
        let first_missing = want.iter().find(|r| !got.contains(r));
        panic!(
            "{what}: consumed {} records, expected {} (first unexpected {first_unexpected:?}, \
             first missing {first_missing:?})\n{}",
            got.len(),
            want.len(),
            log_tail(broker)
        );
    }
}

#[test]
fn a_new_member_resumes_from_committed_offsets_across_restarts() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start("resume", cores, GROUP_SETTINGS);
        let topic = "resume";
        let partitions = 3;
        create_topic(&broker, topic, partitions);
        let group = "resumers";
        let mut log = produce_values(&broker, topic, partitions, 0..300);

        // Read part of it, commit, close.
        let first = group_consumer(&broker, group, &[], GroupEvents::default());
        first.subscribe(&[topic]).unwrap();
        let read = take(&first, 150);
        first.commit_consumer_state(CommitMode::Sync).unwrap();
        drop(first);
        let mut expected_commit = vec![Offset::Invalid; partitions as usize];
        for (p, offset, _) in &read {
            let slot = &mut expected_commit[*p as usize];
            let next = match *slot {
                Offset::Offset(c) => c.max(offset + 1),
                _ => offset + 1,
            };
            *slot = Offset::Offset(next);
        }
        assert_eq!(
            committed(&broker, group, topic, partitions),
            expected_commit,
            "the committed offsets are the positions after what was read"
        );

        // More records; a new member gets exactly what lies after the committed offsets.
        log.extend(produce_values(&broker, topic, partitions, 300..600));
        let unread: Vec<Record> = log
            .iter()
            .filter(|(p, offset, _)| match expected_commit[*p as usize] {
                Offset::Offset(c) => *offset >= c,
                _ => true,
            })
            .cloned()
            .collect();
        assert_eq!(unread.len(), 450);
        resume_and_check(&broker, group, topic, &unread, "after a member restart");
        let ends = high_watermarks(&broker, topic, partitions);
        assert_eq!(committed(&broker, group, topic, partitions), ends);

        // kill -9: the acknowledged commits survive.
        broker.kill9();
        broker.restart();
        assert_eq!(
            committed(&broker, group, topic, partitions),
            ends,
            "committed offsets after kill -9\n{}",
            log_tail(&broker)
        );
        let fresh = produce_values(&broker, topic, partitions, 600..690);
        resume_and_check(&broker, group, topic, &fresh, "after kill -9");

        // SIGTERM: the same.
        let ends = high_watermarks(&broker, topic, partitions);
        assert!(broker.terminate(), "exit status 0 after SIGTERM");
        broker.restart();
        assert_eq!(
            committed(&broker, group, topic, partitions),
            ends,
            "committed offsets after SIGTERM\n{}",
            log_tail(&broker)
        );
        let fresh = produce_values(&broker, topic, partitions, 690..780);
        resume_and_check(&broker, group, topic, &fresh, "after SIGTERM");
    }
}

// ---------------------------------------------------------------------------------------------
// c. Static membership.

/// A static member: (group.instance.id, consumer, what its callbacks saw).
type StaticMember = (String, BoundedClose<GroupEvents>, GroupEvents);

fn static_member(broker: &Broker, group: &str, topic: &str, id: &str) -> StaticMember {
    let events = GroupEvents::default();
    let consumer = group_consumer(
        broker,
        group,
        &[
            ("group.instance.id", id),
            ("client.id", id),
            ("session.timeout.ms", "10000"),
            ("partition.assignment.strategy", "range"),
        ],
        events.clone(),
    );
    consumer.subscribe(&[topic]).unwrap();
    (id.to_string(), consumer, events)
}

fn poll_members(members: &[StaticMember]) {
    for (_, consumer, _) in members {
        consumer.poll(Duration::from_millis(20));
    }
}

#[test]
fn a_static_member_restarting_within_its_session_timeout_causes_no_rebalance() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("static", cores, GROUP_SETTINGS);
        let topic = "statics";
        create_topic(&broker, topic, 4);
        let group = "static-group";
        // "static-a" joins first, so it leads the group (Kafka: the first member to join).
        let mut members = vec![static_member(&broker, group, topic, "static-a")];
        let deadline = Instant::now() + TIMEOUT;
        while assigned(&members[0].1).is_empty() {
            poll_members(&members);
            assert!(Instant::now() < deadline, "{}", log_tail(&broker));
        }
        members.push(static_member(&broker, group, topic, "static-b"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            poll_members(&members);
            let (pa, pb) = (assigned(&members[0].1), assigned(&members[1].1));
            if pa.len() == 2 && pb.len() == 2 && pa.iter().all(|p| !pb.contains(p)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cores={cores}: a {pa:?}, b {pb:?}; a saw {:?}, b saw {:?}\n{}",
                members[0].2.rebalance_log(),
                members[1].2.rebalance_log(),
                log_tail(&broker)
            );
        }

        // Each in turn (the follower, then the leader) closes, which for a static member sends
        // no LeaveGroup, and comes back with the same group.instance.id well within the
        // session timeout: it gets its partitions back and the other member sees nothing.
        for restarting in ["static-b", "static-a"] {
            let i = members.iter().position(|m| m.0 == restarting).unwrap();
            let before: Vec<Vec<i32>> = members.iter().map(|m| assigned(&m.1)).collect();
            let (other_id, other_seen) = {
                let other = &members[1 - i];
                (other.0.clone(), other.2.rebalance_count())
            };
            let closed = Instant::now();
            drop(members.remove(i));
            members.insert(i, static_member(&broker, group, topic, restarting));
            while assigned(&members[i].1).is_empty() {
                poll_members(&members);
                assert!(
                    closed.elapsed() < Duration::from_secs(8),
                    "cores={cores}: restarted {restarting} got no assignment; it saw {:?}, \
                     {other_id} saw {:?}\n{}",
                    members[i].2.rebalance_log(),
                    members[1 - i].2.rebalance_log(),
                    log_tail(&broker)
                );
            }
            let back_after = closed.elapsed();
            // Watch a little longer: nothing happens to the other member.
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                poll_members(&members);
            }
            eprintln!(
                "static member {restarting} back with partitions {:?} {} ms after close \
                 (cores={cores}); {other_id} saw {:?}",
                assigned(&members[i].1),
                back_after.as_millis(),
                &members[1 - i].2.rebalance_log()[other_seen..]
            );
            assert_eq!(
                members[1 - i].2.rebalance_count(),
                other_seen,
                "cores={cores}: {restarting} restarted; no revoke/assign may reach {other_id}, \
                 which saw {:?}\n{}",
                &members[1 - i].2.rebalance_log()[other_seen..],
                log_tail(&broker)
            );
            let after: Vec<Vec<i32>> = members.iter().map(|m| assigned(&m.1)).collect();
            assert_eq!(
                after, before,
                "{restarting} gets its old partitions back, {other_id} keeps its own"
            );
        }

        // Gone for good: the session timeout removes it and the other takes everything.
        let gone = Instant::now();
        drop(members.remove(0));
        let deadline = gone + Duration::from_secs(30);
        while assigned(&members[0].1) != vec![0, 1, 2, 3] {
            poll_members(&members);
            assert!(
                Instant::now() < deadline,
                "cores={cores}: the remaining member never took over: {:?}; saw {:?}\n{}",
                assigned(&members[0].1),
                members[0].2.rebalance_log(),
                log_tail(&broker)
            );
        }
        let took = gone.elapsed();
        eprintln!(
            "static member expired after {} ms (session.timeout.ms=10000, cores={cores})",
            took.as_millis()
        );
        assert!(
            took >= Duration::from_secs(5),
            "a closed static member stays until its session times out, took {took:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// d. DeleteGroups, ListGroups and DescribeGroups.

#[test]
fn delete_groups_removes_empty_groups_only() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("delete-groups", cores, GROUP_SETTINGS);
        let topic = "del";
        create_topic(&broker, topic, 2);
        produce_values(&broker, topic, 2, 0..10);

        // "idle": consumed, committed, left.
        let idle = group_consumer(&broker, "idle", &[], GroupEvents::default());
        idle.subscribe(&[topic]).unwrap();
        take(&idle, 10);
        idle.commit_consumer_state(CommitMode::Sync).unwrap();
        drop(idle);
        assert_eq!(
            committed(&broker, "idle", topic, 2),
            vec![Offset::Offset(5), Offset::Offset(5)]
        );

        // "busy": a live member.
        let busy = group_consumer(
            &broker,
            "busy",
            &[("partition.assignment.strategy", "range")],
            GroupEvents::default(),
        );
        busy.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while assigned(&busy) != vec![0, 1] {
            busy.poll(Duration::from_millis(20));
            assert!(Instant::now() < deadline, "{}", log_tail(&broker));
        }

        // ListGroups + DescribeGroups.
        let groups = busy.fetch_group_list(None, TIMEOUT).unwrap();
        let names: BTreeSet<&str> = groups.groups().iter().map(|g| g.name()).collect();
        assert!(
            names.contains("busy") && names.contains("idle"),
            "listed: {names:?}"
        );
        let described = busy.fetch_group_list(Some("busy"), TIMEOUT).unwrap();
        let info = described
            .groups()
            .iter()
            .find(|g| g.name() == "busy")
            .expect("busy described");
        assert_eq!(info.state(), "Stable");
        assert_eq!(info.protocol_type(), "consumer");
        assert_eq!(info.protocol(), "range");
        assert_eq!(info.members().len(), 1);
        assert!(
            info.members()[0]
                .assignment()
                .is_some_and(|a| !a.is_empty()),
            "the member's assignment is described"
        );
        let described = busy.fetch_group_list(Some("idle"), TIMEOUT).unwrap();
        let info = described
            .groups()
            .iter()
            .find(|g| g.name() == "idle")
            .expect("idle described");
        assert_eq!(info.state(), "Empty");
        assert!(info.members().is_empty());

        let admin = admin(&broker);
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results =
            block_on(admin.delete_groups(&["idle", "busy", "never-existed"], &opts)).unwrap();
        let by_name: HashMap<String, Option<RDKafkaErrorCode>> = results
            .into_iter()
            .map(|r| match r {
                Ok(name) => (name, None),
                Err((name, code)) => (name, Some(code)),
            })
            .collect();
        assert_eq!(by_name.get("idle"), Some(&None), "{by_name:?}");
        assert_eq!(
            by_name.get("busy"),
            Some(&Some(RDKafkaErrorCode::NonEmptyGroup)),
            "{by_name:?}"
        );
        assert_eq!(
            by_name.get("never-existed"),
            Some(&Some(RDKafkaErrorCode::GroupIdNotFound)),
            "{by_name:?}"
        );

        // The deleted group is gone with its offsets; the busy one is untouched.
        assert_eq!(
            committed(&broker, "idle", topic, 2),
            vec![Offset::Invalid, Offset::Invalid],
            "a deleted group's committed offsets are deleted with it"
        );
        let again = block_on(admin.delete_groups(&["idle"], &opts)).unwrap();
        assert_eq!(
            again,
            vec![Err(("idle".to_string(), RDKafkaErrorCode::GroupIdNotFound))]
        );
        let names: BTreeSet<String> = busy
            .fetch_group_list(None, TIMEOUT)
            .unwrap()
            .groups()
            .iter()
            .map(|g| g.name().to_string())
            .collect();
        assert!(
            !names.contains("idle") && names.contains("busy"),
            "{names:?}"
        );
        busy.poll(Duration::from_millis(100));
        assert_eq!(assigned(&busy), vec![0, 1]);

        // Once its member leaves, "busy" can be deleted too.
        drop(busy);
        let results = block_on(admin.delete_groups(&["busy"], &opts)).unwrap();
        assert_eq!(results, vec![Ok("busy".to_string())]);
    }
}

// ---------------------------------------------------------------------------------------------
// e. Commits for partitions that do not exist.

/// Per-partition commit results: (topic, partition) -> error.
type CommitOutcome = BTreeMap<(String, i32), Option<RDKafkaErrorCode>>;

/// Commits `offsets` synchronously through `rd_kafka_commit_queue`, which, unlike
/// `rd_kafka_commit` (what `Consumer::commit` calls), hands back the per-partition results.
fn commit_with_results<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &TopicPartitionList,
) -> (Option<RDKafkaErrorCode>, CommitOutcome) {
    type Seen = Mutex<Option<(RDKafkaRespErr, Vec<(String, i32, RDKafkaRespErr)>)>>;
    unsafe extern "C" fn on_commit(
        _rk: *mut rdsys::rd_kafka_t,
        err: RDKafkaRespErr,
        offsets: *mut rdsys::rd_kafka_topic_partition_list_t,
        opaque: *mut c_void,
    ) {
        // SAFETY: librdkafka passes back the opaque given below (alive for the whole call) and
        // a valid list of `cnt` elements.
        let seen = unsafe { &*(opaque as *const Seen) };
        let mut parts = Vec::new();
        if !offsets.is_null() {
            let list = unsafe { &*offsets };
            for i in 0..list.cnt.max(0) as usize {
                let e = unsafe { &*list.elems.add(i) };
                let topic = unsafe { CStr::from_ptr(e.topic) }
                    .to_string_lossy()
                    .into_owned();
                parts.push((topic, e.partition, e.err));
            }
        }
        if let Ok(mut slot) = seen.lock() {
            *slot = Some((err, parts));
        }
    }
    let seen: Seen = Mutex::new(None);
    // SAFETY: a live consumer handle and list; a null queue makes the call synchronous, serving
    // the callback before it returns, while `seen` is alive.
    let err = unsafe {
        rdsys::rd_kafka_commit_queue(
            consumer.client().native_ptr(),
            offsets.ptr(),
            std::ptr::null_mut(),
            Some(on_commit),
            &seen as *const Seen as *mut c_void,
        )
    };
    let code = |e: RDKafkaRespErr| match RDKafkaErrorCode::from(e) {
        RDKafkaErrorCode::NoError => None,
        other => Some(other),
    };
    let (cb_err, parts) = seen
        .into_inner()
        .unwrap()
        .expect("the commit callback was served");
    let outcome = parts
        .into_iter()
        .map(|(t, p, e)| ((t, p), code(e)))
        .collect();
    (code(err).or(code(cb_err)), outcome)
}

#[test]
fn committing_unknown_partitions_fails_per_partition_and_the_broker_carries_on() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start("commit-unknown", cores, GROUP_SETTINGS);
        let topic = "known";
        create_topic(&broker, topic, 2);
        produce_values(&broker, topic, 2, 0..10);
        let consumer = group_consumer(&broker, "committer", &[], GroupEvents::default());

        // Only an unknown topic: the commit fails.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("no-such-topic", 0, Offset::Offset(5))
            .unwrap();
        let result = consumer.commit(&tpl, CommitMode::Sync);
        assert_eq!(
            result,
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownTopicOrPartition
            )),
            "{}",
            log_tail(&broker)
        );

        // Known and unknown together: the known partition is committed, the others fail with
        // their own error.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(3))
            .unwrap();
        tpl.find_partition(topic, 0).unwrap().set_metadata("meta-3");
        tpl.add_partition_offset(topic, 7, Offset::Offset(1))
            .unwrap();
        tpl.add_partition_offset("no-such-topic", 1, Offset::Offset(2))
            .unwrap();
        let (error, outcome) = commit_with_results(&consumer, &tpl);
        assert_eq!(
            error,
            Some(RDKafkaErrorCode::UnknownTopicOrPartition),
            "a partial failure is reported"
        );
        // librdkafka copies a partial failure's error onto the partitions that succeeded
        // (rd_kafka_cgrp_update_committed_offsets: "propagate global error to all partitions"),
        // so the known partition's outcome is read back below instead.
        assert_eq!(outcome.len(), 3, "{outcome:?}");
        for unknown in [(topic, 7), ("no-such-topic", 1)] {
            assert_eq!(
                outcome.get(&(unknown.0.to_string(), unknown.1)),
                Some(&Some(RDKafkaErrorCode::UnknownTopicOrPartition)),
                "{outcome:?}\n{}",
                log_tail(&broker)
            );
        }
        let mut query = TopicPartitionList::new();
        query.add_partition(topic, 0);
        query.add_partition(topic, 1);
        let got = consumer.committed_offsets(query, TIMEOUT).unwrap();
        let p0 = got.find_partition(topic, 0).unwrap();
        assert_eq!(p0.offset(), Offset::Offset(3));
        assert_eq!(p0.metadata(), "meta-3", "commit metadata round-trips");
        assert_eq!(
            got.find_partition(topic, 1).unwrap().offset(),
            Offset::Invalid
        );
        drop(consumer);

        // The broker still serves: a group member reads from the committed offset on.
        assert!(broker.is_running(), "{}", log_tail(&broker));
        let member = group_consumer(&broker, "committer", &[], GroupEvents::default());
        member.subscribe(&[topic]).unwrap();
        let mut got: Vec<(i32, i64)> = drain(&member, 7)
            .into_iter()
            .map(|(p, o, _)| (p, o))
            .collect();
        got.sort();
        let want: Vec<(i32, i64)> = (3..5)
            .map(|o| (0, o))
            .chain((0..5).map(|o| (1, o)))
            .collect();
        assert_eq!(got, want);
        drop(member);
        assert!(broker.is_running());
    }
}
