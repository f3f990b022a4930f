//! DeleteRecords (key 21): moves partitions' log start offsets forward (-1: to the high
//! watermark), durably, deleting whole segments below them. Offsets past the high watermark get
//! OFFSET_OUT_OF_RANGE.

use std::rc::Rc;

use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::DeleteRecordsRequest;

use super::scatter::ask_owners;
use crate::error::ErrorCode;
use crate::metadata::is_internal_topic;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::Offset;

pub const VERSIONS: (i16, i16) = (0, 2);

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| (p.partition_index, p.offset));
        (t.name.0.as_str(), partitions.collect())
    });
    // The coordinators replay the internal logs from their start: deleting records there
    // would silently drop committed offsets or transaction state.
    let refuse = |name: &str| is_internal_topic(name).then_some(ErrorCode::InvalidTopicException);
    let answers = ask_owners(
        shard,
        topics,
        refuse,
        |items| ShardRequest::DeleteRecords { items },
        |response| match response {
            ShardResponse::DeleteRecords(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let topics = request.topics.iter().zip(answers).map(|(topic, answers)| {
        let partitions = topic.partitions.iter().zip(answers);
        DeleteRecordsTopicResult::default()
            .with_name(topic.name.clone())
            .with_partitions(partitions.map(|(p, low)| result(p, low)).collect())
    });
    DeleteRecordsResponse::default().with_topics(topics.collect())
}

/// A partition's new low watermark, or -1 and why not.
fn result(
    partition: &DeleteRecordsPartition,
    low: Result<Offset, ErrorCode>,
) -> DeleteRecordsPartitionResult {
    let result =
        DeleteRecordsPartitionResult::default().with_partition_index(partition.partition_index);
    match low {
        Ok(low) => result.with_low_watermark(low.0),
        Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
    }
}
