//! DeleteRecords (key 21): moves partitions' log start offsets forward (-1: to the high
//! watermark), durably, deleting whole segments below them. Offsets past the high watermark get
//! OFFSET_OUT_OF_RANGE.

use std::collections::HashMap;
use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::DeleteRecordsRequest;

use crate::error::ErrorCode;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::{Offset, ShardId, TopicPartition};

pub const VERSIONS: (i16, i16) = (0, 2);

type Slot = (usize, usize);

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = shard.image();
    let mut answers: HashMap<Slot, Result<Offset, ErrorCode>> = HashMap::new();
    let mut routed: HashMap<ShardId, Vec<(Slot, TopicPartition, i64)>> = HashMap::new();
    for (ti, topic) in request.topics.iter().enumerate() {
        let meta = image.topic(topic.name.0.as_str());
        for (pi, p) in topic.partitions.iter().enumerate() {
            let tp = TopicPartition::new(topic.name.0.as_str(), p.partition_index);
            if meta.is_none_or(|m| p.partition_index < 0 || p.partition_index >= m.partitions) {
                answers.insert((ti, pi), Err(ErrorCode::UnknownTopicOrPartition));
            } else {
                routed
                    .entry(shard.owner_of(&tp))
                    .or_default()
                    .push(((ti, pi), tp, p.offset));
            }
        }
    }
    let calls = routed.into_iter().map(|(owner, items)| async move {
        let slots: Vec<Slot> = items.iter().map(|(s, _, _)| *s).collect();
        let request = ShardRequest::DeleteRecords {
            items: items.into_iter().map(|(_, tp, o)| (tp, o)).collect(),
        };
        (slots, shard.call(owner, request).await)
    });
    for (slots, response) in join_all(calls).await {
        let results = match response {
            ShardResponse::DeleteRecords(results) => results,
            _ => vec![Err(ErrorCode::NotLeaderOrFollower); slots.len()],
        };
        answers.extend(slots.into_iter().zip(results));
    }
    let topics = request
        .topics
        .iter()
        .enumerate()
        .map(|(ti, topic)| {
            let partitions = topic
                .partitions
                .iter()
                .enumerate()
                .map(|(pi, p)| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match answers
                        .remove(&(ti, pi))
                        .unwrap_or(Err(ErrorCode::UnknownServerError))
                    {
                        Ok(low) => result.with_low_watermark(low.0),
                        Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
