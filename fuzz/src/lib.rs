//! The bodies of Sluice's fuzz targets, and the valid inputs they start from.
//!
//! Each target hands untrusted bytes to code the broker runs on data it did not write: a
//! client's request frame, the record batches inside a Produce request, and the index and
//! segment files it finds on disk after a crash. Every input must end in an answer (an error
//! code, `None`, a truncated log), never in a panic or an allocation the input's size does not
//! bound, and what is accepted must be consistent (checked with assertions below). Each returns
//! whether it accepted its input, so the stable replay can check both paths are exercised.
//!
//! Built two ways from this one file:
//! - by cargo-fuzz, on nightly with libFuzzer (`fuzz/fuzz_targets/`, run by `scripts/fuzz.sh`);
//! - by the test suite, on stable (`tests/fuzz_replay.rs` includes this file and runs every
//!   target over its seeds and thousands of deterministic mutations of them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::executor::block_on;
use kafka_protocol::messages::{ApiKey, RequestKind};
use sluice_broker::config::{Config, LogConfig, TimestampType};
use sluice_broker::group::records::{CommittedOffset, OffsetsRecord};
use sluice_broker::limits::TOPIC_PARTITIONS_MAX;
use sluice_broker::metadata::records::BrokerId;
use sluice_broker::metadata::{self, codec, is_valid_topic_name};
use sluice_broker::producer_state::ProducerStateTable;
use sluice_broker::protocol::{parse_request, supported_apis, Incoming};
use sluice_broker::quorum::codec as quorum_codec;
use sluice_broker::storage::batch::{self, BatchHeader};
use sluice_broker::storage::index::{OffsetIndex, TimeIndex};
use sluice_broker::storage::log::cleaner::CleanerCheckpoint;
use sluice_broker::storage::log::Log;
use sluice_broker::storage::mem::MemStorage;
use sluice_broker::storage::record_check::RecordRules;
use sluice_broker::storage::record_walk::RecordWalker;
use sluice_broker::storage::records;
use sluice_broker::storage::txn_index::{self, AbortedTxn};
use sluice_broker::storage::{Storage, StorageFile};
use sluice_broker::txn::state::{self as txn_state, TxnMetadata, TxnState};
use sluice_broker::types::{Offset, ProducerEpoch, ProducerId, TopicPartition};
use sluice_client::frame::{self, RequestId};

/// A Produce request's records of one partition are checked against this `max.message.bytes`.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// One request frame (the bytes after the 4-byte size), as a connection hands it to
/// `parse_request`: a frame that parses names the API and version its first bytes carry. (Not
/// checked: that a decoded body re-encodes to the same request. kafka-protocol keeps unknown
/// tagged fields with tags no encoder writes back, and the broker never re-encodes a request.)
pub fn request_frame(data: &[u8]) -> bool {
    let Ok(incoming) = parse_request(Bytes::copy_from_slice(data)) else {
        return false;
    };
    let Incoming::Request { header, .. } = incoming else {
        assert_eq!(
            i16::from_be_bytes([data[0], data[1]]),
            ApiKey::ApiVersions as i16
        );
        return true;
    };
    assert_eq!(
        header.request_api_key,
        i16::from_be_bytes([data[0], data[1]])
    );
    assert_eq!(
        header.request_api_version,
        i16::from_be_bytes([data[2], data[3]])
    );
    true
}

/// Rules a fuzzed Produce is validated against: any timestamp passes, keys are required when
/// `compacted`.
fn rules(tp: &TopicPartition, compacted: bool) -> RecordRules<'_> {
    RecordRules {
        tp,
        compacted,
        timestamp_type: TimestampType::CreateTime,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
        now_ms: 0,
    }
}

/// The records of one partition in a Produce request. What `validate_produce` accepts is a run
/// of whole batches that each pass `check_batch`, whose records the walker reads in full with
/// offset deltas 0, 1, 2, ...; reading the records of an accepted batch (the compactor,
/// timestamp lookups) answers inside the batch's offsets without panicking, and a batch rebuilt
/// from all its records is valid again.
pub fn record_batches(data: &[u8]) -> bool {
    let bytes = Bytes::copy_from_slice(data);
    batch::for_each_batch(&bytes, |_| {});
    let (cut, _) = batch::whole_batches_below(&bytes, Offset(i64::MAX));
    assert!(cut.len() <= bytes.len());
    let _ = batch::check_stored_batch(data);
    let tp = TopicPartition::new("fuzz", 0);
    let Ok(batches) = batch::validate_produce(data, MAX_MESSAGE_BYTES, &rules(&tp, false)) else {
        return false;
    };
    let mut end = 0;
    for (header, at, size) in batches {
        assert_eq!(at, end, "accepted batches are contiguous");
        end = at + size;
        let one = &data[at..end];
        assert_eq!(batch::check_batch(one), Ok(header));
        assert!(!header.is_control());
        if header.codec() == 0 {
            let deltas: Vec<i32> = RecordWalker::new(one, &header)
                .map(|r| r.expect("an accepted batch walks").offset_delta)
                .collect();
            assert_eq!(deltas, (0..header.record_count).collect::<Vec<_>>());
        }
        for target in [
            i64::MIN,
            0,
            header.base_timestamp,
            header.max_timestamp,
            i64::MAX,
        ] {
            if let Some((offset, _)) = batch::first_record_at_or_after(one, target, Offset(0)) {
                assert!(offset >= header.base_offset && offset <= header.last_offset());
            }
        }
        let _ = batch::control_type(one);
        if let Some(found) = records::read_records(one) {
            assert_eq!(found.len(), header.record_count as usize);
            let kept: Vec<&records::RecordRef> = found.iter().collect();
            let rebuilt = records::rebuild_batch(one, &kept);
            assert_eq!(
                batch::check_stored_batch(&rebuilt).map(|h| h.record_count),
                Ok(header.record_count)
            );
        }
    }
    assert_eq!(end, data.len(), "validation covers every byte");
    true
}

