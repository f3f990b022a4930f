//! CreatePartitions (key 37): grows a topic's partition count, with the new partitions' replicas
//! if the request names them (checked as Kafka checks them); new partitions open on their owning
//! shards before the answer.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::CreatePartitionsRequest;
use kafka_protocol::protocol::StrBytes;

use super::create_topics::call_controller;
use crate::shard::controller::{ControllerRequest, NewPartitions};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 3);

pub async fn handle(
    shard: &Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let assignment = t.assignments.as_ref().map(|assignments| {
                assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            let new = NewPartitions {
                count: t.count,
                assignment,
            };
            (t.name.0.to_string(), new)
        })
        .collect();
    let outcomes = call_controller(
        shard,
        ControllerRequest::CreatePartitions {
            topics,
            validate_only: request.validate_only,
        },
    )
    .await;
    let results = outcomes
        .into_iter()
        .map(|(name, outcome)| {
            let result = CreatePartitionsTopicResult::default()
                .with_name(StrBytes::from_string(name).into());
            match outcome {
                Ok(_) => result,
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
