//! The admin CLI (`sluice topic | group | produce | consume`), like Kafka's tools and rpk. It
//! speaks only the Kafka protocol, so it works against any Kafka-compatible cluster: this module
//! parses arguments and dispatches; `client` talks to the brokers; `output` prints.

mod client;
mod consume;
mod group;
mod limits;
mod output;
mod produce;
mod topic;

use anyhow::{bail, Context, Result};
use limits::{COORDINATOR_RETRIES, COORDINATOR_RETRY_BACKOFF};

pub use client::Client;

/// Broker used when `--bootstrap` is not given.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

pub const USAGE: &str = "\
usage: sluice topic create NAME [--partitions N] [--replication-factor N] [--config KEY=VALUE]...
       sluice topic list [--internal]
       sluice topic describe NAME...
       sluice topic delete NAME...
       sluice topic add-partitions NAME --count N
       sluice topic alter-config NAME [--set KEY=VALUE]... [--delete KEY]...
       sluice group list
       sluice group describe GROUP...
       sluice group reset-offsets GROUP (--topic T... | --all-topics)
                  (--to-earliest | --to-latest | --to-offset N | --to-timestamp MS) [--dry-run]
       sluice group delete GROUP...
       sluice produce TOPIC [--file FILE] [--key-separator SEP] [--header KEY=VALUE]... [--partition N]
       sluice consume TOPIC [--partition N] [--from-beginning | --offset N | --timestamp MS]
                  [--group G] [--max-messages N] [--timeout-ms MS] [--format text|json]
                  [--key-separator SEP]
       sluice bench produce|consume|e2e|loopback [options]   (sluice bench --help)

  every command: --bootstrap HOST:PORT (default 127.0.0.1:9092), --json (tables otherwise)
  produce reads one record per line from stdin or --file; consume --group starts from the
  group's committed offsets and commits what it printed (it does not join the group).";

/// Parsed arguments of one command: positionals, flags with values, and switches.
pub struct Args {
    positional: Vec<String>,
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Args {
    /// Splits `args` given the flags that take a value and the switches the command knows;
    /// `--bootstrap` and `--json` are known to all.
    pub fn parse(args: &[String], value_flags: &[&str], switches: &[&str]) -> Result<Args> {
        let mut parsed = Args {
            positional: Vec::new(),
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                parsed.positional.push(arg.clone());
            } else if arg == "--bootstrap" || value_flags.contains(&arg.as_str()) {
                let value = it.next().with_context(|| format!("{arg} needs a value"))?;
                parsed.values.push((arg.clone(), value.clone()));
            } else if arg == "--json" || switches.contains(&arg.as_str()) {
                parsed.switches.push(arg.clone());
            } else {
                bail!("unknown argument {arg:?}\n\n{USAGE}");
            }
        }
        Ok(parsed)
    }

    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    /// The one positional argument, named `what` in the error when missing or repeated.
    pub fn single(&self, what: &str) -> Result<&str> {
        match self.positional.as_slice() {
            [one] => Ok(one),
            [] => bail!("missing {what}\n\n{USAGE}"),
            _ => bail!("expected one {what}, got {:?}", self.positional),
        }
    }

    /// The last value of `flag`.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `flag`, in order.
    pub fn values(&self, flag: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `flag`'s value parsed as a number.
    pub fn number<T: std::str::FromStr>(&self, flag: &str) -> Result<Option<T>> {
        self.value(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{flag} must be a number, got {v:?}"))
            })
            .transpose()
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn json(&self) -> bool {
        self.switch("--json")
    }

    /// Connects to `--bootstrap`.
    pub fn client(&self) -> Result<Client> {
        Client::connect(self.value("--bootstrap").unwrap_or(DEFAULT_BOOTSTRAP))
    }
}

/// Splits `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Runs `command`, again after a pause while a group coordinator is starting or moving (Kafka
/// answers COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR while it creates and loads
/// `__consumer_offsets`); the coordinator refused, so nothing happened the first time.
pub fn while_coordinator_moves<T>(mut command: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match command() {
            Err(err) if client::is_coordinator_moving(&err) && tries < COORDINATOR_RETRIES => {
                tries += 1;
                std::thread::sleep(COORDINATOR_RETRY_BACKOFF);
            }
            result => return result,
        }
    }
}

/// Runs `sluice <command> ...` (`args[0]` is the command).
pub fn run(args: &[String]) -> Result<()> {
    let (command, rest) = args.split_first().context(USAGE)?;
    match command.as_str() {
        "topic" => topic::run(rest),
        "group" => group::run(rest),
        "produce" => produce::run(rest),
        "consume" => consume::run(rest),
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
