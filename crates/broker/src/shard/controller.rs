//! The metadata controller, on shard 0: creates, deletes and grows topics, changes configs and
//! hands out producer ids. Each operation is decided first, by pure functions that turn the
//! current image and the request into metadata records and per-item outcomes (Kafka's error
//! codes); the commit then persists the metadata file (write-temp, fsync, rename, fsync dir),
//! applies the records to a copy of the image and pushes it to every shard before answering.
//! Operations run one at a time, so nothing moves the image between deciding and committing.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use uuid::Uuid;

use super::alter_partition::{AlterPartition, AlterPartitionAnswer};
use super::assignment::{self, Refusal, Replicas};
use super::elections::{ElectionOutcome, ElectionType};
use super::producer_ids::ProducerIdBlock;
use super::reassignment::{Move, MoveOutcome};
use super::{Shard, ShardRequest};
use crate::config::Config;
use crate::error::ErrorCode;
use crate::group::records::OFFSETS_TOPIC;
use crate::limits;
use crate::metadata::records::{
    BrokerEpoch, BrokerId, ConfigResource, MetadataRecord, PartitionState,
};
use crate::metadata::{
    self, broker_log_defaults, is_internal_topic, is_valid_topic_name, topic_log_config,
    MetadataImage, TopicMeta, METADATA_FILE,
};
use crate::quorum::link::QuorumLink;
use crate::quorum::member::ProposeError;
use crate::storage::fs::UringStorage;
use crate::storage::write_atomically;
use crate::txn::state::TXN_TOPIC;
use crate::types::{PartitionId, ProducerId, ShardId};

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

#[derive(Debug, Clone)]
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
    /// A block of producer ids for a broker, at its registration epoch.
    AllocateProducerIds {
        broker: BrokerId,
        broker_epoch: BrokerEpoch,
    },
    /// Creates an internal topic (`__consumer_offsets`, `__transaction_state`) if it does not
    /// exist yet (the first FindCoordinator for it does).
    EnsureInternalTopic(String),
    /// Fences and unfences brokers, and moves partition leadership, to match the brokers alive
    /// at their epochs (`liveness::decide`). Only the quorum's leader asks.
    ReconcileLiveness {
        live: BTreeMap<BrokerId, BrokerEpoch>,
    },
    /// ElectLeaders: the partitions asked for by topic (`None`: every partition).
    ElectLeaders {
        kind: ElectionType,
        partitions: Option<BTreeMap<String, Vec<i32>>>,
    },
    /// AlterPartition: a partition leader's ISR changes (`alter_partition::decide`).
    AlterPartition(AlterPartition),
    /// AlterPartitionReassignments (`reassignment::decide`).
    AlterReassignments {
        moves: Vec<Move>,
        allow_rf_change: bool,
    },
}

/// Per-topic outcome: the topic as it now stands, or an error code with a message.
pub type TopicOutcome = Result<Arc<TopicMeta>, (ErrorCode, String)>;

#[derive(Debug)]
pub enum ControllerResponse {
    Topics(Vec<(String, TopicOutcome)>),
    ProducerIds(Result<ProducerIdBlock, ErrorCode>),
    Broker(Result<(), (ErrorCode, String)>),
    Elections(Vec<ElectionOutcome>),
    AlterPartition(AlterPartitionAnswer),
    Reassignments(Vec<MoveOutcome>),
    NotController,
}

/// Why decided records were not committed.
#[derive(Debug)]
enum CommitError {
    /// The metadata file could not be written (a single broker).
    Disk(std::io::Error),
    /// The quorum did not commit them.
    Quorum(ProposeError),
}

pub struct Controller {
    one_at_a_time: Semaphore,
    /// The metadata quorum this broker is a member of, once it has started; `None` on a single
    /// broker, whose metadata is the local file.
    quorum: RefCell<Option<Rc<QuorumLink>>>,
}

impl Default for Controller {
    fn default() -> Controller {
        Controller {
            one_at_a_time: Semaphore::new(1),
            quorum: RefCell::new(None),
        }
    }
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

/// The brokers a replica assignment may name: the registered, unfenced ones.
fn registered_brokers(image: &MetadataImage) -> BTreeSet<i32> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| b.id.0)
        .collect()
}

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

/// What an operation decided: the records to commit, and the answer to give once they are.
#[derive(Debug)]
pub struct Decision {
    pub records: Vec<MetadataRecord>,
    pub response: ControllerResponse,
}

