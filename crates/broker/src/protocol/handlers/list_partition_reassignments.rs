//! ListPartitionReassignments (key 46, v0; `kafka-reassign-partitions.sh --verify` and
//! `--list`, Admin.listPartitionReassignments): the reassignments under way, read from this
//! broker's metadata image (a reassignment is under way while its partition has replicas being
//! added or removed). Partitions asked for that do not exist, or are not moving, are left out,
//! as Kafka leaves them.

use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::records;
use crate::shard::reassignment;
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 0);

pub fn handle(
    shard: &Rc<Shard>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = shard.image();
    let asked: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for (topic, partition, state) in reassignment::ongoing(&image, asked.as_deref()) {
        let ongoing = OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(ids(&state.replicas))
            .with_adding_replicas(ids(&state.adding))
            .with_removing_replicas(ids(&state.removing));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(existing) => existing.partitions.push(ongoing),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![ongoing]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

fn ids(brokers: &[records::BrokerId]) -> Vec<BrokerId> {
    brokers.iter().map(|b| BrokerId(b.0)).collect()
}
