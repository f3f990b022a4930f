//! The metadata controller, on shard 0: creates, deletes and grows topics, hands out producer
//! ids, persists the metadata file (write-temp, fsync, rename, fsync dir) and then pushes the new
//! snapshot to every shard before answering. Operations run one at a time.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use std::cell::Cell;
use uuid::Uuid;

use super::assignment::{self, Replicas};
use super::{Shard, ShardRequest};
use crate::error::ErrorCode;
use crate::group::records::OFFSETS_TOPIC;
use crate::limits;
use crate::metadata::{
    is_internal_topic, is_valid_topic_name, topic_log_config, MetadataImage, TopicMeta,
    METADATA_FILE,
};
use crate::storage::fs::UringStorage;
use crate::storage::write_atomically;
use crate::txn::state::TXN_TOPIC;
use crate::types::ShardId;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's num.partitions.
    pub partitions: i32,
    /// -1 or 1: there is one broker.
    pub replication_factor: i16,
    /// An explicit replica assignment, (partition index, replicas); empty when the broker places
    /// the replicas. With one, `partitions` and `replication_factor` are -1.
    pub assignment: Vec<(i32, Replicas)>,
    pub configs: BTreeMap<String, String>,
}

/// Partitions to add to a topic: the new count, and the replicas of each new partition if the
/// request names them.
#[derive(Debug, Clone)]
pub struct NewPartitions {
    pub count: i32,
    pub assignment: Option<Vec<Replicas>>,
}

/// A change to a topic's configs (AlterConfigs replaces them all; IncrementalAlterConfigs edits).
#[derive(Debug, Clone)]
pub enum ConfigChange {
    Replace(BTreeMap<String, String>),
    /// (key, Kafka's operation: 0 set, 1 delete, 2 append, 3 subtract, value).
    Incremental(Vec<(String, i8, Option<String>)>),
}

/// Configs whose value is a comma-separated list (APPEND and SUBTRACT apply to these).
const LIST_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("log.cleanup.policy", "delete"),
];

#[derive(Debug)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, NewPartitions)>,
        validate_only: bool,
    },
    AlterTopicConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// Run-time broker configs (the cluster-wide defaults of topic configs).
    AlterBrokerConfigs {
        change: ConfigChange,
        validate_only: bool,
    },
    AllocateProducerId,
    /// Creates an internal topic (`__consumer_offsets`, `__transaction_state`) if it does not
    /// exist yet (the first FindCoordinator for it does).
    EnsureInternalTopic(String),
}

/// Per-topic outcome: the topic as it now stands, or an error code with a message.
pub type TopicOutcome = Result<Arc<TopicMeta>, (ErrorCode, String)>;

#[derive(Debug)]
pub enum ControllerResponse {
    Topics(Vec<(String, TopicOutcome)>),
    ProducerId(Result<i64, ErrorCode>),
    Broker(Result<(), (ErrorCode, String)>),
    NotController,
}

pub struct Controller {
    one_at_a_time: Semaphore,
    next_producer_id: Cell<i64>,
}

/// The topic's overrides after `change`, or why it cannot apply.
fn apply_change(
    current: &BTreeMap<String, String>,
    change: ConfigChange,
) -> Result<BTreeMap<String, String>, String> {
    let ops = match change {
        ConfigChange::Replace(configs) => return Ok(configs),
        ConfigChange::Incremental(ops) => ops,
    };
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let mut configs = current.clone();
    for (key, op, value) in ops {
        match op {
            SET => {
                let value = value.ok_or_else(|| format!("{key}: SET needs a value"))?;
                configs.insert(key, value);
            }
            DELETE => {
                configs.remove(&key);
            }
            APPEND | SUBTRACT => {
                let default = LIST_CONFIGS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| *d);
                let default = default.ok_or_else(|| {
                    format!("{key} is not a list config: APPEND and SUBTRACT do not apply")
                })?;
                let existing = configs
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| default.to_string());
                let mut items: Vec<String> = existing
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if op == APPEND && !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    } else if op == SUBTRACT {
                        items.retain(|i| i != item);
                    }
                }
                configs.insert(key, items.join(","));
            }
            other => return Err(format!("{key}: unknown config operation {other}")),
        }
    }
    Ok(configs)
}

/// The topic as it stands, or UNKNOWN_TOPIC_OR_PARTITION.
fn existing<'a>(
    image: &'a MetadataImage,
    name: &str,
) -> Result<&'a Arc<TopicMeta>, (ErrorCode, String)> {
    image.topic(name).ok_or_else(|| {
        (
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })
}

