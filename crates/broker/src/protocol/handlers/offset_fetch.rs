//! OffsetFetch (key 9): a group's committed offsets (-1 where nothing is committed), for listed
//! partitions or all of them (null topics, v2+); v8+ asks for several groups at once.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::{FetchedOffset, FetchedOffsets, GroupAnswer, GroupOp};
use crate::shard::Shard;
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (1, 9);

/// One group's answer: committed offsets grouped by topic, or a group-level error.
type TopicOffsets = Vec<(String, Vec<(i32, FetchedOffset)>)>;

pub async fn handle(
    shard: &Rc<Shard>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for g in request.groups {
            let partitions = g.topics.map(|topics| {
                partitions_of(topics.iter().map(|t| (&t.name, &t.partition_indexes)))
            });
            let fetched = fetch(
                shard,
                g.group_id.to_string(),
                partitions,
                request.require_stable,
            )
            .await;
            groups.push(encode_group(g.group_id, fetched));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let partitions = request
        .topics
        .map(|topics| partitions_of(topics.iter().map(|t| (&t.name, &t.partition_indexes))));
    let requested = partitions.clone();
    let require_stable = version >= 7 && request.require_stable;
    match fetch(
        shard,
        request.group_id.to_string(),
        partitions,
        require_stable,
    )
    .await
    {
        Ok(topics) => OffsetFetchResponse::default().with_topics(encode_topics(topics)),
        Err(code) if version >= 2 => OffsetFetchResponse::default().with_error_code(code.code()),
        Err(code) => {
            // v1 has no group-level error: every partition carries it.
            let topics = by_topic(
                requested
                    .unwrap_or_default()
                    .into_iter()
                    .map(|tp| (tp, Err(code)))
                    .collect(),
            );
            OffsetFetchResponse::default().with_topics(encode_topics(topics))
        }
    }
}

/// The partitions a request lists, each topic with its partition indexes (v8+ lists them per
/// group, in types of their own).
fn partitions_of<'a>(
    topics: impl Iterator<Item = (&'a TopicName, &'a Vec<i32>)>,
) -> Vec<TopicPartition> {
    topics
        .flat_map(|(name, indexes)| {
            indexes
                .iter()
                .map(|p| TopicPartition::new(name.to_string(), *p))
        })
        .collect()
}

async fn fetch(
    shard: &Rc<Shard>,
    group: String,
    partitions: Option<Vec<TopicPartition>>,
    require_stable: bool,
) -> Result<TopicOffsets, ErrorCode> {
    if group.is_empty() {
        return Err(ErrorCode::InvalidGroupId);
    }
    let op = GroupOp::FetchOffsets {
        group,
        partitions,
        require_stable,
    };
    match coordinator::call(shard, op).await {
        GroupAnswer::Offsets(Ok(offsets)) => Ok(by_topic(offsets)),
        GroupAnswer::Offsets(Err(code)) => Err(code),
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// Groups partitions under their topic, keeping the order topics first appear in.
fn by_topic(offsets: FetchedOffsets) -> TopicOffsets {
    let mut topics: TopicOffsets = Vec::new();
    for (tp, value) in offsets {
        match topics.iter_mut().find(|(name, _)| *name == tp.topic) {
            Some((_, partitions)) => partitions.push((tp.partition.0, value)),
            None => topics.push((tp.topic, vec![(tp.partition.0, value)])),
        }
    }
    topics
}

/// `TopicOffsets` as a response's `$topic`s of `$partition`s. v8+ answers per group, in types
/// of their own (`OffsetFetchResponseTopics`, `OffsetFetchResponsePartitions`) with the same
/// fields as the older versions' (`OffsetFetchResponseTopic`, `OffsetFetchResponsePartition`):
/// a macro, so that one body serves both.
macro_rules! encode_topics_as {
    ($topics:expr, $topic:ident, $partition:ident) => {
        $topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions.into_iter().map(|(index, value)| {
                    let (offset, epoch, metadata, error) = fields(value);
                    $partition::default()
                        .with_partition_index(index)
                        .with_error_code(error.code())
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(metadata))
                });
                $topic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions.collect())
            })
            .collect()
    };
}

fn encode_topics(topics: TopicOffsets) -> Vec<OffsetFetchResponseTopic> {
    encode_topics_as!(
        topics,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    )
}

fn encode_group(
    group_id: kafka_protocol::messages::GroupId,
    fetched: Result<TopicOffsets, ErrorCode>,
) -> OffsetFetchResponseGroup {
    let group = OffsetFetchResponseGroup::default().with_group_id(group_id);
    match fetched {
        Err(code) => group.with_error_code(code.code()),
        Ok(topics) => group.with_topics(encode_topics_as!(
            topics,
            OffsetFetchResponseTopics,
            OffsetFetchResponsePartitions
        )),
    }
}

/// (offset, leader epoch, metadata, error) as the wire carries them; -1 and "" when nothing
/// is committed (or the partition has an error).
fn fields(value: FetchedOffset) -> (i64, i32, StrBytes, ErrorCode) {
    match value {
        Ok(Some(v)) => (
            v.offset,
            v.leader_epoch,
            StrBytes::from_string(v.metadata),
            ErrorCode::None,
        ),
        Ok(None) => (-1, -1, StrBytes::default(), ErrorCode::None),
        Err(code) => (-1, -1, StrBytes::default(), code),
    }
}