/// Decides a request against `image`, changing nothing: the records that carry it out (none
/// when it is refused or only validated) and the answer. `new_topic_id` names new topics.
pub fn decide(
    image: &MetadataImage,
    config: &Config,
    request: ControllerRequest,
    new_topic_id: &mut dyn FnMut() -> Uuid,
) -> Decision {
    let (records, response) = match request {
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        } => {
            let items = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
            let (records, outcomes) = decide_topics(image, items, validate_only, |image, topic| {
                if is_internal_topic(&topic.name) && image.topic(&topic.name).is_none() {
                    return fail(
                        ErrorCode::InvalidRequest,
                        format!("{} is an internal topic; the broker creates it", topic.name),
                    );
                }
                new_topic(config, image, &topic, new_topic_id())
            });
            (records, ControllerResponse::Topics(outcomes))
        }
        ControllerRequest::EnsureInternalTopic(name) => {
            let items = vec![(name.clone(), name)];
            let (records, outcomes) = decide_topics(image, items, false, |image, name| {
                if image.topic(&name).is_some() {
                    return Ok(Vec::new());
                }
                let topic = internal_topic(config, image, &name)?;
                new_topic(config, image, &topic, new_topic_id())
            });
            (records, ControllerResponse::Topics(outcomes))
        }
        ControllerRequest::DeleteTopics { names } => {
            let items = names.into_iter().map(|n| (n.clone(), n)).collect();
            let (records, outcomes) = decide_topics(image, items, false, |image, name| {
                if is_internal_topic(&name) {
                    return fail(
                        ErrorCode::InvalidRequest,
                        format!("{name} is an internal topic and cannot be deleted"),
                    );
                }
                let meta = existing(image, &name)?;
                Ok(vec![MetadataRecord::RemoveTopic { id: meta.id }])
            });
            (records, ControllerResponse::Topics(outcomes))
        }
        ControllerRequest::CreatePartitions {
            topics,
            validate_only,
        } => {
            let items = topics
                .into_iter()
                .map(|(name, new)| (name.clone(), (name, new)))
                .collect();
            let (records, outcomes) =
                decide_topics(image, items, validate_only, |image, (name, new)| {
                    new_partitions(config, image, &name, new)
                });
            (records, ControllerResponse::Topics(outcomes))
        }
        ControllerRequest::AlterTopicConfigs {
            changes,
            validate_only,
        } => {
            let items = changes
                .into_iter()
                .map(|(name, change)| (name.clone(), (name, change)))
                .collect();
            let (records, outcomes) =
                decide_topics(image, items, validate_only, |image, (name, change)| {
                    topic_configs(image, &name, change)
                });
            (records, ControllerResponse::Topics(outcomes))
        }
        ControllerRequest::AlterBrokerConfigs {
            change,
            validate_only,
        } => match broker_configs(image, change) {
            Ok(_) if validate_only => (Vec::new(), ControllerResponse::Broker(Ok(()))),
            Ok(records) => (records, ControllerResponse::Broker(Ok(()))),
            Err(refusal) => (Vec::new(), ControllerResponse::Broker(Err(refusal))),
        },
        ControllerRequest::ElectLeaders { kind, partitions } => {
            let (records, outcomes) = super::elections::decide(image, kind, partitions.as_ref());
            (records, ControllerResponse::Elections(outcomes))
        }
        ControllerRequest::AlterPartition(request) => {
            let (records, answer) = super::alter_partition::decide(image, &request);
            (records, ControllerResponse::AlterPartition(answer))
        }
        ControllerRequest::AlterReassignments {
            moves,
            allow_rf_change,
        } => {
            let (records, outcomes) = super::reassignment::decide(image, &moves, allow_rf_change);
            (records, ControllerResponse::Reassignments(outcomes))
        }
        ControllerRequest::ReconcileLiveness { live } => (
            super::liveness::decide(image, &live),
            ControllerResponse::Broker(Ok(())),
        ),
        ControllerRequest::AllocateProducerIds {
            broker,
            broker_epoch,
        } => match decide_producer_ids(image, broker, broker_epoch) {
            Ok((record, block)) => (vec![record], ControllerResponse::ProducerIds(Ok(block))),
            Err(code) => (Vec::new(), ControllerResponse::ProducerIds(Err(code))),
        },
    };
    Decision { records, response }
}

/// Decides each topic's change against the image as changed by the topics before it (unless
/// `validate_only`); each success answers with the topic as it stands after its records (or,
/// deleted, as it stood).
fn decide_topics<T>(
    image: &MetadataImage,
    items: Vec<(String, T)>,
    validate_only: bool,
    mut decide: impl FnMut(&MetadataImage, T) -> Result<Vec<MetadataRecord>, Refusal>,
) -> (Vec<MetadataRecord>, Vec<(String, TopicOutcome)>) {
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (name, item) in items {
        let outcome = decide(&working, item).and_then(|decided| {
            let mut next = working.clone();
            for record in &decided {
                next.apply(record).map_err(|err| {
                    tracing::error!("the controller decided a record that does not apply: {err}");
                    (
                        ErrorCode::UnknownServerError,
                        format!("metadata record refused: {err}"),
                    )
                })?;
            }
            let meta = next
                .topic(&name)
                .or_else(|| working.topic(&name))
                .cloned()
                .expect("a decided topic exists before or after its records");
            if !validate_only {
                working = next;
                records.extend(decided);
            }
            Ok(meta)
        });
        outcomes.push((name, outcome));
    }
    (records, outcomes)
}

