//! The admin CLI (`sluice topic | group | produce | consume`) against the real broker: every
//! command through the real binary, checking both the tables and the `--json` output. The same
//! commands run against Apache Kafka in `tests/cli_kafka/run.sh` (the ignored test below): the
//! CLI speaks only the Kafka protocol, so it must work against any Kafka-compatible broker.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Broker;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sluice ARGS --bootstrap ...` (ARGS split at spaces) with `stdin` piped in.
fn sluice(bootstrap: &str, args: &str, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args.split_whitespace())
        .arg("--bootstrap")
        .arg(bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ok`, repeated until `done` holds for the output or 10 s have passed (then the last output).
fn ok_eventually(bootstrap: &str, args: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = ok(bootstrap, args);
        if done(&out) || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs a command that must succeed and returns its stdout.
fn ok(bootstrap: &str, args: &str) -> String {
    ok_with_input(bootstrap, args, "")
}

fn ok_with_input(bootstrap: &str, args: &str, stdin: &str) -> String {
    let out = sluice(bootstrap, args, stdin);
    assert_eq!(
        out.code, 0,
        "sluice {args} failed: {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// Runs a command that must fail and returns its stderr.
fn fails(bootstrap: &str, args: &str) -> String {
    let out = sluice(bootstrap, args, "");
    assert_ne!(out.code, 0, "sluice {args} should fail: {}", out.stdout);
    out.stderr
}

/// Every integer that follows `"key":` in a JSON text, in order.
fn numbers(json: &str, key: &str) -> Vec<i64> {
    let needle = format!("\"{key}\":");
    json.match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &json[i + needle.len()..];
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// The table row whose cells start with `cells`.
fn row<'a>(table: &'a str, cells: &[&str]) -> Option<&'a str> {
    table.lines().find(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.len() >= cells.len() && words[..cells.len()] == *cells
    })
}

#[test]
fn every_cli_command_against_the_broker() {
    let broker = Broker::start("cli-tools", 2, &[]);
    every_cli_command(&broker.bootstrap());
}

/// Run by tests/cli_kafka/run.sh with SLUICE_TEST_KAFKA_BOOTSTRAP naming a fresh Apache Kafka.
#[test]
#[ignore = "needs Apache Kafka: tests/cli_kafka/run.sh"]
fn every_cli_command_against_apache_kafka() {
    let bootstrap = std::env::var("SLUICE_TEST_KAFKA_BOOTSTRAP")
        .expect("SLUICE_TEST_KAFKA_BOOTSTRAP names the Kafka broker to test against");
    every_cli_command(&bootstrap);
}

fn every_cli_command(b: &str) {
    // topic create / list / describe / add-partitions / alter-config
    let out = ok(
        b,
        "topic create orders --partitions 3 --config retention.ms=86400000",
    );
    assert!(
        out.contains("created topic orders with 3 partitions"),
        "{out}"
    );
    ok(b, "topic create notes --partitions 1");
    let err = fails(b, "topic create orders");
    assert!(err.contains("TOPIC_ALREADY_EXISTS (36)"), "{err}");
    // Kafka answers CreateTopics before its metadata cache holds the topic: list until it does.
    let out = ok_eventually(b, "topic list", |out| {
        row(out, &["orders", "3"]).is_some() && row(out, &["notes", "1"]).is_some()
    });
    assert!(row(&out, &["TOPIC", "PARTITIONS", "ID"]).is_some(), "{out}");
    assert!(row(&out, &["orders", "3"]).is_some(), "{out}");
    assert!(row(&out, &["notes", "1"]).is_some(), "{out}");
    let out = ok(b, "topic list --json");
    assert!(out.contains(r#"{"topic":"orders","id":""#), "{out}");
    assert_eq!(numbers(&out, "partitions"), [1, 3], "{out}");

    // Explicit replica assignments (kafka-topics.sh's format): the brokers must exist. Both
    // Sluice and the Kafka that tests/cli_kafka/run.sh starts are node 1.
    let out = ok(b, "topic create placed --replica-assignment 1,1");
    assert!(
        out.contains("created topic placed with 2 partitions"),
        "{out}"
    );
    let out = ok(
        b,
        "topic add-partitions placed --count 3 --replica-assignment 1",
    );
    assert!(out.contains("now has 3 partitions"), "{out}");
    let err = fails(b, "topic create misplaced --replica-assignment 1:101");
    assert!(err.contains("INVALID_REPLICA_ASSIGNMENT (39)"), "{err}");
    assert!(
        err.contains("includes broker 101, but no such broker"),
        "{err}"
    );
    let err = fails(
        b,
        "topic add-partitions placed --count 5 --replica-assignment 1",
    );
    assert!(err.contains("INVALID_REPLICA_ASSIGNMENT (39)"), "{err}");

    let out = ok(b, "topic add-partitions orders --count 4");
    assert!(out.contains("now has 4 partitions"), "{out}");
    let err = fails(b, "topic add-partitions orders --count 2");
    assert!(err.contains("INVALID_PARTITIONS (37)"), "{err}");
    ok(b, "topic alter-config orders --set retention.ms=123456");
    let out = ok(b, "topic describe orders");
    for p in ["0", "1", "2", "3"] {
        assert!(
            row(&out, &[p, "1", "1", "1", "0", "0", "0"]).is_some(),
            "{out}"
        );
    }
    assert!(
        row(&out, &["retention.ms", "123456", "DYNAMIC_TOPIC_CONFIG"]).is_some(),
        "{out}"
    );
    let out = ok(b, "topic describe orders --json");
    assert_eq!(numbers(&out, "partition"), [0, 1, 2, 3], "{out}");
    assert!(
        out.contains(r#""retention.ms":{"value":"123456","source":"DYNAMIC_TOPIC_CONFIG"}"#),
        "{out}"
    );

    // produce: keyed lines with a header from stdin; unkeyed lines from a file to one partition
    let lines: String = (0..10)
        .map(|i| format!("key-{i}:value \"{i}\"\n"))
        .collect();
    let out = ok_with_input(
        b,
        "produce orders --key-separator : --header source=test",
        &lines,
    );
    assert_eq!(out.trim(), "10 records acknowledged by orders");
    let file = std::env::temp_dir().join(format!("sluice-cli-input-{}.txt", std::process::id()));
    std::fs::write(&file, "first\nsecond\n").unwrap();
    let out = ok(
        b,
        &format!(
            "produce notes --file {} --partition 0 --json",
            file.display()
        ),
    );
    assert_eq!(out.trim(), r#"{"topic":"notes","acknowledged":2}"#);
    let out = ok(b, "topic describe notes");
    assert!(
        row(&out, &["0", "1", "1", "1", "0", "2", "2"]).is_some(),
        "{out}"
    );
    let out = ok(b, "topic describe notes --json");
    assert!(
        out.contains("\"messages\":2,\"size_bytes\":") && !out.contains("\"size_bytes\":-1"),
        "partition sizes from DescribeLogDirs: {out}"
    );

    // log-dirs describe: each partition's size and lag, and no damaged ranges
    let out = ok(b, "log-dirs describe --topic notes");
    let header = [
        "BROKER",
        "LOG-DIR",
        "TOPIC",
        "PARTITION",
        "SIZE",
        "OFFSET-LAG",
        "DAMAGED",
    ];
    assert!(row(&out, &header).is_some(), "{out}");
    let cells: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (cells.len(), cells[2], cells[3]),
        (7, "notes", "0"),
        "{out}"
    );
    assert!(cells[4].parse::<i64>().unwrap() > 0, "{out}");
    assert_eq!((cells[5], cells[6]), ("0", "-"), "{out}");
    assert_eq!(out.lines().count(), 2, "notes only: {out}");
    let out = ok(b, "log-dirs describe --topic notes --topic orders --json");
    assert_eq!(numbers(&out, "partition"), [0, 0, 1, 2, 3], "{out}");
    assert_eq!(out.matches(r#""damaged":[]"#).count(), 5, "{out}");
    let err = fails(b, "log-dirs describe --topic missing");
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION (3)"), "{err}");

    // consume: JSON from the beginning, text from an offset, by timestamp
    let out = ok(
        b,
        "consume orders --from-beginning --max-messages 10 --format json --timeout-ms 10000",
    );
    assert_eq!(out.lines().count(), 10, "{out}");
    for i in 0..10 {
        let record =
            format!(r#""key":"key-{i}","value":"value \"{i}\"","headers":{{"source":"test"}}}}"#);
        assert!(out.contains(&record), "{i}: {out}");
    }
    let out = ok(b, "consume notes --offset 1 --timeout-ms 1000");
    assert_eq!(out, "second\n");
    let out = ok(
        b,
        "consume notes --partition 0 --from-beginning --key-separator | --max-messages 2",
    );
    assert_eq!(out, "|first\n|second\n");
    let out = ok(b, "consume notes --from-beginning --timeout-ms 500");
    assert_eq!(out, "first\nsecond\n");
    let out = ok(
        b,
        "consume orders --timestamp 0 --max-messages 10 --timeout-ms 10000",
    );
    assert_eq!(out.lines().count(), 10, "{out}");
    // The same key lands in the same partition again.
    ok_with_input(b, "produce orders --key-separator :", "key-0:again\n");
    let out = ok(
        b,
        "consume orders --from-beginning --format json --max-messages 11 --timeout-ms 10000",
    );
    let partition_of = |value: &str| {
        let line = out.lines().find(|l| l.contains(value)).unwrap();
        numbers(line, "partition")[0]
    };
    assert_eq!(
        partition_of("again"),
        partition_of(r#"value \"0\""#),
        "{out}"
    );

    // group: a consumer commits 5 of 11 records; describe shows committed offsets and lag
    let out = ok(
        b,
        "consume orders --group audit --from-beginning --max-messages 5 --timeout-ms 10000",
    );
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = ok(b, "group list");
    assert!(row(&out, &["audit", "Empty"]).is_some(), "{out}");
    let out = ok(b, "group list --json");
    assert!(
        out.contains(r#"{"group":"audit","state":"Empty","#),
        "{out}"
    );
    let out = ok(b, "group describe audit");
    let header = [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
    ];
    assert!(row(&out, &header).is_some(), "{out}");
    let json = ok(b, "group describe audit --json");
    assert_eq!(numbers(&json, "committed").iter().sum::<i64>(), 5, "{json}");
    let log_end: i64 = numbers(&json, "log_end").iter().sum();
    assert_eq!(
        numbers(&json, "lag").iter().sum::<i64>(),
        log_end - 5,
        "{json}"
    );
    let committed_rows = out.lines().filter(|l| l.starts_with("orders ")).count();
    assert_eq!(committed_rows, numbers(&json, "committed").len(), "{out}");

    // reset-offsets: a dry run changes nothing; then to the earliest offsets, then to an offset
    let out = ok(
        b,
        "group reset-offsets audit --topic orders --to-earliest --dry-run",
    );
    assert!(out.contains("dry run: nothing committed"), "{out}");
    for p in ["0", "1", "2", "3"] {
        let line = row(&out, &["orders", p]).unwrap_or_else(|| panic!("{out}"));
        assert!(line.ends_with(" 0"), "{out}");
    }
    let json = ok(b, "group describe audit --json");
    assert_eq!(numbers(&json, "committed").iter().sum::<i64>(), 5, "{json}");
    let out = ok(
        b,
        "group reset-offsets audit --topic orders --to-latest --dry-run --json",
    );
    assert!(
        out.starts_with(r#"{"group":"audit","dry_run":true,"offsets":["#),
        "{out}"
    );
    assert_eq!(numbers(&out, "new").iter().sum::<i64>(), 11, "{out}");
    let out = ok(b, "group reset-offsets audit --topic orders --to-earliest");
    assert!(
        out.contains("committed new offsets for group audit"),
        "{out}"
    );
    let json = ok(b, "group describe audit --json");
    assert_eq!(numbers(&json, "committed"), [0, 0, 0, 0], "{json}");
    assert_eq!(numbers(&json, "lag").iter().sum::<i64>(), 11, "{json}");
    let out = ok(
        b,
        "group reset-offsets notes-readers --topic notes --to-offset 1",
    );
    assert!(row(&out, &["notes", "0", "-", "1"]).is_some(), "{out}");
    let out = ok(b, "consume notes --group notes-readers --timeout-ms 500");
    assert_eq!(out, "second\n");

    // delete the groups, then the topics
    let out = ok(b, "group delete audit notes-readers");
    assert_eq!(out, "deleted group audit\ndeleted group notes-readers\n");
    let out = ok(b, "group list --json");
    assert!(!out.contains("audit"), "{out}");
    let err = fails(b, "group delete audit");
    assert!(err.contains("GROUP_ID_NOT_FOUND (69)"), "{err}");
    let out = ok(b, "topic delete orders notes --json");
    assert_eq!(out.trim(), r#"[{"topic":"orders"},{"topic":"notes"}]"#);
    let err = fails(b, "topic describe orders");
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION (3)"), "{err}");
    let err = fails(b, "topic delete orders");
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION (3)"), "{err}");
}