/// The brokers a replica assignment may name: this one (the cluster has one broker).
fn registered_brokers(shard: &Shard) -> std::collections::BTreeSet<i32> {
    [shard.config.node_id].into()
}

fn fail(code: ErrorCode, message: impl Into<String>) -> TopicOutcome {
    Err((code, message.into()))
}

impl Controller {
    pub fn new(image: &MetadataImage) -> Controller {
        // Ids below the persisted reservation may have been handed out before a crash: skip them.
        Controller {
            one_at_a_time: Semaphore::new(1),
            next_producer_id: Cell::new(image.producer_ids_reserved_to),
        }
    }

    pub async fn handle(
        &self,
        shard: &Rc<Shard>,
        request: ControllerRequest,
    ) -> ControllerResponse {
        let _permit = self
            .one_at_a_time
            .acquire_permit(1)
            .await
            .expect("semaphore never closes");
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => ControllerResponse::Topics(self.create_topics(shard, topics, validate_only).await),
            ControllerRequest::DeleteTopics { names } => {
                ControllerResponse::Topics(self.delete_topics(shard, names).await)
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => ControllerResponse::Topics(
                self.create_partitions(shard, topics, validate_only).await,
            ),
            ControllerRequest::AlterTopicConfigs {
                changes,
                validate_only,
            } => ControllerResponse::Topics(
                self.alter_topic_configs(shard, changes, validate_only)
                    .await,
            ),
            ControllerRequest::EnsureInternalTopic(name) => {
                ControllerResponse::Topics(self.ensure_internal_topic(shard, name).await)
            }
            ControllerRequest::AlterBrokerConfigs {
                change,
                validate_only,
            } => ControllerResponse::Broker(
                self.alter_broker_configs(shard, change, validate_only)
                    .await,
            ),
            ControllerRequest::AllocateProducerId => {
                ControllerResponse::ProducerId(self.allocate_producer_id(shard).await)
            }
        }
    }