/// The settings of an internal topic, or INVALID_REQUEST for any other. Its replication factor
/// is the configured one capped at the registered unfenced brokers, so that a single broker (or
/// a cluster still forming) has coordinators at once; Kafka answers COORDINATOR_NOT_AVAILABLE
/// until enough brokers exist instead.
fn internal_topic(config: &Config, image: &MetadataImage, name: &str) -> Result<NewTopic, Refusal> {
    let (partitions, segment_bytes, replication_factor) = match name {
        OFFSETS_TOPIC => (
            config.offsets_topic_num_partitions,
            config.offsets_topic_segment_bytes,
            config.offsets_topic_replication_factor,
        ),
        TXN_TOPIC => (
            config.transaction_state_partitions,
            config.transaction_state_segment_bytes,
            config.transaction_state_replication_factor,
        ),
        other => {
            return fail(
                ErrorCode::InvalidRequest,
                format!("{other} is not internal"),
            )
        }
    };
    // Kafka creates an internal topic only once as many brokers as its replication factor are
    // live. Sluice caps the factor at the cluster's size (its quorum's voters, or the brokers
    // ever registered), so that one broker on its own needs no config; but a cluster must not
    // create it with fewer replicas merely because its other brokers are not up yet: the factor
    // is fixed at creation.
    let size = config.quorum_voters.len().max(image.brokers.len()).max(1);
    let replicas = replication_factor.min(i16::try_from(size).unwrap_or(i16::MAX));
    let live = registered_brokers(image).len();
    if live < replicas as usize {
        return fail(
            ErrorCode::CoordinatorNotAvailable,
            format!("{name} needs {replicas} live brokers for its replicas; {live} are live"),
        );
    }
    let mut configs: BTreeMap<String, String> = [
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
    .collect();
    if name == TXN_TOPIC {
        // Kafka's `transaction.state.log.min.isr`; a partition with fewer replicas requires
        // them all (see `MinInsyncReplicas::effective`).
        configs.insert(
            "min.insync.replicas".to_string(),
            config.transaction_state_min_isr.get().to_string(),
        );
    }
    Ok(NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor: replicas,
        assignment: Vec::new(),
        configs,
    })
}

/// The records that create `topic` with id `id`: the topic, its configs, its partitions.
fn new_topic(
    config: &Config,
    image: &MetadataImage,
    topic: &NewTopic,
    id: Uuid,
) -> Result<Vec<MetadataRecord>, Refusal> {
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
            &registered_brokers(image),
        )?
    } else if topic.partitions == -1 {
        config.num_partitions
    } else {
        topic.partitions
    };
    if !(1..=limits::TOPIC_PARTITIONS_MAX).contains(&partitions) {
        return fail(
            ErrorCode::InvalidPartitions,
            format!("partitions must be 1..={}", limits::TOPIC_PARTITIONS_MAX),
        );
    }
    if topic.assignment.is_empty() {
        check_replication_factor(image, topic.replication_factor)?;
    }
    let defaults = image
        .log_defaults(&image.static_log_config)
        .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
    if let Err(err) = topic_log_config(&defaults, &topic.configs) {
        return fail(ErrorCode::InvalidConfig, err.to_string());
    }
    let mut replicas: Vec<Replicas> = if topic.assignment.is_empty() {
        // -1 is the default, which a single broker's config holds at 1.
        let replication_factor = usize::try_from(topic.replication_factor).unwrap_or(1);
        spread(image, config, 0..partitions, replication_factor)?
    } else {
        let mut by_index = topic.assignment.clone();
        by_index.sort_by_key(|(index, _)| *index);
        by_index.into_iter().map(|(_, replicas)| replicas).collect()
    };
    let mut records = vec![MetadataRecord::Topic {
        name: topic.name.clone(),
        id,
    }];
    records.extend(
        topic
            .configs
            .iter()
            .map(|(key, value)| MetadataRecord::Config {
                resource: ConfigResource::Topic(topic.name.clone()),
                key: key.clone(),
                value: Some(value.clone()),
            }),
    );
    records.extend(
        replicas
            .drain(..)
            .enumerate()
            .map(|(p, replicas)| partition_record(id, p as i32, replicas)),
    );
    Ok(records)
}

/// A requested replication factor (-1: the default, 1) against the live brokers, with Kafka's
/// messages.
fn check_replication_factor(image: &MetadataImage, replication_factor: i16) -> Result<(), Refusal> {
    match replication_factor {
        -1 | 1 => Ok(()),
        rf if rf < 1 => fail(
            ErrorCode::InvalidReplicationFactor,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ),
        rf => enough_brokers(image, rf as usize),
    }
}

/// Refuses a replication factor above the registered unfenced brokers, as Kafka words it.
fn enough_brokers(image: &MetadataImage, replication_factor: usize) -> Result<(), Refusal> {
    let live = registered_brokers(image).len().max(1);
    if replication_factor > live {
        return fail(
            ErrorCode::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target \
                 replication factor of {replication_factor} cannot be reached because only \
                 {live} broker(s) are registered."
            ),
        );
    }
    Ok(())
}

/// Replicas for `partitions`, `replication_factor` each, placed over the registered unfenced
/// brokers (`assignment::place`), so a topic's partitions (and their leaders) spread across
/// the cluster. With no broker registered yet (a single broker's first start), on this one.
fn spread(
    image: &MetadataImage,
    config: &Config,
    partitions: std::ops::Range<i32>,
    replication_factor: usize,
) -> Result<Vec<Replicas>, Refusal> {
    enough_brokers(image, replication_factor)?;
    let mut brokers: Vec<i32> = registered_brokers(image).into_iter().collect();
    if brokers.is_empty() {
        brokers.push(config.node_id);
    }
    Ok(assignment::place(&brokers, partitions, replication_factor))
}

fn partition_record(topic_id: Uuid, partition: i32, replicas: Replicas) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition: PartitionId(partition),
        state: PartitionState::online(replicas.into_iter().map(BrokerId).collect()),
    }
}

