//! What the quorum's leader has heard from each broker: the latest heartbeat, at which
//! registration epoch, and whether the broker asked to shut down. The controller on the same
//! shard turns it into the set of live brokers (`live`) and fences the others.
//!
//! Silence fences a broker once its session is over; a refused connection fences it at once. The
//! leader's Raft traffic reaches every voter's controller listener several times a second, and a
//! broker process listens there for its whole life: a connection refused after the broker's last
//! heartbeat means the process that sent it is gone (kill -9, a crash), so waiting out its session
//! would only keep its partitions leaderless. A broker that is merely slow, paused or cut off
//! refuses nothing (its connections time out), and keeps its session. Fencing a live broker by
//! mistake would cost availability, never data: it is unfenced by its next heartbeat.
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
    /// When a connection to each broker's controller listener was last refused.
    refused: BTreeMap<BrokerId, Instant>,
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

    /// Notes that a connection to `broker`'s controller listener was refused at `now` (kept
    /// only while this member leads: a new leader starts over).
    pub fn refused(&mut self, broker: BrokerId, now: Instant) {
        let known = self.heard.contains_key(&broker) || self.refused.contains_key(&broker);
        if !self.is_leading() || (!known && self.refused.len() >= limits::CLUSTER_BROKERS_MAX) {
            return;
        }
        self.refused.insert(broker, now);
    }

    /// Whether this member leads (and since when).
    pub fn is_leading(&self) -> bool {
        self.leading_since.is_some()
    }

    /// This member has become the leader at `now`: whatever it heard before is stale.
    pub fn lead(&mut self, now: Instant) {
        if self.leading_since.is_none() {
            self.heard.clear();
            self.refused.clear();
            self.leading_since = Some(now);
        }
    }

    /// This member no longer leads.
    pub fn follow(&mut self) {
        self.heard.clear();
        self.refused.clear();
        self.leading_since = None;
    }

    /// The brokers alive at `now`, at their registered epochs: each heard at that epoch within
    /// `session`, not shutting down, and not refusing connections since; and, within `session`
    /// of this member taking over, each unfenced one not heard from yet that has refused no
    /// connection. Empty while this member follows.
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
        let refused_since =
            |id: BrokerId, at: Instant| self.refused.get(&id).is_some_and(|r| *r > at);
        brokers
            .values()
            .filter(|b| match self.heard.get(&b.id) {
                Some(heard) if heard.epoch == b.epoch => {
                    !heard.shutting_down && within(heard.at) && !refused_since(b.id, heard.at)
                }
                _ => !b.fenced && within(since) && !refused_since(b.id, since),
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
    fn a_broker_refusing_connections_after_its_last_heartbeat_is_not_live() {
        let session = Duration::from_secs(9);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let brokers: BTreeMap<_, _> = [broker(1, 0, false), broker(2, 0, false)]
            .into_iter()
            .collect();
        let mut heartbeats = Heartbeats::default();
        heartbeats.refused(BrokerId(2), at(0));
        heartbeats.lead(at(0));
        let ids =
            |live: BTreeMap<BrokerId, BrokerEpoch>| live.keys().map(|b| b.0).collect::<Vec<_>>();
        assert_eq!(
            ids(heartbeats.live(&brokers, at(10), session)),
            [1, 2],
            "a refusal heard while following is forgotten"
        );
        // Not heard from since the takeover, and refusing: gone, with no session to wait out.
        heartbeats.refused(BrokerId(2), at(100));
        assert_eq!(ids(heartbeats.live(&brokers, at(110), session)), [1]);
        // Its new process heartbeats (the refusal is older): live again.
        heartbeats.record(BrokerId(2), BrokerEpoch(0), false, at(500));
        assert_eq!(ids(heartbeats.live(&brokers, at(510), session)), [1, 2]);
        // Heard, then refusing: gone.
        heartbeats.record(BrokerId(1), BrokerEpoch(0), false, at(600));
        heartbeats.refused(BrokerId(1), at(700));
        assert_eq!(ids(heartbeats.live(&brokers, at(710), session)), [2]);
        heartbeats.follow();
        heartbeats.lead(at(800));
        assert_eq!(ids(heartbeats.live(&brokers, at(810), session)), [1, 2]);
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
