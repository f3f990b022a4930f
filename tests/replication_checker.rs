//! A fault-injection checker for replication: nothing a broker acknowledged to an acks=all
//! producer may be lost, moved or duplicated, whatever happens to the brokers, and the replicas of
//! a partition end up byte-identical.
//!
//! Three brokers (`replica.lag.time.max.ms=4000`, 6 s sessions) carry a topic of three partitions,
//! replication factor 3, `min.insync.replicas=2`. An idempotent acks=all producer writes unique
//! values all along, a transactional producer writes transactions of a few records each and
//! commits three in four of them, aborting the rest (`checker/transactions.rs`), and a
//! read_committed and a read_uncommitted consumer read, while a seeded schedule of faults runs,
//! one at a time with pauses between:
//! kill -9 of a partition leader, of a follower or of the metadata quorum's leader (the active
//! controller; each restarted after a random delay), SIGSTOP of a
//! leader for longer than the broker session then SIGCONT, a clean restart (SIGTERM) of any
//! broker, a leader's network link down past the session (each broker runs in a network
//! namespace of its own, `common::netns`), one direction of a broker's packets dropped
//! (nftables) past the session, a leader's disk filling up (each broker's data on a small tmpfs,
//! `common::tmpfs`: the broker must stop, as Kafka's do when their last log dir fails; it is
//! restarted once the space is back), a leader's client link
//! slowed down (each broker advertises a delaying TCP proxy, `common::proxy`, which clients and
//! the other brokers' fetches go through), with `SLUICE_CHECKER_POWER=on` a power loss of a leader
//! (kill -9, and its disk, a LazyFS mount per broker (`common::lazyfs`), in place of the tmpfs,
//! drops every write it had not synced), and now and then kill -9 or a power loss of all three
//! at once. At most one
//! broker is down or cut off at a time except in that last fault, so two of three replicas stay
//! in sync and producing goes on.
//!
//! Afterwards every broker runs again, every partition gets its leader and its ISR of three back,
//! the producers flush and settle, and the checker reads each partition from its start, as
//! read_uncommitted (every record stored) and read_committed (what applications see):
//! (a) every acknowledged (partition, offset, value) is stored exactly there, whatever became of
//!     its transaction;
//! (b) no value is stored at two offsets;
//! (c) nothing is stored that was never produced;
//! (d) once every replica's log end matches the others' and the brokers stopped cleanly, each
//!     partition's replicas hold the same segment bytes;
//! (e) every record a consumer read while the faults ran is stored at the offset it read it at
//!     (no consumer is served what a failover then takes back);
//! (f) those consumers skipped no record their isolation level shows and never lost their
//!     position (OFFSET_OUT_OF_RANGE, or a truncation below it, with no reset allowed);
//! (g) read_committed shows every record of each committed transaction and none of an aborted
//!     one, during the faults and after; a transaction whose end its producer could not learn is
//!     an anomaly.
//!
//! Environment:
//! - `SLUICE_CHECKER_SEED` (decimal or 0x-hex): the schedule's seed; the default is fixed and
//!   printed first, so any failing run can be replayed with the seed it prints.
//! - `SLUICE_CHECKER_SECONDS`: how long faults are injected (default `DEFAULT_SECONDS`, which
//!   keeps the test within a few minutes on a busy 2-core machine). `scripts/replication-checker`
//!   runs it for hours over several seeds.
//! - `SLUICE_CHECKER_FAULTS=all-kill,leader-kill`: draw only these kinds of fault.
//! - `SLUICE_CHECKER_PROXIES=off`: no delaying TCP proxy in front of each broker, and so no
//!   slow-link faults.
//! - `SLUICE_CHECKER_PARTITIONS=off`: no network faults, for a machine where the test cannot
//!   make network namespaces (it must run as root, with iproute2 and nftables).
//! - `SLUICE_CHECKER_POWER=on`: power faults too, each broker on a LazyFS mount in place of its
//!   tmpfs, so no full-disk faults (off by default: they need the FUSE device, which a container
//!   may lack). Needs root, FUSE 3, and what `scripts/build-lazyfs` needs to build LazyFS.
//! - `SLUICE_CHECKER_CONTROL=unclean`: run the control scenario instead (unclean leader election
//!   with `min.insync.replicas=1`: both followers' fetches are cut by nftables while their
//!   quorum traffic flows, so acknowledged records are lost); the checker must then fail. It
//!   always needs network namespaces. `SLUICE_CHECKER_CONTROL=power`: the second control (a
//!   topic acknowledged from the page cache, `flush.messages`, and all three brokers losing
//!   power), which must fail too; `the_checker_sees_loss_when_unsynced_brokers_lose_power`
//!   passes only when it does (ignored in the suite: run by `scripts/replication-checker
//!   --power`). `the_checker_sees_loss_under_unclean_election` runs that control and passes only
//!   when the checker reports the loss and the consumer's reads of what was lost.
//!
//! On failure the test prints the seed, the faults that ran (with their times), what the
//! checker found, where the delivery-report log is, and the tail of every broker's log.

mod common;
#[path = "checker/transactions.rs"]
mod transactions;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{
    acknowledged_ends, create_topic_with, fully_in_sync, index_of, metadata_of, partition_log,
    wait_for_topic, wait_high_watermarks, Cluster, Hosting, PartitionSeen, LOG_LINES,
    QUORUM_WAIT_MAX, REPLICA_LAG,
};
use common::lazyfs::LazyFs;
use common::netns::{Direction, Network};
use common::tmpfs::Tmpfs;
use common::{produce_one, try_connect};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use transactions::{Ledger, Transactions};

/// The seed a run without `SLUICE_CHECKER_SEED` uses.
const DEFAULT_SEED: u64 = 0x5EED_C0DE_2026;
/// Seconds of faults a run without `SLUICE_CHECKER_SECONDS` injects.
const DEFAULT_SECONDS: u64 = 75;

/// Each broker's disk, when it is a tmpfs the full-disk fault fills: an hour of faults writes
/// about 110 MiB to each.
const SMALL_DISK_MIB: usize = 512;

const TOPIC: &str = "checked";
const PARTITIONS: i32 = 3;
/// A topic of one partition, three replicas, that the full-disk fault writes to (one record at a
/// time, acks=1) so that the filled broker meets its full disk even when no other traffic
/// reaches it (the producers may be waiting out an earlier fault). Never checked.
const DISK_FILLING_TOPIC: &str = "disk-filling";

/// `broker.session.timeout.ms` as `Cluster::start_with` sets it: a broker silent this long is
/// fenced. A SIGSTOP fault lasts longer than this, so that the paused leader is replaced.
const SESSION: Duration = Duration::from_millis(6000);

/// How long the producer keeps retrying a record: longer than any fault (the longest is all
/// three brokers down and restarting), so no delivery should fail.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Limit on the wait for the cluster to heal between faults; a cluster that does not is noted in
/// the schedule (the final heal, with a longer limit, is what fails the run).
const SETTLE_MAX: Duration = QUORUM_WAIT_MAX;
/// Limit on a clean stop (SIGTERM): a broker still running after it is a hang.
const STOP_MAX: Duration = QUORUM_WAIT_MAX;

#[test]
fn acknowledged_records_survive_random_faults() {
    let seed = seed_from_env();
    let control = std::env::var("SLUICE_CHECKER_CONTROL").unwrap_or_default();
    let seconds = seconds_from_env();
    let outcome = match control.as_str() {
        "" => Checker::run(seed, Scenario::RandomFaults { seconds }),
        "unclean" => Checker::run(seed, Scenario::UncleanElection),
        "power" => Checker::run(seed, Scenario::PowerLossWithoutFsync),
        other => panic!("SLUICE_CHECKER_CONTROL={other}: the controls are `unclean` and `power`"),
    };
    outcome.assert_clean();
}

/// The control: with unclean leader election allowed and `min.insync.replicas=1`, a leader that
/// acknowledges records alone and is then killed is replaced by a follower that never had them.
/// The checker must see that loss, and the consumer that read those records (rule (e)); this test fails if it does not (or if the scenario could not
/// be set up: then it proves nothing).
#[test]
fn the_checker_sees_loss_under_unclean_election() {
    let outcome = Checker::run(seed_from_env(), Scenario::UncleanElection);
    assert!(
        !outcome.findings.lost.is_empty(),
        "the control lost no acknowledged record, so it does not show that the checker sees \
         loss{}",
        outcome.report()
    );
    assert!(
        !outcome.findings.uncommitted_reads.is_empty(),
        "the control's consumer read nothing that was then taken back, so it does not show \
         that the checker sees such reads{}",
        outcome.report()
    );
    eprintln!(
        "the control lost {} acknowledged records, as it should: the checker sees loss",
        outcome.findings.lost.len()
    );
    outcome.discard();
}

