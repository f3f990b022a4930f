//! Metadata (key 3): the registered brokers at their addresses on the request's listener, topics
//! with ids and partitions (leader, leader epoch, replicas and ISR as the metadata records say),
//! auto-creating unknown topics when `auto.create.topics.enable` allows it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::coordinator::Client;
use super::live_brokers;
use crate::error::ErrorCode;
use crate::metadata::records::{self, PartitionState};
use crate::metadata::{is_internal_topic, is_valid_topic_name, MetadataImage, TopicMeta};
use crate::shard::controller::{ControllerRequest, NewTopic};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 12);

pub async fn handle(
    shard: &Rc<Shard>,
    request: MetadataRequest,
    version: i16,
    client: &Client,
) -> MetadataResponse {
    let wanted = requested_topics(shard, &request, version);
    if let Some(names) = &wanted {
        let may_create =
            shard.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let missing: Vec<String> = names
            .iter()
            .flatten()
            .filter(|n| {
                shard.image().topic(n).is_none() && is_valid_topic_name(n) && !is_internal_topic(n)
            })
            .cloned()
            .collect();
        if may_create && !missing.is_empty() {
            auto_create(shard, missing).await;
        }
    }
    let image = shard.image();
    let topics = match wanted {
        None => image
            .topics
            .values()
            .map(|t| describe_topic(version, &image, t))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match name.as_deref().and_then(|n| image.topic(n)) {
                Some(topic) => describe_topic(version, &image, topic),
                None => unknown_topic(name),
            })
            .collect(),
    };
    let node = BrokerId(shard.config.node_id);
    MetadataResponse::default()
        .with_brokers(brokers(shard, &image, client))
        .with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())))
        // Any broker takes admin requests and commits them through the quorum.
        .with_controller_id(node)
        .with_cluster_authorized_operations(i32::MIN)
        .with_topics(topics)
}

/// The live brokers, as Metadata lists them.
fn brokers(shard: &Shard, image: &MetadataImage, client: &Client) -> Vec<MetadataResponseBroker> {
    live_brokers(shard, image, client)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(b.host)
                .with_port(b.port)
        })
        .collect()
}

/// `None`: all topics. Names may be missing (a topic id this broker does not know).
fn requested_topics(
    shard: &Shard,
    request: &MetadataRequest,
    version: i16,
) -> Option<Vec<Option<String>>> {
    let topics = request.topics.as_ref()?;
    if topics.is_empty() && version == 0 {
        return None; // v0: an empty list means all topics
    }
    let image = shard.image();
    Some(
        topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => Some(name.0.to_string()),
                None => image.topic_by_id(t.topic_id).map(|m| m.name.clone()),
            })
            .collect(),
    )
}

async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) {
    let topics = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            assignment: Vec::new(),
            configs: BTreeMap::new(),
        })
        .collect();
    let outcomes = super::create_topics::call_controller(
        shard,
        ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        },
    )
    .await;
    for (name, outcome) in outcomes {
        match outcome {
            Ok(meta) => tracing::info!(
                "auto-created topic {name} with {} partitions",
                meta.partitions
            ),
            Err((ErrorCode::TopicAlreadyExists, _)) => {}
            Err((code, message)) => {
                tracing::warn!("auto-creating topic {name} failed: {code}: {message}")
            }
        }
    }
}

/// A partition of a Metadata or DescribeTopicPartitions answer, `$partition` (each API has a
/// type of its own, with the same fields), as the image's `$state` of partition `$index` says:
/// a partition without a leader (its replicas' brokers fenced) answers LEADER_NOT_AVAILABLE, and
/// replicas on fenced brokers are offline. A macro, so that one body serves both types.
macro_rules! describe_partition {
    ($partition:ident, $image:expr, $state:expr, $index:expr) => {{
        use $crate::protocol::handlers::metadata::{broker_ids, leader_error};
        let state: &$crate::metadata::records::PartitionState = $state;
        let image: &$crate::metadata::MetadataImage = $image;
        let offline = state.replicas.iter().filter(|r| !image.is_live(**r));
        $partition::default()
            .with_error_code(leader_error(state).code())
            .with_partition_index($index)
            .with_leader_id(kafka_protocol::messages::BrokerId(state.leader.0))
            .with_leader_epoch(state.leader_epoch.0)
            .with_replica_nodes(broker_ids(&state.replicas))
            .with_isr_nodes(broker_ids(&state.isr))
            .with_offline_replicas(broker_ids(offline))
    }};
}
pub(super) use describe_partition;

/// LEADER_NOT_AVAILABLE for a partition without a leader: a client asks again later.
pub(super) fn leader_error(state: &PartitionState) -> ErrorCode {
    if state.leader == records::BrokerId::NONE {
        ErrorCode::LeaderNotAvailable
    } else {
        ErrorCode::None
    }
}

/// Brokers as the wire names them.
pub(super) fn broker_ids<'a>(
    brokers: impl IntoIterator<Item = &'a records::BrokerId>,
) -> Vec<BrokerId> {
    brokers.into_iter().map(|b| BrokerId(b.0)).collect()
}

/// A topic with its partitions as the image has them (see `describe_partition`).
fn describe_topic(
    version: i16,
    image: &MetadataImage,
    topic: &Arc<TopicMeta>,
) -> MetadataResponseTopic {
    let partitions = topic
        .partition_states
        .iter()
        .zip(0..)
        .map(|(state, p)| describe_partition!(MetadataResponsePartition, image, state, p))
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_is_internal(version >= 1 && is_internal_topic(&topic.name))
        .with_topic_id(topic.id)
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(partitions)
}

fn unknown_topic(name: Option<String>) -> MetadataResponseTopic {
    let code = match &name {
        Some(n) if !is_valid_topic_name(n) => ErrorCode::InvalidTopicException,
        _ => ErrorCode::UnknownTopicOrPartition,
    };
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(Uuid::nil())
        .with_topic_authorized_operations(i32::MIN)
}
