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
use std::time::{Duration, Instant};

use super::controller::{ControllerRequest, ControllerResponse};
use super::Shard;
use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId, MetadataRecord};
use crate::metadata::MetadataImage;
use crate::quorum::codec::BrokerHeartbeat;
use crate::quorum::member::QuorumMember;
use crate::types::PartitionId;

/// The records that make `image` agree with `live` (the brokers alive, at their registered
/// epochs): fence the registered brokers not in it, unfence the fenced ones in it, and give each
/// partition whose leader is fenced or not live a new leadership term: under the first replica
/// in its ISR that is live (the same broker, when it has just registered again), else under no
/// one. The ISR is left as it is (with one replica it keeps its last member, as Kafka's KIP-841
/// keeps it, so that the broker leads again when it returns).
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
    let keeps = |id: BrokerId| image.is_live(id) && is_live(id);
    for topic in image.topics.values() {
        for (index, state) in topic.partition_states.iter().enumerate() {
            if keeps(state.leader) {
                continue;
            }
            let leader = state
                .replicas
                .iter()
                .copied()
                .find(|r| state.isr.contains(r) && is_live(*r))
                .unwrap_or(BrokerId::NONE);
            if leader != BrokerId::NONE || state.leader != BrokerId::NONE {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.id,
                    partition: PartitionId(index as i32),
                    leader: Some(leader),
                    isr: None,
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
    while !shard.is_stopping() {
        glommio::timer::sleep(tick).await;
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

/// Heartbeats this broker (registered at `epoch`) to the quorum's leader every
/// `broker.heartbeat.interval.ms` until it stops.
pub async fn heartbeat(shard: Rc<Shard>, member: Rc<QuorumMember>, epoch: BrokerEpoch) {
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
pub async fn leave(shard: &Shard, member: &QuorumMember) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{BrokerRegistration, LeaderEpoch, PartitionState};
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
}
