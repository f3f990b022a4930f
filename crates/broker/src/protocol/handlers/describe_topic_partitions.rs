//! DescribeTopicPartitions (key 75, KIP-966): topics and their partitions, paginated. Topics are
//! listed in name order from the request's cursor; once `response_partition_limit` partitions
//! (at most `DESCRIBE_TOPIC_PARTITIONS_MAX`) are listed, `next_cursor` names the first partition
//! left out. An empty topic list means every topic. Kafka 4's admin client (kafka-topics
//! --describe, Streams, Connect) uses this instead of Metadata when the broker advertises it.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::metadata::describe_partition;
use crate::error::ErrorCode;
use crate::limits::DESCRIBE_TOPIC_PARTITIONS_MAX;
use crate::metadata::{is_internal_topic, MetadataImage, TopicMeta};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 0);

pub fn handle(
    shard: &Shard,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = shard.image();
    let every_topic = request.topics.is_empty();
    let names: BTreeSet<String> = if every_topic {
        image.topics.keys().cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    let start = request
        .cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    if let Some((topic, partition)) = &start {
        if (!every_topic && !names.contains(topic)) || *partition < 0 {
            // Kafka refuses a cursor outside the topics asked for: each gets INVALID_REQUEST.
            let topics = names
                .into_iter()
                .map(|n| failed(n, ErrorCode::InvalidRequest))
                .collect();
            return DescribeTopicPartitionsResponse::default().with_topics(topics);
        }
    }
    let mut budget = request
        .response_partition_limit
        .clamp(1, DESCRIBE_TOPIC_PARTITIONS_MAX);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    let from = start.as_ref().map_or("", |(t, _)| t.as_str()).to_string();
    for name in names.range(from..) {
        let Some(meta) = image.topic(name) else {
            topics.push(failed(name.clone(), ErrorCode::UnknownTopicOrPartition));
            continue;
        };
        let first = match &start {
            Some((topic, partition)) if topic == name => *partition,
            _ => 0,
        };
        if budget == 0 {
            next_cursor = Some(cursor(name, first));
            break;
        }
        let last = meta.partitions.min(first.saturating_add(budget));
        topics.push(describe(&image, meta, first..last));
        budget -= (last - first).max(0);
        if last < meta.partitions {
            next_cursor = Some(cursor(name, last));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_index(partition)
}

/// One topic with the given partitions as the image has them, as Metadata describes them (see
/// `describe_partition`). No eligible leader replicas (KIP-966) yet.
fn describe(
    image: &MetadataImage,
    topic: &Arc<TopicMeta>,
    partitions: std::ops::Range<i32>,
) -> DescribeTopicPartitionsResponseTopic {
    let partitions = partitions
        .filter_map(|p| Some((p, topic.partition_states.get(p as usize)?)))
        .map(|(p, state)| {
            describe_partition!(DescribeTopicPartitionsResponsePartition, image, state, p)
                .with_eligible_leader_replicas(Some(vec![]))
                .with_last_known_elr(Some(vec![]))
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(partitions)
}

fn failed(name: String, code: ErrorCode) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code.code())
        .with_name(Some(TopicName(StrBytes::from_string(name))))
        .with_topic_id(Uuid::nil())
        .with_topic_authorized_operations(i32::MIN)
}
