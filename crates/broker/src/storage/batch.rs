//! Record batch v2 headers: parse, validate, and patch the two fields the broker owns.
//!
//! Batches travel from the socket to disk and back as bytes. The broker reads the 61-byte
//! header, checks the CRC-32C over the rest, and rewrites base offset and partition leader epoch
//! (both outside the CRC). The records of a produced uncompressed batch are walked once for
//! validation (`record_check`); after that they are read only for timestamp lookups and
//! compaction.

use bytes::Bytes;

use super::record_check::{self, RecordRules};
use super::record_walk::RecordWalker;
use crate::error::{ErrorCode, ProduceError};
use crate::types::Offset;

/// Size of the v2 batch header, up to and including the record count.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` ends: base offset (8) + length (4). `batchLength` counts the rest.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_MIN_BYTES: usize = 7;
/// The CRC covers attributes (at this position) to the end of the batch.
const CRC_START: usize = 21;

const ATTR_CODEC_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// The fixed fields of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Reads the header from the start of `bytes`; `None` if fewer than 61 bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(i64_at(bytes, 0)),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes")),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// Whole batch size on disk, header included; 0 when the length field is nonsense.
    pub fn total_bytes(&self) -> usize {
        if self.batch_length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            0
        } else {
            LOG_OVERHEAD_BYTES + self.batch_length as usize
        }
    }

    /// Saturating, like `next_offset`: a header read back from a damaged file may carry any base
    /// offset (it lies outside the CRC), and must be refused, not overflow.
    pub fn last_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(self.last_offset_delta as i64),
        )
    }

    /// Offset after this batch: where the next one starts.
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0.saturating_add(1))
    }

    pub fn codec(&self) -> i16 {
        self.attributes & ATTR_CODEC_MASK
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    /// The sequence number of the last record (sequences wrap at i32::MAX, as Kafka's do).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
}

/// CRC-32C of a batch's checked region.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks one complete batch as a producer sent it (exactly `bytes`): structure, magic, CRC
/// (CORRUPT_MESSAGE, as Kafka's CRC check), and one record per offset (INVALID_RECORD, as
/// Kafka's `LogValidator.validateBatch`).
pub fn check_batch(bytes: &[u8]) -> Result<BatchHeader, ErrorCode> {
    let header = check_frame(bytes)?;
    if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(ErrorCode::InvalidRecord);
    }
    if header.codec() == 0
        && header.record_count as usize > (bytes.len() - HEADER_BYTES) / RECORD_MIN_BYTES
    {
        // More records claimed than the bytes could hold: Kafka's record iterator runs out.
        return Err(ErrorCode::InvalidRecord);
    }
    check_codec(header)
}

/// Checks one complete batch as the log may hold it (recovery): structure, magic and CRC. A
/// compacted batch keeps its offset range but may hold fewer records than offsets.
pub fn check_stored_batch(bytes: &[u8]) -> Result<BatchHeader, ErrorCode> {
    let header = check_frame(bytes)?;
    if header.record_count <= 0
        || header.last_offset_delta < 0
        || header.record_count as i64 > header.last_offset_delta as i64 + 1
    {
        return Err(ErrorCode::CorruptMessage);
    }
    check_codec(header)
}

/// The header, the batch's length and its CRC.
fn check_frame(bytes: &[u8]) -> Result<BatchHeader, ErrorCode> {
    let header = BatchHeader::parse(bytes).ok_or(ErrorCode::CorruptMessage)?;
    if header.magic != 2 {
        return Err(ErrorCode::UnsupportedForMessageFormat);
    }
    if header.total_bytes() != bytes.len() || compute_crc(bytes) != header.crc {
        return Err(ErrorCode::CorruptMessage);
    }
    Ok(header)
}

fn check_codec(header: BatchHeader) -> Result<BatchHeader, ErrorCode> {
    if header.codec() > 4 {
        return Err(ErrorCode::UnsupportedCompressionType);
    }
    Ok(header)
}

