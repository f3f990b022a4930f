//! The Fetch response (v4-v18), framed by hand so record batches are never copied into an
//! encoder: the body is a list of chunks, framing bytes between record sets that go out as the
//! segment read left them: file ranges the socket writer sends with sendfile, or bytes. Small
//! in-memory record sets are copied into the framing (fewer writes is cheaper than one more
//! memcpy); larger ones go to the socket as they are.
//!
//! Versions differ in framing only: v12 turns to compact encodings and tagged fields, v13 names
//! topics by id instead of by name, v16 adds the leaders' addresses (`NodeEndpoints`); v17 and
//! v18 change only the request. Fields this broker never sets are written at their defaults: no
//! throttling, no fetch session, no preferred read replica, no snapshot id. The tagged fields
//! written are a partition's `DivergingEpoch` and `CurrentLeader` and the top-level
//! `NodeEndpoints`, each only when it has something to say.

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use crate::protocol::handlers::fetch::VERSIONS;
use crate::protocol::handlers::leader_hints::LeaderEndpoint;
use crate::storage::payload::Payload;

/// In-memory record sets at least this large are sent as their own chunk instead of being copied.
pub const RECORDS_OWN_CHUNK_MIN_BYTES: usize = 16 * 1024;

/// First flexible (compact encodings, tagged fields) Fetch version.
const FIRST_FLEXIBLE_VERSION: i16 = 12;
/// First version that names topics by id (KIP-516).
pub const TOPIC_ID_VERSION: i16 = 13;
/// First version with the top-level `NodeEndpoints` tagged field (KIP-951).
const NODE_ENDPOINTS_VERSION: i16 = 16;

/// One partition's part of the answer.
#[derive(Debug, Clone, Default)]
pub struct PartitionAnswer {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Aborted transactions in range (read_committed): (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
    pub records: Payload,
    /// Where the fetcher's log parted from the leader's (epoch, end offset), for a fetch whose
    /// `LastFetchedEpoch` the leader's log does not hold up to its fetch offset: the
    /// `DivergingEpoch` tagged field (v12+).
    pub diverging_epoch: Option<(i32, i64)>,
    /// Where the partition's leader is (leader id, leader epoch), for a partition refused as
    /// not led here: the `CurrentLeader` tagged field (v12+, KIP-951).
    pub current_leader: Option<(i32, i32)>,
}

/// One topic's part of the answer: named by `name` up to v12 and by `topic_id` from v13.
#[derive(Debug, Clone, Default)]
pub struct TopicAnswer {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionAnswer>,
}

/// A whole answer.
#[derive(Debug, Clone, Default)]
pub struct FetchAnswer {
    pub topics: Vec<TopicAnswer>,
    /// The addresses of the leaders `current_leader` names (sent from v16).
    pub node_endpoints: Vec<LeaderEndpoint>,
}

/// A response body as chunks to write in order.
struct Chunks {
    done: Vec<Payload>,
    framing: BytesMut,
    flexible: bool,
}

fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

impl Chunks {
    fn uvarint(&mut self, value: u32) {
        put_uvarint(&mut self.framing, value);
    }

    fn array_len(&mut self, len: usize) {
        if self.flexible {
            self.uvarint(len as u32 + 1);
        } else {
            self.framing.put_i32(len as i32);
        }
    }

