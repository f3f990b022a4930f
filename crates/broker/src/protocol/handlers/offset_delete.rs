//! OffsetDelete (key 47): removes a group's committed offsets for some partitions, unless the
//! group's live members subscribe to the topic (GROUP_SUBSCRIBED_TO_TOPIC).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::coordinator;
use super::scatter::known;
use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (0, 0);

pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let image = shard.image();
    let mut partitions = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            if known(&image, &topic.name, p.partition_index) {
                partitions.push(TopicPartition::new(
                    topic.name.to_string(),
                    p.partition_index,
                ));
            }
        }
    }
    let op = GroupOp::DeleteOffsets {
        group: request.group_id.to_string(),
        partitions: partitions.clone(),
    };
    let codes = if request.group_id.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else {
        match coordinator::call(shard, op).await {
            GroupAnswer::Codes(codes) => codes,
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    };
    let codes = match codes {
        Ok(codes) => codes,
        Err(code) => return OffsetDeleteResponse::default().with_error_code(code.code()),
    };
    let decided: Vec<(TopicPartition, ErrorCode)> = partitions.into_iter().zip(codes).collect();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let code = decided
                        .iter()
                        .find(|(tp, _)| {
                            tp.topic.as_str() == topic.name.as_str()
                                && tp.partition.0 == p.partition_index
                        })
                        .map(|(_, code)| *code)
                        .unwrap_or(ErrorCode::UnknownTopicOrPartition);
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
