//! One handler per Kafka API, each with its supported version range declared beside it.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition;
pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod coordinator;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leader_hints;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod scatter;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::rc::Rc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;
use crate::network::request_memory::FrameCharge;
use crate::protocol::fetch_frame;
use crate::shard::Shard;
use crate::storage::payload::Payload;

/// A handler's answer: a message for the crate to encode, or a body already framed as chunks.
pub enum Reply {
    Message(Box<ResponseKind>),
    Chunks(Vec<Payload>),
}

/// Runs the handler for a decoded request; `None` when the request gets no response. The
/// request's bytes stay charged to the shard's request memory until it is answered, except where
/// a handler gives them back sooner (`request_memory`).
pub async fn dispatch(
    shard: &Rc<Shard>,
    request: RequestKind,
    version: i16,
    client: &coordinator::Client,
    charge: FrameCharge,
) -> Option<Reply> {
    let (charge, request) = match request {
        RequestKind::Produce(r) => {
            let answer = produce::handle(shard, r, version, client, charge).await?;
            return Some(Reply::Message(Box::new(ResponseKind::Produce(answer))));
        }
        other => (charge, other),
    };
    let _held_until_answered = charge;
    let message = match request {
        RequestKind::Fetch(r) => {
            let answer = fetch::handle(shard, r, version, client).await;
            return Some(Reply::Chunks(fetch_frame::encode_body(version, &answer)));
        }
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(version)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shard, r, version, client).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(shard, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(shard, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(shard, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(shard, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(shard, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(shard, r, version))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(shard, r, client))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(shard, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::handle_alter(shard, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(alter_configs::handle_incremental(shard, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(shard, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(shard, r, version, client).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(join_group::handle(shard, r, version, client).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(sync_group::handle(shard, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(shard, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(shard, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(shard, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(shard, r, version).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(shard, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(shard, r, version).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(shard, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(shard, r, version).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(shard, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn::handle(shard, r).await),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(shard, r, version).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(shard, r, version).await)
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(shard, r))
        }
        RequestKind::DescribeAcls(_) => ResponseKind::DescribeAcls(describe_acls::handle()),
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(create_acls::handle(r)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(delete_acls::handle(r)),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(shard, r, version).await)
        }
        RequestKind::AlterPartition(r) => {
            ResponseKind::AlterPartition(alter_partition::handle(shard, r, version).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments::handle(shard, r, version).await,
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(list_partition_reassignments::handle(shard, r))
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::handle(shard, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(shard, r).await)
        }
        other => {
            // parse_request only lets supported APIs through.
            tracing::error!("no handler for {other:?}");
            return None;
        }
    };
    Some(Reply::Message(Box::new(message)))
}

/// A broker clients may connect to, at its address on their listener.
pub struct LiveBroker {
    pub id: i32,
    pub host: StrBytes,
    pub port: i32,
}

/// Every registered, unfenced broker at its address on the listener the request came in on;
/// this broker too before its registration is applied (it is the one clients reached), but not
/// while the metadata has it fenced (it leads nothing then: clients are better sent elsewhere).
/// What Metadata and DescribeCluster list.
pub fn live_brokers(
    shard: &Shard,
    image: &MetadataImage,
    client: &coordinator::Client,
) -> Vec<LiveBroker> {
    let me = shard.config.node_id;
    let mut brokers = Vec::new();
    let fenced = image.brokers.get(&BrokerId(me)).is_some_and(|b| b.fenced);
    if !fenced {
        let (host, port) = advertised(shard, client);
        brokers.push(LiveBroker { id: me, host, port });
    }
    for broker in image.brokers.values().filter(|b| !b.fenced && b.id.0 != me) {
        let endpoint = broker
            .endpoints
            .iter()
            .find(|e| *e.name == *client.listener);
        if let Some(endpoint) = endpoint {
            brokers.push(LiveBroker {
                id: broker.id.0,
                host: StrBytes::from_string(endpoint.host.clone()),
                port: i32::from(endpoint.port),
            });
        }
    }
    brokers
}

/// The host and port `client` should connect to: as Kafka answers, the advertised address of
/// the listener the request came in on (else the client listener's).
pub fn advertised(shard: &Shard, client: &coordinator::Client) -> (StrBytes, i32) {
    let listener = shard.config.advertised_for(&client.listener);
    (
        StrBytes::from_string(listener.host.clone()),
        i32::from(listener.port),
    )
}
