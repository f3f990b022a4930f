//! Micro-benchmarks of the protocol's hot paths: decoding a Produce request (frame header,
//! kafka-protocol decode, records left as bytes) and framing a Fetch response around record
//! bytes (by hand, without copying large record sets).
//!
//! cargo bench --bench protocol

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_broker::protocol::fetch_frame::{
    encode_body, FetchAnswer, PartitionAnswer, TopicAnswer,
};
use sluice_broker::protocol::parse_request;
use sluice_broker::storage::batch;
use sluice_broker::storage::payload::Payload;

/// One uncompressed batch of `records` values of `value_bytes` each.
fn records(records: usize, value_bytes: usize) -> Bytes {
    let value = vec![b'x'; value_bytes];
    let pairs: Vec<batch::KeyValue> = (0..records).map(|_| (None, Some(&value[..]))).collect();
    Bytes::from(batch::build_batch(&pairs, 0))
}

/// A Produce v9 request frame (after the size) carrying one batch to each of `partitions`.
fn produce_frame(partitions: i32) -> Bytes {
    let batch = records(16, 1024);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Produce.request_header_version(9))
        .unwrap();
    request.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for partitions in [1, 16] {
        let frame = produce_frame(partitions);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("produce v9, {partitions} x 16 x 1 KiB"), |b| {
            b.iter(|| parse_request(frame.clone()).unwrap())
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (partitions, per_partition) in [(1, 1usize << 20), (16, 64 * 1024), (256, 1024)] {
        let records = records(per_partition / 1024, 1000);
        let answer = FetchAnswer {
            topics: vec![TopicAnswer {
                name: "bench".into(),
                topic_id: Default::default(),
                partitions: (0..partitions)
                    .map(|p| PartitionAnswer {
                        partition: p,
                        high_watermark: 1000,
                        last_stable_offset: 1000,
                        log_start_offset: 0,
                        records: Payload::Bytes(records.clone()),
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        };
        group.throughput(Throughput::Bytes(records.len() as u64 * partitions as u64));
        group.bench_function(
            format!(
                "fetch v12, {partitions} partitions x {} KiB",
                per_partition / 1024
            ),
            |b| b.iter(|| encode_body(12, &answer)),
        );
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
