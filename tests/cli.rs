//! The command line: help on every command, the version, suggestions for mistyped commands,
//! completion scripts, SLUICE_BOOTSTRAP, the exit codes of usage errors, a reader closing the
//! output early, and invalid settings stopping the start with a message naming the key.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sluice ARGS` with the environment variables `env` set.
fn sluice_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sluice(args: &[&str]) -> Output {
    sluice_with_env(args, &[])
}

/// The subcommands a help text lists under "Commands:", less clap's `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        // An entry is indented by two spaces; a wrapped description, further.
        .filter_map(|line| line.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_and_subcommand_has_help() {
    let mut visited = BTreeSet::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = sluice(&args);
        if path == ["bench"] && !cfg!(feature = "bench") {
            assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
            assert!(out.stderr.contains("--features bench"), "{}", out.stderr);
            visited.insert(path.join(" "));
            continue;
        }
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let usage = format!("Usage: sluice {}", path.join(" "));
        assert!(
            out.stdout.contains(usage.trim_end()),
            "{args:?}: {}",
            out.stdout
        );
        let client = ["topic", "group", "log-dirs", "produce", "consume", "bench"];
        if path.first().is_some_and(|c| client.contains(&c.as_str())) {
            for flag in ["--bootstrap <HOST:PORT>", "SLUICE_BOOTSTRAP", "--json"] {
                assert!(
                    out.stdout.contains(flag),
                    "{args:?} lacks {flag}: {}",
                    out.stdout
                );
            }
        }
        for sub in subcommands(&out.stdout) {
            pending.push(path.iter().cloned().chain([sub]).collect());
        }
        visited.insert(path.join(" "));
    }
    for expected in [
        "",
        "serve",
        "topic",
        "topic create",
        "topic list",
        "topic describe",
        "topic delete",
        "topic add-partitions",
        "topic alter-config",
        "group",
        "group list",
        "group describe",
        "group reset-offsets",
        "group delete",
        "log-dirs",
        "log-dirs describe",
        "produce",
        "consume",
        "bench",
        "completion",
        "version",
    ] {
        assert!(
            visited.contains(expected),
            "no help reached for {expected:?}: {visited:?}"
        );
    }
    assert_eq!(sluice(&["-h"]).code, 0);
    assert_eq!(sluice(&["help", "topic", "create"]).code, 0);
}

#[test]
fn the_help_documents_the_exit_codes_and_the_environment() {
    let help = sluice(&["--help"]).stdout;
    for needle in [
        "Exit codes:",
        "0  success",
        "1  the command failed",
        "2  usage error",
    ] {
        assert!(help.contains(needle), "missing {needle:?}:\n{help}");
    }
    let serve = sluice(&["serve", "--help"]).stdout;
    for env in [
        "SLUICE_LISTEN",
        "SLUICE_DATA_DIR",
        "SLUICE_CORES",
        "SLUICE_CONFIG",
    ] {
        assert!(serve.contains(env), "missing {env}:\n{serve}");
    }
}

#[test]
fn the_version_is_printed() {
    let expected = format!("sluice {}\n", env!("CARGO_PKG_VERSION"));
    for args in [["--version"], ["-V"], ["version"]] {
        let out = sluice(&args);
        assert_eq!((out.code, out.stdout.as_str()), (0, expected.as_str()));
    }
}