/// The records that grow topic `name` to `new.count` partitions.
fn new_partitions(
    config: &Config,
    image: &MetadataImage,
    name: &str,
    new: NewPartitions,
) -> Result<Vec<MetadataRecord>, Refusal> {
    let count = new.count;
    let meta = existing(image, name)?;
    if is_internal_topic(name) {
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
    let added = count - meta.partitions;
    // The new partitions have as many replicas as the first one has, as Kafka adds them.
    let replication_factor = meta
        .partition_states
        .first()
        .map_or(1, |p| p.replicas.len());
    let replicas = match new.assignment {
        Some(replicas) => {
            assignment::check_new_partitions(
                &replicas,
                added,
                replication_factor,
                &registered_brokers(image),
            )?;
            replicas
        }
        None => spread(image, config, meta.partitions..count, replication_factor)?,
    };
    Ok(replicas
        .into_iter()
        .zip(meta.partitions..count)
        .map(|(replicas, p)| partition_record(meta.id, p, replicas))
        .collect())
}

/// Config records that turn `current` into `wanted`: deletions, then changed values.
fn config_records(
    resource: &ConfigResource,
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let removed = current
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .map(|key| (key, None));
    let set = wanted
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(value))
        .map(|(key, value)| (key, Some(value.clone())));
    removed
        .chain(set)
        .map(|(key, value)| MetadataRecord::Config {
            resource: resource.clone(),
            key: key.clone(),
            value,
        })
        .collect()
}

/// The records that change topic `name`'s configs.
fn topic_configs(
    image: &MetadataImage,
    name: &str,
    change: ConfigChange,
) -> Result<Vec<MetadataRecord>, Refusal> {
    let meta = existing(image, name)?;
    let configs = apply_change(&meta.configs, change)
        .map_err(|message| (ErrorCode::InvalidConfig, message))?;
    let defaults = image
        .log_defaults(&image.static_log_config)
        .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
    topic_log_config(&defaults, &configs)
        .map_err(|err| (ErrorCode::InvalidConfig, err.to_string()))?;
    let resource = ConfigResource::Topic(name.to_string());
    Ok(config_records(&resource, &meta.configs, &configs))
}

/// The records that change the run-time broker configs, checked against every topic (each
/// topic's log config is re-derived from the new defaults, and partitions pick them up live).
fn broker_configs(
    image: &MetadataImage,
    change: ConfigChange,
) -> Result<Vec<MetadataRecord>, Refusal> {
    let invalid = |message: String| (ErrorCode::InvalidConfig, message);
    let configs = apply_change(&image.broker_configs, change).map_err(invalid)?;
    let defaults = broker_log_defaults(&image.static_log_config, &configs)
        .map_err(|err| invalid(format!("{err:#}")))?;
    for meta in image.topics.values() {
        topic_log_config(&defaults, &meta.configs)
            .map_err(|err| invalid(format!("topic {}: {err:#}", meta.name)))?;
    }
    Ok(config_records(
        &ConfigResource::Brokers,
        &image.broker_configs,
        &configs,
    ))
}

/// A block of producer ids for `broker`: the record that takes it, and the block. Refused
/// (STALE_BROKER_EPOCH) for a broker that is not registered at `broker_epoch`.
pub fn decide_producer_ids(
    image: &MetadataImage,
    broker: BrokerId,
    broker_epoch: BrokerEpoch,
) -> Result<(MetadataRecord, ProducerIdBlock), ErrorCode> {
    if image.brokers.get(&broker).map(|b| b.epoch) != Some(broker_epoch) {
        return Err(ErrorCode::StaleBrokerEpoch);
    }
    let block = ProducerIdBlock {
        next: image.next_producer_id,
        end: ProducerId(image.next_producer_id.0 + limits::PRODUCER_ID_BLOCK_SIZE),
    };
    let record = MetadataRecord::ProducerIds {
        broker,
        broker_epoch,
        next_producer_id: block.end,
    };
    Ok((record, block))
}

