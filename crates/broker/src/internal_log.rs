//! What the two coordinators that keep their state in internal topics (`__consumer_offsets`
//! for groups, `__transaction_state` for transactions) share: Kafka's big-endian record field
//! encoding, and compaction by rewrite.
//!
//! Each coordinator holds the complete live state of its partitions in memory, so compacting
//! is rewriting: once a partition has grown well past its live state, the live records are
//! appended again in one go (nothing interleaves), and once they are durable the log start
//! moves to where they begin; whole segments below it go, as with DeleteRecords. The caller
//! makes sure no record below the cut is missing from memory (no write in flight). Runs on the
//! shard that owns the partition.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;
use crate::limits;
use crate::partition::{self, PartitionRef};
use crate::storage::batch::{self, KeyValue};
use crate::storage::fs::UringStorage;
use crate::types::Offset;

/// Whether a partition last rewritten at `rewritten_at`, now holding `live` live records, is
/// due for compaction (dropping any whole segments already below its log start first).
pub fn due(partition: &PartitionRef<UringStorage>, rewritten_at: Offset, live: usize) -> bool {
    let mut p = partition.borrow_mut();
    p.remove_segments_below_start();
    let written = p.offsets().high_watermark.0 - rewritten_at.0;
    p.segment_count() >= limits::INTERNAL_COMPACT_MIN_SEGMENTS
        && written > limits::INTERNAL_COMPACT_GARBAGE_RATIO * live.max(1) as i64
}

/// Appends `live` (key, value) records, waits until durable, and moves the log start to the
/// first of them; returns that offset.
pub async fn rewrite(
    partition: &PartitionRef<UringStorage>,
    live: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
) -> Result<Offset, ErrorCode> {
    let cut = partition.borrow().offsets().log_end;
    let mut last = cut;
    for chunk in live.chunks(limits::INTERNAL_COMPACT_BATCH_RECORDS) {
        let pairs: Vec<KeyValue> = chunk
            .iter()
            .map(|(k, v)| (Some(&k[..]), v.as_deref()))
            .collect();
        let bytes = batch::build_batch(&pairs, now_ms);
        last = partition
            .borrow_mut()
            .append_broker_batch(bytes, now_ms)?
            .end;
        partition::schedule_flush(partition);
    }
    partition::wait_high_watermark(partition, last).await?;
    partition::delete_records(partition, cut.0).await
}

/// Reads the partition from its log start to its durable end in bounded chunks, handing each chunk
/// to `on_chunk`, which decodes the whole batches in it and returns the offset after the last
/// one (a chunk may end inside a batch: the next read starts there).
///
/// Past the high watermark, as Kafka loads its coordinators (to the log end): a newly elected
/// leader learns the high watermark from its followers only after it has been elected, so its
/// own may still sit below records the old leader had already committed and acknowledged. It
/// reads as followers do, up to what is on disk, which holds every committed record.
pub async fn replay(
    partition: &PartitionRef<UringStorage>,
    mut on_chunk: impl FnMut(&Bytes) -> Option<Offset>,
) -> std::io::Result<()> {
    let (mut offset, end) = {
        let o = partition.borrow().offsets();
        (o.log_start, o.log_end)
    };
    while offset < end {
        let cursor = partition
            .borrow()
            .follower_cursor_at(offset)
            .map_err(|code| std::io::Error::other(code.to_string()))?;
        let Some(cursor) = cursor else { break };
        let bytes = cursor
            .read(offset, limits::INTERNAL_LOAD_READ_BYTES)
            .await?;
        match on_chunk(&bytes) {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    Ok(())
}

pub fn put_string(out: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

pub fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

pub fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

/// A bounds-checked big-endian reader over one record's key or value: a damaged record is an
/// error naming what is short, never a panic.
pub struct FieldReader<'a>(pub &'a [u8]);

impl FieldReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("{n} bytes wanted, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub fn i8(&mut self) -> Result<i8, String> {
        Ok(self.take(1)?[0] as i8)
    }
    pub fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| "string is not UTF-8".to_string())
    }
    pub fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?
            .ok_or_else(|| "null where a string is required".to_string())
    }
    pub fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}
