//! DescribeConfigs (key 32): a topic's effective configs (overrides and broker defaults) or the
//! broker's, enough for admin clients and tools.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::protocol::StrBytes;

use crate::config::{FlushPolicy, LogConfig, TimestampType, BROKER_KEYS};
use crate::error::ErrorCode;
use crate::metadata::broker_synonym;
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (1, 4);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(
    shard: &Shard,
    request: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => topic_entries(shard, &name),
                RESOURCE_BROKER if name.is_empty() || name == shard.config.node_id.to_string() => {
                    Ok(broker_entries(shard))
                }
                RESOURCE_BROKER => Err((
                    ErrorCode::InvalidRequest,
                    format!("broker {name} is not this broker"),
                )),
                other => Err((
                    ErrorCode::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            match entries {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .filter(|(k, _, _)| wanted(k))
                        .map(|(k, v, source)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_string(k))
                                .with_value(Some(StrBytes::from_string(v)))
                                .with_config_source(source)
                        })
                        .collect(),
                ),
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

type Entries = Vec<(String, String, i8)>;

fn topic_entries(shard: &Shard, topic: &str) -> Result<Entries, (ErrorCode, String)> {
    let image = shard.image();
    let meta = image.topic(topic).ok_or((
        ErrorCode::UnknownTopicOrPartition,
        format!("topic '{topic}' does not exist"),
    ))?;
    let mut entries: Entries = effective_topic_configs(&meta.log_config)
        .into_iter()
        .map(|(k, v)| match meta.configs.get(&k) {
            // Overrides the broker does not interpret (cleanup.policy, ...) are reported as set.
            Some(set) => (k, set.clone(), SOURCE_TOPIC),
            None if broker_synonym(&k).is_some_and(|b| image.broker_configs.contains_key(b)) => {
                (k, v, SOURCE_DYNAMIC_DEFAULT_BROKER)
            }
            None => (k, v, SOURCE_DEFAULT),
        })
        .collect();
    for (k, v) in &meta.configs {
        if !entries.iter().any(|(key, _, _)| key == k) {
            entries.push((k.clone(), v.clone(), SOURCE_TOPIC));
        }
    }
    Ok(entries)
}

fn effective_topic_configs(log: &LogConfig) -> Vec<(String, String)> {
    let flush = match log.flush {
        FlushPolicy::Durable => "1".to_string(),
        FlushPolicy::EveryMessages(n) => n.to_string(),
    };
    let timestamp_type = match log.timestamp_type {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    };
    vec![
        ("segment.bytes".into(), log.segment_bytes.to_string()),
        ("segment.ms".into(), log.segment_ms.to_string()),
        ("retention.ms".into(), log.retention_ms.to_string()),
        ("retention.bytes".into(), log.retention_bytes.to_string()),
        (
            "index.interval.bytes".into(),
            log.index_interval_bytes.to_string(),
        ),
        (
            "max.message.bytes".into(),
            log.max_message_bytes.to_string(),
        ),
        ("message.timestamp.type".into(), timestamp_type.into()),
        (
            "message.timestamp.before.max.ms".into(),
            log.timestamp_before_max_ms.to_string(),
        ),
        (
            "message.timestamp.after.max.ms".into(),
            log.timestamp_after_max_ms.to_string(),
        ),
        ("flush.messages".into(), flush),
        ("cleanup.policy".into(), cleanup_policy(log).into()),
        (
            "delete.retention.ms".into(),
            log.delete_retention_ms.to_string(),
        ),
        (
            "min.cleanable.dirty.ratio".into(),
            log.min_cleanable_dirty_ratio.to_string(),
        ),
        (
            "min.compaction.lag.ms".into(),
            log.min_compaction_lag_ms.to_string(),
        ),
        (
            "max.compaction.lag.ms".into(),
            log.max_compaction_lag_ms.to_string(),
        ),
        (
            "min.insync.replicas".into(),
            log.min_insync_replicas.get().to_string(),
        ),
        (
            "unclean.leader.election.enable".into(),
            log.unclean_leader_election.to_string(),
        ),
    ]
}

fn cleanup_policy(log: &LogConfig) -> &'static str {
    match (log.cleanup_delete, log.cleanup_compact) {
        (true, true) => "compact,delete",
        (false, true) => "compact",
        _ => "delete",
    }
}

fn broker_entries(shard: &Shard) -> Entries {
    let image = shard.image();
    BROKER_KEYS
        .iter()
        .map(|(k, _)| {
            if let Some(value) = image.broker_configs.get(*k) {
                return (k.to_string(), value.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER);
            }
            let source = if shard.config.overrides.contains_key(*k) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            (
                k.to_string(),
                shard.config.value_of(k).unwrap_or_default(),
                source,
            )
        })
        .collect()
}
