//! Consumer groups: the classic group protocol and committed offsets.
//!
//! Each group is coordinated by one shard: the owner of its `__consumer_offsets` partition
//! (Kafka's `abs(hash(group)) % offsets.topic.num.partitions`, then the usual partition-to-shard
//! map). All of a group's state lives on that shard, in its `GroupCoordinator`; requests arriving
//! on other shards travel there as `ShardRequest::Group`.
//!
//! Durability: offset commits and group metadata are appended to the offsets partition through
//! the same log and group fsync as any produce, and answered only once committed (the high
//! watermark passed them: acks=all), so a new leader of the partition holds them.
//!
//! A shard coordinates the groups of an offsets partition only while this broker leads it
//! (`coordination`): elected, it replays the partition to rebuild the groups; resigned, it drops
//! them (pending joins and syncs are answered NOT_COORDINATOR) and the new leader takes over.
//!
//! - `state`: the pure group state machine (clock passed in);
//! - `records`: the offsets-log record format (Kafka's);
//! - this file: the per-shard shell that owns groups, persists, loads and runs the timers.

pub mod records;
pub mod state;
#[cfg(test)]
mod state_tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

use crate::coordination::{self, Served, Term};
use crate::error::ErrorCode;
use crate::internal_log;
use crate::limits;
use crate::partition::{self, PartitionRef};
use crate::shard::Shard;
use crate::storage::batch::{BatchHeader, ControlType};
use crate::storage::fs::UringStorage;
use crate::storage::Clock;
use crate::types::{Offset, ProducerEpoch, ProducerId, ShardId, TopicPartition};
use records::{decode_batches, encode_batch, CommittedOffset, OffsetsRecord, OFFSETS_TOPIC};
use state::{
    Group, GroupConfig, GroupState, GroupSummary, JoinRequest, JoinResponse, Reply, SyncResponse,
};

/// A group operation, addressed to the group's coordinator shard.
#[derive(Debug)]
pub enum GroupOp {
    Join {
        group: String,
        request: JoinRequest,
    },
    Sync {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
    },
    /// (member id, instance id) per leaving member.
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
    /// `None`: every committed offset of the group.
    FetchOffsets {
        group: String,
        partitions: Option<Vec<TopicPartition>>,
        /// OffsetFetch v7+: partitions with transactional offsets not yet committed or aborted
        /// answer UNSTABLE_OFFSET_COMMIT.
        require_stable: bool,
    },
    /// TxnOffsetCommit: offsets that become committed with the producer's transaction.
    TxnCommit {
        group: String,
        /// What the offsets partition asks the transaction's coordinator about.
        txn_id: String,
        producer: ProducerId,
        epoch: ProducerEpoch,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
    Describe {
        group: String,
    },
    List,
    Delete {
        group: String,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
}

impl GroupOp {
    /// The group the operation is about (`None` for List, which every shard answers).
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupOp::Join { group, .. }
            | GroupOp::Sync { group, .. }
            | GroupOp::Heartbeat { group, .. }
            | GroupOp::Leave { group, .. }
            | GroupOp::Commit { group, .. }
            | GroupOp::FetchOffsets { group, .. }
            | GroupOp::TxnCommit { group, .. }
            | GroupOp::Describe { group }
            | GroupOp::Delete { group }
            | GroupOp::DeleteOffsets { group, .. } => Some(group),
            GroupOp::List => None,
        }
    }
}

/// A listed group: id, protocol type, state.
pub type ListedGroup = (String, String, GroupState);

/// A partition's committed offset (`None`: nothing committed), or why it cannot be given.
pub type FetchedOffset = Result<Option<CommittedOffset>, ErrorCode>;

/// A committed offset per partition.
pub type FetchedOffsets = Vec<(TopicPartition, FetchedOffset)>;

#[derive(Debug)]
pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Code(ErrorCode),
    /// A group-level error, or one code per item of the request.
    Codes(Result<Vec<ErrorCode>, ErrorCode>),
    Offsets(Result<FetchedOffsets, ErrorCode>),
    Describe(GroupSummary),
    List(Result<Vec<ListedGroup>, ErrorCode>),
}

/// A group and its committed offsets, each remembered with the log offset that wrote it so a
/// late-arriving durability notice never overwrites a newer commit.
struct Entry {
    group: Group,
    offsets: HashMap<TopicPartition, (CommittedOffset, Offset)>,
    /// Commits appended but not yet durable: the entry must outlive them.
    commits_in_flight: usize,
    /// Transactional offsets waiting for their producer's COMMIT or ABORT marker.
    pending_txn: HashMap<ProducerId, HashMap<TopicPartition, (CommittedOffset, Offset)>>,
}

impl Entry {
    fn new(group: Group) -> Entry {
        Entry {
            group,
            offsets: HashMap::new(),
            commits_in_flight: 0,
            pending_txn: HashMap::new(),
        }
    }

    fn has_pending_txn_offset(&self, tp: &TopicPartition) -> bool {
        self.pending_txn.values().any(|p| p.contains_key(tp))
    }