/// One batch's records, walked: whatever the bytes, the walker ends (at most `record_count`
/// records and one error), and every record it yields lies inside the batch, after the one
/// before it, with its key and value inside the record. Accepted: the walk ended without error.
pub fn record_walk(data: &[u8]) -> bool {
    let Some(header) = BatchHeader::parse(data) else {
        return false;
    };
    let mut end = batch::HEADER_BYTES;
    let mut yielded = 0usize;
    for record in RecordWalker::new(data, &header) {
        yielded += 1;
        assert!(yielded <= header.record_count.max(0) as usize + 1);
        let Ok(record) = record else {
            return false;
        };
        assert_eq!(record.bytes.start, end, "records follow each other");
        assert!(record.bytes.end <= data.len());
        for field in [&record.key, &record.value].into_iter().flatten() {
            assert!(record.bytes.start < field.start && field.end <= record.bytes.end);
        }
        end = record.bytes.end;
    }
    assert_eq!(end, data.len(), "a clean walk covers the batch");
    true
}

/// Compaction over batches the produce validator accepts for a compacted topic: `data` is a run
/// of batches, appended twice (so every key has a newer value), then the log is cleaned. The
/// cleaner's plan and copy must not panic; every batch it writes passes the stored check and
/// reads back with offsets inside its range; and a consumer reading from the start sees each
/// key's latest record at the offset it was written.
pub fn cleaner(data: &[u8]) -> bool {
    let tp = TopicPartition::new("fuzz", 0);
    let Ok(batches) = batch::validate_produce(data, MAX_MESSAGE_BYTES, &rules(&tp, true)) else {
        return false;
    };
    let mut config = Config::default().log;
    config.segment_bytes = 512;
    config.cleanup_delete = false;
    config.cleanup_compact = true;
    config.min_cleanable_dirty_ratio = 0.0;
    let storage = MemStorage::default();
    let mut log = block_on(Log::open(
        storage,
        PathBuf::from("/fuzz/compacted-0"),
        config,
        Offset(0),
        0,
        &mut |_, _| None,
    ))
    .expect("an empty log opens")
    .0;
    // The latest offset of each key as appended; uncompressed batches only (the cleaner leaves
    // compressed ones whole).
    let mut latest: HashMap<Vec<u8>, Offset> = HashMap::new();
    for _ in 0..2 {
        for (header, at, size) in &batches {
            let bytes = Bytes::copy_from_slice(&data[*at..at + size]);
            let appended = log.append(bytes.clone(), header, 0, 0).expect("an append");
            if let Some(found) = records::read_records(&bytes) {
                for record in &found {
                    let key = bytes[record.key.clone().expect("keyed")].to_vec();
                    latest.insert(key, records::record_offset(appended.base_offset, record));
                }
            }
        }
    }
    if let Some(job) = log.take_flush() {
        let done = block_on(job.run());
        log.complete_flush(done).expect("a flush");
    }
    if let Some(plan) = log.plan_cleaning(log.durable_end(), 0, 1 << 20) {
        if let Some(cleaned) = block_on(plan.run()).expect("cleaning runs") {
            let finish = log.install_cleaned(cleaned);
            block_on(finish.write()).expect("cleaning finishes");
        }
    }
    let mut seen: HashMap<Vec<u8>, Offset> = HashMap::new();
    let mut offset = log.log_start();
    while offset < log.durable_end() {
        let cursor = log
            .cursor_at(offset, log.durable_end())
            .expect("a cursor")
            .expect("below the HW");
        let bytes = block_on(cursor.read(offset, 1 << 20)).expect("a read");
        let mut at = 0;
        let before = offset;
        while let Some(header) = BatchHeader::parse(&bytes[at..]) {
            let size = header.total_bytes();
            if size == 0 || at + size > bytes.len() {
                break;
            }
            let whole = &bytes[at..at + size];
            batch::check_stored_batch(whole).expect("a cleaned batch passes the stored check");
            for record in records::read_records(whole).unwrap_or_default() {
                let at_offset = records::record_offset(header.base_offset, &record);
                assert!(at_offset <= header.last_offset());
                let key = whole[record.key.clone().expect("keyed")].to_vec();
                seen.insert(key, at_offset);
            }
            offset = header.next_offset();
            at += size;
        }
        assert!(offset > before, "reads make progress");
    }
    assert_eq!(
        seen, latest,
        "each key's latest record survives where it was written"
    );
    true
}

/// A segment's `.index` and `.timeindex` files as read back from disk: a file that decodes holds
/// strictly increasing entries, and lookups stay inside them.
pub fn index_files(data: &[u8]) -> bool {
    let Some((&log_bytes, rest)) = data.split_first() else {
        return false;
    };
    let log_bytes = u64::from(log_bytes) << 8;
    let offsets = OffsetIndex::decode(rest, log_bytes);
    if let Some(index) = &offsets {
        assert_eq!(index.encode(), rest, "decode and encode are inverse");
        for relative in [0, 1, u32::MAX / 2, u32::MAX] {
            let (_, position) = index.lookup(relative);
            assert!(u64::from(position) < log_bytes.max(1));
        }
    }
    let times = TimeIndex::decode(rest);
    if let Some(index) = &times {
        assert_eq!(index.encode(), rest, "decode and encode are inverse");
        for target in [i64::MIN, 0, i64::MAX] {
            let relative = index.lookup(target);
            assert!(index.last().is_none_or(|(_, last)| relative <= last));
        }
    }
    offsets.is_some() || times.is_some()
}

