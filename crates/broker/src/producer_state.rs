//! Idempotent-producer state of one partition: per producer id, its epoch and the last
//! `PRODUCER_BATCHES_REMEMBERED` batches, so a retried batch gets its original offsets back and a
//! gap or an old epoch is refused; and the epoch of the transaction coordinator that wrote its
//! last marker here, so a marker from a coordinator since replaced is refused (Kafka's
//! TRANSACTION_COORDINATOR_FENCED). Lives with the partition on its shard; rebuilt from the log's
//! batches after an unclean stop, or loaded from a snapshot after a clean one.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::error::ErrorCode;
use crate::limits::PRODUCER_BATCHES_REMEMBERED;
use crate::storage::batch::BatchHeader;
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// One remembered batch: its sequence range and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: VecDeque<BatchMetadata>,
    /// The first offset of the producer's open transaction on this partition.
    txn_first_offset: Option<Offset>,
    /// The epoch of the coordinator that wrote the producer's last marker here (-1: none yet).
    coordinator_epoch: i32,
}

/// What a produce check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not seen before: append it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets.
    Duplicate(BatchMetadata),
}

/// The producers of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<ProducerId, ProducerEntry>,
    /// Open transactions by first offset: the oldest bounds the last stable offset.
    open_transactions: BTreeSet<(Offset, ProducerId)>,
}

/// Snapshot format version (a leading i16; older snapshots fail to parse and the log is scanned).
/// Version 3 added each producer's coordinator epoch.
const SNAPSHOT_VERSION: i16 = 3;

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

