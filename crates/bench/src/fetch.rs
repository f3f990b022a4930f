//! `sluice bench consume --reader fetch`: catch-up reads without a client library's per-record
//! work, to see what a broker serves apart from what librdkafka costs. Each consumer is one TCP
//! connection to the partitions' leader that sends Fetch requests one at a time, with
//! librdkafka's sizes (1 MiB per partition, 50 MiB per response, 500 ms wait, read_committed),
//! and steps through the returned record batches by their headers only, as a follower replica
//! does. Records are counted from the headers; MB/s counts whole batches (headers included),
//! the bytes `bench loopback` would carry for them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_client::frame::{self, RequestId};

use super::clients::{Topic, Watermarks};
use super::limits::{
    ADMIN_TIMEOUT, FETCH_MAX_WAIT_MS, FETCH_PARTITION_MAX_BYTES, FETCH_RESPONSE_MAX_BYTES,
    FETCH_RESPONSE_READ_MAX_BYTES,
};
use super::recorder::Recorder;
use sluice_broker::storage::batch::BatchHeader;

/// Fetch v12: the newest version that names topics (v13 on use topic ids), served by Kafka 4
/// and by Sluice.
const FETCH_VERSION: i16 = 12;

/// Sent as the client id of every request.
const CLIENT_ID: &str = "sluice-bench";

/// The address of the one broker that leads every partition of `topic`, from the metadata
/// `client` sees. Fails when several brokers lead them: this reader talks to one.
pub fn leader_address(client: &BaseConsumer, topic: &Topic) -> Result<String> {
    let metadata = client
        .fetch_metadata(Some(&topic.name), ADMIN_TIMEOUT)
        .with_context(|| format!("metadata for {}", topic.name))?;
    let topic_metadata = metadata
        .topics()
        .first()
        .with_context(|| format!("no metadata for {}", topic.name))?;
    let mut leaders: Vec<i32> = topic_metadata
        .partitions()
        .iter()
        .map(|p| p.leader())
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let [leader] = leaders[..] else {
        bail!(
            "--reader fetch reads from one broker, but {} is led by brokers {leaders:?}",
            topic.name
        );
    };
    let broker = metadata
        .brokers()
        .iter()
        .find(|b| b.id() == leader)
        .with_context(|| format!("leader {leader} of {} is not in the metadata", topic.name))?;
    Ok(format!("{}:{}", broker.host(), broker.port()))
}

/// Reads `mine` from their start to the end offsets they had when the run began.
pub fn catch_up(
    address: &str,
    topic: &Topic,
    mine: &[Watermarks],
    recorder: &Mutex<Recorder>,
) -> Result<()> {
    let mut next: HashMap<i32, i64> = mine
        .iter()
        .filter(|w| w.high > w.low)
        .map(|w| (w.partition, w.low))
        .collect();
    let ends: HashMap<i32, i64> = mine.iter().map(|w| (w.partition, w.high)).collect();
    let mut connection = Connection::open(address)?;
    while !next.is_empty() {
        let response = connection.fetch(&topic.name, &next)?;
        let mut arrived = Arrived::default();
        for answer in &response.responses {
            for partition in &answer.partitions {
                ensure!(
                    partition.error_code == 0,
                    "fetching {} partition {}: error code {}",
                    topic.name,
                    partition.partition_index,
                    partition.error_code
                );
                let Some(offset) = next.get_mut(&partition.partition_index) else {
                    continue;
                };
                if let Some(records) = &partition.records {
                    *offset = arrived.count(records, *offset);
                }
                if *offset >= ends[&partition.partition_index] {
                    next.remove(&partition.partition_index);
                }
            }
        }
        drop(response);
        connection.reclaim_buffer();
        recorder
            .lock()
            .unwrap()
            .arrived(Instant::now(), arrived.records, arrived.bytes);
    }
    Ok(())
}

/// Records and bytes of whole batches in one response.
#[derive(Default)]
struct Arrived {
    records: u64,
    bytes: u64,
}

impl Arrived {
    /// Steps through the whole batches of `records` (a response may end in part of one) and
    /// returns the offset to fetch next, at least `from`. Control batches (transaction markers)
    /// move the offset but are not records.
    fn count(&mut self, records: &Bytes, from: i64) -> i64 {
        let mut next = from;
        let mut rest = &records[..];
        while let Some(header) = BatchHeader::parse(rest) {
            let len = header.total_bytes();
            if len > rest.len() {
                break;
            }
            if !header.is_control() {
                self.records += header.record_count.max(0) as u64;
            }
            self.bytes += len as u64;
            next = next.max(header.next_offset().0);
            rest = &rest[len..];
        }
        next
    }
}

