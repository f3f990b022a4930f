//! `sluice bench produce | consume | e2e | loopback`: a load generator for any Kafka-compatible
//! broker, built on librdkafka (the reference client) and run on plain OS threads, each producer
//! and consumer its own client. Sending is open loop (see `schedule`): latency counts from each
//! record's intended send time, so a slow broker cannot hide behind coordinated omission.
//!
//! This module declares the command line (`Bench`, embedded by the `sluice` command), checks the
//! options and dispatches; `produce`, `consume`, `e2e` and `loopback` are
//! the workloads, `clients` sets up librdkafka and the topic, `recorder` measures, `report`
//! prints the summary or JSON and `html` the report with plots.

mod clients;
mod consume;
mod e2e;
mod fetch;
mod html;
mod limits;
mod loopback;
mod produce;
mod progress;
mod recorder;
mod report;
mod schedule;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};

use limits::{ALLOCATOR_MMAP_THRESHOLD_BYTES, ALLOCATOR_TRIM_THRESHOLD_BYTES, CLIENTS_MAX};
use report::Report;
use schedule::Limit;

/// What `sluice bench --help` says below the options.
const AFTER_HELP: &str = "\
Prints msgs/s, MB/s (10^6 bytes) and latency percentiles, or with --json one object
(msgs_per_sec, mb_per_sec, p50_ms, p90_ms, p99_ms, p999_ms, p9999_ms, max_ms, records, errors
and the workload). Exits 1 when any record failed, 2 on invalid options.";

const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
const DEFAULT_SIZE_BYTES: usize = 1024;
/// Measured records of a catch-up read (and its loopback baseline): 1 GB of 1 KiB records.
const DEFAULT_BACKLOG_RECORDS: u64 = 1_000_000;
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// librdkafka's own defaults, set explicitly so every broker sees the same client.
const DEFAULT_BATCH_SIZE_BYTES: u64 = 1_000_000;
const DEFAULT_LINGER_MS: u64 = 5;

/// Load generator for any Kafka-compatible broker (librdkafka)
///
/// Each producer and consumer is its own librdkafka client on its own thread. With --rate,
/// records are sent on a fixed timetable and latency counts from each record's intended send
/// time, so a slow broker cannot hide behind coordinated omission.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Bench {
    /// What to measure
    #[arg(value_enum)]
    workload: Workload,
    /// Broker to bootstrap from
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "SLUICE_BOOTSTRAP",
        default_value = DEFAULT_BOOTSTRAP
    )]
    bootstrap: String,
    /// Existing topic to use, created with --partitions if absent [default: a fresh one]
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Bytes of each record's value
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SIZE_BYTES)]
    size: usize,
    /// Measured records [default for consume and loopback: 1000000]
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    records: Option<u64>,
    /// Seconds of measured sending [default for produce and e2e: 10]
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    duration: Option<Duration>,
    /// Records/s in total on a fixed timetable [default: as fast as possible]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    rate: Option<f64>,
    /// Seconds sent first and not measured
    #[arg(long, value_name = "SECS", value_parser = seconds, default_value = "0")]
    warmup: Duration,
    /// Partitions of the topic the run creates
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    partitions: i32,
    /// Acknowledgements a produce waits for: 0, 1 or all (-1)
    #[arg(
        long,
        value_name = "ACKS",
        default_value = "all",
        value_parser = acks,
        allow_negative_numbers = true
    )]
    acks: String,
    /// Producer clients
    #[arg(long, value_name = "N", default_value_t = 1)]
    producers: usize,
    /// Consumer clients
    #[arg(long, value_name = "N", default_value_t = 1)]
    consumers: usize,
    /// How records are keyed (keys are partitioned by murmur2, like the Java client does)
    #[arg(long, value_enum, default_value_t = Keys::None)]
    keys: Keys,
    /// librdkafka's batch.size
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BATCH_SIZE_BYTES)]
    batch_size: u64,
    /// librdkafka's linger.ms
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_LINGER_MS)]
    linger_ms: u64,
    /// What consume reads with
    #[arg(long, value_enum, default_value_t = Reader::Librdkafka)]
    reader: Reader,
    /// Any librdkafka property, for every client (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    settings: Vec<(String, String)>,
    /// Pin the generator (every client thread) to these cores, e.g. 2,3 or 4-7; the broker's
    /// shards take cores 0..N-1, so pin the generator elsewhere when you can
    #[arg(long, value_name = "LIST", value_parser = cpu_list)]
    // Fully qualified, so that clap takes the list as one value rather than as repeated ones.
    cpus: Option<::std::vec::Vec<usize>>,
    /// Print one JSON object instead of the summary
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with latency plots to FILE
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// A progress bar on stderr, updated every second [default when stderr is a terminal]
    #[arg(long)]
    progress: bool,
}

