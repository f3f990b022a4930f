//! FindCoordinator (key 10): a group or transactional id is coordinated by the broker leading its
//! partition of `__consumer_offsets` or `__transaction_state` (on a single broker, this one; the
//! broker routes to the owning shard internally). The first request of each kind creates the
//! topic.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::advertised;
use super::coordinator::Client;
use super::create_topics::call_controller;
use crate::error::ErrorCode;
use crate::group::records::{partition_for_group, OFFSETS_TOPIC};
use crate::shard::controller::ControllerRequest;
use crate::shard::Shard;
use crate::txn::state::TXN_TOPIC;

pub const VERSIONS: (i16, i16) = (0, 4);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    request: FindCoordinatorRequest,
    version: i16,
    client: &Client,
) -> FindCoordinatorResponse {
    let topic = match request.key_type {
        KEY_TYPE_GROUP => Ok(OFFSETS_TOPIC),
        KEY_TYPE_TRANSACTION => Ok(TXN_TOPIC),
        _ => Err(ErrorCode::InvalidRequest),
    };
    let topic = match topic {
        Ok(topic) => match ensure_internal_topic(shard, topic).await {
            ErrorCode::None => Ok(topic),
            error => Err(error),
        },
        Err(error) => Err(error),
    };
    let locate = |key: &str| topic.and_then(|topic| coordinator(shard, topic, key, client));
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| match locate(&key) {
                Ok((node, host, port)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host)
                    .with_port(port),
                Err(error) => Coordinator::default()
                    .with_key(key)
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(error.to_string())))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match locate(&request.key) {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port),
        Err(error) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(error.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(StrBytes::from_string(error.to_string())))
            } else {
                response
            }
        }
    }
}

/// The broker coordinating `key`: the leader of its partition of `topic` (as Kafka places
/// coordinators), at its address on the client's listener.
fn coordinator(
    shard: &Shard,
    topic: &str,
    key: &str,
    client: &Client,
) -> Result<(BrokerId, StrBytes, i32), ErrorCode> {
    let image = shard.image();
    let meta = image
        .topic(topic)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partition = partition_for_group(key, meta.partitions);
    let leader = meta
        .partition_states
        .get(partition as usize)
        .map(|state| state.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    if leader.0 == shard.config.node_id {
        let (host, port) = advertised(shard, client);
        return Ok((BrokerId(leader.0), host, port));
    }
    let endpoint = image
        .brokers
        .get(&leader)
        .filter(|broker| !broker.fenced)
        .and_then(|broker| {
            broker
                .endpoints
                .iter()
                .find(|e| *e.name == *client.listener)
        })
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    Ok((
        BrokerId(leader.0),
        StrBytes::from_string(endpoint.host.clone()),
        i32::from(endpoint.port),
    ))
}

/// Creates the coordinator's internal topic on first use.
pub async fn ensure_internal_topic(shard: &Rc<Shard>, name: &str) -> ErrorCode {
    if shard.image().topic(name).is_some() {
        return ErrorCode::None;
    }
    let request = ControllerRequest::EnsureInternalTopic(name.to_string());
    let outcomes = call_controller(shard, request).await;
    match outcomes.into_iter().next() {
        Some((_, Ok(_))) => ErrorCode::None,
        // Retriable either way: the client asks again (a cluster still starting, a quorum
        // without a leader yet).
        Some((_, Err((code, message)))) => {
            tracing::info!("{name} not created yet: {code}: {message}");
            ErrorCode::CoordinatorNotAvailable
        }
        None => ErrorCode::CoordinatorNotAvailable,
    }
}