/// A partition directory damaged on disk, then opened again. `data` starts with a small program:
/// how many batches to write first and whether the stop was clean, then edits (overwrite,
/// truncate, extend) of the directory's files. Opening must succeed or fail with an error, never
/// panic; an unclean open (nothing trusted, everything scanned) keeps only batches that pass
/// their CRC, each readable at its offsets; either way the log takes and reads back a new append.
/// After an unclean open, a clean stop and a trusting start answer lookups by timestamp as before.
/// Accepted: the log opened and recovery cut nothing.
pub fn segment_recovery(data: &[u8]) -> bool {
    let mut program = Program(data);
    let storage = MemStorage::default();
    let batches = usize::from(program.byte() % 24) + 1;
    let clean = program.byte() & 1 == 1;
    write_partition(&storage, batches, clean);
    let files = partition_files(&storage);
    while let Some(edit) = program.edit(files.len()) {
        block_on(edit.apply(&storage, &files[edit.file]));
    }
    let trusted = if clean { Offset(i64::MAX) } else { Offset(0) };
    let Ok((mut log, report)) = block_on(Log::open(
        storage.clone(),
        partition_dir(),
        recovery_config(),
        trusted,
        0,
        &mut |_, _| None,
    )) else {
        return false;
    };
    let reads = if clean {
        // A clean stop's marker says trust the files, so damage inside a segment's data goes
        // unseen (as in Kafka, which trusts them too): reads may then fail, with an error.
        ReadsMust::AnswerWithoutPanic
    } else {
        assert_every_offset_reads_a_valid_batch(&log);
        ReadsMust::Succeed
    };
    append_one_and_read_it_back(&mut log, reads);
    if !clean {
        assert_a_clean_stop_keeps_timestamp_answers(&storage, log, batches as i64);
    }
    report.truncated_bytes == 0
}

/// After a recovery, a clean stop and a trusting start answer every lookup by timestamp as the
/// recovered log did (the index files the stop writes carry each segment's largest timestamp).
fn assert_a_clean_stop_keeps_timestamp_answers(
    storage: &MemStorage,
    log: Log<MemStorage>,
    timestamps: i64,
) {
    let before = timestamp_answers(&log, timestamps);
    block_on(log.close_plan().run()).expect("clean stop");
    drop(log);
    let (reopened, _) = block_on(Log::open(
        storage.clone(),
        partition_dir(),
        recovery_config(),
        Offset(i64::MAX),
        0,
        &mut |_, _| None,
    ))
    .expect("a clean start after a clean stop");
    assert_eq!(timestamp_answers(&reopened, timestamps), before);
}

/// What a lookup answers for each timestamp in `0..=timestamps` (the batches' timestamps).
fn timestamp_answers(log: &Log<MemStorage>, timestamps: i64) -> Vec<Option<(Offset, i64)>> {
    (0..=timestamps)
        .map(|target| loop {
            match log.cursor_for_timestamp(target, log.durable_end()) {
                Ok(None) => break None,
                Ok(Some(cursor)) => {
                    break block_on(cursor.find_timestamp(target, log.log_start())).expect("read")
                }
                Err(load) => {
                    block_on(load.run()).expect("index load");
                }
            }
        })
        .collect()
}

/// What reads of a reopened log must do.
#[derive(Clone, Copy, PartialEq)]
enum ReadsMust {
    Succeed,
    AnswerWithoutPanic,
}

/// The broker's own state read back from disk or from its internal topics: producer-state
/// snapshots, cleaner checkpoints, transaction indexes, the metadata file, and the records of
/// `__consumer_offsets` and `__transaction_state`. The first byte picks which. Damage must be
/// refused (`None`, `Err`), never panic; what is accepted encodes back to bytes that decode to
/// the same encoding, and a metadata file accepted names only valid topics of 1 to
/// `TOPIC_PARTITIONS_MAX` partitions (a topic's name becomes a directory, its partition count
/// the number of logs opened).
pub fn state_files(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    match which % 6 {
        0 => producer_snapshot(rest),
        1 => cleaner_checkpoint(rest),
        2 => txn_index_file(rest),
        3 => metadata_file(rest),
        4 => {
            let (key, value) = key_and_value(rest);
            OffsetsRecord::decode(key, value).is_ok()
        }
        _ => {
            let (key, value) = key_and_value(rest);
            txn_state::decode(key, value).is_ok()
        }
    }
}

fn producer_snapshot(bytes: &[u8]) -> bool {
    let Some(table) = ProducerStateTable::decode(bytes) else {
        return false;
    };
    let encoded = table.encode();
    let again = ProducerStateTable::decode(&encoded).expect("an encoded snapshot decodes");
    assert_eq!(again.encode(), encoded);
    true
}

fn cleaner_checkpoint(bytes: &[u8]) -> bool {
    let Some(checkpoint) = CleanerCheckpoint::decode(bytes) else {
        return false;
    };
    assert_eq!(
        CleanerCheckpoint::decode(&checkpoint.encode()),
        Some(checkpoint)
    );
    true
}

fn txn_index_file(bytes: &[u8]) -> bool {
    let Some(entries) = txn_index::decode(bytes) else {
        return false;
    };
    assert_eq!(
        txn_index::decode(&txn_index::encode(&entries)),
        Some(entries)
    );
    true
}

