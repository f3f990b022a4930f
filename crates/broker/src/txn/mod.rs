//! Transactions: the transaction coordinator.
//!
//! Each transactional id is coordinated by one shard: the owner of its `__transaction_state`
//! partition (the same hash Kafka uses), on the broker leading that partition, where its
//! `TxnMetadata` lives. Every state change is appended to that partition and counts once
//! committed (the high watermark passed it: acks=all), so a new leader holds every decision.
//!
//! A shard serves a partition only while this broker leads it (`coordination`). Elected (at
//! start, or at a failover), it replays the partition, finishes the transactions that were
//! prepared (their markers are written again, which is harmless) and lets the timeout abort the
//! ones left open. Resigned, it drops the partition's transactions; operations, marker retries
//! and timeouts started under the old term stop and answer NOT_COORDINATOR.
//!
//! A partition's leader lets a producer start a transaction there only once this coordinator has
//! confirmed the transaction includes the partition (`verify`, KIP-890). Ending a transaction
//! writes a COMMIT or ABORT marker to every partition in it, through each partition's leader,
//! this broker's shards or another broker (`markers`); offsets partitions settle the
//! transactional offsets TxnOffsetCommit wrote. EndTxn is answered once every marker is committed (below its
//! partition's high watermark), so a committed transaction is visible to read_committed
//! consumers when the producer learns it committed. Fencing (a new InitProducerId, or the timeout) bumps the epoch before aborting, so
//! the old producer's later writes and its late EndTxn are refused.

mod markers;
pub mod state;
pub mod verify;

pub use markers::WRITE_TXN_MARKERS_VERSION;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::{Semaphore, StaticPermit};

use crate::coordination::{self, Served, Term};
use crate::error::ErrorCode;
use crate::group::records::partition_for_group;
use crate::internal_log;
use crate::limits;
use crate::partition::{self, PartitionRef};
use crate::shard::{Marker, Shard};
use crate::storage::batch::{self, ControlType};
use crate::storage::fs::UringStorage;
use crate::storage::Clock;
use crate::types::{ProducerEpoch, ProducerId, ShardId, TopicPartition};
use state::{InitDecision, TxnMetadata, TxnState, TXN_TOPIC};

/// A transaction operation, addressed to the transactional id's coordinator shard.
#[derive(Debug)]
pub enum TxnOp {
    InitProducerId {
        txn_id: String,
        timeout_ms: i32,
        /// KIP-360: the producer id and epoch the client already has, if any.
        presented: Option<(ProducerId, ProducerEpoch)>,
    },
    AddPartitions {
        txn_id: String,
        producer: ProducerId,
        epoch: ProducerEpoch,
        partitions: Vec<TopicPartition>,
    },
    EndTxn {
        txn_id: String,
        producer: ProducerId,
        epoch: ProducerEpoch,
        commit: bool,
    },
    /// A partition leader asks whether the open transaction includes these partitions (KIP-890).
    Verify {
        txn_id: String,
        producer: ProducerId,
        epoch: ProducerEpoch,
        partitions: Vec<TopicPartition>,
    },
}

impl TxnOp {
    pub fn txn_id(&self) -> &str {
        match self {
            TxnOp::InitProducerId { txn_id, .. }
            | TxnOp::AddPartitions { txn_id, .. }
            | TxnOp::EndTxn { txn_id, .. }
            | TxnOp::Verify { txn_id, .. } => txn_id,
        }
    }
}

#[derive(Debug)]
pub enum TxnAnswer {
    Producer(Result<(ProducerId, ProducerEpoch), ErrorCode>),
    Code(ErrorCode),
    /// Verify: a code per partition, in the order asked.
    Verified(Vec<ErrorCode>),
}

