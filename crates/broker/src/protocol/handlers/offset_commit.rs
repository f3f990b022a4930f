//! OffsetCommit (key 8): stores a group's consumed positions durably in `__consumer_offsets`,
//! answered once fsynced. Members commit with their generation; a consumer outside any group
//! (generation -1, no member id) commits only while the group is empty.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::coordinator;
use super::scatter::known;
use crate::error::ErrorCode;
use crate::group::records::CommittedOffset;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;
use crate::storage::Clock;
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (2, 9);

pub async fn handle(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let image = shard.image();
    let now = shard.clock.now_ms();
    let max_metadata = shard.config.offset_metadata_max_bytes;
    // Per partition: an error decided here, or None when it goes to the coordinator.
    let mut decided: Vec<Vec<Option<ErrorCode>>> = Vec::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let mut codes = Vec::new();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
            let code = if group.is_empty() {
                Some(ErrorCode::InvalidGroupId)
            } else if !known(&image, &topic.name, p.partition_index) {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else if metadata.as_ref().is_some_and(|m| m.len() > max_metadata) {
                Some(ErrorCode::OffsetMetadataTooLarge)
            } else {
                offsets.push((
                    TopicPartition::new(topic.name.to_string(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.unwrap_or_default(),
                        commit_timestamp_ms: now,
                    },
                ));
                None
            };
            codes.push(code);
        }
        decided.push(codes);
    }
    let coordinated = if group.is_empty() {
        Ok(Vec::new())
    } else {
        let op = GroupOp::Commit {
            group,
            generation: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|s| s.to_string()),
            offsets,
        };
        match coordinator::call(shard, op).await {
            GroupAnswer::Codes(codes) => codes,
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    };
    let mut from_coordinator = coordinated.as_ref().ok().map(|c| c.iter().copied());
    let group_error = coordinated.as_ref().err().copied();
    let topics = request
        .topics
        .into_iter()
        .zip(decided)
        .map(|(topic, codes)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(codes)
                .map(|(p, code)| {
                    let code = code.or(group_error).unwrap_or_else(|| {
                        from_coordinator
                            .as_mut()
                            .and_then(|c| c.next())
                            .unwrap_or(ErrorCode::UnknownServerError)
                    });
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
