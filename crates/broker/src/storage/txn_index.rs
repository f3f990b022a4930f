//! A segment's aborted-transaction index (Kafka's `.txnindex`): one entry per ABORT marker in
//! the segment, saying which producer's records from `first_offset` to `last_offset` (the
//! marker) a read_committed consumer must drop. Fetch returns the entries overlapping what it
//! reads; recovery rebuilds them from the markers it scans.

use crate::types::{Offset, ProducerId};

/// Kafka's entry layout: version i16, producer id i64, first offset i64, last offset i64, last
/// stable offset i64.
const ENTRY_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    /// The producer's first record in the aborted transaction on this partition.
    pub first_offset: Offset,
    /// The ABORT marker's offset.
    pub last_offset: Offset,
    /// The partition's last stable offset once the marker was written.
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    /// Whether any of the aborted records lie in `[from, to)`.
    pub fn overlaps(&self, from: Offset, to: Offset) -> bool {
        self.last_offset >= from && self.first_offset < to
    }
}

pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.0.to_be_bytes());
        out.extend_from_slice(&e.first_offset.0.to_be_bytes());
        out.extend_from_slice(&e.last_offset.0.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.0.to_be_bytes());
    }
    out
}

/// Parses an index file; `None` when it is torn or holds an unknown version.
pub fn decode(bytes: &[u8]) -> Option<Vec<AbortedTxn>> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return None;
    }
    let i64_at = |b: &[u8], at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8"));
    bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|e| {
            (i16::from_be_bytes([e[0], e[1]]) == ENTRY_VERSION).then(|| AbortedTxn {
                producer_id: ProducerId(i64_at(e, 2)),
                first_offset: Offset(i64_at(e, 10)),
                last_offset: Offset(i64_at(e, 18)),
                last_stable_offset: Offset(i64_at(e, 26)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_files_are_refused() {
        let entries = vec![
            AbortedTxn {
                producer_id: ProducerId(4),
                first_offset: Offset(10),
                last_offset: Offset(20),
                last_stable_offset: Offset(21),
            },
            AbortedTxn {
                producer_id: ProducerId(5),
                first_offset: Offset(15),
                last_offset: Offset(30),
                last_stable_offset: Offset(31),
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 68);
        assert_eq!(decode(&bytes), Some(entries.clone()));
        assert_eq!(decode(&bytes[..50]), None);
        assert!(entries[0].overlaps(Offset(20), Offset(25)));
        assert!(!entries[0].overlaps(Offset(21), Offset(25)));
        assert!(!entries[1].overlaps(Offset(0), Offset(15)));
    }
}