    /// Applies the end of `producer`'s transaction to its pending offsets.
    fn settle_txn(&mut self, producer: ProducerId, control: ControlType) {
        let Some(pending) = self.pending_txn.remove(&producer) else {
            return;
        };
        if control == ControlType::Abort {
            return;
        }
        for (tp, (value, at)) in pending {
            let newer = self
                .offsets
                .get(&tp)
                .is_none_or(|(_, written)| *written < at);
            if newer {
                self.offsets.insert(tp, (value, at));
            }
        }
    }

    /// Empty, without offsets or commits on their way: nothing would be lost by dropping it.
    fn is_idle(&self) -> bool {
        self.offsets.is_empty() && self.commits_in_flight == 0 && self.pending_txn.is_empty()
    }

    /// Applies `offsets.retention.minutes` to an empty group: removes offsets committed (and
    /// held while empty) longer than `retention_ms` ago, and marks the group Dead once it has no
    /// offsets left, as Kafka does. Returns the tombstones to write.
    fn expire(&mut self, now_ms: i64, retention_ms: i64) -> Vec<OffsetsRecord> {
        if self.group.state() != GroupState::Empty || !self.group.is_quiet() {
            return Vec::new();
        }
        let since = self.group.state_since_ms();
        let id = self.group.id.clone();
        let expired: Vec<TopicPartition> = self
            .offsets
            .iter()
            .filter(|(_, (v, _))| now_ms - since.max(v.commit_timestamp_ms) >= retention_ms)
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut records: Vec<OffsetsRecord> = expired
            .into_iter()
            .map(|tp| {
                self.offsets.remove(&tp);
                OffsetsRecord::Offset {
                    group: id.clone(),
                    tp,
                    value: None,
                }
            })
            .collect();
        if self.is_idle() {
            self.group.mark_dead(now_ms);
            records.push(OffsetsRecord::Group {
                group: id,
                value: None,
            });
        }
        records
    }
}

/// The groups this shard coordinates.
pub struct GroupCoordinator {
    config: GroupConfig,
    offsets_retention_ms: i64,
    groups: RefCell<HashMap<String, Entry>>,
    /// The offsets partitions this shard leads, and whether their groups are replayed yet.
    served: Served,
    /// One pass over a new image at a time: two replays of one partition must not interleave.
    following: Semaphore,
}

