//! `sluice bench produce | consume | e2e | loopback`: a load generator for any Kafka-compatible
//! broker, built on librdkafka (the reference client) and run on plain OS threads, each producer
//! and consumer its own client. Sending is open loop (see `schedule`): latency counts from each
//! record's intended send time, so a slow broker cannot hide behind coordinated omission.
//!
//! This module parses the options and dispatches; `produce`, `consume`, `e2e` and `loopback` are
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

mod args;

use args::{key_value, Args};
use limits::{ALLOCATOR_MMAP_THRESHOLD_BYTES, ALLOCATOR_TRIM_THRESHOLD_BYTES, CLIENTS_MAX};
use report::Report;
use schedule::Limit;

pub const USAGE: &str = "\
usage: sluice bench produce|consume|e2e|loopback [--bootstrap HOST:PORT] [--topic T]
                  [--size BYTES] [--records N | --duration SECS] [--rate N] [--warmup SECS]
                  [--partitions N] [--acks 0|1|all] [--producers N] [--consumers N]
                  [--keys none|random|round-robin] [--batch-size BYTES] [--linger-ms MS]
                  [--reader librdkafka|fetch] [--set KEY=VALUE]... [--cpus LIST] [--json]
                  [--html FILE] [--progress]

  produce    records of --size bytes from --producers clients; delivery latency (intended
             send time -> acknowledgement)
  consume    catch-up read from the beginning by --consumers clients of everything the topic
             holds; an empty topic is first filled with --records (or --duration) records
  e2e        producers at --rate, consumers reading as they go; end-to-end latency (intended
             send time, carried in the first 8 bytes of each value -> receipt)
  loopback   baseline without a broker: bytes through one loopback TCP connection

  --topic      existing topic to use (created with --partitions if absent; default: a fresh one)
  --records N  measured records (default for consume and loopback: 1000000, i.e. the bytes)
  --duration   seconds of measured sending (default for produce and e2e: 10)
  --rate N     records/s in total on a fixed timetable (default: as fast as possible)
  --warmup S   seconds sent first and not measured (default 0)
  --keys       none: no key, partitions in turn; random or round-robin: keys from a space of
               10,000, partitioned by murmur2 like the Java client (default none)
  --reader     consume with librdkafka (default), or with plain Fetch requests that step
               through record batches by their headers, as a follower does: what the broker
               serves apart from the client's per-record cost (MB/s then counts whole batches)
  --set K=V    any librdkafka property, for every client
  --cpus LIST  pin the generator (every client thread) to these cores, e.g. 2,3 or 4-7; the
               broker's shards take cores 0..N-1, so pin the generator elsewhere when you can
  --progress   a progress bar on stderr, updated every second (default when stderr is a terminal)

  defaults: --bootstrap 127.0.0.1:9092 --size 1024 --partitions 1 --acks all --producers 1
  --consumers 1 --batch-size 1000000 --linger-ms 5 (librdkafka's). Prints msgs/s, MB/s (10^6
  bytes) and latency percentiles, or with --json one object (msgs_per_sec, mb_per_sec, p50_ms,
  p90_ms, p99_ms, p999_ms, p9999_ms, max_ms, records, errors and the workload); exits 1 when
  any record failed.";

/// Flags that take a value (`--bootstrap` is known to every command).
const VALUE_FLAGS: &[&str] = &[
    "--topic",
    "--size",
    "--records",
    "--duration",
    "--rate",
    "--warmup",
    "--partitions",
    "--acks",
    "--producers",
    "--consumers",
    "--keys",
    "--batch-size",
    "--linger-ms",
    "--reader",
    "--set",
    "--cpus",
    "--html",
];

const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";
const DEFAULT_SIZE_BYTES: usize = 1024;
/// Measured records of a catch-up read (and its loopback baseline): 1 GB of 1 KiB records.
const DEFAULT_BACKLOG_RECORDS: u64 = 1_000_000;
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// librdkafka's own defaults, set explicitly so every broker sees the same client.
const DEFAULT_BATCH_SIZE_BYTES: u64 = 1_000_000;
const DEFAULT_LINGER_MS: u64 = 5;

/// How records are keyed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keys {
    /// No key; the generator spreads records over the partitions in turn.
    None,
    /// A key drawn at random from `KEY_SPACE`.
    Random,
    /// The keys of `KEY_SPACE` in turn.
    RoundRobin,
}

/// What a catch-up consumer reads with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reader {
    /// A librdkafka consumer, the reference client.
    Librdkafka,
    /// Plain Fetch requests, batches stepped through by their headers (`fetch`).
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

