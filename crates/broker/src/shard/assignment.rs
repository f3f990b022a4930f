//! Explicit replica assignments (CreateTopics' `assignments`, CreatePartitions' `assignments`,
//! `kafka-topics.sh --replica-assignment`), checked as Kafka's controller checks them, with its
//! error codes and messages: tools, Terraform providers and rebalancers always send them, and
//! tell a bad one from a good one by INVALID_REPLICA_ASSIGNMENT. Pure functions; the controller
//! (shard 0) calls them with the brokers the metadata has registered.
//!
//! When a request names no replicas, `place` chooses them as Kafka's rack-unaware placement
//! does: leaders round-robin over the brokers, each partition's followers on the brokers after
//! its leader, at a distance that shifts once per round, so that no two brokers share every
//! partition and a failed broker's load spreads over all the others.

use std::collections::BTreeSet;

use crate::error::ErrorCode;

/// A refusal: Kafka's error code and the message it gives.
pub type Refusal = (ErrorCode, String);

/// One partition's replicas, as the request names them (broker ids, preferred leader first).
pub type Replicas = Vec<i32>;

fn invalid(message: String) -> Refusal {
    (ErrorCode::InvalidReplicaAssignment, message)
}

/// Checks one partition's replicas: not empty, every broker registered, none twice, and as many
/// as the partitions before it have (`replication_factor`, once known).
pub fn check_partition(
    replicas: &[i32],
    registered: &BTreeSet<i32>,
    replication_factor: Option<usize>,
) -> Result<(), Refusal> {
    if replicas.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    // In broker order, as Kafka looks at them: the first problem it reports is the one named.
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, &broker) in sorted.iter().enumerate() {
        if !registered.contains(&broker) {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {broker}, but no such broker is registered."
            )));
        }
        if i > 0 && sorted[i - 1] == broker {
            return Err(invalid(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            )));
        }
    }
    match replication_factor {
        Some(expected) if replicas.len() != expected => Err(invalid(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {expected} replica(s).",
            replicas.len()
        ))),
        _ => Ok(()),
    }
}

