//! The leader-epoch cache: for each leader epoch the log holds, the offset where that epoch's
//! records start, and its file, `leader-epoch-checkpoint`, in Kafka's text format.
//!
//! Replicas find where their logs diverge by comparing epochs: a follower asks the leader where
//! an epoch ends (`end_offset_for`, OffsetForLeaderEpoch and Fetch's DivergingEpoch), and cuts
//! its own log there. Entries rise strictly in both epoch and start offset; every change keeps it
//! so, the way Kafka's `LeaderEpochFileCache` does. The log (`storage::log`) owns the cache,
//! feeds it appends, truncations and log-start moves, and writes its file.
//!
//! Only non-negative epochs and offsets are kept: -1 means "none" on the wire and in batches
//! written without a leader epoch, and says nothing about where an epoch starts.

use std::fmt;

use crate::limits;
use crate::metadata::records::LeaderEpoch;
use crate::types::Offset;

/// The checkpoint format's version (Kafka's `CURRENT_VERSION` for this file).
const CHECKPOINT_VERSION: &str = "0";

/// One entry: `epoch`'s records start at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start: Offset,
}

/// A checkpoint file that does not decode: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointError(String);

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leader-epoch checkpoint: {}", self.0)
    }
}

impl std::error::Error for CheckpointError {}

fn bad(what: impl Into<String>) -> CheckpointError {
    CheckpointError(what.into())
}

