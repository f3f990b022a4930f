//! `sluice bench` end to end: the real binary's produce, consume, e2e and loopback workloads,
//! briefly, against a real broker; their `--json` output and `--html` report. Correctness only:
//! the numbers are checked for sense (counts, order of percentiles), never for speed.

mod common;

use std::process::Command;

use common::{Broker, SHARD_COUNTS};
use serde_json::Value;

/// Runs `sluice bench ARGS --json`; returns the exit status, the parsed JSON (or Null) and
/// stderr.
fn bench(args: &[&str]) -> (bool, Value, String) {
    bench_with_env(args, &[])
}

/// `bench` with the environment variables `env` set.
fn bench_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.success(), json, stderr)
}

fn number(json: &Value, key: &str) -> f64 {
    json[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {json}"))
}

/// Counts as asked, no errors, throughput above zero.
fn check_counts(json: &Value, records: u64, size: u64) {
    assert_eq!(json["records"].as_u64(), Some(records), "{json}");
    assert_eq!(json["bytes"].as_u64(), Some(records * size), "{json}");
    assert_eq!(json["errors"].as_u64(), Some(0), "{json}");
    assert!(number(json, "msgs_per_sec") > 0.0, "{json}");
    assert!(number(json, "mb_per_sec") > 0.0, "{json}");
}

/// Every percentile present and in order, up to the maximum.
fn check_latencies(json: &Value) {
    let keys = [
        "p50_ms", "p90_ms", "p99_ms", "p999_ms", "p9999_ms", "max_ms",
    ];
    let values: Vec<f64> = keys.iter().map(|k| number(json, k)).collect();
    assert!(values[0] > 0.0, "{json}");
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{json}");
}

#[test]
fn produce_reports_delivery_latency_and_writes_an_html_report() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("bench-produce", cores, &[]);
        let html = broker.data_dir.join("report.html");
        let (ok, json, stderr) = bench(&[
            "produce",
            "--bootstrap",
            &broker.bootstrap(),
            "--records",
            "3000",
            "--size",
            "200",
            "--partitions",
            "4",
            "--producers",
            "2",
            "--html",
            html.to_str().unwrap(),
        ]);
        assert!(ok, "{stderr}");
        check_counts(&json, 3000, 200);
        check_latencies(&json);
        assert_eq!(json["latency"], "delivery");
        assert_eq!(
            (json["partitions"].as_i64(), json["acks"].as_str()),
            (Some(4), Some("all"))
        );
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "latency over time, by percentile, throughput"
        );
        for title in [
            "Latency over time",
            "Latency by percentile",
            "Throughput over time",
        ] {
            assert!(page.contains(title), "{title}");
        }
        assert!(!page.contains("<script"), "self-contained, no scripts");
    }
}

#[test]
fn e2e_measures_every_record_from_its_intended_send_time() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("bench-e2e", cores, &[]);
        let (ok, json, stderr) = bench(&[
            "e2e",
            "--bootstrap",
            &broker.bootstrap(),
            "--records",
            "2000",
            "--rate",
            "4000",
            "--warmup",
            "0.2",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--keys",
            "round-robin",
            "--linger-ms",
            "0",
        ]);
        assert!(ok, "{stderr}");
        // Keys are "key-N": their bytes count too.
        assert_eq!(json["records"].as_u64(), Some(2000), "{json}");
        assert_eq!(json["errors"].as_u64(), Some(0), "{json}");
        assert!(json["bytes"].as_u64().unwrap() > 2000 * 1024, "{json}");
        check_latencies(&json);
        assert_eq!(
            (json["latency"].as_str(), number(&json, "rate")),
            (Some("end-to-end"), 4000.0)
        );
    }
}

