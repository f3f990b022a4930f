//! Broker liveness in a cluster: each broker heartbeats to the quorum's leader; the leader's
//! controller fences the brokers it stops hearing from and unfences those heard again, and moves
//! partition leadership to match (a fenced broker leads nothing); a stopping broker asks to be
//! fenced first (a controlled shutdown), so that clients learn at once where not to go.
//!
//! Kafka's model (KIP-631): `broker.heartbeat.interval.ms` (2 s) and `broker.session.timeout.ms`
//! (9 s) with Kafka's defaults, which a loaded machine's scheduling delays stay far inside; a
//! broker registers fenced and is unfenced by its first heartbeat at the new epoch. Deciding is
//! pure (`decide`); the loops run on shard 0, beside the quorum member and the controller.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::controller::{ControllerRequest, ControllerResponse};
use super::elections::{after_liveness, Service};
use super::Shard;
use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId, MetadataRecord};
use crate::metadata::MetadataImage;
use crate::quorum::codec::BrokerHeartbeat;
use crate::quorum::link::QuorumLink;
use crate::quorum::member::QuorumMember;
use crate::types::PartitionId;

/// The records that make `image` agree with `live` (the brokers alive, at their registered
/// epochs; a broker in controlled shutdown is not): fence the registered brokers not in it,
/// unfence the fenced ones in it, and change each partition as `elections::after_liveness`
/// decides: brokers out of service leave its ISR (never its last member), and a partition whose
/// leader is out of service (or registered again, and so needs a new term) gets a new one. A
/// broker back in service leads the leaderless partitions whose ISR it is in.
pub fn decide(
    image: &MetadataImage,
    live: &BTreeMap<BrokerId, BrokerEpoch>,
) -> Vec<MetadataRecord> {
    let is_live = |id: BrokerId| {
        image
            .brokers
            .get(&id)
            .is_some_and(|b| live.get(&id) == Some(&b.epoch))
    };
    let mut records = Vec::new();
    for broker in image.brokers.values() {
        match (broker.fenced, is_live(broker.id)) {
            (false, false) => records.push(MetadataRecord::FenceBroker {
                id: broker.id,
                epoch: broker.epoch,
            }),
            (true, true) => records.push(MetadataRecord::UnfenceBroker {
                id: broker.id,
                epoch: broker.epoch,
            }),
            _ => {}
        }
    }
    // A leader keeps its term only while it is unfenced and live.
    let keeps_term = |id: BrokerId| image.is_live(id) && is_live(id);
    for topic in image.topics.values() {
        let service = Service {
            in_service: &is_live,
            keeps_term: &keeps_term,
            unclean: topic.log_config.unclean_leader_election,
        };
        for (index, state) in topic.partition_states.iter().enumerate() {
            if let Some(change) = after_liveness(state, &service) {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: PartitionId(index as i32),
                    leader: change.leader,
                    isr: change.isr,
                    replicas: None,
                    decided_at: Some(state.partition_epoch),
                });
            }
        }
    }
    records
}

/// On the quorum's leader: every `BROKER_LIVENESS_CHECK_INTERVAL_MS`, asks the controller to
/// bring the metadata in line with the heartbeats heard. Does nothing on the other members.
pub async fn fence_silent_brokers(shard: Rc<Shard>, member: Rc<QuorumMember>) {
    let tick = Duration::from_millis(limits::BROKER_LIVENESS_CHECK_INTERVAL_MS);
    let controller = shard
        .controller
        .as_ref()
        .expect("shard 0 runs the controller");
    let mut last_rebalance = Instant::now();
    while !shard.is_stopping() {
        glommio::timer::sleep(tick).await;
        if member.heartbeats().borrow().is_leading()
            && last_rebalance.elapsed() >= shard.config.leader_imbalance_check_interval
        {
            last_rebalance = Instant::now();
            rebalance_leaders(&shard, controller).await;
        }
        let image = member.image();
        let live = member.heartbeats().borrow().live(
            &image.brokers,
            Instant::now(),
            shard.config.broker_session_timeout,
        );
        if !member.heartbeats().borrow().is_leading() {
            continue;
        }
        if decide(&image, &live).is_empty() {
            continue;
        }
        if let ControllerResponse::Broker(Err((_, why))) = controller
            .handle(&shard, ControllerRequest::ReconcileLiveness { live })
            .await
        {
            tracing::warn!("changing broker liveness: {why}");
        }
    }
}