fn metadata_file(bytes: &[u8]) -> bool {
    let broker = Config::default().log;
    let node = BrokerId(1);
    let Ok(image) = metadata::decode(bytes, node, &broker) else {
        return false;
    };
    for topic in image.topics.values() {
        assert!(is_valid_topic_name(&topic.name), "{:?}", topic.name);
        assert!((1..=TOPIC_PARTITIONS_MAX).contains(&topic.partitions));
    }
    let encoded = metadata::encode(&image);
    let again = metadata::decode(&encoded, node, &broker).expect("an encoded image decodes");
    assert_eq!(metadata::encode(&again), encoded);
    true
}

/// The binary metadata file (`metadata::codec`): the first byte picks raw bytes (0) or record
/// bodies (otherwise: each a length byte and that many bytes), which are framed here with
/// their lengths and CRCs so that mutations reach the record decoder. Damage must be refused,
/// never panic; what is accepted encodes back to the same bytes, and applying its records to
/// an image answers (an image or an error) without panicking.
pub fn metadata_records(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let file = if mode == 0 {
        rest.to_vec()
    } else {
        frame_bodies(rest)
    };
    let Ok((cluster_id, records)) = codec::decode(&file) else {
        return false;
    };
    assert_eq!(
        codec::encode(&cluster_id, &records),
        file,
        "encoding is canonical"
    );
    let mut image = metadata::MetadataImage::new(cluster_id, Config::default().log);
    for record in &records {
        let before = image.clone();
        if image.apply(record).is_err() {
            assert_eq!(image, before, "a refused record changes nothing");
        }
    }
    true
}

/// A metadata file (cluster id "c") of the bodies in `bytes`: each a length byte, then the body;
/// a length past the end ends the list.
fn frame_bodies(mut bytes: &[u8]) -> Vec<u8> {
    let mut bodies = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        if usize::from(len) > rest.len() {
            break;
        }
        let (body, rest) = rest.split_at(usize::from(len));
        bodies.push(body);
        bytes = rest;
    }
    let mut header = vec![0, 1, b'c'];
    header.extend_from_slice(&(bodies.len() as u32).to_be_bytes());
    let mut file = codec::MAGIC.to_vec();
    file.extend_from_slice(&1u16.to_be_bytes());
    for body in std::iter::once(&header[..]).chain(bodies) {
        file.extend_from_slice(&(body.len() as u32).to_be_bytes());
        file.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        file.extend_from_slice(body);
    }
    file
}

/// An internal topic's record: a length byte, that many key bytes, then the value (none when
/// the length byte's top bit is set: a tombstone).
fn key_and_value(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    let Some((&len, rest)) = bytes.split_first() else {
        return (&[], None);
    };
    let (key, value) = rest.split_at(usize::from(len & 0x7f).min(rest.len()));
    (key, (len & 0x80 == 0).then_some(value))
}

/// A message from another quorum member (the controller listener's frames), or an entry read
/// back from the metadata log: whatever the bytes, the decoder answers; what it accepts
/// encodes to bytes that decode to the same message.
pub fn quorum_messages(data: &[u8]) -> bool {
    if let Ok(entry) = quorum_codec::decode_entry(data) {
        let again = quorum_codec::decode_entry(&quorum_codec::encode_entry(&entry));
        assert_eq!(again.expect("an encoded entry decodes"), entry);
    }
    let Ok(message) = quorum_codec::decode(data) else {
        return false;
    };
    let again =
        quorum_codec::decode(&quorum_codec::encode(&message)).expect("an encoded message decodes");
    assert_eq!(format!("{again:?}"), format!("{message:?}"));
    true
}

/// An answer another broker sends this one (`network::peers`), the frame after its size prefix:
/// a transaction verification (AddPartitionsToTxn v4) or markers written (WriteTxnMarkers v1).
/// Whatever the bytes, the decoders answer; what one accepts encodes back to the same answer.
pub fn peer_answers(data: &[u8]) -> bool {
    use kafka_protocol::messages::{AddPartitionsToTxnResponse, WriteTxnMarkersResponse};
    // The answer's correlation id is whatever the input says: the decoder must look further.
    let sent = data.get(..4).map_or(0, |id| {
        i32::from_be_bytes(id.try_into().expect("four bytes"))
    });
    let frame = Bytes::copy_from_slice(data);
    let verified = peer_answer_round_trip::<AddPartitionsToTxnResponse>(
        ApiKey::AddPartitionsToTxn,
        4,
        sent,
        frame.clone(),
    );
    let markers =
        peer_answer_round_trip::<WriteTxnMarkersResponse>(ApiKey::WriteTxnMarkers, 1, sent, frame);
    verified || markers
}

/// Decodes `frame` as the answer to `api` at `version`; an accepted answer must encode to a
/// frame that decodes to it again.
fn peer_answer_round_trip<R>(api: ApiKey, version: i16, sent: i32, frame: Bytes) -> bool
where
    R: kafka_protocol::protocol::Decodable
        + kafka_protocol::protocol::Encodable
        + PartialEq
        + std::fmt::Debug,
{
    let Ok(answer) = frame::decode_response::<R>(api, version, sent, frame) else {
        return false;
    };
    let again = frame::decode_response::<R>(
        api,
        version,
        sent,
        seeds::answer(api, version, sent, &answer),
    )
    .expect("an encoded answer decodes");
    assert_eq!(again, answer);
    true
}

/// The valid inputs each target's corpus starts from.
pub mod seeds {
    use super::*;

