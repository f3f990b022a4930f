//! FindCoordinator (key 10): every group and transactional id is coordinated by this broker (one
//! of its shards, which the broker routes to internally). The first request of each kind creates
//! `__consumer_offsets` or `__transaction_state`.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::advertised;
use super::coordinator::Client;
use super::create_topics::call_controller;
use crate::error::ErrorCode;
use crate::group::records::OFFSETS_TOPIC;
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
    let error = match request.key_type {
        KEY_TYPE_GROUP => ensure_internal_topic(shard, OFFSETS_TOPIC).await,
        KEY_TYPE_TRANSACTION => ensure_internal_topic(shard, TXN_TOPIC).await,
        _ => ErrorCode::InvalidRequest,
    };
    let (host, port) = advertised(shard, client);
    let node = BrokerId(shard.config.node_id);
    let message = (error != ErrorCode::None).then(|| StrBytes::from_string(error.to_string()));
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default()
                    .with_key(key)
                    .with_error_code(error.code())
                    .with_error_message(message.clone());
                if error == ErrorCode::None {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default().with_error_code(error.code());
    let response = if version >= 1 {
        response.with_error_message(message)
    } else {
        response
    };
    if error == ErrorCode::None {
        response.with_node_id(node).with_host(host).with_port(port)
    } else {
        response.with_node_id(BrokerId(-1)).with_port(-1)
    }
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
        Some((_, Err((code, message)))) => {
            tracing::error!("creating {name}: {code}: {message}");
            ErrorCode::CoordinatorNotAvailable
        }
        None => ErrorCode::CoordinatorNotAvailable,
    }
}
