//! The binary metadata file: the records that rebuild the image (its snapshot, as KRaft's
//! snapshots are records too). Written by the controller on shard 0, read once at start.
//!
//! Layout: the magic `SLUICEMD`, a format version (u16), then frames. A frame is its body's
//! length (u32), the CRC-32C of its body (u32), then the body. The first frame's body is the
//! cluster id and the number of records that follow (u32), so that a file cut at a frame
//! boundary is refused too; each further body is one record: its type (u8), its version (u8), its fields.
//! Integers are big-endian; a string is a u16 length and UTF-8 bytes; an absent string is
//! length 0xFFFF. Decoding checks every length against the bytes left, so bad input costs
//! at most its own size in memory, and never panics.

use std::fmt;

use uuid::Uuid;

use super::records::{
    BrokerEpoch, BrokerId, BrokerRegistration, ConfigResource, Endpoint, LeaderEpoch,
    MetadataRecord, PartitionEpoch, PartitionState, ReplicaSetChange,
};
use crate::limits;
use crate::types::{PartitionId, ProducerId};

/// The first bytes of a binary metadata file.
pub const MAGIC: &[u8; 8] = b"SLUICEMD";
/// The format this code writes (and the newest it reads).
const FORMAT_VERSION: u16 = 1;
/// Every record type is at version 0, but:
/// - Partition, at 1 when a reassignment moves it (replicas being added and removed);
/// - PartitionChange, at 1 (it names the partition epoch it was decided at) and at 2 when it
///   changes the replicas too.
///
/// Each still reads its earlier versions.
const RECORD_VERSION: u8 = 0;
const PARTITION_MOVING_VERSION: u8 = 1;
const PARTITION_CHANGE_VERSION: u8 = 1;
const PARTITION_CHANGE_REPLICAS_VERSION: u8 = 2;
/// A string's length that stands for "absent".
const ABSENT: u16 = u16::MAX;

// Record types.
const REGISTER_BROKER: u8 = 1;
const TOPIC: u8 = 2;
const PARTITION: u8 = 3;
const REMOVE_TOPIC: u8 = 4;
const CONFIG: u8 = 5;
const PRODUCER_IDS: u8 = 6;
const FENCE_BROKER: u8 = 7;
const UNFENCE_BROKER: u8 = 8;
const PARTITION_CHANGE: u8 = 9;

// Config resource types, Kafka's numbers.
const RESOURCE_TOPIC: u8 = 2;
const RESOURCE_BROKER: u8 = 4;

/// Why bytes are not a metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    NotMetadata,
    UnknownFormat(u16),
    Truncated,
    FrameTooLarge(usize),
    BadCrc {
        frame: usize,
    },
    UnknownRecord {
        kind: u8,
        version: u8,
    },
    /// A field holds a value no encoder writes (bad UTF-8, an unknown flag, trailing bytes).
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotMetadata => write!(f, "not a sluice metadata file"),
            DecodeError::UnknownFormat(v) => write!(f, "unknown metadata format version {v}"),
            DecodeError::Truncated => write!(f, "truncated"),
            DecodeError::FrameTooLarge(len) => write!(
                f,
                "a frame of {len} bytes (at most {})",
                limits::METADATA_RECORD_MAX_BYTES
            ),
            DecodeError::BadCrc { frame } => write!(f, "frame {frame} fails its CRC"),
            DecodeError::UnknownRecord { kind, version } => {
                write!(f, "unknown record type {kind} version {version}")
            }
            DecodeError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The file for a cluster id and the records that rebuild its image.
pub fn encode(cluster_id: &str, records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    let mut body = Vec::new();
    put_str(&mut body, cluster_id);
    body.extend_from_slice(&(records.len() as u32).to_be_bytes());
    frame(&mut out, &body);
    for record in records {
        body.clear();
        encode_record(&mut body, record);
        frame(&mut out, &body);
    }
    out
}

/// The cluster id and records of a file written by `encode`.
pub fn decode(bytes: &[u8]) -> Result<(String, Vec<MetadataRecord>), DecodeError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::NotMetadata)?;
    let mut reader = Reader(rest);
    let version = reader.u16()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownFormat(version));
    }
    let mut header = reader.frame(0)?.ok_or(DecodeError::Truncated)?;
    let cluster_id = header.string()?;
    let count = header.u32()? as usize;
    header.end()?;
    // Not `with_capacity(count)`: the count is not yet backed by bytes.
    let mut records = Vec::new();
    while let Some(mut body) = reader.frame(records.len() + 1)? {
        records.push(decode_record(&mut body)?);
        body.end()?;
    }
    if records.len() != count {
        return Err(DecodeError::Truncated);
    }
    Ok((cluster_id, records))
}

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    assert!(
        body.len() <= limits::METADATA_RECORD_MAX_BYTES,
        "a metadata record of {} bytes",
        body.len()
    );
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names, hosts and config values are far below this; a longer one is a bug upstream.
    assert!(
        s.len() < ABSENT as usize,
        "a metadata string of {} bytes",
        s.len()
    );
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&ABSENT.to_be_bytes()),
    }
}

