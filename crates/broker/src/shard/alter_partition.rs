//! AlterPartition (key 56) on the controller: a partition's leader asks to change its ISR
//! (grow it when a follower has caught up, shrink it when one falls behind). Decided by a pure
//! function, with Kafka's checks in Kafka's order (ReplicationControlManager.alterPartition), so
//! a leader reacts to each refusal as it would with Kafka's controller: wait for newer metadata
//! (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION), go back to its committed ISR
//! (INELIGIBLE_REPLICA), or retry elsewhere (NOT_CONTROLLER: this controller's metadata is older
//! than the leader's).
//!
//! An accepted change is one `PartitionChange` with the new ISR and no new leader: it bumps the
//! partition epoch only; where it brings a reassignment's last target replica in sync, the same
//! record completes the reassignment (`reassignment::completion`). Sluice has no leader recovery (every partition is RECOVERED), so a
//! request to mark one RECOVERING is refused as Kafka refuses RECOVERED to RECOVERING.

use uuid::Uuid;

use crate::error::ErrorCode;
use crate::metadata::records::{
    BrokerEpoch, BrokerId, LeaderEpoch, MetadataRecord, PartitionEpoch, PartitionState,
};
use crate::metadata::MetadataImage;
use crate::types::PartitionId;

/// Kafka's LeaderRecoveryState RECOVERED: the only state a Sluice partition is in.
pub const RECOVERED: i8 = 0;

/// A new ISR member as the leader names it: its id, and the registration epoch the leader saw
/// it fetch at (`None`: not checked; AlterPartition v2 sends ids only, and v3 sends -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrMember {
    pub id: BrokerId,
    pub epoch: Option<BrokerEpoch>,
}

/// One partition's requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub partition: PartitionId,
    /// The leader epoch and partition epoch the leader's change is based on.
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub new_isr: Vec<IsrMember>,
    pub leader_recovery_state: i8,
}

/// An AlterPartition request: from `broker` at its registration `broker_epoch`, changes by
/// topic id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartition {
    pub broker: BrokerId,
    pub broker_epoch: BrokerEpoch,
    pub topics: Vec<(Uuid, Vec<IsrChange>)>,
}

/// One partition's answer: the state it now has, or why the change was refused.
pub type PartitionAnswer = (PartitionId, Result<PartitionState, ErrorCode>);

/// The answer to an AlterPartition: a top-level error (STALE_BROKER_EPOCH), or an answer per
/// partition by topic id, in request order.
pub type AlterPartitionAnswer = Result<Vec<(Uuid, Vec<PartitionAnswer>)>, ErrorCode>;

/// The records that carry out `request` against `image`, and the answer. Each change is
/// decided against the state the changes before it leave (a partition named twice sees the
/// first change).
pub fn decide(
    image: &MetadataImage,
    request: &AlterPartition,
) -> (Vec<MetadataRecord>, AlterPartitionAnswer) {
    let registered = image.brokers.get(&request.broker).map(|b| b.epoch);
    if registered != Some(request.broker_epoch) {
        return (Vec::new(), Err(ErrorCode::StaleBrokerEpoch));
    }
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut answers = Vec::new();
    for (topic_id, changes) in &request.topics {
        let mut answered = Vec::new();
        for change in changes {
            let outcome = decide_one(&working, request.broker, *topic_id, change);
            let answer = match outcome {
                Ok((state, None)) => Ok(state),
                Ok((state, Some(record))) => match working.apply(&record) {
                    Ok(()) => {
                        records.push(record);
                        Ok(state)
                    }
                    Err(err) => {
                        tracing::error!(
                            "AlterPartition decided a record that does not apply: {err}"
                        );
                        Err(ErrorCode::UnknownServerError)
                    }
                },
                Err(code) => Err(code),
            };
            answered.push((change.partition, answer));
        }
        answers.push((*topic_id, answered));
    }
    (records, Ok(answers))
}