/// Validates the records of one partition in a Produce request: one or more complete v2
/// batches, each within `max_message_bytes`, none a control batch, sequences present when a
/// producer id is, and every record of an uncompressed batch checked against `rules`
/// (compressed batches are not opened: the broker carries no codecs). Nothing is stored unless
/// every batch passes. Returns each batch's header with its byte range.
pub fn validate_produce(
    records: &[u8],
    max_message_bytes: usize,
    rules: &RecordRules,
) -> Result<Vec<(BatchHeader, usize, usize)>, ProduceError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        let header = BatchHeader::parse(rest).ok_or(ErrorCode::CorruptMessage)?;
        let size = header.total_bytes();
        if size == 0 || size > rest.len() {
            return Err(ErrorCode::CorruptMessage.into());
        }
        if size > max_message_bytes {
            return Err(ErrorCode::MessageTooLarge.into());
        }
        let header = check_batch(&rest[..size])?;
        if header.is_control() {
            return Err(ErrorCode::InvalidRecord.into());
        }
        if header.has_producer_id() && header.base_sequence < 0 {
            return Err(ErrorCode::InvalidRecord.into());
        }
        if header.codec() == 0 {
            record_check::check_records(&rest[..size], &header, rules)?;
        }
        batches.push((header, at, size));
        at += size;
    }
    if batches.is_empty() {
        return Err(ErrorCode::CorruptMessage.into());
    }
    Ok(batches)
}

