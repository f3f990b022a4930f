//! One transactional id's state as its coordinator keeps it (Kafka's TransactionMetadata), the
//! rules that decide what each transaction request may do, and the `__transaction_state` record
//! layout (Kafka's TransactionLogKey v0 / TransactionLogValue v0). Pure: no I/O, time passed in.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;
use crate::internal_log::{put_string, FieldReader};
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

/// The internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl TxnState {
    fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
        }
    }

    fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            _ => return None,
        })
    }

    /// Markers are being written: the transaction is decided but not finished.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

/// What InitProducerId should do with an existing transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitDecision {
    /// Hand out the next epoch (a fresh producer id when the epoch would overflow).
    BumpEpoch,
    /// A transaction is open: abort it under a bumped epoch first; the client retries.
    FenceAndAbort,
    /// Markers are being written; the client retries.
    Retry,
}

impl TxnMetadata {
    pub fn new(producer_id: ProducerId, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            epoch: ProducerEpoch(0),
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
        }
    }

    /// KIP-360: a client presenting its producer id and epoch must present the current ones.
    pub fn decide_init(
        &self,
        presented: Option<(ProducerId, ProducerEpoch)>,
    ) -> Result<InitDecision, ErrorCode> {
        if let Some((id, epoch)) = presented {
            if id != self.producer_id || epoch != self.epoch {
                return Err(ErrorCode::ProducerFenced);
            }
        }
        Ok(match self.state {
            TxnState::Ongoing => InitDecision::FenceAndAbort,
            s if s.is_preparing() => InitDecision::Retry,
            _ => InitDecision::BumpEpoch,
        })
    }

    /// Checks a request's producer id and epoch against this transaction's.
    pub fn check_producer(&self, id: ProducerId, epoch: ProducerEpoch) -> Result<(), ErrorCode> {
        if id != self.producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if epoch != self.epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(())
    }

    /// Whether AddPartitionsToTxn / AddOffsetsToTxn may add partitions now.
    pub fn check_add(&self, id: ProducerId, epoch: ProducerEpoch) -> Result<(), ErrorCode> {
        self.check_producer(id, epoch)?;
        if self.state.is_preparing() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        Ok(())
    }

    /// What EndTxn may do: `Ok(true)` to start ending the open transaction, `Ok(false)` when
    /// it is a retry of the end that already completed.
    pub fn check_end(
        &self,
        id: ProducerId,
        epoch: ProducerEpoch,
        commit: bool,
    ) -> Result<bool, ErrorCode> {
        self.check_producer(id, epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(true),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(false),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The next epoch; `None` when it would overflow (a new producer id is needed).
    pub fn next_epoch(&self) -> Option<ProducerEpoch> {
        (self.epoch.0 < i16::MAX - 1).then_some(ProducerEpoch(self.epoch.0 + 1))
    }

    pub fn has_expired(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && now_ms - self.start_ms > self.timeout_ms as i64
    }
}

/// The key of a `__transaction_state` record: version 0 and the transactional id.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    put_string(&mut out, transactional_id);
    out.freeze()
}

pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i64(m.producer_id.0);
    out.put_i16(m.epoch.0);
    out.put_i32(m.timeout_ms);
    out.put_i8(m.state.code());
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in &m.partitions {
        match by_topic.last_mut() {
            Some((topic, ids)) if *topic == tp.topic => ids.push(tp.partition.0),
            _ => by_topic.push((&tp.topic, vec![tp.partition.0])),
        }
    }
    out.put_i32(by_topic.len() as i32);
    for (topic, ids) in by_topic {
        put_string(&mut out, topic);
        out.put_i32(ids.len() as i32);
        for id in ids {
            out.put_i32(id);
        }
    }
    out.put_i64(m.last_update_ms);
    out.put_i64(m.start_ms);
    out.freeze()
}

/// Decodes a record; `Err` names what is wrong (a damaged record is skipped, never trusted).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<(String, Option<TxnMetadata>), String> {
    let mut k = FieldReader(key);
    if k.i16()? != 0 {
        return Err("unknown key version".into());
    }
    let id = k.string()?;
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut v = FieldReader(value);
    if v.i16()? != 0 {
        return Err("unknown value version".into());
    }
    let producer_id = ProducerId(v.i64()?);
    let epoch = ProducerEpoch(v.i16()?);
    let timeout_ms = v.i32()?;
    let state = TxnState::from_code(v.i8()?).ok_or("unknown state")?;
    let mut partitions = BTreeSet::new();
    let topics = v.i32()?;
    for _ in 0..topics.max(0) {
        let topic = v.string()?;
        let count = v.i32()?;
        for _ in 0..count.max(0) {
            partitions.insert(TopicPartition::new(topic.clone(), v.i32()?));
        }
    }
    let last_update_ms = v.i64()?;
    let start_ms = v.i64()?;
    Ok((
        id,
        Some(TxnMetadata {
            producer_id,
            epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnMetadata {
        let mut m = TxnMetadata::new(ProducerId(9), 60_000, 0);
        m.state = TxnState::Ongoing;
        m.start_ms = 1_000;
        m.partitions.insert(TopicPartition::new("a", 0));
        m.partitions.insert(TopicPartition::new("a", 2));
        m.partitions.insert(TopicPartition::new("b", 1));
        m
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let m = ongoing();
        let (key, value) = (encode_key("tx-1"), encode_value(&m));
        assert_eq!(
            decode(&key, Some(&value)),
            Ok(("tx-1".to_string(), Some(m)))
        );
        assert_eq!(decode(&key, None), Ok(("tx-1".to_string(), None)));
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err());
        }
    }

    #[test]
    fn requests_are_checked_as_kafka_does() {
        let m = ongoing();
        let (id, epoch) = (ProducerId(9), ProducerEpoch(0));
        assert_eq!(
            m.check_add(ProducerId(8), epoch),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.check_add(id, ProducerEpoch(1)),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(m.check_end(id, epoch, true), Ok(true));
        let mut committed = m.clone();
        committed.state = TxnState::CompleteCommit;
        assert_eq!(
            committed.check_end(id, epoch, true),
            Ok(false),
            "a retried commit"
        );
        assert_eq!(
            committed.check_end(id, epoch, false),
            Err(ErrorCode::InvalidTxnState)
        );
        let mut preparing = m.clone();
        preparing.state = TxnState::PrepareCommit;
        assert_eq!(
            preparing.check_add(id, epoch),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(preparing.decide_init(None), Ok(InitDecision::Retry));
        assert_eq!(m.decide_init(None), Ok(InitDecision::FenceAndAbort));
        assert_eq!(
            m.decide_init(Some((id, ProducerEpoch(3)))),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            committed.decide_init(Some((id, epoch))),
            Ok(InitDecision::BumpEpoch)
        );
        let empty = TxnMetadata::new(id, 1_000, 0);
        assert_eq!(
            empty.check_end(id, epoch, true),
            Err(ErrorCode::InvalidTxnState),
            "EndTxn without a transaction"
        );
        assert!(m.has_expired(61_001) && !m.has_expired(61_000));
    }
}