/// One partition's change: the state after it, with the record that makes it (none for a
/// change that changes nothing), or Kafka's refusal.
fn decide_one(
    image: &MetadataImage,
    sender: BrokerId,
    topic_id: Uuid,
    change: &IsrChange,
) -> Result<(PartitionState, Option<MetadataRecord>), ErrorCode> {
    let topic = image
        .topic_by_id(topic_id)
        .ok_or(ErrorCode::UnknownTopicId)?;
    let state = usize::try_from(change.partition.0)
        .ok()
        .and_then(|p| topic.partition_states.get(p))
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    // A leader ahead of this controller has seen metadata this controller has not: it must ask
    // a controller that is up to date.
    if change.leader_epoch > state.leader_epoch || change.partition_epoch > state.partition_epoch {
        return Err(ErrorCode::NotController);
    }
    if change.leader_epoch < state.leader_epoch {
        return Err(ErrorCode::FencedLeaderEpoch);
    }
    if sender != state.leader {
        return Err(ErrorCode::InvalidRequest);
    }
    if change.partition_epoch < state.partition_epoch {
        return Err(ErrorCode::InvalidUpdateVersion);
    }
    if change.leader_recovery_state != RECOVERED {
        return Err(ErrorCode::InvalidRequest);
    }
    let new_isr: Vec<BrokerId> = change.new_isr.iter().map(|m| m.id).collect();
    if !is_valid_isr(&state.replicas, &new_isr) || !new_isr.contains(&state.leader) {
        return Err(ErrorCode::InvalidRequest);
    }
    let eligible = |member: &IsrMember| {
        image
            .brokers
            .get(&member.id)
            .is_some_and(|b| !b.fenced && member.epoch.is_none_or(|epoch| epoch == b.epoch))
    };
    if !change.new_isr.iter().all(eligible) {
        return Err(ErrorCode::IneligibleReplica);
    }
    if new_isr == state.isr {
        return Ok((state.clone(), None));
    }
    // The ISR change that brings a reassignment's last target replica in sync completes it in
    // the same record, as Kafka's PartitionChangeBuilder does.
    let (leader, isr, replicas) = match super::reassignment::completion(image, state, &new_isr) {
        Some(done) => (done.leader, done.isr, Some(done.replicas)),
        None => (None, new_isr, None),
    };
    let changed = state.changed(leader, Some(&isr), replicas.as_ref());
    let record = MetadataRecord::PartitionChange {
        topic_id,
        partition: change.partition,
        leader,
        isr: Some(isr),
        replicas,
        decided_at: Some(state.partition_epoch),
    };
    Ok((changed, Some(record)))
}

