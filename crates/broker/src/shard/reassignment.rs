//! Partition reassignments (KIP-455: AlterPartitionReassignments, ListPartitionReassignments,
//! `kafka-reassign-partitions.sh`), decided by pure functions on the controller as Kafka's
//! ReplicationControlManager and PartitionReassignmentReplicas decide them.
//!
//! A reassignment to target replicas T of a partition on replicas R makes its replicas T
//! followed by R - T, with T - R being added and R - T being removed. The added replicas open
//! the partition and fetch from its leader like any follower, and its leader asks for them in
//! the ISR once they have caught up (AlterPartition). The reassignment completes in the change
//! that leaves every target replica in the ISR: the replicas become T, the ISR loses the removed
//! replicas, and a leader outside T hands over to the first target replica in the ISR (a new
//! leader epoch). The removed replicas then delete their copy. A reassignment whose target
//! replicas are in sync already (a removal, a reordering) completes at once.
//!
//! Cancelling (a target of null) reverts an unfinished reassignment: the added replicas leave
//! the replicas and the ISR. Where a change would leave the ISR empty, it is refused, as Kafka
//! refuses a cancel that needs an unclean election.
//!
//! Deviation: a completion that keeps its leader keeps its leader epoch (Kafka bumps it when
//! replicas are removed, to fence their fetches); here a removed replica stops fetching and
//! deletes its copy when it applies the change, and the leader stops counting it at once.

use std::collections::BTreeSet;

use crate::error::ErrorCode;
use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState, ReplicaSetChange};
use crate::metadata::{MetadataImage, TopicMeta};
use crate::types::PartitionId;

/// One partition to move: its topic, index, and target replicas (`None`: cancel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub target: Option<Vec<i32>>,
}

/// One partition's answer to an AlterPartitionReassignments: success, or Kafka's error code
/// with its message.
pub type MoveOutcome = (String, i32, Result<(), (ErrorCode, String)>);

/// A change that completes a reassignment: the final replicas, the ISR without the removed
/// replicas, and a new leader term where the leader was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub leader: Option<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub replicas: ReplicaSetChange,
}

/// The records that carry out `moves` against `image`, and an outcome per move, in order. Each
/// move is decided against the state the moves before it leave. `allow_rf_change` false
/// (AlterPartitionReassignments v1, KIP-860) refuses a target of another size than the
/// partition's replicas.
pub fn decide(
    image: &MetadataImage,
    moves: &[Move],
    allow_rf_change: bool,
) -> (Vec<MetadataRecord>, Vec<MoveOutcome>) {
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for m in moves {
        let outcome = decide_one(&working, m, allow_rf_change).and_then(|record| {
            let Some(record) = record else {
                return Ok(());
            };
            working.apply(&record).map_err(|err| {
                tracing::error!("a reassignment decided a record that does not apply: {err}");
                (ErrorCode::UnknownServerError, err.to_string())
            })?;
            records.push(record);
            Ok(())
        });
        outcomes.push((m.topic.clone(), m.partition, outcome));
    }
    (records, outcomes)
}

/// One move's record (none when it changes nothing), or Kafka's refusal.
fn decide_one(
    image: &MetadataImage,
    m: &Move,
    allow_rf_change: bool,
) -> Result<Option<MetadataRecord>, (ErrorCode, String)> {
    let topic = image.topic(&m.topic).ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("Unable to find a topic named {}.", m.topic),
        )
    })?;
    let state = usize::try_from(m.partition)
        .ok()
        .and_then(|p| topic.partition_states.get(p))
        .ok_or_else(|| {
            (
                ErrorCode::UnknownTopicOrPartition,
                format!("Unable to find partition {}:{}.", m.topic, m.partition),
            )
        })?;
    let change = match &m.target {
        None => cancel(image, topic, m.partition, state)?,
        Some(target) => {
            let target = valid_target(image, target)?;
            if !allow_rf_change && target.len() != state.target_replicas().len() {
                return Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "The replication factor is changed from {} to {}",
                        state.target_replicas().len(),
                        target.len()
                    ),
                ));
            }
            reassign(image, topic, m.partition, state, &target)?
        }
    };
    Ok(
        change.map(|(leader, isr, replicas)| MetadataRecord::PartitionChange {
            topic_id: topic.id,
            partition: PartitionId(m.partition),
            leader,
            isr,
            replicas,
            decided_at: Some(state.partition_epoch),
        }),
    )
}