impl Controller {
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
        let mut refusals = 0;
        let (mut response, outcome) = loop {
            let image = shard.image();
            let decision = decide(&image, &shard.config, request.clone(), &mut Uuid::new_v4);
            match self.commit(shard, decision.records).await {
                // Another broker's change committed first (two FindCoordinators creating the
                // same internal topic): decide again once this broker's image holds it, so the
                // answer is the one Kafka's single controller would give.
                Err(CommitError::Quorum(ProposeError::Refused(why)))
                    if refusals < limits::CONTROLLER_REDECIDE_ATTEMPTS =>
                {
                    refusals += 1;
                    tracing::debug!("deciding again after a refusal: {why}");
                    wait_for_newer_image(shard, &image).await;
                }
                outcome => break (decision.response, outcome),
            }
        };
        if let Err(err) = outcome {
            // Nothing changed: every success turns into the error.
            let (code, message) = match &err {
                CommitError::Disk(err) => (
                    ErrorCode::KafkaStorageError,
                    format!("metadata write failed: {err}"),
                ),
                // Retriable: a client asks again once the quorum has a leader, and the change
                // is decided again on the newer image.
                CommitError::Quorum(err) => (ErrorCode::NotController, err.to_string()),
            };
            match &mut response {
                ControllerResponse::Topics(outcomes) => {
                    for (_, outcome) in outcomes.iter_mut().filter(|(_, o)| o.is_ok()) {
                        *outcome = fail(code, message.clone());
                    }
                }
                ControllerResponse::Broker(outcome) => *outcome = fail(code, message),
                ControllerResponse::ProducerIds(outcome) => *outcome = Err(code),
                ControllerResponse::Elections(outcomes) => {
                    for (_, _, outcome) in outcomes.iter_mut() {
                        if *outcome == ErrorCode::None {
                            *outcome = code;
                        }
                    }
                }
                ControllerResponse::AlterPartition(Ok(topics)) => {
                    let partitions = topics.iter_mut().flat_map(|(_, p)| p.iter_mut());
                    for (_, outcome) in partitions.filter(|(_, o)| o.is_ok()) {
                        *outcome = Err(code);
                    }
                }
                ControllerResponse::Reassignments(outcomes) => {
                    for (_, _, outcome) in outcomes.iter_mut().filter(|(_, _, o)| o.is_ok()) {
                        *outcome = fail(code, message.clone());
                    }
                }
                ControllerResponse::AlterPartition(Err(_)) | ControllerResponse::NotController => {}
            }
        }
        response
    }

    /// From now on, metadata changes are committed through `quorum`.
    pub fn join_quorum(&self, quorum: Rc<QuorumLink>) {
        *self.quorum.borrow_mut() = Some(quorum);
    }

    /// Commits `records`: through the quorum when this broker is a member of one (every member
    /// then applies them and installs the image on its shards), else by writing the metadata
    /// file and installing the image here. Nothing to do without records.
    async fn commit(
        &self,
        shard: &Rc<Shard>,
        records: Vec<MetadataRecord>,
    ) -> Result<(), CommitError> {
        if records.is_empty() {
            return Ok(());
        }
        let quorum = self.quorum.borrow().clone();
        if let Some(quorum) = quorum {
            quorum
                .propose(&records)
                .await
                .map_err(CommitError::Quorum)?;
            log_liveness_changes(&records);
            return Ok(());
        }
        let mut image = (*shard.image()).clone();
        for record in &records {
            // Decided against this very image (operations run one at a time).
            image
                .apply(record)
                .expect("a decided record applies to the image it was decided on");
        }
        for record in &records {
            match record {
                MetadataRecord::Topic { name, .. } if is_internal_topic(name) => {
                    let partitions = image.topic(name).map_or(0, |t| t.partitions);
                    tracing::info!("creating {name} with {partitions} partitions");
                }
                MetadataRecord::Config {
                    resource: ConfigResource::Brokers,
                    ..
                } => {
                    tracing::info!("run-time broker configs are now {:?}", image.broker_configs);
                    break;
                }
                _ => {}
            }
        }
        let path = shard.config.data_dir.join(METADATA_FILE);
        write_atomically(&UringStorage, &path, metadata::encode(&image))
            .await
            .map_err(CommitError::Disk)?;
        let image = Arc::new(image);
        let calls = (0..shard.count)
            .map(|to| shard.call(ShardId(to), ShardRequest::ApplyMetadata(image.clone())));
        futures::future::join_all(calls).await;
        Ok(())
    }
}

/// Waits until this shard installs an image newer than `seen`, for at most
/// `QUORUM_PROPOSE_TIMEOUT_MS`: a refused command committed after the change that refused it, so
/// the image that holds the refused command holds that change too.
async fn wait_for_newer_image(shard: &Rc<Shard>, seen: &Arc<MetadataImage>) {
    let deadline = Instant::now() + Duration::from_millis(limits::QUORUM_PROPOSE_TIMEOUT_MS);
    while Arc::ptr_eq(&shard.image(), seen) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(limits::IMAGE_POLL_INTERVAL_MS)).await;
    }
}

