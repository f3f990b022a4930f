//! `sluice consume`: a console consumer. Fetches from each partition's leader, starting from
//! `--offset`, `--timestamp`, the group's committed offsets (`--group`), the beginning
//! (`--from-beginning`) or the end; prints each record as text or as one JSON object a line.
//!
//! With `--group` it does not join the group protocol: it reads the group's committed offsets
//! and commits what it printed outside any generation (generation -1), which the coordinator
//! accepts only while the group has no members (like Kafka's tools that commit offsets).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use clap::{ArgGroup, Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::client::{check, Client, Node, EARLIEST, LATEST};
use super::group::{commit_offsets, committed_offsets, TopicPartition};
use super::limits::{FETCH_MAX_BYTES, FETCH_MAX_WAIT_MS, FETCH_PARTITION_MAX_BYTES};
use super::output::Json;
use super::ClientFlags;

/// A v2 record batch: base offset (8), batch length (4), ..., last offset delta at byte 23.
const BATCH_LENGTH_END: usize = 12;
const LAST_OFFSET_DELTA_AT: usize = 23;

/// Fetched records each with the offset after it; None for a control record or a batch's end.
type Fetched = Vec<(i64, Option<Record>)>;

/// Print a topic's records, as text or one JSON object a line
///
/// Starts at the end unless told otherwise; runs until --max-messages, or until --timeout-ms
/// passes without a record.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "offset", "timestamp"])))]
pub struct ConsumeArgs {
    /// The topic
    topic: String,
    /// Read only partition N [default: every partition]
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    /// Start at each partition's first offset (where --group has committed none)
    #[arg(long)]
    from_beginning: bool,
    /// Start at offset N in every partition
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    offset: Option<i64>,
    /// Start at the first record at or after this time (milliseconds since the epoch)
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    timestamp: Option<i64>,
    /// Start at GROUP's committed offsets and commit what was printed (without joining the
    /// group, so only while it has no members)
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Stop after N records
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop after MS milliseconds without a record
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// How records are printed
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print each record's key, SEP, then its value (text format)
    #[arg(long, value_name = "SEP", allow_hyphen_values = true)]
    key_separator: Option<String>,
    #[command(flatten)]
    flags: ClientFlags,
}

/// `--format`'s values.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// The value, or KEY SEP VALUE with --key-separator; JSON with --json
    Text,
    /// One JSON object a line: topic, partition, offset, timestamp, key, value, headers
    Json,
}

pub fn run(args: &ConsumeArgs) -> Result<()> {
    let topic = args.topic.as_str();
    let json = match args.format {
        Format::Text => args.flags.json,
        Format::Json => true,
    };
    let max_messages = args.max_messages;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let group = args.group.as_deref();

    let mut client = args.flags.client()?;
    let leaders = client.leaders(topic)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if leaders.contains_key(&p) => vec![p],
        Some(p) => bail!("topic {topic} has no partition {p}"),
        None => leaders.keys().copied().collect(),
    };
    let committed = match group {
        Some(g) => committed_offsets(&mut client, g)?,
        None => BTreeMap::new(),
    };
    let mut positions = if let Some(offset) = args.offset {
        partitions.iter().map(|&p| (p, offset)).collect()
    } else if let Some(ms) = args.timestamp {
        client.list_offsets(topic, &partitions, ms)?
    } else {
        let reset = if args.from_beginning {
            EARLIEST
        } else {
            LATEST
        };
        let mut positions = client.list_offsets(topic, &partitions, reset)?;
        for (p, position) in positions.iter_mut() {
            if let Some(&offset) = committed.get(&(topic.to_string(), *p)) {
                *position = offset;
            }
        }
        positions
    };

    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let separator = args.key_separator.as_deref();
    while max_messages.is_none_or(|max| printed < max) {
        let wait = match timeout {
            Some(t) => {
                let left = t.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break;
                }
                left.min(Duration::from_millis(FETCH_MAX_WAIT_MS as u64))
            }
            None => Duration::from_millis(FETCH_MAX_WAIT_MS as u64),
        };
        let mut consumed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in &partitions {
            by_leader.entry(leaders[&p]).or_default().push(p);
        }
        for (leader, parts) in by_leader {
            let fetched = fetch(&mut client, leader, topic, &parts, &positions, wait)?;
            for (partition, records) in fetched {
                let position = positions.get_mut(&partition).expect("fetched partition");
                for (next, record) in records {
                    if let Some(record) = record.filter(|r| r.offset >= *position) {
                        if max_messages.is_some_and(|max| printed >= max) {
                            break;
                        }
                        print_record(&mut out, topic, partition, &record, json, separator)?;
                        printed += 1;
                        last_record = Instant::now();
                        consumed.insert((topic.to_string(), partition), record.offset + 1);
                        *position = record.offset + 1;
                    } else {
                        *position = (*position).max(next);
                    }
                }
            }
        }
        out.flush()?;
        if let (Some(g), false) = (group, consumed.is_empty()) {
            commit_offsets(&mut client, g, &consumed)?;
        }
    }
    if !json {
        eprintln!("{printed} records consumed");
    }
    Ok(())
}

