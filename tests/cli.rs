//! The command line: invalid settings stop the start with a message naming the key.

mod common;

use std::process::Command;

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
        (vec!["--frobnicate"], "unknown argument"),
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