/// Which shard coordinates `group`, and the offsets partition it lives in; COORDINATOR_NOT_AVAILABLE
/// until the offsets topic exists.
pub fn coordinator_of(shard: &Shard, group: &str) -> Result<(ShardId, i32), ErrorCode> {
    let image = shard.image();
    let topic = image
        .topic(OFFSETS_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partition = records::partition_for_group(group, topic.partitions);
    Ok((
        shard.owner_of(&TopicPartition::new(OFFSETS_TOPIC, partition)),
        partition,
    ))
}

/// The topics a consumer-protocol member subscribes to, from its JoinGroup metadata.
fn subscribed_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

impl GroupCoordinator {
    pub fn new(config: &crate::config::Config) -> GroupCoordinator {
        GroupCoordinator {
            config: config.group.clone(),
            offsets_retention_ms: config.offsets_retention_ms,
            groups: RefCell::new(HashMap::new()),
            served: Served::default(),
            following: Semaphore::new(1),
        }
    }

    /// Follows the leadership of the offsets partitions this shard owns, after each image:
    /// drops the groups of partitions this broker no longer leads, and replays those it leads in
    /// a new term (at start, when the topic is created, after a failover).
    ///
    /// Not before the image has caught up with this run of the broker (see the transaction
    /// coordinator's `follow_leadership`): a stale term would serve and expire groups from a
    /// stale log.
    pub async fn follow_leadership(&self, shard: &Rc<Shard>) {
        if !shard.knows_this_run() {
            return;
        }
        let _one_pass = self.following.acquire_permit(1).await;
        let Some(count) = shard.image().topic(OFFSETS_TOPIC).map(|t| t.partitions) else {
            return;
        };
        let changes = self
            .served
            .follow(&coordination::led_partitions(shard, OFFSETS_TOPIC));
        for p in changes.resigned {
            let dropped = self.drop_partition(p, count);
            tracing::info!("{OFFSETS_TOPIC}-{p}: no longer led here; dropped {dropped} groups");
        }
        for (p, epoch) in changes.elected {
            let tp = TopicPartition::new(OFFSETS_TOPIC, p);
            // Whatever a former term left in memory may be stale: the log is the truth.
            self.drop_partition(p, count);
            let Ok(partition) = shard.partition(&tp) else {
                continue;
            };
            match self.replay(shard, &partition).await {
                Ok(records) => {
                    let start = partition.borrow().offsets().log_start;
                    if self.served.loaded(p, epoch, start) {
                        tracing::info!(
                            "{tp}: coordinating its groups at leader epoch {} ({records} records loaded)",
                            epoch.0
                        );
                    } else {
                        self.drop_partition(p, count);
                    }
                }
                Err(err) => {
                    tracing::error!("{tp}: loading groups failed: {err}; they stay offline")
                }
            }
        }
    }

    /// Forgets every group of offsets partition `p` (of `count`); returns how many. Pending
    /// joins and syncs of those groups see their reply dropped and answer NOT_COORDINATOR.
    fn drop_partition(&self, p: i32, count: i32) -> usize {
        let mut groups = self.groups.borrow_mut();
        let before = groups.len();
        groups.retain(|id, _| records::partition_for_group(id, count) != p);
        before - groups.len()
    }

    async fn replay(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
    ) -> std::io::Result<usize> {
        let now = shard.clock.now_ms();
        let mut count = 0;
        internal_log::replay(partition, |bytes| {
            decode_batches(bytes, |header, control, records| {
                count += records.len();
                self.apply_loaded_batch(header, control, records, now);
            })
        })
        .await?;
        Ok(count)
    }

    /// Replays one batch: plain records apply at once; a producer's transactional records wait
    /// in the group for its marker (COMMIT applies them, ABORT drops them).
    fn apply_loaded_batch(
        &self,
        header: &BatchHeader,
        control: Option<ControlType>,
        records: Vec<(Offset, OffsetsRecord)>,
        now_ms: i64,
    ) {
        let producer = ProducerId(header.producer_id);
        if let Some(control) = control {
            for entry in self.groups.borrow_mut().values_mut() {
                entry.settle_txn(producer, control);
            }
            return;
        }
        if !header.is_transactional() {
            for (at, record) in records {
                self.apply_loaded(record, at, now_ms);
            }
            return;
        }
        let mut groups = self.groups.borrow_mut();
        for (at, record) in records {
            if let OffsetsRecord::Offset {
                group,
                tp,
                value: Some(value),
            } = record
            {
                let entry = groups
                    .entry(group.clone())
                    .or_insert_with(|| Entry::new(Group::new(&group, value.commit_timestamp_ms)));
                entry
                    .pending_txn
                    .entry(producer)
                    .or_default()
                    .insert(tp, (value, at));
            }
        }
    }

    /// Replays one record written at log offset `at`.
    fn apply_loaded(&self, record: OffsetsRecord, at: Offset, now_ms: i64) {
        let mut groups = self.groups.borrow_mut();
        match record {
            OffsetsRecord::Offset { group, tp, value } => match value {
                Some(v) => {
                    let entry = groups
                        .entry(group.clone())
                        .or_insert_with(|| Entry::new(Group::new(&group, v.commit_timestamp_ms)));
                    entry.offsets.insert(tp, (v, at));
                }
                None => {
                    if let Some(entry) = groups.get_mut(&group) {
                        entry.offsets.remove(&tp);
                    }
                }
            },
            OffsetsRecord::Group { group, value } => match value {
                Some(v) => {
                    let offsets = groups.remove(&group).map(|e| e.offsets).unwrap_or_default();
                    let mut entry = Entry::new(Group::from_record(&group, v, now_ms));
                    entry.offsets = offsets;
                    groups.insert(group.clone(), entry);
                }
                None => {
                    groups.remove(&group);
                }
            },
        }
    }

    /// Runs one operation for a group this shard coordinates.
    pub async fn handle(&self, shard: &Rc<Shard>, op: GroupOp) -> GroupAnswer {
        if let GroupOp::List = op {
            return GroupAnswer::List(self.list());
        }
        let group = op.group().expect("not List").to_string();
        let term = match self.partition_of(shard, &group) {
            Ok(term) => term,
            Err(code) => return Self::failed(&op, code),
        };
        let partition = &term.partition;
        let now = shard.clock.now_ms();
        let answer = match op {
            GroupOp::Join { group, request } => {
                let create = request.member_id.is_empty();
                let reply = match self.with_group(&group, create, now, |e| {
                    e.group.join(request.clone(), &self.config, now)
                }) {
                    Ok(reply) => reply,
                    Err(code) => Reply::Now(JoinResponse::error(code, &request.member_id)),
                };
                self.persist_if_dirty(shard, partition, &group);
                GroupAnswer::Join(match reply {
                    Reply::Now(r) => r,
                    // The reply is dropped when the group goes with its partition's resignation.
                    Reply::Later(rx) => rx.await.unwrap_or_else(|_| {
                        JoinResponse::error(ErrorCode::NotCoordinator, &request.member_id)
                    }),
                })
            }
            GroupOp::Sync {
                group,
                generation,
                member_id,
                instance_id,
                protocol_type,
                protocol_name,
                assignments,
            } => GroupAnswer::Sync(
                self.sync(
                    shard,
                    partition,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                    protocol_type.as_deref(),
                    protocol_name.as_deref(),
                    assignments,
                )
                .await,
            ),
            GroupOp::Heartbeat {
                group,
                generation,
                member_id,
                instance_id,
            } => GroupAnswer::Code(
                self.with_group(&group, false, now, |e| {
                    e.group
                        .heartbeat(generation, &member_id, instance_id.as_deref(), now)
                })
                .unwrap_or_else(|code| code),
            ),
            GroupOp::Leave { group, members } => {
                let codes = self.with_group(&group, false, now, |e| {
                    members
                        .iter()
                        .map(|(id, instance)| {
                            e.group.leave(id, instance.as_deref(), &self.config, now)
                        })
                        .collect()
                });
                self.persist_if_dirty(shard, partition, &group);
                GroupAnswer::Codes(codes)
            }
            GroupOp::Commit {
                group,
                generation,
                member_id,
                instance_id,
                offsets,
            } => GroupAnswer::Codes(
                self.commit(
                    shard,
                    partition,
                    &group,
                    generation,
                    &member_id,
                    instance_id.as_deref(),
                    offsets,
                )
                .await,
            ),
            GroupOp::FetchOffsets {
                group,
                partitions,
                require_stable,
            } => GroupAnswer::Offsets(Ok(self.fetch_offsets(&group, partitions, require_stable))),
            GroupOp::TxnCommit {
                group,
                txn_id,
                producer,
                epoch,
                generation,
                member_id,
                instance_id,
                offsets,
            } => GroupAnswer::Codes(
                self.txn_commit(
                    shard,
                    &term,
                    &group,
                    (&txn_id, producer, epoch),
                    (generation, &member_id, instance_id.as_deref()),
                    offsets,
                )
                .await,
            ),
            GroupOp::Describe { group } => GroupAnswer::Describe(self.describe(&group)),
            GroupOp::Delete { group } => {
                GroupAnswer::Code(self.delete(shard, partition, &group).await)
            }
            GroupOp::DeleteOffsets { group, partitions } => GroupAnswer::Codes(
                self.delete_offsets(shard, partition, &group, partitions)
                    .await,
            ),
            GroupOp::List => unreachable!("answered above"),
        };
        answer
    }

    /// The answer `op` gets when it cannot reach its group (`code` says why).
    pub fn failed(op: &GroupOp, code: ErrorCode) -> GroupAnswer {
        match op {
            GroupOp::Join { request, .. } => {
                GroupAnswer::Join(JoinResponse::error(code, &request.member_id))
            }
            GroupOp::Sync { .. } => GroupAnswer::Sync(SyncResponse::error(code)),
            GroupOp::Heartbeat { .. } | GroupOp::Delete { .. } => GroupAnswer::Code(code),
            GroupOp::Leave { .. }
            | GroupOp::Commit { .. }
            | GroupOp::TxnCommit { .. }
            | GroupOp::DeleteOffsets { .. } => GroupAnswer::Codes(Err(code)),
            GroupOp::FetchOffsets { .. } => GroupAnswer::Offsets(Err(code)),
            GroupOp::Describe { .. } => GroupAnswer::Describe(GroupSummary {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            }),
            GroupOp::List => GroupAnswer::List(Err(code)),
        }
    }

    /// The term under which this shard coordinates the group's offsets partition: it owns the
    /// partition, this broker leads it, and its groups are loaded.
    fn partition_of(&self, shard: &Rc<Shard>, group: &str) -> Result<Term, ErrorCode> {
        let (owner, p) = coordinator_of(shard, group)?;
        if owner != shard.id {
            return Err(ErrorCode::NotCoordinator);
        }
        coordination::current_term(&self.served, shard, OFFSETS_TOPIC, p)
    }

    /// Runs `f` on the group's entry; creates an empty group first when `create` is set.
    fn with_group<T>(
        &self,
        group: &str,
        create: bool,
        now_ms: i64,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Result<T, ErrorCode> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group) {
            if !create {
                return Err(ErrorCode::UnknownMemberId);
            }
            if groups.len() >= limits::GROUPS_PER_SHARD_MAX {
                tracing::warn!(
                    "refusing group {group}: this shard already coordinates {} groups",
                    groups.len()
                );
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
            groups.insert(group.to_string(), Entry::new(Group::new(group, now_ms)));
        }
        Ok(f(groups.get_mut(group).expect("present")))
    }

    /// Appends records to the offsets partition now (so the log keeps the order of state
    /// changes); returns the offset to wait for.
    fn append(
        shard: &Shard,
        partition: &PartitionRef<UringStorage>,
        records: &[OffsetsRecord],
    ) -> Result<Offset, ErrorCode> {
        let batch = encode_batch(records, shard.clock.now_ms());
        // Refused up front, as an acks=all produce is: the high watermark would not move.
        partition.borrow().check_min_insync()?;
        let outcome = partition
            .borrow_mut()
            .append(&batch, shard.clock.now_ms())
            .map_err(|refused| refused.code)?;
        partition::schedule_flush(partition);
        Ok(outcome.end)
    }

    /// Waits until what `appended` wrote is committed (the high watermark reaches it): Kafka's
    /// coordinators write with acks=all.
    async fn wait_committed(
        partition: &PartitionRef<UringStorage>,
        appended: Result<Offset, ErrorCode>,
    ) -> Result<Offset, ErrorCode> {
        let at = appended?;
        partition::wait_high_watermark(partition, at).await?;
        Ok(at)
    }

    /// Persists the group record if the state machine changed it on its own (a completed join,
    /// a static member's new id); the write is ordered now and its durability awaited in the
    /// background.
    fn persist_if_dirty(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
    ) {
        let record = {
            let mut groups = self.groups.borrow_mut();
            let Some(entry) = groups.get_mut(group) else {
                return;
            };
            if !entry.group.take_dirty() {
                return;
            }
            OffsetsRecord::Group {
                group: group.to_string(),
                value: Some(entry.group.record()),
            }
        };
        let appended = Self::append(shard, partition, &[record]);
        let partition = partition.clone();
        let group = group.to_string();
        glommio::spawn_local(async move {
            if let Err(code) = Self::wait_committed(&partition, appended).await {
                tracing::error!("persisting group {group} failed: {code}");
            }
        })
        .detach();
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResponse {
        let step = self.with_group(group, false, 0, |e| {
            let step = e.group.sync(
                generation,
                member_id,
                instance_id,
                protocol_type,
                protocol_name,
                assignments,
            );
            let record = step.persist_generation.map(|_| OffsetsRecord::Group {
                group: group.to_string(),
                value: Some(e.group.record()),
            });
            (step, record)
        });
        let (step, record) = match step {
            Ok(s) => s,
            Err(code) => return SyncResponse::error(code),
        };
        if let (Some(generation), Some(record)) = (step.persist_generation, record) {
            let appended = Self::append(shard, partition, &[record]);
            let partition = partition.clone();
            let result = Self::wait_committed(&partition, appended).await;
            if let Err(code) = result {
                tracing::error!("persisting group {group} generation {generation}: {code}");
            }
            let now = shard.clock.now_ms();
            let _ = self.with_group(group, false, now, |e| {
                e.group
                    .assignment_persisted(generation, result.is_ok(), &self.config, now)
            });
        }
        match step.reply {
            Reply::Now(r) => r,
            // Dropped when the group goes with its partition's resignation.
            Reply::Later(rx) => rx
                .await
                .unwrap_or_else(|_| SyncResponse::error(ErrorCode::NotCoordinator)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let now = shard.clock.now_ms();
        let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
        if !self.groups.borrow().contains_key(group) && !simple {
            // Kafka: a generation for a group that does not exist is an illegal one.
            return Err(ErrorCode::IllegalGeneration);
        }
        self.with_group(group, true, now, |e| {
            e.group
                .validate_offset_commit(generation, member_id, instance_id)?;
            e.commits_in_flight += 1;
            Ok(())
        })??;
        let codes = self.write_offsets(shard, partition, group, offsets).await;
        if let Some(entry) = self.groups.borrow_mut().get_mut(group) {
            entry.commits_in_flight -= 1;
        }
        Ok(codes)
    }

    /// Appends committed offsets, waits until durable, then makes them visible (unless a newer
    /// commit for the same partition already is).
    async fn write_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Vec<ErrorCode> {
        if offsets.is_empty() {
            return Vec::new();
        }
        let records: Vec<OffsetsRecord> = offsets
            .iter()
            .map(|(tp, value)| OffsetsRecord::Offset {
                group: group.to_string(),
                tp: tp.clone(),
                value: Some(value.clone()),
            })
            .collect();
        let appended = Self::append(shard, partition, &records);
        let code = match Self::wait_committed(partition, appended).await {
            Ok(at) => {
                if let Some(entry) = self.groups.borrow_mut().get_mut(group) {
                    for (tp, value) in offsets.iter().cloned() {
                        let newer = entry
                            .offsets
                            .get(&tp)
                            .is_none_or(|(_, written)| *written < at);
                        if newer {
                            entry.offsets.insert(tp, (value, at));
                        }
                    }
                }
                ErrorCode::None
            }
            Err(ErrorCode::MessageTooLarge) => ErrorCode::InvalidCommitOffsetSize,
            Err(code) => {
                tracing::warn!("committing offsets for group {group}: {code}");
                coordination::write_error(code)
            }
        };
        vec![code; offsets.len()]
    }

    fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
        require_stable: bool,
    ) -> FetchedOffsets {
        let groups = self.groups.borrow();
        let Some(entry) = groups.get(group) else {
            return partitions
                .unwrap_or_default()
                .into_iter()
                .map(|tp| (tp, Ok(None)))
                .collect();
        };
        let value = |tp: &TopicPartition| {
            if require_stable && entry.has_pending_txn_offset(tp) {
                return Err(ErrorCode::UnstableOffsetCommit);
            }
            Ok(entry.offsets.get(tp).map(|(v, _)| v.clone()))
        };
        match partitions {
            Some(partitions) => partitions
                .into_iter()
                .map(|tp| {
                    let v = value(&tp);
                    (tp, v)
                })
                .collect(),
            None => {
                let mut all: Vec<_> = entry
                    .offsets
                    .keys()
                    .map(|tp| (tp.clone(), value(tp)))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        }
    }

    /// TxnOffsetCommit: validates like a commit (v3+ carries the member), then appends the
    /// offsets as a transactional batch of the producer, once the transaction's coordinator has
    /// confirmed it includes this partition (`txn::verify`). They stay pending (invisible to
    /// OffsetFetch) until the transaction's marker reaches this partition.
    async fn txn_commit(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        group: &str,
        (txn_id, producer, epoch): (&str, ProducerId, ProducerEpoch),
        (generation, member_id, instance_id): (i32, &str, Option<&str>),
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let partition = &term.partition;
        // Held until the batch is appended.
        let _ticket = crate::txn::verify::admit(shard, partition, Some(txn_id), producer, epoch)
            .await
            .map_err(|code| match code {
                // A coordinator that could not be asked: the client finds the coordinator again
                // and retries (TxnOffsetCommit knows no NOT_ENOUGH_REPLICAS).
                ErrorCode::NotEnoughReplicas => ErrorCode::CoordinatorNotAvailable,
                code => code,
            })?;
        if !self.served.is_current(term) {
            // Resigned while the transaction's coordinator was asked: the group is not ours.
            return Err(ErrorCode::NotCoordinator);
        }
        let now = shard.clock.now_ms();
        self.with_group(group, true, now, |e| {
            let member_given = generation >= 0 || !member_id.is_empty() || instance_id.is_some();
            if member_given {
                e.group
                    .validate_offset_commit(generation, member_id, instance_id)?;
            }
            e.commits_in_flight += 1;
            Ok(())
        })??;
        let records: Vec<OffsetsRecord> = offsets
            .iter()
            .map(|(tp, value)| OffsetsRecord::Offset {
                group: group.to_string(),
                tp: tp.clone(),
                value: Some(value.clone()),
            })
            .collect();
        let batch = records::encode_txn_batch(&records, producer, epoch, now);
        let appended = partition.borrow_mut().append_broker_batch(batch, now);
        let written = match appended {
            Ok(outcome) => {
                partition::schedule_flush(partition);
                partition::wait_high_watermark(partition, outcome.end)
                    .await
                    .map(|_| outcome.base_offset)
            }
            Err(code) => Err(code),
        };
        let mut groups = self.groups.borrow_mut();
        let entry = groups.get_mut(group);
        let code = match (written, entry) {
            (Ok(base), Some(entry)) => {
                let pending = entry.pending_txn.entry(producer).or_default();
                for (i, (tp, value)) in offsets.iter().enumerate() {
                    pending.insert(tp.clone(), (value.clone(), base.next(i as i64)));
                }
                ErrorCode::None
            }
            (Ok(_), None) => ErrorCode::CoordinatorNotAvailable,
            (Err(code @ (ErrorCode::InvalidTxnState | ErrorCode::InvalidProducerEpoch)), _) => code,
            (Err(code), _) => {
                tracing::error!("transactional offsets for group {group}: {code}");
                ErrorCode::NotCoordinator
            }
        };
        if let Some(entry) = groups.get_mut(group) {
            entry.commits_in_flight -= 1;
        }
        Ok(vec![code; offsets.len()])
    }

    /// A COMMIT or ABORT marker of `producer` is durable in offsets partition `p`: its pending
    /// offsets there become committed (unless a newer plain commit came after them) or vanish.
    pub fn end_transaction(
        &self,
        (p, partitions): (i32, i32),
        producer: ProducerId,
        control: ControlType,
    ) {
        for entry in self.groups.borrow_mut().values_mut() {
            if records::partition_for_group(&entry.group.id, partitions) == p {
                entry.settle_txn(producer, control);
            }
        }
    }

    /// Every committed offset of the groups this shard coordinates: (group, partition, offset).
    pub fn committed_offsets(&self) -> Vec<(String, TopicPartition, i64)> {
        let groups = self.groups.borrow();
        let mut all: Vec<_> = groups
            .values()
            .flat_map(|e| {
                e.offsets
                    .iter()
                    .map(|(tp, (v, _))| (e.group.id.clone(), tp.clone(), v.offset))
            })
            .collect();
        all.sort();
        all
    }

    /// How many groups this shard coordinates in each state.
    pub fn count_by_state(&self) -> Vec<(&'static str, usize)> {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for entry in self.groups.borrow().values() {
            *counts.entry(entry.group.state().name()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    fn describe(&self, group: &str) -> GroupSummary {
        match self.groups.borrow().get(group) {
            Some(entry) => entry.group.summary(),
            None => GroupSummary {
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn list(&self) -> Result<Vec<ListedGroup>, ErrorCode> {
        let mut listed: Vec<ListedGroup> = self
            .groups
            .borrow()
            .values()
            .map(|e| {
                (
                    e.group.id.clone(),
                    e.group.protocol_type().unwrap_or_default().to_string(),
                    e.group.state(),
                )
            })
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listed)
    }

    async fn delete(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
    ) -> ErrorCode {
        let now = shard.clock.now_ms();
        let records = {
            let mut groups = self.groups.borrow_mut();
            let Some(entry) = groups.get_mut(group) else {
                return ErrorCode::GroupIdNotFound;
            };
            match entry.group.state() {
                GroupState::Empty => {}
                GroupState::Dead => return ErrorCode::GroupIdNotFound,
                _ => return ErrorCode::NonEmptyGroup,
            }
            entry.group.mark_dead(now);
            let mut records: Vec<OffsetsRecord> = entry
                .offsets
                .keys()
                .map(|tp| OffsetsRecord::Offset {
                    group: group.to_string(),
                    tp: tp.clone(),
                    value: None,
                })
                .collect();
            records.push(OffsetsRecord::Group {
                group: group.to_string(),
                value: None,
            });
            groups.remove(group);
            records
        };
        let appended = Self::append(shard, partition, &records);
        match Self::wait_committed(partition, appended).await {
            Ok(_) => ErrorCode::None,
            Err(code) => {
                tracing::error!("deleting group {group}: {code}");
                ErrorCode::CoordinatorNotAvailable
            }
        }
    }

    async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        partition: &PartitionRef<UringStorage>,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let (codes, records) = {
            let mut groups = self.groups.borrow_mut();
            let entry = groups.get_mut(group).ok_or(ErrorCode::GroupIdNotFound)?;
            let subscribed: BTreeSet<String> = match entry.group.state() {
                GroupState::Dead => return Err(ErrorCode::GroupIdNotFound),
                GroupState::Empty => BTreeSet::new(),
                _ if entry.group.protocol_type() != Some("consumer") => {
                    return Err(ErrorCode::NonEmptyGroup)
                }
                _ => entry
                    .group
                    .record()
                    .members
                    .iter()
                    .flat_map(|m| subscribed_topics(&m.subscription).unwrap_or_default())
                    .collect(),
            };
            let mut codes = Vec::with_capacity(partitions.len());
            let mut records = Vec::new();
            for tp in &partitions {
                if subscribed.contains(&tp.topic) {
                    codes.push(ErrorCode::GroupSubscribedToTopic);
                } else {
                    codes.push(ErrorCode::None);
                    if entry.offsets.remove(tp).is_some() {
                        records.push(OffsetsRecord::Offset {
                            group: group.to_string(),
                            tp: tp.clone(),
                            value: None,
                        });
                    }
                }
            }
            (codes, records)
        };
        if records.is_empty() {
            return Ok(codes);
        }
        let appended = Self::append(shard, partition, &records);
        match Self::wait_committed(partition, appended).await {
            Ok(_) => Ok(codes),
            Err(code) => {
                tracing::error!("deleting offsets of group {group}: {code}");
                Err(ErrorCode::CoordinatorNotAvailable)
            }
        }
    }

    /// Every `GROUP_TICK_MS`: session, rebalance and sync timeouts for every group here, and,
    /// every `offsets.retention.check.interval.ms`, expiry of empty groups' offsets.
    pub async fn timer_loop(shard: Rc<Shard>, retention_check_ms: u64) {
        let mut next_expiry = shard.clock.now_ms() + retention_check_ms as i64;
        let mut next_compaction = shard.clock.now_ms() + limits::INTERNAL_COMPACT_CHECK_MS;
        loop {
            glommio::timer::sleep(Duration::from_millis(limits::GROUP_TICK_MS)).await;
            if shard.is_stopping() {
                return;
            }
            let now = shard.clock.now_ms();
            let coordinator = &shard.groups;
            let dirty: Vec<String> = coordinator
                .groups
                .borrow_mut()
                .values_mut()
                .filter_map(|e| {
                    e.group.tick(&coordinator.config, now);
                    e.group.is_dirty().then(|| e.group.id.clone())
                })
                .collect();
            for group in dirty {
                if let Ok(term) = coordinator.partition_of(&shard, &group) {
                    coordinator.persist_if_dirty(&shard, &term.partition, &group);
                }
            }
            // Groups that only ever saw MEMBER_ID_REQUIRED (or a refused join) leave no trace.
            coordinator
                .groups
                .borrow_mut()
                .retain(|_, e| !(e.is_idle() && e.group.is_forgettable()));
            if now >= next_expiry {
                next_expiry = now + retention_check_ms as i64;
                coordinator.expire_offsets(&shard, now);
            }
            if now >= next_compaction {
                next_compaction = now + limits::INTERNAL_COMPACT_CHECK_MS;
                coordinator.compact(&shard).await;
            }
        }
    }

    /// Compacts the offsets partitions that have grown well past their live state. The
    /// coordinator holds every group's current state, so compaction is a rewrite: append the
    /// live records again, wait until they are durable, then move the log start to where the
    /// rewrite began (whole segments below it are deleted, as DeleteRecords does). A partition
    /// with commits in flight waits for the next check, so no acknowledged commit can sit below
    /// the new start without being part of the rewrite.
    async fn compact(&self, shard: &Rc<Shard>) {
        let Some(topic) = shard.image().topic(OFFSETS_TOPIC).cloned() else {
            return;
        };
        for (p, epoch, rewritten_at) in self.served.loaded_partitions() {
            // An earlier partition's rewrite may have outlasted this one's term.
            let Ok(term) = coordination::current_term(&self.served, shard, OFFSETS_TOPIC, p) else {
                continue;
            };
            if term.epoch != epoch {
                continue;
            }
            let partition = term.partition;
            let Some(live) = self.live_records(p, topic.partitions) else {
                continue;
            };
            if !internal_log::due(&partition, rewritten_at, live.len()) {
                continue;
            }
            let encoded: Vec<(Bytes, Option<Bytes>)> =
                live.iter().map(|r| (r.key(), r.value())).collect();
            match internal_log::rewrite(&partition, &encoded, shard.clock.now_ms()).await {
                Ok(cut) => {
                    tracing::info!(
                        "{OFFSETS_TOPIC}-{p}: compacted to {} live records; log start {cut}",
                        live.len()
                    );
                    self.served.compacted(p, epoch, cut);
                }
                Err(code) => tracing::error!("{OFFSETS_TOPIC}-{p}: compaction failed: {code}"),
            }
        }
    }

    /// The records that rebuild every group of offsets partition `p`; `None` while a commit to
    /// one of them is in flight.
    fn live_records(&self, p: i32, partitions: i32) -> Option<Vec<OffsetsRecord>> {
        let groups = self.groups.borrow();
        let mut live = Vec::new();
        for entry in groups.values() {
            if records::partition_for_group(&entry.group.id, partitions) != p {
                continue;
            }
            if entry.commits_in_flight > 0 || !entry.pending_txn.is_empty() {
                // Records below the cut that are not in memory yet (or not settled yet).
                return None;
            }
            if entry.group.generation() > 0 {
                live.push(OffsetsRecord::Group {
                    group: entry.group.id.clone(),
                    value: Some(entry.group.record()),
                });
            }
            for (tp, (value, _)) in &entry.offsets {
                live.push(OffsetsRecord::Offset {
                    group: entry.group.id.clone(),
                    tp: tp.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        Some(live)
    }

    /// Deletes the offsets of groups that have been empty for `offsets.retention.minutes`, and
    /// then the groups themselves (only of loaded partitions: the others may not be complete).
    fn expire_offsets(&self, shard: &Rc<Shard>, now_ms: i64) {
        let Some(count) = shard.image().topic(OFFSETS_TOPIC).map(|t| t.partitions) else {
            return;
        };
        let loaded: BTreeSet<i32> = self
            .served
            .loaded_partitions()
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        let retention = self.offsets_retention_ms;
        let mut by_group: Vec<(String, Vec<OffsetsRecord>)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for entry in groups.values_mut() {
                if !loaded.contains(&records::partition_for_group(&entry.group.id, count)) {
                    continue;
                }
                let records = entry.expire(now_ms, retention);
                if !records.is_empty() {
                    by_group.push((entry.group.id.clone(), records));
                }
            }
            groups.retain(|_, e| e.group.state() != GroupState::Dead);
        }
        for (group, records) in by_group {
            tracing::info!("group {group}: {} offsets records expired", records.len());
            if let Ok(term) = self.partition_of(shard, &group) {
                let partition = term.partition;
                let appended = Self::append(shard, &partition, &records);
                glommio::spawn_local(async move {
                    if let Err(code) = Self::wait_committed(&partition, appended).await {
                        tracing::error!("expiring offsets of group {group}: {code}");
                    }
                })
                .detach();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(at_ms: i64) -> (CommittedOffset, Offset) {
        let value = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at_ms,
        };
        (value, Offset(0))
    }

    #[test]
    fn offsets_of_an_empty_group_expire_after_the_retention_then_the_group_goes() {
        let mut entry = Entry::new(Group::new("g", 0));
        entry
            .offsets
            .insert(TopicPartition::new("t", 0), committed(1_000));
        entry
            .offsets
            .insert(TopicPartition::new("t", 1), committed(5_000));
        assert!(
            entry.expire(10_000, 10_000).is_empty(),
            "nothing is old enough"
        );
        let first = entry.expire(11_000, 10_000);
        assert_eq!(first.len(), 1, "only the older offset: {first:?}");
        assert_eq!(entry.group.state(), GroupState::Empty);
        let last = entry.expire(15_000, 10_000);
        assert_eq!(last.len(), 2, "the last offset and the group itself");
        assert!(matches!(last[1], OffsetsRecord::Group { value: None, .. }));
        assert_eq!(entry.group.state(), GroupState::Dead);
    }

    #[test]
    fn offsets_of_a_group_with_members_never_expire() {
        let mut entry = Entry::new(Group::new("g", 0));
        let config = GroupConfig {
            min_session_timeout_ms: 1,
            max_session_timeout_ms: 100_000,
            initial_rebalance_delay_ms: 0,
            max_size: 10,
        };
        let join = JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: false,
            supports_skip_assignment: false,
        };
        let _ = entry.group.join(join, &config, 0);
        entry
            .offsets
            .insert(TopicPartition::new("t", 0), committed(0));
        assert!(entry.expire(1_000_000, 10).is_empty());
        assert_eq!(entry.offsets.len(), 1);
    }
}
