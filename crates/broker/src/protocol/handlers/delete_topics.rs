//! DeleteTopics (key 20): by name (all versions) or topic id (v6+); the controller removes the
//! topic from the metadata and each owning shard deletes the partition directories.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::create_topics::call_controller;
use crate::error::ErrorCode;
use crate::shard::controller::ControllerRequest;
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (1, 6);

pub async fn handle(
    shard: &Rc<Shard>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let image = shard.image();
    let mut names = Vec::new();
    let mut unknown_ids = Vec::new();
    if version >= 6 {
        for t in &request.topics {
            match (&t.name, image.topic_by_id(t.topic_id)) {
                (Some(name), _) => names.push(name.0.to_string()),
                (None, Some(meta)) => names.push(meta.name.clone()),
                (None, None) => unknown_ids.push(t.topic_id),
            }
        }
    } else {
        names.extend(request.topic_names.iter().map(|n| n.0.to_string()));
    }
    let outcomes = call_controller(shard, ControllerRequest::DeleteTopics { names }).await;
    let mut responses: Vec<DeletableTopicResult> = outcomes
        .into_iter()
        .map(|(name, outcome)| {
            let result = DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))));
            match outcome {
                Ok(meta) => result.with_topic_id(meta.id),
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    responses.extend(unknown_ids.into_iter().map(|id: Uuid| {
        DeletableTopicResult::default()
            .with_topic_id(id)
            .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
    }));
    DeleteTopicsResponse::default().with_responses(responses)
}