/// Logs the brokers a commit fenced or unfenced, and how many partitions changed leader.
fn log_liveness_changes(records: &[MetadataRecord]) {
    let mut moved = 0usize;
    for record in records {
        match record {
            MetadataRecord::FenceBroker { id, epoch } => {
                tracing::info!("fenced broker {} (epoch {})", id.0, epoch.0)
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                tracing::info!("unfenced broker {} (epoch {})", id.0, epoch.0)
            }
            MetadataRecord::PartitionChange {
                leader: Some(_), ..
            } => moved += 1,
            _ => {}
        }
    }
    if moved > 0 {
        tracing::info!("{moved} partitions have a new leader term");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::{BrokerRegistration, Endpoint};
    use crate::shard::producer_ids::ProducerIdAllocator;
    use futures::executor::block_on;

    /// An empty image with the configured broker registered.
    fn registered(config: &Config) -> MetadataImage {
        let mut image = MetadataImage::new("c".into(), config.log.clone());
        image
            .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                id: BrokerId(config.node_id),
                incarnation_id: Uuid::new_v4(),
                epoch: BrokerEpoch(0),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                }],
                fenced: false,
            }))
            .unwrap();
        image
    }

    fn topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            assignment: Vec::new(),
            configs: BTreeMap::new(),
        }
    }

    /// Decides `request`, applies its records to `image`, and returns the per-topic codes.
    fn run(
        image: &mut MetadataImage,
        config: &Config,
        request: ControllerRequest,
    ) -> Vec<ErrorCode> {
        let decision = decide(image, config, request, &mut Uuid::new_v4);
        for record in &decision.records {
            image.apply(record).unwrap();
        }
        match decision.response {
            ControllerResponse::Topics(outcomes) => outcomes
                .into_iter()
                .map(|(_, o)| o.map_or_else(|(code, _)| code, |_| ErrorCode::None))
                .collect(),
            ControllerResponse::Broker(outcome) => {
                vec![outcome.map_or_else(|(code, _)| code, |_| ErrorCode::None)]
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn create(topics: Vec<NewTopic>, validate_only: bool) -> ControllerRequest {
        ControllerRequest::CreateTopics {
            topics,
            validate_only,
        }
    }

    #[test]
    fn a_replication_factor_above_the_live_brokers_is_refused_as_kafka_words_it() {
        let config = Config::default();
        let image = registered(&config);
        for (rf, says) in [
            (
                3,
                "cannot be reached because only 1 broker(s) are registered",
            ),
            (0, "must be larger than 0"),
        ] {
            let request = ControllerRequest::CreateTopics {
                topics: vec![NewTopic {
                    replication_factor: rf,
                    ..topic("r", 1)
                }],
                validate_only: false,
            };
            let decision = decide(&image, &config, request, &mut Uuid::new_v4);
            let ControllerResponse::Topics(outcomes) = decision.response else {
                panic!("topics answer")
            };
            let (code, message) = outcomes[0].1.clone().unwrap_err();
            assert_eq!(code, ErrorCode::InvalidReplicationFactor);
            assert!(message.contains(says), "{message}");
            assert!(decision.records.is_empty());
        }
    }

    #[test]
    fn creating_topics_answers_kafka_codes_and_decides_records() {
        let config = Config::default();
        let mut image = registered(&config);
        let before = image.clone();
        let validated = run(&mut image, &config, create(vec![topic("a", 2)], true));
        assert_eq!(validated, [ErrorCode::None]);
        assert_eq!(image, before, "validate_only decides no records");

        let mut bad_config = topic("c", 1);
        bad_config
            .configs
            .insert("segment.bytes".into(), "nope".into());
        let mut three_replicas = topic("d", 1);
        three_replicas.replication_factor = 3;
        let mut elsewhere = topic("e", -1);
        elsewhere.assignment = vec![(0, vec![config.node_id + 1])];
        let request = create(
            vec![
                topic("a", 2),
                topic("a", 2),
                topic("b/x", 1),
                bad_config,
                three_replicas,
                topic("f", 0),
                elsewhere,
                topic(OFFSETS_TOPIC, 1),
            ],
            false,
        );
        assert_eq!(
            run(&mut image, &config, request),
            [
                ErrorCode::None,
                ErrorCode::TopicAlreadyExists,
                ErrorCode::InvalidTopicException,
                ErrorCode::InvalidConfig,
                ErrorCode::InvalidReplicationFactor,
                ErrorCode::InvalidPartitions,
                ErrorCode::InvalidReplicaAssignment,
                ErrorCode::InvalidRequest,
            ]
        );
        let a = &image.topics["a"];
        assert_eq!(a.partitions, 2);
        assert_eq!(a.partition_states[1].leader, BrokerId(config.node_id));
        assert_eq!(image.topics.len(), 1);

        let ensure = ControllerRequest::EnsureInternalTopic(TXN_TOPIC.into());
        assert_eq!(run(&mut image, &config, ensure), [ErrorCode::None]);
        assert_eq!(
            image.topics[TXN_TOPIC].partitions,
            config.transaction_state_partitions
        );
        assert_eq!(image.topics[TXN_TOPIC].configs["cleanup.policy"], "compact");
    }

    #[test]
    fn internal_topics_take_the_configured_replicas_capped_at_the_cluster_size() {
        let config = Config::default();
        let mut alone = registered(&config);
        let ensure = |name: &str| ControllerRequest::EnsureInternalTopic(name.into());
        assert_eq!(
            run(&mut alone, &config, ensure(TXN_TOPIC)),
            [ErrorCode::None]
        );
        let txn = &alone.topics[TXN_TOPIC];
        assert!(
            txn.partition_states.iter().all(|s| s.replicas.len() == 1),
            "one broker: one replica, not a refusal"
        );
        assert_eq!(txn.configs["min.insync.replicas"], "2");

        // Three voters, one broker up so far: refused (retriable), never created with one.
        let mut voting = config.clone();
        voting.quorum_voters = (1..=3)
            .map(|id| crate::config::QuorumVoter {
                id,
                host: "127.0.0.1".into(),
                port: 9093,
            })
            .collect();
        let mut first_up = registered(&voting);
        assert_eq!(
            run(&mut first_up, &voting, ensure(OFFSETS_TOPIC)),
            [ErrorCode::CoordinatorNotAvailable]
        );

        let mut three = registered(&config);
        for id in [2, 3] {
            three
                .apply(&MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: BrokerId(id),
                    incarnation_id: Uuid::new_v4(),
                    epoch: BrokerEpoch(0),
                    endpoints: Vec::new(),
                    fenced: false,
                }))
                .unwrap();
        }
        assert_eq!(
            run(&mut three, &config, ensure(OFFSETS_TOPIC)),
            [ErrorCode::None]
        );
        let offsets = &three.topics[OFFSETS_TOPIC];
        assert!(offsets
            .partition_states
            .iter()
            .all(|s| s.replicas.len() == 3 && s.isr.len() == 3));
        assert!(
            !offsets.configs.contains_key("min.insync.replicas"),
            "the offsets topic keeps the broker's default, as in Kafka"
        );
    }

    #[test]
    fn deleting_growing_and_configuring_answer_kafka_codes() {
        let config = Config::default();
        let mut image = registered(&config);
        run(&mut image, &config, create(vec![topic("a", 1)], false));
        let ensure = ControllerRequest::EnsureInternalTopic(OFFSETS_TOPIC.into());
        run(&mut image, &config, ensure);

        let grow =
            |name: &str, count, assignment| (name.to_string(), NewPartitions { count, assignment });
        let request = ControllerRequest::CreatePartitions {
            topics: vec![
                grow("a", 1, None),
                grow("nope", 5, None),
                grow(OFFSETS_TOPIC, 100, None),
                grow(
                    "a",
                    3,
                    Some(vec![vec![config.node_id], vec![config.node_id, 7]]),
                ),
                grow("a", 3, None),
            ],
            validate_only: false,
        };
        assert_eq!(
            run(&mut image, &config, request),
            [
                ErrorCode::InvalidPartitions,
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::InvalidRequest,
                ErrorCode::InvalidReplicaAssignment,
                ErrorCode::None,
            ]
        );
        assert_eq!(image.topics["a"].partition_states.len(), 3);

        let set = |key: &str, value: &str| {
            ConfigChange::Incremental(vec![(key.to_string(), 0, Some(value.to_string()))])
        };
        let request = ControllerRequest::AlterTopicConfigs {
            changes: vec![
                ("a".into(), set("retention.ms", "1234")),
                ("a".into(), set("retention.ms", "soon")),
                ("nope".into(), set("retention.ms", "1")),
            ],
            validate_only: false,
        };
        assert_eq!(
            run(&mut image, &config, request),
            [
                ErrorCode::None,
                ErrorCode::InvalidConfig,
                ErrorCode::UnknownTopicOrPartition
            ]
        );
        assert_eq!(image.topics["a"].log_config.retention_ms, 1234);

        let brokers = |change| ControllerRequest::AlterBrokerConfigs {
            change,
            validate_only: false,
        };
        let not_dynamic = brokers(set("num.io.threads", "4"));
        assert_eq!(
            run(&mut image, &config, not_dynamic),
            [ErrorCode::InvalidConfig]
        );
        let segments = brokers(set("log.segment.bytes", "100000"));
        assert_eq!(run(&mut image, &config, segments), [ErrorCode::None]);
        assert_eq!(image.topics["a"].log_config.segment_bytes, 100_000);

        let delete = ControllerRequest::DeleteTopics {
            names: vec!["a".into(), "a".into(), OFFSETS_TOPIC.into()],
        };
        assert_eq!(
            run(&mut image, &config, delete),
            [
                ErrorCode::None,
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::InvalidRequest
            ]
        );
        assert!(image.topic("a").is_none());
    }

    #[test]
    fn added_partitions_are_placed_with_the_topics_replication_factor() {
        let config = Config::default();
        let mut image = registered(&config);
        let me = config.node_id;
        let other = BrokerRegistration {
            id: BrokerId(me + 1),
            incarnation_id: Uuid::new_v4(),
            epoch: BrokerEpoch(0),
            endpoints: Vec::new(),
            fenced: false,
        };
        image
            .apply(&MetadataRecord::RegisterBroker(other.clone()))
            .unwrap();
        let mut two = topic("two", -1);
        two.assignment = vec![(0, vec![me, me + 1])];
        run(&mut image, &config, create(vec![two], false));
        let grow = |count| ControllerRequest::CreatePartitions {
            topics: vec![(
                "two".to_string(),
                NewPartitions {
                    count,
                    assignment: None,
                },
            )],
            validate_only: false,
        };
        assert_eq!(run(&mut image, &config, grow(3)), [ErrorCode::None]);
        let replicas: Vec<Vec<i32>> = image.topics["two"]
            .partition_states
            .iter()
            .map(|p| p.replicas.iter().map(|b| b.0).collect())
            .collect();
        assert_eq!(
            replicas,
            [vec![me, me + 1], vec![me + 1, me], vec![me, me + 1]]
        );
        image
            .apply(&MetadataRecord::FenceBroker {
                id: other.id,
                epoch: other.epoch,
            })
            .unwrap();
        assert_eq!(
            run(&mut image, &config, grow(4)),
            [ErrorCode::InvalidReplicationFactor]
        );
    }

    #[test]
    fn replication_configs_are_validated_and_read_back_effective() {
        let config = Config::default();
        let mut image = registered(&config);
        run(&mut image, &config, create(vec![topic("a", 1)], false));
        let set = |key: &str, value: &str| {
            ConfigChange::Incremental(vec![(key.to_string(), 0, Some(value.to_string()))])
        };
        let alter = |key: &str, value: &str| ControllerRequest::AlterTopicConfigs {
            changes: vec![("a".into(), set(key, value))],
            validate_only: false,
        };
        for (key, bad) in [
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "two"),
            ("unclean.leader.election.enable", "yes"),
        ] {
            assert_eq!(
                run(&mut image, &config, alter(key, bad)),
                [ErrorCode::InvalidConfig],
                "{key}={bad}"
            );
        }
        let log = &image.topics["a"].log_config;
        assert_eq!(log.min_insync_replicas.get(), 1, "Kafka's default");
        assert!(!log.unclean_leader_election, "Kafka's default");

        // Cluster-wide defaults, then a topic override over them.
        let brokers = ControllerRequest::AlterBrokerConfigs {
            change: set("unclean.leader.election.enable", "true"),
            validate_only: false,
        };
        assert_eq!(run(&mut image, &config, brokers), [ErrorCode::None]);
        assert!(image.topics["a"].log_config.unclean_leader_election);
        let request = alter("min.insync.replicas", "2");
        assert_eq!(run(&mut image, &config, request), [ErrorCode::None]);
        let min_isr = image.topics["a"].log_config.min_insync_replicas;
        assert_eq!(
            (min_isr.get(), min_isr.effective(3), min_isr.effective(1)),
            (2, 2, 1)
        );
    }

    #[test]
    fn producer_id_blocks_never_repeat_across_restarts() {
        let config = Config::default();
        let node = BrokerId(config.node_id);
        let mut image = registered(&config);
        let mut seen = BTreeSet::new();
        for _restart in 0..3 {
            // A restarted broker starts with no block, as a fresh allocator.
            let allocator = ProducerIdAllocator::default();
            let epoch = image.brokers[&node].epoch;
            for _ in 0..limits::PRODUCER_ID_BLOCK_SIZE + 5 {
                let id = block_on(allocator.allocate(|| {
                    let request = ControllerRequest::AllocateProducerIds {
                        broker: node,
                        broker_epoch: epoch,
                    };
                    let decision = decide(&image, &config, request, &mut Uuid::new_v4);
                    for record in &decision.records {
                        image.apply(record).unwrap();
                    }
                    let ControllerResponse::ProducerIds(answer) = decision.response else {
                        panic!("unexpected {:?}", decision.response);
                    };
                    async move { answer }
                }))
                .unwrap();
                assert!(seen.insert(id), "{id:?} handed out twice");
            }
            // Restart: the controller rebuilds its image from the persisted records, and the
            // broker registers again at a new epoch.
            let persisted = metadata::encode(&image);
            image = metadata::decode(&persisted, node, &config.log).unwrap();
            let mut registration = image.brokers[&node].clone();
            registration.epoch = BrokerEpoch(registration.epoch.0 + 1);
            image
                .apply(&MetadataRecord::RegisterBroker(registration))
                .unwrap();
            let stale = decide_producer_ids(&image, node, epoch);
            assert_eq!(stale.unwrap_err(), ErrorCode::StaleBrokerEpoch);
        }
        assert_eq!(seen.len() as i64, 3 * (limits::PRODUCER_ID_BLOCK_SIZE + 5));
    }

    /// A small deterministic PRNG (xorshift64*), so a failing sequence can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn replaying_the_records_rebuilds_the_image() {
        let config = Config::default();
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut image = registered(&config);
            let mut log = image.to_records();
            for _ in 0..200 {
                let name = format!("t{}", rng.below(6));
                let request = match rng.below(6) {
                    0 => create(vec![topic(&name, 1 + rng.below(4) as i32)], false),
                    1 => ControllerRequest::DeleteTopics { names: vec![name] },
                    2 => ControllerRequest::CreatePartitions {
                        topics: vec![(
                            name,
                            NewPartitions {
                                count: 1 + rng.below(8) as i32,
                                assignment: None,
                            },
                        )],
                        validate_only: false,
                    },
                    3 => ControllerRequest::AlterTopicConfigs {
                        changes: vec![(
                            name,
                            ConfigChange::Incremental(vec![(
                                "retention.ms".into(),
                                rng.below(2) as i8,
                                Some(rng.below(100_000).to_string()),
                            )]),
                        )],
                        validate_only: false,
                    },
                    4 => ControllerRequest::AlterBrokerConfigs {
                        change: ConfigChange::Replace(
                            [(
                                "log.retention.bytes".to_string(),
                                rng.below(1 << 30).to_string(),
                            )]
                            .into(),
                        ),
                        validate_only: false,
                    },
                    _ => {
                        let node = BrokerId(config.node_id);
                        let (record, block) =
                            decide_producer_ids(&image, node, BrokerEpoch(0)).unwrap();
                        assert_eq!(block.next, image.next_producer_id);
                        image.apply(&record).unwrap();
                        log.push(record);
                        continue;
                    }
                };
                let decision = decide(&image, &config, request, &mut Uuid::new_v4);
                for record in decision.records {
                    image.apply(&record).unwrap();
                    log.push(record);
                }
            }
            assert!(log.len() > 100, "seed {seed}: the sequence changed little");
            let mut replayed = MetadataImage::new("c".into(), config.log.clone());
            for record in &log {
                replayed.apply(record).unwrap();
            }
            assert_eq!(replayed, image, "seed {seed}");
            let mut from_snapshot = MetadataImage::new("c".into(), config.log.clone());
            for record in image.to_records() {
                from_snapshot.apply(&record).unwrap();
            }
            assert_eq!(from_snapshot, image, "seed {seed}");
        }
    }

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