/// Whether `isr` names only replicas, each once.
fn is_valid_isr(replicas: &[BrokerId], isr: &[BrokerId]) -> bool {
    isr.iter()
        .enumerate()
        .all(|(i, member)| replicas.contains(member) && !isr[..i].contains(member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::BrokerRegistration;

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    /// Brokers 1-3 at epoch 10+id and broker 4 fenced; topic t (id `TOPIC`): partition 0 on
    /// [1, 2, 3], led by 1 with ISR [1, 2], at leader epoch 1 and partition epoch 1.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        for id in 1..=4 {
            image
                .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation_id: Uuid::nil(),
                    epoch: BrokerEpoch(10 + i64::from(id)),
                    endpoints: Vec::new(),
                    fenced: id == 4,
                }))
                .unwrap();
        }
        let records = [
            MetadataRecord::Topic {
                name: "t".into(),
                id: TOPIC,
            },
            MetadataRecord::Partition {
                topic_id: TOPIC,
                partition: PartitionId(0),
                state: PartitionState::online(ids(&[1, 2, 3])),
            },
            MetadataRecord::PartitionChange {
                topic_id: TOPIC,
                partition: PartitionId(0),
                leader: Some(BrokerId(1)),
                isr: Some(ids(&[1, 2])),
                replicas: None,
                decided_at: None,
            },
        ];
        for record in &records {
            image.apply(record).unwrap();
        }
        image
    }

    /// A request from broker 1 at its epoch, based on epochs (1, 1), for ISR `isr` (v2 style).
    fn change(isr: &[i32]) -> IsrChange {
        IsrChange {
            partition: PartitionId(0),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
            new_isr: ids(isr)
                .into_iter()
                .map(|id| IsrMember { id, epoch: None })
                .collect(),
            leader_recovery_state: RECOVERED,
        }
    }

    fn request(changes: Vec<IsrChange>) -> AlterPartition {
        AlterPartition {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(11),
            topics: vec![(TOPIC, changes)],
        }
    }

    /// The single partition's outcome for `change`, sent by broker 1.
    fn outcome(image: &MetadataImage, change: IsrChange) -> Result<PartitionState, ErrorCode> {
        let (records, answer) = decide(image, &request(vec![change]));
        let mut topics = answer.expect("no top-level error");
        let (_, outcome) = topics.remove(0).1.remove(0);
        assert_eq!(
            records.is_empty(),
            outcome.is_err(),
            "a refusal decides nothing"
        );
        outcome
    }

    #[test]
    fn a_caught_up_follower_joins_the_isr_under_the_same_leader_term() {
        let mut image = image();
        let mut grow = change(&[1, 2, 3]);
        grow.new_isr[2].epoch = Some(BrokerEpoch(13));
        let (records, answer) = decide(&image, &request(vec![grow]));
        let state = answer.unwrap()[0].1[0].1.clone().unwrap();
        assert_eq!(state.isr, ids(&[1, 2, 3]));
        assert_eq!(state.leader, BrokerId(1));
        assert_eq!((state.leader_epoch.0, state.partition_epoch.0), (1, 2));
        for record in &records {
            image.apply(record).unwrap();
        }
        assert_eq!(
            image.topics["t"].partition_states[0], state,
            "answered as committed"
        );

        // Then shrinks again, based on the new partition epoch.
        let shrink = IsrChange {
            partition_epoch: PartitionEpoch(2),
            ..change(&[1, 3])
        };
        let state = outcome(&image, shrink).unwrap();
        assert_eq!((state.isr, state.partition_epoch.0), (ids(&[1, 3]), 3));
    }

    #[test]
    fn a_change_that_changes_nothing_answers_the_current_state() {
        let image = image();
        let (records, answer) = decide(&image, &request(vec![change(&[1, 2])]));
        assert!(records.is_empty());
        assert_eq!(
            answer.unwrap()[0].1[0].1,
            Ok(image.topics["t"].partition_states[0].clone())
        );
    }

    #[test]
    fn a_sender_not_registered_at_its_epoch_is_refused_whole() {
        let image = image();
        for (broker, epoch) in [(1, 10), (9, 11)] {
            let stale = AlterPartition {
                broker: BrokerId(broker),
                broker_epoch: BrokerEpoch(epoch),
                ..request(vec![change(&[1])])
            };
            let (records, answer) = decide(&image, &stale);
            assert!(records.is_empty());
            assert_eq!(answer, Err(ErrorCode::StaleBrokerEpoch));
        }
    }

    #[test]
    fn unknown_topics_and_partitions_are_named() {
        let image = image();
        let request = AlterPartition {
            topics: vec![
                (Uuid::from_u128(8), vec![change(&[1])]),
                (
                    TOPIC,
                    vec![IsrChange {
                        partition: PartitionId(5),
                        ..change(&[1])
                    }],
                ),
                (
                    TOPIC,
                    vec![IsrChange {
                        partition: PartitionId(-1),
                        ..change(&[1])
                    }],
                ),
            ],
            ..request(Vec::new())
        };
        let (_, answer) = decide(&image, &request);
        let codes: Vec<_> = answer
            .unwrap()
            .into_iter()
            .map(|(_, partitions)| partitions[0].1.clone().unwrap_err())
            .collect();
        assert_eq!(
            codes,
            [
                ErrorCode::UnknownTopicId,
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::UnknownTopicOrPartition
            ]
        );
    }

    #[test]
    fn each_bad_change_is_refused_with_kafkas_code_in_kafkas_order() {
        let image = image();
        let epochs = |leader, partition| IsrChange {
            leader_epoch: LeaderEpoch(leader),
            partition_epoch: PartitionEpoch(partition),
            ..change(&[1])
        };
        let member = |id, epoch| IsrMember {
            id: BrokerId(id),
            epoch,
        };
        let with_members = |members: Vec<IsrMember>| IsrChange {
            new_isr: members,
            ..change(&[])
        };
        let cases: Vec<(&str, IsrChange, ErrorCode)> = vec![
            ("leader epoch ahead", epochs(2, 1), ErrorCode::NotController),
            (
                "partition epoch ahead",
                epochs(1, 2),
                ErrorCode::NotController,
            ),
            ("ahead beats behind", epochs(0, 2), ErrorCode::NotController),
            (
                "old leader epoch",
                epochs(0, 1),
                ErrorCode::FencedLeaderEpoch,
            ),
            (
                "old leader epoch beats old partition epoch",
                epochs(0, 0),
                ErrorCode::FencedLeaderEpoch,
            ),
            (
                "old partition epoch",
                epochs(1, 0),
                ErrorCode::InvalidUpdateVersion,
            ),
            (
                "recovering",
                IsrChange {
                    leader_recovery_state: 1,
                    ..change(&[1])
                },
                ErrorCode::InvalidRequest,
            ),
            ("empty", change(&[]), ErrorCode::InvalidRequest),
            (
                "without the leader",
                change(&[2, 3]),
                ErrorCode::InvalidRequest,
            ),
            (
                "a member twice",
                change(&[1, 2, 2]),
                ErrorCode::InvalidRequest,
            ),
            ("not a replica", change(&[1, 4]), ErrorCode::InvalidRequest),
            (
                "an old partition epoch beats a bad ISR",
                IsrChange {
                    partition_epoch: PartitionEpoch(0),
                    ..change(&[1, 9])
                },
                ErrorCode::InvalidUpdateVersion,
            ),
            (
                "another registration",
                with_members(vec![member(1, None), member(3, Some(BrokerEpoch(12)))]),
                ErrorCode::IneligibleReplica,
            ),
        ];
        for (why, change, code) in cases {
            assert_eq!(outcome(&image, change), Err(code), "{why}");
        }
    }

    #[test]
    fn fenced_and_unregistered_members_are_ineligible() {
        let mut image = image();
        let topic = image.topics["t"].id;
        // Broker 4 becomes a replica of partition 1, led by 1.
        image
            .apply(&MetadataRecord::Partition {
                topic_id: topic,
                partition: PartitionId(1),
                state: PartitionState {
                    leader_epoch: LeaderEpoch(1),
                    partition_epoch: PartitionEpoch(1),
                    isr: ids(&[1]),
                    ..PartitionState::online(ids(&[1, 4, 5]))
                },
            })
            .unwrap();
        for isr in [[1, 4], [1, 5]] {
            let change = IsrChange {
                partition: PartitionId(1),
                ..change(&isr)
            };
            assert_eq!(
                outcome(&image, change),
                Err(ErrorCode::IneligibleReplica),
                "{isr:?}"
            );
        }
    }

    #[test]
    fn only_the_leader_may_change_the_isr() {
        let image = image();
        let from_follower = AlterPartition {
            broker: BrokerId(2),
            broker_epoch: BrokerEpoch(12),
            ..request(vec![change(&[1, 2, 3])])
        };
        let (records, answer) = decide(&image, &from_follower);
        assert!(records.is_empty());
        assert_eq!(answer.unwrap()[0].1[0].1, Err(ErrorCode::InvalidRequest));
    }

    #[test]
    fn a_partition_named_twice_sees_the_first_change() {
        let image = image();
        let (records, answer) = decide(&image, &request(vec![change(&[1]), change(&[1, 2])]));
        assert_eq!(records.len(), 1);
        let answers = &answer.unwrap()[0].1;
        assert_eq!(answers[0].1.as_ref().unwrap().isr, ids(&[1]));
        assert_eq!(answers[1].1, Err(ErrorCode::InvalidUpdateVersion));
    }
}
