//! Explicit replica assignments (CreateTopics' `assignments`, CreatePartitions' `assignments`,
//! `kafka-topics.sh --replica-assignment`), checked as Kafka's controller checks them, with its
//! error codes and messages: tools, Terraform providers and rebalancers always send them, and
//! tell a bad one from a good one by INVALID_REPLICA_ASSIGNMENT. Pure functions; the controller
//! (shard 0) calls them with the brokers the metadata has registered.

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
}
