//! Sparse indexes of one segment, kept in memory and written beside the segment when it is
//! sealed or the broker stops cleanly: `.index` maps relative offsets to file positions and
//! `.timeindex` maps timestamps to relative offsets. Lookups are binary searches.

/// `.index`: one (relative offset, position) entry per `index.interval.bytes` of log.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

/// On-disk size of one `.index` entry: u32 relative offset, u32 position.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// On-disk size of one `.timeindex` entry: i64 timestamp, u32 relative offset.
pub const TIME_ENTRY_BYTES: usize = 12;

impl OffsetIndex {
    /// Adds an entry; entries must grow in both offset and position.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(
                relative_offset > last_offset && position > last_position,
                "index entries must increase"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        match self.entries.partition_point(|&(o, _)| o <= relative_offset) {
            0 => (0, 0),
            n => self.entries[n - 1],
        }
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.entries {
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file, or `None` if it is damaged (torn, out of order, or pointing past
    /// the end of a log of `log_bytes`): the caller then rebuilds it from the log.
    pub fn decode(bytes: &[u8], log_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let offset = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let position = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            if let Some(&(o, p)) = index.entries.last() {
                if offset <= o || position <= p {
                    return None;
                }
            }
            if position as u64 >= log_bytes {
                return None;
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

/// `.timeindex`: (largest timestamp so far, relative offset of the batch that reached it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if the timestamp moved forward (entries are strictly increasing).
    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp <= t || relative_offset <= o => {}
            _ => self.entries.push((timestamp, relative_offset)),
        }
    }

    /// The relative offset to start scanning at for the first record with timestamp >= `target`:
    /// every batch before the returned one has only smaller timestamps.
    pub fn lookup(&self, target: i64) -> u32 {
        match self.entries.partition_point(|&(t, _)| t < target) {
            0 => 0,
            n => self.entries[n - 1].1,
        }
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.entries {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let offset = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            if let Some(&(t, o)) = index.entries.last() {
                if timestamp <= t || offset <= o {
                    return None;
                }
            }
            index.entries.push((timestamp, offset));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_is_floor_search() {
        let mut index = OffsetIndex::default();
        index.push(10, 4096);
        index.push(20, 8192);
        assert_eq!(index.lookup(5), (0, 0));
        assert_eq!(index.lookup(10), (10, 4096));
        assert_eq!(index.lookup(19), (10, 4096));
        assert_eq!(index.lookup(1000), (20, 8192));
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let mut index = OffsetIndex::default();
        index.push(1, 100);
        index.push(2, 200);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 300), Some(index.clone()));
        assert_eq!(OffsetIndex::decode(&bytes[..7], 300), None);
        assert_eq!(
            OffsetIndex::decode(&bytes, 150),
            None,
            "position past the log end"
        );
        let mut swapped = bytes.clone();
        swapped.rotate_left(8);
        assert_eq!(OffsetIndex::decode(&swapped, 300), None);
    }

    #[test]
    fn time_lookup_starts_before_target() {
        let mut index = TimeIndex::default();
        index.push(100, 0);
        index.push(200, 5);
        index.push(150, 9); // not increasing: ignored
        index.push(300, 10);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(200), 0);
        assert_eq!(index.lookup(201), 5);
        assert_eq!(index.lookup(10_000), 10);
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index));
    }
}