/// Checks a new topic's assignment, given as (partition index, replicas) in request order.
/// With an assignment, the request's partition count and replication factor must both be -1
/// (the assignment says them). Returns the partition count.
pub fn check_new_topic(
    assignment: &[(i32, Replicas)],
    partitions: i32,
    replication_factor: i16,
    registered: &BTreeSet<i32>,
) -> Result<i32, Refusal> {
    assert!(
        !assignment.is_empty(),
        "only an explicit assignment is checked"
    );
    if replication_factor != -1 {
        return Err((
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but replication factor was not set to -1."
                .into(),
        ));
    }
    if partitions != -1 {
        return Err((
            ErrorCode::InvalidRequest,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .into(),
        ));
    }
    let mut indexes = BTreeSet::new();
    let mut factor = None;
    for (index, replicas) in assignment {
        if !indexes.insert(*index) {
            return Err(invalid(format!(
                "Found multiple manual partition assignments for partition {index}"
            )));
        }
        check_partition(replicas, registered, factor)?;
        factor = Some(replicas.len());
    }
    let count = assignment.len() as i32;
    if !indexes.iter().copied().eq(0..count) {
        return Err(invalid(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(count)
}

/// Checks the assignment of the partitions CreatePartitions adds: one per new partition, each as
/// long as the topic's replication factor.
pub fn check_new_partitions(
    assignment: &[Replicas],
    added: i32,
    replication_factor: usize,
    registered: &BTreeSet<i32>,
) -> Result<(), Refusal> {
    if assignment.len() as i64 != i64::from(added) {
        return Err(invalid(format!(
            "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
            assignment.len()
        )));
    }
    assignment
        .iter()
        .try_for_each(|replicas| check_partition(replicas, registered, Some(replication_factor)))
}

/// Replicas for partitions `partitions` (indexes), `replication_factor` each, over `brokers`
/// (ids in a fixed order; at least `replication_factor` of them, which the caller checks).
/// Partition p's leader is the broker at p mod n; its j-th follower (j from 0) is the broker
/// `1 + (shift + j) mod (n - 1)` places after it, where the shift grows by one each time the
/// leaders have gone once round the brokers. Deterministic (Kafka starts at a random broker
/// and shift; the controller decides records by pure functions), and the same for the
/// partitions CreatePartitions adds as for a topic created with them.
pub fn place(
    brokers: &[i32],
    partitions: std::ops::Range<i32>,
    replication_factor: usize,
) -> Vec<Replicas> {
    let n = brokers.len();
    partitions
        .map(|p| {
            let p = p.max(0) as usize;
            let first = p % n;
            let shift = p / n;
            let followers = (0..replication_factor.saturating_sub(1))
                .map(|j| brokers[(first + 1 + (shift + j) % (n - 1).max(1)) % n]);
            std::iter::once(brokers[first]).chain(followers).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    fn message(result: Result<impl std::fmt::Debug, Refusal>) -> (ErrorCode, String) {
        result.expect_err("refused")
    }

    #[test]
    fn a_topic_on_registered_brokers_is_accepted() {
        let assignment = vec![(0, vec![1]), (1, vec![1]), (2, vec![1])];
        assert_eq!(check_new_topic(&assignment, -1, -1, &brokers(&[1])), Ok(3));
        let out_of_order = vec![(1, vec![2, 1]), (0, vec![1, 2])];
        assert_eq!(
            check_new_topic(&out_of_order, -1, -1, &brokers(&[1, 2])),
            Ok(2)
        );
    }

    #[test]
    fn each_bad_topic_assignment_is_refused_as_kafka_refuses_it() {
        let one = brokers(&[1]);
        // (assignment, partitions, replication factor, the answer, words in its message)
        type Case = (Vec<(i32, Replicas)>, i32, i16, ErrorCode, &'static str);
        let cases: Vec<Case> = vec![
            (
                vec![(0, vec![101])],
                -1,
                -1,
                ErrorCode::InvalidReplicaAssignment,
                "includes broker 101, but no such broker is registered",
            ),
            (
                vec![(0, vec![1, 1])],
                -1,
                -1,
                ErrorCode::InvalidReplicaAssignment,
                "includes the broker 1 more than once",
            ),
            (
                vec![(0, vec![])],
                -1,
                -1,
                ErrorCode::InvalidReplicaAssignment,
                "empty replica list",
            ),
            (
                vec![(0, vec![1]), (0, vec![1])],
                -1,
                -1,
                ErrorCode::InvalidReplicaAssignment,
                "multiple manual partition assignments for partition 0",
            ),
            (
                vec![(0, vec![1]), (2, vec![1])],
                -1,
                -1,
                ErrorCode::InvalidReplicaAssignment,
                "consecutive 0-based",
            ),
            (
                vec![(0, vec![1])],
                1,
                -1,
                ErrorCode::InvalidRequest,
                "numPartitions was not set to -1",
            ),
            (
                vec![(0, vec![1])],
                -1,
                1,
                ErrorCode::InvalidRequest,
                "replication factor was not set to -1",
            ),
        ];
        for (assignment, partitions, factor, code, text) in cases {
            let (got, said) = message(check_new_topic(&assignment, partitions, factor, &one));
            assert_eq!(got, code, "{assignment:?}");
            assert!(said.contains(text), "{assignment:?}: {said}");
        }
    }

    #[test]
    fn partitions_of_different_lengths_are_refused() {
        let two = brokers(&[1, 2]);
        let (code, said) = message(check_new_topic(
            &[(0, vec![1, 2]), (1, vec![1])],
            -1,
            -1,
            &two,
        ));
        assert_eq!(code, ErrorCode::InvalidReplicaAssignment);
        assert!(said.contains("a partition with 1 replica(s)") && said.contains("which have 2"));
    }

    #[test]
    fn added_partitions_need_one_assignment_each_as_long_as_the_topic_is_replicated() {
        let one = brokers(&[1]);
        assert_eq!(
            check_new_partitions(&[vec![1], vec![1]], 2, 1, &one),
            Ok(())
        );
        let (code, said) = message(check_new_partitions(&[vec![1]], 2, 1, &one));
        assert_eq!(code, ErrorCode::InvalidReplicaAssignment);
        assert_eq!(
            said,
            "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."
        );
        let (_, said) = message(check_new_partitions(&[vec![101]], 1, 1, &one));
        assert!(said.contains("broker 101, but no such broker is registered"));
        let (_, said) = message(check_new_partitions(&[vec![1, 1]], 1, 1, &one));
        assert!(said.contains("more than once"));
    }

    #[test]
    fn placement_spreads_leaders_and_followers_as_kafka_does() {
        // Five brokers, RF 3: leaders round-robin; followers right after the leader in the
        // first round, one further in the second.
        let placed = place(&[1, 2, 3, 4, 5], 0..10, 3);
        assert_eq!(
            placed,
            [
                vec![1, 2, 3],
                vec![2, 3, 4],
                vec![3, 4, 5],
                vec![4, 5, 1],
                vec![5, 1, 2],
                vec![1, 3, 4],
                vec![2, 4, 5],
                vec![3, 5, 1],
                vec![4, 1, 2],
                vec![5, 2, 3],
            ]
        );
        for replicas in &placed {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
        // Each broker leads twice and holds six replicas.
        for b in 1..=5 {
            assert_eq!(placed.iter().filter(|r| r[0] == b).count(), 2);
            assert_eq!(placed.iter().flatten().filter(|&&r| r == b).count(), 6);
        }
        // Added partitions continue where the topic left off.
        assert_eq!(place(&[1, 2, 3, 4, 5], 5..7, 3), placed[5..7]);
        // One replica each: round-robin; as many replicas as brokers: every broker.
        assert_eq!(place(&[7, 8], 0..3, 1), [vec![7], vec![8], vec![7]]);
        assert_eq!(
            place(&[7, 8], 0..3, 2),
            [vec![7, 8], vec![8, 7], vec![7, 8]]
        );
        assert_eq!(place(&[7], 0..2, 1), [vec![7], vec![7]]);
    }
}
