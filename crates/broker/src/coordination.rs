//! Which partitions of its internal topic a coordinator serves (the group coordinator over
//! `__consumer_offsets`, the transaction coordinator over `__transaction_state`).
//!
//! A coordinator serves a partition only while this broker leads it, and only from the state
//! that partition's log holds at the start of the leadership term: Kafka's onElection /
//! onResignation. Each time the metadata image is applied, `Served::follow` compares the
//! partitions this shard leads (with their leader epochs) against those it serves:
//! - one newly led, or led at a new leader epoch (someone else may have led it in between, even
//!   if this shard never saw that image), is *elected*: its old in-memory state is dropped and
//!   the coordinator replays the log, answering COORDINATOR_LOAD_IN_PROGRESS meanwhile;
//! - one no longer led is *resigned*: its in-memory state is dropped and requests for it get
//!   NOT_COORDINATOR, so clients look the coordinator up again.
//!
//! Work started under a term (a write, a marker retry, a timer's abort) carries its `Term` and
//! stops once that term is over, so a stale coordinator never writes for a partition someone
//! else now coordinates.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::error::ErrorCode;
use crate::metadata::records::LeaderEpoch;
use crate::partition::PartitionRef;
use crate::shard::Shard;
use crate::storage::fs::UringStorage;
use crate::types::{Offset, TopicPartition};

/// One partition served under one leadership term.
#[derive(Clone)]
pub struct Term {
    pub index: i32,
    pub epoch: LeaderEpoch,
    pub partition: PartitionRef<UringStorage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Serving {
    epoch: LeaderEpoch,
    /// `None` while the log is being replayed; then the offset the log was last rewritten
    /// from (compaction's starting point).
    loaded: Option<Offset>,
}

/// What applying an image changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Partitions to (re)load, at the leader epoch of their new term.
    pub elected: Vec<(i32, LeaderEpoch)>,
    /// Partitions whose state must be dropped.
    pub resigned: Vec<i32>,
}

/// The partitions a coordinator serves, each at the leader epoch it was elected at.
#[derive(Default)]
pub struct Served {
    partitions: RefCell<HashMap<i32, Serving>>,
}

impl Served {
    /// Follows leadership: `led` is every partition this shard leads now, with its leader epoch.
    /// Elected partitions are marked loading; resigned ones are forgotten.
    pub fn follow(&self, led: &BTreeMap<i32, LeaderEpoch>) -> Changes {
        let mut served = self.partitions.borrow_mut();
        let mut changes = Changes::default();
        served.retain(|p, serving| {
            let kept = led.get(p) == Some(&serving.epoch);
            if !led.contains_key(p) {
                changes.resigned.push(*p);
            }
            kept
        });
        for (&p, &epoch) in led {
            if let std::collections::hash_map::Entry::Vacant(slot) = served.entry(p) {
                slot.insert(Serving {
                    epoch,
                    loaded: None,
                });
                changes.elected.push((p, epoch));
            }
        }
        changes.resigned.sort_unstable();
        changes
    }

    /// The replay of `p` for the term at `epoch` finished: it is served from now on, unless
    /// that term ended meanwhile (false: the replayed state is stale and must be dropped).
    pub fn loaded(&self, p: i32, epoch: LeaderEpoch, rewritten_at: Offset) -> bool {
        match self.partitions.borrow_mut().get_mut(&p) {
            Some(serving) if serving.epoch == epoch => {
                serving.loaded = Some(rewritten_at);
                true
            }
            _ => false,
        }
    }

    /// The current term of `p`: NOT_COORDINATOR when this shard does not lead it,
    /// COORDINATOR_LOAD_IN_PROGRESS while its log is being replayed.
    pub fn epoch_of(&self, p: i32) -> Result<LeaderEpoch, ErrorCode> {
        match self.partitions.borrow().get(&p) {
            None => Err(ErrorCode::NotCoordinator),
            Some(Serving { loaded: None, .. }) => Err(ErrorCode::CoordinatorLoadInProgress),
            Some(serving) => Ok(serving.epoch),
        }
    }

    /// Whether `term` is still the term `p` is served under.
    pub fn is_current(&self, term: &Term) -> bool {
        self.epoch_of(term.index) == Ok(term.epoch)
    }

    /// Compaction moved `p`'s log start to `cut` during the term at `epoch`.
    pub fn compacted(&self, p: i32, epoch: LeaderEpoch, cut: Offset) {
        if let Some(serving) = self.partitions.borrow_mut().get_mut(&p) {
            if serving.epoch == epoch && serving.loaded.is_some() {
                serving.loaded = Some(cut);
            }
        }
    }

    /// The loaded partitions: (partition, epoch, offset last rewritten from).
    pub fn loaded_partitions(&self) -> Vec<(i32, LeaderEpoch, Offset)> {
        let mut all: Vec<_> = self
            .partitions
            .borrow()
            .iter()
            .filter_map(|(p, s)| s.loaded.map(|at| (*p, s.epoch, at)))
            .collect();
        all.sort_unstable_by_key(|(p, _, _)| *p);
        all
    }
}