/// The workloads.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// Records of --size bytes from --producers clients; delivery latency (intended send time ->
    /// acknowledgement)
    Produce,
    /// Catch-up read from the beginning by --consumers clients of everything the topic holds; an
    /// empty topic is first filled with --records (or --duration) records
    Consume,
    /// Producers at --rate, consumers reading as they go; end-to-end latency (intended send
    /// time, carried in the first 8 bytes of each value -> receipt)
    E2e,
    /// Baseline without a broker: bytes through one loopback TCP connection
    Loopback,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::E2e => "e2e",
            Workload::Loopback => "loopback",
        }
    }

    /// How much is measured when neither --records nor --duration says.
    fn default_limit(self) -> Limit {
        match self {
            Workload::Consume | Workload::Loopback => Limit::Records(DEFAULT_BACKLOG_RECORDS),
            Workload::Produce | Workload::E2e => Limit::Duration(DEFAULT_DURATION),
        }
    }
}

/// How records are keyed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Keys {
    /// No key; the generator spreads records over the partitions in turn.
    None,
    /// A key drawn at random from 10,000 keys.
    Random,
    /// The 10,000 keys in turn.
    RoundRobin,
}

/// What a catch-up consumer reads with.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Reader {
    /// A librdkafka consumer, the reference client.
    Librdkafka,
    /// Plain Fetch requests, stepping through the record batches by their headers as a
    /// follower does: what the broker serves apart from the client's per-record cost
    /// (MB/s then counts whole batches).
    Fetch,
}

/// Everything a workload needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    pub workload: String,
    pub bootstrap: String,
    pub topic: Option<String>,
    pub size: usize,
    pub limit: Limit,
    /// Records/s in total; `None` is as fast as possible.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub partitions: i32,
    pub acks: String,
    pub producers: usize,
    pub consumers: usize,
    pub keys: Keys,
    pub batch_size: u64,
    pub linger_ms: u64,
    pub reader: Reader,
    /// librdkafka properties for every client.
    pub client_settings: Vec<(String, String)>,
    pub cpus: Option<Vec<usize>>,
    pub json: bool,
    pub html: Option<PathBuf>,
    pub progress: bool,
}

impl Bench {
    /// The options of the run: the flags, with the workload's defaults, checked.
    pub fn options(&self) -> Result<Options> {
        let opts = Options {
            workload: self.workload.name().to_string(),
            bootstrap: self.bootstrap.clone(),
            topic: self.topic.clone(),
            size: self.size,
            limit: match (self.records, self.duration) {
                (Some(records), _) => Limit::Records(records),
                (_, Some(duration)) => Limit::Duration(duration),
                (None, None) => self.workload.default_limit(),
            },
            rate: self.rate,
            warmup: self.warmup,
            partitions: self.partitions,
            acks: self.acks.clone(),
            producers: self.producers,
            consumers: self.consumers,
            keys: self.keys,
            batch_size: self.batch_size,
            linger_ms: self.linger_ms,
            reader: self.reader,
            client_settings: self.settings.clone(),
            cpus: self.cpus.clone(),
            json: self.json,
            html: self.html.clone(),
            progress: self.progress || std::io::stderr().is_terminal(),
        };
        opts.check()?;
        Ok(opts)
    }
}

impl Options {
    fn check(&self) -> Result<()> {
        if let Some(rate) = self.rate {
            ensure!(rate.is_finite() && rate > 0.0, "--rate must be above 0");
        }
        ensure!(self.partitions >= 1, "--partitions must be at least 1");
        for (flag, n) in [
            ("--producers", self.producers),
            ("--consumers", self.consumers),
        ] {
            ensure!(
                (1..=CLIENTS_MAX).contains(&n),
                "{flag} must be 1 to {CLIENTS_MAX}"
            );
        }
        ensure!(self.size >= 1, "--size must be at least 1");
        Ok(())
    }
}

/// `--duration` and `--warmup`: seconds, fractions allowed.
fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| "must be a number of seconds >= 0".to_string())
}

/// `--acks`: librdkafka's `acks`, with -1 spelled all.
fn acks(value: &str) -> Result<String, String> {
    match value {
        "0" | "1" | "all" => Ok(value.to_string()),
        "-1" => Ok("all".to_string()),
        _ => Err("must be 0, 1 or all (-1 is all)".to_string()),
    }
}

/// Splits `KEY=VALUE` (`--set`).
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// `2,3` or `4-7` or a mix: the cores, in order, without repeats.
fn cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{s:?} is not a core number"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        ensure!(first <= last, "range {part:?} runs backwards");
        for cpu in first..=last {
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
    }
    Ok(cpus)
}

/// Confines this process, and so every thread it starts later (librdkafka's included, as
/// threads inherit their creator's mask), to `cpus`.
fn pin(cpus: &[usize]) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .with_context(|| format!("--cpus: no core {cpu}"))?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning to cores {cpus:?}"))
}

