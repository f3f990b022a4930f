//! A partition's part in replication, on the shard that owns it: the role the metadata image
//! gives this broker (leader or follower, at which leader epoch), and what each role moves.
//! - As leader it keeps a `ReplicaSet`: follower fetches report how far each follower's disk
//!   goes, and the high watermark moves to the least durable end over the leader and the in-sync
//!   followers, only while the ISR holds at least `min.insync.replicas`; acks=all waits for it.
//! - As follower it appends what its fetcher brings (`append_replicated`) and takes the leader's
//!   high watermark, capped at its own durable end (it may move back after a truncation).
//!
//! On one replica the set has no followers and the high watermark is the durable end, as before
//! replication.

use super::*;
use crate::metadata::records::{BrokerEpoch, BrokerId, PartitionEpoch, PartitionState};
use crate::replication::replica_set::{IsrRequest, ReplicaSet};

impl<S: Storage> Partition<S> {
    /// Takes the role `state` gives broker `me`. A new leader epoch (or leadership just taken)
    /// starts a new term: followers' progress is forgotten and the epoch starts at the log end.
    /// Leadership lost fails the acks=all waiters: a new leader answers for those records now.
    pub fn take_role(&mut self, me: BrokerId, state: &PartitionState, now_ms: i64) {
        if !self.role_taken && state.replicas.len() > 1 {
            // What this replica recovered may hold records its leader never committed: the high
            // watermark starts at the log start and rises as the leader or the followers report.
            self.high_watermark = self.log.log_start();
        }
        self.role_taken = true;
        if state.leader != me {
            if self.leading {
                self.fail_committed_waiters(ErrorCode::NotLeaderOrFollower);
            }
            self.replicas = None;
            self.leading = false;
            self.leader_epoch = state.leader_epoch;
            return;
        }
        let new_term = !self.leading || state.leader_epoch != self.leader_epoch;
        match self.replicas.as_mut() {
            Some(set) if !new_term => {
                set.update(&state.replicas, &state.isr, state.partition_epoch);
            }
            _ => {
                // The new epoch starts at the log end before any record of it is written
                // (Kafka's makeLeader): followers holding records of an older epoch past this
                // end learn from it where to cut. An older epoch never rewrites the cache (the
                // image cannot be behind the log's batches).
                let end = self.log.end();
                let latest = self.log.latest_epoch();
                if latest.is_none_or(|latest| state.leader_epoch > latest) {
                    self.log.assign_epoch_start(state.leader_epoch, end);
                }
                self.replicas = Some(ReplicaSet::new(
                    me,
                    &state.replicas,
                    &state.isr,
                    state.partition_epoch,
                    end,
                    now_ms,
                ));
            }
        }
        self.leading = true;
        self.leader_epoch = state.leader_epoch;
        self.advance_committed();
    }

    /// Refuses an acks=all produce before it is appended when the ISR is below
    /// `min.insync.replicas` (Kafka's NOT_ENOUGH_REPLICAS).
    pub fn check_min_insync(&self) -> Result<(), ErrorCode> {
        match &self.replicas {
            Some(set) if set.isr().len() < self.min_isr(set) => Err(ErrorCode::NotEnoughReplicas),
            _ => Ok(()),
        }
    }

    /// `min.insync.replicas`, never more than the partition's replicas (Kafka's effective min
    /// ISR).
    fn min_isr(&self, set: &ReplicaSet) -> usize {
        let configured = self.log.config().min_insync_replicas;
        configured.effective(set.replica_count())
    }

    /// A follower fetched from `fetch_offset`: its disk holds everything below. Moves the high
    /// watermark if it can, and returns the ISR expansion to ask for if the follower qualifies.
    pub fn on_follower_fetch(
        &mut self,
        follower: BrokerId,
        broker_epoch: Option<BrokerEpoch>,
        fetch_offset: Offset,
        now_ms: i64,
    ) -> Option<IsrRequest> {
        let leader_end = self.log.end();
        let set = self.replicas.as_mut()?;
        if set.on_fetch(follower, broker_epoch, fetch_offset, leader_end, now_ms) {
            self.advance_committed();
        }
        let hw = self.high_watermark;
        let set = self.replicas.as_mut()?;
        let request = set.expansion(hw, now_ms)?;
        set.begin(&request);
        Some(request)
    }

    /// The in-sync followers that fell behind for longer than `max_lag_ms`, as an ISR shrink to
    /// ask for (none while another change is on its way).
    pub fn isr_shrink(&mut self, now_ms: i64, max_lag_ms: i64) -> Option<IsrRequest> {
        let leader_end = self.log.end();
        let set = self.replicas.as_mut()?;
        let request = set.shrink(leader_end, now_ms, max_lag_ms)?;
        set.begin(&request);
        Some(request)
    }

    /// The controller answered an ISR change: `committed` is the state it took (`None`: refused,
    /// ask again later). A shrink below `min.insync.replicas` fails the acks=all waiters, which
    /// the smaller ISR can no longer satisfy (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub fn settle_isr(&mut self, committed: Option<(Vec<BrokerId>, PartitionEpoch)>, now_ms: i64) {
        let Some(set) = self.replicas.as_mut() else {
            return;
        };
        set.settle(committed, now_ms);
        self.advance_committed();
        if self.check_min_insync().is_err() {
            self.fail_committed_waiters(ErrorCode::NotEnoughReplicasAfterAppend);
        }
    }

    /// The leader's high watermark as this follower fetched it, capped at its own durable end.
    pub fn follow_high_watermark(&mut self, leader_high_watermark: Offset) {
        if self.leading {
            return;
        }
        let hw = leader_high_watermark
            .min(self.log.durable_end())
            .max(self.log.log_start());
        // A follower's high watermark may go back (after a truncation, or a new leader that
        // knows less yet); nothing waits on it here: consumers are served by the leader.
        self.high_watermark = hw;
    }

    /// As leader: moves the high watermark as far as the in-sync replicas' disks allow.
    pub(super) fn advance_committed(&mut self) {
        let Some(set) = &self.replicas else {
            return;
        };
        let durable_end = self.log.durable_end();
        if let Some(hw) = set.high_watermark(durable_end, self.min_isr(set)) {
            if hw > self.high_watermark {
                self.advance_high_watermark(hw);
            }
        }
    }

    /// Fails every acknowledgement that waits for the high watermark.
    fn fail_committed_waiters(&mut self, code: ErrorCode) {
        let (failed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ack_waiters)
            .into_iter()
            .partition(|w| w.level == AckLevel::HighWatermark);
        self.ack_waiters = kept;
        for w in failed {
            let _ = w.tx.send(Err(code));
        }
    }

    /// Whether this broker leads the partition, as the image last said.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// The latest leader epoch in this replica's log (`None`: empty history).
    pub fn latest_epoch(&self) -> Option<crate::metadata::records::LeaderEpoch> {
        self.log.latest_epoch()
    }
}
