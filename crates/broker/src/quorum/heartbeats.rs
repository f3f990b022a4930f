//! What the quorum's leader has heard from each broker: the latest heartbeat, at which
//! registration epoch, and whether the broker asked to shut down. The controller on the same
//! shard turns it into the set of live brokers (`live`) and fences the others.
//!
//! Held only in memory and only by the leader, as Kafka's controller holds broker heartbeats: a
//! new leader has heard from no one yet, so for one session timeout after taking over it counts
//! every unfenced broker as alive, and fences only those that stay silent. Lives on the shard
//! that runs the Raft core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId, BrokerRegistration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Heard {
    epoch: BrokerEpoch,
    at: Instant,
    shutting_down: bool,
}

/// The leader's record of broker heartbeats.
#[derive(Debug, Default)]
pub struct Heartbeats {
    heard: BTreeMap<BrokerId, Heard>,
    /// When this member became the leader; `None` while it follows.
    leading_since: Option<Instant>,
}

impl Heartbeats {
    /// Notes a heartbeat (a shutdown, once asked for, is not taken back by a later heartbeat of
    /// the same registration: the broker's heartbeat loop may still be running). At most `CLUSTER_BROKERS_MAX` brokers are tracked: a heartbeat from a
    /// further one is dropped (and that broker, if real, stays fenced).
    pub fn record(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
        shutting_down: bool,
        now: Instant,
    ) -> bool {
        let known = self.heard.get(&broker);
        if known.is_none() && self.heard.len() >= limits::CLUSTER_BROKERS_MAX {
            return false;
        }
        // A shutdown, once asked for, holds for the rest of that registration.
        let shutting_down =
            shutting_down || known.is_some_and(|h| h.epoch == epoch && h.shutting_down);
        self.heard.insert(
            broker,
            Heard {
                epoch,
                at: now,
                shutting_down,
            },
        );
        true
    }

    /// Whether this member leads (and since when).
    pub fn is_leading(&self) -> bool {
        self.leading_since.is_some()
    }

    /// This member has become the leader at `now`: whatever it heard before is stale.
    pub fn lead(&mut self, now: Instant) {
        if self.leading_since.is_none() {
            self.heard.clear();
            self.leading_since = Some(now);
        }
    }

    /// This member no longer leads.
    pub fn follow(&mut self) {
        self.heard.clear();
        self.leading_since = None;
    }

    /// The brokers alive at `now`, at their registered epochs: each heard at that epoch within
    /// `session` and not shutting down; and, within `session` of this member taking over, each
    /// unfenced one not heard from yet. Empty while this member follows.
    pub fn live(
        &self,
        brokers: &BTreeMap<BrokerId, BrokerRegistration>,
        now: Instant,
        session: Duration,
    ) -> BTreeMap<BrokerId, BrokerEpoch> {
        let Some(since) = self.leading_since else {
            return BTreeMap::new();
        };
        let within = |at: Instant| now.saturating_duration_since(at) <= session;
        brokers
            .values()
            .filter(|b| match self.heard.get(&b.id) {
                Some(heard) if heard.epoch == b.epoch => !heard.shutting_down && within(heard.at),
                _ => !b.fenced && within(since),
            })
            .map(|b| (b.id, b.epoch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn broker(id: i32, epoch: i64, fenced: bool) -> (BrokerId, BrokerRegistration) {
        let registration = BrokerRegistration {
            id: BrokerId(id),
            incarnation_id: Uuid::nil(),
            epoch: BrokerEpoch(epoch),
            endpoints: Vec::new(),
            fenced,
        };
        (BrokerId(id), registration)
    }

    #[test]
    fn a_new_leader_gives_unfenced_brokers_one_session_to_be_heard() {
        let session = Duration::from_secs(9);
        let t0 = Instant::now();
        let brokers: BTreeMap<_, _> =
            [broker(1, 0, false), broker(2, 3, false), broker(3, 1, true)]
                .into_iter()
                .collect();
        let mut heartbeats = Heartbeats::default();
        assert!(
            heartbeats.live(&brokers, t0, session).is_empty(),
            "a follower"
        );
        heartbeats.lead(t0);
        let ids =
            |live: BTreeMap<BrokerId, BrokerEpoch>| live.keys().map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(ids(heartbeats.live(&brokers, t0, session)), [1, 2]);
        // Broker 2 heartbeats at an old epoch, broker 3 (fenced) at its own.
        heartbeats.record(BrokerId(2), BrokerEpoch(2), false, t0 + session);
        heartbeats.record(BrokerId(3), BrokerEpoch(1), false, t0 + session);
        let later = t0 + session + Duration::from_secs(1);
        assert_eq!(ids(heartbeats.live(&brokers, later, session)), [3]);
        heartbeats.record(BrokerId(1), BrokerEpoch(0), false, later);
        heartbeats.record(BrokerId(3), BrokerEpoch(1), true, later);
        heartbeats.record(BrokerId(3), BrokerEpoch(1), false, later);
        assert_eq!(ids(heartbeats.live(&brokers, later, session)), [1]);
        heartbeats.follow();
        assert!(heartbeats.live(&brokers, later, session).is_empty());
    }

    #[test]
    fn heartbeats_from_more_brokers_than_a_cluster_has_are_dropped() {
        let mut heartbeats = Heartbeats::default();
        let now = Instant::now();
        for id in 0..limits::CLUSTER_BROKERS_MAX as i32 {
            assert!(heartbeats.record(BrokerId(id), BrokerEpoch(0), false, now));
        }
        assert!(!heartbeats.record(BrokerId(-7), BrokerEpoch(0), false, now));
        assert!(heartbeats.record(BrokerId(0), BrokerEpoch(1), false, now));
    }
}
