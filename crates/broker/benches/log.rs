//! Micro-benchmarks of the log's hot paths: batch validation with CRC-32C, append (offset
//! assignment into a copy of the header, indexing, the records left where they are), and offset
//! index lookup.
//!
//! cargo bench --bench log

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::executor::block_on;
use sluice_broker::config::Config;
use sluice_broker::storage::batch::{self, BatchHeader};
use sluice_broker::storage::index::OffsetIndex;
use sluice_broker::storage::log::Log;
use sluice_broker::storage::mem::MemStorage;
use sluice_broker::types::Offset;

/// A valid uncompressed batch of `records` records of `value_bytes` each.
fn make_batch(records: usize, value_bytes: usize) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    let pairs: Vec<batch::KeyValue> = (0..records).map(|_| (None, Some(&value[..]))).collect();
    batch::build_batch(&pairs, 0)
}

fn validation(c: &mut Criterion) {
    let batch = make_batch(16, 1024);
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("16x1KiB batch", |b| {
        b.iter(|| batch::validate_produce(&batch, 1 << 20).unwrap())
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
