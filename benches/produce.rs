//! End-to-end produce throughput through librdkafka: starts the release `sluice` binary (or uses
//! `--bootstrap`), creates a topic, and sends fixed-size records as fast as the broker accepts
//! them, then prints msgs/s, MB/s and delivery latency percentiles.
//!
//! cargo bench --bench produce -- --cores 2 --records 200000 --size 1024 --partitions 16 --acks all
//!
//! Options: --rate N (records/s, paced; default unpaced), --linger-ms, --batch-size, --idempotence,
//! --set key=value,key=value (broker settings), --bootstrap HOST:PORT (use a running broker).

use std::collections::HashMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

struct Latencies(Arc<Mutex<Histogram<u64>>>);

impl ClientContext for Latencies {}

impl ProducerContext for Latencies {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            return;
        }
        let us = sent.elapsed().as_micros() as u64;
        let _ = self.0.lock().unwrap().record(us.max(1));
    }
}

fn arg(args: &HashMap<String, String>, key: &str, default: &str) -> String {
    args.get(key)
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn start_broker(cores: &str, settings: &[String]) -> (Child, String, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("sluice-bench-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let bootstrap = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args([
        "serve",
        "--listen",
        &bootstrap,
        "--cores",
        cores,
        "--data-dir",
    ])
    .arg(&dir);
    for s in settings {
        cmd.args(["--set", s]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sluice");
    while TcpStream::connect(&bootstrap).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, bootstrap, dir)
}

fn main() {
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let args: HashMap<String, String> = raw
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim_start_matches("--").to_string(), c[1].clone()))
        .collect();
    let records: usize = arg(&args, "records", "200000").parse().unwrap();
    let size: usize = arg(&args, "size", "1024").parse().unwrap();
    let partitions: i32 = arg(&args, "partitions", "16").parse().unwrap();
    let acks = arg(&args, "acks", "all");
    let cores = arg(&args, "cores", "1");
    let settings: Vec<String> = args
        .get("set")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let started = (!args.contains_key("bootstrap")).then(|| start_broker(&cores, &settings));
    let bootstrap = args
        .get("bootstrap")
        .cloned()
        .unwrap_or_else(|| started.as_ref().unwrap().1.clone());

    let topic = format!("bench-{}", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let created = block_on(admin.create_topics(
        [&NewTopic::new(
            &topic,
            partitions,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let producer: ThreadedProducer<Latencies> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", &acks)
        .set("linger.ms", arg(&args, "linger-ms", "5"))
        .set("batch.size", arg(&args, "batch-size", "1000000"))
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", arg(&args, "idempotence", "false"))
        .create_with_context(Latencies(histogram.clone()))
        .unwrap();
    let payload = vec![b'x'; size];
    let rate: f64 = arg(&args, "rate", "0").parse().unwrap();
    let begin = Instant::now();
    for i in 0..records {
        if rate > 0.0 {
            // Open loop: hold each record until its intended send time.
            let due = begin + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut record = BaseRecord::<(), _, _>::with_opaque_to(&topic, Box::new(Instant::now()))
            .partition((i % partitions as usize) as i32)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
    let elapsed = begin.elapsed().as_secs_f64();
    let h = histogram.lock().unwrap();
    println!(
        "cores={cores} records={records} size={size} partitions={partitions} acks={acks}: {:.0} msgs/s, {:.1} MB/s, delivery latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
        records as f64 / elapsed,
        (records * size) as f64 / elapsed / 1e6,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    if let Some((child, _, dir)) = started {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let _ = { child }.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
}