/// Kafka's automatic leader rebalance (`auto.leader.rebalance.enable`): gives each broker whose
/// preferred partitions are led elsewhere beyond `leader.imbalance.per.broker.percentage` the
/// ones it can lead again (`elections::rebalance_candidates`), as preferred elections.
async fn rebalance_leaders(shard: &Rc<Shard>, controller: &super::controller::Controller) {
    if !shard.config.auto_leader_rebalance {
        return;
    }
    let percent = shard.config.leader_imbalance_per_broker_percentage;
    let Some(partitions) = super::elections::rebalance_candidates(&shard.image(), percent) else {
        return;
    };
    let request = ControllerRequest::ElectLeaders {
        kind: super::elections::ElectionType::Preferred,
        partitions: Some(partitions),
    };
    if let ControllerResponse::Elections(outcomes) = controller.handle(shard, request).await {
        let moved = outcomes
            .iter()
            .filter(|(_, _, code)| *code == crate::error::ErrorCode::None)
            .count();
        tracing::info!("leader rebalance: {moved} partitions led by their preferred replica again");
    }
}

/// Heartbeats this broker (registered at `epoch`) to the quorum's leader every
/// `broker.heartbeat.interval.ms` until it stops.
pub async fn heartbeat(shard: Rc<Shard>, member: Rc<QuorumLink>, epoch: BrokerEpoch) {
    let interval = shard.config.broker_heartbeat_interval;
    let beat = BrokerHeartbeat {
        broker: BrokerId(shard.config.node_id),
        epoch,
        shutting_down: false,
    };
    let mut failing = false;
    while !shard.is_stopping() {
        match member.heartbeat(beat, interval).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats reach the quorum's leader again");
                failing = false;
            }
            Ok(()) => {}
            Err(why) if !failing => {
                tracing::warn!("heartbeat not taken: {why}");
                failing = true;
            }
            Err(_) => {}
        }
        glommio::timer::sleep(interval).await;
    }
}

/// A controlled shutdown: tells the quorum's leader this broker is stopping and waits until the
/// metadata shows it fenced (it then leads no partition and clients look elsewhere), for at most
/// `CONTROLLED_SHUTDOWN_TIMEOUT_MS`.
pub async fn leave(shard: &Shard, member: &QuorumLink) {
    let me = BrokerId(shard.config.node_id);
    let Some(epoch) = member.image().brokers.get(&me).map(|b| b.epoch) else {
        return;
    };
    let beat = BrokerHeartbeat {
        broker: me,
        epoch,
        shutting_down: true,
    };
    let deadline = Instant::now() + Duration::from_millis(limits::CONTROLLED_SHUTDOWN_TIMEOUT_MS);
    let retry = Duration::from_millis(limits::QUORUM_RETRY_INTERVAL_MS);
    while Instant::now() < deadline {
        if !member.image().is_live(me) {
            tracing::info!("controlled shutdown: fenced, leading no partition");
            return;
        }
        if let Err(why) = member.heartbeat(beat, retry).await {
            tracing::debug!("controlled shutdown: {why}");
        }
        glommio::timer::sleep(retry).await;
    }
    tracing::warn!(
        "controlled shutdown: not fenced within {} ms; stopping anyway",
        limits::CONTROLLED_SHUTDOWN_TIMEOUT_MS
    );
}

/// On the shards other than 0 during a controlled shutdown: waits until the metadata shows this
/// broker fenced, for at most `CONTROLLED_SHUTDOWN_TIMEOUT_MS`.
pub async fn wait_until_fenced(shard: &Shard) {
    let me = BrokerId(shard.config.node_id);
    let deadline = Instant::now() + Duration::from_millis(limits::CONTROLLED_SHUTDOWN_TIMEOUT_MS);
    let poll = Duration::from_millis(limits::QUORUM_RETRY_INTERVAL_MS);
    while shard.image().is_live(me) && Instant::now() < deadline {
        glommio::timer::sleep(poll).await;
    }
}