/// A change's fields: new leader term, ISR, replicas (each `None`: unchanged); `None` when
/// nothing changes.
type Change = Option<(
    Option<BrokerId>,
    Option<Vec<BrokerId>>,
    Option<ReplicaSetChange>,
)>;

/// Kafka's checks of a manual assignment: not empty, no broker twice, every broker registered.
fn valid_target(
    image: &MetadataImage,
    target: &[i32],
) -> Result<Vec<BrokerId>, (ErrorCode, String)> {
    let refuse = |message: String| Err((ErrorCode::InvalidReplicaAssignment, message));
    if target.is_empty() {
        return refuse("The manual partition assignment includes an empty replica list.".into());
    }
    let mut seen = BTreeSet::new();
    for &id in target {
        if !seen.insert(id) {
            return refuse(format!(
                "The manual partition assignment includes the broker {id} more than once."
            ));
        }
        if !image.brokers.contains_key(&BrokerId(id)) {
            return refuse(format!(
                "The manual partition assignment includes broker {id}, but no such broker is registered."
            ));
        }
    }
    Ok(target.iter().copied().map(BrokerId).collect())
}

/// The change that moves `state` to `target`, completed at once where it can be. A
/// reassignment under way is replaced: the new one starts from the replicas before it, and a
/// replica the earlier one was adding that the new target leaves out is dropped (from the ISR
/// too, where it had caught up).
fn reassign(
    image: &MetadataImage,
    topic: &TopicMeta,
    partition: i32,
    state: &PartitionState,
    target: &[BrokerId],
) -> Result<Change, (ErrorCode, String)> {
    let before: Vec<BrokerId> = state
        .replicas
        .iter()
        .copied()
        .filter(|r| !state.adding.contains(r))
        .collect();
    let adding: Vec<BrokerId> = target
        .iter()
        .copied()
        .filter(|r| !before.contains(r))
        .collect();
    let removing: Vec<BrokerId> = before
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let moving = ReplicaSetChange {
        replicas: target.iter().chain(&removing).copied().collect(),
        adding,
        removing,
    };
    if moving.replicas == state.replicas
        && moving.adding == state.adding
        && moving.removing == state.removing
    {
        return Ok(None);
    }
    let isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|r| moving.replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            format!(
                "Unable to change the assignment of {}:{partition} because it would require an unclean leader election.",
                topic.name
            ),
        ));
    }
    let mut leader =
        (!isr.contains(&state.leader)).then(|| first_live_in(image, &moving.replicas, &isr));
    if leader == Some(BrokerId::NONE) {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            format!(
                "Unable to change the assignment of {}:{partition}: no replica left in sync can lead it.",
                topic.name
            ),
        ));
    }
    let started = PartitionState {
        replicas: moving.replicas.clone(),
        adding: moving.adding.clone(),
        removing: moving.removing.clone(),
        leader: leader.unwrap_or(state.leader),
        ..state.clone()
    };
    let (isr, replicas) = match completion(image, &started, &isr) {
        Some(done) => {
            leader = done.leader.or(leader);
            (done.isr, done.replicas)
        }
        None => (isr, moving),
    };
    let isr = (isr != state.isr).then_some(isr);
    Ok(Some((leader, isr, Some(replicas))))
}

/// Reverts `state`'s reassignment under way: back to the replicas before it.
fn cancel(
    image: &MetadataImage,
    topic: &TopicMeta,
    partition: i32,
    state: &PartitionState,
) -> Result<Change, (ErrorCode, String)> {
    if !state.is_reassigning() {
        return Err((
            ErrorCode::NoReassignmentInProgress,
            "No partition reassignment is in progress for this topic partition.".into(),
        ));
    }
    let before: Vec<BrokerId> = state
        .replicas
        .iter()
        .copied()
        .filter(|r| !state.adding.contains(r))
        .collect();
    reassign(image, topic, partition, state, &before)
}

/// The change that completes `state`'s reassignment once its ISR is `isr`, if every target
/// replica is in it and one of them can lead (Kafka's maybeCompleteReassignment): `None`
/// while it must wait, or when no reassignment is under way.
pub fn completion(
    image: &MetadataImage,
    state: &PartitionState,
    isr: &[BrokerId],
) -> Option<Completion> {
    if !state.is_reassigning() {
        return None;
    }
    let target = state.target_replicas();
    let isr: Vec<BrokerId> = isr.iter().copied().filter(|r| target.contains(r)).collect();
    if isr.is_empty() || !target.iter().all(|r| isr.contains(r)) {
        return None;
    }
    let leader = if isr.contains(&state.leader) {
        None
    } else {
        let next = first_live_in(image, &target, &isr);
        if next == BrokerId::NONE {
            return None;
        }
        Some(next)
    };
    Some(Completion {
        leader,
        isr,
        replicas: ReplicaSetChange {
            replicas: target,
            adding: Vec::new(),
            removing: Vec::new(),
        },
    })
}