#[test]
fn a_mistyped_command_gets_a_suggestion() {
    for (args, suggestion) in [
        (vec!["topc", "list"], "'topic'"),
        (vec!["topic", "lst"], "'list'"),
        (vec!["group", "reset-offset", "g"], "'reset-offsets'"),
    ] {
        let out = sluice(&args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(
            out.stderr.contains("tip: a similar subcommand exists")
                && out.stderr.contains(suggestion),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for (args, needle) in [
        (
            vec!["topic", "list", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (
            vec!["consume", "t", "--nope"],
            "unexpected argument '--nope'",
        ),
        (vec!["produce"], "<TOPIC>"),
        (vec!["topic"], "Usage: sluice topic"),
        (
            vec!["topic", "create", "t", "--partitions", "x"],
            "--partitions",
        ),
        (
            vec!["topic", "create", "t", "--config", "x"],
            "expected KEY=VALUE",
        ),
        (vec!["topic", "alter-config", "t"], "--set"),
        (vec!["topic", "add-partitions", "t"], "--count"),
        (
            vec!["group", "reset-offsets", "g", "--topic", "t"],
            "--to-earliest",
        ),
        (
            vec!["group", "reset-offsets", "g", "--to-latest"],
            "--all-topics",
        ),
        (
            vec!["consume", "t", "--offset", "1", "--from-beginning"],
            "cannot be used",
        ),
        (vec!["consume", "t", "--format", "xml"], "possible values"),
        (vec!["completion", "tcsh"], "possible values"),
        (vec![], "Usage: sluice"),
    ] {
        let out = sluice(&args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

#[cfg(not(feature = "bench"))]
#[test]
fn bench_says_how_to_get_it_in_a_build_without_it() {
    for args in [vec!["bench"], vec!["bench", "produce", "--records", "1"]] {
        let out = sluice(&args);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(
            out.stderr
                .contains("cargo build --release --features bench"),
            "{}",
            out.stderr
        );
    }
}

/// `sluice ... | head` closes the pipe early: the command ends as Unix tools do (SIGPIPE), never
/// with a panic about a failed print.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["completion", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let sigpipe = 13;
    assert!(
        out.status.success() || out.status.signal() == Some(sigpipe),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn completion_scripts_complete_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sluice(&["completion", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        for word in ["sluice", "reset-offsets", "log-dirs", "bootstrap"] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
    }
}

#[test]
fn sluice_bootstrap_names_the_broker_unless_a_flag_does() {
    let broker = common::Broker::start("cli-env", 1, &[]);
    let live = broker.bootstrap();
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = sluice_with_env(
        &["topic", "create", "from-env", "--partitions", "1"],
        &[("SLUICE_BOOTSTRAP", &live)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = sluice_with_env(&["topic", "list"], &[("SLUICE_BOOTSTRAP", &live)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("from-env"), "{}", out.stdout);
    // A broker error (here, no broker) is a failed command: 1.
    let out = sluice_with_env(&["topic", "list"], &[("SLUICE_BOOTSTRAP", &dead)]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains(&dead), "{}", out.stderr);
    // The flag wins, before or after the subcommand.
    for args in [
        ["topic", "--bootstrap", &live, "list"],
        ["topic", "list", "--bootstrap", &live],
    ] {
        let out = sluice_with_env(&args, &[("SLUICE_BOOTSTRAP", &dead)]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
}

fn serve(args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configuration_fails_at_start_with_the_key_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (args, needle) in [
        (vec!["--set", "log.segment.bytes=abc"], "log.segment.bytes"),
        (vec!["--set", "num.partitions=0"], "num.partitions"),
        (vec!["--set", "sluice.log.level=loud"], "sluice.log.level"),
        (vec!["--set", "sluice.log.format=xml"], "sluice.log.format"),
        (vec!["--listen", "nowhere"], "listen"),
        (
            vec![
                "--listen",
                "127.0.0.1:1",
                "--set",
                "listeners=PLAINTEXT://127.0.0.1:2",
            ],
            "listen and listeners are both set",
        ),
        (
            vec!["--set", "listeners=SSL://127.0.0.1:9093"],
            "security is not yet supported",
        ),
        (
            vec!["--set", "advertised.listeners=PLAINTEXT://0.0.0.0:9092"],
            "advertised.listeners",
        ),
        (
            vec![
                "--set",
                "process.roles=controller",
                "--set",
                "listeners=CONTROLLER://127.0.0.1:9093",
                "--set",
                "controller.listener.names=CONTROLLER",
            ],
            "a controller-only node is a voter of a metadata quorum",
        ),
        (
            vec![
                "--set",
                "process.roles=broker",
                "--set",
                "controller.listener.names=CONTROLLER",
                "--set",
                "controller.quorum.bootstrap.servers=127.0.0.1:9093",
            ],
            "controller.quorum.bootstrap.servers alone is not supported yet",
        ),
        (
            vec!["--set", "default.replication.factor=3"],
            "default.replication.factor",
        ),
        (
            vec!["--set", "queued.max.request.bytes=2048"],
            "queued.max.request.bytes",
        ),
        (
            vec!["--config", "/nonexistent/sluice.properties"],
            "config file",
        ),
        (vec!["--frobnicate"], "unexpected argument"),
        (
            vec![
                "--listen",
                &format!("127.0.0.1:{}", busy.local_addr().unwrap().port()),
            ],
            "cannot listen",
        ),
    ] {
        let (code, stderr) = serve(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn the_admin_endpoint_serves_prometheus_metrics_health_and_readiness() {
    let broker = common::Broker::start("admin", 2, &[]);
    let get = |path: &str| broker.admin_get(path);
    // Some traffic first: a record in "m" and a group that committed offset 0 there.
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let name = || TopicName(StrBytes::from_static_str("m"));
    let mut kafka = std::net::TcpStream::connect(broker.bootstrap()).unwrap();
    let topic = metadata_request::MetadataRequestTopic::default().with_name(Some(name()));
    let _: MetadataResponse = common::call(
        &mut kafka,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![topic])),
    );
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name())
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(common::one_record_batch().into())),
            ])]);
    let _: ProduceResponse = common::call(&mut kafka, ApiKey::Produce, 9, &produce);
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
    let _: FindCoordinatorResponse = common::call(&mut kafka, ApiKey::FindCoordinator, 3, &find);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ]),
        ]);
    let committed: OffsetCommitResponse =
        common::call(&mut kafka, ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    for expected in [
        "# TYPE sluice_connections_open gauge",
        "sluice_connections_total{shard=\"0\"}",
        "sluice_connections_total{shard=\"1\"}",
        "sluice_requests_total{shard=",
        "api=\"Metadata\"",
        "sluice_request_seconds{",
        "sluice_partition_records_in_total{shard=",
        "sluice_group_committed_offset{group=\"g\",topic=\"m\",partition=\"0\"} 0",
        "sluice_group_lag{group=\"g\",topic=\"m\",partition=\"0\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    assert_eq!(
        metrics.matches("# TYPE sluice_connections_total").count(),
        1
    );
    assert!(get("/health").ends_with("ok\n"));
    assert!(get("/ready").starts_with("HTTP/1.1 200 OK"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

#[test]
fn the_example_config_starts_a_broker_without_warnings() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sluice.properties");
    // Start through the file (listen, data dir and admin port overridden by flags).
    let dir = std::env::temp_dir().join(format!("sluice-example-config-{}", std::process::id()));
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config", config, "--data-dir"])
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--set", "sluice.admin.listen=none", "--cores", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker did not start"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the broker exited with {status} on the example config");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("is not known to sluice"),
        "unknown keys in the example:\n{log}"
    );
}
