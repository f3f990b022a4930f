//! DescribeLogDirs (key 35): the one log directory (the data dir) with each partition's size on
//! disk, read from the owning shards; v4 adds the file system's total and usable bytes. Kafka's
//! tools (kafka-log-dirs) and the admin CLI's `topic describe` use it for sizes.
//!
//! From v2 (the flexible versions) a partition with damaged ranges (see
//! `storage::segment_check`) carries them in Sluice's tagged field (`sluice_client::
//! damaged_ranges`), which `sluice log-dirs describe` prints and Kafka's clients skip.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_client::damaged_ranges::{self, DamageKind as WireKind, DAMAGED_RANGES_TAG};

use super::scatter::{known, scatter};
use crate::limits::LOG_DIRS_DAMAGED_RANGES_MAX;
use crate::shard::{PartitionLogDir, Shard, ShardRequest, ShardResponse};
use crate::storage::segment_check::{DamageKind, DamagedRange};
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
    let request_for = |items: Vec<(TopicPartition, ())>| ShardRequest::PartitionLogDirs {
        partitions: items.into_iter().map(|(tp, _)| tp).collect(),
    };
    let answers_of = |response| match response {
        ShardResponse::PartitionLogDirs(dirs) => Some(dirs),
        _ => None,
    };
    let dirs = scatter(shard, items, request_for, answers_of).await;
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (i, tp) in wanted.into_iter().enumerate() {
        if let Some(Ok(dir)) = dirs.get(&(i, 0)) {
            topics
                .entry(tp.topic)
                .or_default()
                .push(partition(tp.partition.0, dir, version));
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

/// One partition's entry; its damaged ranges (the first `LOG_DIRS_DAMAGED_RANGES_MAX`) go in
/// Sluice's tagged field, which only the flexible versions have.
fn partition(index: i32, dir: &PartitionLogDir, version: i16) -> DescribeLogDirsPartition {
    let entry = DescribeLogDirsPartition::default()
        .with_partition_index(index)
        .with_partition_size(dir.size_bytes as i64);
    if version < 2 || dir.damaged.is_empty() {
        return entry;
    }
    let ranges: Vec<_> = dir
        .damaged
        .iter()
        .take(LOG_DIRS_DAMAGED_RANGES_MAX)
        .map(wire_range)
        .collect();
    entry.with_unknown_tagged_field(DAMAGED_RANGES_TAG, damaged_ranges::encode(&ranges))
}

fn wire_range(d: &DamagedRange) -> damaged_ranges::DamagedRange {
    damaged_ranges::DamagedRange {
        kind: match d.kind {
            DamageKind::Corrupt => WireKind::Corrupt,
            DamageKind::Lost => WireKind::Lost,
            DamageKind::Truncated => WireKind::Truncated,
        },
        segment_base_offset: d.segment.0,
        position: d.position as i64,
        size_bytes: d.bytes as i64,
        first_offset: d.first.0,
        // Kafka's messages give ranges by their last offset.
        last_offset: d.next.map_or(-1, |next| next.0 - 1),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::types::Offset;

    fn corrupt() -> DamagedRange {
        DamagedRange {
            kind: DamageKind::Corrupt,
            segment: Offset(100),
            position: 2048,
            bytes: 300,
            first: Offset(120),
            next: Some(Offset(140)),
        }
    }

    /// Encodes `entry` at `version` and decodes it back, as a client does.
    fn round_trip(entry: &DescribeLogDirsPartition, version: i16) -> DescribeLogDirsPartition {
        let mut buf = BytesMut::new();
        entry.encode(&mut buf, version).unwrap();
        let mut bytes = buf.freeze();
        DescribeLogDirsPartition::decode(&mut bytes, version).unwrap()
    }

    #[test]
    fn damaged_ranges_travel_in_the_tagged_field_of_flexible_versions_only() {
        let truncated = DamagedRange {
            kind: DamageKind::Truncated,
            segment: Offset(900),
            position: 64,
            bytes: 10,
            first: Offset(950),
            next: None,
        };
        let dir = PartitionLogDir {
            size_bytes: 5000,
            damaged: vec![corrupt(), truncated],
        };
        for version in 2..=4 {
            let read = round_trip(&partition(3, &dir, version), version);
            assert_eq!((read.partition_index, read.partition_size), (3, 5000));
            let field = &read.unknown_tagged_fields[&DAMAGED_RANGES_TAG];
            let ranges = damaged_ranges::decode(field).unwrap();
            assert_eq!(
                ranges,
                vec![
                    damaged_ranges::DamagedRange {
                        kind: WireKind::Corrupt,
                        segment_base_offset: 100,
                        position: 2048,
                        size_bytes: 300,
                        first_offset: 120,
                        last_offset: 139,
                    },
                    damaged_ranges::DamagedRange {
                        kind: WireKind::Truncated,
                        segment_base_offset: 900,
                        position: 64,
                        size_bytes: 10,
                        first_offset: 950,
                        last_offset: -1,
                    },
                ],
                "v{version}"
            );
        }
        // v1 has no tagged fields; a healthy partition carries none.
        assert!(partition(3, &dir, 1).unknown_tagged_fields.is_empty());
        let healthy = PartitionLogDir {
            size_bytes: 5000,
            damaged: Vec::new(),
        };
        assert!(partition(3, &healthy, 4).unknown_tagged_fields.is_empty());
    }

    #[test]
    fn an_answer_lists_at_most_the_limit_of_ranges() {
        let dir = PartitionLogDir {
            size_bytes: 1,
            damaged: vec![corrupt(); LOG_DIRS_DAMAGED_RANGES_MAX + 5],
        };
        let entry = partition(0, &dir, 4);
        let ranges = damaged_ranges::decode(&entry.unknown_tagged_fields[&DAMAGED_RANGES_TAG]);
        assert_eq!(ranges.unwrap().len(), LOG_DIRS_DAMAGED_RANGES_MAX);
    }
}
