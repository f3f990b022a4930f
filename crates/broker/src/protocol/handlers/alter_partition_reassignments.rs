//! AlterPartitionReassignments (key 45, v0-1; `kafka-reassign-partitions.sh --execute`,
//! Admin.alterPartitionReassignments): moves partitions to the replicas named, or cancels a
//! move (replicas null). Decided by the controller (`shard::reassignment`) and committed like
//! any metadata change; the answer comes once the move has started (or completed, where the
//! target replicas were in sync already), not once the data has moved. v1 adds
//! `allow_replication_factor_change` (KIP-860).

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::shard::controller::{ControllerRequest, ControllerResponse};
use crate::shard::reassignment::{Move, MoveOutcome};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const VERSIONS: (i16, i16) = (0, 1);

pub async fn handle(
    shard: &Rc<Shard>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let moves: Vec<Move> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| Move {
                topic: topic.name.0.to_string(),
                partition: p.partition_index,
                target: p
                    .replicas
                    .as_ref()
                    .map(|replicas| replicas.iter().map(|id| id.0).collect()),
            })
        })
        .collect();
    let allow_rf_change = version == 0 || request.allow_replication_factor_change;
    let asked = ControllerRequest::AlterReassignments {
        moves: moves.clone(),
        allow_rf_change,
    };
    let outcomes: Vec<MoveOutcome> = match shard
        .call(ShardId(0), ShardRequest::Controller(asked))
        .await
    {
        ShardResponse::Controller(ControllerResponse::Reassignments(outcomes)) => outcomes,
        _ => moves
            .into_iter()
            .map(|m| {
                let unavailable = (ErrorCode::NotController, "controller unavailable".into());
                (m.topic, m.partition, Err(unavailable))
            })
            .collect(),
    };
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(by_topic(outcomes))
}

/// The outcomes grouped by topic, in the order topics first appear.
fn by_topic(outcomes: Vec<MoveOutcome>) -> Vec<ReassignableTopicResponse> {
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, outcome) in outcomes {
        let (code, message) = match outcome {
            Ok(()) => (ErrorCode::None, None),
            Err((code, message)) => (code, Some(StrBytes::from_string(message))),
        };
        let answer = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(code.code())
            .with_error_message(message);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(existing) => existing.partitions.push(answer),
            None => topics.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    topics
}
