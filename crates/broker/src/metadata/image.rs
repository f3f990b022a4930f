//! The metadata image: what the metadata records add up to, and the pure `apply` that moves it
//! by one record. Shard 0 applies each committed record to a copy and publishes the copy to
//! every shard as an immutable `Arc<MetadataImage>`; a snapshot is the records that rebuild it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use super::records::{
    BrokerEpoch, BrokerId, BrokerRegistration, ConfigResource, MetadataRecord, PartitionState,
};
use super::{broker_log_defaults, is_valid_topic_name, topic_log_config, TopicMeta};
use crate::config::LogConfig;
use crate::limits;
use crate::types::{PartitionId, ProducerId};

/// An immutable snapshot of all metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataImage {
    /// Kept beside the records, not in them (KRaft keeps it in meta.properties).
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Topic names by id: the records name topics by id.
    topic_names: BTreeMap<Uuid, String>,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// The first producer id no block has been handed out from yet.
    pub next_producer_id: ProducerId,
    /// Broker configs changed at run time (AlterConfigs on the broker), by broker key: the
    /// defaults of every topic that does not override them.
    pub broker_configs: BTreeMap<String, String>,
    /// The log settings of this broker's config file: not metadata, but what every topic's
    /// effective log config is derived from (each broker derives with its own).
    pub static_log_config: LogConfig,
}

/// A record that cannot apply to the image: the log or snapshot holding it is damaged, or the
/// controller decided wrong. The image is left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    InvalidTopicName(String),
    TopicExists(String),
    TopicIdInUse(Uuid),
    UnknownTopicId(Uuid),
    UnknownTopic(String),
    /// Partitions are added in order: the next one's index is the count so far.
    PartitionOutOfOrder {
        topic: String,
        partition: i32,
        expected: i32,
    },
    TooManyPartitions(String),
    /// A partition change decided at another partition epoch than the partition's now: decided
    /// on an image the quorum had moved past.
    StalePartitionChange {
        topic: String,
        partition: i32,
        decided_at: i32,
        now: i32,
    },
    BadPartitionState(String),
    BrokerEpochWentBack(BrokerId),
    /// A fence or unfence of a broker that is not registered at that epoch.
    NotRegistered {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    UnknownPartition {
        topic: String,
        partition: i32,
    },
    ProducerIdsWentBack {
        had: i64,
        got: i64,
    },
    InvalidConfig(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::InvalidTopicName(name) => write!(f, "topic name {name:?} is not valid"),
            ApplyError::TopicExists(name) => write!(f, "topic {name} exists already"),
            ApplyError::TopicIdInUse(id) => write!(f, "topic id {id} is in use"),
            ApplyError::UnknownTopicId(id) => write!(f, "no topic has id {id}"),
            ApplyError::UnknownTopic(name) => write!(f, "no topic {name}"),
            ApplyError::PartitionOutOfOrder {
                topic,
                partition,
                expected,
            } => write!(
                f,
                "{topic}: partition {partition} added where {expected} is next"
            ),
            ApplyError::TooManyPartitions(topic) => write!(
                f,
                "{topic}: more than {} partitions",
                limits::TOPIC_PARTITIONS_MAX
            ),
            ApplyError::StalePartitionChange {
                topic,
                partition,
                decided_at,
                now,
            } => write!(
                f,
                "{topic}-{partition}: a change decided at partition epoch {decided_at}, now at {now}"
            ),
            ApplyError::BadPartitionState(why) => write!(f, "bad partition state: {why}"),
            ApplyError::BrokerEpochWentBack(id) => {
                write!(
                    f,
                    "broker {} registered with an epoch not above its last",
                    id.0
                )
            }
            ApplyError::NotRegistered { broker, epoch } => write!(
                f,
                "broker {} is not registered at epoch {}",
                broker.0, epoch.0
            ),
            ApplyError::UnknownPartition { topic, partition } => {
                write!(f, "{topic} has no partition {partition}")
            }
            ApplyError::ProducerIdsWentBack { had, got } => {
                write!(f, "producer ids go back from {had} to {got}")
            }
            ApplyError::InvalidConfig(why) => write!(f, "invalid config: {why}"),
        }
    }
}

impl std::error::Error for ApplyError {}

