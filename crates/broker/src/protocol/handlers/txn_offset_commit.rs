//! TxnOffsetCommit (key 28): offsets committed as part of the producer's transaction (sent to
//! the group's coordinator). They become visible when the transaction commits and vanish if it
//! aborts. v3+ carries the member, validated like OffsetCommit.

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::coordinator;
use super::scatter::known;
use crate::error::ErrorCode;
use crate::group::records::CommittedOffset;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;
use crate::storage::Clock;
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(
    shard: &Rc<Shard>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let image = shard.image();
    let now = shard.clock.now_ms();
    let group = request.group_id.to_string();
    let mut offsets = Vec::new();
    let mut refused = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let tp = TopicPartition::new(topic.name.to_string(), p.partition_index);
            if !known(&image, &topic.name, p.partition_index) {
                refused.push((tp, ErrorCode::UnknownTopicOrPartition));
                continue;
            }
            offsets.push((
                tp,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let accepted: Vec<TopicPartition> = offsets.iter().map(|(tp, _)| tp.clone()).collect();
    let codes = if group.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else if offsets.is_empty() {
        Ok(Vec::new())
    } else {
        let (generation, member_id, instance_id) = if version >= 3 {
            (
                request.generation_id,
                request.member_id.to_string(),
                request.group_instance_id.map(|s| s.to_string()),
            )
        } else {
            (-1, String::new(), None)
        };
        let op = GroupOp::TxnCommit {
            group,
            txn_id: request.transactional_id.to_string(),
            producer: ProducerId(request.producer_id.0),
            epoch: ProducerEpoch(request.producer_epoch),
            generation,
            member_id,
            instance_id,
            offsets,
        };
        match coordinator::call(shard, op).await {
            GroupAnswer::Codes(codes) => codes,
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    };
    let code_of = |tp: &TopicPartition| -> ErrorCode {
        if let Some((_, code)) = refused.iter().find(|(r, _)| r == tp) {
            return *code;
        }
        match &codes {
            Err(code) => *code,
            Ok(codes) => accepted
                .iter()
                .position(|a| a == tp)
                .and_then(|i| codes.get(i).copied())
                .unwrap_or(ErrorCode::UnknownServerError),
        }
    };
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let tp = TopicPartition::new(t.name.to_string(), p.partition_index);
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code_of(&tp).code())
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
