//! Produce validation of the records inside an uncompressed batch, as Kafka's `LogValidator`
//! does it before anything is stored: every record must parse (else INVALID_RECORD, no
//! per-record detail, as Kafka's `InvalidRecordException`), and each record is then checked on
//! its own: offset delta in sequence, a key on a compacted topic (INVALID_RECORD), a create
//! time within `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` and no
//! LogAppendTime set by the producer (INVALID_TIMESTAMP). Refused records are listed with their
//! batch index and reason (KIP-467), and any one of them refuses the batch.
//!
//! One pass over the records with the allocation-free walker; nothing is allocated unless a
//! record is refused.

use crate::config::TimestampType;
use crate::error::{ErrorCode, ProduceError, RecordError, RecordErrors};
use crate::limits;
use crate::types::TopicPartition;

use super::batch::BatchHeader;
use super::record_walk::{RecordWalker, WalkedRecord};

/// Kafka's `RecordBatch.NO_TIMESTAMP`: a record without a create time is not range-checked.
const NO_TIMESTAMP: i64 = -1;

/// What the records of a produced batch are checked against: the partition's topic configs and
/// the broker's clock.
#[derive(Debug, Clone, Copy)]
pub struct RecordRules<'a> {
    pub tp: &'a TopicPartition,
    pub compacted: bool,
    pub timestamp_type: TimestampType,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub now_ms: i64,
}

/// Checks every record of one uncompressed producer batch (`header` read from it).
pub fn check_records(
    batch: &[u8],
    header: &BatchHeader,
    rules: &RecordRules,
) -> Result<(), ProduceError> {
    debug_assert_eq!(header.codec(), 0, "compressed batches are not opened");
    let mut refused = Refused::default();
    for (index, record) in RecordWalker::new(batch, header).enumerate() {
        let record = record.map_err(|_| ErrorCode::InvalidRecord)?;
        let index = i32::try_from(index).expect("at most record_count (an i32) records");
        if let Some((code, message)) = check_record(header, &record, index, rules) {
            refused.add(code, index, message);
        }
    }
    refused.into_result()
}

/// The first thing wrong with one record, in Kafka's order (key, then timestamp), after the
/// offset delta that Kafka's uncompressed path leaves unchecked but offsets here depend on.
/// Worded as Kafka words it.
fn check_record(
    header: &BatchHeader,
    record: &WalkedRecord,
    index: i32,
    rules: &RecordRules,
) -> Option<(ErrorCode, String)> {
    let tp = rules.tp;
    if record.offset_delta != index {
        let message = format!(
            "Record at batch index {index} has offset delta {}: the deltas of a batch must \
             run 0, 1, 2, ... in topic partition {tp}",
            record.offset_delta
        );
        return Some((ErrorCode::InvalidRecord, message));
    }
    if rules.compacted && record.key.is_none() {
        let message =
            format!("Compacted topic cannot accept message without key in topic partition {tp}.");
        return Some((ErrorCode::InvalidRecord, message));
    }
    let timestamp = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp.wrapping_add(record.timestamp_delta)
    };
    let offset = header
        .base_offset
        .0
        .wrapping_add(i64::from(record.offset_delta));
    if rules.timestamp_type == TimestampType::CreateTime
        && timestamp != NO_TIMESTAMP
        && out_of_range(timestamp, rules)
    {
        let message = format!(
            "Timestamp {timestamp} of message with offset {offset} is out of range. The \
             timestamp should be within [{}, {}]",
            rules.now_ms.wrapping_sub(rules.timestamp_before_max_ms),
            rules.now_ms.wrapping_add(rules.timestamp_after_max_ms)
        );
        return Some((ErrorCode::InvalidTimestamp, message));
    }
    if header.is_log_append_time() {
        let len = |field: &Option<std::ops::Range<usize>>| field.as_ref().map_or(0, |r| r.len());
        let message = format!(
            "Invalid timestamp type in message DefaultRecord(offset={offset}, \
             timestamp={timestamp}, key={} bytes, value={} bytes). Producer should not set \
             timestamp type to LogAppendTime.",
            len(&record.key),
            len(&record.value)
        );
        return Some((ErrorCode::InvalidTimestamp, message));
    }
    None
}

/// Kafka's `recordHasInvalidTimestamp`, without its overflow at the extremes.
fn out_of_range(timestamp: i64, rules: &RecordRules) -> bool {
    let behind = i128::from(rules.now_ms) - i128::from(timestamp);
    behind > i128::from(rules.timestamp_before_max_ms)
        || -behind > i128::from(rules.timestamp_after_max_ms)
}

/// The refused records of one batch: the first `PRODUCE_RECORD_ERRORS_MAX` listed, all counted.
#[derive(Default)]
struct Refused {
    listed: Vec<RecordError>,
    total: usize,
    any_timestamp: bool,
}

impl Refused {
    fn add(&mut self, code: ErrorCode, batch_index: i32, message: String) {
        self.total += 1;
        self.any_timestamp |= code == ErrorCode::InvalidTimestamp;
        if self.listed.len() < limits::PRODUCE_RECORD_ERRORS_MAX {
            self.listed.push(RecordError {
                batch_index,
                message,
            });
        }
    }