impl MetadataImage {
    /// An image with nothing in it yet.
    pub fn new(cluster_id: String, static_log_config: LogConfig) -> MetadataImage {
        MetadataImage {
            cluster_id,
            topics: BTreeMap::new(),
            topic_names: BTreeMap::new(),
            brokers: BTreeMap::new(),
            next_producer_id: ProducerId(0),
            broker_configs: BTreeMap::new(),
            static_log_config,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicMeta>> {
        self.topic_names
            .get(&id)
            .and_then(|name| self.topics.get(name))
    }

    /// Topic defaults under this image's run-time broker configs.
    pub fn log_defaults(&self, static_defaults: &LogConfig) -> anyhow::Result<LogConfig> {
        broker_log_defaults(static_defaults, &self.broker_configs)
    }

    /// Moves the image by one record. Pure: no I/O, no clock. On an error nothing changed.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker(registration) => {
                if let Some(had) = self.brokers.get(&registration.id) {
                    if registration.epoch <= had.epoch {
                        return Err(ApplyError::BrokerEpochWentBack(registration.id));
                    }
                }
                self.brokers.insert(registration.id, registration.clone());
            }
            MetadataRecord::FenceBroker { id, epoch } => self.set_fenced(*id, *epoch, true)?,
            MetadataRecord::UnfenceBroker { id, epoch } => self.set_fenced(*id, *epoch, false)?,
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                decided_at,
            } => {
                let meta = self
                    .topic_by_id(*topic_id)
                    .ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                let state = meta.partition_states.get(partition.0 as usize).ok_or(
                    ApplyError::UnknownPartition {
                        topic: meta.name.clone(),
                        partition: partition.0,
                    },
                )?;
                if decided_at.is_some_and(|at| at != state.partition_epoch) {
                    return Err(ApplyError::StalePartitionChange {
                        topic: meta.name.clone(),
                        partition: partition.0,
                        decided_at: decided_at.map_or(-1, |at| at.0),
                        now: state.partition_epoch.0,
                    });
                }
                let changed = state.changed(*leader, isr.as_deref(), replicas.as_ref());
                check_partition_state(&changed).map_err(ApplyError::BadPartitionState)?;
                let mut next = (**meta).clone();
                next.partition_states[partition.0 as usize] = changed;
                self.topics.insert(next.name.clone(), Arc::new(next));
            }
            MetadataRecord::Topic { name, id } => {
                if !is_valid_topic_name(name) {
                    return Err(ApplyError::InvalidTopicName(name.clone()));
                }
                if self.topics.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.topic_names.contains_key(id) {
                    return Err(ApplyError::TopicIdInUse(*id));
                }
                let log_config = self
                    .log_defaults(&self.static_log_config)
                    .map_err(|err| ApplyError::InvalidConfig(format!("{err:#}")))?;
                self.topic_names.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: 0,
                        partition_states: Vec::new(),
                        configs: BTreeMap::new(),
                        log_config,
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                state,
            } => {
                let meta = self
                    .topic_by_id(*topic_id)
                    .ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                if partition.0 != meta.partitions {
                    return Err(ApplyError::PartitionOutOfOrder {
                        topic: meta.name.clone(),
                        partition: partition.0,
                        expected: meta.partitions,
                    });
                }
                if meta.partitions >= limits::TOPIC_PARTITIONS_MAX {
                    return Err(ApplyError::TooManyPartitions(meta.name.clone()));
                }
                check_partition_state(state).map_err(ApplyError::BadPartitionState)?;
                let mut next = (**meta).clone();
                next.partition_states.push(state.clone());
                next.partitions += 1;
                self.topics.insert(next.name.clone(), Arc::new(next));
            }
            MetadataRecord::RemoveTopic { id } => {
                let name = self
                    .topic_names
                    .remove(id)
                    .ok_or(ApplyError::UnknownTopicId(*id))?;
                self.topics.remove(&name);
            }
            MetadataRecord::Config {
                resource: ConfigResource::Topic(name),
                key,
                value,
            } => {
                let meta = self
                    .topics
                    .get(name)
                    .ok_or_else(|| ApplyError::UnknownTopic(name.clone()))?;
                let mut configs = meta.configs.clone();
                match value {
                    Some(value) => configs.insert(key.clone(), value.clone()),
                    None => configs.remove(key),
                };
                let log_config = self
                    .log_defaults(&self.static_log_config)
                    .and_then(|defaults| topic_log_config(&defaults, &configs))
                    .map_err(|err| ApplyError::InvalidConfig(format!("{name}: {err:#}")))?;
                let next = TopicMeta {
                    configs,
                    log_config,
                    ..(**meta).clone()
                };
                self.topics.insert(name.clone(), Arc::new(next));
            }
            MetadataRecord::Config {
                resource: ConfigResource::Brokers,
                key,
                value,
            } => {
                let mut broker_configs = self.broker_configs.clone();
                match value {
                    Some(value) => broker_configs.insert(key.clone(), value.clone()),
                    None => broker_configs.remove(key),
                };
                let defaults = broker_log_defaults(&self.static_log_config, &broker_configs)
                    .map_err(|err| ApplyError::InvalidConfig(format!("{err:#}")))?;
                // Every topic's effective config follows the new defaults.
                let mut topics = BTreeMap::new();
                for (name, meta) in &self.topics {
                    let log_config = topic_log_config(&defaults, &meta.configs)
                        .map_err(|err| ApplyError::InvalidConfig(format!("{name}: {err:#}")))?;
                    let next = TopicMeta {
                        log_config,
                        ..(**meta).clone()
                    };
                    topics.insert(name.clone(), Arc::new(next));
                }
                self.broker_configs = broker_configs;
                self.topics = topics;
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                if *next_producer_id <= self.next_producer_id {
                    return Err(ApplyError::ProducerIdsWentBack {
                        had: self.next_producer_id.0,
                        got: next_producer_id.0,
                    });
                }
                self.next_producer_id = *next_producer_id;
            }
        }
        Ok(())
    }

    fn set_fenced(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
        fenced: bool,
    ) -> Result<(), ApplyError> {
        match self.brokers.get_mut(&broker) {
            Some(registration) if registration.epoch == epoch => {
                registration.fenced = fenced;
                Ok(())
            }
            _ => Err(ApplyError::NotRegistered { broker, epoch }),
        }
    }

    /// Whether `broker` is registered and not fenced.
    pub fn is_live(&self, broker: BrokerId) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// The records that rebuild this image from `MetadataImage::new` (its snapshot): brokers,
    /// broker configs, then each topic with its configs and partitions, then producer ids.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> = self
            .brokers
            .values()
            .cloned()
            .map(MetadataRecord::RegisterBroker)
            .collect();
        records.extend(
            self.broker_configs
                .iter()
                .map(|(key, value)| MetadataRecord::Config {
                    resource: ConfigResource::Brokers,
                    key: key.clone(),
                    value: Some(value.clone()),
                }),
        );
        for meta in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: meta.name.clone(),
                id: meta.id,
            });
            records.extend(
                meta.configs
                    .iter()
                    .map(|(key, value)| MetadataRecord::Config {
                        resource: ConfigResource::Topic(meta.name.clone()),
                        key: key.clone(),
                        value: Some(value.clone()),
                    }),
            );
            records.extend(meta.partition_states.iter().enumerate().map(|(p, state)| {
                MetadataRecord::Partition {
                    topic_id: meta.id,
                    partition: PartitionId(p as i32),
                    state: state.clone(),
                }
            }));
        }
        if self.next_producer_id > ProducerId(0) {
            // A rebuilt image needs only the high-water mark, not who took the last block.
            records.push(MetadataRecord::ProducerIds {
                broker: BrokerId::NONE,
                broker_epoch: BrokerEpoch(-1),
                next_producer_id: self.next_producer_id,
            });
        }
        records
    }
}