/// The partitions of `topic` this shard owns and this broker leads (by the role the partition
/// took from the current image), with their leader epochs.
pub fn led_partitions(shard: &Shard, topic: &str) -> BTreeMap<i32, LeaderEpoch> {
    let Some(count) = shard.image().topic(topic).map(|t| t.partitions) else {
        return BTreeMap::new();
    };
    (0..count)
        .filter_map(|p| {
            let tp = TopicPartition::new(topic, p);
            if shard.owner_of(&tp) != shard.id {
                return None;
            }
            let partition = shard.led_partition(&tp, -1).ok()?;
            let epoch = partition.borrow().leader_epoch();
            Some((p, epoch))
        })
        .collect()
}

/// The term `p` of `topic` is served under now, with its partition; the error a coordinator
/// request gets otherwise.
pub fn current_term(
    served: &Served,
    shard: &Shard,
    topic: &str,
    p: i32,
) -> Result<Term, ErrorCode> {
    let epoch = served.epoch_of(p)?;
    let partition = shard
        .partition(&TopicPartition::new(topic, p))
        .map_err(|_| ErrorCode::NotCoordinator)?;
    Ok(Term {
        index: p,
        epoch,
        partition,
    })
}

/// The code a coordinator answers when writing to its partition failed, as Kafka maps it
/// (GroupMetadataManager / TransactionStateManager): a lost leadership sends the client to look
/// for the new coordinator; too few replicas is a wait; anything else is the coordinator's own
/// failure. (Sluice has no request timeout here: a write waits for the in-sync replicas.)
pub fn write_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::NotLeaderOrFollower
        | ErrorCode::KafkaStorageError
        | ErrorCode::NotCoordinator => ErrorCode::NotCoordinator,
        ErrorCode::UnknownTopicOrPartition
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        ErrorCode::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
        _ => ErrorCode::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(pairs: &[(i32, i32)]) -> BTreeMap<i32, LeaderEpoch> {
        pairs.iter().map(|&(p, e)| (p, LeaderEpoch(e))).collect()
    }

    #[test]
    fn a_partition_is_loading_from_its_election_until_its_replay_finishes() {
        let served = Served::default();
        assert_eq!(served.epoch_of(0), Err(ErrorCode::NotCoordinator));
        let changes = served.follow(&led(&[(0, 3), (2, 1)]));
        assert_eq!(
            changes.elected,
            vec![(0, LeaderEpoch(3)), (2, LeaderEpoch(1))]
        );
        assert!(changes.resigned.is_empty());
        assert_eq!(
            served.epoch_of(0),
            Err(ErrorCode::CoordinatorLoadInProgress)
        );
        assert!(served.loaded(0, LeaderEpoch(3), Offset(7)));
        assert_eq!(served.epoch_of(0), Ok(LeaderEpoch(3)));
        assert_eq!(
            served.loaded_partitions(),
            vec![(0, LeaderEpoch(3), Offset(7))]
        );
        assert_eq!(
            served.follow(&led(&[(0, 3), (2, 1)])),
            Changes::default(),
            "the same image changes nothing"
        );
    }

    #[test]
    fn losing_the_lead_resigns_and_a_new_epoch_reloads() {
        let served = Served::default();
        served.follow(&led(&[(0, 3), (1, 0)]));
        assert!(served.loaded(0, LeaderEpoch(3), Offset(0)));
        assert!(served.loaded(1, LeaderEpoch(0), Offset(0)));

        let changes = served.follow(&led(&[(0, 5)]));
        assert_eq!(changes.elected, vec![(0, LeaderEpoch(5))]);
        assert_eq!(changes.resigned, vec![1]);
        assert_eq!(served.epoch_of(1), Err(ErrorCode::NotCoordinator));
        assert_eq!(
            served.epoch_of(0),
            Err(ErrorCode::CoordinatorLoadInProgress),
            "a new term starts from the log again"
        );
    }

    #[test]
    fn a_replay_that_outlived_its_term_is_stale() {
        let served = Served::default();
        served.follow(&led(&[(4, 1)]));
        served.follow(&led(&[]));
        assert!(
            !served.loaded(4, LeaderEpoch(1), Offset(0)),
            "resigned meanwhile"
        );
        served.follow(&led(&[(4, 2)]));
        assert!(
            !served.loaded(4, LeaderEpoch(1), Offset(0)),
            "elected again since"
        );
        assert!(served.loaded(4, LeaderEpoch(2), Offset(0)));
    }

    #[test]
    fn write_failures_map_to_coordinator_codes() {
        assert_eq!(
            write_error(ErrorCode::NotLeaderOrFollower),
            ErrorCode::NotCoordinator
        );
        assert_eq!(
            write_error(ErrorCode::NotEnoughReplicas),
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            write_error(ErrorCode::MessageTooLarge),
            ErrorCode::UnknownServerError
        );
    }
}
