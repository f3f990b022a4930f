//! Delivering a transaction's COMMIT or ABORT markers, from the coordinator's shard, to each of
//! its partitions' leaders: on this broker through the owning shards
//! (`ShardRequest::WriteMarkers`), on another through WriteTxnMarkers (key 27), one request per
//! leader. A partition comes back as "still to do" while its leader is unknown, fenced or
//! failing; the coordinator retries those until every marker is committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;
use crate::shard::{Marker, Shard, ShardRequest, ShardResponse};
use crate::storage::batch::ControlType;
use crate::types::{ShardId, TopicPartition};

/// The WriteTxnMarkers version brokers speak (Kafka 4 knows only v1).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Writes `marker` on every partition, all leaders at once; returns the partitions that still
/// need it (those of deleted topics are done).
pub async fn write_markers(
    shard: &Rc<Shard>,
    marker: Marker,
    partitions: BTreeSet<TopicPartition>,
) -> BTreeSet<TopicPartition> {
    let image = shard.image();
    let me = BrokerId(shard.config.node_id);
    let mut local = Vec::new();
    let mut remote: BTreeMap<BrokerId, Vec<TopicPartition>> = BTreeMap::new();
    let mut remaining = BTreeSet::new();
    for tp in partitions {
        let Some(leader) = leader_of(&image, &tp) else {
            continue; // deleted
        };
        if leader == me {
            local.push(tp);
        } else if leader == BrokerId::NONE {
            remaining.insert(tp);
        } else {
            remote.entry(leader).or_default().push(tp);
        }
    }
    let remote_calls = remote
        .into_iter()
        .map(|(leader, tps)| write_remote(shard, &image, marker, leader, tps));
    let (local_left, remote_left) =
        futures::join!(write_local(shard, marker, local), join_all(remote_calls));
    remaining.extend(local_left);
    remaining.extend(remote_left.into_iter().flatten());
    remaining
}

/// The partition's leader; `None` when the partition no longer exists.
fn leader_of(image: &MetadataImage, tp: &TopicPartition) -> Option<BrokerId> {
    image
        .topic(&tp.topic)
        .and_then(|t| {
            t.partition_states
                .get(usize::try_from(tp.partition.0).ok()?)
        })
        .map(|state| state.leader)
}

/// Groups partitions by owning shard.
fn by_owner(
    shard: &Shard,
    partitions: impl IntoIterator<Item = TopicPartition>,
) -> HashMap<ShardId, Vec<TopicPartition>> {
    let mut routed: HashMap<ShardId, Vec<TopicPartition>> = HashMap::new();
    for tp in partitions {
        routed.entry(shard.owner_of(&tp)).or_default().push(tp);
    }
    routed
}

/// Writes `marker` on partitions this broker leads, through their shards; returns the failures.
async fn write_local(
    shard: &Rc<Shard>,
    marker: Marker,
    partitions: Vec<TopicPartition>,
) -> Vec<TopicPartition> {
    let calls = by_owner(shard, partitions)
        .into_iter()
        .map(|(owner, partitions)| async move {
            let request = ShardRequest::WriteMarkers {
                marker,
                partitions: partitions.clone(),
            };
            (partitions, shard.call(owner, request).await)
        });
    let mut failed = Vec::new();
    for (partitions, response) in join_all(calls).await {
        let results = match response {
            ShardResponse::PerPartition(results) => results,
            _ => vec![Err(ErrorCode::CoordinatorNotAvailable); partitions.len()],
        };
        for (tp, result) in partitions.into_iter().zip(results) {
            if let Err(code) = result {
                tracing::warn!("marker for {tp}: {code}");
                failed.push(tp);
            }
        }
    }
    failed
}

/// Sends `marker` for `partitions` to their leader `to`; returns those it did not write.
async fn write_remote(
    shard: &Rc<Shard>,
    image: &MetadataImage,
    marker: Marker,
    to: BrokerId,
    partitions: Vec<TopicPartition>,
) -> Vec<TopicPartition> {
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![marker_request(marker, &partitions)]);
    let answer = shard
        .peers
        .call(image, to, WRITE_TXN_MARKERS_VERSION, &request)
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(
                "markers for {} partitions led by broker {}: {err}",
                partitions.len(),
                to.0
            );
            return partitions;
        }
    };
    let mut written = BTreeSet::new();
    for result in response
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == marker.producer.0)
    {
        for topic in &result.topics {
            for p in &topic.partitions {
                let tp = TopicPartition::new(topic.name.0.to_string(), p.partition_index);
                if p.error_code == ErrorCode::None.code() {
                    written.insert(tp);
                } else {
                    tracing::warn!("marker for {tp} on broker {}: error {}", to.0, p.error_code);
                }
            }
        }
    }
    partitions
        .into_iter()
        .filter(|tp| !written.contains(tp))
        .collect()
}

/// One marker of a WriteTxnMarkers request, its partitions grouped by topic.
fn marker_request(marker: Marker, partitions: &[TopicPartition]) -> WritableTxnMarker {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        topics.entry(&tp.topic).or_default().push(tp.partition.0);
    }
    WritableTxnMarker::default()
        .with_producer_id(kafka_protocol::messages::ProducerId(marker.producer.0))
        .with_producer_epoch(marker.epoch.0)
        .with_transaction_result(marker.control == ControlType::Commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partition_indexes(partitions)
                })
                .collect(),
        )
}