/// The first of `replicas`, in their order, that is in `isr` and not fenced (`BrokerId::NONE`:
/// none).
fn first_live_in(image: &MetadataImage, replicas: &[BrokerId], isr: &[BrokerId]) -> BrokerId {
    replicas
        .iter()
        .copied()
        .find(|r| isr.contains(r) && image.brokers.get(r).is_some_and(|b| !b.fenced))
        .unwrap_or(BrokerId::NONE)
}

/// The reassignments under way, by topic and partition, for the partitions asked (`None`:
/// every partition); a partition that does not exist is left out, as Kafka leaves it.
pub fn ongoing<'a>(
    image: &'a MetadataImage,
    asked: Option<&[(String, Vec<i32>)]>,
) -> Vec<(&'a str, i32, &'a PartitionState)> {
    let mut found = Vec::new();
    let mut add = |topic: &'a TopicMeta, index: i32| {
        let state = usize::try_from(index)
            .ok()
            .and_then(|i| topic.partition_states.get(i));
        if let Some(state) = state.filter(|s| s.is_reassigning()) {
            found.push((topic.name.as_str(), index, state));
        }
    };
    match asked {
        None => {
            for topic in image.topics.values() {
                for index in 0..topic.partitions {
                    add(topic, index);
                }
            }
        }
        Some(asked) => {
            for (name, partitions) in asked {
                if let Some(topic) = image.topic(name) {
                    for &index in partitions {
                        add(topic, index);
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{BrokerEpoch, BrokerRegistration};
    use crate::shard::alter_partition::{self, AlterPartition, IsrChange, IsrMember, RECOVERED};
    use uuid::Uuid;

    const TOPIC: Uuid = Uuid::from_u128(9);

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    /// Brokers 1-4 (4 fenced); topic t: partition 0 on [1] alone, partition 1 on [1, 2, 3] led
    /// by 1 with every replica in sync.
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
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id: TOPIC,
            })
            .unwrap();
        for (p, replicas) in [(0, vec![1]), (1, vec![1, 2, 3])] {
            image
                .apply(&MetadataRecord::Partition {
                    topic_id: TOPIC,
                    partition: PartitionId(p),
                    state: PartitionState::online(ids(&replicas)),
                })
                .unwrap();
        }
        image
    }

    fn to(partition: i32, target: Option<&[i32]>) -> Move {
        Move {
            topic: "t".into(),
            partition,
            target: target.map(<[i32]>::to_vec),
        }
    }

    /// Decides `moves`, applies their records to `image`, and returns the outcomes' codes.
    fn run(image: &mut MetadataImage, moves: &[Move], allow_rf_change: bool) -> Vec<ErrorCode> {
        let (records, outcomes) = decide(image, moves, allow_rf_change);
        for record in &records {
            image.apply(record).unwrap();
        }
        outcomes
            .into_iter()
            .map(|(_, _, o)| o.err().map_or(ErrorCode::None, |(code, _)| code))
            .collect()
    }

    fn state(image: &MetadataImage, partition: usize) -> PartitionState {
        image.topic("t").unwrap().partition_states[partition].clone()
    }

    /// Leader `leader` of partition `partition` asks for ISR `isr`, as its fetches would.
    fn grow_isr(image: &mut MetadataImage, partition: i32, leader: i32, isr: &[i32]) {
        let now = state(image, partition as usize);
        let request = AlterPartition {
            broker: BrokerId(leader),
            broker_epoch: BrokerEpoch(10 + i64::from(leader)),
            topics: vec![(
                TOPIC,
                vec![IsrChange {
                    partition: PartitionId(partition),
                    leader_epoch: now.leader_epoch,
                    partition_epoch: now.partition_epoch,
                    new_isr: ids(isr)
                        .into_iter()
                        .map(|id| IsrMember { id, epoch: None })
                        .collect(),
                    leader_recovery_state: RECOVERED,
                }],
            )],
        };
        let (records, _) = alter_partition::decide(image, &request);
        assert_eq!(records.len(), 1, "the ISR change is accepted");
        image.apply(&records[0]).unwrap();
    }

    #[test]
    fn a_move_adds_the_target_then_completes_when_it_is_in_sync() {
        let mut image = image();
        assert_eq!(
            run(&mut image, &[to(0, Some(&[2]))], true),
            [ErrorCode::None]
        );
        let moving = state(&image, 0);
        assert_eq!(moving.replicas, ids(&[2, 1]));
        assert_eq!((moving.adding, moving.removing), (ids(&[2]), ids(&[1])));
        assert_eq!(
            (moving.leader, moving.isr.clone()),
            (BrokerId(1), ids(&[1]))
        );
        let listed = ongoing(&image, None);
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].1), ("t", 0));
        // Broker 2 caught up: the leader's ISR expansion completes the move in one change,
        // and broker 2 leads a new term.
        grow_isr(&mut image, 0, 1, &[1, 2]);
        let done = state(&image, 0);
        assert!(!done.is_reassigning());
        assert_eq!((&done.replicas, &done.isr), (&ids(&[2]), &ids(&[2])));
        assert_eq!(done.leader, BrokerId(2));
        assert_eq!(done.leader_epoch.0, moving.leader_epoch.0 + 1);
        assert!(ongoing(&image, None).is_empty());
    }

    #[test]
    fn a_target_already_in_sync_completes_at_once() {
        let mut image = image();
        // Remove a replica, and hand over from a removed leader.
        assert_eq!(
            run(&mut image, &[to(1, Some(&[2, 3]))], true),
            [ErrorCode::None]
        );
        let done = state(&image, 1);
        assert_eq!((&done.replicas, &done.isr), (&ids(&[2, 3]), &ids(&[2, 3])));
        assert_eq!(done.leader, BrokerId(2));
        assert!(!done.is_reassigning());
        // A reordering changes the replicas only; the same target again changes nothing.
        assert_eq!(
            run(&mut image, &[to(1, Some(&[3, 2]))], true),
            [ErrorCode::None]
        );
        assert_eq!(state(&image, 1).replicas, ids(&[3, 2]));
        let before = state(&image, 1);
        let (records, _) = decide(&image, &[to(1, Some(&[3, 2]))], true);
        assert!(records.is_empty());
        assert_eq!(state(&image, 1), before);
    }

    #[test]
    fn bad_targets_get_kafkas_codes() {
        let mut image = image();
        let moves = [
            to(0, Some(&[])),
            to(0, Some(&[2, 2])),
            to(0, Some(&[7])),
            to(9, Some(&[1])),
            Move {
                topic: "nope".into(),
                partition: 0,
                target: Some(vec![1]),
            },
            to(0, None),
        ];
        assert_eq!(
            run(&mut image, &moves, true),
            [
                ErrorCode::InvalidReplicaAssignment,
                ErrorCode::InvalidReplicaAssignment,
                ErrorCode::InvalidReplicaAssignment,
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::NoReassignmentInProgress,
            ]
        );
        // KIP-860: a change of replication factor only where allowed.
        assert_eq!(
            run(&mut image, &[to(0, Some(&[2, 3]))], false),
            [ErrorCode::InvalidReplicationFactor]
        );
        assert_eq!(state(&image, 0).replicas, ids(&[1]));
    }

    #[test]
    fn a_cancel_reverts_to_the_replicas_before_the_move() {
        let mut image = image();
        let before = state(&image, 1);
        // A fenced broker never catches up: the move waits.
        assert_eq!(
            run(&mut image, &[to(1, Some(&[4, 2, 3]))], true),
            [ErrorCode::None]
        );
        let moving = state(&image, 1);
        assert_eq!(moving.replicas, ids(&[4, 2, 3, 1]));
        assert_eq!((moving.adding, moving.removing), (ids(&[4]), ids(&[1])));
        // A new target replaces it, from the replicas before it.
        assert_eq!(
            run(&mut image, &[to(1, Some(&[1, 2, 4]))], true),
            [ErrorCode::None]
        );
        let replaced = state(&image, 1);
        assert_eq!(replaced.replicas, ids(&[1, 2, 4, 3]));
        assert_eq!((replaced.adding, replaced.removing), (ids(&[4]), ids(&[3])));
        assert_eq!(run(&mut image, &[to(1, None)], true), [ErrorCode::None]);
        let reverted = state(&image, 1);
        assert!(!reverted.is_reassigning());
        assert_eq!(
            (reverted.replicas, reverted.isr, reverted.leader),
            (before.replicas, before.isr, before.leader)
        );
    }
}