    /// One frame per supported API and decodable version: a default request of each.
    pub fn request_frames() -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for range in supported_apis() {
            for version in range.decodable_from..=range.max {
                if let Some(body) = default_request(range.key) {
                    frames.push(frame(range.key, version, &body));
                }
            }
        }
        frames
    }

    /// Produce records: one batch, several batches, keyed, keyless, tombstones, transactional.
    pub fn record_batches() -> Vec<Vec<u8>> {
        let one = batch::build_batch(&[(Some(b"k"), Some(b"value"))], 1_700_000_000_000);
        let keyless = batch::build_batch(&[(None, Some(b"v")), (Some(b"k2"), None)], 5);
        let txn = with_first_sequence(batch::build_transactional_batch(
            &[(Some(b"k"), Some(b"v"))],
            9,
            7,
            0,
        ));
        let many: Vec<batch::KeyValue> = (0..20)
            .map(|_| (Some(&b"key"[..]), Some(&b"0123456789"[..])))
            .collect();
        let many = batch::build_batch(&many, 1);
        vec![
            one.clone(),
            keyless.clone(),
            txn,
            many,
            [one, keyless].concat(),
        ]
    }

    /// Single uncompressed batches, as the walker reads them: those of `record_batches`, and
    /// one with headers on its records.
    pub fn record_walk() -> Vec<Vec<u8>> {
        let mut seeds: Vec<Vec<u8>> = record_batches()
            .into_iter()
            .filter(|b| BatchHeader::parse(b).is_some_and(|h| h.total_bytes() == b.len()))
            .collect();
        seeds.push(with_headers());
        seeds
    }

    /// Keyed batches for a compacted topic: repeated keys, tombstones, several batches.
    pub fn cleaner() -> Vec<Vec<u8>> {
        let pairs: Vec<batch::KeyValue> = (0..30u8)
            .map(|i| {
                let value: Option<&[u8]> = if i % 7 == 6 { None } else { Some(b"value") };
                (Some(&KEYS[usize::from(i % 5)][..]), value)
            })
            .collect();
        let one = batch::build_batch(&pairs[..10], 1);
        let other = batch::build_batch(&pairs[10..], 2);
        vec![one.clone(), [one, other.clone()].concat(), other]
    }

    /// The keys `cleaner` seeds repeat.
    const KEYS: [[u8; 2]; 5] = [*b"k0", *b"k1", *b"k2", *b"k3", *b"k4"];

    /// One record with two headers (key "h" value "1", key "n" null value).
    fn with_headers() -> Vec<u8> {
        let mut body = vec![0u8, 0, 0]; // attributes, timestamp delta, offset delta
        body.extend_from_slice(&[2, b'k', 2, b'v']); // key "k", value "v"
        body.extend_from_slice(&[4, 2, b'h', 2, b'1', 2, b'n', 1]); // 2 headers
        let mut batch = batch::build_batch(&[(Some(b"k"), Some(b"v"))], 0);
        batch.truncate(batch::HEADER_BYTES);
        batch::put_varlong(&mut batch, body.len() as i64);
        batch.extend_from_slice(&body);
        let len = (batch.len() - batch::LOG_OVERHEAD_BYTES) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = batch::compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// One valid input of each kind `state_files` reads, behind its selector byte.
    pub fn state_files() -> Vec<Vec<u8>> {
        let mut table = ProducerStateTable::default();
        let mut producer = with_first_sequence(batch::build_transactional_batch(
            &[(Some(b"k"), Some(b"v"))],
            9,
            7,
            0,
        ));
        batch::assign_offset(&mut producer, Offset(42), 0);
        table.record(&BatchHeader::parse(&producer).expect("a built batch"));
        let checkpoint = CleanerCheckpoint {
            cleaned_to: Offset(100),
            horizons: vec![(Offset(10), 1_000), (Offset(90), 2_000)],
        };
        let aborted = AbortedTxn {
            producer_id: ProducerId(7),
            first_offset: Offset(3),
            last_offset: Offset(9),
            last_stable_offset: Offset(10),
        };
        let metadata = "sluice-metadata v1\ncluster.id abc\nproducer.ids.reserved.to 1000\n\
             broker.config log.retention.ms=60000\n\
             topic orders 6f3c2a0e-58f4-4b8e-9d0b-2f1e3c4d5a6b 3 cleanup.policy=compact\n";
        let offset = OffsetsRecord::Offset {
            group: "g".into(),
            tp: TopicPartition::new("orders", 1),
            value: Some(CommittedOffset {
                offset: 5,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 1,
            }),
        };
        let txn = TxnMetadata {
            producer_id: ProducerId(7),
            epoch: ProducerEpoch(1),
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [TopicPartition::new("orders", 0)].into(),
            last_update_ms: 2,
            start_ms: 1,
        };
        let record = |selector: u8, key: &[u8], value: &[u8]| {
            [
                vec![selector, key.len() as u8],
                key.to_vec(),
                value.to_vec(),
            ]
            .concat()
        };
        vec![
            [vec![0], table.encode()].concat(),
            [vec![1], checkpoint.encode()].concat(),
            [vec![2], txn_index::encode(&[aborted])].concat(),
            [vec![3], metadata.as_bytes().to_vec()].concat(),
            record(4, &offset.key(), &offset.value().expect("a value")),
            record(
                5,
                &txn_state::encode_key("t"),
                &txn_state::encode_value(&txn),
            ),
        ]
    }

    /// A producer's batch carries its first sequence number (the builder leaves -1, as the
    /// broker's own batches have); the CRC covers it.
    fn with_first_sequence(mut batch: Vec<u8>) -> Vec<u8> {
        batch[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = batch::compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// A metadata file of every record the text seed converts to, raw (mode 0) and as bodies.
    pub fn metadata_records() -> Vec<Vec<u8>> {
        let text = "sluice-metadata v1\ncluster.id abc\nproducer.ids.reserved.to 1000\n\
             broker.config log.retention.ms=60000\n\
             topic orders 6f3c2a0e-58f4-4b8e-9d0b-2f1e3c4d5a6b 3 cleanup.policy=compact\n";
        let image = metadata::decode(text.as_bytes(), BrokerId(1), &Config::default().log)
            .expect("the text seed decodes");
        let file = metadata::encode(&image);
        // Walk the frames (magic, version; then length, CRC, body), past the header frame.
        let mut bodies = vec![1];
        let mut at = codec::MAGIC.len() + 2;
        let mut first = true;
        while at < file.len() {
            let len = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            let body = &file[at + 8..at + 8 + len];
            if !first {
                bodies.push(u8::try_from(len).expect("seed records are short"));
                bodies.extend_from_slice(body);
            }
            first = false;
            at += 8 + len;
        }
        vec![[vec![0], file].concat(), bodies]
    }

    /// Index files: (log size / 256, entries) of offset and time indexes.
    pub fn index_files() -> Vec<Vec<u8>> {
        let mut offsets = OffsetIndex::default();
        let mut times = TimeIndex::default();
        for i in 0..8u32 {
            offsets.push(i * 10, i * 300);
            times.push(1_000 + i64::from(i), i * 10);
        }
        vec![
            [vec![16], offsets.encode()].concat(),
            [vec![16], times.encode()].concat(),
        ]
    }

    /// Partitions of 1 to 23 batches, cleanly stopped or not, each with an edit that changes
    /// nothing yet (an empty overwrite, an extension by nothing) for mutations to turn into
    /// damage.
    pub fn segment_recovery() -> Vec<Vec<u8>> {
        let mut programs = Vec::new();
        for (batches, clean) in [(0u8, 0u8), (4, 1), (11, 0), (22, 1)] {
            programs.push(vec![batches, clean, 1, 0, 0, 40, 0]);
            programs.push(vec![batches, clean, 3, 2, 0, 0]);
        }
        programs
    }

    /// Answers brokers send one another: a verification that found the partition in the
    /// transaction and one that did not, and markers written on two partitions.
    pub fn peer_answers() -> Vec<Vec<u8>> {
        use kafka_protocol::messages::add_partitions_to_txn_response::*;
        use kafka_protocol::messages::write_txn_markers_response::*;
        use kafka_protocol::messages::{
            AddPartitionsToTxnResponse, ProducerId as WireProducerId, TopicName, TransactionalId,
            WriteTxnMarkersResponse,
        };
        use kafka_protocol::protocol::StrBytes;
        let name = |s: &str| StrBytes::from_string(s.to_string());
        let verified = |code: i16| {
            AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(TransactionalId(name("orders-app")))
                    .with_topic_results(vec![AddPartitionsToTxnTopicResult::default()
                        .with_name(TopicName(name("orders")))
                        .with_results_by_partition(vec![
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(3)
                                .with_partition_error_code(code),
                        ])]),
            ])
        };
        let markers = WriteTxnMarkersResponse::default().with_markers(vec![
            WritableTxnMarkerResult::default()
                .with_producer_id(WireProducerId(4001))
                .with_topics(vec![WritableTxnMarkerTopicResult::default()
                    .with_name(TopicName(name("orders")))
                    .with_partitions(vec![
                        WritableTxnMarkerPartitionResult::default().with_partition_index(0),
                        WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(5)
                            .with_error_code(6),
                    ])]),
        ]);
        vec![
            answer(ApiKey::AddPartitionsToTxn, 4, 7, &verified(0)).to_vec(),
            answer(ApiKey::AddPartitionsToTxn, 4, 8, &verified(48)).to_vec(),
            answer(ApiKey::WriteTxnMarkers, 1, 9, &markers).to_vec(),
        ]
    }

    /// An answer frame (header and body, without the size) as a broker sends it.
    pub fn answer(
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &impl kafka_protocol::protocol::Encodable,
    ) -> Bytes {
        use kafka_protocol::messages::ResponseHeader;
        use kafka_protocol::protocol::Encodable;
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, api.response_header_version(version))
            .expect("a header encodes");
        body.encode(&mut out, version).expect("an answer encodes");
        out.freeze()
    }

    /// A request frame (header and body, without the size) as a client sends it.
    /// Quorum messages written out field by field (`quorum::codec`): a vote request, a vote
    /// answer, an AppendEntries carrying a command and a membership of three voters, and the
    /// answer to an InstallSnapshot.
    pub fn quorum_messages() -> Vec<Vec<u8>> {
        use bytes::BufMut;
        let vote = |out: &mut Vec<u8>, term: u64, node: u64, committed: u8| {
            out.put_u64(term);
            out.put_u64(node);
            out.put_u8(committed);
        };
        let log_id = |out: &mut Vec<u8>, term: u64, index: u64| {
            out.put_u8(1);
            out.put_u64(term);
            out.put_u64(index);
        };
        let mut vote_request = vec![3];
        vote(&mut vote_request, 4, 2, 0);
        log_id(&mut vote_request, 3, 17);
        vote_request.put_u8(0);
        let mut vote_answer = vec![5];
        vote(&mut vote_answer, 4, 2, 1);
        vote_answer.put_u8(1);
        vote_answer.put_u8(0);
        let mut append = vec![1];
        vote(&mut append, 4, 2, 1);
        log_id(&mut append, 3, 17);
        log_id(&mut append, 3, 16);
        append.put_u32(2);
        log_id(&mut append, 4, 18);
        append.put_i8(1);
        append.put_i32(7);
        append.put_slice(b"records");
        log_id(&mut append, 4, 19);
        append.put_i8(2);
        append.put_u32(1);
        append.put_u32(3);
        for id in 1..=3u64 {
            append.put_u64(id);
        }
        append.put_u32(3);
        for id in 1..=3u64 {
            append.put_u64(id);
            let addr = format!("127.0.0.{id}:9093");
            append.put_i16(addr.len() as i16);
            append.put_slice(addr.as_bytes());
        }
        let mut snapshot_answer = vec![7];
        vote(&mut snapshot_answer, 4, 2, 1);
        vec![vote_request, vote_answer, append, snapshot_answer]
    }

    pub fn frame(api: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let id = RequestId {
            correlation_id: 7,
            client_id: "fuzz",
        };
        frame::encode_request_header(api, version, id, &mut buf).expect("a default header encodes");
        // A default body may not encode at every version (a field that version cannot carry):
        // then the header alone is the seed.
        let _ = body.encode(&mut buf, version);
        buf.to_vec()
    }

    fn default_request(api: ApiKey) -> Option<RequestKind> {
        use kafka_protocol::messages::*;
        Some(match api {
            ApiKey::Produce => RequestKind::Produce(ProduceRequest::default()),
            ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default()),
            ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default()),
            ApiKey::Metadata => RequestKind::Metadata(MetadataRequest::default()),
            ApiKey::OffsetForLeaderEpoch => {
                RequestKind::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default())
            }
            ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
            ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
            ApiKey::FindCoordinator => {
                RequestKind::FindCoordinator(FindCoordinatorRequest::default())
            }
            ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
            ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
            ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
            ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
            ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
            ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
            ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
            ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
            ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
            ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
            ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
            ApiKey::AddPartitionsToTxn => {
                RequestKind::AddPartitionsToTxn(AddPartitionsToTxnRequest::default())
            }
            ApiKey::AddOffsetsToTxn => {
                RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default())
            }
            ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
            ApiKey::TxnOffsetCommit => {
                RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default())
            }
            ApiKey::DescribeAcls => RequestKind::DescribeAcls(DescribeAclsRequest::default()),
            ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default()),
            ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default()),
            ApiKey::DescribeConfigs => {
                RequestKind::DescribeConfigs(DescribeConfigsRequest::default())
            }
            ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
            ApiKey::DescribeLogDirs => {
                RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default())
            }
            ApiKey::CreatePartitions => {
                RequestKind::CreatePartitions(CreatePartitionsRequest::default())
            }
            ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
            ApiKey::IncrementalAlterConfigs => {
                RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
            }
            ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
            ApiKey::DescribeCluster => {
                RequestKind::DescribeCluster(DescribeClusterRequest::default())
            }
            ApiKey::DescribeTopicPartitions => {
                RequestKind::DescribeTopicPartitions(DescribeTopicPartitionsRequest::default())
            }
            _ => return None,
        })
    }
}

