//! WriteTxnMarkers (key 27, v1): a transaction coordinator on another broker asks this one to
//! end a transaction on partitions it leads, with a COMMIT or ABORT marker each. Each marker is
//! written through the owning shard (`ShardRequest::WriteMarkers`) and answered once committed;
//! a partition this broker does not lead gets NOT_LEADER_OR_FOLLOWER, and the coordinator asks
//! its leader again.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::scatter::ask_owners;
use crate::error::ErrorCode;
use crate::shard::{Marker, Shard, ShardRequest, ShardResponse};
use crate::storage::batch::ControlType;
use crate::types::{ProducerEpoch, ProducerId};

pub const VERSIONS: (i16, i16) = (1, 1);

pub async fn handle(shard: &Rc<Shard>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in &request.markers {
        let written = Marker {
            producer: ProducerId(marker.producer_id.0),
            epoch: ProducerEpoch(marker.producer_epoch),
            control: if marker.transaction_result {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
            coordinator_epoch: marker.coordinator_epoch,
        };
        let topics = marker.topics.iter().map(|t| {
            let partitions = t.partition_indexes.iter().map(|p| (*p, ())).collect();
            (t.name.0.as_str(), partitions)
        });
        let request_for = |items: Vec<(_, ())>| ShardRequest::WriteMarkers {
            marker: written,
            partitions: items.into_iter().map(|(tp, ())| tp).collect(),
        };
        let answers_of = |response| match response {
            ShardResponse::PerPartition(results) => Some(results),
            _ => None,
        };
        let answers = ask_owners(shard, topics, |_| None, request_for, answers_of).await;
        let topics = marker.topics.iter().zip(answers).map(|(t, answers)| {
            let partitions = t.partition_indexes.iter().zip(answers).map(|(p, answer)| {
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(*p)
                    .with_error_code(answer.err().unwrap_or(ErrorCode::None).code())
            });
            WritableTxnMarkerTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions.collect())
        });
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics.collect()),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
