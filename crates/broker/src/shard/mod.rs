//! The shard runtime: one pinned glommio executor per core, each owning a disjoint set of
//! partitions (see `metadata::shard_of`), its own copy of the metadata, and its own connections.
//!
//! Shards share nothing mutable. A request for a partition owned elsewhere travels as a
//! `ShardRequest` over bounded channels (`router`) and is answered by a `ShardResponse`. Shard 0
//! additionally runs the metadata controller (`controller`).

pub mod alter_partition;
pub mod assignment;
pub mod controller;
pub mod elections;
mod io_workers;
mod liveness;
pub mod producer_ids;
pub mod reassignment;
mod replicas;
pub mod router;
pub mod runtime;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{select, select_all, LocalBoxFuture};
use futures::FutureExt;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{ErrorCode, ProduceError};
use crate::group::records::OFFSETS_TOPIC;
use crate::group::{GroupAnswer, GroupCoordinator, GroupOp};
use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId, LeaderEpoch};
use crate::metadata::{partition_dir, shard_of, MetadataImage, TopicMeta};
use crate::metrics::{self, Sample, Samples};
use crate::partition::{self, Partition, PartitionOffsets, PartitionRef, ProduceOutcome};
use crate::protocol::fetch_sizing::{self, Budget, ReadLimit, ReadSpan};
use crate::storage::batch::{self, BatchHeader, ControlType};
use crate::storage::fs::UringStorage;
use crate::storage::payload::Payload;
use crate::storage::segment_check::{self, DamagedRange};
use crate::storage::segment_files::is_segment_gone;
use crate::storage::txn_index::AbortedTxn;
use crate::storage::{Clock, Storage, SystemClock};
use crate::txn::{TxnAnswer, TxnCoordinator, TxnOp};
use crate::types::{Offset, ProducerEpoch, ProducerId, ShardId, TopicPartition};
use controller::{Controller, ControllerRequest, ControllerResponse};
use router::Router;

/// One partition's part of a fetch.
#[derive(Debug, Clone)]
pub struct FetchItem {
    pub tp: TopicPartition,
    pub offset: Offset,
    /// The request's `partition_max_bytes`.
    pub partition_max_bytes: usize,
    /// isolation_level read_committed: stop at the last stable offset and report aborted
    /// transactions.
    pub read_committed: bool,
    /// The leader epoch the client knows (v9+), or -1.
    pub current_leader_epoch: i32,
    /// The replica fetching (a follower: its broker id and registration epoch, -1 when it sent
    /// none), or `None` for a consumer.
    pub replica: Option<(BrokerId, BrokerEpoch)>,
    /// The epoch of the last batch the fetcher holds (v12+), or -1: what divergence is checked
    /// against.
    pub last_fetched_epoch: i32,
}

/// What a fetch read from one partition.
#[derive(Debug, Clone)]
pub struct FetchResult {
    pub error: ErrorCode,
    pub offsets: Option<PartitionOffsets>,
    pub records: Payload,
    /// The sizes the records were cut from (`None` when nothing was readable at the offset).
    pub span: Option<ReadSpan>,
    /// For read_committed: the aborted transactions overlapping the records returned.
    pub aborted: Vec<AbortedTxn>,
    /// Where the fetcher's log parts from this one (the last epoch they share and where it
    /// ends here), when `last_fetched_epoch` says it has diverged: no records then.
    pub diverging_epoch: Option<(LeaderEpoch, Offset)>,
}

impl FetchResult {
    pub fn failed(error: ErrorCode, offsets: Option<PartitionOffsets>) -> FetchResult {
        FetchResult {
            error,
            offsets,
            records: Payload::default(),
            span: None,
            aborted: Vec::new(),
            diverging_epoch: None,
        }
    }

    fn read(offsets: PartitionOffsets, records: Payload, span: Option<ReadSpan>) -> FetchResult {
        FetchResult {
            error: ErrorCode::None,
            offsets: Some(offsets),
            records,
            span,
            aborted: Vec::new(),
            diverging_epoch: None,
        }
    }
}

/// Who a fetch reads for, which decides how far it may read.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Below the high watermark: only what is committed.
    Consumer,
    /// Up to the log end (`Partition::follower_cursor_at`).
    Follower,
}

/// Whether `replica` may fetch `tp` from its leader `me`: one of the partition's other assigned
/// replicas. Kafka refuses any other with UNKNOWN_LEADER_EPOCH when the request names the
/// (current) leader epoch, since the replica may be in a newer assignment than this broker's
/// image and should retry, and with NOT_LEADER_OR_FOLLOWER when it names none.
fn check_follower(
    image: &MetadataImage,
    me: BrokerId,
    tp: &TopicPartition,
    replica: BrokerId,
    client_epoch: i32,
) -> Result<(), ErrorCode> {
    let assigned = image
        .topic(&tp.topic)
        .and_then(|t| {
            t.partition_states
                .get(usize::try_from(tp.partition.0).ok()?)
        })
        .is_some_and(|s| s.replicas.contains(&replica));
    if assigned && replica != me {
        Ok(())
    } else if client_epoch == -1 {
        Err(ErrorCode::NotLeaderOrFollower)
    } else {
        Err(ErrorCode::UnknownLeaderEpoch)
    }
}

/// One partition's part of ending a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer: ProducerId,
    pub epoch: ProducerEpoch,
    pub control: ControlType,
    pub coordinator_epoch: i32,
}

/// An offset ListOffsets found: the record's timestamp (-1 for earliest and latest), its offset,
/// and the partition's leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetFound {
    pub timestamp: i64,
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
}

/// A ListOffsets answer.
pub type OffsetAnswer = Result<OffsetFound, ErrorCode>;

/// An OffsetForLeaderEpoch answer: where the asked epoch ends in the leader's log (`None`:
/// undefined, Kafka's -1/-1).
pub type EpochEndAnswer = Result<Option<(LeaderEpoch, Offset)>, ErrorCode>;