/// Deterministic mutations of valid inputs, for the stable replay (`tests/fuzz_replay.rs`) and
/// for mutated requests sent to a running broker (`tests/request_mutants.rs`).
pub mod mutations {
    /// A small deterministic generator (xorshift64*), so a failure names a replayable seed.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545F4914F6CDD1D)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Values that sit on the boundaries decoders check: empty, negative (null), the largest.
    const INTERESTING_I32: [i32; 8] = [0, 1, -1, 0x7f, 0x100, 1 << 20, i32::MAX, i32::MIN];
    const INTERESTING_I16: [i16; 5] = [0, -1, 1, 0x7fff, i16::MIN];

    /// One mutant of `seed`: 1 to 4 mutations, the last maybe a splice with `other`.
    pub fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len());
            match rng.below(8) {
                0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
                1 if !data.is_empty() => data[at] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)],
                2 if data.len() >= at + 4 => {
                    let v = INTERESTING_I32[rng.below(INTERESTING_I32.len())];
                    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
                3 if data.len() >= at + 2 => {
                    let v = INTERESTING_I16[rng.below(INTERESTING_I16.len())];
                    data[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
                4 => data.truncate(at),
                5 => {
                    let inserted: Vec<u8> =
                        (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                    data.splice(at..at, inserted);
                }
                6 if !data.is_empty() => {
                    let end = (at + 1 + rng.below(16)).min(data.len());
                    let copy = data[at..end].to_vec();
                    data.splice(at..at, copy);
                }
                _ => {
                    let cut = rng.below(other.len());
                    data.truncate(at);
                    data.extend_from_slice(&other[cut..]);
                }
            }
        }
        data
    }
}

