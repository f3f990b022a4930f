//! ElectLeaders (key 43, v0-2; `kafka-leader-election.sh`, Admin.electLeaders): preferred or
//! unclean leader elections, decided by the controller (`shard::elections`) and committed like
//! any metadata change. v0 knows only preferred elections.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::shard::controller::{ControllerRequest, ControllerResponse};
use crate::shard::elections::ElectionType;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const VERSIONS: (i16, i16) = (0, 2);

/// Kafka's election_type values.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let kind = match request.election_type {
        _ if version == 0 => ElectionType::Preferred,
        PREFERRED => ElectionType::Preferred,
        UNCLEAN => ElectionType::Unclean,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
        }
    };
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        let mut asked: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for t in topics {
            asked
                .entry(t.topic.0.to_string())
                .or_default()
                .extend(&t.partitions);
        }
        asked
    });
    let asked = ControllerRequest::ElectLeaders { kind, partitions };
    let outcomes = match shard
        .call(ShardId(0), ShardRequest::Controller(asked))
        .await
    {
        ShardResponse::Controller(ControllerResponse::Elections(outcomes)) => outcomes,
        _ => {
            return ElectLeadersResponse::default().with_error_code(ErrorCode::NotController.code())
        }
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, code) in outcomes {
        let message = (code != ErrorCode::None).then(|| StrBytes::from_string(format!("{code}")));
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code.code())
                .with_error_message(message),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}
