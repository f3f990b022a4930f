//! Leader elections, decided by pure functions on the controller (shard 0) as Kafka's
//! ReplicationControlManager and PartitionChangeBuilder decide them: on request (ElectLeaders,
//! `kafka-leader-election.sh`: `decide`), and when brokers leave or return to service
//! (`after_liveness`, which `liveness::decide` runs over every partition).
//!
//! A preferred election gives a partition its first replica as leader when that replica is live
//! and in the ISR; an unclean one gives a leaderless partition any live replica (the ISR first),
//! shrinking the ISR to it. Either starts a new leader epoch. With every partition asked for
//! (no list), partitions that need no election are left out of the answer, as Kafka leaves them.
//! Wherever several replicas could lead, the first in assignment order does (Kafka's order, so
//! that leadership returns to preferred replicas first).

use std::collections::BTreeMap;

use crate::error::ErrorCode;
use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState};
use crate::metadata::MetadataImage;
use crate::types::PartitionId;

/// A partition's change of leader and ISR: a new term under `leader` (`None`: the same term),
/// and the new ISR (`None`: unchanged). The fields of a `MetadataRecord::PartitionChange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: Option<BrokerId>,
    pub isr: Option<Vec<BrokerId>>,
}

/// How liveness elections see the brokers, at one decision.
pub struct Service<'a> {
    /// Whether a broker can be in sync and lead: registered, heard from at its registration
    /// epoch, not shutting down (it may still be fenced in the image, about to be unfenced).
    pub in_service: &'a dyn Fn(BrokerId) -> bool,
    /// Whether a leader may carry on its current term: in service and already unfenced (a
    /// broker that registered again must lead under a new term).
    pub keeps_term: &'a dyn Fn(BrokerId) -> bool,
    /// `unclean.leader.election.enable` for the partition's topic.
    pub unclean: bool,
}

/// The change `state` needs once the brokers out of service are gone (none: it needs none).
///
/// The ISR loses every member out of service but never its last one (KIP-841 without eligible
/// leader replicas: a partition whose whole ISR is gone keeps it, so that the replicas holding
/// every committed record lead again when they return). The leader keeps its term while it can;
/// otherwise the first replica in assignment order that is in the new ISR and in service leads.
/// With none, an unclean election (if enabled) takes the first replica in service and makes it
/// the whole ISR; else the partition is left without a leader.
pub fn after_liveness(state: &PartitionState, service: &Service<'_>) -> Option<LeaderAndIsr> {
    let in_service = service.in_service;
    let mut isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|b| in_service(*b))
        .collect();
    if isr.is_empty() {
        isr = state.isr.clone();
    }
    let keeps = state.leader != BrokerId::NONE
        && isr.contains(&state.leader)
        && (service.keeps_term)(state.leader);
    // The leader of a new term, if the partition needs one.
    let new_term = if keeps {
        None
    } else if let Some(&next) = state
        .replicas
        .iter()
        .find(|r| isr.contains(r) && in_service(**r))
    {
        Some(next)
    } else if let Some(&any) = state
        .replicas
        .iter()
        .find(|r| service.unclean && in_service(**r))
    {
        isr = vec![any];
        Some(any)
    } else {
        // Offline; a term without a leader only if it had one.
        (state.leader != BrokerId::NONE).then_some(BrokerId::NONE)
    };
    let change = LeaderAndIsr {
        leader: new_term,
        isr: (isr != state.isr).then_some(isr),
    };
    (change.leader.is_some() || change.isr.is_some()).then_some(change)
}

/// The partitions whose preferred replica should lead again, for the automatic rebalance
/// (`auto.leader.rebalance.enable`, Kafka's controller task of the same name): for every broker
/// whose share of its preferred partitions led by others is above `imbalance_percent`
/// (`leader.imbalance.per.broker.percentage`), the ones it can take back now (live and in the
/// ISR). `None`: no broker is that imbalanced.
pub fn rebalance_candidates(
    image: &MetadataImage,
    imbalance_percent: u32,
) -> Option<BTreeMap<String, Vec<i32>>> {
    let mut preferred: BTreeMap<BrokerId, Preferred<'_>> = BTreeMap::new();
    for topic in image.topics.values() {
        for (index, state) in topic.partition_states.iter().enumerate() {
            let Some(&first) = state.replicas.first() else {
                continue;
            };
            let entry = preferred.entry(first).or_default();
            entry.total += 1;
            if state.leader != first {
                entry.led_elsewhere.push((&topic.name, index as i32));
            }
        }
    }
    let mut candidates: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (
        broker,
        Preferred {
            total,
            led_elsewhere: not_led,
        },
    ) in preferred
    {
        let over = not_led.len() * 100 > total * imbalance_percent as usize;
        if !over || !image.is_live(broker) {
            continue;
        }
        for (topic, partition) in not_led {
            let in_sync = image
                .topic(topic)
                .and_then(|t| t.partition_states.get(partition as usize))
                .is_some_and(|s| s.isr.contains(&broker));
            if in_sync {
                candidates
                    .entry(topic.to_string())
                    .or_default()
                    .push(partition);
            }
        }
    }
    (!candidates.is_empty()).then_some(candidates)
}