/// Reads a recovery program: bytes run out into zeros, and the edits end with the data.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    /// The next edit: file (index into the directory's sorted listing), kind, position
    /// (16 bits), then for overwrites a length byte and that many bytes.
    fn edit(&mut self, files: usize) -> Option<Edit> {
        if self.0.len() < 4 || files == 0 {
            return None;
        }
        let file = usize::from(self.byte()) % files;
        let kind = self.byte() % 3;
        let position = u64::from(u16::from_be_bytes([self.byte(), self.byte()]));
        let kind = match kind {
            0 => {
                let len = usize::from(self.byte());
                EditKind::Overwrite(self.bytes(len))
            }
            1 => EditKind::Truncate,
            _ => EditKind::Extend,
        };
        Some(Edit {
            file,
            kind,
            position,
        })
    }
}

/// One change to a file on the simulated disk, made durable (damage found after a restart).
struct Edit {
    file: usize,
    kind: EditKind,
    position: u64,
}

enum EditKind {
    /// These bytes at the position (the file grows if they run past its end).
    Overwrite(Vec<u8>),
    /// The file cut at the position (if shorter already, unchanged).
    Truncate,
    /// Zeros appended, as many as the position says (a file longer than what was written).
    Extend,
}

impl Edit {
    async fn apply(&self, storage: &MemStorage, path: &Path) {
        let file = storage.open(path).await.expect("an existing file opens");
        let size = file.size().await.expect("size");
        let result = match &self.kind {
            EditKind::Overwrite(bytes) => {
                file.write_at(bytes.clone(), self.position.min(size)).await
            }
            EditKind::Truncate => file.truncate(self.position.min(size)).await,
            EditKind::Extend => file.write_at(vec![0; self.position as usize], size).await,
        };
        result.expect("the simulated disk takes the edit");
        file.sync_data().await.expect("sync");
    }
}

