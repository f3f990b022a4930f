//! What the group coordinator writes to `__consumer_offsets`, in Kafka's own record layout so
//! Kafka's tools can read it: offset commits (key version 1, value version 3) and group metadata
//! (key version 2, value version 3); a null value is a tombstone.
//!
//! Pure encoding and decoding, usable on any core. Decoding checks every length against the
//! bytes present: a damaged record is reported, never trusted or panicked on.

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{GroupRecord, MemberRecord};
use crate::internal_log::{put_bytes, put_nullable_string, put_string, FieldReader};
use crate::storage::batch::{
    build_batch, build_transactional_batch, for_each_batch, BatchHeader, ControlType, KeyValue,
};
use crate::types::{Offset, ProducerEpoch, ProducerId, TopicPartition};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A committed offset as the group keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One record of the offsets log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// `None`: the offset was deleted.
    Offset {
        group: String,
        tp: TopicPartition,
        value: Option<CommittedOffset>,
    },
    /// `None`: the group was deleted.
    Group {
        group: String,
        value: Option<GroupRecord>,
    },
}

impl OffsetsRecord {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group, .. } | OffsetsRecord::Group { group, .. } => group,
        }
    }

    pub fn key(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            OffsetsRecord::Offset { group, tp, .. } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_string(&mut out, group);
                put_string(&mut out, &tp.topic);
                out.put_i32(tp.partition.0);
            }
            OffsetsRecord::Group { group, .. } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_string(&mut out, group);
            }
        }
        out.freeze()
    }

    pub fn value(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match self {
            OffsetsRecord::Offset { value, .. } => {
                let v = value.as_ref()?;
                out.put_i16(OFFSET_VALUE_VERSION);
                out.put_i64(v.offset);
                out.put_i32(v.leader_epoch);
                put_string(&mut out, &v.metadata);
                out.put_i64(v.commit_timestamp_ms);
            }
            OffsetsRecord::Group { value, .. } => {
                let v = value.as_ref()?;
                out.put_i16(GROUP_VALUE_VERSION);
                put_string(&mut out, &v.protocol_type);
                out.put_i32(v.generation);
                put_nullable_string(&mut out, v.protocol_name.as_deref());
                put_nullable_string(&mut out, v.leader.as_deref());
                out.put_i64(v.state_timestamp_ms);
                out.put_i32(v.members.len() as i32);
                for m in &v.members {
                    put_string(&mut out, &m.member_id);
                    put_nullable_string(&mut out, m.instance_id.as_deref());
                    put_string(&mut out, &m.client_id);
                    put_string(&mut out, &m.client_host);
                    out.put_i32(m.rebalance_timeout_ms);
                    out.put_i32(m.session_timeout_ms);
                    put_bytes(&mut out, &m.subscription);
                    put_bytes(&mut out, &m.assignment);
                }
            }
        }
        Some(out.freeze())
    }

    /// Decodes one record's key and value; `Err` names what is wrong.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetsRecord, String> {
        let mut k = FieldReader(key);
        let version = k.i16()?;
        match version {
            0 | 1 => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset_value).transpose()?;
                Ok(OffsetsRecord::Offset {
                    group,
                    tp: TopicPartition::new(topic, partition),
                    value,
                })
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group_value).transpose()?;
                Ok(OffsetsRecord::Group { group, value })
            }
            other => Err(format!("unknown key version {other}")),
        }
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<CommittedOffset, String> {
    let mut v = FieldReader(bytes);
    let version = v.i16()?;
    let offset = v.i64()?;
    let leader_epoch = if version >= 3 { v.i32()? } else { -1 };
    let metadata = v.string()?;
    let commit_timestamp_ms = v.i64()?;
    Ok(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(bytes: &[u8]) -> Result<GroupRecord, String> {
    let mut v = FieldReader(bytes);
    let version = v.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown group value version {version}"));
    }
    let protocol_type = v.string()?;
    let generation = v.i32()?;
    let protocol_name = v.nullable_string()?;
    let leader = v.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { v.i64()? } else { -1 };
    let count = v.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = v.string()?;
        let instance_id = if version >= 3 {
            v.nullable_string()?
        } else {
            None
        };
        let client_id = v.string()?;
        let client_host = v.string()?;
        let rebalance_timeout_ms = if version >= 1 { v.i32()? } else { 0 };
        let session_timeout_ms = v.i32()?;
        members.push(MemberRecord {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            session_timeout_ms,
            subscription: v.bytes()?,
            assignment: v.bytes()?,
        });
    }
    Ok(GroupRecord {
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_timestamp_ms,
        members,
    })
}

