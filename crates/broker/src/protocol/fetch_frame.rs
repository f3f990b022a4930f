//! The Fetch response (v4-v12), framed by hand so record batches are never copied into an
//! encoder: the body is a list of chunks, framing bytes between record sets that go out as the
//! segment read left them: file ranges the socket writer sends with sendfile, or bytes. Small
//! in-memory record sets are copied into the framing (fewer writes is cheaper than one more
//! memcpy); larger ones go to the socket as they are.
//!
//! Fields this broker never sets are written at their defaults: no throttling, no fetch session,
//! no preferred read replica; the one tagged field written is a partition's `CurrentLeader`.

use bytes::{BufMut, BytesMut};

use crate::storage::payload::Payload;

/// In-memory record sets at least this large are sent as their own chunk instead of being copied.
pub const RECORDS_OWN_CHUNK_MIN_BYTES: usize = 16 * 1024;

/// First flexible (compact encodings, tagged fields) Fetch version.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

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
    /// Where the partition's leader is (leader id, leader epoch), for a partition refused as
    /// not led here: the `CurrentLeader` tagged field (v12+, KIP-951).
    pub current_leader: Option<(i32, i32)>,
}

/// One topic's part of the answer.
#[derive(Debug, Clone, Default)]
pub struct TopicAnswer {
    pub name: String,
    pub partitions: Vec<PartitionAnswer>,
}

/// A response body as chunks to write in order.
struct Chunks {
    done: Vec<Payload>,
    framing: BytesMut,
    flexible: bool,
}

impl Chunks {
    fn uvarint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.framing.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.framing.put_u8(value as u8);
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

    /// A partition's tagged fields holding only `CurrentLeader` (tag 1): its leader id and
    /// epoch and its own (empty) tagged fields.
    fn current_leader(&mut self, leader_id: i32, leader_epoch: i32) {
        const CURRENT_LEADER_TAG: u32 = 1;
        const CURRENT_LEADER_SIZE: u32 = 4 + 4 + 1;
        self.uvarint(1);
        self.uvarint(CURRENT_LEADER_TAG);
        self.uvarint(CURRENT_LEADER_SIZE);
        self.framing.put_i32(leader_id);
        self.framing.put_i32(leader_epoch);
        self.uvarint(0);
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

/// Encodes a Fetch response body at `version` (4..=12) as chunks.
pub fn encode_body(version: i16, topics: &[TopicAnswer]) -> Vec<Payload> {
    debug_assert!((4..=FIRST_FLEXIBLE_VERSION).contains(&version));
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
    out.array_len(topics.len());
    for topic in topics {
        out.string(&topic.name);
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
            match p.current_leader {
                Some((leader_id, leader_epoch)) if out.flexible => {
                    out.current_leader(leader_id, leader_epoch)
                }
                _ => out.no_tagged_fields(),
            }
        }
        out.no_tagged_fields();
    }
    out.no_tagged_fields();
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn answer(records_len: usize) -> Vec<TopicAnswer> {
        let partition = |i: i32, len: usize| PartitionAnswer {
            partition: i,
            error_code: if i == 1 { 1 } else { 0 },
            high_watermark: 100 + i as i64,
            last_stable_offset: 90 + i as i64,
            log_start_offset: 5,
            aborted: (0..i as i64).map(|n| (1000 + n, 7 * n)).collect(),
            records: Payload::Bytes(Bytes::from(vec![i as u8; len])),
            current_leader: (i == 1).then_some((3, 7)),
        };
        vec![
            TopicAnswer {
                name: "orders".into(),
                partitions: vec![partition(0, records_len), partition(1, 0)],
            },
            TopicAnswer {
                name: "t".repeat(200),
                partitions: vec![partition(2, 3)],
            },
        ]
    }

    #[test]
    fn every_version_decodes_as_kafka_encodes_it() {
        for records_len in [0, 10, RECORDS_OWN_CHUNK_MIN_BYTES + 1] {
            let topics = answer(records_len);
            for version in 4..=12 {
                let chunks = encode_body(version, &topics);
                let mut body = flatten(&chunks);
                let decoded = FetchResponse::decode(&mut body, version).unwrap();
                assert!(body.is_empty(), "v{version}: trailing bytes");
                assert_eq!(decoded.responses.len(), 2);
                for (t, want) in decoded.responses.iter().zip(&topics) {
                    assert_eq!(t.topic.0.as_str(), want.name);
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
                        let leader = (p.current_leader.leader_id.0, p.current_leader.leader_epoch);
                        match w.current_leader {
                            Some(hint) if version >= 12 => assert_eq!(leader, hint),
                            _ => assert_eq!(leader, (-1, -1)),
                        }
                        assert_eq!(
                            p.records.as_ref().unwrap(),
                            &flatten(std::slice::from_ref(&w.records))
                        );
                    }
                }
            }
        }
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
        let topics = answer(RECORDS_OWN_CHUNK_MIN_BYTES * 2);
        let chunks = encode_body(12, &topics);
        let Payload::Bytes(original) = &topics[0].partitions[0].records else {
            unreachable!()
        };
        assert!(
            chunks
                .iter()
                .any(|c| matches!(c, Payload::Bytes(b) if b.as_ptr() == original.as_ptr())),
            "the segment bytes go out as they are"
        );
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
        let mut topics = answer(0);
        topics[0].partitions[0].records = Payload::File(range);
        for version in [4, 12] {
            let chunks = encode_body(version, &topics);
            assert!(chunks
                .iter()
                .any(|c| matches!(c, Payload::File(r) if r.len == 50)));
            let decoded = FetchResponse::decode(&mut flatten(&chunks), version).unwrap();
            let records = decoded.responses[0].partitions[0].records.clone().unwrap();
            assert_eq!(records, Bytes::from(vec![7u8; 50]));
        }
    }
}
