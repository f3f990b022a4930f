//! The transaction APIs over a raw socket against the real broker: every advertised version,
//! Kafka's error codes for bad transactional requests, markers only on the transaction's
//! partitions, and a crash between "prepare commit" and the markers (simulated by appending the
//! PrepareCommit record to `__transaction_state` while the broker is down).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{call, connect, create_topic, earliest_offset, Broker};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::group::records::partition_for_group;
use sluice_broker::storage::batch::{self, BatchHeader};
use sluice_broker::txn::state::{encode_key, encode_value, TxnMetadata, TxnState, TXN_TOPIC};
use sluice_broker::types::{ProducerEpoch, TopicPartition};

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const PRODUCER_FENCED: i16 = 90;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn find_txn_coordinator(s: &mut TcpStream, id: &str) {
    let request = FindCoordinatorRequest::default()
        .with_key(text(id))
        .with_key_type(1);
    let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 3, &request);
    assert_eq!(r.error_code, NONE);
}

fn init(s: &mut TcpStream, version: i16, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    call(s, ApiKey::InitProducerId, version, &request)
}

fn add_partitions(
    s: &mut TcpStream,
    version: i16,
    id: &str,
    (pid, epoch): (i64, i16),
    topic: &str,
    partitions: Vec<i32>,
) -> Vec<i16> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(partitions)]);
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, version, &request);
    r.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect()
}

fn end(s: &mut TcpStream, version: i16, id: &str, (pid, epoch): (i64, i16), commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r: EndTxnResponse = call(s, ApiKey::EndTxn, version, &request);
    r.error_code
}

/// A transactional batch of one record from `pid` at `epoch`, sequence `seq`.
fn txn_batch((pid, epoch): (i64, i16), seq: i32, value: &str) -> Bytes {
    let mut b =
        batch::build_transactional_batch(&[(None, Some(value.as_bytes()))], 1000, pid, epoch);
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// A Produce of `records` on behalf of transactional id `txn_id` (which the partition's leader
/// asks the coordinator about before the first batch of a transaction).
fn produce(s: &mut TcpStream, txn_id: &str, topic: &str, partition: i32, records: Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(text(txn_id))))
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(text(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let r: ProduceResponse = call(s, ApiKey::Produce, 9, &request);
    r.responses[0].partition_responses[0].error_code
}

/// A read_committed fetch of one partition from offset 0: (high watermark, last stable offset,
/// aborted transactions, record bytes).
fn fetch(s: &mut TcpStream, topic: &str, partition: i32) -> (i64, i64, usize, Bytes) {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(text(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = call(s, ApiKey::Fetch, 11, &request);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, NONE);
    (
        p.high_watermark,
        p.last_stable_offset,
        p.aborted_transactions.as_ref().map_or(0, |a| a.len()),
        p.records.clone().unwrap_or_default(),
    )
}

/// Control batches among `records`.
fn markers(records: &Bytes) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some(h) = BatchHeader::parse(&records[at..]) {
        if h.total_bytes() == 0 || at + h.total_bytes() > records.len() {
            break;
        }
        n += h.is_control() as usize;
        at += h.total_bytes();
    }
    n
}

#[test]
fn every_transaction_api_version_is_answered() {
    let broker = Broker::start("txn-versions", 2, &[]);
    let mut s = connect(&broker);
    create_topic(&mut s, "v", 2);
    find_txn_coordinator(&mut s, "v");
    for v in 0..=5i16 {
        let id = format!("tx-v{v}");
        let r = init(&mut s, v, &id, 60_000);
        assert_eq!(r.error_code, NONE, "InitProducerId v{v}");
        let producer = (r.producer_id.0, r.producer_epoch);
        let add_version = v.min(3);
        assert_eq!(
            add_partitions(&mut s, add_version, &id, producer, "v", vec![0, 1]),
            vec![NONE, NONE],
            "AddPartitionsToTxn v{add_version}"
        );
        let offsets = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(text(&id)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_group_id(GroupId(text("g")));
        let r: AddOffsetsToTxnResponse = call(&mut s, ApiKey::AddOffsetsToTxn, v.min(4), &offsets);
        assert_eq!(r.error_code, NONE, "AddOffsetsToTxn v{}", v.min(4));
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(text(&id)))
            .with_group_id(GroupId(text("g")))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(text("v")))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(v as i64)])]);
        let r: TxnOffsetCommitResponse = call(&mut s, ApiKey::TxnOffsetCommit, v.min(4), &commit);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            NONE,
            "TxnOffsetCommit v{}",
            v.min(4)
        );
        assert_eq!(
            end(&mut s, v.min(4), &id, producer, true),
            NONE,
            "EndTxn v{}",
            v.min(4)
        );
        assert_eq!(
            end(&mut s, v.min(4), &id, producer, true),
            NONE,
            "a retried commit"
        );
    }
    // Six committed transactions, each with a marker on both partitions.
    let (hw, lso, aborted, records) = fetch(&mut s, "v", 0);
    assert_eq!((hw, lso, aborted), (6, 6, 0));
    assert_eq!(markers(&records), 6);
}

