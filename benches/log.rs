//! Micro-benchmarks of the log's hot paths: batch validation with CRC-32C, append into the
//! pending buffer (offset assignment and indexing), and offset index lookup.
//!
//! cargo bench --bench log

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::executor::block_on;
use sluice::config::Config;
use sluice::storage::batch::{self, BatchHeader};
use sluice::storage::index::OffsetIndex;
use sluice::storage::log::Log;
use sluice::storage::mem::MemStorage;
use sluice::types::Offset;

/// A valid uncompressed batch of `records` records of `value_bytes` each.
fn make_batch(records: usize, value_bytes: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..records {
        let mut record = vec![0u8];
        record.extend(varint(i as i64));
        record.extend(varint(i as i64));
        record.extend(varint(-1));
        record.extend(varint(value_bytes as i64));
        record.extend(std::iter::repeat_n(b'x', value_bytes));
        record.extend(varint(0));
        body.extend(varint(record.len() as i64));
        body.extend(record);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(records as i32 - 1).to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(records as i32).to_be_bytes());
    b.extend(body);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn varint(v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    batch::put_varlong(&mut out, v);
    out
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
    let batch = make_batch(16, 1024);
    let header = BatchHeader::parse(&batch).unwrap();
    let mut config = Config::default().log;
    config.segment_bytes = 64 << 20;
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Bytes(batch.len() as u64 * 1000));
    group.bench_function("1000 batches of 16x1KiB into pending", |b| {
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
                    log.append(&batch, &header, 0, 0).unwrap();
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
