//! Micro-benchmarks of the log's hot paths: batch validation with CRC-32C and the walk over
//! every record (ns per record in "validate records"), append (offset
//! assignment into a copy of the header, indexing, the records left where they are), and offset
//! index lookup.
//!
//! cargo bench --bench log

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::executor::block_on;
use sluice_broker::config::{Config, TimestampType};
use sluice_broker::storage::batch::{self, BatchHeader};
use sluice_broker::storage::index::OffsetIndex;
use sluice_broker::storage::log::Log;
use sluice_broker::storage::mem::MemStorage;
use sluice_broker::storage::record_check::{self, RecordRules};
use sluice_broker::types::{Offset, TopicPartition};

/// A valid uncompressed batch of `records` records of `value_bytes` each.
fn make_batch(records: usize, value_bytes: usize) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    let pairs: Vec<batch::KeyValue> = (0..records).map(|_| (None, Some(&value[..]))).collect();
    batch::build_batch(&pairs, 0)
}

/// Validation rules for a CreateTime topic with Kafka's default timestamp window, at the
/// batches' own time (0).
fn rules(tp: &TopicPartition, compacted: bool) -> RecordRules<'_> {
    RecordRules {
        tp,
        compacted,
        timestamp_type: TimestampType::CreateTime,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: 3_600_000,
        now_ms: 0,
    }
}

fn validation(c: &mut Criterion) {
    let tp = TopicPartition::new("bench", 0);
    let batch = make_batch(16, 1024);
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("16x1KiB batch", |b| {
        b.iter(|| batch::validate_produce(&batch, 1 << 20, &rules(&tp, false)).unwrap())
    });
    group.finish();
    // The per-record walk on its own: small records, where it weighs most against the CRC.
    let value = [b'v'; 10];
    let keyed: Vec<batch::KeyValue> = (0..100)
        .map(|_| (Some(&b"key"[..]), Some(&value[..])))
        .collect();
    let small = batch::build_batch(&keyed, 0);
    let header = BatchHeader::parse(&small).unwrap();
    let mut group = c.benchmark_group("validate records");
    group.throughput(Throughput::Elements(100));
    group.bench_function("100x10B keyed, header and CRC only", |b| {
        b.iter(|| batch::check_batch(&small).unwrap())
    });
    group.bench_function("100x10B keyed, records walked (compacted)", |b| {
        b.iter(|| record_check::check_records(&small, &header, &rules(&tp, true)).unwrap())
    });
    group.bench_function("100x10B keyed, whole validation", |b| {
        b.iter(|| batch::validate_produce(&small, 1 << 20, &rules(&tp, true)).unwrap())
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let batch = Bytes::from(make_batch(16, 1024));
    let header = BatchHeader::parse(&batch).unwrap();
    let mut config = Config::default().log;
    config.segment_bytes = 64 << 20;
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64 * 1000));
    group.bench_function("1000 batches of 16x1KiB", |b| {
        b.iter_batched(
            || {
                block_on(Log::open(
                    MemStorage::default(),
                    PathBuf::from("/bench"),
                    config.clone(),
                    Offset(0),
                    0,
                    &mut |_, _| None,
                ))
                .unwrap()
                .0
            },
            |mut log| {
                for _ in 0..1000 {
                    log.append(batch.clone(), &header, 0, 0).unwrap();
                }
                log
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut index = OffsetIndex::default();
    for i in 1..=262_144u32 {
        index.push(i * 4, i * 4096);
    }
    let mut probe = 0u32;
    c.bench_function("index lookup in 256k entries (1 GiB segment)", |b| {
        b.iter(|| {
            probe = probe.wrapping_add(7919) % (262_144 * 4);
            index.lookup(probe)
        })
    });
}

criterion_group!(benches, validation, append, index_lookup);
criterion_main!(benches);