/// One fetch of `partitions` from `leader`: per partition, the records (None for a control record
/// or one before the fetch position) each with the offset after it.
fn fetch(
    client: &mut Client,
    leader: i32,
    topic: &str,
    partitions: &[i32],
    positions: &BTreeMap<i32, i64>,
    wait: Duration,
) -> Result<BTreeMap<i32, Fetched>> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(positions[p])
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                    })
                    .collect(),
            )]);
    let response = client.send(Node::Id(leader), &request)?;
    check(response.error_code, None, format!("fetching from {topic}"))?;
    let mut fetched = BTreeMap::new();
    for t in response.responses {
        for p in t.partitions {
            check(
                p.error_code,
                None,
                format!(
                    "fetching {topic}/{} at offset {}",
                    p.partition_index,
                    positions.get(&p.partition_index).copied().unwrap_or(-1)
                ),
            )?;
            let records = decode_batches(p.records.unwrap_or_default())
                .with_context(|| format!("decoding records of {topic}/{}", p.partition_index))?;
            fetched.insert(p.partition_index, records);
        }
    }
    Ok(fetched)
}

/// The records of every complete batch in `bytes` (a fetch may end with a partial one), each with
/// the offset after it; control records are None.
fn decode_batches(mut bytes: Bytes) -> Result<Fetched> {
    let mut records = Vec::new();
    while bytes.len() >= BATCH_LENGTH_END {
        let base = (&bytes[..8]).get_i64();
        let length = (&bytes[8..BATCH_LENGTH_END]).get_i32();
        let total = BATCH_LENGTH_END + usize::try_from(length).context("negative batch length")?;
        if bytes.len() < total || total <= LAST_OFFSET_DELTA_AT + 4 {
            break;
        }
        let last_delta = (&bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]).get_i32();
        let mut batch = bytes.split_to(total);
        let set = RecordBatchDecoder::decode(&mut batch)?;
        for record in set.records {
            let next = record.offset + 1;
            records.push((next, (!record.control).then_some(record)));
        }
        // Past the whole batch, even where it held nothing to print.
        records.push((base + last_delta as i64 + 1, None));
    }
    Ok(records)
}

fn text(bytes: &Option<Bytes>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn print_record(
    out: &mut impl Write,
    topic: &str,
    partition: i32,
    record: &Record,
    json: bool,
    separator: Option<&str>,
) -> Result<()> {
    if json {
        let headers = record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), Json::opt_str(text(v))))
            .collect();
        let line = Json::object([
            ("topic", Json::str(topic)),
            ("partition", Json::Int(partition.into())),
            ("offset", Json::Int(record.offset)),
            ("timestamp", Json::Int(record.timestamp)),
            ("key", Json::opt_str(text(&record.key))),
            ("value", Json::opt_str(text(&record.value))),
            ("headers", Json::Object(headers)),
        ]);
        writeln!(out, "{line}")?;
    } else {
        let value = text(&record.value).unwrap_or_default();
        match separator {
            Some(sep) => writeln!(out, "{}{sep}{value}", text(&record.key).unwrap_or_default())?,
            None => writeln!(out, "{value}")?,
        }
    }
    Ok(())
}