    fn string(&mut self, s: &str) {
        if self.flexible {
            self.uvarint(s.len() as u32 + 1);
        } else {
            self.framing.put_i16(s.len() as i16);
        }
        self.framing.put_slice(s.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }

    /// A partition's tagged fields, in tag order: `DivergingEpoch` (tag 0: epoch, end offset)
    /// and `CurrentLeader` (tag 1: leader id, leader epoch), each with its own (empty) tagged
    /// fields.
    fn partition_tagged_fields(&mut self, p: &PartitionAnswer) {
        const DIVERGING_EPOCH_TAG: u32 = 0;
        const DIVERGING_EPOCH_SIZE: u32 = 4 + 8 + 1;
        const CURRENT_LEADER_TAG: u32 = 1;
        const CURRENT_LEADER_SIZE: u32 = 4 + 4 + 1;
        let count = u32::from(p.diverging_epoch.is_some()) + u32::from(p.current_leader.is_some());
        self.uvarint(count);
        if let Some((epoch, end_offset)) = p.diverging_epoch {
            self.uvarint(DIVERGING_EPOCH_TAG);
            self.uvarint(DIVERGING_EPOCH_SIZE);
            self.framing.put_i32(epoch);
            self.framing.put_i64(end_offset);
            self.uvarint(0);
        }
        if let Some((leader_id, leader_epoch)) = p.current_leader {
            self.uvarint(CURRENT_LEADER_TAG);
            self.uvarint(CURRENT_LEADER_SIZE);
            self.framing.put_i32(leader_id);
            self.framing.put_i32(leader_epoch);
            self.uvarint(0);
        }
    }

    /// The response's tagged fields: `NodeEndpoints` (tag 0, v16+) when there are any.
    fn response_tagged_fields(&mut self, version: i16, endpoints: &[LeaderEndpoint]) {
        const NODE_ENDPOINTS_TAG: u32 = 0;
        if version < NODE_ENDPOINTS_VERSION || endpoints.is_empty() {
            self.no_tagged_fields();
            return;
        }
        // A tagged field is preceded by its size: encode it aside first.
        let mut field = BytesMut::new();
        put_uvarint(&mut field, endpoints.len() as u32 + 1);
        for e in endpoints {
            field.put_i32(e.id.0);
            put_uvarint(&mut field, e.host.len() as u32 + 1);
            field.put_slice(e.host.as_bytes());
            field.put_i32(e.port);
            put_uvarint(&mut field, 0); // rack: null
            put_uvarint(&mut field, 0); // no tagged fields
        }
        self.uvarint(1);
        self.uvarint(NODE_ENDPOINTS_TAG);
        self.uvarint(field.len() as u32);
        self.framing.put_slice(&field);
    }

    fn records(&mut self, records: &Payload) {
        if self.flexible {
            self.uvarint(records.len() as u32 + 1);
        } else {
            self.framing.put_i32(records.len() as i32);
        }
        match records {
            Payload::Bytes(bytes) if bytes.len() < RECORDS_OWN_CHUNK_MIN_BYTES => {
                self.framing.put_slice(bytes);
            }
            _ => {
                self.done
                    .push(Payload::Bytes(self.framing.split().freeze()));
                self.done.push(records.clone());
            }
        }
    }

    fn finish(mut self) -> Vec<Payload> {
        if !self.framing.is_empty() {
            self.done.push(Payload::Bytes(self.framing.freeze()));
        }
        self.done
    }
}

/// Encodes a Fetch response body at `version` (one of `fetch::VERSIONS`) as chunks.
pub fn encode_body(version: i16, answer: &FetchAnswer) -> Vec<Payload> {
    debug_assert!((VERSIONS.0..=VERSIONS.1).contains(&version));
    let mut out = Chunks {
        done: Vec::new(),
        framing: BytesMut::with_capacity(256),
        flexible: version >= FIRST_FLEXIBLE_VERSION,
    };
    out.framing.put_i32(0); // throttle_time_ms
    if version >= 7 {
        out.framing.put_i16(0); // error_code
        out.framing.put_i32(0); // session_id: no session, clients send full fetches
    }
    out.array_len(answer.topics.len());
    for topic in &answer.topics {
        if version >= TOPIC_ID_VERSION {
            out.framing.put_slice(topic.topic_id.as_bytes());
        } else {
            out.string(&topic.name);
        }
        out.array_len(topic.partitions.len());
        for p in &topic.partitions {
            out.framing.put_i32(p.partition);
            out.framing.put_i16(p.error_code);
            out.framing.put_i64(p.high_watermark);
            out.framing.put_i64(p.last_stable_offset);
            if version >= 5 {
                out.framing.put_i64(p.log_start_offset);
            }
            out.array_len(p.aborted.len());
            for (producer_id, first_offset) in &p.aborted {
                out.framing.put_i64(*producer_id);
                out.framing.put_i64(*first_offset);
                out.no_tagged_fields();
            }
            if version >= 11 {
                out.framing.put_i32(-1); // preferred_read_replica
            }
            out.records(&p.records);
            if out.flexible {
                out.partition_tagged_fields(p);
            }
        }
        out.no_tagged_fields();
    }
    out.response_tagged_fields(version, &answer.node_endpoints);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::BrokerId;
    use bytes::Bytes;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn answer(records_len: usize) -> FetchAnswer {
        let partition = |i: i32, len: usize| PartitionAnswer {
            partition: i,
            error_code: if i == 1 { 1 } else { 0 },
            high_watermark: 100 + i as i64,
            last_stable_offset: 90 + i as i64,
            log_start_offset: 5,
            aborted: (0..i as i64).map(|n| (1000 + n, 7 * n)).collect(),
            records: Payload::Bytes(Bytes::from(vec![i as u8; len])),
            diverging_epoch: (i != 0).then_some((4 + i, 50 + i as i64)),
            current_leader: (i == 1).then_some((3, 7)),
        };
        let endpoint = |id: i32, host: &str| LeaderEndpoint {
            id: BrokerId(id),
            host: StrBytes::from_string(host.to_string()),
            port: 9000 + id,
        };
        FetchAnswer {
            topics: vec![
                TopicAnswer {
                    name: "orders".into(),
                    topic_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
                    partitions: vec![partition(0, records_len), partition(1, 0)],
                },
                TopicAnswer {
                    name: "t".repeat(200),
                    topic_id: Uuid::from_u128(7),
                    partitions: vec![partition(2, 3)],
                },
            ],
            node_endpoints: vec![endpoint(3, "b3.example"), endpoint(4, &"h".repeat(300))],
        }
    }

    #[test]
    fn every_version_decodes_as_kafka_encodes_it() {
        for records_len in [0, 10, RECORDS_OWN_CHUNK_MIN_BYTES + 1] {
            let answer = answer(records_len);
            for version in VERSIONS.0..=VERSIONS.1 {
                let chunks = encode_body(version, &answer);
                let mut body = flatten(&chunks);
                let decoded = FetchResponse::decode(&mut body, version).unwrap();
                assert!(body.is_empty(), "v{version}: trailing bytes");
                assert_eq!(decoded.session_id, 0);
                assert_eq!(decoded.responses.len(), 2);
                for (t, want) in decoded.responses.iter().zip(&answer.topics) {
                    if version >= TOPIC_ID_VERSION {
                        assert_eq!(t.topic_id, want.topic_id, "v{version}");
                        assert!(t.topic.0.is_empty());
                    } else {
                        assert_eq!(t.topic.0.as_str(), want.name);
                    }
                    assert_eq!(t.partitions.len(), want.partitions.len());
                    for (p, w) in t.partitions.iter().zip(&want.partitions) {
                        assert_eq!(p.partition_index, w.partition);
                        assert_eq!(p.error_code, w.error_code);
                        assert_eq!(p.high_watermark, w.high_watermark);
                        assert_eq!(p.last_stable_offset, w.last_stable_offset);
                        if version >= 5 {
                            assert_eq!(p.log_start_offset, w.log_start_offset);
                        }
                        let aborted: Vec<(i64, i64)> = p
                            .aborted_transactions
                            .as_deref()
                            .unwrap()
                            .iter()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect();
                        assert_eq!(aborted, w.aborted);
                        let diverging = (p.diverging_epoch.epoch, p.diverging_epoch.end_offset);
                        match w.diverging_epoch {
                            Some(d) if version >= 12 => assert_eq!(diverging, d),
                            _ => assert_eq!(diverging, (-1, -1)),
                        }
                        let leader = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
                        match w.current_leader {
                            Some(hint) if version >= 12 => assert_eq!(leader, hint),
                            _ => assert_eq!(leader, (-1, -1)),
                        }
                        assert_eq!(p.preferred_read_replica.0, -1);
                        assert!(p.unknown_tagged_fields.is_empty());
                        assert_eq!(
                            p.records.as_ref().unwrap(),
                            &flatten(std::slice::from_ref(&w.records))
                        );
                    }
                }
                let endpoints: Vec<(i32, &str, i32, Option<&StrBytes>)> = decoded
                    .node_endpoints
                    .iter()
                    .map(|e| (e.node_id.0, e.host.as_str(), e.port, e.rack.as_ref()))
                    .collect();
                if version >= NODE_ENDPOINTS_VERSION {
                    let want: Vec<(i32, &str, i32, Option<&StrBytes>)> = answer
                        .node_endpoints
                        .iter()
                        .map(|e| (e.id.0, e.host.as_str(), e.port, None))
                        .collect();
                    assert_eq!(endpoints, want, "v{version}");
                } else {
                    assert!(endpoints.is_empty());
                }
                assert!(decoded.unknown_tagged_fields.is_empty());
            }
        }
    }

    #[test]
    fn no_endpoints_no_top_level_tagged_field() {
        let mut answer = answer(0);
        answer.node_endpoints.clear();
        let chunks = encode_body(VERSIONS.1, &answer);
        let body = flatten(&chunks);
        assert_eq!(body.last(), Some(&0), "an empty tagged-field section");
        let decoded = FetchResponse::decode(&mut body.clone(), VERSIONS.1).unwrap();
        assert!(decoded.node_endpoints.is_empty());
    }

    /// The bytes chunks stand for, file ranges read back.
    fn flatten(chunks: &[Payload]) -> Bytes {
        let mut all = Vec::new();
        for chunk in chunks {
            match chunk {
                Payload::Bytes(bytes) => all.extend_from_slice(bytes),
                Payload::File(range) => all.extend_from_slice(&range.read_head(range.len).unwrap()),
            }
        }
        Bytes::from(all)
    }

    #[test]
    fn large_record_sets_are_not_copied() {
        let answer = answer(RECORDS_OWN_CHUNK_MIN_BYTES * 2);
        for version in [12, VERSIONS.1] {
            let chunks = encode_body(version, &answer);
            let Payload::Bytes(original) = &answer.topics[0].partitions[0].records else {
                unreachable!()
            };
            assert!(
                chunks
                    .iter()
                    .any(|c| matches!(c, Payload::Bytes(b) if b.as_ptr() == original.as_ptr())),
                "v{version}: the segment bytes go out as they are"
            );
        }
    }

    #[test]
    fn file_ranges_go_out_as_their_own_chunk() {
        let dir = std::env::temp_dir().join(format!("sluice-frame-{}", std::process::id()));
        std::fs::write(&dir, vec![7u8; 100]).unwrap();
        let file = std::fs::File::open(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let range = crate::storage::payload::FileRange {
            file: std::sync::Arc::new(file.into()),
            offset: 10,
            len: 50,
        };
        let mut answer = answer(0);
        answer.topics[0].partitions[0].records = Payload::File(range);
        for version in [4, 12, 13, 16, VERSIONS.1] {
            let chunks = encode_body(version, &answer);
            assert!(chunks
                .iter()
                .any(|c| matches!(c, Payload::File(r) if r.len == 50)));
            let decoded = FetchResponse::decode(&mut flatten(&chunks), version).unwrap();
            let records = decoded.responses[0].partitions[0].records.clone().unwrap();
            assert_eq!(records, Bytes::from(vec![7u8; 50]));
        }
    }
}