impl Options {
    fn parse(workload: &str, args: &[String]) -> Result<Options> {
        let args = Args::parse(args, VALUE_FLAGS, &["--progress"])?;
        ensure!(
            args.positional().is_empty(),
            "unexpected arguments {:?}\n\n{USAGE}",
            args.positional()
        );
        let opts = Options {
            workload: workload.to_string(),
            bootstrap: args
                .value("--bootstrap")
                .unwrap_or(DEFAULT_BOOTSTRAP)
                .to_string(),
            topic: args.value("--topic").map(str::to_string),
            size: args.number("--size")?.unwrap_or(DEFAULT_SIZE_BYTES),
            limit: limit(&args, workload)?,
            rate: args.number("--rate")?,
            warmup: seconds(args.number("--warmup")?.unwrap_or(0.0), "--warmup")?,
            partitions: args.number("--partitions")?.unwrap_or(1),
            acks: acks(args.value("--acks").unwrap_or("all"))?,
            producers: args.number("--producers")?.unwrap_or(1),
            consumers: args.number("--consumers")?.unwrap_or(1),
            keys: keys(args.value("--keys").unwrap_or("none"))?,
            batch_size: args
                .number("--batch-size")?
                .unwrap_or(DEFAULT_BATCH_SIZE_BYTES),
            linger_ms: args.number("--linger-ms")?.unwrap_or(DEFAULT_LINGER_MS),
            reader: reader(args.value("--reader").unwrap_or("librdkafka"))?,
            client_settings: args
                .values("--set")
                .into_iter()
                .map(|kv| key_value(kv).map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Result<_>>()?,
            cpus: args.value("--cpus").map(cpu_list).transpose()?,
            json: args.json(),
            html: args.value("--html").map(PathBuf::from),
            progress: args.switch("--progress") || std::io::stderr().is_terminal(),
        };
        opts.check()?;
        Ok(opts)
    }

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

/// `--records` or `--duration`, or the workload's default.
fn limit(args: &Args, workload: &str) -> Result<Limit> {
    match (args.number("--records")?, args.number::<f64>("--duration")?) {
        (Some(_), Some(_)) => bail!("give --records or --duration, not both"),
        (Some(n), None) => Ok(Limit::Records(n)),
        (None, Some(secs)) => Ok(Limit::Duration(seconds(secs, "--duration")?)),
        (None, None) if matches!(workload, "consume" | "loopback") => {
            Ok(Limit::Records(DEFAULT_BACKLOG_RECORDS))
        }
        (None, None) => Ok(Limit::Duration(DEFAULT_DURATION)),
    }
}

fn seconds(secs: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(secs).with_context(|| format!("{flag} must be seconds >= 0"))
}

fn acks(value: &str) -> Result<String> {
    match value {
        "0" | "1" | "all" => Ok(value.to_string()),
        "-1" => Ok("all".to_string()),
        other => bail!("--acks must be 0, 1 or all, got {other:?}"),
    }
}

fn keys(value: &str) -> Result<Keys> {
    match value {
        "none" => Ok(Keys::None),
        "random" => Ok(Keys::Random),
        "round-robin" => Ok(Keys::RoundRobin),
        other => bail!("--keys must be none, random or round-robin, got {other:?}"),
    }
}

fn reader(value: &str) -> Result<Reader> {
    match value {
        "librdkafka" => Ok(Reader::Librdkafka),
        "fetch" => Ok(Reader::Fetch),
        other => bail!("--reader must be librdkafka or fetch, got {other:?}"),
    }
}

/// `2,3` or `4-7` or a mix: the cores, in order, without repeats.
fn cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("--cpus: {s:?} is not a core number"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        ensure!(first <= last, "--cpus: range {part:?} runs backwards");
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

/// Runs `sluice bench <workload> ...` (`args[0]` is the workload).
pub fn run(args: &[String]) -> Result<()> {
    let Some((workload, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    if matches!(workload.as_str(), "--help" | "-h" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let opts = Options::parse(workload, rest)?;
    if let Some(cpus) = &opts.cpus {
        pin(cpus)?;
    }
    keep_freed_memory();
    let report = match workload.as_str() {
        "produce" => produce::run(&opts)?,
        "consume" => consume::run(&opts)?,
        "e2e" => e2e::run(&opts)?,
        "loopback" => loopback::run(&opts)?,
        other => bail!("unknown workload {other:?}\n\n{USAGE}"),
    };
    publish(&opts, &report)
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
    }

    #[test]
    fn cpu_lists_take_numbers_and_ranges() {
        assert_eq!(cpu_list("2,3").unwrap(), [2, 3]);
        assert_eq!(cpu_list("4-6,1,5").unwrap(), [4, 5, 6, 1]);
        assert!(cpu_list("3-1").is_err());
        assert!(cpu_list("x").is_err());
    }
}
