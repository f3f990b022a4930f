//! ListOffsets (key 2): earliest (-2), latest (-1, the high watermark, which is also the last
//! stable offset until transactions exist) and by timestamp, from the owning shards.

use std::collections::HashMap;
use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::ListOffsetsRequest;

use crate::error::ErrorCode;
use crate::shard::{OffsetAnswer, Shard, ShardRequest, ShardResponse};
use crate::types::{ShardId, TopicPartition};

pub const VERSIONS: (i16, i16) = (1, 6);

type Slot = (usize, usize);

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // The leader epoch field exists from v4; earlier versions must leave it at its default.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let image = shard.image();
    let mut answers: HashMap<Slot, OffsetAnswer> = HashMap::new();
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
                    .push(((ti, pi), tp, p.timestamp));
            }
        }
    }
    let calls = routed.into_iter().map(|(owner, items)| async move {
        let slots: Vec<Slot> = items.iter().map(|(s, _, _)| *s).collect();
        let request = ShardRequest::ListOffsets {
            items: items.into_iter().map(|(_, tp, ts)| (tp, ts)).collect(),
        };
        (slots, shard.call(owner, request).await)
    });
    for (slots, response) in join_all(calls).await {
        let results = match response {
            ShardResponse::ListOffsets(results) => results,
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
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match answers
                        .remove(&(ti, pi))
                        .unwrap_or(Err(ErrorCode::UnknownServerError))
                    {
                        Ok((timestamp, offset)) => response
                            .with_timestamp(timestamp)
                            .with_offset(offset.0)
                            .with_leader_epoch(leader_epoch),
                        Err(code) => response
                            .with_error_code(code.code())
                            .with_timestamp(-1)
                            .with_offset(-1)
                            .with_leader_epoch(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