/// The second control: a topic acknowledged from the page cache (`flush.messages`, as Kafka
/// acknowledges by default) on all three brokers, which then lose power together. The records
/// they acknowledged are gone; the checker must say so. Ignored in the main run because it needs
/// the FUSE device (`/dev/fuse`), which a container may lack: `scripts/test` runs it where the
/// device exists, and so does `scripts/replication-checker --power`.
#[test]
#[ignore = "needs /dev/fuse: scripts/test runs it where the device exists"]
fn the_checker_sees_loss_when_unsynced_brokers_lose_power() {
    let outcome = Checker::run(seed_from_env(), Scenario::PowerLossWithoutFsync);
    assert!(
        !outcome.findings.lost.is_empty(),
        "the power control lost no acknowledged record, so it does not show that power \
         losses are real{}",
        outcome.report()
    );
    eprintln!(
        "the power control lost {} acknowledged records, as it should",
        outcome.findings.lost.len()
    );
    outcome.discard();
}

/// The brokers' network namespaces, for the faults that cut links: made when the test runs as
/// root with `ip` and `nft` (as CI does); elsewhere the run panics unless
/// `SLUICE_CHECKER_PARTITIONS=off` says to go without those faults.
fn network_for_partitions() -> Option<Network> {
    let off = std::env::var("SLUICE_CHECKER_PARTITIONS").is_ok_and(|v| v == "off");
    if off {
        eprintln!("SLUICE_CHECKER_PARTITIONS=off: no faults that cut the network");
        return None;
    }
    match Network::create(3) {
        Ok(network) => Some(network),
        Err(why) => panic!(
            "the checker's network faults need namespaces: {why} (run as root with iproute2 and \
             nftables, or set SLUICE_CHECKER_PARTITIONS=off to go without them)"
        ),
    }
}

/// The control's namespaces: it cuts replication but not the metadata quorum, which only a
/// network rule can do, so it needs them (and root) wherever it runs.
fn network_for_control() -> Network {
    Network::create(3).unwrap_or_else(|why| {
        panic!(
            "the control cuts followers off their leader in network namespaces: {why} (run as \
             root with iproute2 and nftables)"
        )
    })
}

/// Each broker's disk for the random faults. With `SLUICE_CHECKER_POWER=on`, a LazyFS mount,
/// for the faults that cut the power (root, `/dev/fuse`, and LazyFS's build dependencies).
/// Otherwise a small tmpfs, for the full-disk fault, where the test may mount one (root).
fn disks_for_faults() -> Disks {
    if std::env::var("SLUICE_CHECKER_POWER").is_ok_and(|v| v == "on") {
        return Disks::LazyFs(mount_lazyfs().unwrap_or_else(|why| {
            panic!("SLUICE_CHECKER_POWER=on: the power faults need LazyFS: {why} (root, FUSE)")
        }));
    }
    let small: Result<Vec<Tmpfs>, String> = (1..=3)
        .map(|node| Tmpfs::named(&format!("broker-{node}"), SMALL_DISK_MIB))
        .collect();
    match small {
        Ok(disks) => Disks::Small(disks),
        Err(why) => {
            eprintln!("no full-disk faults: {why}");
            Disks::Plain
        }
    }
}

/// The power control's disks: it cannot run without them.
fn disks_for_control() -> Disks {
    Disks::LazyFs(mount_lazyfs().unwrap_or_else(|why| {
        panic!("the power control needs LazyFS: {why} (run as root with FUSE)")
    }))
}

fn mount_lazyfs() -> Result<Vec<LazyFs>, String> {
    (1..=3)
        .map(|node| LazyFs::mount(&format!("broker-{node}")))
        .collect()
}

/// What the brokers keep their data on.
enum Disks {
    /// Directories of the machine's disk.
    Plain,
    /// A small tmpfs each, which the full-disk fault fills.
    Small(Vec<Tmpfs>),
    /// A LazyFS mount each, which the power faults cut.
    LazyFs(Vec<LazyFs>),
}

impl Disks {
    /// Each broker's data dir, unless they are plain directories (the cluster makes those).
    fn paths(&self) -> Option<Vec<PathBuf>> {
        match self {
            Disks::Plain => None,
            Disks::Small(disks) => Some(disks.iter().map(Tmpfs::data).collect()),
            Disks::LazyFs(disks) => Some(disks.iter().map(LazyFs::path).collect()),
        }
    }

    /// Whether the faults that need these disks can be drawn.
    fn allow(&self, fault: Fault) -> bool {
        match self {
            Disks::Plain => !fault.cuts_the_power() && !fault.fills_a_disk(),
            Disks::Small(_) => !fault.cuts_the_power(),
            Disks::LazyFs(_) => !fault.fills_a_disk(),
        }
    }
}

/// Whether each broker advertises a `DelayProxy`, for the slow-link fault: unless
/// `SLUICE_CHECKER_PROXIES=off`.
fn proxies_from_env() -> bool {
    std::env::var("SLUICE_CHECKER_PROXIES").map_or(true, |v| v != "off")
}

/// `SLUICE_CHECKER_FAULTS`: the only fault kinds to draw (comma-separated names, as the
/// summary prints them), to replay one kind's trouble; all by default.
fn fault_kinds_from_env() -> Option<Vec<&'static str>> {
    let text = std::env::var("SLUICE_CHECKER_FAULTS").ok()?;
    let names: Vec<&str> = text.split(',').map(str::trim).collect();
    let kinds: Vec<&'static str> = Fault::WEIGHTS
        .iter()
        .map(|(fault, _)| fault.name())
        .filter(|name| names.contains(name))
        .collect();
    assert!(
        !kinds.is_empty(),
        "SLUICE_CHECKER_FAULTS={text} names no fault kind"
    );
    Some(kinds)
}

fn seed_from_env() -> u64 {
    match std::env::var("SLUICE_CHECKER_SEED") {
        Ok(text) => parse_number(&text)
            .unwrap_or_else(|| panic!("SLUICE_CHECKER_SEED={text} is not a number")),
        Err(_) => DEFAULT_SEED,
    }
}

fn seconds_from_env() -> u64 {
    match std::env::var("SLUICE_CHECKER_SECONDS") {
        Ok(text) => parse_number(&text)
            .unwrap_or_else(|| panic!("SLUICE_CHECKER_SECONDS={text} is not a number")),
        Err(_) => DEFAULT_SECONDS,
    }
}

/// A decimal or 0x-prefixed hexadecimal number.
fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// SplitMix64: a tiny, well-mixed generator, so a seed alone decides the schedule (no crate
/// needed, and the same seed gives the same faults on every machine).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is negligible for the small `n` used here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `low_ms` and `high_ms` milliseconds.
    fn millis(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(low_ms + self.below(high_ms - low_ms + 1))
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// The kinds of fault, with how often each is drawn (out of the weights' sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    LeaderKill,
    FollowerKill,
    /// The metadata quorum's leader (the active controller) is killed -9, then restarted.
    ControllerKill,
    LeaderPause,
    CleanRestart,
    AllKill,
    /// A partition leader's network link goes down past the broker session, then comes back.
    Isolate,
    /// One direction of a broker's traffic is dropped past the broker session (its TCP
    /// connections hang half open), then flows again.
    HalfOpen,
    /// A partition leader loses power: killed -9 and its disk (a `LazyFs`) drops every write it
    /// had not synced; restarted after a while.
    PowerLoss,
    /// All three lose power at once.
    AllPowerLoss,
    /// A partition leader's disk fills up (a tmpfs per broker): its next write fails and it
    /// stops, as Kafka's brokers stop when their last log dir fails; the space comes back after
    /// a while and it is restarted.
    FullDisk,
    /// Everything to and from a partition leader's client listener (clients, and the other
    /// brokers' fetches and markers) is held back by up to 1.5 s for a few seconds, by the
    /// `DelayProxy` it advertises.
    SlowLink,
}

impl Fault {
    const WEIGHTS: [(Fault, u64); 12] = [
        (Fault::LeaderKill, 3),
        (Fault::FollowerKill, 2),
        (Fault::ControllerKill, 2),
        (Fault::LeaderPause, 2),
        (Fault::CleanRestart, 2),
        (Fault::AllKill, 1),
        (Fault::Isolate, 2),
        (Fault::HalfOpen, 1),
        (Fault::PowerLoss, 2),
        (Fault::AllPowerLoss, 1),
        (Fault::FullDisk, 2),
        (Fault::SlowLink, 2),
    ];

    /// A fault drawn by weight among those `possible` says the run can inject.
    fn draw(rng: &mut Rng, possible: impl Fn(Fault) -> bool) -> Fault {
        let possible: Vec<(Fault, u64)> = Fault::WEIGHTS
            .into_iter()
            .filter(|(fault, _)| possible(*fault))
            .collect();
        let total: u64 = possible.iter().map(|(_, w)| w).sum();
        let mut at = rng.below(total);
        for (fault, weight) in possible {
            if at < weight {
                return fault;
            }
            at -= weight;
        }
        unreachable!("the draw is below the weights' sum")
    }

