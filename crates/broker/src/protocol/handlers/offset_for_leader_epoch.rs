//! OffsetForLeaderEpoch (key 23): where a leader epoch ends in a partition's log, answered by
//! the partition's leader from its leader-epoch cache (`Partition::end_offset_for_epoch`).
//!
//! Consumers ask it after a leader change to find out whether the log they were reading was
//! truncated (KIP-320: `ReplicaId` -1); followers may ask it to find where to truncate
//! (`ReplicaId` their broker id). Both get the same answer, as in Kafka, which serves this only
//! from the leader and does not cap the end offset at the high watermark for either: the end of
//! the latest epoch is the log end. Refusals: NOT_LEADER_OR_FOLLOWER where this broker does not
//! lead the partition (the response has no field for a leader hint, so the client refreshes its
//! metadata), FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for a `CurrentLeaderEpoch` older /
//! newer than the partition's (-1: not checked), UNKNOWN_TOPIC_OR_PARTITION. An epoch the log
//! cannot place is no error: it gets epoch -1 and end offset -1.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::OffsetForLeaderEpochRequest;

use super::scatter::ask_owners;
use crate::error::ErrorCode;
use crate::metadata::records::LeaderEpoch;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::Offset;

/// v2 is the oldest version Kafka 4 speaks (and the first with `CurrentLeaderEpoch`), v3 adds
/// `ReplicaId`, v4 is flexible.
pub const VERSIONS: (i16, i16) = (2, 4);

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request.topics.iter().map(|t| {
        let partitions = t
            .partitions
            .iter()
            .map(|p| (p.partition, (p.current_leader_epoch, p.leader_epoch)));
        (t.topic.0.as_str(), partitions.collect())
    });
    let answers = ask_owners(
        shard,
        topics,
        |_| None,
        |items| ShardRequest::EpochEnds { items },
        |response| match response {
            ShardResponse::EpochEnds(results) => Some(results),
            _ => None,
        },
    )
    .await;
    let topics = request.topics.iter().zip(answers).map(|(topic, answers)| {
        let partitions = topic.partitions.iter().zip(answers);
        OffsetForLeaderTopicResult::default()
            .with_topic(topic.topic.clone())
            .with_partitions(partitions.map(|(p, end)| epoch_end(p, end)).collect())
    });
    OffsetForLeaderEpochResponse::default().with_topics(topics.collect())
}

/// Where the asked epoch ends in a partition's log; the defaults are Kafka's UNDEFINED (epoch -1,
/// end offset -1), for an epoch the log cannot place and alongside an error.
fn epoch_end(
    partition: &OffsetForLeaderPartition,
    end: Result<Option<(LeaderEpoch, Offset)>, ErrorCode>,
) -> EpochEndOffset {
    let answer = EpochEndOffset::default().with_partition(partition.partition);
    match end {
        Ok(Some((epoch, end))) => answer.with_leader_epoch(epoch.0).with_end_offset(end.0),
        Ok(None) => answer,
        Err(code) => answer.with_error_code(code.code()),
    }
}