/// In a cluster, a partition whose log failed a write (a full or failing disk) stops the broker,
/// as Kafka halts once its last log dir has failed: leadership of its partitions moves to
/// replicas that can still write, instead of staying on a broker that refuses every record until
/// someone restarts it. The stop is the usual controlled shutdown, but not a clean one (the next
/// start recovers the logs) and the exit status is non-zero, for the supervisor. A broker alone
/// keeps running and serving reads instead: no replica could take its partitions over.
///
/// So does the quorum `member`'s Raft core stopping for good (its metadata log failed a write):
/// the broker would go on with a frozen image, leading partitions the quorum gave to others.
pub async fn stop_on_storage_failure(
    shard: Rc<Shard>,
    member: Option<Rc<QuorumLink>>,
    stop: Arc<AtomicBool>,
) {
    let interval = Duration::from_millis(limits::STORAGE_FAILURE_CHECK_INTERVAL_MS);
    while !shard.is_stopping() && !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(interval).await;
        if let Some(why) = member.as_ref().and_then(|m| m.fatal()) {
            tracing::error!(
                "the metadata quorum member stopped: {why}; stopping the broker (the next start \
                 recovers the logs)"
            );
            stop.store(true, Ordering::Relaxed);
            return;
        }
        let failed = shard
            .partitions
            .borrow()
            .values()
            .find(|p| p.borrow().log_failed())
            .map(|p| p.borrow().tp.clone());
        if let Some(tp) = failed {
            tracing::error!(
                "{tp}: its log failed a write; stopping the broker so that its partitions move \
                 to replicas that can write (the next start recovers the logs)"
            );
            stop.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{
        BrokerRegistration, ConfigResource, LeaderEpoch, PartitionState,
    };
    use uuid::Uuid;

    fn image_with(brokers: &[(i32, bool)], partitions: &[Vec<i32>]) -> MetadataImage {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        for &(id, fenced) in brokers {
            image
                .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation_id: Uuid::nil(),
                    epoch: BrokerEpoch(10 + i64::from(id)),
                    endpoints: Vec::new(),
                    fenced,
                }))
                .unwrap();
        }
        let topic_id = Uuid::new_v4();
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id: topic_id,
            })
            .unwrap();
        for (p, replicas) in partitions.iter().enumerate() {
            image
                .apply(&MetadataRecord::Partition {
                    topic_id,
                    partition: PartitionId(p as i32),
                    state: PartitionState::online(replicas.iter().copied().map(BrokerId).collect()),
                })
                .unwrap();
        }
        image
    }

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    /// Replaces partition `p`'s ISR and leader (one change record: partition epoch 1).
    fn set_isr(image: &mut MetadataImage, p: i32, isr: &[i32], leader: i32) {
        let topic_id = image.topics["t"].id;
        image
            .apply(&MetadataRecord::PartitionChange {
                topic_id,
                partition: PartitionId(p),
                leader: Some(BrokerId(leader)),
                isr: Some(ids(isr)),
                replicas: None,
                decided_at: None,
            })
            .unwrap();
    }

    fn state(image: &MetadataImage, p: usize) -> PartitionState {
        image.topics["t"].partition_states[p].clone()
    }

    fn live(ids: &[i32]) -> BTreeMap<BrokerId, BrokerEpoch> {
        ids.iter()
            .map(|&id| (BrokerId(id), BrokerEpoch(10 + i64::from(id))))
            .collect()
    }

    fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for record in records {
            image.apply(record).unwrap();
        }
    }

    fn leaders(image: &MetadataImage) -> Vec<(i32, i32)> {
        image.topics["t"]
            .partition_states
            .iter()
            .map(|s| (s.leader.0, s.leader_epoch.0))
            .collect()
    }

    #[test]
    fn a_silent_broker_is_fenced_and_leads_nothing_until_it_returns() {
        let mut image = image_with(&[(1, false), (2, false)], &[vec![1], vec![2], vec![2, 1]]);
        assert!(decide(&image, &live(&[1, 2])).is_empty(), "all is well");

        let records = decide(&image, &live(&[1]));
        apply_all(&mut image, &records);
        assert!(!image.is_live(BrokerId(2)));
        // Its single-replica partition has no leader; the other moved to broker 1.
        assert_eq!(leaders(&image), [(1, 0), (-1, 1), (1, 1)]);
        assert_eq!(image.topics["t"].partition_states[1].isr, [BrokerId(2)]);
        assert!(decide(&image, &live(&[1])).is_empty(), "settled");

        let records = decide(&image, &live(&[1, 2]));
        apply_all(&mut image, &records);
        assert!(image.is_live(BrokerId(2)));
        // Broker 2 leads its own partition again; the moved one stays where it is.
        assert_eq!(leaders(&image), [(1, 0), (2, 2), (1, 1)]);
    }

    #[test]
    fn a_broker_alive_at_an_old_epoch_is_not_live() {
        let mut image = image_with(&[(1, false)], &[vec![1]]);
        let stale: BTreeMap<_, _> = [(BrokerId(1), BrokerEpoch(3))].into_iter().collect();
        let records = decide(&image, &stale);
        apply_all(&mut image, &records);
        assert!(!image.is_live(BrokerId(1)));
        assert_eq!(
            image.topics["t"].partition_states[0].leader_epoch,
            LeaderEpoch(1)
        );
        // A fenced broker not heard from stays fenced; records are only ever about changes.
        assert!(decide(&image, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_broker_that_registers_again_leads_under_a_new_term() {
        let mut image = image_with(&[(1, false)], &[vec![1]]);
        let again = MetadataRecord::RegisterBroker(BrokerRegistration {
            id: BrokerId(1),
            incarnation_id: Uuid::nil(),
            epoch: BrokerEpoch(12),
            endpoints: Vec::new(),
            fenced: true,
        });
        image.apply(&again).unwrap();
        let heard: BTreeMap<_, _> = [(BrokerId(1), BrokerEpoch(12))].into_iter().collect();
        let records = decide(&image, &heard);
        apply_all(&mut image, &records);
        assert!(image.is_live(BrokerId(1)));
        assert_eq!(leaders(&image), [(1, 1)]);
        assert!(decide(&image, &heard).is_empty());
    }

    #[test]
    fn a_follower_out_of_service_leaves_the_isr_without_a_new_leader_term() {
        let brokers = [(1, false), (2, false), (3, false)];
        let mut image = image_with(&brokers, &[vec![1, 2, 3]]);
        let records = decide(&image, &live(&[1, 2]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!(now.isr, ids(&[1, 2]));
        assert_eq!(now.leader, BrokerId(1));
        assert_eq!(now.leader_epoch, LeaderEpoch(0), "same term");
        assert_eq!(now.partition_epoch.0, 1, "a new partition epoch");
        assert!(decide(&image, &live(&[1, 2])).is_empty(), "settled");
        // Back in service, it does not rejoin the ISR by itself: its leader asks, once it has
        // caught up (AlterPartition).
        let records = decide(&image, &live(&[1, 2, 3]));
        assert!(
            !records
                .iter()
                .any(|r| matches!(r, MetadataRecord::PartitionChange { .. })),
            "{records:?}"
        );
    }

    #[test]
    fn the_next_leader_is_the_first_in_assignment_order_not_isr_order() {
        let brokers = [(1, false), (2, false), (3, false)];
        let mut image = image_with(&brokers, &[vec![3, 1, 2]]);
        set_isr(&mut image, 0, &[2, 1, 3], 3);
        let records = decide(&image, &live(&[1, 2]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!(
            (now.leader, now.leader_epoch),
            (BrokerId(1), LeaderEpoch(2))
        );
        assert_eq!(now.isr, ids(&[2, 1]));
        assert_eq!(now.partition_epoch.0, 2);
    }

    #[test]
    fn an_isr_gone_at_once_is_kept_whole_and_leads_again_when_a_member_returns() {
        let brokers = [(1, false), (2, false), (3, false)];
        let mut image = image_with(&brokers, &[vec![1, 2, 3]]);
        set_isr(&mut image, 0, &[1, 2], 1);
        let records = decide(&image, &live(&[3]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        // Broker 3 is live but out of sync: it may not lead (unclean elections are off).
        assert_eq!(now.leader, BrokerId::NONE);
        assert_eq!(now.isr, ids(&[1, 2]), "the ISR never empties");
        assert!(decide(&image, &live(&[3])).is_empty(), "settled");

        let records = decide(&image, &live(&[2, 3]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!(now.leader, BrokerId(2));
        assert_eq!(now.isr, ids(&[2]), "1 is still out of service");

        // One at a time, the last member stays.
        let records = decide(&image, &live(&[3]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!((now.leader, now.isr), (BrokerId::NONE, ids(&[2])));
    }

    #[test]
    fn unclean_elections_take_a_live_replica_out_of_sync_when_the_topic_allows_them() {
        let brokers = [(1, false), (2, false)];
        let mut image = image_with(&brokers, &[vec![1, 2]]);
        set_isr(&mut image, 0, &[1], 1);
        let records = decide(&image, &live(&[2]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!((now.leader, now.isr), (BrokerId::NONE, ids(&[1])));

        // Turned on while the partition is offline: the next check elects the live replica.
        image
            .apply(&MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                key: "unclean.leader.election.enable".into(),
                value: Some("true".into()),
            })
            .unwrap();
        let records = decide(&image, &live(&[2]));
        apply_all(&mut image, &records);
        let now = state(&image, 0);
        assert_eq!((now.leader, now.isr), (BrokerId(2), ids(&[2])));
        assert_eq!(now.leader_epoch, LeaderEpoch(3));
        assert!(decide(&image, &live(&[2])).is_empty(), "settled");
    }
}