fn partition_dir() -> PathBuf {
    PathBuf::from("/data/fuzz-0")
}

/// Small segments and a dense index, so a few batches make several segments and index entries.
fn recovery_config() -> LogConfig {
    let mut config = Config::default().log;
    config.segment_bytes = 1024;
    config.index_interval_bytes = 128;
    config
}

/// Writes `batches` batches (of 1-4 records, 0-200 byte values) and flushes; a clean stop also
/// writes the active segment's index files, as a broker's shutdown does.
fn write_partition(storage: &MemStorage, batches: usize, clean: bool) {
    let (mut log, _) = block_on(Log::open(
        storage.clone(),
        partition_dir(),
        recovery_config(),
        Offset(0),
        0,
        &mut |_, _| None,
    ))
    .expect("a new partition opens");
    for i in 0..batches {
        let value = vec![b'v'; (i * 37) % 200];
        let records: Vec<batch::KeyValue> = (0..1 + i % 4)
            .map(|_| (Some(&b"key"[..]), Some(value.as_slice())))
            .collect();
        append(&mut log, &batch::build_batch(&records, i as i64));
    }
    flush(&mut log);
    if clean {
        block_on(log.close_plan().run()).expect("clean stop");
    }
}

fn partition_files(storage: &MemStorage) -> Vec<PathBuf> {
    let mut names = storage
        .list_dir(&partition_dir())
        .expect("the partition exists");
    names.sort();
    names.into_iter().map(|n| partition_dir().join(n)).collect()
}

fn append(log: &mut Log<MemStorage>, bytes: &[u8]) {
    let header = batch::check_batch(bytes).expect("a built batch is valid");
    log.append(Bytes::copy_from_slice(bytes), &header, 0, 0)
        .expect("append");
}

fn flush(log: &mut Log<MemStorage>) -> Offset {
    let job = log.take_flush().expect("something to flush");
    let result = block_on(job.run());
    log.complete_flush(result)
        .expect("the simulated disk syncs")
}

/// Reading from the log start to its end, batch after batch, finds only batches that pass their
/// CRC check, each holding the offset read or (past a gap) the first offset after it, until
/// nothing is left to read.
fn assert_every_offset_reads_a_valid_batch(log: &Log<MemStorage>) {
    let mut offset = log.log_start();
    while offset < log.durable_end() {
        let cursor = log
            .cursor_at(offset, log.durable_end())
            .expect("in range")
            .expect("readable");
        let bytes = block_on(cursor.read(offset, 1)).expect("read");
        if bytes.is_empty() {
            // Damage emptied every segment from here on: offsets are never reused, so the
            // log's end stays where it was, and reads find nothing until the next append.
            break;
        }
        let header = BatchHeader::parse(&bytes).expect("a batch header where an offset is");
        let stored = &bytes[..header.total_bytes().min(bytes.len())];
        batch::check_stored_batch(stored).expect("recovery kept only valid batches");
        // At or after: a segment damaged empty leaves a gap, read past as compaction's are.
        assert!(
            offset <= header.last_offset(),
            "read {offset}, got a batch before it"
        );
        offset = header.next_offset();
    }
}

fn append_one_and_read_it_back(log: &mut Log<MemStorage>, reads: ReadsMust) {
    let at = log.end();
    append(
        log,
        &batch::build_batch(&[(Some(b"after"), Some(b"recovery"))], 1),
    );
    flush(log);
    let new_batch = first_batch_read_at(log, at);
    // A read from the log start now finds a batch: past empty or damaged segments if need be.
    let start = log.log_start();
    let from_start = first_batch_read_at(log, start);
    if reads == ReadsMust::Succeed {
        assert_eq!(new_batch.expect("the new batch reads back").base_offset, at);
        let header = from_start.expect("a batch after the log start");
        assert!(header.last_offset() >= start);
    }
}

/// The header of the first batch a read at `offset` returns; `Err` says why there is none.
fn first_batch_read_at(log: &Log<MemStorage>, offset: Offset) -> Result<BatchHeader, String> {
    let cursor = log
        .cursor_at(offset, log.durable_end())
        .map_err(|code| format!("{code:?}"))?
        .ok_or("nothing readable")?;
    let bytes = block_on(cursor.read(offset, 1)).map_err(|err| err.to_string())?;
    BatchHeader::parse(&bytes).ok_or_else(|| "no batch header".into())
}