fn put_brokers(out: &mut Vec<u8>, brokers: &[BrokerId]) {
    out.extend_from_slice(&(brokers.len() as u32).to_be_bytes());
    for broker in brokers {
        out.extend_from_slice(&broker.0.to_be_bytes());
    }
}

fn encode_record(out: &mut Vec<u8>, record: &MetadataRecord) {
    let kind = match record {
        MetadataRecord::RegisterBroker(_) => REGISTER_BROKER,
        MetadataRecord::Topic { .. } => TOPIC,
        MetadataRecord::Partition { .. } => PARTITION,
        MetadataRecord::RemoveTopic { .. } => REMOVE_TOPIC,
        MetadataRecord::Config { .. } => CONFIG,
        MetadataRecord::ProducerIds { .. } => PRODUCER_IDS,
        MetadataRecord::FenceBroker { .. } => FENCE_BROKER,
        MetadataRecord::UnfenceBroker { .. } => UNFENCE_BROKER,
        MetadataRecord::PartitionChange { .. } => PARTITION_CHANGE,
    };
    let version = match record {
        MetadataRecord::Partition { state, .. } if state.is_reassigning() => {
            PARTITION_MOVING_VERSION
        }
        MetadataRecord::PartitionChange {
            replicas: Some(_), ..
        } => PARTITION_CHANGE_REPLICAS_VERSION,
        MetadataRecord::PartitionChange {
            decided_at: Some(_),
            ..
        } => PARTITION_CHANGE_VERSION,
        _ => RECORD_VERSION,
    };
    out.extend_from_slice(&[kind, version]);
    match record {
        MetadataRecord::RegisterBroker(b) => {
            out.extend_from_slice(&b.id.0.to_be_bytes());
            out.extend_from_slice(b.incarnation_id.as_bytes());
            out.extend_from_slice(&b.epoch.0.to_be_bytes());
            out.extend_from_slice(&(b.endpoints.len() as u16).to_be_bytes());
            for endpoint in &b.endpoints {
                put_str(out, &endpoint.name);
                put_str(out, &endpoint.host);
                out.extend_from_slice(&endpoint.port.to_be_bytes());
            }
            out.push(b.fenced as u8);
        }
        MetadataRecord::Topic { name, id } => {
            put_str(out, name);
            out.extend_from_slice(id.as_bytes());
        }
        MetadataRecord::Partition {
            topic_id,
            partition,
            state,
        } => {
            out.extend_from_slice(topic_id.as_bytes());
            out.extend_from_slice(&partition.0.to_be_bytes());
            put_brokers(out, &state.replicas);
            put_brokers(out, &state.isr);
            out.extend_from_slice(&state.leader.0.to_be_bytes());
            out.extend_from_slice(&state.leader_epoch.0.to_be_bytes());
            out.extend_from_slice(&state.partition_epoch.0.to_be_bytes());
            if version == PARTITION_MOVING_VERSION {
                put_brokers(out, &state.adding);
                put_brokers(out, &state.removing);
            }
        }
        MetadataRecord::RemoveTopic { id } => out.extend_from_slice(id.as_bytes()),
        MetadataRecord::Config {
            resource,
            key,
            value,
        } => {
            match resource {
                ConfigResource::Brokers => {
                    out.push(RESOURCE_BROKER);
                    put_str(out, "");
                }
                ConfigResource::Topic(name) => {
                    out.push(RESOURCE_TOPIC);
                    put_str(out, name);
                }
            }
            put_str(out, key);
            put_opt_str(out, value.as_deref());
        }
        MetadataRecord::ProducerIds {
            broker,
            broker_epoch,
            next_producer_id,
        } => {
            out.extend_from_slice(&broker.0.to_be_bytes());
            out.extend_from_slice(&broker_epoch.0.to_be_bytes());
            out.extend_from_slice(&next_producer_id.0.to_be_bytes());
        }
        MetadataRecord::FenceBroker { id, epoch } | MetadataRecord::UnfenceBroker { id, epoch } => {
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&epoch.0.to_be_bytes());
        }
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            isr,
            replicas,
            decided_at,
        } => {
            out.extend_from_slice(topic_id.as_bytes());
            out.extend_from_slice(&partition.0.to_be_bytes());
            out.push(leader.is_some() as u8);
            if let Some(leader) = leader {
                out.extend_from_slice(&leader.0.to_be_bytes());
            }
            out.push(isr.is_some() as u8);
            if let Some(isr) = isr {
                put_brokers(out, isr);
            }
            if version >= PARTITION_CHANGE_VERSION {
                // Written whenever the version has the field: a v2 record without it would
                // not read back.
                out.extend_from_slice(&decided_at.map_or(-1, |at| at.0).to_be_bytes());
            }
            if let Some(change) = replicas {
                put_brokers(out, &change.replicas);
                put_brokers(out, &change.adding);
                put_brokers(out, &change.removing);
            }
        }
    }
}