/// A partition's epochs and where each starts, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`. Entries at or past it in either field are dropped
    /// first, so the cache keeps rising in both (an epoch that starts lower replaces a later
    /// history: that history was truncated). Nothing changes when `epoch` is the latest and
    /// `start` is not lower than where it starts, or when either is negative. Returns whether
    /// anything changed.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> bool {
        if epoch.0 < 0 || start.0 < 0 {
            return false;
        }
        if self
            .latest()
            .is_some_and(|last| last.epoch == epoch && last.start <= start)
        {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .rposition(|e| e.epoch < epoch && e.start < start)
            .map_or(0, |i| i + 1);
        if keep < self.entries.len() {
            tracing::debug!(
                "epoch {} from {start}: dropping {} later entries",
                epoch.0,
                self.entries.len() - keep
            );
        }
        self.entries.truncate(keep);
        self.entries.push(EpochEntry { epoch, start });
        true
    }

    /// Adds an entry for a batch appended or recovered at `base`, if its `epoch` is above every
    /// known one (a batch of an older or the same epoch says nothing new). Returns whether it
    /// did.
    pub fn note_batch(&mut self, epoch: LeaderEpoch, base: Offset) -> bool {
        if self.latest().is_some_and(|last| epoch <= last.epoch) {
            return false;
        }
        self.assign(epoch, base)
    }

    /// The log was cut at `end`: drops the entries of epochs that start at or after it. Returns
    /// whether anything changed.
    pub fn truncate_from_end(&mut self, end: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start`: drops the entries of epochs that start at or before it
    /// except the last of them, which now starts at `start` (its records below are gone).
    /// Returns whether anything changed.
    pub fn truncate_from_start(&mut self, start: Offset) -> bool {
        let at_or_below = self.entries.partition_point(|e| e.start <= start);
        if at_or_below == 0 {
            return false;
        }
        let last = self.entries[at_or_below - 1];
        let changed = at_or_below > 1 || last.start != start;
        self.entries.drain(..at_or_below - 1);
        self.entries[0].start = start;
        changed
    }

    /// Where `epoch` ends, as Kafka's `endOffsetFor` answers: the latest epoch ends at
    /// `log_end`; an older epoch this log holds ends where the next one starts; an epoch between
    /// two known ones is answered with the older of them (the epoch the log holds there) and
    /// where the newer starts; an epoch older than every entry ends where the first starts.
    /// `None` (Kafka's -1/-1, UNDEFINED) for a negative epoch, an epoch above every known one,
    /// and an empty cache.
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if epoch.0 < 0 {
            return None;
        }
        let latest = self.latest()?;
        if epoch == latest.epoch {
            return Some((epoch, log_end));
        }
        // The first entry of a newer epoch: where the asked one ends.
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let next = self.entries.get(higher)?;
        let answered = match higher.checked_sub(1) {
            Some(floor) => self.entries[floor].epoch,
            None => epoch,
        };
        Some((answered, next.start))
    }

    /// The checkpoint file's text: the version, the entry count, then "<epoch> <start>" per
    /// entry, one per line.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch.0, e.start.0));
        }
        text.into_bytes()
    }

    /// Reads a checkpoint file. Strict: the version must be 0, the count must match the lines
    /// that follow (at most `LEADER_EPOCH_CHECKPOINT_ENTRIES_MAX`), and the entries must be
    /// non-negative and rise in both fields, as every cache this module builds does.
    pub fn decode(bytes: &[u8]) -> Result<LeaderEpochCache, CheckpointError> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end with a newline"))?;
        let mut lines = body.split('\n');
        let version = lines.next().unwrap_or_default();
        if version != CHECKPOINT_VERSION {
            return Err(bad(format!("unknown version {version:?}")));
        }
        let count_line = lines.next().ok_or_else(|| bad("no entry count"))?;
        let count: usize = parse_number(count_line, "entry count")?;
        if count > limits::LEADER_EPOCH_CHECKPOINT_ENTRIES_MAX {
            return Err(bad(format!("{count} entries, over the limit")));
        }
        let mut cache = LeaderEpochCache {
            entries: Vec::with_capacity(count),
        };
        for line in lines {
            if cache.entries.len() == count {
                return Err(bad(format!("more than the {count} entries announced")));
            }
            let (epoch, start) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("entry {line:?} is not \"<epoch> <offset>\"")))?;
            let entry = EpochEntry {
                epoch: LeaderEpoch(parse_number(epoch, "epoch")?),
                start: Offset(parse_number(start, "start offset")?),
            };
            if cache
                .latest()
                .is_some_and(|last| last.epoch >= entry.epoch || last.start >= entry.start)
            {
                return Err(bad(format!("entry {line:?} does not rise")));
            }
            cache.entries.push(entry);
        }
        if cache.entries.len() != count {
            return Err(bad(format!(
                "{} entries, {count} announced",
                cache.entries.len()
            )));
        }
        Ok(cache)
    }
}

/// A non-negative decimal number, digits only (no sign, no spaces).
fn parse_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, CheckpointError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("{what} {text:?} is not a number")));
    }
    text.parse()
        .map_err(|_| bad(format!("{what} {text:?} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(epoch, start) in entries {
            assert!(c.assign(LeaderEpoch(epoch), Offset(start)));
        }
        c
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries().iter().map(|e| (e.epoch.0, e.start.0)).collect()
    }

    fn end_for(c: &LeaderEpochCache, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        c.end_offset_for(LeaderEpoch(epoch), Offset(log_end))
            .map(|(e, o)| (e.0, o.0))
    }

    #[test]
    fn assign_keeps_entries_rising_in_epoch_and_offset() {
        let mut c = cache(&[(2, 6), (3, 8)]);
        assert!(
            !c.assign(LeaderEpoch(3), Offset(9)),
            "same epoch, later start"
        );
        assert!(!c.assign(LeaderEpoch(3), Offset(8)), "the same entry");
        assert!(
            c.assign(LeaderEpoch(3), Offset(7)),
            "same epoch, lower start"
        );
        assert_eq!(pairs(&c), [(2, 6), (3, 7)]);
        assert!(
            c.assign(LeaderEpoch(4), Offset(7)),
            "a new epoch at the same start"
        );
        assert_eq!(pairs(&c), [(2, 6), (4, 7)]);
        assert!(
            c.assign(LeaderEpoch(3), Offset(20)),
            "a lower epoch drops the later ones"
        );
        assert_eq!(pairs(&c), [(2, 6), (3, 20)]);
        assert!(
            c.assign(LeaderEpoch(5), Offset(1)),
            "a lower start drops the later ones"
        );
        assert_eq!(pairs(&c), [(5, 1)]);
        assert!(!c.assign(LeaderEpoch(-1), Offset(30)));
        assert!(!c.assign(LeaderEpoch(6), Offset(-1)));
        assert_eq!(c.latest().map(|e| e.epoch), Some(LeaderEpoch(5)));
    }

    #[test]
    fn batches_add_an_entry_only_for_a_newer_epoch() {
        let mut c = LeaderEpochCache::default();
        assert!(c.note_batch(LeaderEpoch(0), Offset(0)));
        assert!(!c.note_batch(LeaderEpoch(0), Offset(5)));
        assert!(c.note_batch(LeaderEpoch(2), Offset(9)));
        assert!(
            !c.note_batch(LeaderEpoch(1), Offset(12)),
            "older: no entry, nothing dropped"
        );
        assert!(!c.note_batch(LeaderEpoch(-1), Offset(13)));
        assert_eq!(pairs(&c), [(0, 0), (2, 9)]);
    }

    #[test]
    fn truncating_from_the_end_drops_epochs_starting_at_or_past_it() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(!c.truncate_from_end(Offset(12)));
        assert!(c.truncate_from_end(Offset(11)));
        assert_eq!(pairs(&c), [(2, 6), (3, 8)]);
        assert!(c.truncate_from_end(Offset(7)));
        assert_eq!(pairs(&c), [(2, 6)]);
        assert!(c.truncate_from_end(Offset(0)));
        assert!(c.entries().is_empty());
        assert!(!c.truncate_from_end(Offset(0)));
    }

    #[test]
    fn truncating_from_the_start_moves_the_first_kept_epoch_up() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(!c.truncate_from_start(Offset(5)), "below every entry");
        assert!(!c.truncate_from_start(Offset(6)), "at the first entry");
        assert!(c.truncate_from_start(Offset(9)));
        assert_eq!(pairs(&c), [(3, 9), (4, 11)]);
        assert!(c.truncate_from_start(Offset(11)));
        assert_eq!(pairs(&c), [(4, 11)]);
        assert!(c.truncate_from_start(Offset(50)), "past the last entry");
        assert_eq!(pairs(&c), [(4, 50)]);
        let mut empty = LeaderEpochCache::default();
        assert!(!empty.truncate_from_start(Offset(3)));
    }

    /// The cases of Kafka's `endOffsetFor`, with the memo's rules: (-1,-1) is `None`.
    #[test]
    fn end_offset_for_answers_as_kafka_does() {
        let empty = LeaderEpochCache::default();
        assert_eq!(
            end_for(&empty, 0, 10),
            None,
            "an empty cache knows no epoch"
        );
        let c = cache(&[(2, 6), (3, 8), (5, 11)]);
        assert_eq!(end_for(&c, -1, 20), None, "UNDEFINED_EPOCH");
        assert_eq!(
            end_for(&c, 5, 20),
            Some((5, 20)),
            "the latest ends at the log end"
        );
        assert_eq!(end_for(&c, 6, 20), None, "above every known epoch");
        assert_eq!(
            end_for(&c, 1, 20),
            Some((1, 6)),
            "below the first: its start"
        );
        assert_eq!(end_for(&c, 2, 20), Some((2, 8)), "where the next starts");
        assert_eq!(end_for(&c, 3, 20), Some((3, 11)));
        assert_eq!(
            end_for(&c, 4, 20),
            Some((3, 11)),
            "a gap: the floor epoch, and where the next starts"
        );
    }

    #[test]
    fn the_checkpoint_text_is_kafkas() {
        let c = cache(&[(0, 0), (3, 120), (7, 4_000_000_000)]);
        let golden = "0\n3\n0 0\n3 120\n7 4000000000\n";
        assert_eq!(String::from_utf8(c.encode()).unwrap(), golden);
        assert_eq!(LeaderEpochCache::decode(golden.as_bytes()), Ok(c));
        let empty = LeaderEpochCache::default();
        assert_eq!(empty.encode(), b"0\n0\n");
        assert_eq!(LeaderEpochCache::decode(b"0\n0\n"), Ok(empty));
    }

    #[test]
    fn bad_checkpoints_are_errors() {
        let too_many = format!("0\n{}\n", limits::LEADER_EPOCH_CHECKPOINT_ENTRIES_MAX + 1);
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"0",
            b"0\n",
            b"1\n0\n",
            b"0\n1\n",
            b"0\n1\n2 5",
            b"0\n1\n2 5\n3 6\n",
            b"0\n2\n2 5\n",
            b"0\n1\n2  5\n",
            b"0\n1\n-2 5\n",
            b"0\n1\n2 -5\n",
            b"0\n1\n2 5 6\n",
            b"0\n1\n+2 5\n",
            b"0\n1\n2\n",
            b"0\n1\n99999999999 5\n",
            b"0\n2\n2 5\n2 6\n",
            b"0\n2\n2 5\n3 5\n",
            b"0\n2\n3 5\n2 6\n",
            b"0\n-1\n",
            b"0\n99999999999999999999999\n",
            b"0\r\n0\r\n",
            b"\xff\n0\n",
            too_many.as_bytes(),
        ];
        for case in cases {
            assert!(
                LeaderEpochCache::decode(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }
}
