//! The `sluice` command line, on clap: the command tree (`Cli`), the exit codes it documents, the
//! flags every client command shares (`ClientFlags`) and the admin CLI (`sluice topic | group |
//! log-dirs | produce | consume`), like Kafka's tools and rpk. The admin commands speak only the Kafka
//! protocol, so they work against any Kafka-compatible cluster: each command's module declares
//! its arguments and runs them; `client` talks to the brokers; `output` prints. `main` runs the
//! commands that are not admin commands and turns results into exit codes.

mod client;
mod consume;
mod group;
mod limits;
mod log_dirs;
mod output;
mod produce;
mod reassign;
mod serve;
mod topic;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use limits::{COORDINATOR_RETRIES, COORDINATOR_RETRY_BACKOFF};

pub use client::Client;
pub use serve::ServeArgs;

/// Broker used when neither `--bootstrap` nor `SLUICE_BOOTSTRAP` names one.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Exit status of a command that failed (a broker error, a failed record).
pub const EXIT_FAILED: u8 = 1;
/// Exit status of a usage error: clap's own for bad arguments, and ours for the checks it
/// cannot make (`sluice bench`'s option checks) and for every failure of `sluice serve`.
pub const EXIT_USAGE: u8 = 2;

/// Printed under `sluice --help` (and in the README), since scripts and supervisors act on them.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command failed: a broker answered with an error, a connection failed, a record
     was not acknowledged (sluice bench: any record failed)
  2  usage error: an unknown command or flag, a missing or invalid value; and sluice serve
     when the broker cannot start (configuration, data dir, listen address) or stops with
     errors

Environment: SLUICE_BOOTSTRAP (--bootstrap of every client command), SLUICE_LISTEN,
SLUICE_DATA_DIR, SLUICE_CORES, SLUICE_CONFIG (sluice serve), SLUICE_LOG=debug|info|warn|error
(the broker's log level). A flag given wins over its variable.";

/// A Kafka-compatible streaming broker, its admin tools and its load generator.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, after_help = EXIT_CODES)]
// A flag given twice takes its last value, as the hand-written parser did.
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(AdminCommand),
    #[cfg(feature = "bench")]
    Bench(sluice_bench::Bench),
    /// Load generator: not in this build (cargo build --release --features bench)
    #[cfg(not(feature = "bench"))]
    Bench(NoBench),
    /// Print a shell completion script
    ///
    /// For example: sluice completion bash > /etc/bash_completion.d/sluice, or
    /// sluice completion zsh > "${fpath[1]}/_sluice".
    Completion {
        /// The shell to complete in
        shell: Shell,
    },
    /// Print the version
    Version,
}

/// The admin CLI's commands: they connect to `--bootstrap` and print tables, or JSON with
/// `--json`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, describe and delete topics; add partitions; alter configs
    Topic(topic::TopicArgs),
    /// List, describe and delete consumer groups; reset their committed offsets
    Group(group::GroupArgs),
    /// Describe the brokers' log dirs: partition sizes and damaged ranges
    LogDirs(log_dirs::LogDirsArgs),
    Produce(produce::ProduceArgs),
    Consume(consume::ConsumeArgs),
}

/// What `sluice bench` takes in a build without the load generator: anything at all, so that
/// the command can say how to get it instead of clap's "unrecognized subcommand".
#[cfg(not(feature = "bench"))]
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct NoBench {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

/// What `sluice bench` says in a build without the load generator.
#[cfg(not(feature = "bench"))]
pub const NO_BENCH: &str = "this sluice was built without the load generator (sluice bench); \
build it with: cargo build --release --features bench";

/// `--bootstrap` and `--json`, which every client command takes. They are global, so they may
/// follow a subcommand (`sluice topic list --json`) as well as precede it.
#[derive(Args, Debug)]
pub struct ClientFlags {
    /// Broker to bootstrap from
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "SLUICE_BOOTSTRAP",
        default_value = DEFAULT_BOOTSTRAP
    )]
    bootstrap: String,
    /// Print JSON instead of text tables
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientFlags {
    /// Connects to `--bootstrap`.
    pub fn client(&self) -> Result<Client> {
        Client::connect(&self.bootstrap)
    }
}

/// Splits `KEY=VALUE` (clap's value parser for the admin commands' repeatable settings).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
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

/// Runs an admin command.
pub fn run(command: &AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Topic(args) => topic::run(args),
        AdminCommand::Group(args) => group::run(args),
        AdminCommand::LogDirs(args) => log_dirs::run(args),
        AdminCommand::Produce(args) => produce::run(args),
        AdminCommand::Consume(args) => consume::run(args),
    }
}

/// Writes `shell`'s completion script for the whole command tree to stdout.
pub fn print_completion(shell: Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        // clap's own checks: conflicting names, groups naming unknown args, and so on.
        Cli::command().debug_assert();
    }
}