/// Rewrites the broker-owned fields of a batch held in `batch` (a complete batch).
pub fn assign_offset(batch: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps a batch with LogAppendTime: sets the attribute and max timestamp in its `header` (its
/// first `HEADER_BYTES`), then re-computes the CRC over the header and the records after it.
pub fn set_log_append_time(header: &mut [u8; HEADER_BYTES], records: &[u8], now_ms: i64) {
    let attributes = i16_at(header, 21) | ATTR_LOG_APPEND_TIME;
    header[21..23].copy_from_slice(&attributes.to_be_bytes());
    header[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[CRC_START..]), records);
    header[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a zig-zag varint (Kafka's record fields); `None` when the bytes run out or it overflows.
pub(crate) fn read_varlong(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let first = *bytes.get(*at)?;
    if first & 0x80 == 0 {
        // Most timestamp deltas fit one byte.
        *at += 1;
        return Some(i64::from(first >> 1) ^ -i64::from(first & 1));
    }
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        raw |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Appends a zig-zag varint (the inverse of `read_varlong`); for tools and tests that build records.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A record's key and value (`None`: null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds one uncompressed v2 batch of keyed records, all stamped `timestamp_ms`, without a
/// producer id: what the broker writes to its own internal topics. Offsets start at 0 (the log
/// assigns the real ones).
pub fn build_batch(records: &[KeyValue], timestamp_ms: i64) -> Vec<u8> {
    assemble(records, timestamp_ms, (-1, -1), 0)
}

/// Builds one uncompressed transactional batch of keyed records for `producer` (what the group
/// coordinator appends for TxnOffsetCommit).
pub fn build_transactional_batch(
    records: &[KeyValue],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Vec<u8> {
    assemble(
        records,
        timestamp_ms,
        (producer_id, producer_epoch),
        ATTR_TRANSACTIONAL,
    )
}

/// A transaction marker (Kafka's control record types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// Builds the control batch that ends a producer's transaction on a partition: one record whose
/// key is (version 0, type) and value (version 0, coordinator epoch).
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    control: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&control.code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    assemble(
        &[(Some(&key), Some(&value))],
        timestamp_ms,
        (producer_id, producer_epoch),
        ATTR_TRANSACTIONAL | ATTR_CONTROL,
    )
}

/// One whole batch of an internal topic, decoded: its header, its marker (control batches
/// only), and its keyed records with their offsets (key, value).
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub control: Option<ControlType>,
    pub records: Vec<(Offset, Bytes, Option<Bytes>)>,
}

/// Decodes every whole batch in `bytes` (a read may end inside a batch: that tail is left for
/// the next read) and hands each to `on_batch`; records without keys are skipped, a batch that
/// does not decode is logged and skipped. Returns the offset after the last whole batch. For
/// replaying the broker's own internal topics.
pub fn for_each_batch(bytes: &Bytes, mut on_batch: impl FnMut(DecodedBatch)) -> Option<Offset> {
    let mut at = 0;
    let mut next = None;
    while let Some(header) = BatchHeader::parse(&bytes[at..]) {
        let size = header.total_bytes();
        if size < LOG_OVERHEAD_BYTES || at + size > bytes.len() {
            break;
        }
        let mut batch = bytes.slice(at..at + size);
        at += size;
        next = Some(header.next_offset());
        if header.is_control() {
            let control = control_type(&batch);
            on_batch(DecodedBatch {
                header,
                control,
                records: Vec::new(),
            });
            continue;
        }
        match kafka_protocol::records::RecordBatchDecoder::decode(&mut batch) {
            Ok(set) => on_batch(DecodedBatch {
                header,
                control: None,
                records: set
                    .records
                    .into_iter()
                    .filter_map(|r| Some((Offset(r.offset), r.key?, r.value)))
                    .collect(),
            }),
            Err(err) => tracing::error!("skipping batch at offset {}: {err}", header.base_offset),
        }
    }
    next
}

/// The leading whole batches of `records` that start below `limit`, and the offset after the
/// last of them (`limit` itself when none is cut).
pub fn whole_batches_below(records: &Bytes, limit: Offset) -> (Bytes, Offset) {
    let mut at = 0;
    let mut end = limit;
    while let Some(header) = BatchHeader::parse(&records[at..]) {
        let size = header.total_bytes();
        if size == 0 || at + size > records.len() || header.base_offset >= limit {
            break;
        }
        at += size;
        end = header.next_offset();
    }
    if at == 0 {
        return (Bytes::new(), limit);
    }
    (records.slice(..at), end)
}

/// A transaction marker as a control batch stores it: COMMIT or ABORT, and the epoch of the
/// coordinator that wrote it (its `__transaction_state` partition's leader epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub kind: ControlType,
    pub coordinator_epoch: i32,
}

/// The marker a control batch carries (`None` when it is not a readable control batch).
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    control_record(batch).map(|c| c.kind)
}

/// The marker and coordinator epoch a control batch carries (`None` when it is not a readable
/// control batch; a value too short for the epoch reads as epoch -1, unknown).
pub fn control_record(batch: &[u8]) -> Option<ControlRecord> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() || header.codec() != 0 {
        return None;
    }
    let mut at = HEADER_BYTES;
    read_varlong(batch, &mut at)?; // record length
    at += 1; // attributes
    read_varlong(batch, &mut at)?; // timestamp delta
    read_varlong(batch, &mut at)?; // offset delta
    let key_len = read_varlong(batch, &mut at)?;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => return None,
    };
    at += key_len as usize;
    let value_len = read_varlong(batch, &mut at).unwrap_or(-1);
    let coordinator_epoch = match batch.get(at..at + 6) {
        Some(value) if value_len >= 6 => {
            i32::from_be_bytes([value[2], value[3], value[4], value[5]])
        }
        _ => -1,
    };
    Some(ControlRecord {
        kind,
        coordinator_epoch,
    })
}