/// Replicas non-empty and distinct, the ISR a subset of them, the leader in the ISR (or none).
fn check_partition_state(state: &PartitionState) -> Result<(), String> {
    if state.replicas.is_empty() {
        return Err("no replicas".into());
    }
    let mut sorted = state.replicas.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != state.replicas.len() {
        return Err(format!("replicas {:?} repeat a broker", state.replicas));
    }
    if let Some(outsider) = state.isr.iter().find(|b| !state.replicas.contains(b)) {
        return Err(format!("ISR member {} is not a replica", outsider.0));
    }
    let moving = state.adding.iter().chain(&state.removing);
    if let Some(outsider) = moving.clone().find(|b| !state.replicas.contains(b)) {
        return Err(format!("replica {} moves but is not a replica", outsider.0));
    }
    if let Some(both) = state.adding.iter().find(|b| state.removing.contains(b)) {
        return Err(format!("replica {} is both added and removed", both.0));
    }
    if state.removing.len() >= state.replicas.len() {
        return Err("a reassignment removes every replica".into());
    }
    if state.leader != BrokerId::NONE && !state.isr.contains(&state.leader) {
        return Err(format!("leader {} is not in the ISR", state.leader.0));
    }
    if state.leader_epoch.0 < 0 || state.partition_epoch.0 < 0 {
        return Err("negative epoch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{BrokerEpoch, LeaderEpoch, PartitionEpoch};

    fn registration(epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker(BrokerRegistration {
            id: BrokerId(1),
            incarnation_id: Uuid::new_v4(),
            epoch: BrokerEpoch(epoch),
            endpoints: Vec::new(),
            fenced: false,
        })
    }

    fn partition(topic_id: Uuid, p: i32, state: PartitionState) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition: PartitionId(p),
            state,
        }
    }

    /// Applies `record`, expecting `want`, and checks that a refusal changed nothing.
    fn refused(image: &mut MetadataImage, record: MetadataRecord, want: ApplyError) {
        let before = image.clone();
        assert_eq!(image.apply(&record), Err(want), "{record:?}");
        assert_eq!(*image, before);
    }

    #[test]
    fn apply_refuses_what_breaks_an_invariant_and_changes_nothing() {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        let id = Uuid::new_v4();
        let one = PartitionState::online(vec![BrokerId(1)]);
        refused(
            &mut image,
            partition(id, 0, one.clone()),
            ApplyError::UnknownTopicId(id),
        );
        image.apply(&registration(3)).unwrap();
        refused(
            &mut image,
            registration(3),
            ApplyError::BrokerEpochWentBack(BrokerId(1)),
        );
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id,
            })
            .unwrap();
        refused(
            &mut image,
            MetadataRecord::Topic {
                name: "t".into(),
                id: Uuid::new_v4(),
            },
            ApplyError::TopicExists("t".into()),
        );
        refused(
            &mut image,
            MetadataRecord::Topic {
                name: "u".into(),
                id,
            },
            ApplyError::TopicIdInUse(id),
        );
        refused(
            &mut image,
            partition(id, 1, one.clone()),
            ApplyError::PartitionOutOfOrder {
                topic: "t".into(),
                partition: 1,
                expected: 0,
            },
        );
        let leader_outside = PartitionState {
            isr: vec![BrokerId(2)],
            ..PartitionState::online(vec![BrokerId(1), BrokerId(2)])
        };
        let twice = PartitionState::online(vec![BrokerId(1), BrokerId(1)]);
        let stale = PartitionState {
            leader_epoch: LeaderEpoch(-1),
            partition_epoch: PartitionEpoch(0),
            ..one.clone()
        };
        for bad in [leader_outside, twice, stale] {
            let before = image.clone();
            let outcome = image.apply(&partition(id, 0, bad));
            assert!(matches!(outcome, Err(ApplyError::BadPartitionState(_))));
            assert_eq!(image, before);
        }
        image.apply(&partition(id, 0, one)).unwrap();
        assert_eq!(image.topics["t"].partitions, 1);
        let change_at = |epoch| MetadataRecord::PartitionChange {
            topic_id: id,
            partition: PartitionId(0),
            leader: Some(BrokerId(1)),
            isr: None,
            replicas: None,
            decided_at: Some(PartitionEpoch(epoch)),
        };
        image.apply(&change_at(0)).unwrap();
        refused(
            &mut image,
            change_at(0),
            ApplyError::StalePartitionChange {
                topic: "t".into(),
                partition: 0,
                decided_at: 0,
                now: 1,
            },
        );
        let before = image.clone();
        let bad_config = MetadataRecord::Config {
            resource: ConfigResource::Topic("t".into()),
            key: "segment.bytes".into(),
            value: Some("-5".into()),
        };
        assert!(matches!(
            image.apply(&bad_config),
            Err(ApplyError::InvalidConfig(_))
        ));
        assert_eq!(image, before);
        let ids = |next| MetadataRecord::ProducerIds {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(3),
            next_producer_id: ProducerId(next),
        };
        image.apply(&ids(1000)).unwrap();
        refused(
            &mut image,
            ids(1000),
            ApplyError::ProducerIdsWentBack {
                had: 1000,
                got: 1000,
            },
        );
        image.apply(&MetadataRecord::RemoveTopic { id }).unwrap();
        assert!(image.topic("t").is_none() && image.topic_by_id(id).is_none());
        refused(
            &mut image,
            MetadataRecord::RemoveTopic { id },
            ApplyError::UnknownTopicId(id),
        );
    }
}