/// Which shard coordinates `txn_id`, and its `__transaction_state` partition;
/// COORDINATOR_NOT_AVAILABLE until that topic exists.
pub fn coordinator_of(shard: &Shard, txn_id: &str) -> Result<(ShardId, i32), ErrorCode> {
    let image = shard.image();
    let topic = image
        .topic(TXN_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partition = partition_for_group(txn_id, topic.partitions);
    Ok((
        shard.owner_of(&TopicPartition::new(TXN_TOPIC, partition)),
        partition,
    ))
}

/// The transactional ids this shard coordinates.
pub struct TxnCoordinator {
    max_timeout_ms: i32,
    txns: RefCell<HashMap<String, TxnMetadata>>,
    /// The `__transaction_state` partitions this shard leads, and whether they are replayed yet.
    served: Served,
    /// One pass over a new image at a time: two replays of one partition must not interleave.
    following: Semaphore,
    /// One operation at a time per transactional id: clients pipeline AddPartitionsToTxn and
    /// AddOffsetsToTxn, and each reads, changes and persists the whole state.
    locks: RefCell<HashMap<String, Rc<Semaphore>>>,
}

impl TxnCoordinator {
    pub fn new(config: &crate::config::Config) -> TxnCoordinator {
        TxnCoordinator {
            max_timeout_ms: config.transaction_max_timeout_ms,
            txns: RefCell::new(HashMap::new()),
            served: Served::default(),
            following: Semaphore::new(1),
            locks: RefCell::new(HashMap::new()),
        }
    }

    /// Transactions open on this shard's coordinator.
    pub fn open_count(&self) -> usize {
        self.txns
            .borrow()
            .values()
            .filter(|m| m.state == TxnState::Ongoing)
            .count()
    }

    /// Waits for the transactional id's other operations to finish.
    async fn lock(&self, txn_id: &str) -> StaticPermit {
        let semaphore = self
            .locks
            .borrow_mut()
            .entry(txn_id.to_string())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone();
        semaphore
            .acquire_static_permit(1)
            .await
            .expect("never closed")
    }

    /// Follows the leadership of the `__transaction_state` partitions this shard owns, after
    /// each image: drops the transactions of partitions this broker no longer leads, replays
    /// those it leads in a new term, and finishes the transactions they left prepared (Kafka's
    /// loadTransactionsForTxnTopicPartition / removeTransactionsForTxnTopicPartition).
    ///
    /// Not before the image has caught up with this run of the broker: a restarted broker
    /// replays the quorum's log from its start, through images in which it led partitions
    /// long since led elsewhere, and a coordinator taking such a stale term would finish
    /// transactions its stale log left prepared, writing markers into other coordinators'
    /// transactions.
    pub async fn follow_leadership(&self, shard: &Rc<Shard>) {
        if !shard.knows_this_run() {
            return;
        }
        let _one_pass = self.following.acquire_permit(1).await;
        let Some(count) = shard.image().topic(TXN_TOPIC).map(|t| t.partitions) else {
            return;
        };
        let changes = self
            .served
            .follow(&coordination::led_partitions(shard, TXN_TOPIC));
        for p in changes.resigned {
            let dropped = self.drop_partition(p, count);
            tracing::info!(
                "{TXN_TOPIC}-{p}: no longer led here; dropped {dropped} transactional ids"
            );
        }
        for (p, epoch) in changes.elected {
            // Whatever a former term left in memory may be stale: the log is the truth.
            self.drop_partition(p, count);
            let Ok(partition) = shard.partition(&TopicPartition::new(TXN_TOPIC, p)) else {
                continue;
            };
            let term = Term {
                index: p,
                epoch,
                partition,
            };
            let loaded = match self.replay(&term.partition).await {
                Ok(n) => {
                    let start = term.partition.borrow().offsets().log_start;
                    let current = self.served.loaded(p, epoch, start);
                    if current {
                        tracing::info!(
                            "{TXN_TOPIC}-{p}: coordinating at leader epoch {} ({n} records loaded)",
                            epoch.0
                        );
                    }
                    current
                }
                Err(err) => {
                    tracing::error!("{TXN_TOPIC}-{p}: loading transactions failed: {err}");
                    false
                }
            };
            if loaded {
                self.finish_prepared(shard, &term, count);
            } else {
                self.drop_partition(p, count);
            }
        }
    }

    /// Forgets the transactional ids of partition `p` (of `count`); returns how many.
    fn drop_partition(&self, p: i32, count: i32) -> usize {
        let mut txns = self.txns.borrow_mut();
        let before = txns.len();
        txns.retain(|id, _| partition_for_group(id, count) != p);
        before - txns.len()
    }

    /// Completes, under `term`, every transaction of its partition that a former coordinator
    /// decided but did not finish.
    fn finish_prepared(&self, shard: &Rc<Shard>, term: &Term, count: i32) {
        let prepared: Vec<(String, ControlType)> = self
            .txns
            .borrow()
            .iter()
            .filter(|(id, _)| partition_for_group(id, count) == term.index)
            .filter_map(|(id, m)| match m.state {
                TxnState::PrepareCommit => Some((id.clone(), ControlType::Commit)),
                TxnState::PrepareAbort => Some((id.clone(), ControlType::Abort)),
                _ => None,
            })
            .collect();
        for (id, control) in prepared {
            tracing::info!(
                "transaction {id}: finishing its prepared {control:?} as new coordinator"
            );
            let shard = shard.clone();
            let term = term.clone();
            glommio::spawn_local(async move {
                let _one_at_a_time = shard.txns.lock(&id).await;
                let still_prepared = shard
                    .txns
                    .txns
                    .borrow()
                    .get(&id)
                    .is_some_and(|m| m.state.is_preparing());
                if still_prepared {
                    if let Err(code) = shard.txns.complete(&shard, &term, &id, control).await {
                        tracing::warn!("transaction {id}: not finished here: {code}");
                    }
                }
            })
            .detach();
        }
    }

    async fn replay(&self, partition: &PartitionRef<UringStorage>) -> std::io::Result<usize> {
        let mut count = 0;
        internal_log::replay(partition, |bytes| {
            batch::for_each_batch(bytes, |decoded| {
                for (_, key, value) in decoded.records {
                    match state::decode(&key, value.as_deref()) {
                        Ok((id, Some(m))) => {
                            self.txns.borrow_mut().insert(id, m);
                        }
                        Ok((id, None)) => {
                            self.txns.borrow_mut().remove(&id);
                        }
                        Err(err) => {
                            tracing::error!("{TXN_TOPIC}: skipping a damaged record: {err}")
                        }
                    }
                    count += 1;
                }
            })
        })
        .await?;
        Ok(count)
    }

    pub async fn handle(&self, shard: &Rc<Shard>, op: TxnOp) -> TxnAnswer {
        if let TxnOp::Verify {
            txn_id,
            producer,
            epoch,
            partitions,
        } = &op
        {
            // A read of the state, not a change: it waits for no other operation.
            let codes = match self.partition_of(shard, txn_id) {
                Ok(_) => self.verify(txn_id, *producer, *epoch, partitions),
                Err(code) => vec![code; partitions.len()],
            };
            return TxnAnswer::Verified(codes);
        }
        let _one_at_a_time = self.lock(op.txn_id()).await;
        let term = match self.partition_of(shard, op.txn_id()) {
            Ok(term) => term,
            Err(code) => {
                return match op {
                    TxnOp::InitProducerId { .. } => TxnAnswer::Producer(Err(code)),
                    _ => TxnAnswer::Code(code),
                }
            }
        };
        match op {
            TxnOp::Verify { .. } => unreachable!("answered above"),
            TxnOp::InitProducerId {
                txn_id,
                timeout_ms,
                presented,
            } => TxnAnswer::Producer(
                self.init(shard, &term, &txn_id, timeout_ms, presented)
                    .await,
            ),
            TxnOp::AddPartitions {
                txn_id,
                producer,
                epoch,
                partitions,
            } => TxnAnswer::Code(
                self.add_partitions(shard, &term, &txn_id, producer, epoch, partitions)
                    .await,
            ),
            TxnOp::EndTxn {
                txn_id,
                producer,
                epoch,
                commit,
            } => TxnAnswer::Code(
                self.end(shard, &term, &txn_id, producer, epoch, commit)
                    .await,
            ),
        }
    }

    /// Whether the open transaction of `txn_id`, of `producer` at `epoch`, includes each
    /// partition (Kafka's codes: an unknown producer, a fenced epoch, or INVALID_TXN_STATE).
    fn verify(
        &self,
        txn_id: &str,
        producer: ProducerId,
        epoch: ProducerEpoch,
        partitions: &[TopicPartition],
    ) -> Vec<ErrorCode> {
        let txns = self.txns.borrow();
        let m = txns.get(txn_id);
        let refused = match m {
            None => Some(ErrorCode::InvalidProducerIdMapping),
            Some(m) if m.producer_id != producer => Some(ErrorCode::InvalidProducerIdMapping),
            Some(m) if m.epoch != epoch => Some(ErrorCode::ProducerFenced),
            Some(m) if m.state != TxnState::Ongoing => Some(ErrorCode::InvalidTxnState),
            Some(_) => None,
        };
        partitions
            .iter()
            .map(|tp| match (refused, m) {
                (Some(code), _) => code,
                (None, Some(m)) if m.partitions.contains(tp) => ErrorCode::None,
                (None, _) => ErrorCode::InvalidTxnState,
            })
            .collect()
    }

    /// The term under which this shard coordinates `txn_id`'s partition: it owns the partition,
    /// this broker leads it, and it is loaded.
    fn partition_of(&self, shard: &Rc<Shard>, txn_id: &str) -> Result<Term, ErrorCode> {
        let (owner, p) = coordinator_of(shard, txn_id)?;
        if owner != shard.id {
            return Err(ErrorCode::NotCoordinator);
        }
        coordination::current_term(&self.served, shard, TXN_TOPIC, p)
    }

    /// Makes `m` the transaction's state, committed (acks=all), before anything acts on it.
    async fn persist(
        shard: &Shard,
        partition: &PartitionRef<UringStorage>,
        txn_id: &str,
        m: &TxnMetadata,
    ) -> Result<(), ErrorCode> {
        let (key, value) = (state::encode_key(txn_id), state::encode_value(m));
        let bytes = batch::build_batch(&[(Some(&key), Some(&value))], shard.clock.now_ms());
        // Refused up front, as an acks=all produce is: the high watermark would not move.
        partition.borrow().check_min_insync()?;
        let outcome = partition
            .borrow_mut()
            .append_broker_batch(bytes, shard.clock.now_ms())?;
        partition::schedule_flush(partition);
        partition::wait_high_watermark(partition, outcome.end).await
    }

    /// Records `m` in memory after persisting it, if `term` is still current before and after:
    /// a coordinator that resigned meanwhile neither writes nor remembers.
    async fn save(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
        m: TxnMetadata,
    ) -> Result<(), ErrorCode> {
        if !self.served.is_current(term) {
            return Err(ErrorCode::NotCoordinator);
        }
        Self::persist(shard, &term.partition, txn_id, &m)
            .await
            .map_err(coordination::write_error)?;
        if !self.served.is_current(term) {
            return Err(ErrorCode::NotCoordinator);
        }
        self.txns.borrow_mut().insert(txn_id.to_string(), m);
        Ok(())
    }

    async fn init(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
        timeout_ms: i32,
        presented: Option<(ProducerId, ProducerEpoch)>,
    ) -> Result<(ProducerId, ProducerEpoch), ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let now = shard.clock.now_ms();
        let current = self.txns.borrow().get(txn_id).cloned();
        let Some(mut m) = current else {
            let id = shard.allocate_producer_id().await?;
            let m = TxnMetadata::new(id, timeout_ms, now);
            self.save(shard, term, txn_id, m.clone()).await?;
            return Ok((m.producer_id, m.epoch));
        };
        match m.decide_init(presented)? {
            InitDecision::Retry => return Err(ErrorCode::ConcurrentTransactions),
            InitDecision::FenceAndAbort => {
                self.fence_and_abort(shard, term, txn_id).await?;
                m = self
                    .txns
                    .borrow()
                    .get(txn_id)
                    .cloned()
                    .ok_or(ErrorCode::CoordinatorNotAvailable)?;
            }
            InitDecision::BumpEpoch => {}
        }
        match m.next_epoch() {
            Some(epoch) => m.epoch = epoch,
            None => {
                m.producer_id = shard.allocate_producer_id().await?;
                m.epoch = ProducerEpoch(0);
            }
        }
        m.timeout_ms = timeout_ms;
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.last_update_ms = now;
        self.save(shard, term, txn_id, m.clone()).await?;
        Ok((m.producer_id, m.epoch))
    }

    /// Aborts the open transaction under a bumped epoch: the old producer's later writes and
    /// markers are refused.
    async fn fence_and_abort(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
    ) -> Result<(), ErrorCode> {
        let Some(mut m) = self.txns.borrow().get(txn_id).cloned() else {
            return Ok(());
        };
        if m.state != TxnState::Ongoing {
            return Ok(());
        }
        if let Some(epoch) = m.next_epoch() {
            m.epoch = epoch;
        }
        m.state = TxnState::PrepareAbort;
        m.last_update_ms = shard.clock.now_ms();
        self.save(shard, term, txn_id, m).await?;
        self.complete(shard, term, txn_id, ControlType::Abort).await
    }

    async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
        producer: ProducerId,
        epoch: ProducerEpoch,
        partitions: Vec<TopicPartition>,
    ) -> ErrorCode {
        let Some(mut m) = self.txns.borrow().get(txn_id).cloned() else {
            return ErrorCode::InvalidProducerIdMapping;
        };
        if let Err(code) = m.check_add(producer, epoch) {
            return code;
        }
        let now = shard.clock.now_ms();
        let new: Vec<&TopicPartition> = partitions
            .iter()
            .filter(|tp| !m.partitions.contains(*tp))
            .collect();
        if !new.is_empty() || m.state != TxnState::Ongoing {
            if m.state != TxnState::Ongoing {
                m.state = TxnState::Ongoing;
                m.start_ms = now;
                m.partitions.clear();
            }
            m.partitions.extend(partitions);
            m.last_update_ms = now;
            if let Err(code) = self.save(shard, term, txn_id, m).await {
                return code;
            }
        }
        // Each partition's leader asks (`verify`) before the first batch starts the transaction.
        ErrorCode::None
    }

    async fn end(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
        producer: ProducerId,
        epoch: ProducerEpoch,
        commit: bool,
    ) -> ErrorCode {
        let Some(mut m) = self.txns.borrow().get(txn_id).cloned() else {
            return ErrorCode::InvalidProducerIdMapping;
        };
        match m.check_end(producer, epoch, commit) {
            Err(code) => return code,
            Ok(false) => return ErrorCode::None,
            Ok(true) => {}
        }
        let (state, control) = if commit {
            (TxnState::PrepareCommit, ControlType::Commit)
        } else {
            (TxnState::PrepareAbort, ControlType::Abort)
        };
        m.state = state;
        m.last_update_ms = shard.clock.now_ms();
        if let Err(code) = self.save(shard, term, txn_id, m).await {
            return code;
        }
        match self.complete(shard, term, txn_id, control).await {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        }
    }

    /// Writes the markers of a prepared transaction to all its partitions (retrying until they
    /// are committed, while `term` lasts), then records it complete.
    async fn complete(
        &self,
        shard: &Rc<Shard>,
        term: &Term,
        txn_id: &str,
        control: ControlType,
    ) -> Result<(), ErrorCode> {
        let Some(m) = self.txns.borrow().get(txn_id).cloned() else {
            return Ok(());
        };
        let marker = Marker {
            producer: m.producer_id,
            epoch: m.epoch,
            control,
            // Kafka's coordinator epoch is its partition's leader epoch.
            coordinator_epoch: term.epoch.0,
        };
        let mut remaining: BTreeSet<TopicPartition> = m.partitions.clone();
        let mut wait_ms = limits::TXN_MARKER_RETRY_MS;
        loop {
            remaining = markers::write_markers(shard, marker, remaining).await;
            if remaining.is_empty() {
                break;
            }
            if shard.is_stopping() {
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
            if !self.served.is_current(term) {
                // The new coordinator loads the prepared state and writes the markers itself.
                return Err(ErrorCode::NotCoordinator);
            }
            tracing::warn!(
                "transaction {txn_id}: {} markers not written yet; retrying in {wait_ms} ms",
                remaining.len()
            );
            glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
            wait_ms = (wait_ms * 2).min(limits::TXN_MARKER_RETRY_MAX_MS);
        }
        let mut done = m;
        done.state = match control {
            ControlType::Commit => TxnState::CompleteCommit,
            ControlType::Abort => TxnState::CompleteAbort,
        };
        done.partitions.clear();
        done.last_update_ms = shard.clock.now_ms();
        self.save(shard, term, txn_id, done).await
    }

    /// Every `TXN_TICK_MS`: aborts transactions open longer than their timeout (fencing the
    /// producer, as Kafka does); every `INTERNAL_COMPACT_CHECK_MS`, compacts.
    pub async fn timer_loop(shard: Rc<Shard>) {
        let mut next_compaction = shard.clock.now_ms() + limits::INTERNAL_COMPACT_CHECK_MS;
        loop {
            glommio::timer::sleep(Duration::from_millis(limits::TXN_TICK_MS)).await;
            if shard.is_stopping() {
                return;
            }
            let now = shard.clock.now_ms();
            if now >= next_compaction {
                next_compaction = now + limits::INTERNAL_COMPACT_CHECK_MS;
                shard.txns.compact(&shard).await;
            }
            let expired: Vec<String> = shard
                .txns
                .txns
                .borrow()
                .iter()
                .filter(|(_, m)| m.has_expired(now))
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let _one_at_a_time = shard.txns.lock(&id).await;
                let still_expired = shard
                    .txns
                    .txns
                    .borrow()
                    .get(&id)
                    .is_some_and(|m| m.has_expired(now));
                if !still_expired {
                    continue;
                }
                // Only for a partition led here: the new coordinator times out its own.
                let Ok(term) = shard.txns.partition_of(&shard, &id) else {
                    continue;
                };
                tracing::info!("transaction {id} timed out: aborting it");
                if let Err(code) = shard.txns.fence_and_abort(&shard, &term, &id).await {
                    tracing::error!("aborting timed-out transaction {id}: {code}");
                }
            }
        }
    }
}