/// Kafka's file in each partition directory naming the topic id it belongs to (KIP-516).
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The topic id `dir`'s `partition.metadata` names, if it has a readable one.
fn partition_topic_id(dir: &std::path::Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

/// Writes `dir`'s `partition.metadata` (Kafka's layout; the id as simple hex, as Sluice writes
/// cluster ids), replacing it atomically.
fn record_partition_topic_id(dir: &std::path::Path, id: Uuid) -> std::io::Result<()> {
    let temp = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    std::fs::write(&temp, format!("version: 0\ntopic_id: {}\n", id.simple()))?;
    std::fs::rename(&temp, dir.join(PARTITION_METADATA_FILE))
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardRequest {
    Produce {
        acks: i16,
        /// The request's `transactional_id`: what a partition asks the coordinator about.
        transactional_id: Option<Arc<str>>,
        items: Vec<(TopicPartition, Bytes)>,
        /// Fired once the items are appended, before their acknowledgement is waited for: the
        /// connection's shard then gives the request's memory back (`request_memory`).
        appended: Option<oneshot::Sender<()>>,
    },
    /// Reads the items in order, sizing them as one answer starting from `budget`.
    Fetch {
        items: Vec<FetchItem>,
        budget: Budget,
    },
    /// Record bytes a fetch answer returned from these partitions (their traffic counters).
    FetchServed {
        items: Vec<(TopicPartition, usize)>,
    },
    /// Resolve when any of these partitions has data past its offset, or after `max_wait`:
    /// committed data for a consumer, durable data for a follower.
    WaitForData {
        items: Vec<(TopicPartition, Offset)>,
        follower: bool,
        max_wait: Duration,
    },
    /// ListOffsets: (partition, (timestamp, the client's leader epoch or -1)).
    ListOffsets {
        items: Vec<(TopicPartition, (i64, i32))>,
    },
    /// OffsetForLeaderEpoch: (partition, (the client's current leader epoch or -1, the epoch
    /// whose end it asks for)).
    EpochEnds {
        items: Vec<(TopicPartition, (i32, i32))>,
    },
    /// DeleteRecords: move each partition's log start to the offset (-1: the high watermark).
    DeleteRecords {
        items: Vec<(TopicPartition, i64)>,
    },
    /// EndTxn: write the marker on each partition and answer once they are durable.
    WriteMarkers {
        marker: Marker,
        partitions: Vec<TopicPartition>,
    },
    ApplyMetadata(Arc<MetadataImage>),
    Controller(ControllerRequest),
    /// A consumer-group operation for a group this shard coordinates.
    Group(GroupOp),
    /// A transaction operation for a transactional id this shard coordinates.
    Txn(TxnOp),
    /// The admin endpoint's scrape: this shard's metric samples.
    CollectMetrics,
    /// DescribeLogDirs: each partition's bytes on disk and damaged ranges.
    PartitionLogDirs {
        partitions: Vec<TopicPartition>,
    },
}

/// What DescribeLogDirs reports of one partition.
#[derive(Debug)]
pub struct PartitionLogDir {
    pub size_bytes: u64,
    pub damaged: Vec<DamagedRange>,
}

/// The answer to a `ShardRequest`.
#[derive(Debug)]
pub enum ShardResponse {
    Produce(Vec<Result<ProduceOutcome, ProduceError>>),
    Fetch(Vec<FetchResult>),
    ListOffsets(Vec<OffsetAnswer>),
    EpochEnds(Vec<EpochEndAnswer>),
    DeleteRecords(Vec<Result<Offset, ErrorCode>>),
    /// One result per partition of WriteMarkers.
    PerPartition(Vec<Result<(), ErrorCode>>),
    Controller(ControllerResponse),
    Group(GroupAnswer),
    Txn(TxnAnswer),
    Metrics(Vec<Sample>),
    PartitionLogDirs(Vec<Result<PartitionLogDir, ErrorCode>>),
    Done,
    /// The other shard has stopped (shutdown in progress).
    Unavailable,
}

/// Produce's `acks` for "every in-sync replica".
pub const ACKS_ALL: i16 = -1;

/// The state of one shard, shared by the tasks on its executor (never across threads).
pub struct Shard {
    pub id: ShardId,
    pub count: usize,
    pub config: Arc<Config>,
    image: RefCell<Arc<MetadataImage>>,
    /// This run of the broker, as its registration names it.
    pub incarnation: Uuid,
    partitions: RefCell<HashMap<TopicPartition, PartitionRef<UringStorage>>>,
    pub(crate) router: Router,
    controller: Option<Controller>,
    /// This shard's block of producer ids.
    pub(crate) producer_ids: producer_ids::ProducerIdAllocator,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    /// Connections to the other brokers (transaction markers and verification).
    pub peers: crate::network::peers::Peers,
    /// The leaders this shard has a replica fetcher pulling from (`replication::fetcher`).
    fetchers: RefCell<std::collections::HashSet<BrokerId>>,
    pub clock: SystemClock,
    stopping: Cell<bool>,
    /// Whether this run has looked for stray replicas (`remove_stray_replicas`).
    strays_removed: Cell<bool>,
    /// `queued.max.request.bytes`, shared by this shard's connections.
    pub request_memory: Rc<crate::network::RequestMemory>,
    /// `max.connections` and `max.connections.per.ip`, shared by every shard.
    pub connection_limits: Arc<crate::network::ConnectionLimits>,
}

impl Shard {
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn owner_of(&self, tp: &TopicPartition) -> ShardId {
        shard_of(tp, self.count)
    }

    /// Whether this shard's image holds the broker's registration of this run (and so what
    /// the quorum committed before it).
    pub fn knows_this_run(&self) -> bool {
        let node = BrokerId(self.config.node_id);
        let image = self.image.borrow();
        image
            .brokers
            .get(&node)
            .is_some_and(|registered| registered.incarnation_id == self.incarnation)
    }

    /// Whether this shard's image holds the broker's registration of this run, unfenced: the
    /// quorum has taken it back into service.
    pub fn in_service_this_run(&self) -> bool {
        let node = BrokerId(self.config.node_id);
        let image = self.image.borrow();
        image.brokers.get(&node).is_some_and(|registered| {
            registered.incarnation_id == self.incarnation && !registered.fenced
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub(crate) fn partition(
        &self,
        tp: &TopicPartition,
    ) -> Result<PartitionRef<UringStorage>, ErrorCode> {
        if let Some(partition) = self.partitions.borrow().get(tp) {
            return Ok(partition.clone());
        }
        Err(self.not_open_error(tp))
    }

    /// The partition, if this broker leads it under the leader epoch the client names (-1: any);
    /// else the error Kafka answers (`Partition::check_leader`).
    pub(crate) fn led_partition(
        &self,
        tp: &TopicPartition,
        client_epoch: i32,
    ) -> Result<PartitionRef<UringStorage>, ErrorCode> {
        let partition = self.partition(tp)?;
        partition.borrow().check_leader(client_epoch)?;
        Ok(partition)
    }

    /// Gives `partition` the role `image` gives this broker in it (leader or follower), once the
    /// image holds this run's registration. A broker replaying the quorum's log at start passes
    /// through images older than its own log: leading in one of them would start a term it lost
    /// long ago at its log end (an epoch-cache entry no batch of its own backs), and its fetches
    /// would then name that epoch to the real leader, which cannot tell where this replica's
    /// history parts from its own (the follower was left with a log end inside one of the
    /// leader's batches, and every fetch failing CORRUPT_MESSAGE). Kafka's brokers likewise
    /// take no partition role before their initial metadata catch-up.
    fn take_role_in(&self, image: &MetadataImage, partition: &mut Partition<UringStorage>) {
        if !self.knows_this_run() {
            return;
        }
        let tp = &partition.tp;
        let state = image
            .topic(&tp.topic)
            .and_then(|t| t.partition_states.get(tp.partition.0 as usize));
        if let Some(state) = state {
            let me = BrokerId(self.config.node_id);
            partition.take_role(me, state, self.clock.now_ms());
        }
    }

    /// The answer for a partition this shard has not opened: one the metadata names is on its
    /// way (being opened, or its topic just created here) and worth a retry after a metadata
    /// refresh, as Kafka answers for a partition it has not become leader of yet; anything else
    /// does not exist.
    fn not_open_error(&self, tp: &TopicPartition) -> ErrorCode {
        let named = self
            .image()
            .topic(&tp.topic)
            .is_some_and(|topic| (0..topic.partitions).contains(&tp.partition.0));
        if named {
            ErrorCode::NotLeaderOrFollower
        } else {
            ErrorCode::UnknownTopicOrPartition
        }
    }

    /// A producer id no one else has, from this shard's block (a new block from the controller
    /// when it is used up).
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<ProducerId, ErrorCode> {
        self.producer_ids
            .allocate(|| async {
                let broker = BrokerId(self.config.node_id);
                let registered = self.image().brokers.get(&broker).map(|b| b.epoch);
                let broker_epoch = registered.ok_or(ErrorCode::StaleBrokerEpoch)?;
                let request = ControllerRequest::AllocateProducerIds {
                    broker,
                    broker_epoch,
                };
                match self
                    .call(ShardId(0), ShardRequest::Controller(request))
                    .await
                {
                    ShardResponse::Controller(ControllerResponse::ProducerIds(answer)) => answer,
                    _ => Err(ErrorCode::CoordinatorNotAvailable),
                }
            })
            .await
    }

    /// Sends `request` to shard `to` (or runs it here when `to` is this shard) and awaits the answer.
    pub async fn call(self: &Rc<Self>, to: ShardId, request: ShardRequest) -> ShardResponse {
        if to == self.id {
            return self.clone().handle(request).await;
        }
        self.router.call(to, request).await
    }

    /// Runs a request addressed to this shard.
    pub fn handle(self: Rc<Self>, request: ShardRequest) -> LocalBoxFuture<'static, ShardResponse> {
        async move {
            match request {
                ShardRequest::Produce {
                    acks,
                    transactional_id,
                    items,
                    appended,
                } => ShardResponse::Produce(
                    self.produce_local(acks, transactional_id.as_deref(), items, appended)
                        .await,
                ),
                ShardRequest::Fetch { items, budget } => {
                    ShardResponse::Fetch(self.fetch_local(items, budget).await)
                }
                ShardRequest::FetchServed { items } => {
                    for (tp, bytes) in items {
                        if let Ok(p) = self.partition(&tp) {
                            p.borrow_mut().stats.bytes_out += bytes as u64;
                        }
                    }
                    ShardResponse::Done
                }
                ShardRequest::WaitForData {
                    items,
                    follower,
                    max_wait,
                } => {
                    self.wait_for_data_local(items, follower, max_wait).await;
                    ShardResponse::Done
                }
                ShardRequest::ListOffsets { items } => {
                    ShardResponse::ListOffsets(self.list_offsets_local(items).await)
                }
                ShardRequest::EpochEnds { items } => {
                    let answers = items.into_iter().map(|(tp, (current, asked))| {
                        let partition = self.led_partition(&tp, current)?;
                        let end = partition.borrow().end_offset_for_epoch(LeaderEpoch(asked));
                        Ok(end)
                    });
                    ShardResponse::EpochEnds(answers.collect())
                }
                ShardRequest::DeleteRecords { items } => {
                    let mut results = Vec::with_capacity(items.len());
                    for (tp, offset) in items {
                        results.push(match self.led_partition(&tp, -1) {
                            Ok(p) => partition::delete_records(&p, offset).await,
                            Err(code) => Err(code),
                        });
                    }
                    ShardResponse::DeleteRecords(results)
                }
                ShardRequest::WriteMarkers { marker, partitions } => {
                    ShardResponse::PerPartition(self.write_markers(marker, partitions).await)
                }
                ShardRequest::ApplyMetadata(image) => {
                    self.apply_metadata(image).await;
                    ShardResponse::Done
                }
                ShardRequest::Group(op) => {
                    ShardResponse::Group(self.groups.handle(&self, op).await)
                }
                ShardRequest::Txn(op) => ShardResponse::Txn(self.txns.handle(&self, op).await),
                ShardRequest::CollectMetrics => ShardResponse::Metrics(self.collect_metrics()),
                ShardRequest::PartitionLogDirs { partitions } => ShardResponse::PartitionLogDirs(
                    partitions
                        .iter()
                        .map(|tp| {
                            self.partition(tp).map(|p| {
                                let p = p.borrow();
                                PartitionLogDir {
                                    size_bytes: p.size_bytes(),
                                    damaged: p.damaged(),
                                }
                            })
                        })
                        .collect(),
                ),
                ShardRequest::Controller(request) => match &self.controller {
                    Some(controller) => {
                        ShardResponse::Controller(controller.handle(&self, request).await)
                    }
                    None => ShardResponse::Controller(ControllerResponse::NotController),
                },
            }
        }
        .boxed_local()
    }

    /// Appends each item to its partition (all owned here), fires `appended`, then waits for
    /// every successful append: acks=1 until it is on this broker's disk (the durable end),
    /// acks=all until it is committed (the high watermark), acks=0 not at all.
    async fn produce_local(
        self: &Rc<Self>,
        acks: i16,
        transactional_id: Option<&str>,
        items: Vec<(TopicPartition, Bytes)>,
        appended_signal: Option<oneshot::Sender<()>>,
    ) -> Vec<Result<ProduceOutcome, ProduceError>> {
        let mut appended = Vec::with_capacity(items.len());
        // Each item's bytes are let go once appended: its log holds them until its flush.
        for (tp, records) in items {
            let result = if self.is_stopping() {
                Err(ErrorCode::NotLeaderOrFollower.into())
            } else {
                self.append_led(&tp, &records, acks, transactional_id).await
            };
            if let Ok((_, p)) = &result {
                partition::schedule_flush(p);
            }
            appended.push(result);
        }
        if let Some(signal) = appended_signal {
            let _ = signal.send(());
        }
        let mut results = Vec::with_capacity(appended.len());
        for result in appended {
            results.push(match result {
                Ok((outcome, p)) => {
                    // The handler lets only 0, 1 and -1 (ACKS_ALL) through.
                    let acked = match acks {
                        0 => Ok(()),
                        1 => partition::wait_durable(&p, outcome.end).await,
                        _ => partition::wait_high_watermark(&p, outcome.end).await,
                    };
                    acked.map(|_| outcome).map_err(ProduceError::from)
                }
                Err(code) => Err(code),
            });
        }
        results
    }

    /// Appends a produce's records to `tp` if this broker leads it, once a transactional batch's
    /// coordinator has confirmed the transaction includes the partition (`txn::verify`).
    async fn append_led(
        self: &Rc<Self>,
        tp: &TopicPartition,
        records: &Bytes,
        acks: i16,
        transactional_id: Option<&str>,
    ) -> Result<(ProduceOutcome, PartitionRef<UringStorage>), ProduceError> {
        let p = self.led_partition(tp, -1)?;
        let transaction = BatchHeader::parse(records)
            .filter(|h| h.is_transactional() && h.has_producer_id())
            .map(|h| (ProducerId(h.producer_id), ProducerEpoch(h.producer_epoch)));
        // Held until the batch is appended: the producer's next batches wait their turn.
        let _ticket = match transaction {
            Some((producer, epoch)) => {
                crate::txn::verify::admit(self, &p, transactional_id, producer, epoch).await?
            }
            None => None,
        };
        if acks == ACKS_ALL {
            p.borrow().check_min_insync()?;
        }
        // Time is read after the wait, so the batch's append time is when it was appended.
        let outcome = p.borrow_mut().append(records, self.clock.now_ms())?;
        Ok((outcome, p))
    }

    /// Appends `marker` to every partition (all owned here), waits until each is committed, and
    /// lets the group coordinator settle transactional offsets in offsets partitions.
    async fn write_markers(
        self: &Rc<Self>,
        marker: Marker,
        partitions: Vec<TopicPartition>,
    ) -> Vec<Result<(), ErrorCode>> {
        let now = self.clock.now_ms();
        let mut written = Vec::with_capacity(partitions.len());
        for tp in &partitions {
            let result = self.led_partition(tp, -1).and_then(|p| {
                let outcome = p.borrow_mut().write_marker(
                    marker.producer,
                    marker.epoch,
                    marker.control,
                    marker.coordinator_epoch,
                    now,
                )?;
                partition::schedule_flush(&p);
                Ok((p, outcome))
            });
            written.push(result);
        }
        let mut results = Vec::with_capacity(written.len());
        for (tp, result) in partitions.iter().zip(written) {
            let result = match result {
                Ok((p, outcome)) => partition::wait_high_watermark(&p, outcome.end).await,
                Err(code) => Err(code),
            };
            if result.is_ok() && tp.topic == OFFSETS_TOPIC {
                let partitions = self
                    .image()
                    .topic(OFFSETS_TOPIC)
                    .map_or(1, |t| t.partitions);
                self.groups.end_transaction(
                    (tp.partition.0, partitions),
                    marker.producer,
                    marker.control,
                );
            }
            results.push(result);
        }
        results
    }

    /// Reads the items in order as if they were the whole answer (`protocol::fetch_sizing`):
    /// the handler settles the exact answer across shards from these reads.
    async fn fetch_local(
        self: &Rc<Self>,
        items: Vec<FetchItem>,
        mut budget: Budget,
    ) -> Vec<FetchResult> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let limit = budget.limit(item.partition_max_bytes);
            let result = self.fetch_one(item, limit).await;
            budget.take(result.records.len());
            results.push(result);
        }
        results
    }

    async fn fetch_one(self: &Rc<Self>, item: FetchItem, limit: ReadLimit) -> FetchResult {
        let partition = match self.led_partition(&item.tp, item.current_leader_epoch) {
            Ok(p) => p,
            Err(code) => return FetchResult::failed(code, None),
        };
        match item.replica {
            None => self.consumer_fetch(&partition, &item, limit).await,
            Some((replica, epoch)) => {
                let epoch = (epoch.0 >= 0).then_some(epoch);
                self.follower_fetch(&partition, &item, (replica, epoch), limit)
                    .await
            }
        }
    }

    /// A consumer's fetch: what is committed (below the high watermark), and for read_committed
    /// only what is stable, with the aborted transactions to skip.
    async fn consumer_fetch(
        &self,
        partition: &PartitionRef<UringStorage>,
        item: &FetchItem,
        limit: ReadLimit,
    ) -> FetchResult {
        let (records, span, offsets) = match self
            .read_records(partition, item, limit, Reader::Consumer)
            .await
        {
            Ok(read) => read,
            Err(failed) => return failed,
        };
        if !item.read_committed {
            return FetchResult::read(offsets, records, span);
        }
        // read_committed: nothing from the oldest open transaction on, and the aborted
        // transactions the client must skip in what it gets.
        let (records, end) = match records {
            Payload::Bytes(bytes) => {
                let (kept, end) = batch::whole_batches_below(&bytes, offsets.last_stable);
                (Payload::Bytes(kept), end)
            }
            range => (range, offsets.last_stable),
        };
        FetchResult {
            aborted: partition.borrow().aborted_between(item.offset, end),
            ..FetchResult::read(offsets, records, span)
        }
    }

    /// A follower's fetch (Kafka's LOG_END isolation, whatever isolation level it sent): up to
    /// the log end, past the high watermark that waits for the followers themselves; only from
    /// a replica the partition's assignment names.
    async fn follower_fetch(
        self: &Rc<Self>,
        partition: &PartitionRef<UringStorage>,
        item: &FetchItem,
        (replica, epoch): (BrokerId, Option<BrokerEpoch>),
        limit: ReadLimit,
    ) -> FetchResult {
        let me = BrokerId(self.config.node_id);
        let check = check_follower(
            &self.image(),
            me,
            &item.tp,
            replica,
            item.current_leader_epoch,
        );
        if let Err(code) = check {
            return FetchResult::failed(code, None);
        }
        // A fetch from an earlier incarnation of the follower (a process since restarted and
        // registered again) must not count as progress of the new one (Kafka's stale fetch
        // state check).
        let registered = self.image().brokers.get(&replica).map(|b| b.epoch);
        if epoch.zip(registered).is_some_and(|(sent, now)| sent < now) {
            return FetchResult::failed(ErrorCode::NotLeaderOrFollower, None);
        }
        // A follower whose last epoch ends elsewhere here has a history this log does not
        // share: it is told where to cut, with no records, and its offset is not progress.
        let diverging = partition
            .borrow()
            .diverging_epoch(item.last_fetched_epoch, item.offset);
        match diverging {
            Err(code) => return FetchResult::failed(code, Some(partition.borrow().offsets())),
            Ok(Some(diverging)) => {
                return FetchResult {
                    diverging_epoch: Some(diverging),
                    ..FetchResult::read(partition.borrow().offsets(), Payload::default(), None)
                };
            }
            Ok(None) => {}
        }
        let (records, span, offsets) = match self
            .read_records(partition, item, limit, Reader::Follower)
            .await
        {
            Ok(read) => read,
            Err(failed) => return failed,
        };
        // The follower fetches from its durable end: the progress the high watermark and the
        // ISR are decided on.
        self.note_follower_fetch(partition, (replica, epoch), item.offset);
        FetchResult::read(offsets, records, span)
    }

    /// Reads `item` up to where `reader` may read, sized by `limit`: the records (none when
    /// nothing is readable there yet), the sizes they were cut from, and the offsets they were
    /// read under; or the failed answer.
    async fn read_records(
        &self,
        partition: &PartitionRef<UringStorage>,
        item: &FetchItem,
        limit: ReadLimit,
        reader: Reader,
    ) -> Result<(Payload, Option<ReadSpan>, PartitionOffsets), FetchResult> {
        // read_committed stops at the last stable offset: below an open transaction the batches
        // must be parsed to cut there, so they are read into memory. With none open, every
        // readable batch is stable and the range can go out as it is.
        let zero_copy_min = |offsets: &PartitionOffsets| {
            let must_cut = item.read_committed && offsets.last_stable < offsets.high_watermark;
            if self.config.fetch_zero_copy && !must_cut {
                limits::FETCH_ZERO_COPY_MIN_BYTES
            } else {
                usize::MAX
            }
        };
        let mut looked_again = false;
        let len_of = |first, available| fetch_sizing::read_len(limit, first, available);
        let (read, offsets) = loop {
            let (cursor, offsets) = {
                let p = partition.borrow();
                let cursor = match reader {
                    Reader::Consumer => p.cursor_at(item.offset),
                    Reader::Follower => p.follower_cursor_at(item.offset),
                };
                (cursor, p.offsets())
            };
            let cursor = match cursor {
                Err(code) => return Err(FetchResult::failed(code, Some(offsets))),
                Ok(None) => break (None, offsets),
                Ok(Some(cursor)) => cursor,
            };
            let read = cursor.read_payload(item.offset, len_of, zero_copy_min(&offsets));
            match read.await {
                Ok(read) => break (read, offsets),
                // Deleted or compacted while the read opened it: the log now says where to read
                // (or that the offset is gone). Only once: a second miss fails like any read.
                Err(err) if is_segment_gone(&err) && !looked_again => looked_again = true,
                // Logged once when found; each fetch there gets the error clients surface.
                Err(err) if segment_check::is_damaged(&err) => {
                    tracing::debug!("fetch {} at {}: {err}", item.tp, item.offset);
                    return Err(FetchResult::failed(
                        ErrorCode::CorruptMessage,
                        Some(offsets),
                    ));
                }
                Err(err) => {
                    tracing::error!("fetch {} at {}: read failed: {err}", item.tp, item.offset);
                    return Err(FetchResult::failed(ErrorCode::KafkaStorageError, None));
                }
            }
        };
        Ok(match read {
            None => (Payload::default(), None, offsets),
            Some(read) => {
                let span = ReadSpan {
                    first_batch_bytes: read.first_batch_bytes,
                    available_bytes: read.available_bytes,
                    read_bytes: read.records.len(),
                };
                (read.records, Some(span), offsets)
            }
        })
    }

    async fn wait_for_data_local(
        &self,
        items: Vec<(TopicPartition, Offset)>,
        follower: bool,
        max_wait: Duration,
    ) {
        let mut arrivals = Vec::new();
        for (tp, offset) in items {
            let Ok(p) = self.partition(&tp) else { return };
            match partition::data_arrival(&p, offset, follower) {
                Some(rx) => arrivals.push(rx),
                None => return,
            }
        }
        if arrivals.is_empty() {
            return;
        }
        let timeout = glommio::timer::sleep(max_wait).boxed_local();
        let _ = select(select_all(arrivals), timeout).await;
    }

    async fn list_offsets_local(
        &self,
        items: Vec<(TopicPartition, (i64, i32))>,
    ) -> Vec<OffsetAnswer> {
        let mut answers = Vec::with_capacity(items.len());
        for (tp, (timestamp, client_epoch)) in items {
            answers.push(self.list_offset(&tp, timestamp, client_epoch).await);
        }
        answers
    }

    async fn list_offset(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
        client_epoch: i32,
    ) -> OffsetAnswer {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        let partition = self.led_partition(tp, client_epoch)?;
        let offsets = partition.borrow().offsets();
        let leader_epoch = partition.borrow().leader_epoch();
        let found = |timestamp, offset| OffsetFound {
            timestamp,
            offset,
            leader_epoch,
        };
        match timestamp {
            LATEST => Ok(found(-1, offsets.high_watermark)),
            EARLIEST => Ok(found(-1, offsets.log_start)),
            t if t < 0 => Err(ErrorCode::InvalidRequest),
            t => {
                let located = match partition::cursor_for_timestamp(&partition, t).await {
                    Ok(Some(cursor)) => cursor.find_timestamp(t, offsets.log_start).await,
                    Ok(None) => Ok(None),
                    Err(err) => Err(err),
                };
                match located {
                    Ok(Some((offset, ts))) => Ok(found(ts, offset)),
                    Ok(None) => Ok(found(-1, Offset(-1))),
                    Err(err) => {
                        tracing::error!("list offsets {tp} at {t}: {err}");
                        Err(ErrorCode::KafkaStorageError)
                    }
                }
            }
        }
    }

    /// Replaces the metadata snapshot, opening partitions this shard now owns and deleting those
    /// whose topic is gone (or was re-created under a new id), or that a reassignment moved off
    /// this broker.
    async fn apply_metadata(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let old = self.image.replace(image.clone());
        // A broker replaying the quorum's log at start passes through images older than its
        // own data: a replica it holds again later may not be its own in one of them. Only an
        // image with this run's registration says for sure which replicas are this broker's.
        let caught_up = self.knows_this_run();
        let gone: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|tp| match (old.topic(&tp.topic), image.topic(&tp.topic)) {
                (Some(before), Some(now)) => {
                    before.id != now.id
                        || tp.partition.0 >= now.partitions
                        || (caught_up && !self.holds_replica(now, tp.partition.0))
                }
                _ => true,
            })
            .cloned()
            .collect();
        for tp in gone {
            if let Some(p) = self.partitions.borrow_mut().remove(&tp) {
                // A replica moved away: its clients find the partition's new leader.
                let why = if image.topic(&tp.topic).is_some() {
                    tracing::info!("{tp}: no longer a replica here; deleting its log");
                    ErrorCode::NotLeaderOrFollower
                } else {
                    ErrorCode::UnknownTopicOrPartition
                };
                if let Err(err) = p.borrow_mut().delete(why) {
                    tracing::error!("deleting {tp}: {err}");
                }
            }
        }
        for (tp, partition) in self.partitions.borrow().iter() {
            if let Some(topic) = image.topic(&tp.topic) {
                let mut p = partition.borrow_mut();
                if p.log_config() != &topic.log_config {
                    p.set_log_config(topic.log_config.clone());
                }
                self.take_role_in(&image, &mut p);
            }
        }
        self.remove_stale_directories(&old, &image);
        if caught_up && !self.strays_removed.replace(true) {
            self.remove_stray_replicas(&image);
        }
        self.open_owned_partitions(false).await;
        self.start_fetchers();
        self.groups.follow_leadership(self).await;
        self.txns.follow_leadership(self).await;
    }

    /// A partition that is new in `image` must start empty: a directory left under its name by
    /// a deleted topic (whose removal a crash interrupted, or that was deleted and created again
    /// while this broker was away) is removed before the partition opens. The directory's
    /// `partition.metadata` says which topic it belongs to: one of this very topic is kept and
    /// recovered, as at every start of a broker whose metadata comes from the quorum (its image
    /// starts empty, so every partition looks new). A directory without the file, from a
    /// version that did not write it, is kept too: losing data is worse than keeping some.
    fn remove_stale_directories(&self, old: &MetadataImage, image: &MetadataImage) {
        for topic in image.topics.values() {
            let known = old
                .topic(&topic.name)
                .filter(|t| t.id == topic.id)
                .map(|t| t.partitions)
                .unwrap_or(0);
            for p in (known..topic.partitions).filter(|&p| self.holds_replica(topic, p)) {
                let tp = TopicPartition::new(topic.name.clone(), p);
                let dir = partition_dir(&self.config.data_dir, &tp);
                if self.owner_of(&tp) != self.id || !dir.exists() {
                    continue;
                }
                match partition_topic_id(&dir) {
                    Some(id) if id == topic.id => {}
                    None => {
                        tracing::info!("{tp}: keeping {}, which names no topic id", dir.display())
                    }
                    Some(other) => {
                        tracing::warn!(
                            "removing stale directory {} (topic id {other}) before creating {tp} (topic id {})",
                            dir.display(),
                            topic.id
                        );
                        if let Err(err) = std::fs::remove_dir_all(&dir) {
                            tracing::error!("removing {}: {err}", dir.display());
                        }
                    }
                }
            }
        }
    }

    /// Deletes the directories of this shard's partitions that the caught-up image places on
    /// other brokers (Kafka's stray replicas, KIP-858): a reassignment that completed while this
    /// broker was down moved them away, and nothing else would ever remove them. Only a
    /// directory whose `partition.metadata` names the topic as it exists now is removed.
    fn remove_stray_replicas(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((topic_name, index)) = name.rsplit_once('-') else {
                continue;
            };
            let (Some(topic), Ok(index)) = (image.topic(topic_name), index.parse::<i32>()) else {
                continue;
            };
            let tp = TopicPartition::new(topic_name.to_string(), index);
            let dir = entry.path();
            let stray = index < topic.partitions
                && self.owner_of(&tp) == self.id
                && !self.holds_replica(topic, index)
                && !self.partitions.borrow().contains_key(&tp)
                && partition_topic_id(&dir) == Some(topic.id);
            if stray {
                tracing::info!(
                    "{tp}: a stray replica (placed on other brokers); deleting {}",
                    dir.display()
                );
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    tracing::error!("removing {}: {err}", dir.display());
                }
            }
        }
    }

    /// Whether this broker holds a replica of partition `p` of `topic`: a cluster's brokers
    /// store only the partitions placed on them (a single broker, all of them).
    fn holds_replica(&self, topic: &TopicMeta, p: i32) -> bool {
        let me = BrokerId(self.config.node_id);
        topic
            .partition_states
            .get(p as usize)
            .is_some_and(|state| state.replicas.contains(&me))
    }

    /// Opens every partition in the current image that this shard owns and has not opened yet,
    /// `RECOVERY_PARTITIONS_IN_FLIGHT` at a time: a restart with many partitions waits on file
    /// reads, which overlap.
    pub async fn open_owned_partitions(&self, clean: bool) {
        use futures::stream::StreamExt;
        let image = self.image();
        let started = std::time::Instant::now();
        let (mut opened, mut rebuilt, mut truncated) = (0usize, 0usize, 0usize);
        let wanted: Vec<(TopicPartition, crate::config::LogConfig, Uuid)> = image
            .topics
            .values()
            .flat_map(|topic| {
                (0..topic.partitions)
                    .filter(|&p| self.holds_replica(topic, p))
                    .map(|p| {
                        let tp = TopicPartition::new(topic.name.clone(), p);
                        (tp, topic.log_config.clone(), topic.id)
                    })
            })
            .filter(|(tp, _, _)| {
                self.owner_of(tp) == self.id && !self.partitions.borrow().contains_key(tp)
            })
            .collect();
        let mut opening = futures::stream::iter(wanted)
            .map(|(tp, log_config, topic_id)| async move {
                let dir = partition_dir(&self.config.data_dir, &tp);
                let now = self.clock.now_ms();
                let result = Partition::open(
                    UringStorage,
                    tp.clone(),
                    dir.clone(),
                    log_config,
                    clean,
                    now,
                )
                .await;
                if result.is_ok() && partition_topic_id(&dir) != Some(topic_id) {
                    if let Err(err) = record_partition_topic_id(&dir, topic_id) {
                        tracing::warn!("{tp}: writing its topic id: {err}");
                    }
                }
                (tp, result)
            })
            .buffer_unordered(crate::limits::RECOVERY_PARTITIONS_IN_FLIGHT);
        while let Some((tp, result)) = opening.next().await {
            match result {
                Ok((partition, report)) => {
                    opened += 1;
                    if report.truncated_bytes > 0 {
                        truncated += 1;
                        tracing::warn!("recovered {tp}: {report:?}");
                    } else if report.rebuilt_indexes > 0 {
                        rebuilt += 1;
                        tracing::debug!("recovered {tp}: {report:?}");
                    }
                    let mut partition = partition;
                    self.take_role_in(&self.image(), &mut partition);
                    self.partitions
                        .borrow_mut()
                        .insert(tp, Rc::new(RefCell::new(partition)));
                }
                Err(err) => tracing::error!("cannot open {tp}: {err}; it stays offline"),
            }
        }
        if opened > 0 {
            tracing::info!(
                "shard {} opened {opened} partitions in {} ms ({rebuilt} with rebuilt indexes, {truncated} with a torn tail truncated)",
                self.id.0,
                started.elapsed().as_millis()
            );
        }
    }

    /// This shard's samples for the admin endpoint: connections, requests, flushes, cross-shard
    /// traffic, and per partition traffic and offsets; groups and transactions by state.
    fn collect_metrics(&self) -> Vec<Sample> {
        use crate::metrics::Kind::{Counter, Gauge};
        let shard = || vec![("shard", self.id.0.to_string())];
        let mut s = Samples::default();
        metrics::with(|m| {
            let scalars = [
                (
                    ("sluice_connections_open", "Client connections open.", Gauge),
                    m.connections_open.get() as f64,
                ),
                (
                    (
                        "sluice_connections_total",
                        "Client connections accepted.",
                        Counter,
                    ),
                    m.connections_total.get() as f64,
                ),
                (
                    (
                        "sluice_frames_refused_total",
                        "Connections closed for a malformed, oversized or unsupported request.",
                        Counter,
                    ),
                    m.frames_refused.get() as f64,
                ),
                (
                    (
                        "sluice_connections_refused_total",
                        "Connections closed at once for being over max.connections or max.connections.per.ip.",
                        Counter,
                    ),
                    m.connections_refused.get() as f64,
                ),
                (
                    (
                        "sluice_connections_timed_out_total",
                        "Connections closed for idling or for sending a request too slowly.",
                        Counter,
                    ),
                    m.connections_timed_out.get() as f64,
                ),
                (
                    (
                        "sluice_cleanings_total",
                        "Compactions of cleanup.policy=compact partitions that rewrote segments.",
                        Counter,
                    ),
                    m.cleanings.get() as f64,
                ),
                (
                    (
                        "sluice_cleaner_read_bytes_total",
                        "Segment bytes compactions rewrote.",
                        Counter,
                    ),
                    m.cleaned_bytes_read.get() as f64,
                ),
                (
                    (
                        "sluice_cleaner_written_bytes_total",
                        "Bytes those segments hold after compaction.",
                        Counter,
                    ),
                    m.cleaned_bytes_written.get() as f64,
                ),
                (
                    (
                        "sluice_fetch_sendfile_bytes_total",
                        "Fetched record bytes sent from the page cache with sendfile.",
                        Counter,
                    ),
                    m.fetch_sendfile_bytes.get() as f64,
                ),
                (
                    (
                        "sluice_fetch_copied_bytes_total",
                        "Fetched record bytes read into memory and written (not zero-copy).",
                        Counter,
                    ),
                    m.fetch_copied_bytes.get() as f64,
                ),
                (
                    (
                        "sluice_log_damaged_ranges_total",
                        "Damaged ranges found in segments (CRC failures, unreadable or cut-short tails); the log names each.",
                        Counter,
                    ),
                    m.log_damaged_ranges.get() as f64,
                ),
                (
                    (
                        "sluice_sealed_segment_files_open",
                        "Sealed-segment files the shard keeps open for reads (at most SEALED_SEGMENT_FILES_OPEN_MAX).",
                        Gauge,
                    ),
                    UringStorage.segment_files().open_count() as f64,
                ),
                (
                    (
                        "sluice_sealed_indexes_loaded_bytes",
                        "Bytes of sealed segments' index entries the shard holds in memory (at most SEALED_INDEXES_LOADED_MAX_BYTES).",
                        Gauge,
                    ),
                    UringStorage.index_cache().loaded_bytes() as f64,
                ),
            ];
            for (family, value) in scalars {
                s.push(family, shard(), value);
            }
            for (key, stats) in m.requests.borrow().iter() {
                let api = kafka_protocol::messages::ApiKey::try_from(*key)
                    .map(|k| format!("{k:?}"))
                    .unwrap_or_else(|_| key.to_string());
                let labels = || {
                    let mut l = shard();
                    l.push(("api", api.clone()));
                    l
                };
                let family = (
                    "sluice_requests_total",
                    "Requests served, by Kafka API.",
                    Counter,
                );
                s.push(family, labels(), stats.count as f64);
                let latency = (
                    "sluice_request_seconds",
                    "Time from a request's decode to its answer, by Kafka API.",
                );
                s.summary(latency, labels(), &stats.latency_us, 1e6);
            }
            let flush = (
                "sluice_flush_seconds",
                "Time of one group-commit round (writes and fdatasync).",
            );
            s.summary(flush, shard(), &m.flush_latency_us.borrow(), 1e6);
            let flush_bytes = (
                "sluice_flush_bytes",
                "Bytes written by one group-commit round.",
            );
            s.summary(flush_bytes, shard(), &m.flush_bytes.borrow(), 1.0);
        });
        let hops = (
            "sluice_cross_shard_messages_total",
            "Requests and answers this shard received from other shards.",
            Counter,
        );
        s.push(hops, shard(), self.router.messages_received() as f64);
        for (tp, p) in self.partitions.borrow().iter() {
            let p = p.borrow();
            let labels = || {
                let mut l = shard();
                l.push(("topic", tp.topic.clone()));
                l.push(("partition", tp.partition.0.to_string()));
                l
            };
            let o = p.offsets();
            let stats = p.stats;
            for (family, value) in [
                (
                    (
                        "sluice_partition_bytes_in_total",
                        "Record batch bytes appended.",
                        Counter,
                    ),
                    stats.bytes_in as f64,
                ),
                (
                    (
                        "sluice_partition_records_in_total",
                        "Records appended.",
                        Counter,
                    ),
                    stats.records_in as f64,
                ),
                (
                    (
                        "sluice_partition_batches_in_total",
                        "Record batches appended.",
                        Counter,
                    ),
                    stats.batches_in as f64,
                ),
                (
                    (
                        "sluice_partition_bytes_out_total",
                        "Record bytes returned by fetches.",
                        Counter,
                    ),
                    stats.bytes_out as f64,
                ),
                (
                    (
                        "sluice_partition_log_end_offset",
                        "Offset the next append gets.",
                        Gauge,
                    ),
                    o.log_end.0 as f64,
                ),
                (metrics::HIGH_WATERMARK, o.high_watermark.0 as f64),
                (
                    (
                        "sluice_partition_last_stable_offset",
                        "First offset of the oldest open transaction, or the high watermark.",
                        Gauge,
                    ),
                    o.last_stable.0 as f64,
                ),
                (
                    (
                        "sluice_partition_log_start_offset",
                        "First offset still stored.",
                        Gauge,
                    ),
                    o.log_start.0 as f64,
                ),
                (
                    (
                        "sluice_partition_size_bytes",
                        "Bytes in the partition's segments.",
                        Gauge,
                    ),
                    p.size_bytes() as f64,
                ),
                (
                    (
                        "sluice_partition_damaged_ranges",
                        "Damaged ranges found in the partition's segments since the start (the log names each).",
                        Gauge,
                    ),
                    p.damaged_ranges() as f64,
                ),
            ] {
                s.push(family, labels(), value);
            }
        }
        for (state, count) in self.groups.count_by_state() {
            let mut labels = shard();
            labels.push(("state", state.to_string()));
            let family = (
                "sluice_groups",
                "Consumer groups coordinated, by state.",
                Gauge,
            );
            s.push(family, labels, count as f64);
        }
        for (group, tp, offset) in self.groups.committed_offsets() {
            let labels = vec![
                ("group", group),
                ("topic", tp.topic),
                ("partition", tp.partition.0.to_string()),
            ];
            s.push(metrics::COMMITTED_OFFSET, labels, offset as f64);
        }
        let open = (
            "sluice_transactions_open",
            "Transactions open on the coordinator.",
            Gauge,
        );
        s.push(open, shard(), self.txns.open_count() as f64);
        s.0
    }

    /// Applies retention to every partition of this shard, every `log.retention.check.interval.ms`.
    pub async fn retention_loop(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.retention_check_interval_ms);
        loop {
            glommio::timer::sleep(interval).await;
            let now = self.clock.now_ms();
            let partitions: Vec<_> = self.partitions.borrow().values().cloned().collect();
            for p in partitions {
                partition::apply_retention(&p, now).await;
            }
        }
    }

    /// Runs the segment checks no read has run (see `storage::segment_check`), one segment at
    /// a time, at this shard's share of `sluice.log.scrub.bytes.per.sec`; a round right after
    /// the start, then every `SCRUB_ROUND_INTERVAL_MS`. What a check finds is logged and counted
    /// by the check itself.
    pub async fn scrub_loop(self: Rc<Self>) {
        let rate = self.config.scrub_bytes_per_sec / self.config.cores.max(1) as u64;
        if rate == 0 {
            return;
        }
        let interval = Duration::from_millis(crate::limits::SCRUB_ROUND_INTERVAL_MS);
        loop {
            let partitions: Vec<_> = self.partitions.borrow().values().cloned().collect();
            for p in partitions {
                let (tp, pending) = {
                    let p = p.borrow();
                    (p.tp.clone(), p.unchecked_segments())
                };
                for scrub in pending {
                    let mut pace = |bytes: usize| {
                        let wait = Duration::from_secs_f64(bytes as f64 / rate as f64);
                        glommio::timer::sleep(wait).map(|_| ()).boxed_local()
                    };
                    match scrub.run(&mut pace).await {
                        Ok(()) => {}
                        // Deleted or compacted meanwhile: nothing left to check.
                        Err(err) if is_segment_gone(&err) => {}
                        Err(err) => tracing::warn!("{tp}: scrub could not read a segment: {err}"),
                    }
                }
            }
            glommio::timer::sleep(interval).await;
        }
    }

    /// Cleans this shard's compacted partitions (not the coordinators' internal topics, which
    /// their coordinators rewrite), one at a time; sleeps `log.cleaner.backoff.ms` after a round
    /// that cleaned nothing.
    pub async fn cleaner_loop(self: Rc<Self>) {
        if !self.config.cleaner_enable {
            return;
        }
        let backoff = Duration::from_millis(self.config.cleaner_backoff_ms);
        let budget = (self.config.cleaner_dedupe_buffer_bytes / self.config.cores)
            .max(crate::limits::CLEANER_DEDUPE_BUFFER_MIN_BYTES);
        loop {
            let partitions: Vec<_> = self
                .partitions
                .borrow()
                .iter()
                .filter(|(tp, p)| {
                    !crate::metadata::is_internal_topic(&tp.topic)
                        && p.borrow().log_config().cleanup_compact
                })
                .map(|(_, p)| p.clone())
                .collect();
            let mut cleaned_any = false;
            for p in partitions {
                let tp = p.borrow().tp.clone();
                match partition::clean(&p, self.clock.now_ms(), budget).await {
                    Ok(Some(report)) => {
                        cleaned_any = true;
                        metrics::with(|m| m.cleaned(report.bytes_before, report.bytes_after));
                        tracing::info!(
                            "{tp}: compacted {} bytes into {}",
                            report.bytes_before,
                            report.bytes_after
                        );
                    }
                    Ok(None) => {}
                    Err(err) => tracing::error!("{tp}: compaction failed: {err}"),
                }
            }
            if !cleaned_any {
                glommio::timer::sleep(backoff).await;
            }
        }
    }

    /// Clean stop: refuse new appends, flush and close every partition. True if all closed cleanly.
    pub async fn close_all(&self) -> bool {
        use futures::stream::StreamExt;
        self.stopping.set(true);
        let partitions: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let mut closing = futures::stream::iter(partitions)
            .map(|p| async move {
                let result = partition::close(&p, &UringStorage).await;
                (p, result)
            })
            .buffer_unordered(crate::limits::CLOSE_PARTITIONS_IN_FLIGHT);
        let mut clean = true;
        while let Some((p, result)) = closing.next().await {
            if let Err(err) = result {
                tracing::error!("closing {}: {err}", p.borrow().tp);
                clean = false;
            }
        }
        // One sync for what every partition just wrote (see `partition::close`).
        if let Err(err) = UringStorage.sync_filesystem(&self.config.data_dir) {
            tracing::error!("syncing the data directory's file system: {err}");
            clean = false;
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::{MetadataRecord, PartitionState};
    use crate::types::PartitionId;

    #[test]
    fn only_the_other_assigned_replicas_fetch_as_followers() {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        let topic_id = Uuid::new_v4();
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id: topic_id,
            })
            .unwrap();
        let replicas = [1, 2, 3].map(BrokerId).to_vec();
        image
            .apply(&MetadataRecord::Partition {
                topic_id,
                partition: PartitionId(0),
                state: PartitionState::online(replicas),
            })
            .unwrap();
        let me = BrokerId(1);
        let check = |topic: &str, partition: i32, replica: i32, epoch: i32| {
            let tp = TopicPartition::new(topic, partition);
            check_follower(&image, me, &tp, BrokerId(replica), epoch)
        };
        assert_eq!(check("t", 0, 2, -1), Ok(()));
        assert_eq!(check("t", 0, 3, 0), Ok(()));
        let (no_epoch, epoch) = (
            Err(ErrorCode::NotLeaderOrFollower),
            Err(ErrorCode::UnknownLeaderEpoch),
        );
        assert_eq!(check("t", 0, 4, -1), no_epoch, "not assigned");
        assert_eq!(check("t", 0, 4, 0), epoch, "perhaps in a newer assignment");
        assert_eq!(check("t", 0, 1, -1), no_epoch, "the leader itself");
        assert_eq!(check("t", 1, 2, -1), no_epoch, "no such partition");
        assert_eq!(check("u", 0, 2, 0), epoch, "no such topic");
    }
}