fn decode_record(r: &mut Reader<'_>) -> Result<MetadataRecord, DecodeError> {
    let kind = r.u8()?;
    let version = r.u8()?;
    let known = version == RECORD_VERSION
        || (kind == PARTITION && version == PARTITION_MOVING_VERSION)
        || (kind == PARTITION_CHANGE
            && (version == PARTITION_CHANGE_VERSION
                || version == PARTITION_CHANGE_REPLICAS_VERSION));
    if !known {
        return Err(DecodeError::UnknownRecord { kind, version });
    }
    Ok(match kind {
        REGISTER_BROKER => {
            let id = BrokerId(r.i32()?);
            let incarnation_id = r.uuid()?;
            let epoch = BrokerEpoch(r.i64()?);
            let count = r.u16()? as usize;
            // Each endpoint takes at least 6 bytes: check before allocating for them.
            if count > r.0.len() / 6 {
                return Err(DecodeError::Truncated);
            }
            let mut endpoints = Vec::with_capacity(count);
            for _ in 0..count {
                endpoints.push(Endpoint {
                    name: r.string()?,
                    host: r.string()?,
                    port: r.u16()?,
                });
            }
            let fenced = r.bool()?;
            MetadataRecord::RegisterBroker(BrokerRegistration {
                id,
                incarnation_id,
                epoch,
                endpoints,
                fenced,
            })
        }
        TOPIC => MetadataRecord::Topic {
            name: r.string()?,
            id: r.uuid()?,
        },
        PARTITION => MetadataRecord::Partition {
            topic_id: r.uuid()?,
            partition: PartitionId(r.i32()?),
            state: PartitionState {
                replicas: r.brokers()?,
                isr: r.brokers()?,
                leader: BrokerId(r.i32()?),
                leader_epoch: LeaderEpoch(r.i32()?),
                partition_epoch: PartitionEpoch(r.i32()?),
                adding: match version {
                    PARTITION_MOVING_VERSION => r.brokers()?,
                    _ => Vec::new(),
                },
                removing: match version {
                    PARTITION_MOVING_VERSION => r.brokers()?,
                    _ => Vec::new(),
                },
            },
        },
        REMOVE_TOPIC => MetadataRecord::RemoveTopic { id: r.uuid()? },
        CONFIG => {
            let kind = r.u8()?;
            let name = r.string()?;
            let resource = match kind {
                RESOURCE_BROKER if name.is_empty() => ConfigResource::Brokers,
                RESOURCE_TOPIC => ConfigResource::Topic(name),
                _ => return Err(DecodeError::Malformed("config resource")),
            };
            MetadataRecord::Config {
                resource,
                key: r.string()?,
                value: r.opt_string()?,
            }
        }
        PRODUCER_IDS => MetadataRecord::ProducerIds {
            broker: BrokerId(r.i32()?),
            broker_epoch: BrokerEpoch(r.i64()?),
            next_producer_id: ProducerId(r.i64()?),
        },
        FENCE_BROKER => MetadataRecord::FenceBroker {
            id: BrokerId(r.i32()?),
            epoch: BrokerEpoch(r.i64()?),
        },
        UNFENCE_BROKER => MetadataRecord::UnfenceBroker {
            id: BrokerId(r.i32()?),
            epoch: BrokerEpoch(r.i64()?),
        },
        PARTITION_CHANGE => MetadataRecord::PartitionChange {
            topic_id: r.uuid()?,
            partition: PartitionId(r.i32()?),
            leader: match r.bool()? {
                true => Some(BrokerId(r.i32()?)),
                false => None,
            },
            isr: match r.bool()? {
                true => Some(r.brokers()?),
                false => None,
            },
            decided_at: match version {
                RECORD_VERSION => None,
                _ => Some(r.i32()?).filter(|&at| at >= 0).map(PartitionEpoch),
            },
            replicas: match version {
                PARTITION_CHANGE_REPLICAS_VERSION => Some(ReplicaSetChange {
                    replicas: r.brokers()?,
                    adding: r.brokers()?,
                    removing: r.brokers()?,
                }),
                _ => None,
            },
        },
        _ => return Err(DecodeError::UnknownRecord { kind, version }),
    })
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The body of the next frame (number `index`, for errors), CRC checked; none at the end.
    fn frame(&mut self, index: usize) -> Result<Option<Reader<'a>>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let len = self.u32()? as usize;
        if len > limits::METADATA_RECORD_MAX_BYTES {
            return Err(DecodeError::FrameTooLarge(len));
        }
        let crc = self.u32()?;
        let body = self.take(len)?;
        if crc32c::crc32c(body) != crc {
            return Err(DecodeError::BadCrc { frame: index });
        }
        Ok(Some(Reader(body)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed("flag")),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        self.array().map(Uuid::from_bytes)
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.u16()?;
        if len == ABSENT {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed("string"))?;
        Ok(Some(s.to_string()))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.opt_string()?
            .ok_or(DecodeError::Malformed("absent string"))
    }

    fn brokers(&mut self) -> Result<Vec<BrokerId>, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.0.len() / 4 {
            return Err(DecodeError::Truncated);
        }
        (0..count).map(|_| self.i32().map(BrokerId)).collect()
    }

    /// Nothing may follow the last field.
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<MetadataRecord> {
        let id = Uuid::new_v4();
        vec![
            MetadataRecord::RegisterBroker(BrokerRegistration {
                id: BrokerId(1),
                incarnation_id: Uuid::new_v4(),
                epoch: BrokerEpoch(4),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                }],
                fenced: false,
            }),
            MetadataRecord::Config {
                resource: ConfigResource::Brokers,
                key: "log.retention.ms".into(),
                value: Some("5000".into()),
            },
            MetadataRecord::Topic {
                name: "t".into(),
                id,
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                key: "cleanup.policy".into(),
                value: Some("".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                key: "segment.bytes".into(),
                value: None,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: PartitionId(0),
                state: PartitionState::online(vec![BrokerId(1), BrokerId(2)]),
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: PartitionId(0),
                leader: Some(BrokerId::NONE),
                isr: None,
                replicas: None,
                decided_at: None,
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: PartitionId(0),
                leader: None,
                isr: Some(vec![BrokerId(2)]),
                replicas: None,
                decided_at: Some(PartitionEpoch(1)),
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: PartitionId(0),
                leader: None,
                isr: None,
                replicas: Some(ReplicaSetChange {
                    replicas: vec![BrokerId(3), BrokerId(1), BrokerId(2)],
                    adding: vec![BrokerId(3)],
                    removing: vec![BrokerId(1), BrokerId(2)],
                }),
                decided_at: Some(PartitionEpoch(2)),
            },
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: PartitionId(0),
                leader: Some(BrokerId(3)),
                isr: Some(vec![BrokerId(3)]),
                replicas: Some(ReplicaSetChange {
                    replicas: vec![BrokerId(3)],
                    adding: Vec::new(),
                    removing: Vec::new(),
                }),
                decided_at: None,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: PartitionId(1),
                state: PartitionState {
                    adding: vec![BrokerId(2)],
                    removing: vec![BrokerId(1)],
                    ..PartitionState::online(vec![BrokerId(2), BrokerId(1)])
                },
            },
            MetadataRecord::FenceBroker {
                id: BrokerId(1),
                epoch: BrokerEpoch(4),
            },
            MetadataRecord::UnfenceBroker {
                id: BrokerId(1),
                epoch: BrokerEpoch(4),
            },
            MetadataRecord::RemoveTopic { id },
            MetadataRecord::ProducerIds {
                broker: BrokerId(1),
                broker_epoch: BrokerEpoch(4),
                next_producer_id: ProducerId(3000),
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let records = sample();
        let bytes = encode("cluster-1", &records);
        assert_eq!(decode(&bytes), Ok(("cluster-1".to_string(), records)));
    }

    #[test]
    fn truncated_or_flipped_files_are_refused_without_panicking() {
        let bytes = encode("cluster-1", &sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Any flipped bit fails: the magic, the version, a length, a CRC or a CRC'd body.
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(decode(&damaged).is_err(), "byte {i} bit {bit}");
            }
        }
        // A huge length is refused before anything is allocated for it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(&huge),
            Err(DecodeError::FrameTooLarge(u32::MAX as usize))
        );
    }

    #[test]
    fn a_body_claiming_more_brokers_than_it_holds_is_truncated() {
        let mut body = vec![PARTITION, RECORD_VERSION];
        body.extend_from_slice(Uuid::nil().as_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut header = Vec::new();
        put_str(&mut header, "c");
        header.extend_from_slice(&1u32.to_be_bytes());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        frame(&mut bytes, &header);
        frame(&mut bytes, &body);
        assert_eq!(decode(&bytes), Err(DecodeError::Truncated));
    }
}
