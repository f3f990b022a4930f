//! AlterPartition (key 56, v2-3): a partition leader asks the controller to change its ISR.
//! Kafka serves it on the controller listener; Sluice serves it on the broker listeners and
//! hands it to this broker's controller (shard 0), which decides it (`shard::alter_partition`)
//! and commits the change through the metadata quorum, as it does every metadata change (on a
//! single broker, into its own metadata file). v2 names the new ISR by broker id; v3 adds the
//! registration epoch each member was seen fetching at (KIP-903).

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_request::PartitionData as PartitionRequest;
use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use kafka_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse};

use crate::error::ErrorCode;
use crate::metadata::records::{BrokerEpoch, BrokerId, LeaderEpoch, PartitionEpoch};
use crate::shard::alter_partition::{AlterPartition, IsrChange, IsrMember, RECOVERED};
use crate::shard::controller::{ControllerRequest, ControllerResponse};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::{PartitionId, ShardId};

pub const VERSIONS: (i16, i16) = (2, 3);

/// The broker epoch a v3 member carries when the leader does not know it.
const NO_EPOCH: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    request: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let request = AlterPartition {
        broker: BrokerId(request.broker_id.0),
        broker_epoch: BrokerEpoch(request.broker_epoch),
        topics: request
            .topics
            .into_iter()
            .map(|t| {
                let changes = t.partitions.iter().map(|p| change(p, version)).collect();
                (t.topic_id, changes)
            })
            .collect(),
    };
    let answer = match shard
        .call(
            ShardId(0),
            ShardRequest::Controller(ControllerRequest::AlterPartition(request)),
        )
        .await
    {
        ShardResponse::Controller(ControllerResponse::AlterPartition(answer)) => answer,
        _ => Err(ErrorCode::NotController),
    };
    let topics = match answer {
        Ok(topics) => topics,
        Err(code) => return AlterPartitionResponse::default().with_error_code(code.code()),
    };
    let topics = topics
        .into_iter()
        .map(|(topic_id, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(partition, outcome)| {
                    let data = PartitionData::default().with_partition_index(partition.0);
                    match outcome {
                        Ok(state) => data
                            .with_leader_id(kafka_protocol::messages::BrokerId(state.leader.0))
                            .with_leader_epoch(state.leader_epoch.0)
                            .with_isr(
                                state
                                    .isr
                                    .iter()
                                    .map(|b| kafka_protocol::messages::BrokerId(b.0))
                                    .collect(),
                            )
                            .with_leader_recovery_state(RECOVERED)
                            .with_partition_epoch(state.partition_epoch.0),
                        Err(code) => data.with_error_code(code.code()),
                    }
                })
                .collect();
            TopicData::default()
                .with_topic_id(topic_id)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionResponse::default().with_topics(topics)
}

/// One partition's change as the controller takes it.
fn change(p: &PartitionRequest, version: i16) -> IsrChange {
    let new_isr = if version >= 3 {
        p.new_isr_with_epochs
            .iter()
            .map(|m| IsrMember {
                id: BrokerId(m.broker_id.0),
                epoch: (m.broker_epoch != NO_EPOCH).then_some(BrokerEpoch(m.broker_epoch)),
            })
            .collect()
    } else {
        p.new_isr
            .iter()
            .map(|id| IsrMember {
                id: BrokerId(id.0),
                epoch: None,
            })
            .collect()
    };
    IsrChange {
        partition: PartitionId(p.partition_index),
        leader_epoch: LeaderEpoch(p.leader_epoch),
        partition_epoch: PartitionEpoch(p.partition_epoch),
        new_isr,
        leader_recovery_state: p.leader_recovery_state,
    }
}
