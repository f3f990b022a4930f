//! The `sluice` command: `sluice serve` starts the broker (here); `sluice topic | group | produce
//! | consume` are the admin CLI, which works against any Kafka-compatible broker; `sluice bench`
//! is the load generator (the `sluice_bench` crate, with the `bench` feature). `cli` declares
//! the command line; this module runs each command and turns its result into the exit code.

mod cli;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

use cli::{Cli, Command, EXIT_FAILED, EXIT_USAGE};
use sluice_broker::config::{self, Config};
use sluice_broker::{logging, memory, metadata, shard};

/// Written to the data dir after every partition was flushed and closed; its presence at start
/// lets recovery trust index files instead of scanning the logs.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean_shutdown";
const LOCK_FILE: &str = ".lock";
/// How long a start waits for a just-stopped broker's listening socket to go away.
const LISTEN_PROBE_ATTEMPTS: u32 = 30;
const LISTEN_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

fn main() -> ExitCode {
    // Help, --version and usage errors exit here: 0 for help, EXIT_USAGE (2) for errors.
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init("info", "text").expect("the defaults are valid");
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        // Every failure of the broker's start (and of its stop) is a 2, as it always was.
        Command::Serve(args) => exit_status(args.properties().and_then(serve), EXIT_USAGE),
        Command::Admin(command) => exit_status(cli::run(&command), EXIT_FAILED),
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench(&args),
        #[cfg(not(feature = "bench"))]
        Command::Bench(_) => {
            eprintln!("sluice: {}", cli::NO_BENCH);
            ExitCode::from(EXIT_USAGE)
        }
        Command::Completion { shell } => {
            cli::print_completion(shell);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// A command-line tool whose reader goes away (`sluice topic describe | head`) ends as other
/// Unix tools do, killed by SIGPIPE, instead of panicking in `println!` (Rust ignores SIGPIPE by
/// default). Not for `serve`: a broker must see a closed client socket as an error, not die.
fn end_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: SIG_DFL installs no handler code; this runs before any other thread starts.
    if let Err(err) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        tracing::debug!("restoring SIGPIPE: {err}");
    }
}

/// Success, or `failure` once the error is printed.
fn exit_status(result: Result<()>, failure: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sluice: {err:#}");
            ExitCode::from(failure)
        }
    }
}

/// `sluice bench`: options its checks refuse are a usage error (2); a run that failed, or in
/// which any record failed, is a failed command (1).
#[cfg(feature = "bench")]
fn bench(args: &sluice_bench::Bench) -> ExitCode {
    match args.options() {
        Ok(opts) => exit_status(sluice_bench::run(&opts), EXIT_FAILED),
        Err(err) => exit_status(Err(err), EXIT_USAGE),
    }
}

fn serve(props: BTreeMap<String, String>) -> Result<()> {
    // Logging first, so what the config checks say is logged in the chosen format.
    let setting = |key: &str| {
        props
            .get(key)
            .cloned()
            .unwrap_or_else(|| config::default_of(key).to_string())
    };
    logging::init(&setting("sluice.log.level"), &setting("sluice.log.format"))
        .context("invalid configuration")?;
    let config = Config::from_properties(&props).context("invalid configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    raise_open_files_limit();
    let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean_start = marker.exists();
    if config.quorum_voters.is_empty() && !config.quorum_bootstrap_servers.is_empty() {
        bail!(
            "controller.quorum.bootstrap.servers alone is not supported yet: name the voters in \
             controller.quorum.voters (every voter with process.roles=broker,controller; \
             broker-only nodes with process.roles=broker)"
        );
    }
    // This run of the broker, as its registration names it.
    let incarnation = metadata::new_incarnation();
    let image = if config.in_quorum() {
        // The quorum's log holds the metadata; shards start empty and follow what it applies.
        metadata::MetadataImage::new(String::new(), config.log.clone())
    } else {
        metadata::load_or_init(&config, incarnation)?
    };
    if clean_start {
        std::fs::remove_file(&marker).context("removing the clean-shutdown marker")?;
        File::open(&config.data_dir)?.sync_all()?;
    }
    tracing::info!(
        "sluice {} starting: {} shards, data dir {}, {} topics, {} start",
        env!("CARGO_PKG_VERSION"),
        config.cores,
        config.data_dir.display(),
        image.topics.len(),
        if clean_start {
            "clean"
        } else {
            "recovering (no clean-shutdown marker)"
        }
    );
    if !config.process_roles.broker && !config.in_quorum() {
        bail!(
            "process.roles=controller: a controller-only node is a voter of a metadata quorum; \
             name the voters in controller.quorum.voters"
        );
    }
    for listener in config.broker_listeners() {
        let addr = listener
            .socket_addr()
            .with_context(|| format!("resolving {listener}"))?;
        check_listen_address_free(addr)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    if let Some(interval) = config.memory_release_interval {
        memory::start_releasing(interval).context("starting the memory thread")?;
    }
    let data_dir = config.data_dir.clone();
    let clean = shard::runtime::run(config, image, incarnation, clean_start, stop)?;
    if clean {
        File::create(data_dir.join(CLEAN_SHUTDOWN_MARKER))?.sync_all()?;
        File::open(&data_dir)?.sync_all()?;
        tracing::info!("stopped cleanly");
        Ok(())
    } else {
        // No marker, and a non-zero exit status for whatever supervises the broker.
        bail!("stopped with errors: the next start will recover the logs")
    }
}

/// The shards bind with SO_REUSEPORT, which would silently share the port with another broker
/// that did the same (or fail on only some shards). Anything already accepting connections on the
/// address is therefore refused up front with a clear error.
fn check_listen_address_free(listen: std::net::SocketAddr) -> Result<()> {
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // A broker that just exited can leave its listening socket alive for a moment (io_uring
    // tears down its pending accepts asynchronously), so only a listener that stays is refused.
    for _ in 0..LISTEN_PROBE_ATTEMPTS {
        if std::net::TcpStream::connect_timeout(&probe, LISTEN_PROBE_INTERVAL).is_err() {
            return Ok(());
        }
        std::thread::sleep(LISTEN_PROBE_INTERVAL);
    }
    bail!("cannot listen on {listen}: something is already listening there")
}

/// One broker per data dir: an exclusive advisory lock held for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    let file = File::create(dir.join(LOCK_FILE))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            anyhow::anyhow!(
                "data dir {} is in use by another sluice ({errno})",
                dir.display()
            )
        },
    )
}

/// Every segment file of every partition stays open (and each connection takes one more), so
/// the soft limit on open files is raised to the hard one, as Kafka's scripts advise operators
/// to do; the systemd unit sets the hard limit (`LimitNOFILE`).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!("open files limit raised from {soft} to {hard}"),
            Err(err) => tracing::warn!("open files limit stays {soft}: {err}"),
        },
        Ok((soft, _)) => tracing::info!("open files limit {soft}"),
        Err(err) => tracing::warn!("cannot read the open files limit: {err}"),
    }
}

/// Blocks SIGTERM and SIGINT in every thread (the shards inherit the mask) and waits for them on a
/// dedicated thread, which asks the shards to stop.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                tracing::info!("{signal:?} received: flushing and stopping");
                stop.store(true, Ordering::Relaxed);
            }
        })?;
    Ok(())
}