/// Makes glibc's allocator keep what the clients free instead of handing it back to the
/// kernel. By default it serves a large block (a consumer's 13-16 MB fetch response, say) from
/// its own mapping or trims its heap once twice that much is free; either way the next block is
/// faulted in and zeroed page by page again. Whether that happens depended on how the broker
/// timed its responses, so a librdkafka consumer read the same backlog from the same broker at
/// 990 or 1,410 MB/s from run to run: the generator measured glibc's trimming, not the broker
/// (docs/performance.md, "Catch-up reads"). Failing leaves the default, so it is ignored.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; no allocation is in progress on
    // another thread yet (the clients start later).
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, ALLOCATOR_MMAP_THRESHOLD_BYTES);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, ALLOCATOR_TRIM_THRESHOLD_BYTES);
    }
}

/// Runs the workload `opts` names (see [`Bench::options`]).
pub fn run(opts: &Options) -> Result<()> {
    if let Some(cpus) = &opts.cpus {
        pin(cpus)?;
    }
    keep_freed_memory();
    let report = match opts.workload.as_str() {
        "produce" => produce::run(opts)?,
        "consume" => consume::run(opts)?,
        "e2e" => e2e::run(opts)?,
        "loopback" => loopback::run(opts)?,
        other => bail!("unknown workload {other:?}"),
    };
    publish(opts, &report)
}

/// `sluice bench` as the root command embeds it, for the unit tests.
#[cfg(test)]
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct TestCommand {
    #[command(flatten)]
    bench: Bench,
}

#[cfg(test)]
impl Options {
    /// The options `sluice bench WORKLOAD ARGS...` runs with.
    fn parse(workload: &str, args: &[String]) -> Result<Options> {
        use clap::Parser;
        let argv = ["bench", workload]
            .into_iter()
            .chain(args.iter().map(String::as_str));
        TestCommand::try_parse_from(argv)?.bench.options()
    }
}

/// Prints the report (and writes the HTML one); fails when records failed.
fn publish(opts: &Options, report: &Report) -> Result<()> {
    if let Some(path) = &opts.html {
        std::fs::write(path, html::render(report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if opts.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.summary());
    }
    ensure!(report.errors == 0, "{} records failed", report.errors);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(workload: &str, args: &[&str]) -> Result<Options> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Options::parse(workload, &args)
    }

    #[test]
    fn defaults_depend_on_the_workload() {
        let produce = parse("produce", &[]).unwrap();
        assert_eq!(produce.limit, Limit::Duration(DEFAULT_DURATION));
        assert_eq!((produce.size, produce.acks.as_str()), (1024, "all"));
        let consume = parse("consume", &[]).unwrap();
        assert_eq!(consume.limit, Limit::Records(DEFAULT_BACKLOG_RECORDS));
    }

    #[test]
    fn options_are_checked() {
        assert!(parse("produce", &["--records", "5", "--duration", "1"]).is_err());
        assert!(parse("produce", &["--acks", "2"]).is_err());
        assert!(parse("produce", &["--rate", "0"]).is_err());
        assert!(parse("produce", &["--producers", "0"]).is_err());
        assert!(parse("produce", &["--keys", "sorted"]).is_err());
        assert!(parse("produce", &["stray"]).is_err());
        assert!(parse("consume", &["--reader", "kcat"]).is_err());
        assert!(parse("scan", &[]).is_err());
        assert!(parse("produce", &["--duration", "-1"]).is_err());
        assert_eq!(
            parse("consume", &["--reader", "fetch"]).unwrap().reader,
            Reader::Fetch
        );
        let o = parse(
            "e2e",
            &["--acks", "-1", "--rate", "5000", "--keys", "random"],
        )
        .unwrap();
        assert_eq!(
            (o.acks.as_str(), o.rate, o.keys),
            ("all", Some(5000.0), Keys::Random)
        );
        let o = parse("produce", &["--size", "10", "--size", "20", "--set", "a=b"]).unwrap();
        assert_eq!(o.size, 20, "the last of a repeated flag wins");
        assert_eq!(o.client_settings, [("a".to_string(), "b".to_string())]);
        let o = parse("loopback", &["--duration", "1.5", "--cpus", "0-1"]).unwrap();
        assert_eq!(o.limit, Limit::Duration(Duration::from_millis(1500)));
        assert_eq!(o.cpus, Some(vec![0, 1]));
    }

    #[test]
    fn cpu_lists_take_numbers_and_ranges() {
        assert_eq!(cpu_list("2,3").unwrap(), [2, 3]);
        assert_eq!(cpu_list("4-6,1,5").unwrap(), [4, 5, 6, 1]);
        assert!(cpu_list("3-1").is_err());
        assert!(cpu_list("x").is_err());
    }
}
