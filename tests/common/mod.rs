//! Starts the real `sluice` binary for integration tests: a fresh data dir, a free loopback
//! port, helpers to kill -9, stop with SIGTERM and restart on the same dir and port.

#![allow(dead_code)]

pub mod cluster;
pub mod consumer;
pub mod deliveries;
pub mod lazyfs;
pub mod netns;
pub mod overrun;
pub mod proxy;
pub mod tmpfs;
pub mod transactions;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_client::blocking::read_frame;
use sluice_client::frame::{self, RequestId};

pub struct Broker {
    /// The address its clients connect to (loopback, or its network namespace's).
    pub host: String,
    pub port: u16,
    /// Its admin endpoint's port, reserved as `free_port` reserves ports: a port the kernel
    /// picked (`:0`) could be one another listener of a test broker has reserved and not yet
    /// bound, which then fails to start with EADDRINUSE.
    admin_port: u16,
    pub cores: usize,
    pub data_dir: PathBuf,
    /// The broker's stderr: in the data dir, unless that is a file system the test fills.
    pub log_file: PathBuf,
    /// The network namespace it runs in (`netns::Network`), if not the test's.
    netns: Option<String>,
    child: Option<Child>,
    extra: Vec<String>,
    launches: usize,
}

/// Where a broker runs: the address its clients connect to, and the network namespace it runs
/// in (`netns::Network`; none: the test's own, on loopback).
pub struct Place {
    pub host: String,
    pub netns: Option<String>,
}

/// Where test processes reserve the ports they hand out (see `free_port`).
const PORT_RESERVATIONS_DIR: &str = "sluice-test-ports";

/// A port nothing listens on, never handed out twice while a test process that took it lives.
/// A broker's shards bind with SO_REUSEPORT, and a broker refuses a port only if something
/// already listens there when it starts: two brokers started at once on one port would share it,
/// and a test's connection could land on another test's broker (once, on one about to be
/// killed: a reset instead of an answer). The kernel may give a port back as soon as its probe
/// closes, and the test runner runs each test in its own process, so a port is reserved with an
/// exclusive lock on a file named after it, held until the process exits.
pub fn free_port() -> u16 {
    static RESERVED: Mutex<Vec<nix::fcntl::Flock<std::fs::File>>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join(PORT_RESERVATIONS_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // flock(2) locks belong to an open file, so a port this process holds already is
        // refused here too.
        let file = std::fs::File::create(dir.join(port.to_string())).unwrap();
        let exclusive = nix::fcntl::FlockArg::LockExclusiveNonblock;
        if let Ok(lock) = nix::fcntl::Flock::lock(file, exclusive) {
            RESERVED.lock().unwrap().push(lock);
            return port;
        }
    }
}

pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-test-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Broker {
    /// Starts a broker with `cores` shards and extra `--set key=value` settings.
    pub fn start(name: &str, cores: usize, settings: &[&str]) -> Broker {
        let data_dir = fresh_dir(name);
        Broker::start_in(
            data_dir.clone(),
            data_dir.join("broker.log"),
            cores,
            settings,
        )
    }

    /// Starts a broker on a data dir the test chose (created if missing), logging to `log_file`.
    pub fn start_in(
        data_dir: PathBuf,
        log_file: PathBuf,
        cores: usize,
        settings: &[&str],
    ) -> Broker {
        Broker::start_on(data_dir, log_file, cores, free_port(), settings)
    }

    /// Starts a broker whose clients connect to `port` (from `free_port`): given `listen` by
    /// flag, unless `settings` set `listeners` themselves (then on `port`).
    pub fn start_on(
        data_dir: PathBuf,
        log_file: PathBuf,
        cores: usize,
        port: u16,
        settings: &[&str],
    ) -> Broker {
        let place = Place {
            host: "127.0.0.1".to_string(),
            netns: None,
        };
        Broker::start_at(place, data_dir, log_file, cores, port, settings)
    }

    /// `start_on`, at `place`: clients connect to its host, and it runs in its namespace.
    pub fn start_at(
        place: Place,
        data_dir: PathBuf,
        log_file: PathBuf,
        cores: usize,
        port: u16,
        settings: &[&str],
    ) -> Broker {
        let mut broker = Broker {
            host: place.host,
            netns: place.netns,
            port,
            admin_port: free_port(),
            cores,
            data_dir,
            log_file,
            child: None,
            extra: settings.iter().map(|s| s.to_string()).collect(),
            launches: 0,
        };
        broker.launch();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `key=value` settings it was started with.
    pub fn settings(&self) -> &[String] {
        &self.extra
    }

    fn launch(&mut self) {
        // `ip netns exec` enters the namespace and execs the broker: the child is the broker.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_sluice")]);
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_sluice")),
        };
        cmd.arg("serve");
        if !self.extra.iter().any(|s| s.starts_with("listeners=")) {
            cmd.arg("--listen").arg(self.bootstrap());
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            // Brokers run side by side in tests: each takes a port of its own for its admin
            // endpoint.
            .arg("--set")
            .arg(format!(
                "sluice.admin.listen={}:{}",
                self.host, self.admin_port
            ));
        for setting in &self.extra {
            cmd.arg("--set").arg(setting);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        cmd.stdout(Stdio::null()).stderr(Stdio::from(log));
        overrun::report_on_sigterm();
        let child = cmd.spawn().expect("start sluice");
        overrun::broker_started(child.id(), &self.log_file);
        self.child = Some(child);
        self.launches += 1;
        // Ready when every shard of this launch listens (a connect alone could reach only one).
        let ready = self.cores * self.launches;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches("listening on").count() < ready
            || TcpStream::connect(self.bootstrap()).is_err()
        {
            if Instant::now() >= deadline {
                let threads = self.thread_dump();
                panic!(
                    "broker did not start; log:\n{}\nthreads:\n{threads}",
                    self.log()
                );
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What each thread of the running broker is doing (for a start that hangs): its state and
    /// kernel wait channel from /proc, and user-space stacks when gdb is installed.
    pub fn thread_dump(&self) -> String {
        match self.child.as_ref() {
            Some(child) => overrun::thread_dump(child.id()),
            None => "no broker running".to_string(),
        }
    }

    /// The running broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// GET `path` from the admin endpoint (the port the latest launch logged): the whole answer.
    pub fn admin_get(&self, path: &str) -> String {
        let log = self.log();
        let port: u16 = log
            .rsplit(&format!(
                "admin endpoint (metrics, health) at http://{}:",
                self.host
            ))
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("the admin port is logged");
        let mut s = TcpStream::connect((self.host.as_str(), port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    }

    /// kill -9: no flush, no marker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
            overrun::broker_stopped(child.id());
        }
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        overrun::broker_stopped(child.id());
        status.success()
    }

    /// SIGTERM and wait at most `limit`: whether it exited 0, or `None` (then kill -9) if it
    /// was still running.
    pub fn terminate_within(&mut self, limit: Duration) -> Option<bool> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                overrun::broker_stopped(child.id());
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        overrun::broker_stopped(child.id());
        None
    }

    /// Waits (at most `limit`) for the broker to exit on its own; its exit status, or `None` if
    /// it still runs then (or was not running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                overrun::broker_stopped(child.id());
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        } else {
            eprintln!("broker data and log kept in {}", self.data_dir.display());
        }
    }
}

/// Shard counts every integration test runs with.
pub const SHARD_COUNTS: [usize; 2] = [1, 2];

/// A valid one-record v2 batch (no key, value "v"), CRC included.
pub fn one_record_batch() -> Vec<u8> {
    let record: [u8; 8] = [7 << 1, 0, 0, 0, 1, 2, b'v', 0]; // length 7, attrs, ts delta, offset delta, key -1, value len 1, "v", headers 0
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + record.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&1000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&record);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Largest response a test reads.
pub const RESPONSE_MAX_BYTES: usize = 256 << 20;

/// Sends one request over a raw socket and decodes the answer (correlation id = version).
pub fn call<R: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> R {
    try_call(stream, api, version, body).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"))
}

/// `call` for a test that expects the connection may fail: says why there was no answer.
pub fn try_call<R: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> Result<R, String> {
    let id = RequestId {
        correlation_id: version as i32,
        client_id: "every-version",
    };
    let request = frame::encode_request(api, version, id, body).unwrap();
    stream
        .write_all(&request)
        .map_err(|e| format!("sending: {e}"))?;
    let response =
        read_frame(stream, RESPONSE_MAX_BYTES).map_err(|e| format!("no answer ({e})"))?;
    frame::decode_response(api, version, version as i32, response).map_err(|e| e.to_string())
}

/// A raw connection to the broker, with a read timeout so a missing answer fails the test.
pub fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// `connect` for a test that expects the broker may be down: none if it takes no connection.
pub fn try_connect(broker: &Broker) -> Option<TcpStream> {
    let s = TcpStream::connect(broker.bootstrap()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    Some(s)
}

/// Creates a topic over a raw connection (CreateTopics v7) and checks it worked.
pub fn create_topic(s: &mut TcpStream, topic: &str, partitions: i32) {
    use kafka_protocol::messages::*;
    let request = create_topic_request(topic, partitions);
    let r: CreateTopicsResponse = call(s, ApiKey::CreateTopics, 7, &request);
    assert_eq!(r.topics[0].error_code, 0, "creating {topic}");
}

/// CreateTopics (v7) of one topic with `partitions` partitions and one replica each.
pub fn create_topic_request(
    topic: &str,
    partitions: i32,
) -> kafka_protocol::messages::CreateTopicsRequest {
    use kafka_protocol::messages::{create_topics_request::CreatableTopic, *};
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000)
}

/// A partition's log start offset (ListOffsets v6, earliest).
pub fn earliest_offset(s: &mut TcpStream, topic: &str, partition: i32) -> i64 {
    use kafka_protocol::messages::*;
    let request = list_offsets_request(topic, partition, -2);
    let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 6, &request);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    r.topics[0].partitions[0].offset
}

/// The high watermark of `topic`'s `partition` as `broker` answers ListOffsets (v6, latest,
/// read_uncommitted); none if it is down or refuses (a newly elected leader refuses until its
/// high watermark reaches its epoch's start).
pub fn high_watermark(broker: &Broker, topic: &str, partition: i32) -> Option<i64> {
    use kafka_protocol::messages::*;
    let request = list_offsets_request(topic, partition, -1);
    let answer: ListOffsetsResponse =
        try_call(&mut try_connect(broker)?, ApiKey::ListOffsets, 6, &request).ok()?;
    let found = answer.topics.first()?.partitions.first()?;
    (found.error_code == 0).then_some(found.offset)
}

/// ListOffsets (v6, read_uncommitted) for one partition at `timestamp`: -2 asks for the log
/// start, -1 for the high watermark.
fn list_offsets_request(
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> kafka_protocol::messages::ListOffsetsRequest {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::*;
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])])
}

/// Produce (v9) of one record (`one_record_batch`) to partition 0 of `topic` with `acks`: the
/// error code the partition answers, or why no answer came.
pub fn produce_one(s: &mut TcpStream, topic: &str, acks: i16) -> Result<i16, String> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(one_record_batch())))])]);
    let answer: ProduceResponse = try_call(s, ApiKey::Produce, 9, &request)?;
    Ok(answer.responses[0].partition_responses[0].error_code)
}
