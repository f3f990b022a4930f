//! CreateTopics (key 19): validated and applied by the controller on shard 0, which persists the
//! metadata and opens the partitions on their shards before this answers.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::CreateTopicsRequest;
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::shard::controller::{ControllerRequest, ControllerResponse, NewTopic, TopicOutcome};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const VERSIONS: (i16, i16) = (2, 7);

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreateTopicsRequest,
    _version: i16,
) -> CreateTopicsResponse {
    let mut refused = Vec::new();
    let mut topics = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let configs: Result<BTreeMap<String, String>, String> = t
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => Ok((c.name.to_string(), v.to_string())),
                None => Err(format!("config {} has no value", c.name.as_str())),
            })
            .collect();
        match configs {
            Err(message) => refused.push((name, Err((ErrorCode::InvalidConfig, message)))),
            Ok(configs) => topics.push(NewTopic {
                name,
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                assignment: t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect(),
                configs,
            }),
        }
    }
    let mut outcomes = call_controller(
        shard,
        ControllerRequest::CreateTopics {
            topics,
            validate_only: request.validate_only,
        },
    )
    .await;
    outcomes.extend(refused);
    CreateTopicsResponse::default().with_topics(outcomes.into_iter().map(result_of).collect())
}

fn result_of((name, outcome): (String, TopicOutcome)) -> CreatableTopicResult {
    let result = CreatableTopicResult::default().with_name(StrBytes::from_string(name).into());
    match outcome {
        Ok(meta) => result
            .with_topic_id(meta.id)
            .with_num_partitions(meta.partitions)
            .with_replication_factor(1),
        Err((code, message)) => result
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_num_partitions(-1)
            .with_replication_factor(-1),
    }
}

/// Runs a topic operation on the controller (shard 0) and returns its per-topic outcomes.
pub async fn call_controller(
    shard: &Rc<Shard>,
    request: ControllerRequest,
) -> Vec<(String, TopicOutcome)> {
    let names: Vec<String> = match &request {
        ControllerRequest::CreateTopics { topics, .. } => {
            topics.iter().map(|t| t.name.clone()).collect()
        }
        ControllerRequest::DeleteTopics { names } => names.clone(),
        ControllerRequest::CreatePartitions { topics, .. } => {
            topics.iter().map(|(n, _)| n.clone()).collect()
        }
        ControllerRequest::AlterTopicConfigs { changes, .. } => {
            changes.iter().map(|(n, _)| n.clone()).collect()
        }
        ControllerRequest::AllocateProducerIds { .. }
        | ControllerRequest::AlterBrokerConfigs { .. }
        | ControllerRequest::ReconcileLiveness { .. }
        | ControllerRequest::ElectLeaders { .. }
        | ControllerRequest::AlterPartition(_)
        | ControllerRequest::AlterReassignments { .. } => Vec::new(),
        ControllerRequest::EnsureInternalTopic(name) => vec![name.clone()],
    };
    match shard
        .call(ShardId(0), ShardRequest::Controller(request))
        .await
    {
        ShardResponse::Controller(ControllerResponse::Topics(outcomes)) => outcomes,
        _ => names
            .into_iter()
            .map(|n| {
                (
                    n,
                    Err((
                        ErrorCode::NotLeaderOrFollower,
                        "controller unavailable".to_string(),
                    )),
                )
            })
            .collect(),
    }
}
