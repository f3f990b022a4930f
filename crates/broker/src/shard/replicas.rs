//! The shard's side of replication: which of its partitions follow which leader (and the fetcher
//! task pulling them), the leader-side ISR checks every `replica.lag.time.max.ms / 2`, and the
//! ISR changes sent to the controller. The per-partition rules are in `partition::role` and
//! `replication::replica_set`; this is the wiring.

use std::rc::Rc;

use super::alter_partition::{AlterPartition, IsrChange, IsrMember, RECOVERED};
use super::controller::{ControllerRequest, ControllerResponse};
use super::{Shard, ShardRequest, ShardResponse};
use crate::error::ErrorCode;
use crate::metadata::records::BrokerId;
use crate::partition::PartitionRef;
use crate::replication::fetcher::{self, Followed};
use crate::replication::replica_set::IsrRequest;
use crate::storage::fs::UringStorage;
use crate::storage::Clock;
use crate::types::{ShardId, TopicPartition};

impl Shard {
    /// The partitions this shard holds a replica of and `leader` leads, as the image says.
    pub fn followed_from(&self, leader: BrokerId) -> Vec<Followed> {
        let image = self.image();
        let me = BrokerId(self.config.node_id);
        let partitions = self.partitions.borrow();
        let mut followed = Vec::new();
        for (tp, partition) in partitions.iter() {
            let Some(topic) = image.topic(&tp.topic) else {
                continue;
            };
            let Some(state) = topic.partition_states.get(tp.partition.0 as usize) else {
                continue;
            };
            if state.leader == leader && leader != me && state.replicas.contains(&me) {
                followed.push(Followed {
                    tp: tp.clone(),
                    topic_id: topic.id,
                    leader_epoch: state.leader_epoch,
                    partition: partition.clone(),
                });
            }
        }
        followed
    }

    /// Starts a fetcher for every leader this shard follows a partition from and has none for.
    pub(super) fn start_fetchers(self: &Rc<Self>) {
        // Not from the stale images a broker replays at start (see `take_role_in`).
        if !self.knows_this_run() {
            return;
        }
        let image = self.image();
        let me = BrokerId(self.config.node_id);
        let mut leaders: Vec<BrokerId> = Vec::new();
        for tp in self.partitions.borrow().keys() {
            let state = image
                .topic(&tp.topic)
                .and_then(|t| t.partition_states.get(tp.partition.0 as usize));
            if let Some(state) = state {
                let leader = state.leader;
                if leader != me && leader != BrokerId::NONE && !leaders.contains(&leader) {
                    leaders.push(leader);
                }
            }
        }
        for leader in leaders {
            if self.fetchers.borrow_mut().insert(leader) {
                glommio::spawn_local(fetcher::run(self.clone(), leader)).detach();
            }
        }
    }

    /// A fetcher found nothing more to pull from `leader`.
    pub fn fetcher_stopped(&self, leader: BrokerId) {
        self.fetchers.borrow_mut().remove(&leader);
    }

    /// A follower's fetch of a partition this broker leads was served from `fetch_offset`:
    /// records its progress, and sends the ISR expansion it makes possible.
    pub(super) fn note_follower_fetch(
        self: &Rc<Self>,
        partition: &PartitionRef<UringStorage>,
        follower: (BrokerId, Option<crate::metadata::records::BrokerEpoch>),
        fetch_offset: crate::types::Offset,
    ) {
        let now = self.clock.now_ms();
        let change =
            partition
                .borrow_mut()
                .on_follower_fetch(follower.0, follower.1, fetch_offset, now);
        if let Some(change) = change {
            let tp = partition.borrow().tp.clone();
            glommio::spawn_local(self.clone().alter_isr(tp, change)).detach();
        }
    }

    /// Every `replica.lag.time.max.ms / 2`: drops from each led partition's ISR the followers
    /// that have lagged for longer than `replica.lag.time.max.ms` (Kafka's isr-expiration task).
    pub async fn isr_expiration_loop(self: Rc<Self>) {
        let lag = self.config.replica.lag_time_max;
        while !self.is_stopping() {
            glommio::timer::sleep(lag / 2).await;
            let now = self.clock.now_ms();
            let partitions: Vec<_> = self.partitions.borrow().values().cloned().collect();
            for partition in partitions {
                let change = partition
                    .borrow_mut()
                    .isr_shrink(now, lag.as_millis() as i64);
                if let Some(change) = change {
                    let tp = partition.borrow().tp.clone();
                    tracing::info!("{tp}: shrinking the ISR to {:?}", ids(&change));
                    glommio::spawn_local(self.clone().alter_isr(tp, change)).detach();
                }
            }
        }
    }

    /// Asks the controller for an ISR change and settles it on the partition with the answer.
    async fn alter_isr(self: Rc<Self>, tp: TopicPartition, change: IsrRequest) {
        let Ok(partition) = self.partition(&tp) else {
            return;
        };
        let image = self.image();
        let me = BrokerId(self.config.node_id);
        let (Some(topic), Some(registration)) = (image.topic(&tp.topic), image.brokers.get(&me))
        else {
            partition.borrow_mut().settle_isr(None, self.clock.now_ms());
            return;
        };
        let change = IsrChange {
            partition: tp.partition,
            leader_epoch: partition.borrow().leader_epoch(),
            partition_epoch: change.partition_epoch,
            new_isr: change
                .isr
                .iter()
                .map(|&(id, epoch)| IsrMember { id, epoch })
                .collect(),
            leader_recovery_state: RECOVERED,
        };
        let asked: Vec<i32> = change.new_isr.iter().map(|m| m.id.0).collect();
        let request = AlterPartition {
            broker: me,
            broker_epoch: registration.epoch,
            topics: vec![(topic.id, vec![change])],
        };
        let answer = self
            .call(
                ShardId(0),
                ShardRequest::Controller(ControllerRequest::AlterPartition(request)),
            )
            .await;
        let outcome = match answer {
            ShardResponse::Controller(ControllerResponse::AlterPartition(answer)) => answer
                .and_then(|topics| {
                    let (_, partitions) = topics
                        .into_iter()
                        .next()
                        .ok_or(ErrorCode::UnknownServerError)?;
                    let (_, state) = partitions
                        .into_iter()
                        .next()
                        .ok_or(ErrorCode::UnknownServerError)?;
                    state
                }),
            _ => Err(ErrorCode::NotController),
        };
        let committed = match outcome {
            Ok(state) => {
                tracing::info!("{tp}: ISR now {:?}", state.isr);
                Some((state.isr, state.partition_epoch))
            }
            Err(code) => {
                tracing::info!("{tp}: ISR change to {asked:?} refused: {code:?}");
                None
            }
        };
        partition
            .borrow_mut()
            .settle_isr(committed, self.clock.now_ms());
    }
}

fn ids(change: &IsrRequest) -> Vec<i32> {
    change.isr.iter().map(|(id, _)| id.0).collect()
}