/// One connection that sends a Fetch and reads its response into a buffer it reuses.
struct Connection {
    stream: TcpStream,
    correlation_id: i32,
    /// Fully initialized and as long as the largest response so far; lent out as `Bytes` while
    /// a response is decoded (its record sets are slices of it) and taken back afterwards.
    buffer: BytesMut,
    lent: Option<Bytes>,
}

impl Connection {
    fn open(address: &str) -> Result<Connection> {
        let stream =
            TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            correlation_id: 0,
            buffer: BytesMut::new(),
            lent: None,
        })
    }

    fn fetch(&mut self, topic: &str, next: &HashMap<i32, i64>) -> Result<FetchResponse> {
        self.correlation_id += 1;
        let id = RequestId {
            correlation_id: self.correlation_id,
            client_id: CLIENT_ID,
        };
        let request = frame::encode_request(
            ApiKey::Fetch,
            FETCH_VERSION,
            id,
            &fetch_request(topic, next),
        )?;
        self.stream.write_all(&request)?;
        let mut prefix = [0u8; frame::SIZE_PREFIX_BYTES];
        self.stream.read_exact(&mut prefix)?;
        let size = frame::frame_len(prefix, FETCH_RESPONSE_READ_MAX_BYTES)?;
        if self.buffer.len() < size {
            self.buffer.resize(size, 0);
        }
        self.stream.read_exact(&mut self.buffer[..size])?;
        let whole = std::mem::take(&mut self.buffer).freeze();
        let response_frame = whole.slice(..size);
        self.lent = Some(whole);
        let response: FetchResponse = frame::decode_response(
            ApiKey::Fetch,
            FETCH_VERSION,
            self.correlation_id,
            response_frame,
        )
        .context("a fetch response")?;
        ensure!(
            response.error_code == 0,
            "fetch failed: error code {}",
            response.error_code
        );
        Ok(response)
    }

    /// Takes the buffer back once nothing decoded from it is alive; otherwise the next
    /// response gets a new one.
    fn reclaim_buffer(&mut self) {
        if let Some(whole) = self.lent.take() {
            self.buffer = whole.try_into_mut().unwrap_or_default();
        }
    }
}

/// A read_committed Fetch of `next` (partition to offset) with librdkafka's sizes.
fn fetch_request(topic: &str, next: &HashMap<i32, i64>) -> FetchRequest {
    let partitions = next
        .iter()
        .map(|(&partition, &offset)| {
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_MAX_BYTES as i32)
        .with_isolation_level(1)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::storage::batch::{
        assign_offset, build_batch, build_control_batch, ControlType,
    };
    use sluice_broker::types::Offset;

    fn batch_at(base: i64, records: usize) -> Vec<u8> {
        let value = [7u8; 100];
        let values: Vec<_> = (0..records).map(|_| (None, Some(&value[..]))).collect();
        let mut batch = build_batch(&values, 0);
        assign_offset(&mut batch, Offset(base), 0);
        batch
    }

    #[test]
    fn whole_batches_are_counted_and_a_partial_one_is_not() {
        let first = batch_at(10, 3);
        let second = batch_at(13, 2);
        let mut records = first.clone();
        records.extend_from_slice(&second);
        records.extend_from_slice(&batch_at(15, 4)[..50]);
        let mut arrived = Arrived::default();
        let next = arrived.count(&Bytes::from(records), 10);
        assert_eq!(next, 15);
        assert_eq!(arrived.records, 5);
        assert_eq!(arrived.bytes, (first.len() + second.len()) as u64);
    }

    #[test]
    fn a_control_batch_moves_the_offset_but_holds_no_records() {
        let mut marker = build_control_batch(7, 0, ControlType::Commit, 0, 0);
        assign_offset(&mut marker, Offset(20), 0);
        let mut arrived = Arrived::default();
        assert_eq!(arrived.count(&Bytes::from(marker), 20), 21);
        assert_eq!(arrived.records, 0);
        assert_eq!(arrived.count(&Bytes::new(), 21), 21);
    }
}
