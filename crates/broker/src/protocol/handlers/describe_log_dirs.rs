//! DescribeLogDirs (key 35): the one log directory (the data dir) with each partition's size on
//! disk, read from the owning shards; v4 adds the file system's total and usable bytes. Kafka's
//! tools (kafka-log-dirs) and the admin CLI's `topic describe` use it for sizes.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::scatter::{known, scatter};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (1, 4);

pub async fn handle(
    shard: &Rc<Shard>,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let image = shard.image();
    let wanted: Vec<TopicPartition> = match &request.topics {
        None => image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(|p| TopicPartition::new(t.name.clone(), p)))
            .collect(),
        // Kafka leaves out partitions it does not host.
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| known(&image, &t.topic, **p))
                    .map(|p| TopicPartition::new(t.topic.to_string(), *p))
            })
            .collect(),
    };
    let items = wanted
        .iter()
        .enumerate()
        .map(|(i, tp)| ((i, 0), tp.clone(), ()))
        .collect();
    let request_for = |items: Vec<(TopicPartition, ())>| ShardRequest::PartitionSizes {
        partitions: items.into_iter().map(|(tp, _)| tp).collect(),
    };
    let answers_of = |response| match response {
        ShardResponse::PartitionSizes(sizes) => Some(sizes),
        _ => None,
    };
    let sizes = scatter(shard, items, request_for, answers_of).await;
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (i, tp) in wanted.into_iter().enumerate() {
        if let Some(Ok(size)) = sizes.get(&(i, 0)) {
            topics.entry(tp.topic).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(tp.partition.0)
                    .with_partition_size(*size as i64),
            );
        }
    }
    let dir = &shard.config.data_dir;
    let log_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    if version >= 4 {
        let (total, usable) = nix::sys::statvfs::statvfs(dir)
            .map(|s| {
                let block = s.fragment_size() as i64;
                (
                    s.blocks() as i64 * block,
                    s.blocks_available() as i64 * block,
                )
            })
            .unwrap_or((-1, -1));
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