    async fn ensure_internal_topic(
        &self,
        shard: &Rc<Shard>,
        name: String,
    ) -> Vec<(String, TopicOutcome)> {
        if let Some(meta) = shard.image().topic(&name) {
            return vec![(name, Ok(meta.clone()))];
        }
        let config = &shard.config;
        let (partitions, segment_bytes) = match name.as_str() {
            OFFSETS_TOPIC => (
                config.offsets_topic_num_partitions,
                config.offsets_topic_segment_bytes,
            ),
            TXN_TOPIC => (
                config.transaction_state_partitions,
                config.transaction_state_segment_bytes,
            ),
            other => {
                let refusal = fail(
                    ErrorCode::InvalidRequest,
                    format!("{other} is not internal"),
                );
                return vec![(name.clone(), refusal)];
            }
        };
        let topic = NewTopic {
            name: name.clone(),
            partitions,
            replication_factor: 1,
            assignment: Vec::new(),
            configs: [
                ("cleanup.policy", "compact".to_string()),
                ("segment.bytes", segment_bytes.to_string()),
                (
                    "max.message.bytes",
                    limits::OFFSETS_TOPIC_MAX_MESSAGE_BYTES.to_string(),
                ),
                ("compression.type", "producer".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        tracing::info!("creating {name} with {partitions} partitions");
        self.update_topics(shard, vec![(name, topic)], false, |image, topic| {
            self.check_topic(shard, image, &topic)
        })
        .await
    }

    async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<(String, TopicOutcome)> {
        let changes = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        self.update_topics(shard, changes, validate_only, |image, topic| {
            self.check_new_topic(shard, image, &topic)
        })
        .await
    }

    /// Decides each topic's new state against the image as updated by the topics before it,
    /// then persists and publishes the result once (unless `validate_only`).
    async fn update_topics<T>(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(String, T)>,
        validate_only: bool,
        decide: impl Fn(&MetadataImage, T) -> TopicOutcome,
    ) -> Vec<(String, TopicOutcome)> {
        let mut image = (*shard.image()).clone();
        let mut outcomes = Vec::new();
        for (name, change) in changes {
            let outcome = decide(&image, change);
            if let (Ok(meta), false) = (&outcome, validate_only) {
                image.topics.insert(name.clone(), meta.clone());
            }
            outcomes.push((name, outcome));
        }
        self.commit_if_changed(shard, image, &mut outcomes).await;
        outcomes
    }

    /// A topic a client asked for: never one of the broker's internal topics.
    fn check_new_topic(
        &self,
        shard: &Shard,
        image: &MetadataImage,
        topic: &NewTopic,
    ) -> TopicOutcome {
        if is_internal_topic(&topic.name) && image.topic(&topic.name).is_none() {
            return fail(
                ErrorCode::InvalidRequest,
                format!("{} is an internal topic; the broker creates it", topic.name),
            );
        }
        self.check_topic(shard, image, topic)
    }

    fn check_topic(&self, shard: &Shard, image: &MetadataImage, topic: &NewTopic) -> TopicOutcome {
        if !is_valid_topic_name(&topic.name) {
            return fail(
                ErrorCode::InvalidTopicException,
                format!("topic name {:?} is not valid", topic.name),
            );
        }
        if image.topic(&topic.name).is_some() {
            return fail(
                ErrorCode::TopicAlreadyExists,
                format!("topic '{}' already exists", topic.name),
            );
        }
        let partitions = if !topic.assignment.is_empty() {
            assignment::check_new_topic(
                &topic.assignment,
                topic.partitions,
                topic.replication_factor,
                &registered_brokers(shard),
            )?
        } else if topic.partitions == -1 {
            shard.config.num_partitions
        } else {
            topic.partitions
        };
        if !(1..=limits::TOPIC_PARTITIONS_MAX).contains(&partitions) {
            return fail(
                ErrorCode::InvalidPartitions,
                format!("partitions must be 1..={}", limits::TOPIC_PARTITIONS_MAX),
            );
        }
        if topic.assignment.is_empty()
            && topic.replication_factor != -1
            && topic.replication_factor != 1
        {
            return fail(
                ErrorCode::InvalidReplicationFactor,
                "replication factor must be 1: there is one broker",
            );
        }
        let defaults = image
            .log_defaults(&shard.config.log)
            .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
        let log_config = match topic_log_config(&defaults, &topic.configs) {
            Ok(c) => c,
            Err(err) => return fail(ErrorCode::InvalidConfig, err.to_string()),
        };
        Ok(Arc::new(TopicMeta {
            name: topic.name.clone(),
            id: Uuid::new_v4(),
            partitions,
            configs: topic.configs.clone(),
            log_config,
        }))
    }

    async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<(String, TopicOutcome)> {
        let mut image = (*shard.image()).clone();
        let mut outcomes = Vec::new();
        for name in names {
            if is_internal_topic(&name) {
                let refusal = fail(
                    ErrorCode::InvalidRequest,
                    format!("{name} is an internal topic and cannot be deleted"),
                );
                outcomes.push((name, refusal));
                continue;
            }
            let outcome = match image.topics.remove(&name) {
                Some(meta) => Ok(meta),
                None => fail(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                ),
            };
            outcomes.push((name, outcome));
        }
        self.commit_if_changed(shard, image, &mut outcomes).await;
        outcomes
    }

    async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<(String, NewPartitions)>,
        validate_only: bool,
    ) -> Vec<(String, TopicOutcome)> {
        let changes = topics
            .into_iter()
            .map(|(name, new)| (name.clone(), (name, new)))
            .collect();
        self.update_topics(shard, changes, validate_only, |image, (name, new)| {
            let count = new.count;
            let meta = existing(image, &name)?;
            if is_internal_topic(&name) {
                // Its partition count decides which partition holds each group.
                return fail(
                    ErrorCode::InvalidRequest,
                    format!("{name} is an internal topic; its partitions cannot change"),
                );
            }
            if count <= meta.partitions {
                return fail(
                    ErrorCode::InvalidPartitions,
                    format!(
                        "topic has {} partitions; the new count must be larger, not {count}",
                        meta.partitions
                    ),
                );
            }
            if count > limits::TOPIC_PARTITIONS_MAX {
                return fail(
                    ErrorCode::InvalidPartitions,
                    format!("at most {} partitions", limits::TOPIC_PARTITIONS_MAX),
                );
            }
            if let Some(replicas) = &new.assignment {
                // One broker: every partition has one replica.
                let replication_factor = 1;
                assignment::check_new_partitions(
                    replicas,
                    count - meta.partitions,
                    replication_factor,
                    &registered_brokers(shard),
                )?;
            }
            Ok(Arc::new(TopicMeta {
                partitions: count,
                ..(**meta).clone()
            }))
        })
        .await
    }

    async fn alter_topic_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    ) -> Vec<(String, TopicOutcome)> {
        let changes = changes
            .into_iter()
            .map(|(name, change)| (name.clone(), (name, change)))
            .collect();
        self.update_topics(shard, changes, validate_only, |image, (name, change)| {
            let meta = existing(image, &name)?;
            let configs = apply_change(&meta.configs, change)
                .map_err(|message| (ErrorCode::InvalidConfig, message))?;
            let defaults = image
                .log_defaults(&shard.config.log)
                .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
            let log_config = topic_log_config(&defaults, &configs)
                .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
            Ok(Arc::new(TopicMeta {
                configs,
                log_config,
                ..(**meta).clone()
            }))
        })
        .await
    }

    /// Applies run-time broker configs: validated, then every topic's log config re-derived
    /// from the new defaults, persisted and published (partitions pick them up live).
    async fn alter_broker_configs(
        &self,
        shard: &Rc<Shard>,
        change: ConfigChange,
        validate_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let invalid = |message: String| (ErrorCode::InvalidConfig, message);
        let mut image = (*shard.image()).clone();
        image.broker_configs = apply_change(&image.broker_configs, change).map_err(invalid)?;
        let defaults = image
            .log_defaults(&shard.config.log)
            .map_err(|err| invalid(format!("{err:#}")))?;
        for meta in image.topics.values_mut() {
            let log_config = topic_log_config(&defaults, &meta.configs)
                .map_err(|err| invalid(format!("topic {}: {err:#}", meta.name)))?;
            *meta = Arc::new(TopicMeta {
                log_config,
                ..(**meta).clone()
            });
        }
        if validate_only || image.broker_configs == shard.image().broker_configs {
            return Ok(());
        }
        tracing::info!("run-time broker configs are now {:?}", image.broker_configs);
        self.commit(shard, image).await.map_err(|err| {
            (
                ErrorCode::KafkaStorageError,
                format!("metadata write failed: {err}"),
            )
        })
    }

    async fn allocate_producer_id(&self, shard: &Rc<Shard>) -> Result<i64, ErrorCode> {
        let id = self.next_producer_id.get();
        let image = shard.image();
        if id >= image.producer_ids_reserved_to {
            let mut next = (*image).clone();
            next.producer_ids_reserved_to = id + limits::PRODUCER_ID_BLOCK_SIZE;
            self.commit(shard, next)
                .await
                .map_err(|_| ErrorCode::KafkaStorageError)?;
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }

    /// Persists and publishes `image` if any outcome succeeded; on a storage failure every
    /// success turns into KAFKA_STORAGE_ERROR (nothing was changed).
    async fn commit_if_changed(
        &self,
        shard: &Rc<Shard>,
        image: MetadataImage,
        outcomes: &mut [(String, TopicOutcome)],
    ) {
        if image.topics == shard.image().topics {
            return;
        }
        if let Err(err) = self.commit(shard, image).await {
            for (_, outcome) in outcomes.iter_mut() {
                if outcome.is_ok() {
                    *outcome = fail(
                        ErrorCode::KafkaStorageError,
                        format!("metadata write failed: {err}"),
                    );
                }
            }
        }
    }

    /// Writes the metadata file durably, then installs the image on every shard.
    async fn commit(&self, shard: &Rc<Shard>, image: MetadataImage) -> std::io::Result<()> {
        let path = shard.config.data_dir.join(METADATA_FILE);
        write_atomically(&UringStorage, &path, image.encode().into_bytes()).await?;
        let image = Arc::new(image);
        let calls = (0..shard.count)
            .map(|to| shard.call(ShardId(to), ShardRequest::ApplyMetadata(image.clone())));
        futures::future::join_all(calls).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn incremental_changes_follow_kafka_operations() {
        let current = configs(&[("retention.ms", "1000"), ("segment.bytes", "4096")]);
        let ops = vec![
            ("retention.ms".to_string(), 0, Some("2000".to_string())),
            ("segment.bytes".to_string(), 1, None),
            ("cleanup.policy".to_string(), 2, Some("compact".to_string())),
        ];
        let changed = apply_change(&current, ConfigChange::Incremental(ops)).unwrap();
        assert_eq!(
            changed,
            configs(&[
                ("retention.ms", "2000"),
                ("cleanup.policy", "delete,compact")
            ])
        );
        let subtract = vec![("cleanup.policy".to_string(), 3, Some("delete".to_string()))];
        assert_eq!(
            apply_change(&changed, ConfigChange::Incremental(subtract)).unwrap()["cleanup.policy"],
            "compact"
        );
        let not_a_list = vec![("retention.ms".to_string(), 2, Some("5".to_string()))];
        assert!(apply_change(&current, ConfigChange::Incremental(not_a_list)).is_err());
        let no_value = vec![("retention.ms".to_string(), 0, None)];
        assert!(apply_change(&current, ConfigChange::Incremental(no_value)).is_err());
        let replaced = apply_change(
            &current,
            ConfigChange::Replace(configs(&[("max.message.bytes", "10")])),
        )
        .unwrap();
        assert_eq!(replaced, configs(&[("max.message.bytes", "10")]));
    }
}
