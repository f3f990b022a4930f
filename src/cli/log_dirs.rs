//! `sluice log-dirs describe`: each broker's log directories with, per partition, its size, its
//! offset lag and its damaged ranges, from DescribeLogDirs (what `kafka-log-dirs.sh --describe`
//! shows, and the damage only Sluice reports: see `sluice_client::damaged_ranges`). Against
//! another Kafka-compatible broker the damaged ranges are simply absent.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_log_dirs_request::{
    DescribableLogDirTopic, DescribeLogDirsRequest,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use sluice_client::damaged_ranges::{self, DamagedRange, DAMAGED_RANGES_TAG};

use super::client::{check, error_name, Client, Node};
use super::output::{Json, Table};
use super::ClientFlags;

#[derive(Args, Debug)]
pub struct LogDirsArgs {
    #[command(flatten)]
    flags: ClientFlags,
    #[command(subcommand)]
    command: LogDirsCommand,
}

#[derive(Subcommand, Debug)]
enum LogDirsCommand {
    /// Describe the brokers' log dirs: each partition's size, offset lag and damaged ranges
    Describe {
        /// Only this topic's partitions (repeatable) [default: every topic]
        #[arg(long = "topic", value_name = "NAME")]
        topics: Vec<String>,
        /// Only this broker (repeatable) [default: every broker]
        #[arg(long = "broker", value_name = "ID")]
        brokers: Vec<i32>,
    },
}

pub fn run(args: &LogDirsArgs) -> Result<()> {
    match &args.command {
        LogDirsCommand::Describe { topics, brokers } => describe(&args.flags, topics, brokers),
    }
}

/// One partition of one log dir, its damaged ranges decoded.
struct Partition {
    topic: String,
    entry: DescribeLogDirsPartition,
    damaged: Vec<DamagedRange>,
}

fn describe(flags: &ClientFlags, topics: &[String], brokers: &[i32]) -> Result<()> {
    let mut client = flags.client()?;
    let request = DescribeLogDirsRequest::default().with_topics(wanted(&mut client, topics)?);
    let brokers = if brokers.is_empty() {
        client.broker_ids()
    } else {
        brokers.to_vec()
    };
    let mut dirs = Vec::new();
    for broker in brokers {
        let response = client
            .send(Node::Id(broker), &request)
            .with_context(|| format!("DescribeLogDirs of broker {broker}"))?;
        check(
            response.error_code,
            None,
            format!("log dirs of broker {broker}"),
        )?;
        for dir in response.results {
            let partitions = partitions_of(&dir)
                .with_context(|| format!("broker {broker}, {}", dir.log_dir.as_str()))?;
            dirs.push((broker, dir, partitions));
        }
    }
    if flags.json {
        let items = dirs
            .iter()
            .map(|(broker, dir, partitions)| dir_json(*broker, dir, partitions))
            .collect();
        println!("{}", Json::Array(items));
        return Ok(());
    }
    let mut table = Table::new(&[
        "BROKER",
        "LOG-DIR",
        "TOPIC",
        "PARTITION",
        "SIZE",
        "OFFSET-LAG",
        "DAMAGED",
    ]);
    for (broker, dir, partitions) in &dirs {
        if dir.error_code != 0 {
            table.row(vec![
                broker.to_string(),
                dir.log_dir.to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                format!("error {}", error_name(dir.error_code)),
            ]);
        }
        for p in partitions {
            let damaged = if p.damaged.is_empty() {
                "-".to_string()
            } else {
                p.damaged
                    .iter()
                    .map(range_text)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            table.row(vec![
                broker.to_string(),
                dir.log_dir.to_string(),
                p.topic.clone(),
                p.entry.partition_index.to_string(),
                p.entry.partition_size.to_string(),
                p.entry.offset_lag.to_string(),
                damaged,
            ]);
        }
    }
    print!("{table}");
    Ok(())
}

/// The request's topics: every partition of each named topic (from metadata, which also fails
/// on a topic that does not exist), or all topics.
fn wanted(client: &mut Client, topics: &[String]) -> Result<Option<Vec<DescribableLogDirTopic>>> {
    if topics.is_empty() {
        return Ok(None);
    }
    let metadata = client.metadata(Some(topics))?;
    let mut wanted = Vec::new();
    for t in &metadata.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        check(t.error_code, None, format!("topic {name}"))?;
        wanted.push(
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name)))
                .with_partitions(t.partitions.iter().map(|p| p.partition_index).collect()),
        );
    }
    Ok(Some(wanted))
}

/// A log dir's partitions, by topic and partition, with their damaged ranges.
fn partitions_of(dir: &DescribeLogDirsResult) -> Result<Vec<Partition>> {
    let mut found = BTreeMap::new();
    for t in &dir.topics {
        for p in &t.partitions {
            let damaged = match p.unknown_tagged_fields.get(&DAMAGED_RANGES_TAG) {
                Some(bytes) => damaged_ranges::decode(bytes)
                    .with_context(|| format!("{}-{}", t.name.as_str(), p.partition_index))?,
                None => Vec::new(),
            };
            let key = (t.name.to_string(), p.partition_index, p.is_future_key);
            found.insert(
                key,
                Partition {
                    topic: t.name.to_string(),
                    entry: p.clone(),
                    damaged,
                },
            );
        }
    }
    Ok(found.into_values().collect())
}

/// The name of the segment file holding a range, as it is on disk.
fn segment_file(r: &DamagedRange) -> String {
    format!("{:020}.log", r.segment_base_offset)
}

/// e.g. `corrupt 120-139 (00000000000000000100.log, 300 bytes at 2048)`.
fn range_text(r: &DamagedRange) -> String {
    let offsets = if r.last_offset < 0 {
        format!("{}-", r.first_offset)
    } else {
        format!("{}-{}", r.first_offset, r.last_offset)
    };
    format!(
        "{} {offsets} ({}, {} bytes at {})",
        r.kind.name(),
        segment_file(r),
        r.size_bytes,
        r.position
    )
}

fn dir_json(broker: i32, dir: &DescribeLogDirsResult, partitions: &[Partition]) -> Json {
    let error = (dir.error_code != 0).then(|| error_name(dir.error_code));
    Json::object([
        ("broker", Json::Int(broker.into())),
        ("log_dir", Json::str(dir.log_dir.as_str())),
        ("error", Json::opt_str(error)),
        ("total_bytes", Json::Int(dir.total_bytes)),
        ("usable_bytes", Json::Int(dir.usable_bytes)),
        (
            "partitions",
            Json::Array(partitions.iter().map(partition_json).collect()),
        ),
    ])
}

fn partition_json(p: &Partition) -> Json {
    let range = |r: &DamagedRange| {
        Json::object([
            ("kind", Json::str(r.kind.name())),
            ("first_offset", Json::Int(r.first_offset)),
            ("last_offset", Json::Int(r.last_offset)),
            ("segment", Json::str(segment_file(r))),
            ("position", Json::Int(r.position)),
            ("size_bytes", Json::Int(r.size_bytes)),
        ])
    };
    Json::object([
        ("topic", Json::str(&p.topic)),
        ("partition", Json::Int(p.entry.partition_index.into())),
        ("size_bytes", Json::Int(p.entry.partition_size)),
        ("offset_lag", Json::Int(p.entry.offset_lag)),
        ("is_future", Json::Bool(p.entry.is_future_key)),
        (
            "damaged",
            Json::Array(p.damaged.iter().map(range).collect()),
        ),
    ])
}
