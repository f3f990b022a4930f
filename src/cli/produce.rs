//! `sluice produce`: a console producer. One record per input line (stdin or `--file`), an
//! optional key before `--key-separator`, the same `--header`s on every record; records go to
//! `--partition`, else to the key's partition (Kafka's murmur2 partitioner, so keys land where a
//! Java producer puts them), else round robin. Sent with acks=all, uncompressed, one batch per
//! partition and request (split at `PRODUCE_BATCH_MAX_BYTES`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Args;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::client::{check, Node};
use super::limits::{
    ADMIN_TIMEOUT_MS, PRODUCE_BATCH_MAX_BYTES, PRODUCE_INPUT_MAX_BYTES, PROGRESS_INTERVAL,
};
use super::output::Json;
use super::{key_value, ClientFlags};

/// Bytes a record adds to a batch besides its key, value and headers (varints, attributes).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// acks=all.
const ACKS_ALL: i16 = -1;

/// Send records, one per line of stdin or --file (acks=all)
///
/// A record goes to --partition, else to its key's partition (murmur2, where the Java producer
/// puts it), else round robin.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic (created if the broker auto-creates topics)
    topic: String,
    /// Read the records from FILE instead of stdin
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP", allow_hyphen_values = true)]
    key_separator: Option<String>,
    /// A header on every record (repeatable)
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Send every record to partition N
    #[arg(long, value_name = "N")]
    partition: Option<i32>,
    #[command(flatten)]
    flags: ClientFlags,
}

pub fn run(args: &ProduceArgs) -> Result<()> {
    let topic = args.topic.as_str();
    // A header named twice keeps its last value.
    let headers: IndexMap<_, _> = args
        .headers
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string(k.clone()),
                Some(Bytes::from(v.clone())),
            )
        })
        .collect();
    let input = read_input(args.file.as_deref())?;
    let separator = args.key_separator.as_deref();

    let mut client = args.flags.client()?;
    let leaders = client.leaders_auto_created(topic)?;
    let partition_count = leaders.len() as i32;
    if partition_count == 0 {
        bail!("topic {topic} has no partitions");
    }
    let fixed = args.partition;
    if let Some(p) = fixed {
        if !leaders.contains_key(&p) {
            bail!("topic {topic} has no partition {p}");
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut round_robin = 0;
    for line in input.lines() {
        let (key, value) = match separator.and_then(|sep| line.split_once(sep)) {
            Some((k, v)) => (Some(k), v),
            None => (None, line),
        };
        let partition = match (fixed, key) {
            (Some(p), _) => p,
            (None, Some(k)) => (murmur2(k.as_bytes()) & 0x7fff_ffff) % partition_count,
            (None, None) => {
                round_robin = (round_robin + 1) % partition_count;
                (round_robin + partition_count - 1) % partition_count
            }
        };
        let records = by_partition.entry(partition).or_default();
        // Consecutive offset deltas in one batch (Kafka refuses repeated ones); sequence moves
        // with the offset so the encoder keeps them in a single batch (no producer id is set,
        // so brokers do not check sequences).
        let position = records.len() as i64;
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: position,
            sequence: position as i32,
            timestamp: now,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: headers.clone(),
        });
    }

    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD_BYTES)
        .sum();
    let size = |r: &Record| {
        RECORD_OVERHEAD_BYTES
            + header_bytes
            + r.key.as_ref().map_or(0, |k| k.len())
            + r.value.as_ref().map_or(0, |v| v.len())
    };
    let mut acknowledged = 0usize;
    let mut progress = Progress::new(by_partition.values().map(Vec::len).sum());
    for (partition, mut records) in by_partition {
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = i as i64;
        }
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && (end == start || bytes + size(&records[end]) <= PRODUCE_BATCH_MAX_BYTES)
            {
                bytes += size(&records[end]);
                end += 1;
            }
            send_batch(
                &mut client,
                topic,
                partition,
                leaders[&partition],
                &records[start..end],
            )?;
            acknowledged += end - start;
            progress.update(acknowledged);
            start = end;
        }
    }
    progress.finish();
    if args.flags.json {
        println!(
            "{}",
            Json::object([
                ("topic", Json::str(topic)),
                ("acknowledged", Json::Int(acknowledged as i64)),
            ])
        );
    } else {
        println!("{acknowledged} records acknowledged by {topic}");
    }
    Ok(())
}

/// "N of M records acknowledged" on stderr, rewritten in place, while a long produce runs on a
/// terminal (never into a pipe or file, where it would only be noise).
struct Progress {
    total: usize,
    shown_at: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            shown_at: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, acknowledged: usize) {
        let due = self
            .shown_at
            .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
        if self.enabled && due && acknowledged < self.total {
            eprint!(
                "\r{acknowledged} of {} records acknowledged\x1b[K",
                self.total
            );
            self.shown_at = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if self.shown_at.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// All of `--file` or stdin, up to `PRODUCE_INPUT_MAX_BYTES`.
fn read_input(file: Option<&Path>) -> Result<String> {
    let reader: Box<dyn Read> = match file {
        Some(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let mut input = String::new();
    reader
        .take(PRODUCE_INPUT_MAX_BYTES + 1)
        .read_to_string(&mut input)
        .context("reading the input (it must be UTF-8 text)")?;
    if input.len() as u64 > PRODUCE_INPUT_MAX_BYTES {
        bail!("the input is larger than {PRODUCE_INPUT_MAX_BYTES} bytes");
    }
    Ok(input)
}

fn send_batch(
    client: &mut super::Client,
    topic: &str,
    partition: i32,
    leader: i32,
    records: &[Record],
) -> Result<()> {
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let request = ProduceRequest::default()
        .with_acks(ACKS_ALL)
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.freeze()))])]);
    let response = client.send(Node::Id(leader), &request)?;
    for t in &response.responses {
        for p in &t.partition_responses {
            check(
                p.error_code,
                p.error_message.as_ref(),
                format!("producing to {topic}/{}", p.index),
            )?;
        }
    }
    Ok(())
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= (b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::murmur2;

    #[test]
    fn murmur2_matches_kafka() {
        // From Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
