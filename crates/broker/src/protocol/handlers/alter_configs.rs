//! AlterConfigs (key 33) and IncrementalAlterConfigs (key 44) for topics and the broker:
//! validated by the controller with Kafka's names (INVALID_CONFIG with a message otherwise),
//! persisted in the metadata file, and applied to the live partitions on every shard. Of the
//! broker's configs, the cluster-wide defaults of topic configs (`log.retention.ms`,
//! `log.cleanup.policy`, ...: `metadata::DYNAMIC_BROKER_CONFIGS`) change at run time, for the
//! resource named "" (the cluster default) or this broker's id; the rest are set at start.

use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{AlterConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::call_controller;
use crate::error::ErrorCode;
use crate::shard::controller::{ConfigChange, ControllerRequest, ControllerResponse};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const ALTER_VERSIONS: (i16, i16) = (0, 2);
pub const INCREMENTAL_VERSIONS: (i16, i16) = (0, 1);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// (resource type, name, error code, message) per resource, in request order.
type Outcome = (i8, StrBytes, i16, Option<StrBytes>);

async fn alter(
    shard: &Rc<Shard>,
    resources: Vec<(i8, StrBytes, ConfigChange)>,
    validate_only: bool,
) -> Vec<Outcome> {
    let mut others = Vec::new();
    let mut changes = Vec::new();
    for (resource_type, name, change) in &resources {
        if *resource_type == RESOURCE_TOPIC {
            changes.push((name.to_string(), change.clone()));
            continue;
        }
        let outcome = match *resource_type {
            RESOURCE_BROKER if name.is_empty() || **name == shard.config.node_id.to_string() => {
                alter_broker(shard, change.clone(), validate_only).await
            }
            RESOURCE_BROKER => Err((
                ErrorCode::InvalidRequest,
                format!(
                    "broker {name} is not this broker ({})",
                    shard.config.node_id
                ),
            )),
            other => Err((
                ErrorCode::InvalidRequest,
                format!("resource type {other} has no configs to alter"),
            )),
        };
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err((code, message)) => (code.code(), Some(StrBytes::from_string(message))),
        };
        others.push((name.clone(), code, message));
    }
    let mut outcomes = call_controller(
        shard,
        ControllerRequest::AlterTopicConfigs {
            changes,
            validate_only,
        },
    )
    .await
    .into_iter();
    let mut others = others.into_iter();
    resources
        .into_iter()
        .map(|(resource_type, name, _)| {
            if resource_type != RESOURCE_TOPIC {
                let (name, code, message) =
                    others.next().expect("one outcome per non-topic resource");
                return (resource_type, name, code, message);
            }
            match outcomes.next() {
                Some((_, Ok(_))) => (resource_type, name, 0, None),
                Some((_, Err((code, message)))) => (
                    resource_type,
                    name,
                    code.code(),
                    Some(StrBytes::from_string(message)),
                ),
                None => (
                    resource_type,
                    name,
                    ErrorCode::UnknownServerError.code(),
                    None,
                ),
            }
        })
        .collect()
}

async fn alter_broker(
    shard: &Rc<Shard>,
    change: ConfigChange,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let request = ControllerRequest::AlterBrokerConfigs {
        change,
        validate_only,
    };
    match shard
        .call(ShardId(0), ShardRequest::Controller(request))
        .await
    {
        ShardResponse::Controller(ControllerResponse::Broker(outcome)) => outcome,
        _ => Err((
            ErrorCode::UnknownServerError,
            "controller unavailable".into(),
        )),
    }
}

pub async fn handle_alter(shard: &Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let configs = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            (
                r.resource_type,
                r.resource_name,
                ConfigChange::Replace(configs),
            )
        })
        .collect();
    let responses = alter(shard, resources, request.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn handle_incremental(
    shard: &Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.to_string()),
                    )
                })
                .collect();
            (
                r.resource_type,
                r.resource_name,
                ConfigChange::Incremental(ops),
            )
        })
        .collect();
    let responses = alter(shard, resources, request.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            IncrementalResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