    fn cuts_the_power(self) -> bool {
        matches!(self, Fault::PowerLoss | Fault::AllPowerLoss)
    }

    fn fills_a_disk(self) -> bool {
        self == Fault::FullDisk
    }

    fn cuts_the_network(self) -> bool {
        matches!(self, Fault::Isolate | Fault::HalfOpen)
    }

    fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::FollowerKill => "follower-kill",
            Fault::ControllerKill => "controller-kill",
            Fault::LeaderPause => "leader-pause",
            Fault::CleanRestart => "clean-restart",
            Fault::AllKill => "all-kill",
            Fault::Isolate => "isolate",
            Fault::HalfOpen => "half-open",
            Fault::PowerLoss => "power-loss",
            Fault::AllPowerLoss => "all-power-loss",
            Fault::FullDisk => "full-disk",
            Fault::SlowLink => "slow-link",
        }
    }
}

/// What a checker run does to the cluster.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// Seeded random faults for this many seconds.
    RandomFaults { seconds: u64 },
    /// The control: an unclean election that loses acknowledged records.
    UncleanElection,
    /// The second control: a topic that acknowledges from the page cache
    /// (`flush.messages`), and all three brokers losing power.
    PowerLossWithoutFsync,
}

/// How a fault takes a broker down.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// kill -9: what it wrote stays in the page cache.
    Kill,
    /// kill -9, and its disk drops every write it had not synced.
    PowerLoss,
}

/// What the test has done to a broker's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Paused,
}

/// The faults that ran and what the checker saw along the way, each line with its time since the
/// run started; printed as it happens (shown by the test runner on failure) and kept for the
/// failure report.
struct Schedule {
    start: Instant,
    lines: Vec<String>,
}

impl Schedule {
    fn note(&mut self, what: String) {
        let line = format!("[{:>8.1}s] {what}", self.start.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.lines.push(line);
    }
}

/// What the checker found wrong, by rule.
#[derive(Default, Debug)]
struct Findings {
    /// (a) acknowledged records not stored where they were acknowledged.
    lost: Vec<String>,
    /// (b) values stored at more than one offset.
    twice: Vec<String>,
    /// (c) values stored that were never produced.
    unknown: Vec<String>,
    /// (d) partitions whose replicas hold different bytes.
    divergent: Vec<String>,
    /// (e) records a consumer read during the faults that the log does not hold there in the
    /// end: it read past what was committed.
    uncommitted_reads: Vec<String>,
    /// (f) offsets a consumer reading during the faults skipped, or could not go on from.
    skipped_reads: Vec<String>,
    /// (g) records of an aborted transaction that a read_committed consumer read, or of a
    /// committed one that it cannot read.
    transactions: Vec<String>,
    /// Anything else that must not happen: a broker that crashed or did not stop cleanly, a
    /// cluster that did not heal, a producer that could not flush.
    anomalies: Vec<String>,
}

impl Findings {
    fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.twice.is_empty()
            && self.unknown.is_empty()
            && self.divergent.is_empty()
            && self.uncommitted_reads.is_empty()
            && self.skipped_reads.is_empty()
            && self.transactions.is_empty()
            && self.anomalies.is_empty()
    }

    fn describe(&self) -> String {
        let mut text = String::new();
        for (rule, found) in [
            ("(a) acknowledged but not stored there", &self.lost),
            ("(b) stored at two offsets", &self.twice),
            ("(c) stored but never produced", &self.unknown),
            ("(d) replicas that differ", &self.divergent),
            (
                "(e) read by a consumer but not committed",
                &self.uncommitted_reads,
            ),
            ("(f) skipped by a consumer", &self.skipped_reads),
            (
                "(g) read_committed against transactions' outcomes",
                &self.transactions,
            ),
            ("anomalies", &self.anomalies),
        ] {
            if found.is_empty() {
                continue;
            }
            text.push_str(&format!("\n{rule}: {} found, the first:\n", found.len()));
            for line in found.iter().take(20) {
                text.push_str(&format!("  {line}\n"));
            }
        }
        text
    }
}

/// A finished run: what it found and everything needed to report it.
struct Outcome {
    seed: u64,
    summary: String,
    findings: Findings,
    schedule: Vec<String>,
    deliveries_log: PathBuf,
    log_tails: String,
}

impl Outcome {
    fn report(&self) -> String {
        format!(
            "\n{}\nseed {:#x} (replay: SLUICE_CHECKER_SEED={:#x}){}\nschedule:\n{}\ndelivery \
             reports: {}\nbroker logs:{}",
            self.summary,
            self.seed,
            self.seed,
            self.findings.describe(),
            self.schedule.join("\n"),
            self.deliveries_log.display(),
            self.log_tails
        )
    }

    fn assert_clean(&self) {
        assert!(
            self.findings.is_clean(),
            "the checker failed{}",
            self.report()
        );
        self.discard();
    }

    /// Removes the run's directory (delivery reports, kept broker logs): a run whose outcome was
    /// the expected one leaves nothing behind.
    fn discard(&self) {
        if let Some(dir) = self.deliveries_log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Delivery reports as they arrive, also written one per line to a file (the producer's view,
/// for reading after a failure): `acked <partition> <offset> <value>` or `failed <value> <error>`.
struct Reports {
    acked: Vec<(i32, i64, String)>,
    failed: Vec<(String, String)>,
    log: BufWriter<File>,
}

#[derive(Clone)]
struct Reporter(Arc<Mutex<Reports>>);

impl Reporter {
    /// No reports yet; each one is also written to `log`.
    fn writing_to(log: &Path) -> Reporter {
        Reporter(Arc::new(Mutex::new(Reports {
            acked: Vec::new(),
            failed: Vec::new(),
            log: BufWriter::new(File::create(log).unwrap()),
        })))
    }
}

/// librdkafka's own log lines (its warnings and errors, and with `debug` set its debug lines)
/// go to the same file as the delivery reports, for reading after a failure.
/// librdkafka's debug contexts for the producers: `SLUICE_CHECKER_RDKAFKA_DEBUG`, else `eos`.
fn rdkafka_debug() -> String {
    std::env::var("SLUICE_CHECKER_RDKAFKA_DEBUG").unwrap_or_else(|_| "eos".into())
}

impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let mut reports = self.0.lock().unwrap();
        let _ = writeln!(reports.log, "librdkafka {level:?} {facility}: {message}");
    }
}

impl ProducerContext for Reporter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut reports = self.0.lock().unwrap();
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let _ = writeln!(
                    reports.log,
                    "acked {} {} {value}",
                    m.partition(),
                    m.offset()
                );
                reports.acked.push((m.partition(), m.offset(), value));
            }
            Err((e, m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let _ = writeln!(reports.log, "failed {value} {e}");
                reports.failed.push((value, e.to_string()));
            }
        }
    }
}

/// How the producer paces itself.
#[derive(Clone, Copy)]
enum Pace {
    /// This many records, then a 10 ms pause: steady traffic that a loaded machine keeps up with.
    Steady(u64),
    /// As fast as librdkafka's queue takes them.
    Flat,
}

