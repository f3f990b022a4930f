//! The leader's view of its followers, on the shard that owns the partition: how far each has
//! fetched, when it was last caught up, which replicas are in sync, and the ISR change on its way
//! to the controller. Pure state moved by follower fetches and the clock; the partition asks it
//! where the high watermark may go and whom to add to or drop from the ISR.
//!
//! Kafka's rules (its `Partition` and `Replica`), with Sluice's stricter one: a follower fetches
//! again only once what it fetched is on its disk, so the offset it fetches from is its durable
//! end, and the high watermark (a minimum over in-sync replicas and the leader's own durable end)
//! counts only fsynced copies.

use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId, PartitionEpoch};
use crate::types::Offset;

/// What the leader knows of one follower, from its fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Follower {
    id: BrokerId,
    /// The registration epoch its last fetch carried (`None`: it has not fetched under this
    /// leadership, or sent none). Sent with an ISR expansion, so the controller can refuse a
    /// broker that restarted since.
    broker_epoch: Option<BrokerEpoch>,
    /// Its log end as its last fetch reported it: everything below is on its disk. Unknown
    /// (`None`) until it fetches under this leadership.
    end: Option<Offset>,
    /// When it last held everything the leader had (Kafka's lastCaughtUpTimeMs).
    last_caught_up_ms: i64,
    /// The leader's log end and the time at its previous fetch: a follower that reaches the end
    /// the leader had at its previous fetch was caught up then, even if the leader moved on.
    last_fetch_leader_end: Offset,
    last_fetch_ms: i64,
}

/// An ISR change sent to the controller and not yet answered by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    /// The ISR asked for.
    pub target: Vec<BrokerId>,
    /// The partition epoch it was asked at.
    pub at_epoch: PartitionEpoch,
}

/// One ISR change to ask the controller for: the new ISR, each member with the broker epoch it
/// fetched under (`None`: skip the check; the leader itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrRequest {
    pub isr: Vec<(BrokerId, Option<BrokerEpoch>)>,
    pub partition_epoch: PartitionEpoch,
}

/// The replicas of a partition this broker leads.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    leader: BrokerId,
    /// The assignment, in its order.
    replicas: Vec<BrokerId>,
    /// The ISR the metadata image commits.
    isr: Vec<BrokerId>,
    partition_epoch: PartitionEpoch,
    pending: Option<PendingIsr>,
    /// After a refused change nothing is asked before this time (ms), so a follower fetching
    /// in a tight loop does not turn into a request loop against the controller.
    retry_after_ms: i64,
    followers: Vec<Follower>,
    /// The leader's log end when its term began: a follower joins the ISR only once it has
    /// reached the current term (Kafka's leaderEpochStartOffset).
    term_start: Offset,
}

impl ReplicaSet {
    /// A new leadership term: every follower's progress is unknown again; those in the ISR count
    /// as caught up now, so that they are not dropped before they could fetch.
    pub fn new(
        leader: BrokerId,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        partition_epoch: PartitionEpoch,
        term_start: Offset,
        now_ms: i64,
    ) -> ReplicaSet {
        let followers = replicas
            .iter()
            .filter(|&&r| r != leader)
            .map(|&id| Follower {
                id,
                broker_epoch: None,
                end: None,
                last_caught_up_ms: if isr.contains(&id) { now_ms } else { 0 },
                last_fetch_leader_end: Offset(0),
                last_fetch_ms: 0,
            })
            .collect();
        ReplicaSet {
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            partition_epoch,
            pending: None,
            retry_after_ms: 0,
            followers,
            term_start,
        }
    }