fn assemble(
    records: &[KeyValue],
    timestamp_ms: i64,
    (producer_id, producer_epoch): (i64, i16),
    attributes: i16,
) -> Vec<u8> {
    let put_bytes = |out: &mut Vec<u8>, b: Option<&[u8]>| match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    };
    let mut encoded = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut body = vec![0u8]; // attributes
        put_varlong(&mut body, 0); // timestamp delta
        put_varlong(&mut body, i as i64); // offset delta
        put_bytes(&mut body, *key);
        put_bytes(&mut body, *value);
        put_varlong(&mut body, 0); // headers
        put_varlong(&mut encoded, body.len() as i64);
        encoded.extend_from_slice(&body);
    }
    let count = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_BYTES + encoded.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(
        &((HEADER_BYTES - LOG_OVERHEAD_BYTES + encoded.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch: set by the log
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&encoded);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The first record of the batch at or after offset `from` with a timestamp of at least
/// `target`: its offset and timestamp (what ListOffsets answers, as Kafka's record search does).
/// With log-append time every record has the batch's largest timestamp. Compressed batches are
/// not opened: their first offset from `from` on is the answer (the earliest candidate), with
/// the batch's largest timestamp.
pub fn first_record_at_or_after(
    batch: &[u8],
    target_ms: i64,
    from: Offset,
) -> Option<(Offset, i64)> {
    let header = BatchHeader::parse(batch)?;
    if header.last_offset() < from {
        return None;
    }
    if header.codec() != 0 || header.attributes & ATTR_LOG_APPEND_TIME != 0 {
        let first = header.base_offset.max(from);
        return (header.max_timestamp >= target_ms).then_some((first, header.max_timestamp));
    }
    for record in RecordWalker::new(batch, &header) {
        let record = record.ok()?;
        if record.offset_delta < 0 || record.offset_delta > header.last_offset_delta {
            // Only a damaged stored batch: produce validation refuses such deltas.
            return None;
        }
        let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
        let offset = Offset(
            header
                .base_offset
                .0
                .saturating_add(i64::from(record.offset_delta)),
        );
        if timestamp >= target_ms && offset >= from {
            return Some((offset, timestamp));
        }
    }
    None
}

#[cfg(test)]
pub mod test_batches {
    //! Builds valid v2 batches for tests, without a client.

    use super::*;
    use crate::types::TopicPartition;

    /// Rules that let any timestamp through, on a topic that is not compacted.
    pub fn rules(tp: &TopicPartition) -> RecordRules<'_> {
        RecordRules {
            tp,
            compacted: false,
            timestamp_type: crate::config::TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            now_ms: 0,
        }
    }

    /// A batch of `values` (no keys, no headers), timestamps `base_ts + i`, optional producer.
    pub fn batch(values: &[&[u8]], base_ts: i64, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut body = vec![0u8];
            put_varlong(&mut body, i as i64); // timestamp delta
            put_varlong(&mut body, i as i64); // offset delta
            put_varlong(&mut body, -1); // key
            put_varlong(&mut body, v.len() as i64);
            body.extend_from_slice(v);
            put_varlong(&mut body, 0); // headers
            put_varlong(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
        let n = values.len() as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(
            &((HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&(base_ts + n as i64 - 1).to_be_bytes());
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_batches::{batch, rules};
    use super::*;
    use crate::types::TopicPartition;

    static TP: std::sync::LazyLock<TopicPartition> =
        std::sync::LazyLock::new(|| TopicPartition::new("t", 0));

    #[test]
    fn valid_batch_passes_and_reports_fields() {
        let b = batch(&[b"a", b"bb", b"ccc"], 1000, Some((7, 0, 5)));
        let v = validate_produce(&b, 1 << 20, &rules(&TP)).unwrap();
        assert_eq!(v.len(), 1);
        let h = v[0].0;
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_sequence(), 7);
        assert_eq!(h.max_timestamp, 1002);
    }

    #[test]
    fn corruptions_are_rejected_with_kafka_codes() {
        let good = batch(&[b"x"], 0, None);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert_eq!(
            validate_produce(&bad_crc, 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::CorruptMessage
        );
        let mut bad_magic = good.clone();
        bad_magic[16] = 1;
        assert_eq!(
            validate_produce(&bad_magic, 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedForMessageFormat
        );
        assert_eq!(
            validate_produce(&good[..40], 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::CorruptMessage
        );
        assert_eq!(
            validate_produce(&good, 10, &rules(&TP)).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
        assert_eq!(
            validate_produce(&[], 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::CorruptMessage
        );
        let mut inflated = good.clone();
        inflated[23..27].copy_from_slice(&999i32.to_be_bytes());
        inflated[57..61].copy_from_slice(&1000i32.to_be_bytes());
        let crc = compute_crc(&inflated);
        inflated[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_produce(&inflated, 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::InvalidRecord,
            "1000 records in a few bytes"
        );
        let mut control = good.clone();
        control[22] |= 0x20;
        let crc = compute_crc(&control);
        control[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_produce(&control, 1 << 20, &rules(&TP))
                .unwrap_err()
                .code,
            ErrorCode::InvalidRecord
        );
    }

    fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
        let (header, records) = batch.split_at_mut(HEADER_BYTES);
        let header: &mut [u8; HEADER_BYTES] = header.try_into().unwrap();
        set_log_append_time(header, records, now_ms);
    }

    #[test]
    fn offset_rewrite_keeps_crc_valid() {
        let mut b = batch(&[b"x", b"y"], 0, None);
        assign_offset(&mut b, Offset(42), 3);
        let h = check_batch(&b).unwrap();
        assert_eq!(h.base_offset, Offset(42));
        assert_eq!(h.partition_leader_epoch, 3);
        stamp_log_append_time(&mut b, 99);
        assert_eq!(check_batch(&b).unwrap().max_timestamp, 99);
    }

    #[test]
    fn timestamp_lookup_finds_the_record_from_the_log_start() {
        let mut b = batch(&[b"a", b"b", b"c"], 100, None);
        assign_offset(&mut b, Offset(10), 0);
        let find = |target, from| first_record_at_or_after(&b, target, Offset(from));
        assert_eq!(find(101, 0), Some((Offset(11), 101)));
        assert_eq!(find(0, 0), Some((Offset(10), 100)));
        assert_eq!(find(103, 0), None);
        // Records below the log start are gone: the answer is the first one at or after it.
        assert_eq!(find(0, 12), Some((Offset(12), 102)));
        assert_eq!(find(0, 13), None);
        stamp_log_append_time(&mut b, 500);
        let found = first_record_at_or_after(&b, 101, Offset(11));
        assert_eq!(
            found,
            Some((Offset(11), 500)),
            "every record has the append time"
        );
    }

    proptest::proptest! {
        #[test]
        fn validator_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = validate_produce(&bytes, 1 << 20, &rules(&TP));
            let _ = first_record_at_or_after(&bytes, 5, Offset(0));
        }
    }
}

#[cfg(test)]
mod control_tests {
    use super::test_batches::rules;
    use super::*;
    use crate::types::TopicPartition;

    static TP: std::sync::LazyLock<TopicPartition> =
        std::sync::LazyLock::new(|| TopicPartition::new("t", 0));

    #[test]
    fn control_batches_carry_their_marker_and_pass_validation_checks() {
        for control in [ControlType::Abort, ControlType::Commit] {
            let batch = build_control_batch(7, 3, control, 12, 1000);
            let header = check_batch(&batch).expect("valid");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (7, 3));
            assert_eq!(control_type(&batch), Some(control));
            assert_eq!(
                control_record(&batch),
                Some(ControlRecord {
                    kind: control,
                    coordinator_epoch: 12
                })
            );
            assert_eq!(
                validate_produce(&batch, 1 << 20, &rules(&TP))
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidRecord,
                "clients may not send control batches"
            );
        }
        assert_eq!(control_type(&build_batch(&[(None, Some(b"v"))], 0)), None);
    }
}
