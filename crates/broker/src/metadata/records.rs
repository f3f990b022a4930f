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
    /// Preferred leader first. While a reassignment moves the partition, the target replicas
    /// followed by those being removed (Kafka's order).
    pub replicas: Vec<BrokerId>,
    /// Replicas a reassignment adds: they fetch, and join the ISR once caught up.
    pub adding: Vec<BrokerId>,
    /// Replicas a reassignment removes once every target replica is in sync.
    pub removing: Vec<BrokerId>,
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
    /// A broker stops heartbeating (or asks to shut down): it leads nothing until unfenced
    /// (Kafka's FenceBrokerRecord). `epoch` is the registration it fences.
    FenceBroker {
        id: BrokerId,
        epoch: BrokerEpoch,
    },
    /// A fenced broker heartbeats again at its registration epoch (Kafka's UnfenceBrokerRecord).
    UnfenceBroker {
        id: BrokerId,
        epoch: BrokerEpoch,
    },
    /// A partition's leader, ISR and/or replicas change (Kafka's PartitionChangeRecord): the
    /// partition epoch goes up by one, and the leader epoch too when a leader is given (a new
    /// leadership term, even for the same broker: one that re-registered must not carry on its
    /// old term).
    PartitionChange {
        topic_id: Uuid,
        partition: PartitionId,
        /// The leader of a new term (`BrokerId::NONE`: none), or `None`: unchanged.
        leader: Option<BrokerId>,
        /// The new ISR, or `None`: unchanged.
        isr: Option<Vec<BrokerId>>,
        /// The new replicas with those being added and removed, or `None`: unchanged.
        replicas: Option<ReplicaSetChange>,
        /// The partition epoch the change was decided at: it applies only to a partition still
        /// at that epoch. Sluice's controllers decide on their own broker's image, which the
        /// quorum may have moved past by the time the change commits (a new leader, another ISR
        /// change); applied blindly, a stale ISR could bring back a broker that misses committed
        /// records. Kafka needs no such field: its one active controller decides on the latest
        /// state. `None` only in records written before the field existed.
        decided_at: Option<PartitionEpoch>,
    },
    /// A block of producer ids handed to a broker: every id below `next_producer_id` is taken.
    ProducerIds {
        broker: BrokerId,
        broker_epoch: BrokerEpoch,
        next_producer_id: ProducerId,
    },
}

/// A partition's replicas as a reassignment changes them (Kafka's PartitionChangeRecord fields
/// Replicas, AddingReplicas and RemovingReplicas, which Sluice always changes together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetChange {
    pub replicas: Vec<BrokerId>,
    pub adding: Vec<BrokerId>,
    pub removing: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is moving the partition.
    pub fn is_reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment under way moves the partition to (all of them when none is).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        let removing = &self.removing;
        self.replicas
            .iter()
            .copied()
            .filter(|r| !removing.contains(r))
            .collect()
    }

    /// This state after a change's leader, ISR and replicas (epochs bumped as the record says).
    pub fn changed(
        &self,
        leader: Option<BrokerId>,
        isr: Option<&[BrokerId]>,
        replicas: Option<&ReplicaSetChange>,
    ) -> PartitionState {
        let mut next = self.clone();
        if let Some(isr) = isr {
            next.isr = isr.to_vec();
        }
        if let Some(change) = replicas {
            next.replicas = change.replicas.clone();
            next.adding = change.adding.clone();
            next.removing = change.removing.clone();
        }
        if let Some(leader) = leader {
            next.leader = leader;
            next.leader_epoch = LeaderEpoch(self.leader_epoch.0.saturating_add(1));
        }
        next.partition_epoch = PartitionEpoch(self.partition_epoch.0.saturating_add(1));
        next
    }

    /// A new partition with every replica in sync and the first leading, at epoch 0.
    pub fn online(replicas: Vec<BrokerId>) -> PartitionState {
        assert!(!replicas.is_empty(), "a partition has a replica");
        PartitionState {
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            adding: Vec::new(),
            removing: Vec::new(),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
        }
    }
}