    /// The image moved the partition within the same term (an ISR change, ours or not): the
    /// committed ISR is the image's, and a pending change asked at an older epoch is settled.
    pub fn update(&mut self, replicas: &[BrokerId], isr: &[BrokerId], epoch: PartitionEpoch) {
        if epoch < self.partition_epoch {
            // A stale image: Kafka ignores a delta with a lower partition epoch too.
            return;
        }
        self.isr = isr.to_vec();
        if self.pending.as_ref().is_some_and(|p| p.at_epoch < epoch) {
            self.pending = None;
        }
        self.partition_epoch = epoch;
        if replicas != self.replicas.as_slice() {
            self.followers.retain(|f| replicas.contains(&f.id));
            for &id in replicas {
                if id != self.leader && !self.followers.iter().any(|f| f.id == id) {
                    self.followers.push(Follower {
                        id,
                        broker_epoch: None,
                        end: None,
                        last_caught_up_ms: 0,
                        last_fetch_leader_end: Offset(0),
                        last_fetch_ms: 0,
                    });
                }
            }
            self.replicas = replicas.to_vec();
        }
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    #[cfg(test)]
    pub fn pending(&self) -> Option<&PendingIsr> {
        self.pending.as_ref()
    }

    /// The committed ISR plus a member being added: the high watermark waits for it, and a
    /// shrink on its way does not count until committed (Kafka's maximal ISR, KIP-497).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending {
            for &id in &pending.target {
                if !isr.contains(&id) {
                    isr.push(id);
                }
            }
        }
        isr
    }

    /// A follower fetched from `fetch_offset` (its durable end) while the leader's log ended at
    /// `leader_end`. Returns whether its end moved (the high watermark may move too).
    pub fn on_fetch(
        &mut self,
        id: BrokerId,
        broker_epoch: Option<BrokerEpoch>,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: i64,
    ) -> bool {
        let Some(f) = self.followers.iter_mut().find(|f| f.id == id) else {
            return false;
        };
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.last_fetch_leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_end = leader_end;
        f.last_fetch_ms = now_ms;
        f.broker_epoch = broker_epoch;
        let moved = f.end != Some(fetch_offset);
        f.end = Some(fetch_offset);
        moved
    }

    /// Where the high watermark may move: the least durable end over the leader (its own
    /// `durable_end`) and every follower in the maximal ISR. `None` while the ISR is below
    /// `min_isr` (the effective `min.insync.replicas`: the high watermark stays, as in Kafka since
    /// KIP-966), or while an in-sync follower has not fetched under this term.
    pub fn high_watermark(&self, durable_end: Offset, min_isr: usize) -> Option<Offset> {
        if self.isr.len() < min_isr {
            return None;
        }
        let mut hw = durable_end;
        for id in self.maximal_isr() {
            if id == self.leader {
                continue;
            }
            let end = self.followers.iter().find(|f| f.id == id)?.end?;
            hw = hw.min(end);
        }
        Some(hw)
    }

    /// A follower that may join the ISR: out of it, holding everything up to the high watermark
    /// and something of the current term, and fetching under a known broker epoch. Only one ISR
    /// change is asked at a time.
    pub fn expansion(&self, high_watermark: Offset, now_ms: i64) -> Option<IsrRequest> {
        if !self.may_ask(now_ms) {
            return None;
        }
        let joining = self.followers.iter().find(|f| {
            !self.isr.contains(&f.id)
                && f.end
                    .is_some_and(|end| end >= high_watermark && end >= self.term_start)
        })?;
        let mut isr = self.isr.clone();
        isr.push(joining.id);
        Some(self.request_for(isr))
    }

    /// In-sync followers that have neither reached the leader's end nor been caught up within
    /// `max_lag_ms` (`replica.lag.time.max.ms`): stuck or too slow. The request drops them all.
    pub fn shrink(&self, leader_end: Offset, now_ms: i64, max_lag_ms: i64) -> Option<IsrRequest> {
        if !self.may_ask(now_ms) {
            return None;
        }
        let lagging: Vec<BrokerId> = self
            .followers
            .iter()
            .filter(|f| self.isr.contains(&f.id))
            .filter(|f| f.end != Some(leader_end) && now_ms - f.last_caught_up_ms > max_lag_ms)
            .map(|f| f.id)
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr = self
            .isr
            .iter()
            .copied()
            .filter(|id| !lagging.contains(id))
            .collect();
        Some(self.request_for(isr))
    }

    fn may_ask(&self, now_ms: i64) -> bool {
        self.pending.is_none() && now_ms >= self.retry_after_ms
    }

    fn request_for(&self, isr: Vec<BrokerId>) -> IsrRequest {
        let isr = isr
            .into_iter()
            .map(|id| {
                let epoch = self
                    .followers
                    .iter()
                    .find(|f| f.id == id)
                    .and_then(|f| f.broker_epoch);
                (id, epoch)
            })
            .collect();
        IsrRequest {
            isr,
            partition_epoch: self.partition_epoch,
        }
    }

    /// The request is on its way: nothing else is asked until it is settled.
    pub fn begin(&mut self, request: &IsrRequest) {
        assert!(self.pending.is_none(), "one ISR change at a time");
        self.pending = Some(PendingIsr {
            target: request.isr.iter().map(|(id, _)| *id).collect(),
            at_epoch: request.partition_epoch,
        });
    }

    /// The controller answered: with the committed state (which the image brings too), or a
    /// refusal (`None`), after which nothing is asked for `ISR_CHANGE_RETRY_BACKOFF_MS`: a stale
    /// epoch is fixed by the next image, an ineligible follower by its next registration. An
    /// accepted change sets the ISR now, so the high watermark need not wait for the image.
    pub fn settle(&mut self, committed: Option<(Vec<BrokerId>, PartitionEpoch)>, now_ms: i64) {
        self.pending = None;
        match committed {
            Some((isr, epoch)) if epoch >= self.partition_epoch => {
                self.isr = isr;
                self.partition_epoch = epoch;
            }
            Some(_) => {}
            None => self.retry_after_ms = now_ms + limits::ISR_CHANGE_RETRY_BACKOFF_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG_MS: i64 = 30_000;

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().map(|&i| BrokerId(i)).collect()
    }

    fn three_in_sync() -> ReplicaSet {
        ReplicaSet::new(
            BrokerId(1),
            &ids(&[1, 2, 3]),
            &ids(&[1, 2, 3]),
            PartitionEpoch(0),
            Offset(0),
            0,
        )
    }

    fn fetch(set: &mut ReplicaSet, id: i32, offset: i64, leader_end: i64, now: i64) {
        set.on_fetch(
            BrokerId(id),
            Some(BrokerEpoch(10)),
            Offset(offset),
            Offset(leader_end),
            now,
        );
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower_and_the_leaders_disk() {
        let mut set = three_in_sync();
        assert_eq!(
            set.high_watermark(Offset(5), 1),
            None,
            "no follower has fetched"
        );
        fetch(&mut set, 2, 5, 8, 1);
        assert_eq!(set.high_watermark(Offset(5), 1), None, "broker 3 has not");
        fetch(&mut set, 3, 7, 8, 1);
        assert_eq!(set.high_watermark(Offset(5), 1), Some(Offset(5)));
        assert_eq!(set.high_watermark(Offset(8), 1), Some(Offset(5)));
    }

    #[test]
    fn below_min_insync_replicas_the_high_watermark_stays() {
        let set = ReplicaSet::new(
            BrokerId(1),
            &ids(&[1, 2, 3]),
            &ids(&[1]),
            PartitionEpoch(3),
            Offset(0),
            0,
        );
        assert_eq!(set.high_watermark(Offset(9), 2), None);
        assert_eq!(set.high_watermark(Offset(9), 1), Some(Offset(9)));
    }

    #[test]
    fn a_follower_at_the_high_watermark_and_in_this_term_joins_one_at_a_time() {
        let mut set = ReplicaSet::new(
            BrokerId(1),
            &ids(&[1, 2, 3]),
            &ids(&[1]),
            PartitionEpoch(3),
            Offset(4),
            0,
        );
        fetch(&mut set, 2, 3, 10, 1);
        assert_eq!(set.expansion(Offset(3), 1), None, "not yet in this term");
        fetch(&mut set, 2, 6, 10, 2);
        fetch(&mut set, 3, 8, 10, 2);
        assert_eq!(set.expansion(Offset(8), 2).map(|r| r.isr.len()), Some(2));
        let request = set.expansion(Offset(6), 2).expect("broker 2 qualifies");
        assert_eq!(
            request.isr,
            vec![(BrokerId(1), None), (BrokerId(2), Some(BrokerEpoch(10)))]
        );
        set.begin(&request);
        assert_eq!(set.expansion(Offset(6), 2), None, "one change in flight");
        assert_eq!(set.maximal_isr(), ids(&[1, 2]));
        // The high watermark waits for the joining member already.
        assert_eq!(set.high_watermark(Offset(10), 1), Some(Offset(6)));
        set.settle(Some((ids(&[1, 2]), PartitionEpoch(4))), 3);
        assert_eq!(set.isr(), ids(&[1, 2]));
    }

    #[test]
    fn a_refused_change_is_asked_again_only_after_the_backoff() {
        let mut set = ReplicaSet::new(
            BrokerId(1),
            &ids(&[1, 2]),
            &ids(&[1]),
            PartitionEpoch(3),
            Offset(0),
            0,
        );
        fetch(&mut set, 2, 5, 5, 10);
        let request = set.expansion(Offset(5), 10).expect("broker 2 qualifies");
        set.begin(&request);
        set.settle(None, 10);
        assert_eq!(set.pending(), None);
        assert_eq!(set.expansion(Offset(5), 11), None);
        let later = 10 + limits::ISR_CHANGE_RETRY_BACKOFF_MS;
        assert_eq!(set.expansion(Offset(5), later), Some(request));
    }

    #[test]
    fn a_stuck_or_slow_follower_is_dropped_after_the_lag_time() {
        let mut set = three_in_sync();
        fetch(&mut set, 2, 10, 10, 1_000);
        fetch(&mut set, 3, 4, 10, 1_000);
        assert_eq!(
            set.shrink(Offset(10), LAG_MS, LAG_MS),
            None,
            "within the lag"
        );
        // Broker 2 keeps up with a moving leader: each fetch reaches the previous end.
        fetch(&mut set, 2, 10, 20, LAG_MS);
        fetch(&mut set, 2, 20, 30, LAG_MS + 2_000);
        let request = set
            .shrink(Offset(30), LAG_MS + 2_000, LAG_MS)
            .expect("broker 3 is stuck");
        assert_eq!(
            request.isr.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids(&[1, 2])
        );
        set.begin(&request);
        // A shrink counts only once committed: the HW still waits for broker 3.
        assert_eq!(set.high_watermark(Offset(30), 1), Some(Offset(4)));
        set.update(&ids(&[1, 2, 3]), &ids(&[1, 2]), PartitionEpoch(1));
        assert_eq!(set.pending(), None);
        assert_eq!(set.high_watermark(Offset(30), 1), Some(Offset(20)));
    }

    #[test]
    fn a_follower_that_never_fetched_is_dropped_too() {
        let set = three_in_sync();
        let request = set.shrink(Offset(0), LAG_MS + 1, LAG_MS);
        assert_eq!(request.map(|r| r.isr.len()), Some(1));
    }

    #[test]
    fn a_stale_image_changes_nothing() {
        let mut set = three_in_sync();
        set.update(&ids(&[1, 2, 3]), &ids(&[1, 2]), PartitionEpoch(2));
        set.update(&ids(&[1, 2, 3]), &ids(&[1, 2, 3]), PartitionEpoch(1));
        assert_eq!(set.isr(), ids(&[1, 2]));
    }
}