impl ProducerStateTable {
    /// Decides what to do with an incoming batch, following Kafka's rules: an older epoch is
    /// fenced; a new epoch must start at sequence 0; within an epoch the batch must be a known
    /// duplicate or continue the last sequence. A producer with no state may start anywhere
    /// (its earlier batches may have been removed by retention).
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, ErrorCode> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&ProducerId(header.producer_id)) else {
            return Ok(SequenceCheck::Append);
        };
        let epoch = ProducerEpoch(header.producer_epoch);
        if epoch < entry.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if epoch > entry.epoch {
            return if header.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            };
        }
        if let Some(dup) = entry.batches.iter().find(|b| {
            b.first_sequence == header.base_sequence && b.last_sequence == header.last_sequence()
        }) {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(last) if next_sequence(last.last_sequence) != header.base_sequence => {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a data batch that is now in the log (`header` carries its assigned offsets); a
    /// transactional one opens the producer's transaction here if none is open.
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.is_control() {
            return;
        }
        let id = ProducerId(header.producer_id);
        let epoch = ProducerEpoch(header.producer_epoch);
        let entry = self.entry(id, epoch);
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.open_transactions.insert((header.base_offset, id));
        }
        let entry = self.producers.get_mut(&id).expect("just made");
        if entry.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            timestamp: header.max_timestamp,
        });
    }

    /// The producer's entry, moved to `epoch` if that is newer (which forgets its sequences).
    fn entry(&mut self, id: ProducerId, epoch: ProducerEpoch) -> &mut ProducerEntry {
        let entry = self.producers.entry(id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: -1,
        });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry
    }

    /// Refuses a marker for `id` from a coordinator older than the one that wrote its last
    /// marker here: that coordinator has been replaced, and its marker could end a transaction
    /// the new one runs (Kafka's check in `ProducerAppendInfo.appendEndTxnMarker`).
    pub fn check_coordinator(
        &self,
        id: ProducerId,
        coordinator_epoch: i32,
    ) -> Result<(), ErrorCode> {
        match self.producers.get(&id) {
            Some(entry) if entry.coordinator_epoch > coordinator_epoch => {
                Err(ErrorCode::TransactionCoordinatorFenced)
            }
            _ => Ok(()),
        }
    }

    /// A COMMIT or ABORT marker from `id` at `epoch`, written by the coordinator at
    /// `coordinator_epoch`, is in the log: its transaction here ends. Returns the transaction's
    /// first offset, if it had written anything here.
    pub fn end_transaction(
        &mut self,
        id: ProducerId,
        epoch: ProducerEpoch,
        coordinator_epoch: i32,
    ) -> Option<Offset> {
        let entry = self.entry(id, epoch);
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        let first = entry.txn_first_offset.take()?;
        self.open_transactions.remove(&(first, id));
        Some(first)
    }

    /// The producer's current epoch and open transaction's first offset here, if it is known.
    pub fn transaction_of(&self, id: ProducerId) -> Option<(ProducerEpoch, Option<Offset>)> {
        self.producers
            .get(&id)
            .map(|e| (e.epoch, e.txn_first_offset))
    }

    /// The first offset of the oldest open transaction: nothing from it on is stable yet.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.open_transactions.first().map(|(offset, _)| *offset)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Serializes the table for a snapshot file, with a trailing CRC-32C.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, entry) in &self.producers {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&entry.epoch.0.to_be_bytes());
            out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            let first = entry.txn_first_offset.map(|o| o.0).unwrap_or(-1);
            out.extend_from_slice(&first.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` if it is torn or corrupt (the caller then scans the log).
    pub fn decode(bytes: &[u8]) -> Option<ProducerStateTable> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.i16()? != SNAPSHOT_VERSION {
            return None;
        }
        let count = r.u32()? as usize;
        let mut table = ProducerStateTable::default();
        for _ in 0..count.min(body.len()) {
            let id = ProducerId(r.i64()?);
            let epoch = ProducerEpoch(r.i16()?);
            let coordinator_epoch = r.i32()?;
            let first = r.i64()?;
            let txn_first_offset = (first >= 0).then_some(Offset(first));
            let n = r.u8()? as usize;
            if n > PRODUCER_BATCHES_REMEMBERED {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMetadata {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    base_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                    timestamp: r.i64()?,
                });
            }
            if let Some(first) = txn_first_offset {
                table.open_transactions.insert((first, id));
            }
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        r.0.is_empty().then_some(table)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.0.len() < N {
            return None;
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::test_batches::batch;
    use crate::storage::batch::{assign_offset, BatchHeader};

    fn header(pid: i64, epoch: i16, seq: i32, n: usize, offset: i64) -> BatchHeader {
        let values: Vec<&[u8]> = (0..n).map(|_| b"v".as_slice()).collect();
        let mut b = batch(&values, 0, Some((pid, epoch, seq)));
        assign_offset(&mut b, Offset(offset), 0);
        BatchHeader::parse(&b).unwrap()
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut t = ProducerStateTable::default();
        let first = header(1, 0, 0, 3, 0);
        assert_eq!(t.check(&first), Ok(SequenceCheck::Append));
        t.record(&first);
        let dup = t.check(&header(1, 0, 0, 3, 99)).unwrap();
        assert!(
            matches!(dup, SequenceCheck::Duplicate(m) if m.base_offset == Offset(0) && m.last_offset == Offset(2))
        );
        assert_eq!(
            t.check(&header(1, 0, 4, 1, 3)),
            Err(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(t.check(&header(1, 0, 3, 1, 3)), Ok(SequenceCheck::Append));
        t.record(&header(1, 1, 0, 1, 3));
        assert_eq!(
            t.check(&header(1, 0, 4, 1, 4)),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            t.check(&header(1, 2, 5, 1, 4)),
            Err(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            t.check(&header(2, 0, 17, 1, 4)),
            Ok(SequenceCheck::Append),
            "unknown producers may start anywhere"
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(&header(1, 0, i, 1, i as i64));
        }
        assert!(matches!(
            t.check(&header(1, 0, 6, 1, 0)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert_eq!(
            t.check(&header(1, 0, 1, 1, 0)),
            Err(ErrorCode::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn a_marker_from_a_replaced_coordinator_is_fenced() {
        let mut t = ProducerStateTable::default();
        let id = ProducerId(7);
        assert_eq!(t.check_coordinator(id, 0), Ok(()), "no marker yet");
        t.end_transaction(id, ProducerEpoch(0), 5);
        assert_eq!(t.check_coordinator(id, 5), Ok(()), "the same coordinator");
        assert_eq!(t.check_coordinator(id, 6), Ok(()), "a newer coordinator");
        assert_eq!(
            t.check_coordinator(id, 4),
            Err(ErrorCode::TransactionCoordinatorFenced)
        );
        assert_eq!(
            t.check_coordinator(ProducerId(8), 0),
            Ok(()),
            "per producer"
        );
    }

    #[test]
    fn snapshot_round_trips_and_detects_corruption() {
        let mut t = ProducerStateTable::default();
        t.record(&header(5, 2, 0, 4, 10));
        t.end_transaction(ProducerId(5), ProducerEpoch(2), 9);
        let bytes = t.encode();
        assert_eq!(ProducerStateTable::decode(&bytes), Some(t));
        let mut bad = bytes.clone();
        bad[5] ^= 0xff;
        assert_eq!(ProducerStateTable::decode(&bad), None);
        assert_eq!(ProducerStateTable::decode(&bytes[..3]), None);
    }
}
