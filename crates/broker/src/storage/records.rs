//! The records inside an uncompressed v2 batch, read in place: where each one lies, its offset
//! and timestamp deltas, its key, whether it is a tombstone. Used where the broker must look
//! inside a batch after it is stored: the compactor (latest value per key). Produce validation
//! reads the same records through the same walker (`record_walk`).
//!
//! Runs on the shard that owns the partition.

use std::ops::Range;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::record_walk::RecordWalker;
use crate::types::Offset;

/// One record of a batch, as byte ranges into that batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// The whole record, its length prefix included: copied verbatim when the record is kept.
    pub bytes: Range<usize>,
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// `None` for a record without a key.
    pub key: Option<Range<usize>>,
    /// A null value: a delete marker on a compacted topic.
    pub tombstone: bool,
}

/// Reads every record of an uncompressed, non-control batch (exactly one batch), as the log
/// holds it: offset deltas strictly increasing within the header's range (a compacted batch may
/// have gaps). `None` when the batch is compressed, a control batch, or its records do not
/// parse: callers then treat the batch as opaque.
pub fn read_records(batch: &[u8]) -> Option<Vec<RecordRef>> {
    let header = BatchHeader::parse(batch)?;
    if header.codec() != 0 || header.is_control() || header.total_bytes() != batch.len() {
        return None;
    }
    // The base offset lies outside the CRC: a damaged one may put the range past i64::MAX.
    header
        .base_offset
        .0
        .checked_add(i64::from(header.last_offset_delta))?;
    let mut records = Vec::with_capacity(header.record_count.max(0) as usize);
    let mut previous = -1i64;
    for record in RecordWalker::new(batch, &header) {
        let record = record.ok()?;
        let delta = i64::from(record.offset_delta);
        if delta <= previous || delta > i64::from(header.last_offset_delta) {
            return None;
        }
        previous = delta;
        records.push(RecordRef {
            bytes: record.bytes,
            offset_delta: delta,
            timestamp_delta: record.timestamp_delta,
            key: record.key,
            tombstone: record.value.is_none(),
        });
    }
    Some(records)
}

/// The offset of a record that `read_records` returned from a batch based at `base` (that
/// batch's base offset). Its delta lies within the batch's range, whose last offset
/// `read_records` checked fits: no overflow.
pub fn record_offset(base: Offset, record: &RecordRef) -> Offset {
    assert!(record.offset_delta >= 0, "read_records checks deltas");
    Offset(
        base.0
            .checked_add(record.offset_delta)
            .expect("a record's offset lies within its batch's range"),
    )
}

/// A copy of `batch` holding only `kept` (a non-empty, ordered subset of its records). The base
/// offset, last offset delta, base timestamp, producer fields and base sequence stay, as Kafka's
/// cleaner keeps them, so offsets and idempotence state read the same; the record count, the
/// max timestamp (unless LogAppendTime) and the CRC are recomputed.
pub fn rebuild_batch(batch: &[u8], kept: &[&RecordRef]) -> Vec<u8> {
    let header = BatchHeader::parse(batch).expect("a batch that read_records accepted");
    assert!(!kept.is_empty(), "an empty batch is dropped, not rebuilt");
    let body_len: usize = kept.iter().map(|r| r.bytes.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + body_len);
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    for record in kept {
        out.extend_from_slice(&batch[record.bytes.clone()]);
    }
    let batch_length = (out.len() - batch::LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    if !header.is_log_append_time() {
        let newest = kept.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
        let max_timestamp = header.base_timestamp.saturating_add(newest);
        out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{build_batch, check_stored_batch};

    #[test]
    fn reads_keys_tombstones_and_deltas() {
        let batch = build_batch(
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (None, Some(b"3")),
            ],
            1_000,
        );
        let records = read_records(&batch).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(&batch[records[0].key.clone().unwrap()], b"a");
        assert!(!records[0].tombstone);
        assert!(records[1].tombstone);
        assert_eq!(records[2].key, None);
        assert_eq!(
            records.iter().map(|r| r.offset_delta).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn truncated_or_padded_records_are_refused() {
        let batch = build_batch(&[(Some(b"key"), Some(b"value"))], 0);
        let mut short = batch[..batch.len() - 2].to_vec();
        let len = (short.len() - batch::LOG_OVERHEAD_BYTES) as i32;
        short[8..12].copy_from_slice(&len.to_be_bytes());
        assert_eq!(read_records(&short), None);
        let mut long = batch.clone();
        long.push(0);
        let len = (long.len() - batch::LOG_OVERHEAD_BYTES) as i32;
        long[8..12].copy_from_slice(&len.to_be_bytes());
        assert_eq!(read_records(&long), None);
    }

    #[test]
    fn deltas_outside_the_range_and_ranges_past_the_last_offset_are_opaque() {
        let mut batch = build_batch(&[(Some(b"k"), Some(b"value"))], 0);
        let delta_at = HEADER_BYTES + 3; // length, attributes, timestamp delta
        batch[delta_at] = 32; // zig-zag 16, past the header's last offset delta of 0
        let crc = batch::compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(read_records(&batch), None);
        let mut near_the_end = build_batch(&[(Some(b"a"), None), (Some(b"b"), None)], 0);
        near_the_end[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(read_records(&near_the_end), None, "offsets would overflow");
        near_the_end[0..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        let records = read_records(&near_the_end).unwrap();
        assert_eq!(
            record_offset(Offset(i64::MAX - 1), &records[1]),
            Offset(i64::MAX)
        );
    }

    #[test]
    fn rebuilt_batch_keeps_offsets_and_passes_the_stored_check() {
        let mut batch = build_batch(
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), Some(b"2")),
                (Some(b"a"), Some(b"3")),
            ],
            5_000,
        );
        batch[0..8].copy_from_slice(&100i64.to_be_bytes());
        let records = read_records(&batch).unwrap();
        let rebuilt = rebuild_batch(&batch, &[&records[1], &records[2]]);
        let header = check_stored_batch(&rebuilt).unwrap();
        assert_eq!(header.base_offset, Offset(100));
        assert_eq!(header.last_offset(), Offset(102));
        assert_eq!(header.record_count, 2);
        let kept = read_records(&rebuilt).unwrap();
        assert_eq!(
            kept.iter().map(|r| r.offset_delta).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(&rebuilt[kept[1].key.clone().unwrap()], b"a");
        assert!(
            batch::check_batch(&rebuilt).is_err(),
            "not a producer batch"
        );
    }
}