impl TxnCoordinator {
    /// Compacts `__transaction_state` partitions grown well past their live state, as the group
    /// coordinator does for offsets: the live state is re-appended and the log start moved to
    /// where it begins. Only while no operation is in progress (each appends before it updates
    /// memory), so nothing below the cut is missing from the rewrite.
    async fn compact(&self, shard: &Rc<Shard>) {
        let Some(topic) = shard.image().topic(TXN_TOPIC).cloned() else {
            return;
        };
        for (p, epoch, rewritten_at) in self.served.loaded_partitions() {
            // An earlier partition's rewrite may have outlasted this one's term.
            let Ok(term) = coordination::current_term(&self.served, shard, TXN_TOPIC, p) else {
                continue;
            };
            if term.epoch != epoch {
                continue;
            }
            let partition = term.partition;
            let busy = self.locks.borrow().values().any(|l| l.available() == 0);
            let live: Vec<(Bytes, Option<Bytes>)> = self
                .txns
                .borrow()
                .iter()
                .filter(|(id, _)| partition_for_group(id, topic.partitions) == p)
                .map(|(id, m)| (state::encode_key(id), Some(state::encode_value(m))))
                .collect();
            if busy || !internal_log::due(&partition, rewritten_at, live.len()) {
                continue;
            }
            match internal_log::rewrite(&partition, &live, shard.clock.now_ms()).await {
                Ok(cut) => {
                    tracing::info!(
                        "{TXN_TOPIC}-{p}: compacted to {} live records; log start {cut}",
                        live.len()
                    );
                    self.served.compacted(p, epoch, cut);
                }
                Err(code) => tracing::error!("{TXN_TOPIC}-{p}: compaction failed: {code}"),
            }
        }
    }
}