/// A producer thread writing the unique values `v<n>` (n = 0, 1, ...) round-robin over the
/// topic's partitions until told to stop.
struct Traffic {
    producer: Arc<ThreadedProducer<Reporter>>,
    reporter: Reporter,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(
        bootstrap: &str,
        topic: &'static str,
        partitions: i32,
        pace: Pace,
        settings: &[(&str, &str)],
        log: &Path,
    ) -> Traffic {
        let reporter = Reporter::writing_to(log);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Its idempotence state machine's steps, in the delivery-report log (more with
            // SLUICE_CHECKER_RDKAFKA_DEBUG, librdkafka's `debug` contexts).
            .set("debug", rdkafka_debug())
            .set_log_level(RDKafkaLogLevel::Debug)
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            );
        for (key, value) in settings {
            config.set(*key, *value);
        }
        let producer: Arc<ThreadedProducer<Reporter>> =
            Arc::new(config.create_with_context(reporter.clone()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (producer, stop, sent) = (producer.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut n: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    let value = format!("v{n}");
                    let mut record = BaseRecord::<(), str>::to(topic)
                        .partition((n % partitions as u64) as i32)
                        .payload(&value);
                    // Wait while librdkafka's queue is full (a fault holds records back); any
                    // other refusal (a fatal idempotence error, say) ends the traffic: the
                    // flush and the checks that follow say what it meant.
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) if !stop.load(Ordering::SeqCst) => {
                                record = back;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err((e, _)) => {
                                eprintln!("the producer refused record v{n}: {e}");
                                return;
                            }
                        }
                    }
                    n += 1;
                    sent.store(n, Ordering::SeqCst);
                    if let Pace::Steady(burst) = pace {
                        if n.is_multiple_of(burst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        };
        Traffic {
            producer,
            reporter,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Stops sending new records; those already sent are still delivered (see `flush`).
    fn stop_sending(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the producer thread");
        }
    }

    /// Waits (at most `limit`) until every record sent has its delivery report.
    fn flush(&self, limit: Duration) -> Result<(), String> {
        let flushed = self.producer.flush(limit).map_err(|e| e.to_string());
        let mut reports = self.reporter.0.lock().unwrap();
        let _ = reports.log.flush();
        flushed
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn acked(&self) -> Vec<(i32, i64, String)> {
        self.reporter.0.lock().unwrap().acked.clone()
    }

    fn failed(&self) -> Vec<(String, String)> {
        self.reporter.0.lock().unwrap().failed.clone()
    }

    /// librdkafka's fatal error, if it raised one (an idempotent producer does when the broker's
    /// answers break its sequence guarantees).
    fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, why)| format!("{code:?}: {why}"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Each record a consumer read from one partition, in order: (offset, value).
type PartitionRead = Vec<(i64, String)>;

/// Each partition's records as a consumer reads them: partition -> (offset, value) in order.
type TopicRead = BTreeMap<i32, Vec<(i64, String)>>;

/// Which records a consumer is served: `isolation.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    /// Only committed transactions' records, below the last stable offset.
    ReadCommitted,
    /// Every record below the high watermark, aborted transactions' too.
    ReadUncommitted,
}

impl Isolation {
    fn setting(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// A consumer that reads every partition from its start while the faults run, as an
/// application would: what it reads must be in the log at the same offsets in the end (a
/// consumer is served only what is committed, which no failover takes back), skipping nothing
/// its isolation level shows. Its position is never reset: OFFSET_OUT_OF_RANGE or a truncation
/// librdkafka detects (KIP-320) is reported, not skipped past.
struct Watcher {
    isolation: Isolation,
    read: Arc<Mutex<Vec<PartitionRead>>>,
    /// Errors that stop a consumer from going on where it was.
    stuck: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(bootstrap: &str, topic: &str, partitions: i32, isolation: Isolation) -> Watcher {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "checker-watch")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation.setting())
            .set("auto.offset.reset", "error")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let read = Arc::new(Mutex::new(vec![Vec::new(); partitions as usize]));
        let stuck = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (read, stuck, stop) = (read.clone(), stuck.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                            read.lock().unwrap()[m.partition() as usize]
                                .push((m.offset(), value.into_owned()));
                        }
                        Some(Err(e)) if is_position_lost(&e) => {
                            stuck.lock().unwrap().push(e.to_string())
                        }
                        // Brokers going away, leaders moving: librdkafka retries.
                        Some(Err(_)) | None => {}
                    }
                }
            })
        };
        Watcher {
            isolation,
            read,
            stuck,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading; what was read, per partition, and the errors that stopped a partition.
    fn stop(&mut self) -> (Vec<PartitionRead>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the watching consumer's thread");
        }
        let read = std::mem::take(&mut *self.read.lock().unwrap());
        let stuck = std::mem::take(&mut *self.stuck.lock().unwrap());
        (read, stuck)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Whether a consumer error means its position is gone: out of range with no reset allowed, or
/// a truncation below it.
fn is_position_lost(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    ) || error.to_string().contains("truncation")
}

/// One checker run: the cluster, what the test did to each broker, and the schedule so far.
struct Checker {
    seed: u64,
    rng: Rng,
    /// Dropped before `network`: its brokers stop before their namespaces go.
    cluster: Cluster,
    /// The brokers' network namespaces, for the faults that cut links (none: loopback only).
    network: Option<Network>,
    /// Each broker's disk, for the faults that cut the power or fill it. Dropped after
    /// `cluster`: its brokers stop before their disks are unmounted.
    disks: Disks,
    state: [State; 3],
    schedule: Schedule,
    faults: BTreeMap<&'static str, usize>,
    findings: Findings,
    topic: &'static str,
    partitions: i32,
    /// How long the read-back waits for the high watermarks to pass every acknowledged offset:
    /// the control, which loses some, waits less.
    read_wait: Duration,
    /// How long the final heal may take: the control's followers, a batch per fetch, take
    /// minutes to catch up, and the control does not need them to.
    heal_wait: Duration,
    /// Whether rule (d) is checked (not in the control, whose followers may still trail).
    compare_replicas: bool,
    /// Transactions (committed, aborted, of unknown outcome), for the summary.
    transaction_counts: (usize, usize, usize),
}

impl Checker {
    /// Runs `scenario` from seed `seed` and checks the result. A panic along the way (a broker
    /// that would not start, a wait that ran out) is reported with the seed, the schedule and the
    /// brokers' logs, then goes on unwinding.
    fn run(seed: u64, scenario: Scenario) -> Outcome {
        eprintln!(
            "replication checker: seed {seed:#x} ({scenario:?}); replay with \
             SLUICE_CHECKER_SEED={seed:#x}"
        );
        let run_dir =
            std::env::temp_dir().join(format!("sluice-checker-{seed:x}-{}", std::process::id()));
        std::fs::create_dir_all(&run_dir).unwrap();
        let deliveries_log = run_dir.join("deliveries.log");

        let extra = [REPLICA_LAG];
        let start = Instant::now();
        let (network, disks) = match scenario {
            Scenario::RandomFaults { .. } => (network_for_partitions(), disks_for_faults()),
            Scenario::UncleanElection => (Some(network_for_control()), Disks::Plain),
            Scenario::PowerLossWithoutFsync => (None, disks_for_control()),
        };
        let paths = disks.paths();
        let host = Hosting {
            network: network.as_ref(),
            disks: paths.as_deref(),
            proxied: matches!(scenario, Scenario::RandomFaults { .. }) && proxies_from_env(),
        };
        let cluster = Cluster::formed_hosted(&host, 0, &extra);
        let mut checker = Checker {
            seed,
            rng: Rng(seed),
            cluster,
            network,
            disks,
            state: [State::Up; 3],
            schedule: Schedule {
                start,
                lines: Vec::new(),
            },
            faults: BTreeMap::new(),
            findings: Findings::default(),
            topic: TOPIC,
            partitions: PARTITIONS,
            read_wait: QUORUM_WAIT_MAX,
            heal_wait: 2 * QUORUM_WAIT_MAX,
            compare_replicas: true,
            transaction_counts: (0, 0, 0),
        };
        let ran = catch_unwind(AssertUnwindSafe(|| {
            checker.scenario(scenario, &deliveries_log)
        }));
        let summary = match &ran {
            Ok((acked, failed)) => checker.summary(scenario, *acked, *failed, start.elapsed()),
            Err(_) => checker.summary(scenario, 0, 0, start.elapsed()) + " (panicked)",
        };
        eprintln!("{summary}");
        let outcome = Outcome {
            seed,
            summary,
            findings: std::mem::take(&mut checker.findings),
            schedule: checker.schedule.lines.clone(),
            deliveries_log,
            log_tails: checker.cluster.log_tails(LOG_LINES),
        };
        // The brokers' data directories go with the cluster; a run that found something keeps
        // their whole logs beside the delivery reports.
        if !outcome.findings.is_clean() || ran.is_err() {
            for (i, broker) in checker.cluster.brokers.iter().enumerate() {
                let _ = std::fs::copy(
                    &broker.log_file,
                    run_dir.join(format!("broker-{}.log", i + 1)),
                );
            }
            eprintln!(
                "delivery reports and broker logs kept in {}",
                run_dir.display()
            );
        }
        if let Err(panic) = ran {
            eprintln!("the checker stopped on a panic{}", outcome.report());
            resume_unwind(panic);
        }
        outcome
    }