/// Builds the transactional batch TxnOffsetCommit appends for `producer`: settled by the
/// transaction's marker.
pub fn encode_txn_batch(
    records: &[OffsetsRecord],
    producer: ProducerId,
    epoch: ProducerEpoch,
    now_ms: i64,
) -> Bytes {
    let encoded: Vec<(Bytes, Option<Bytes>)> =
        records.iter().map(|r| (r.key(), r.value())).collect();
    let pairs: Vec<KeyValue> = encoded
        .iter()
        .map(|(k, v)| (Some(&k[..]), v.as_deref()))
        .collect();
    Bytes::from(build_transactional_batch(
        &pairs, now_ms, producer.0, epoch.0,
    ))
}

/// Builds one uncompressed v2 batch holding `records` (offsets are assigned by the log).
pub fn encode_batch(records: &[OffsetsRecord], now_ms: i64) -> Bytes {
    let encoded: Vec<(Bytes, Option<Bytes>)> =
        records.iter().map(|r| (r.key(), r.value())).collect();
    let pairs: Vec<KeyValue> = encoded
        .iter()
        .map(|(k, v)| (Some(&k[..]), v.as_deref()))
        .collect();
    Bytes::from(build_batch(&pairs, now_ms))
}

/// Decodes every whole batch in `bytes` (see `batch::for_each_batch`), handing each batch's
/// header, its marker (for control batches) and its offsets records to `on_batch`; damaged
/// records are logged and skipped. Returns the offset after the last whole batch.
pub fn decode_batches(
    bytes: &Bytes,
    mut on_batch: impl FnMut(&BatchHeader, Option<ControlType>, Vec<(Offset, OffsetsRecord)>),
) -> Option<Offset> {
    for_each_batch(bytes, |batch| {
        let records = batch
            .records
            .into_iter()
            .filter_map(
                |(at, key, value)| match OffsetsRecord::decode(&key, value.as_deref()) {
                    Ok(r) => Some((at, r)),
                    Err(err) => {
                        tracing::error!("{OFFSETS_TOPIC}: skipping record at offset {at}: {err}");
                        None
                    }
                },
            )
            .collect();
        on_batch(&batch.header, batch.control, records);
    })
}

/// Kafka's choice of offsets partition for a group: `abs(groupId.hashCode()) % partitions`,
/// with Java's String.hashCode over UTF-16 code units.
pub fn partition_for_group(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs maps i32::MIN to 0.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_record() -> GroupRecord {
        GroupRecord {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol_name: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 123,
            members: vec![MemberRecord {
                member_id: "m-1".into(),
                instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        }
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            OffsetsRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 3),
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "meta".into(),
                    commit_timestamp_ms: 99,
                }),
            },
            OffsetsRecord::Offset {
                group: "g".into(),
                tp: TopicPartition::new("t", 4),
                value: None,
            },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(group_record()),
            },
            OffsetsRecord::Group {
                group: "h".into(),
                value: None,
            },
        ];
        let batch = encode_batch(&records, 1000);
        crate::storage::batch::check_batch(&batch).expect("a valid v2 batch");
        let mut decoded = Vec::new();
        let next = decode_batches(&batch, |_, _, records| {
            decoded.extend(records.into_iter().map(|(_, r)| r))
        });
        assert_eq!(next, Some(Offset(4)));
        assert_eq!(decoded, records);
    }

    #[test]
    fn a_partial_tail_is_left_for_the_next_read() {
        let batch = encode_batch(
            &[OffsetsRecord::Group {
                group: "g".into(),
                value: None,
            }],
            0,
        );
        let mut two = BytesMut::from(&batch[..]);
        two.extend_from_slice(&batch[..batch.len() - 1]);
        let mut n = 0;
        assert_eq!(
            decode_batches(&two.freeze(), |_, _, r| n += r.len()),
            Some(Offset(1))
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let record = OffsetsRecord::Group {
            group: "g".into(),
            value: Some(group_record()),
        };
        let key = record.key();
        let value = record.value().unwrap();
        for cut in 0..value.len() {
            assert!(OffsetsRecord::decode(&key, Some(&value[..cut])).is_err());
        }
        for cut in 0..key.len() {
            let _ = OffsetsRecord::decode(&key[..cut], None);
        }
    }

    #[test]
    fn partition_choice_matches_kafka() {
        assert_eq!(partition_for_group("", 50), 0);
        let h = "my-group"
            .chars()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        assert_eq!(partition_for_group("my-group", 50), h.abs() % 50);
        for g in ["a", "group-1", "ünïcode", "x".repeat(300).as_str()] {
            assert!((0..50).contains(&partition_for_group(g, 50)));
        }
    }
}
