//! The metadata records: every change to cluster metadata is one of these, decided by the
//! controller (shard 0) and applied by `MetadataImage::apply` on every broker alike. They are
//! modelled on Kafka's KRaft records (`metadata/src/main/resources/common/metadata/*.json`);
//! docs/architecture.md lists where they deviate. Plain values, built on shard 0 and read
//! anywhere.

use uuid::Uuid;

use crate::types::{PartitionId, ProducerId};

/// A broker's `node.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(pub i32);

impl BrokerId {
    /// No broker: a partition without a leader (Kafka's -1).
    pub const NONE: BrokerId = BrokerId(-1);
}

/// A broker's registration epoch: each registration (each start) takes a larger one, so that
/// requests from an earlier incarnation of the broker can be told apart and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub i64);

/// A partition's leader epoch: bumped at each leader change; stamped on the batches it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

/// A partition's epoch: bumped at every change of its state (leader, ISR, replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionEpoch(pub i32);

/// A listener a broker accepts clients on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// A broker joining the cluster (Kafka's RegisterBrokerRecord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    /// Random per process start: tells a restarted broker from a second broker with its id.
    pub incarnation_id: Uuid,
    pub epoch: BrokerEpoch,
    pub endpoints: Vec<Endpoint>,
    /// A fenced broker leads nothing and joins no ISR.
    pub fenced: bool,
}

/// A partition's replication state (Kafka's PartitionRecord).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas: a subset of `replicas`.
    pub isr: Vec<BrokerId>,
    /// A member of `isr`, or `BrokerId::NONE`.
    pub leader: BrokerId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

/// What a config record configures (Kafka's ConfigResource types BROKER and TOPIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    /// The cluster-wide default of every broker (Kafka's broker resource with the empty name).
    Brokers,
    Topic(String),
}

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker(BrokerRegistration),
    Topic {
        name: String,
        id: Uuid,
    },
    /// A new partition: its index is the topic's partition count so far.
    Partition {
        topic_id: Uuid,
        partition: PartitionId,
        state: PartitionState,
    },
    /// Removes a topic with its partitions and configs.
    RemoveTopic {
        id: Uuid,
    },
    /// Sets a config (`value` present) or removes it (`value` absent).
    Config {
        resource: ConfigResource,
        key: String,
        value: Option<String>,
    },
    /// A block of producer ids handed to a broker: every id below `next_producer_id` is taken.
    ProducerIds {
        broker: BrokerId,
        broker_epoch: BrokerEpoch,
        next_producer_id: ProducerId,
    },
}

impl PartitionState {
    /// A new partition with every replica in sync and the first leading, at epoch 0.
    pub fn online(replicas: Vec<BrokerId>) -> PartitionState {
        assert!(!replicas.is_empty(), "a partition has a replica");
        PartitionState {
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        }
    }
}