/// The partitions that prefer one broker (list it first): how many, and which others lead.
#[derive(Default)]
struct Preferred<'a> {
    total: usize,
    led_elsewhere: Vec<(&'a str, i32)>,
}

/// Kafka's election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

/// One partition's outcome: its topic, index and error (NONE: elected).
pub type ElectionOutcome = (String, i32, ErrorCode);

/// The records that carry out the elections asked for (`None`: every partition), and each
/// partition's outcome.
pub fn decide(
    image: &MetadataImage,
    kind: ElectionType,
    asked: Option<&BTreeMap<String, Vec<i32>>>,
) -> (Vec<MetadataRecord>, Vec<ElectionOutcome>) {
    let wanted: Vec<(String, i32)> = match asked {
        Some(asked) => asked
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(|p| (topic.clone(), *p)))
            .collect(),
        None => image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
            .collect(),
    };
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (topic, partition) in wanted {
        let outcome = elect(image, kind, &topic, partition);
        match outcome {
            Ok(record) => {
                records.push(record);
                outcomes.push((topic, partition, ErrorCode::None));
            }
            Err(ErrorCode::ElectionNotNeeded) if asked.is_none() => {}
            Err(code) => outcomes.push((topic, partition, code)),
        }
    }
    (records, outcomes)
}

