//! ListOffsets (key 2): earliest (-2), latest (-1, the high watermark, which is also the last
//! stable offset until transactions exist) and by timestamp, from the owning shards, which
//! refuse partitions this broker does not lead under the client's leader epoch (v4+).

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::ListOffsetsRequest;

use super::scatter::ask_owners;
use crate::error::ErrorCode;
use crate::shard::{OffsetFound, Shard, ShardRequest, ShardResponse};

pub const VERSIONS: (i16, i16) = (1, 6);

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // The leader epoch fields exist from v4; earlier versions must leave them at their defaults.
    let epochs = version >= 4;
    let topics = request.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            let client_epoch = if epochs { p.current_leader_epoch } else { -1 };
            (p.partition_index, (p.timestamp, client_epoch))
        });
        (t.name.0.as_str(), partitions.collect())
    });
    let answers = ask_owners(
        shard,
        topics,
        |_| None,
        |items| ShardRequest::ListOffsets { items },
        |response| match response {
            ShardResponse::ListOffsets(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let topics = request.topics.iter().zip(answers).map(|(topic, answers)| {
        let partitions = topic.partitions.iter().zip(answers);
        let partitions = partitions.map(|(p, found)| response(p, found, epochs));
        ListOffsetsTopicResponse::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.collect())
    });
    ListOffsetsResponse::default().with_topics(topics.collect())
}

/// The offset found for a partition, or -1 everywhere and why not; the leader epoch only where
/// the version has the field (`epochs`).
fn response(
    partition: &ListOffsetsPartition,
    found: Result<OffsetFound, ErrorCode>,
    epochs: bool,
) -> ListOffsetsPartitionResponse {
    let response =
        ListOffsetsPartitionResponse::default().with_partition_index(partition.partition_index);
    match found {
        Ok(found) => response
            .with_timestamp(found.timestamp)
            .with_offset(found.offset.0)
            .with_leader_epoch(if epochs { found.leader_epoch.0 } else { -1 }),
        Err(code) => response
            .with_error_code(code.code())
            .with_timestamp(-1)
            .with_offset(-1)
            .with_leader_epoch(-1),
    }
}