#[test]
fn bad_transactional_requests_get_kafka_error_codes() {
    let broker = Broker::start("txn-bad", 2, &["transaction.max.timeout.ms=60000"]);
    let mut s = connect(&broker);
    create_topic(&mut s, "b", 3);
    find_txn_coordinator(&mut s, "bad");
    assert_eq!(
        init(&mut s, 4, "bad", 60_001).error_code,
        INVALID_TRANSACTION_TIMEOUT
    );
    let r = init(&mut s, 4, "bad", 60_000);
    let p = (r.producer_id.0, r.producer_epoch);
    assert_eq!(
        end(&mut s, 3, "bad", p, true),
        INVALID_TXN_STATE,
        "EndTxn without a transaction"
    );
    assert_eq!(
        add_partitions(&mut s, 3, "unknown-id", p, "b", vec![0]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        add_partitions(&mut s, 3, "bad", (p.0 + 1, p.1), "b", vec![0]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        add_partitions(&mut s, 3, "bad", (p.0, p.1 + 1), "b", vec![0]),
        vec![PRODUCER_FENCED]
    );
    assert_eq!(
        add_partitions(&mut s, 3, "bad", p, "b", vec![0, 7]),
        vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        produce(&mut s, "bad", "b", 1, txn_batch(p, 0, "x")),
        INVALID_TXN_STATE,
        "partition never added"
    );
    assert_eq!(
        add_partitions(&mut s, 3, "bad", p, "b", vec![0, 1]),
        vec![NONE, NONE]
    );
    assert_eq!(
        produce(&mut s, "bad", "b", 0, txn_batch(p, 0, "in-txn")),
        NONE
    );
    assert_eq!(
        produce(&mut s, "bad", "b", 2, txn_batch(p, 0, "x")),
        INVALID_TXN_STATE,
        "partition 2 is not in it"
    );
    // A second init fences the first producer and aborts its transaction.
    let r2 = init(&mut s, 4, "bad", 60_000);
    assert_eq!(r2.error_code, NONE);
    assert_eq!((r2.producer_id.0, r2.producer_epoch > p.1), (p.0, true));
    assert_eq!(
        end(&mut s, 3, "bad", p, true),
        PRODUCER_FENCED,
        "the zombie cannot commit"
    );
    assert_eq!(
        produce(&mut s, "bad", "b", 0, txn_batch(p, 1, "late")),
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (hw, lso, aborted, records) = fetch(&mut s, "b", 0);
    assert_eq!(
        (lso, aborted),
        (hw, 1),
        "the aborted transaction is reported"
    );
    assert_eq!(markers(&records), 1, "one ABORT marker on partition 0");
    let (_, _, _, records) = fetch(&mut s, "b", 2);
    assert_eq!(
        markers(&records),
        0,
        "never a marker on a partition outside the transaction"
    );
    assert!(broker.log().contains("listening on"));
}

#[test]
fn a_commit_prepared_before_a_crash_completes_after_the_restart() {
    let mut broker = Broker::start("txn-prepared", 2, &[]);
    let mut s = connect(&broker);
    create_topic(&mut s, "c", 2);
    find_txn_coordinator(&mut s, "crashy");
    let r = init(&mut s, 4, "crashy", 60_000);
    let p = (r.producer_id.0, r.producer_epoch);
    assert_eq!(
        add_partitions(&mut s, 3, "crashy", p, "c", vec![0, 1]),
        vec![NONE, NONE]
    );
    assert_eq!(
        produce(&mut s, "crashy", "c", 0, txn_batch(p, 0, "zero")),
        NONE
    );
    assert_eq!(
        produce(&mut s, "crashy", "c", 1, txn_batch(p, 0, "one")),
        NONE
    );
    assert_eq!(fetch(&mut s, "c", 0).1, 0, "held at the open transaction");
    drop(s);
    broker.kill9();

    // The coordinator had written PrepareCommit when the broker died, before any marker.
    let state_partition = partition_for_group("crashy", 50);
    let dir = broker
        .data_dir
        .join(format!("{TXN_TOPIC}-{state_partition}"));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let log = logs.last().unwrap();
    let bytes = std::fs::read(log).unwrap();
    let mut at = 0;
    let mut next = 0;
    while let Some(h) = BatchHeader::parse(&bytes[at..]) {
        at += h.total_bytes();
        next = h.next_offset().0;
    }
    let mut prepared = TxnMetadata::new(sluice_broker::types::ProducerId(p.0), 60_000, 0);
    prepared.epoch = ProducerEpoch(p.1);
    prepared.state = TxnState::PrepareCommit;
    prepared.start_ms = 0;
    prepared.partitions.insert(TopicPartition::new("c", 0));
    prepared.partitions.insert(TopicPartition::new("c", 1));
    let (key, value) = (encode_key("crashy"), encode_value(&prepared));
    let mut record = batch::build_batch(&[(Some(&key), Some(&value))], 0);
    record[0..8].copy_from_slice(&next.to_be_bytes());
    std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .unwrap()
        .write_all(&record)
        .unwrap();

    broker.restart();
    let mut s = connect(&broker);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (hw0, lso0, _, records0) = fetch(&mut s, "c", 0);
        let (hw1, lso1, _, records1) = fetch(&mut s, "c", 1);
        if lso0 == hw0 && lso1 == hw1 && markers(&records0) == 1 && markers(&records1) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prepared commit never completed:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(broker.log().contains("finishing its prepared Commit"));
    // The producer carries on with a new transaction.
    find_txn_coordinator(&mut s, "crashy");
    let r = init(&mut s, 4, "crashy", 60_000);
    assert_eq!(r.error_code, NONE);
}

#[test]
fn the_transaction_log_is_compacted_and_keeps_every_id_across_kill_9() {
    let mut broker = Broker::start(
        "txn-compact",
        2,
        &[
            "transaction.state.log.num.partitions=1",
            "transaction.state.log.segment.bytes=16384",
        ],
    );
    let mut s = connect(&broker);
    create_topic(&mut s, "t", 1);
    find_txn_coordinator(&mut s, "a");
    let mut producers = Vec::new();
    for id in ["a", "b"] {
        let r = init(&mut s, 4, id, 60_000);
        producers.push((r.producer_id.0, r.producer_epoch));
    }
    // ~300 transactions of two state records each: many 16 KiB segments of superseded states.
    for _ in 0..150 {
        for (id, p) in ["a", "b"].iter().zip(&producers) {
            assert_eq!(add_partitions(&mut s, 3, id, *p, "t", vec![0]), vec![NONE]);
            assert_eq!(end(&mut s, 3, id, *p, true), NONE);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while earliest_offset(&mut s, TXN_TOPIC, 0) == 0 {
        assert!(
            Instant::now() < deadline,
            "never compacted:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(s);
    broker.kill9();
    broker.restart();
    let mut s = connect(&broker);
    for (id, (pid, epoch)) in ["a", "b"].iter().zip(&producers) {
        let r = init(&mut s, 4, id, 60_000);
        assert_eq!(r.error_code, NONE);
        assert_eq!(
            (r.producer_id.0, r.producer_epoch),
            (*pid, epoch + 1),
            "{id} kept its producer id and epoch"
        );
    }
}