    /// The scenario, then the checks; the acknowledged and failed delivery counts.
    fn scenario(&mut self, scenario: Scenario, deliveries_log: &Path) -> (usize, usize) {
        let bootstrap = self.cluster.bootstrap();
        let (mut traffic, watchers, transactions) = match scenario {
            Scenario::RandomFaults { seconds } => {
                self.create_topic(&[("min.insync.replicas", "2")]);
                if matches!(self.disks, Disks::Small(_)) {
                    create_topic_with(&self.cluster.brokers[0], DISK_FILLING_TOPIC, 1, 3, &[]);
                }
                let watchers = [Isolation::ReadCommitted, Isolation::ReadUncommitted]
                    .map(|isolation| {
                        Watcher::start(&bootstrap, self.topic, self.partitions, isolation)
                    })
                    .into();
                let transactions = Transactions::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    self.seed,
                    &deliveries_log.with_file_name("transactions.log"),
                );
                let traffic = Traffic::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    Pace::Steady(5),
                    &[],
                    deliveries_log,
                );
                self.schedule
                    .note(format!("producing; injecting faults for {seconds} s"));
                self.random_faults(Duration::from_secs(seconds));
                (traffic, watchers, Some(transactions))
            }
            Scenario::UncleanElection => {
                self.partitions = 1;
                self.topic = "control";
                self.read_wait = Duration::from_secs(10);
                self.heal_wait = Duration::from_secs(10);
                self.compare_replicas = false;
                self.create_topic(&[
                    ("min.insync.replicas", "1"),
                    ("unclean.leader.election.enable", "true"),
                ]);
                // Every record its own batch, as fast as the leader takes them: the followers,
                // fetching a batch at a time, fall far behind whenever they are away.
                let traffic = Traffic::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    Pace::Flat,
                    &[
                        ("linger.ms", "0"),
                        ("batch.num.messages", "1"),
                        ("queue.buffering.max.messages", "20000"),
                    ],
                    deliveries_log,
                );
                // The consumer reads records the leader acknowledged alone, which the unclean
                // election then takes back: rule (e) must see them.
                let watcher = Watcher::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    Isolation::ReadCommitted,
                );
                (self.unclean_election(traffic), vec![watcher], None)
            }
            Scenario::PowerLossWithoutFsync => {
                self.topic = "unflushed";
                self.read_wait = Duration::from_secs(10);
                self.compare_replicas = false;
                // Acknowledged from the page cache on every replica, as Kafka's defaults do.
                self.create_topic(&[
                    ("min.insync.replicas", "2"),
                    ("flush.messages", "1000000"),
                    ("flush.ms", "3600000"),
                ]);
                let watcher = Watcher::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    Isolation::ReadCommitted,
                );
                let mut traffic = Traffic::start(
                    &bootstrap,
                    self.topic,
                    self.partitions,
                    Pace::Steady(5),
                    &[],
                    deliveries_log,
                );
                self.schedule.note("producing for 3 s".to_string());
                std::thread::sleep(Duration::from_secs(3));
                traffic.stop_sending();
                let flushed = traffic.flush(Duration::from_secs(30));
                self.schedule.note(format!(
                    "flushed ({flushed:?}): {} records acknowledged; brokers 1, 2 and 3 lose power",
                    traffic.acked().len()
                ));
                for target in 1..=3 {
                    self.power_off(target);
                }
                for target in 1..=3 {
                    self.restart(target);
                }
                (traffic, vec![watcher], None)
            }
        };
        self.verify(&mut traffic, watchers, transactions)
    }

    /// Creates the topic (replication factor 3, `configs`) and waits until each partition is
    /// led with all three replicas in sync.
    fn create_topic(&mut self, configs: &[(&str, &str)]) {
        create_topic_with(
            &self.cluster.brokers[0],
            self.topic,
            self.partitions,
            3,
            configs,
        );
        wait_for_topic(
            &self.cluster,
            &[0, 1, 2],
            self.topic,
            self.partitions as usize,
        );
        let (topic, partitions) = (self.topic, self.partitions as usize);
        self.cluster
            .wait_metadata(0, topic, "the new topic in sync", |_, seen| {
                fully_in_sync(seen, partitions)
            });
        self.schedule.note(format!(
            "created {topic}: {partitions} partitions, replication factor 3, {configs:?}"
        ));
    }

    /// Draws and injects faults until `length` has passed, one at a time.
    fn random_faults(&mut self, length: Duration) {
        let until = Instant::now() + length;
        while Instant::now() < until {
            let (partitions, proxied, disks) = (
                self.network.is_some(),
                !self.cluster.proxies.is_empty(),
                &self.disks,
            );
            let only = fault_kinds_from_env();
            let fault = Fault::draw(&mut self.rng, |fault| {
                only.as_ref()
                    .is_none_or(|kinds| kinds.contains(&fault.name()))
                    && (partitions || !fault.cuts_the_network())
                    && (proxied || fault != Fault::SlowLink)
                    && disks.allow(fault)
            });
            *self.faults.entry(fault.name()).or_default() += 1;
            self.inject(fault);
            self.look_for_crashes();
            // Mostly let the cluster heal before the next fault; sometimes strike while a
            // replica is still catching up (never with more than one broker down).
            if self.rng.below(10) < 7 {
                self.settle();
            }
            let pause = self.rng.millis(1000, 5000);
            std::thread::sleep(pause);
        }
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::LeaderKill => {
                let (partition, target) = self.leader_of_some_partition();
                self.schedule.note(format!(
                    "{}: kill -9 broker {target} (leads partition {partition})",
                    fault.name()
                ));
                self.outage(target, Outage::Kill, 9000);
            }
            Fault::FollowerKill => {
                let (partition, target) = self.follower_of_some_partition();
                self.schedule.note(format!(
                    "{}: kill -9 broker {target} (follows partition {partition})",
                    fault.name()
                ));
                self.outage(target, Outage::Kill, 10000);
            }
            Fault::ControllerKill => {
                let running: Vec<usize> = (0..3).filter(|&i| self.state[i] == State::Up).collect();
                let target = self.cluster.leader(&running) as i32;
                self.schedule.note(format!(
                    "{}: kill -9 broker {target} (the metadata quorum's leader)",
                    fault.name()
                ));
                self.outage(target, Outage::Kill, 9000);
            }
            Fault::LeaderPause => {
                let (partition, target) = self.leader_of_some_partition();
                let pause = SESSION + self.rng.millis(500, 4000);
                self.schedule.note(format!(
                    "{}: SIGSTOP broker {target} (leads partition {partition}) for {:.1} s",
                    fault.name(),
                    pause.as_secs_f64()
                ));
                self.signal(target, Signal::SIGSTOP);
                self.state[index_of(target)] = State::Paused;
                std::thread::sleep(pause);
                self.signal(target, Signal::SIGCONT);
                self.state[index_of(target)] = State::Up;
                self.schedule.note(format!("SIGCONT broker {target}"));
            }
            Fault::CleanRestart => {
                let target = self.rng.pick(&[1, 2, 3]);
                self.schedule
                    .note(format!("{}: SIGTERM broker {target}", fault.name()));
                let stopped = self.cluster.brokers[index_of(target)].terminate_within(STOP_MAX);
                self.state[index_of(target)] = State::Down;
                if stopped != Some(true) {
                    self.anomaly(format!(
                        "broker {target} did not stop cleanly within {STOP_MAX:?}: {stopped:?}"
                    ));
                }
                let down = self.rng.millis(0, 3000);
                std::thread::sleep(down);
                self.restart(target);
            }
            Fault::Isolate => {
                let (partition, target) = self.leader_of_some_partition();
                let what = format!("link down (it leads partition {partition})");
                self.cut_off(fault, target, what, |network, i| network.isolate(i));
            }
            Fault::HalfOpen => {
                let target = self.rng.pick(&[1, 2, 3]);
                let direction = self.rng.pick(&[Direction::Outbound, Direction::Inbound]);
                let what = format!("{direction:?} packets dropped");
                self.cut_off(fault, target, what, |network, i| network.cut(i, direction));
            }
            Fault::PowerLoss => {
                let (partition, target) = self.leader_of_some_partition();
                self.schedule.note(format!(
                    "{}: broker {target} (leads partition {partition}) loses power",
                    fault.name()
                ));
                self.outage(target, Outage::PowerLoss, 9000);
            }
            Fault::AllPowerLoss => {
                self.schedule
                    .note(format!("{}: brokers 1, 2 and 3 lose power", fault.name()));
                self.outage_of_all(Outage::PowerLoss, 4000);
            }
            Fault::FullDisk => {
                let (partition, target) = self.leader_of_some_partition();
                self.fill_disk(fault, target, partition);
            }
            Fault::SlowLink => {
                let (partition, target) = self.leader_of_some_partition();
                let delay = self.rng.millis(100, 1500);
                let length = self.rng.millis(3000, 10000);
                self.schedule.note(format!(
                    "{}: broker {target}'s client link (it leads partition {partition}) delays \
                     everything by {} ms for {:.1} s",
                    fault.name(),
                    delay.as_millis(),
                    length.as_secs_f64()
                ));
                let proxy = &self.cluster.proxies[index_of(target)];
                proxy.set_delay(delay);
                std::thread::sleep(length);
                proxy.set_delay(Duration::ZERO);
                self.schedule
                    .note(format!("broker {target}'s client link is fast again"));
            }
            Fault::AllKill => {
                self.schedule
                    .note(format!("{}: kill -9 brokers 1, 2 and 3", fault.name()));
                self.outage_of_all(Outage::Kill, 4000);
            }
        }
    }

    /// Fills broker `target`'s disk; it must stop on its own, with a non-zero status, soon after
    /// (its next write fails). The space comes back after a while, and it is restarted.
    fn fill_disk(&mut self, fault: Fault, target: i32, partition: i32) {
        let Disks::Small(disks) = &self.disks else {
            panic!("drawn only with small disks");
        };
        let disk = &disks[index_of(target)];
        let taken = disk.fill();
        self.schedule.note(format!(
            "{}: broker {target}'s disk is full (it leads partition {partition}; {} MiB taken)",
            fault.name(),
            taken >> 20
        ));
        let exited = self.wait_exit_on_full_disk(target);
        self.state[index_of(target)] = State::Down;
        match exited {
            Some(status) if !status.success() => self.schedule.note(format!(
                "broker {target} stopped on its full disk ({status})"
            )),
            Some(status) => self.anomaly(format!(
                "broker {target} stopped on its full disk claiming success ({status})"
            )),
            None => {
                self.anomaly(format!(
                    "broker {target} still runs {STOP_MAX:?} after its disk filled"
                ));
                self.kill9(target);
            }
        }
        let full = self.rng.millis(500, 4000);
        std::thread::sleep(full);
        if let Disks::Small(disks) = &self.disks {
            disks[index_of(target)].drain();
        }
        self.restart(target);
    }

    /// Waits (at most `STOP_MAX`) for broker `target`, whose disk is full, to exit; writes a
    /// record to `DISK_FILLING_TOPIC` now and then, which every broker stores (as its leader or
    /// a follower), so that it meets the full disk whatever else goes on.
    fn wait_exit_on_full_disk(&mut self, target: i32) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + STOP_MAX;
        while Instant::now() < deadline {
            let broker = &mut self.cluster.brokers[index_of(target)];
            if let Some(status) = broker.wait_exit(Duration::from_millis(500)) {
                return Some(status);
            }
            let leader = (0..3)
                .filter(|&i| self.state[i] == State::Up && i != index_of(target))
                .find_map(|i| metadata_of(&self.cluster.brokers[i], DISK_FILLING_TOPIC))
                .and_then(|(_, seen)| seen.first().map(|p| p.leader))
                .filter(|leader| (1..=3).contains(leader));
            if let Some(stream) =
                leader.and_then(|l| try_connect(&self.cluster.brokers[index_of(l)]))
            {
                let mut stream = stream;
                let _ = produce_one(&mut stream, DISK_FILLING_TOPIC, 1);
            }
        }
        None
    }

    /// Cuts broker `target` off the network with `cut` for longer than its session, then heals
    /// its link: what the isolate and half-open faults share.
    fn cut_off(
        &mut self,
        fault: Fault,
        target: i32,
        what: String,
        cut: impl FnOnce(&Network, usize),
    ) {
        let length = SESSION + self.rng.millis(500, 4000);
        self.schedule.note(format!(
            "{}: broker {target}'s {what} for {:.1} s",
            fault.name(),
            length.as_secs_f64()
        ));
        let network = self.namespaces();
        cut(network, index_of(target));
        std::thread::sleep(length);
        network.heal(index_of(target));
        self.schedule
            .note(format!("broker {target}'s network healed"));
    }

    /// The brokers' network namespaces: those of the control, and of the faults drawn only
    /// when the checker has them.
    fn namespaces(&self) -> &Network {
        self.network
            .as_ref()
            .expect("the checker runs in network namespaces")
    }

    /// Takes broker `node` down as `how` says, keeps it down between 500 ms and `longest_ms`,
    /// and restarts it.
    fn outage(&mut self, node: i32, how: Outage, longest_ms: u64) {
        self.take_down(node, how);
        let down = self.rng.millis(500, longest_ms);
        std::thread::sleep(down);
        self.restart(node);
    }

    /// `outage` of all three brokers at once.
    fn outage_of_all(&mut self, how: Outage, longest_ms: u64) {
        for node in 1..=3 {
            self.take_down(node, how);
        }
        let down = self.rng.millis(500, longest_ms);
        std::thread::sleep(down);
        for node in 1..=3 {
            self.restart(node);
        }
    }

    fn take_down(&mut self, node: i32, how: Outage) {
        match how {
            Outage::Kill => self.kill9(node),
            Outage::PowerLoss => self.power_off(node),
        }
    }

    /// kill -9, and the broker's disk drops what it had not synced.
    fn power_off(&mut self, node: i32) {
        self.kill9(node);
        let Disks::LazyFs(disks) = &self.disks else {
            panic!("drawn only with LazyFS disks");
        };
        disks[index_of(node)].power_loss();
    }

    fn kill9(&mut self, node: i32) {
        if let Some(proxy) = self.cluster.proxies.get(index_of(node)) {
            proxy.target_going_down();
        }
        self.cluster.brokers[index_of(node)].kill9();
        self.state[index_of(node)] = State::Down;
    }

    fn restart(&mut self, node: i32) {
        self.cluster.brokers[index_of(node)].restart();
        self.state[index_of(node)] = State::Up;
        self.schedule.note(format!("restarted broker {node}"));
    }

    fn signal(&mut self, node: i32, signal: Signal) {
        let pid = self.cluster.brokers[index_of(node)]
            .pid()
            .unwrap_or_else(|| panic!("broker {node} runs"));
        kill(Pid::from_raw(pid as i32), signal).unwrap();
    }

    fn anomaly(&mut self, what: String) {
        self.schedule.note(format!("ANOMALY: {what}"));
        self.findings.anomalies.push(what);
    }

    /// A broker the test believes is running but whose process exited crashed on its own: noted,
    /// and restarted so the run can go on.
    fn look_for_crashes(&mut self) {
        for i in 0..3 {
            if self.state[i] == State::Up && !self.cluster.brokers[i].is_running() {
                self.anomaly(format!("broker {} exited on its own", i + 1));
                self.cluster.brokers[i].kill9();
                self.restart(i as i32 + 1);
            }
        }
    }

    /// Metadata of the topic from the first running broker that answers.
    fn metadata(&mut self) -> Option<(Vec<i32>, Vec<PartitionSeen>)> {
        for i in 0..3 {
            if self.state[i] == State::Up && self.cluster.brokers[i].is_running() {
                if let Some(seen) = metadata_of(&self.cluster.brokers[i], self.topic) {
                    return Some(seen);
                }
            }
        }
        None
    }

    /// A random partition and the node id of its leader (a random broker if no partition has
    /// one just now).
    fn leader_of_some_partition(&mut self) -> (i32, i32) {
        let partition = self.rng.below(self.partitions as u64) as i32;
        let leader = self
            .metadata()
            .and_then(|(_, seen)| seen.get(partition as usize).map(|p| p.leader))
            .filter(|&leader| (1..=3).contains(&leader));
        (
            partition,
            leader.unwrap_or_else(|| self.rng.pick(&[1, 2, 3])),
        )
    }

    /// A random partition and one of its followers.
    fn follower_of_some_partition(&mut self) -> (i32, i32) {
        let (partition, leader) = self.leader_of_some_partition();
        let followers: Vec<i32> = [1, 2, 3].into_iter().filter(|&b| b != leader).collect();
        (partition, self.rng.pick(&followers))
    }

    /// Waits (at most `SETTLE_MAX`) until every partition is led with all three replicas in
    /// sync; notes how long that took, or that it did not happen.
    fn settle(&mut self) {
        let started = Instant::now();
        let partitions = self.partitions as usize;
        while started.elapsed() < SETTLE_MAX {
            if self
                .metadata()
                .is_some_and(|(_, seen)| fully_in_sync(&seen, partitions))
            {
                self.schedule.note(format!(
                    "healed: every partition led, ISR of 3 ({:.1} s)",
                    started.elapsed().as_secs_f64()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let seen = self.metadata();
        self.schedule.note(format!(
            "not healed after {SETTLE_MAX:?}; metadata: {seen:?}"
        ));
    }

    /// The control scenario: with unclean elections on and `min.insync.replicas=1`, cut both
    /// followers' fetches from the leader (their metadata quorum traffic, on the controller
    /// listener, still flows, so the quorum shrinks the ISR to the leader), let the leader
    /// acknowledge records alone, then kill it: the quorum (the two followers) fences it and
    /// elects a follower that lacks those records.
    fn unclean_election(&mut self, mut traffic: Traffic) -> Traffic {
        let (_, seen) = self.metadata().expect("metadata");
        let before = seen[0].clone();
        let leader = before.leader;
        let followers: Vec<i32> = before
            .replicas
            .iter()
            .copied()
            .filter(|&r| r != leader)
            .collect();
        self.schedule.note(format!(
            "control: partition 0 led by {leader} at epoch {}, followers {followers:?}",
            before.leader_epoch
        ));
        std::thread::sleep(Duration::from_secs(1));

        let leads = &self.cluster.brokers[index_of(leader)];
        let (host, port) = (leads.host.clone(), leads.port);
        let network = self.namespaces();
        for &follower in &followers {
            network.block(index_of(follower), &host, port);
        }
        self.schedule.note(format!(
            "followers {followers:?} cut off from the leader's listener {host}:{port}"
        ));
        let alone = self.wait_partition("the leader alone in the ISR", |_, p| {
            p.leader == leader && p.isr == [leader]
        });
        self.schedule.note(format!(
            "partition 0 is now {alone:?}; {} records sent",
            traffic.sent()
        ));

        // The leader acknowledges records alone for a moment; then the producer stops, has
        // everything acknowledged, and the leader is killed before the followers can fetch
        // again. The quorum (the two followers) fences it and, with no in-sync replica left in
        // service, elects a follower uncleanly.
        std::thread::sleep(Duration::from_secs(1));
        traffic.stop_sending();
        self.schedule.note(format!(
            "producer stopped: {} records sent, {} acknowledged",
            traffic.sent(),
            traffic.acked().len()
        ));
        let flushed = traffic.flush(Duration::from_secs(30));
        self.kill9(leader);
        let network = self.namespaces();
        for &follower in &followers {
            network.heal(index_of(follower));
        }
        self.schedule.note(format!(
            "flushed ({flushed:?}): {} records acknowledged; kill -9 leader {leader}, followers' \
             cut healed",
            traffic.acked().len()
        ));
        let after = self.wait_partition("an unclean election", |_, p| {
            p.leader > 0 && p.leader != leader && p.leader_epoch > before.leader_epoch
        });
        self.schedule
            .note(format!("after the election partition 0 is {after:?}"));
        self.restart(leader);
        traffic
    }

    /// Waits (at most `QUORUM_WAIT_MAX`) until partition 0, as a running broker's metadata shows
    /// it with the live brokers, satisfies `holds`; returns it.
    fn wait_partition(
        &mut self,
        what: &str,
        holds: impl Fn(&[i32], &PartitionSeen) -> bool,
    ) -> PartitionSeen {
        let deadline = Instant::now() + QUORUM_WAIT_MAX;
        loop {
            let seen = self.metadata();
            if let Some((live, partitions)) = &seen {
                if let Some(p) = partitions.first().filter(|p| holds(live, p)) {
                    return p.clone();
                }
            }
            assert!(Instant::now() < deadline, "{what}: metadata stays {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the faults: every broker running, the cluster healed, the producers flushed and
    /// settled; then the checks (a) to (g). Returns the acknowledged and failed delivery counts.
    fn verify(
        &mut self,
        traffic: &mut Traffic,
        watchers: Vec<Watcher>,
        transactions: Option<Transactions>,
    ) -> (usize, usize) {
        traffic.stop_sending();
        if let Some(transactions) = &transactions {
            transactions.stop_sending();
        }
        self.schedule.note(format!(
            "faults over ({:?}); {} records sent; bringing every broker back",
            self.faults,
            traffic.sent()
        ));
        for node in 1..=3 {
            match self.state[index_of(node)] {
                State::Up => {}
                State::Paused => {
                    self.signal(node, Signal::SIGCONT);
                    self.state[index_of(node)] = State::Up;
                }
                State::Down => self.restart(node),
            }
        }
        self.look_for_crashes();

        // Every partition led, ISR 3: twice a quorum wait, as brokers may have just restarted.
        let partitions = self.partitions as usize;
        let deadline = Instant::now() + self.heal_wait;
        loop {
            if self
                .metadata()
                .is_some_and(|(_, seen)| fully_in_sync(&seen, partitions))
            {
                self.schedule
                    .note("healed: every partition led, ISR of 3".to_string());
                break;
            }
            if Instant::now() >= deadline {
                let seen = self.metadata();
                let what = format!(
                    "the cluster did not heal within {:?} of the last fault: {seen:?}",
                    self.heal_wait
                );
                if self.compare_replicas {
                    self.anomaly(what);
                } else {
                    self.schedule.note(what);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }

        // The control flushed before its kill; it does not wait out the producer's timeout.
        let flush_max = if self.compare_replicas {
            MESSAGE_TIMEOUT + Duration::from_secs(30)
        } else {
            Duration::from_secs(30)
        };
        if let Err(e) = traffic.flush(flush_max) {
            self.anomaly(format!("the producer did not flush: {e}"));
        }
        if let Some(fatal) = traffic.fatal_error() {
            self.anomaly(format!(
                "the idempotent producer raised a fatal error: {fatal}"
            ));
        }
        let mut acked = traffic.acked();
        let failed = traffic.failed();
        let sent = traffic.sent();
        self.schedule.note(format!(
            "flushed: {} acknowledged, {} failed, of {sent} sent",
            acked.len(),
            failed.len()
        ));
        let ledger = transactions.map(|t| self.settle_transactions(t));
        if let Some(ledger) = &ledger {
            acked.extend(ledger.acked.iter().cloned());
        }
        if !failed.is_empty() {
            // Not loss (the producer was told), but with this timeout none should fail.
            self.anomaly(format!(
                "{} deliveries failed, the first: {:?}",
                failed.len(),
                &failed[..failed.len().min(5)]
            ));
        }

        let txn_sent = ledger.as_ref().map_or(0, |l| l.sent);
        let stored = self.read_back(&acked, Isolation::ReadUncommitted);
        self.check_records(&acked, (sent, txn_sent), &stored);
        let visible = self.read_all(Isolation::ReadCommitted, read_limit(acked.len()));
        for mut watcher in watchers {
            let (watched, stuck) = watcher.stop();
            let log = match watcher.isolation {
                Isolation::ReadCommitted => &visible,
                Isolation::ReadUncommitted => &stored,
            };
            self.check_watched(watcher.isolation, &watched, &stuck, log);
            if let (Isolation::ReadCommitted, Some(ledger)) = (watcher.isolation, &ledger) {
                let read = watched.iter().flatten().map(|(_, value)| value);
                self.check_aborted_unread("the consumer during the faults", read, ledger);
            }
        }
        if let Some(ledger) = &ledger {
            self.check_transactions(&stored, &visible, ledger);
        }
        if self.compare_replicas {
            self.check_replicas();
        }
        (acked.len(), failed.len())
    }

    /// Waits for the transactional producer to end its last transaction; its ledger, with what
    /// went wrong noted as anomalies.
    fn settle_transactions(&mut self, transactions: Transactions) -> Ledger {
        let ledger = transactions.finish();
        self.transaction_counts = ledger.counts;
        let (committed, aborted, unknown) = ledger.counts;
        self.schedule.note(format!(
            "transactions settled: {committed} committed, {aborted} aborted, {unknown} of unknown \
             outcome; {} of their records acknowledged",
            ledger.acked.len()
        ));
        for anomaly in &ledger.anomalies {
            self.anomaly(format!("transactions: {anomaly}"));
        }
        ledger
    }

    /// Every record of the topic that a consumer with `isolation` reads, from the start of
    /// each partition to its end, once each leader's high watermark has passed the last offset
    /// acknowledged there (or a quorum wait has passed: then what is missing is for the checks
    /// to show).
    fn read_back(&mut self, acked: &[(i32, i64, String)], isolation: Isolation) -> TopicRead {
        let ends = acknowledged_ends(acked, self.partitions);
        let note = match wait_high_watermarks(&ends, self.read_wait, || self.high_watermarks()) {
            Ok(seen) => format!("high watermarks {seen:?} reach the acknowledged ends"),
            Err(seen) => {
                format!("high watermarks {seen:?} never reached the acknowledged ends {ends:?}")
            }
        };
        self.schedule.note(note);
        self.read_all(isolation, read_limit(acked.len()))
    }

    /// Every record of the topic that a consumer with `isolation` reads from the start of each
    /// partition to its end (its high watermark or last stable offset), within `limit`.
    fn read_all(&mut self, isolation: Isolation, limit: Duration) -> TopicRead {
        let (bootstrap, topic, partitions) =
            (self.cluster.bootstrap(), self.topic, self.partitions);
        match read_all(&bootstrap, topic, partitions, isolation, limit) {
            Ok(read) => {
                let count: usize = read.values().map(Vec::len).sum();
                self.schedule.note(format!(
                    "read back {count} records, {}",
                    isolation.setting()
                ));
                read
            }
            Err(e) => {
                self.anomaly(format!("reading back {}: {e}", isolation.setting()));
                BTreeMap::new()
            }
        }
    }

    /// Each partition's high watermark as its leader answers ListOffsets; -1 where none does.
    fn high_watermarks(&mut self) -> Vec<i64> {
        let Some((_, seen)) = self.metadata() else {
            return Vec::new();
        };
        self.cluster.high_watermarks(self.topic, &seen)
    }

    /// Rules (e) and (f): each partition as a consumer with `isolation` read it during the
    /// faults, against `log`, what a consumer with that isolation reads in the end.
    fn check_watched(
        &mut self,
        isolation: Isolation,
        watched: &[PartitionRead],
        stuck: &[String],
        log: &TopicRead,
    ) {
        let who = format!("the {} consumer", isolation.setting());
        for error in stuck {
            self.findings
                .skipped_reads
                .push(format!("{who} lost its position: {error}"));
        }
        let mut counts = Vec::new();
        for (partition, records) in watched.iter().enumerate() {
            let partition = partition as i32;
            let stored: BTreeMap<i64, &str> = log
                .get(&partition)
                .map(|r| r.iter().map(|(o, v)| (*o, v.as_str())).collect())
                .unwrap_or_default();
            let mut next = 0;
            for (offset, value) in records {
                // Offsets the log holds no record at for this consumer (control records, an
                // aborted transaction's records under read_committed) are skipped rightly.
                if let Some((skipped, _)) = stored.range(next..*offset).next() {
                    self.findings.skipped_reads.push(format!(
                        "{who}, partition {partition}: read {offset} after {}, skipping {skipped}",
                        next - 1
                    ));
                }
                if stored.get(offset) != Some(&value.as_str()) {
                    self.findings.uncommitted_reads.push(format!(
                        "{who}, partition {partition} offset {offset}: read {value:?}, the log \
                         holds {:?}",
                        stored.get(offset)
                    ));
                }
                next = next.max(offset + 1);
            }
            counts.push(records.len());
        }
        self.schedule
            .note(format!("{who} read {counts:?} records during the faults"));
    }

    /// Rule (g) for a read_committed consumer's `read` values: none of an aborted transaction.
    fn check_aborted_unread<'a>(
        &mut self,
        who: &str,
        read: impl Iterator<Item = &'a String>,
        ledger: &Ledger,
    ) {
        for value in read.filter(|value| ledger.aborted.contains(*value)) {
            self.findings.transactions.push(format!(
                "{who} (read_committed) read {value:?} of an aborted transaction"
            ));
        }
    }

    /// Rule (g) for the log as a read_committed consumer reads it in the end (`visible`): every
    /// committed transaction's records, none of an aborted one's, though the log holds them
    /// (`stored`).
    fn check_transactions(&mut self, stored: &TopicRead, visible: &TopicRead, ledger: &Ledger) {
        let aborted_stored = stored
            .values()
            .flatten()
            .filter(|(_, v)| ledger.aborted.contains(v))
            .count();
        let read: BTreeSet<&String> = visible.values().flatten().map(|(_, v)| v).collect();
        for value in ledger.committed.iter().filter(|v| !read.contains(v)) {
            self.findings.transactions.push(format!(
                "{value:?} of a committed transaction is not read by read_committed"
            ));
        }
        self.check_aborted_unread("the final read", read.into_iter(), ledger);
        self.schedule.note(format!(
            "transactions checked: {} committed records visible; {} aborted records, {} of them \
             in the log, invisible",
            ledger.committed.len(),
            ledger.aborted.len(),
            aborted_stored
        ));
    }

    /// Rules (a), (b) and (c). `sent`: how many of the values `v<n>` and of the transactional values `t<n>` were sent.
    fn check_records(&mut self, acked: &[(i32, i64, String)], sent: (u64, u64), read: &TopicRead) {
        let mut stored: BTreeMap<(i32, i64), &str> = BTreeMap::new();
        let mut first_seen: BTreeMap<&str, (i32, i64)> = BTreeMap::new();
        for (&partition, records) in read {
            for (offset, value) in records {
                stored.insert((partition, *offset), value);
                if let Some(earlier) = first_seen.insert(value, (partition, *offset)) {
                    self.findings.twice.push(format!(
                        "{value:?} at partition {}, offset {} and at partition {partition}, \
                         offset {offset}",
                        earlier.0, earlier.1
                    ));
                }
                let produced = was_sent(value, 'v', sent.0) || was_sent(value, 't', sent.1);
                if !produced {
                    self.findings.unknown.push(format!(
                        "{value:?} at partition {partition}, offset {offset}"
                    ));
                }
            }
        }
        for (partition, offset, value) in acked {
            if *offset < 0 {
                // Acknowledged without an offset: librdkafka acknowledges a batch whose answer was
                // lost once a later batch of the producer is acknowledged (the broker keeps the
                // sequence order), and cannot say where it went. It must be in its partition.
                let found = first_seen.get(value.as_str());
                if found.is_none_or(|(p, _)| p != partition) {
                    self.findings.lost.push(format!(
                        "{value:?} acknowledged at partition {partition} (offset unknown); \
                         stored at: {found:?}"
                    ));
                }
                continue;
            }
            let there = stored.get(&(*partition, *offset));
            if there != Some(&value.as_str()) {
                let elsewhere = first_seen.get(value.as_str());
                self.findings.lost.push(format!(
                    "{value:?} acknowledged at partition {partition}, offset {offset}; stored \
                     there: {there:?}; stored at: {elsewhere:?}"
                ));
            }
        }
        self.schedule.note(format!(
            "records checked: {} lost or moved, {} stored twice, {} never produced",
            self.findings.lost.len(),
            self.findings.twice.len(),
            self.findings.unknown.len()
        ));
    }

    /// Rule (d): once every replica's log is as long as the others' (a follower trails its
    /// leader by a fetch), every broker stops cleanly and each partition's replicas must hold
    /// the same segment bytes.
    fn check_replicas(&mut self) {
        let note = match self
            .cluster
            .wait_same_log_sizes(self.topic, self.partitions)
        {
            Ok(sizes) => format!("replica log sizes match: {sizes:?}"),
            Err(sizes) => {
                format!("replica log sizes still differ after {QUORUM_WAIT_MAX:?}: {sizes:?}")
            }
        };
        self.schedule.note(note);
        for i in 0..3 {
            let stopped = self.cluster.brokers[i].terminate_within(STOP_MAX);
            self.state[i] = State::Down;
            if stopped != Some(true) {
                self.anomaly(format!(
                    "broker {} did not stop cleanly within {STOP_MAX:?}: {stopped:?}",
                    i + 1
                ));
            }
        }
        for partition in 0..self.partitions {
            let (first_segments, first) =
                partition_log(&self.cluster.brokers[0], self.topic, partition);
            for i in 1..3 {
                let (segments, bytes) =
                    partition_log(&self.cluster.brokers[i], self.topic, partition);
                if bytes != first {
                    let common = first.iter().zip(&bytes).take_while(|(a, b)| a == b).count();
                    self.findings.divergent.push(format!(
                        "partition {partition}: broker 1 holds {} bytes in {first_segments:?}, \
                         broker {} holds {} bytes in {segments:?}; they differ from byte {common}",
                        first.len(),
                        i + 1,
                        bytes.len()
                    ));
                }
            }
        }
        self.schedule.note(format!(
            "replicas compared: {} partitions differ",
            self.findings.divergent.len()
        ));
    }

    /// The line `scripts/replication-checker` collects per seed.
    fn summary(&self, scenario: Scenario, acked: usize, failed: usize, took: Duration) -> String {
        let faults: Vec<String> = Fault::WEIGHTS
            .iter()
            .map(|(f, _)| format!("{}={}", f.name(), self.faults.get(f.name()).unwrap_or(&0)))
            .collect();
        let total: usize = self.faults.values().sum();
        let result = if self.findings.is_clean() {
            "PASS"
        } else {
            "FAIL"
        };
        format!(
            "checker summary: seed={:#x} scenario={scenario:?} faults={total} ({}) \
             acknowledged={acked} failed={failed} lost={} twice={} unknown={} divergent={} \
             uncommitted_reads={} skipped_reads={} transactions={}/{}/{} txn_findings={} \
             anomalies={} took={}s result={result}",
            self.seed,
            faults.join(" "),
            self.findings.lost.len(),
            self.findings.twice.len(),
            self.findings.unknown.len(),
            self.findings.divergent.len(),
            self.findings.uncommitted_reads.len(),
            self.findings.skipped_reads.len(),
            self.transaction_counts.0,
            self.transaction_counts.1,
            self.transaction_counts.2,
            self.findings.transactions.len(),
            self.findings.anomalies.len(),
            took.as_secs()
        )
    }
}

/// Whether `value` is `<prefix><n>` with `n` below `sent`.
fn was_sent(value: &str, prefix: char, sent: u64) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < sent)
}

/// How long reading back `records` records may take: a minute, and more for a long run's
/// millions of records.
fn read_limit(records: usize) -> Duration {
    QUORUM_WAIT_MAX + Duration::from_millis(records as u64 / 10)
}

/// Reads partitions `0..partitions` of `topic` from their start to their end (the high
/// watermark, or the last stable offset for read_committed) within `limit`: each partition's
/// (offset, value) in the order read.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
    limit: Duration,
) -> Result<TopicRead, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-replication-checker")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation.setting())
        .create()
        .map_err(|e| e.to_string())?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let mut read = TopicRead::new();
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + limit;
    while at_end.len() < partitions as usize {
        if Instant::now() >= deadline {
            return Err(format!(
                "never reached the end of every partition within {limit:?} (at the end: \
                 {at_end:?})"
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => read.entry(m.partition()).or_default().push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(format!("consuming: {e}")),
            None => {}
        }
    }
    Ok(read)
}