#[test]
fn consume_fills_a_fresh_topic_or_reads_an_existing_backlog() {
    // Small socket buffers, so reads and writes cross them many times.
    let broker = Broker::start(
        "bench-consume",
        2,
        &[
            "socket.send.buffer.bytes=16384",
            "socket.receive.buffer.bytes=16384",
        ],
    );
    let bootstrap = broker.bootstrap();
    let base = [
        "--bootstrap",
        &bootstrap,
        "--size",
        "100",
        "--partitions",
        "3",
    ];
    let (ok, json, stderr) = bench(
        &[
            &["consume", "--records", "3000", "--consumers", "2"],
            &base[..],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("with 3000 records"), "{stderr}");
    check_counts(&json, 3000, 100);
    assert!(
        json["p99_ms"].is_null() && json["max_ms"].is_null(),
        "{json}"
    );

    // A backlog written by two produce runs is read whole, and not filled again.
    for _ in 0..2 {
        let (ok, _, stderr) = bench(
            &[
                &["produce", "--records", "1500", "--topic", "backlog"],
                &base[..],
            ]
            .concat(),
        );
        assert!(ok, "{stderr}");
    }
    let (ok, json, stderr) = bench(
        &[
            &["consume", "--topic", "backlog", "--progress"][..],
            &base[..],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("filled"), "{stderr}");
    // The progress bar's last line: the whole backlog read.
    let last = stderr.lines().rfind(|l| l.starts_with('[')).unwrap_or("");
    assert!(
        last.contains("] 100% ") && last.contains(" 3000 records  0 errors"),
        "{stderr}"
    );
    check_counts(&json, 3000, 100);
    assert_eq!(json["partitions"].as_i64(), Some(3));

    // Plain Fetch requests read the same records; their bytes are whole batches, headers and
    // all: exactly what the partitions' logs hold. (Each record's own framing takes 9-12 bytes
    // of varints, depending on how long and how large its batch grew, so no fixed margin
    // above the values holds in every run.)
    let (ok, json, stderr) = bench(
        &[
            &["consume", "--topic", "backlog", "--reader", "fetch"][..],
            &["--consumers", "2"],
            &base[..],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    assert_eq!(json["records"].as_u64(), Some(3000), "{json}");
    assert_eq!(json["errors"].as_u64(), Some(0), "{json}");
    assert_eq!(
        json["bytes"].as_u64(),
        Some(log_bytes(&broker.data_dir, "backlog")),
        "{json}"
    );
}

/// Bytes in the `.log` segment files of every partition of `topic`.
fn log_bytes(data_dir: &std::path::Path, topic: &str) -> u64 {
    let prefix = format!("{topic}-");
    let partitions = std::fs::read_dir(data_dir).expect("the broker's data dir");
    partitions
        .map(|entry| entry.unwrap().path())
        .filter(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy();
            name.strip_prefix(&prefix)
                .is_some_and(|p| p.parse::<u32>().is_ok())
        })
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|file| file.extension().is_some_and(|e| e == "log"))
        .map(|file| std::fs::metadata(file).unwrap().len())
        .sum()
}

#[test]
fn loopback_counts_the_bytes_one_connection_carries() {
    let (ok, json, stderr) = bench(&["loopback", "--records", "5000", "--size", "1000"]);
    assert!(ok, "{stderr}");
    check_counts(&json, 5000, 1000);
    assert!(
        json["topic"].is_null() && json["p50_ms"].is_null(),
        "{json}"
    );
}

#[test]
fn bad_options_fail_with_a_message() {
    for (args, needle) in [
        (vec!["e2e", "--size", "4"], "--size 8 or more"),
        (vec!["produce", "--acks", "2"], "--acks"),
        (
            vec!["produce", "--records", "1", "--duration", "1"],
            "cannot be used with",
        ),
        (vec!["produce", "--cpus", "9-3"], "backwards"),
        (vec!["scan"], "invalid value 'scan'"),
    ] {
        let (ok, _, stderr) = bench(&args);
        assert!(!ok && stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn sluice_bootstrap_names_the_broker() {
    let broker = Broker::start("bench-env", 1, &[]);
    let args = ["produce", "--records", "200", "--size", "100"];
    let (ok, json, stderr) = bench_with_env(&args, &[("SLUICE_BOOTSTRAP", &broker.bootstrap())]);
    assert!(ok, "{stderr}");
    check_counts(&json, 200, 100);
}