fn elect(
    image: &MetadataImage,
    kind: ElectionType,
    topic: &str,
    partition: i32,
) -> Result<MetadataRecord, ErrorCode> {
    let meta = image
        .topic(topic)
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    let state = usize::try_from(partition)
        .ok()
        .and_then(|p| meta.partition_states.get(p))
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    let change = |leader: BrokerId, isr: Option<Vec<BrokerId>>| MetadataRecord::PartitionChange {
        topic_id: meta.id,
        partition: PartitionId(partition),
        leader: Some(leader),
        isr,
        replicas: None,
        decided_at: Some(state.partition_epoch),
    };
    match kind {
        ElectionType::Preferred => {
            let preferred = state.replicas[0];
            if state.leader == preferred {
                Err(ErrorCode::ElectionNotNeeded)
            } else if image.is_live(preferred) && state.isr.contains(&preferred) {
                Ok(change(preferred, None))
            } else {
                Err(ErrorCode::PreferredLeaderNotAvailable)
            }
        }
        ElectionType::Unclean => {
            if state.leader != BrokerId::NONE {
                return Err(ErrorCode::ElectionNotNeeded);
            }
            let live = |r: &&BrokerId| image.is_live(**r);
            let in_sync = |r: &&BrokerId| state.isr.contains(r) && image.is_live(**r);
            if let Some(&in_sync) = state.replicas.iter().find(in_sync) {
                return Ok(change(in_sync, None));
            }
            match state.replicas.iter().find(live) {
                Some(&any) => Ok(change(any, Some(vec![any]))),
                None => Err(ErrorCode::EligibleLeadersNotAvailable),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{BrokerEpoch, BrokerRegistration, PartitionState};
    use uuid::Uuid;

    /// Brokers 1 and 2, 2 fenced. Topic t: p0 on [1] led by 1; p1 on [2] without a leader; p2
    /// on [2, 1] led by 1 (2 is preferred but fenced); p3 on [1, 2] led by 1, only 1 in sync.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        for (id, fenced) in [(1, false), (2, true)] {
            image
                .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation_id: Uuid::nil(),
                    epoch: BrokerEpoch(0),
                    endpoints: Vec::new(),
                    fenced,
                }))
                .unwrap();
        }
        let id = Uuid::new_v4();
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id,
            })
            .unwrap();
        let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
        let states = [
            PartitionState::online(ids(&[1])),
            PartitionState {
                leader: BrokerId::NONE,
                ..PartitionState::online(ids(&[2]))
            },
            PartitionState {
                leader: BrokerId(1),
                ..PartitionState::online(ids(&[2, 1]))
            },
            PartitionState {
                isr: ids(&[1]),
                leader: BrokerId(1),
                ..PartitionState::online(ids(&[1, 2]))
            },
        ];
        for (p, state) in states.into_iter().enumerate() {
            image
                .apply(&MetadataRecord::Partition {
                    topic_id: id,
                    partition: PartitionId(p as i32),
                    state,
                })
                .unwrap();
        }
        image
    }

    #[test]
    fn the_rebalance_gives_an_imbalanced_live_broker_back_what_it_prefers_and_can_lead() {
        let mut image = image();
        assert_eq!(rebalance_candidates(&image, 10), None, "broker 2 is fenced");
        image
            .apply(&MetadataRecord::UnfenceBroker {
                id: BrokerId(2),
                epoch: BrokerEpoch(0),
            })
            .unwrap();
        // Broker 2 prefers p1 (leaderless) and p2 (led by 1), in sync in both: 2 of 2 led by
        // others. Broker 1 leads both partitions it prefers.
        let expected: BTreeMap<String, Vec<i32>> = [("t".to_string(), vec![1, 2])].into();
        assert_eq!(rebalance_candidates(&image, 10), Some(expected));
        assert_eq!(rebalance_candidates(&image, 100), None, "not above 100%");
    }

    fn codes(outcomes: &[ElectionOutcome]) -> Vec<(i32, ErrorCode)> {
        outcomes.iter().map(|(_, p, code)| (*p, *code)).collect()
    }

    #[test]
    fn preferred_elections_answer_as_kafka_does() {
        let image = image();
        let asked: BTreeMap<String, Vec<i32>> = [
            ("t".to_string(), vec![0, 1, 2, 9]),
            ("gone".to_string(), vec![0]),
        ]
        .into_iter()
        .collect();
        let (records, outcomes) = decide(&image, ElectionType::Preferred, Some(&asked));
        assert!(records.is_empty());
        assert_eq!(
            codes(&outcomes),
            [
                (0, ErrorCode::UnknownTopicOrPartition),
                (0, ErrorCode::ElectionNotNeeded),
                (1, ErrorCode::PreferredLeaderNotAvailable),
                (2, ErrorCode::PreferredLeaderNotAvailable),
                (9, ErrorCode::UnknownTopicOrPartition),
            ]
        );
        // Every partition: those that need nothing are left out.
        let (_, outcomes) = decide(&image, ElectionType::Preferred, None);
        assert_eq!(
            codes(&outcomes),
            [
                (1, ErrorCode::PreferredLeaderNotAvailable),
                (2, ErrorCode::PreferredLeaderNotAvailable)
            ]
        );
    }

    #[test]
    fn a_preferred_replica_back_in_service_leads_again() {
        let mut image = image();
        image
            .apply(&MetadataRecord::UnfenceBroker {
                id: BrokerId(2),
                epoch: BrokerEpoch(0),
            })
            .unwrap();
        let (records, outcomes) = decide(&image, ElectionType::Preferred, None);
        assert_eq!(
            codes(&outcomes),
            [(1, ErrorCode::None), (2, ErrorCode::None)]
        );
        for record in &records {
            image.apply(record).unwrap();
        }
        let states = &image.topics["t"].partition_states;
        assert_eq!(states[1].leader, BrokerId(2));
        assert_eq!(states[2].leader, BrokerId(2));
        assert_eq!(states[2].leader_epoch.0, 1);
    }

    #[test]
    fn an_unclean_election_takes_any_live_replica_only_for_a_leaderless_partition() {
        let mut image = image();
        let (records, outcomes) = decide(&image, ElectionType::Unclean, None);
        // p1's only replica is fenced; the others have leaders.
        assert!(records.is_empty());
        assert_eq!(
            codes(&outcomes),
            [(1, ErrorCode::EligibleLeadersNotAvailable)]
        );
        image
            .apply(&MetadataRecord::UnfenceBroker {
                id: BrokerId(2),
                epoch: BrokerEpoch(0),
            })
            .unwrap();
        let (records, _) = decide(&image, ElectionType::Unclean, None);
        for record in &records {
            image.apply(record).unwrap();
        }
        assert_eq!(image.topics["t"].partition_states[1].leader, BrokerId(2));
    }

    #[test]
    fn an_unclean_election_prefers_the_first_in_sync_replica_in_assignment_order() {
        let mut image = image();
        for id in [3, 4] {
            image
                .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation_id: Uuid::nil(),
                    epoch: BrokerEpoch(0),
                    endpoints: Vec::new(),
                    fenced: false,
                }))
                .unwrap();
        }
        let id = image.topics["t"].id;
        let state = PartitionState {
            isr: vec![BrokerId(4), BrokerId(3)],
            leader: BrokerId::NONE,
            ..PartitionState::online(vec![BrokerId(2), BrokerId(3), BrokerId(4)])
        };
        image
            .apply(&MetadataRecord::Partition {
                topic_id: id,
                partition: PartitionId(4),
                state,
            })
            .unwrap();
        let asked = [("t".to_string(), vec![4])].into_iter().collect();
        let (records, outcomes) = decide(&image, ElectionType::Unclean, Some(&asked));
        assert_eq!(codes(&outcomes), [(4, ErrorCode::None)]);
        let decided_at = image.topics["t"].partition_states[4].partition_epoch;
        assert_eq!(
            records,
            [MetadataRecord::PartitionChange {
                topic_id: id,
                partition: PartitionId(4),
                leader: Some(BrokerId(3)),
                isr: None,
                replicas: None,
                decided_at: Some(decided_at),
            }]
        );
    }
}