    /// Kafka's `processRecordErrors`: INVALID_TIMESTAMP if any record has a bad timestamp, else
    /// INVALID_RECORD naming the count and the first three.
    fn into_result(self) -> Result<(), ProduceError> {
        if self.total == 0 {
            return Ok(());
        }
        let (code, message) = if self.any_timestamp {
            (
                ErrorCode::InvalidTimestamp,
                "One or more records have been rejected due to invalid timestamp".to_string(),
            )
        } else {
            let first: Vec<String> = self
                .listed
                .iter()
                .take(3)
                .map(|e| {
                    format!(
                        "RecordError(batchIndex={}, message='{}')",
                        e.batch_index, e.message
                    )
                })
                .collect();
            (
                ErrorCode::InvalidRecord,
                format!(
                    "One or more records have been rejected due to {} record errors in total, \
                     and only showing the first three errors at most: [{}]",
                    self.total,
                    first.join(", ")
                ),
            )
        };
        Err(ProduceError {
            code,
            records: Some(Box::new(RecordErrors {
                errors: self.listed,
                message,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{build_batch, compute_crc, first_record_at_or_after, HEADER_BYTES};
    use crate::types::Offset;

    fn rules(tp: &TopicPartition, compacted: bool, now_ms: i64) -> RecordRules<'_> {
        RecordRules {
            tp,
            compacted,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: 1_000,
            timestamp_after_max_ms: 100,
            now_ms,
        }
    }

    fn check(batch: &[u8], rules: &RecordRules) -> Result<(), ProduceError> {
        check_records(batch, &BatchHeader::parse(batch).unwrap(), rules)
    }

    fn refresh_crc(batch: &mut [u8]) {
        let crc = compute_crc(batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn keyless_records_on_a_compacted_topic_are_listed() {
        let tp = TopicPartition::new("c", 3);
        let pairs: Vec<_> = (0..100)
            .map(|i| {
                (
                    if i % 10 == 0 { None } else { Some(&b"k"[..]) },
                    Some(&b"v"[..]),
                )
            })
            .collect();
        let batch = build_batch(&pairs, 5_000);
        assert_eq!(check(&batch, &rules(&tp, false, 5_000)), Ok(()));
        let refused = check(&batch, &rules(&tp, true, 5_000)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRecord);
        let records = refused.records.unwrap();
        let indexes: Vec<i32> = records.errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, (0..100).step_by(10).collect::<Vec<_>>());
        assert_eq!(
            records.errors[0].message,
            "Compacted topic cannot accept message without key in topic partition c-3."
        );
        assert!(records
            .message
            .starts_with("One or more records have been rejected due to 10 record errors"));
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let tp = TopicPartition::new("t", 0);
        let batch = build_batch(&[(None, Some(b"v"))], 10_000);
        assert_eq!(check(&batch, &rules(&tp, false, 10_500)), Ok(()));
        assert_eq!(check(&batch, &rules(&tp, false, 9_900)), Ok(()));
        for now in [11_001, 9_899] {
            let refused = check(&batch, &rules(&tp, false, now)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::InvalidTimestamp);
            let records = refused.records.unwrap();
            assert_eq!(records.errors[0].batch_index, 0);
            assert!(records.errors[0]
                .message
                .starts_with("Timestamp 10000 of message"));
        }
        let mut append_time = rules(&tp, false, i64::MAX);
        append_time.timestamp_type = TimestampType::LogAppendTime;
        assert_eq!(check(&batch, &append_time), Ok(()), "no window");
        let no_timestamp = build_batch(&[(None, Some(b"v"))], -1);
        assert_eq!(check(&no_timestamp, &rules(&tp, false, 1 << 40)), Ok(()));
    }

    #[test]
    fn producers_may_not_set_log_append_time() {
        let tp = TopicPartition::new("t", 0);
        let mut batch = build_batch(&[(None, Some(b"v"))], 10_000);
        batch[22] |= 0x08;
        refresh_crc(&mut batch);
        let refused = check(&batch, &rules(&tp, false, 10_000)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidTimestamp);
    }

    #[test]
    fn an_offset_delta_past_the_header_is_refused() {
        // The fuzzer's batch: the header covers one offset, its only record says delta 16.
        let tp = TopicPartition::new("t", 0);
        let mut batch = build_batch(&[(Some(b"k"), Some(b"value"))], 0);
        assert_eq!(batch.len(), 74);
        assert_eq!(batch[HEADER_OFFSET_DELTA_AT], 0);
        batch[HEADER_OFFSET_DELTA_AT] = 32; // zig-zag 16
        refresh_crc(&mut batch);
        let refused = check(&batch, &rules(&tp, false, 0)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRecord);
        assert_eq!(refused.records.unwrap().errors[0].batch_index, 0);
        assert_eq!(first_record_at_or_after(&batch, 0, Offset(0)), None);
    }

    /// Where the first record's offset delta lies: header, length, attributes, timestamp delta.
    const HEADER_OFFSET_DELTA_AT: usize = HEADER_BYTES + 3;

    #[test]
    fn malformed_records_get_a_bare_invalid_record() {
        let tp = TopicPartition::new("t", 0);
        let mut batch = build_batch(&[(Some(b"k"), Some(b"value"))], 0);
        batch[HEADER_BYTES + 4] = 0xfe; // key length: far past the record
        refresh_crc(&mut batch);
        let refused = check(&batch, &rules(&tp, true, 0)).unwrap_err();
        assert_eq!(refused, ErrorCode::InvalidRecord.into());
    }

    #[test]
    fn the_listed_errors_are_bounded() {
        let tp = TopicPartition::new("c", 0);
        let n = limits::PRODUCE_RECORD_ERRORS_MAX + 5;
        let pairs: Vec<_> = (0..n).map(|_| (None, Some(&b"v"[..]))).collect();
        let batch = build_batch(&pairs, 0);
        let records = check(&batch, &rules(&tp, true, 0))
            .unwrap_err()
            .records
            .unwrap();
        assert_eq!(records.errors.len(), limits::PRODUCE_RECORD_ERRORS_MAX);
        assert!(records
            .message
            .contains(&format!("due to {n} record errors")));
    }
}
