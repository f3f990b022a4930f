//! Fetch (key 1): reads from the owning shards, long-polls (woken by appends) until `min_bytes`
//! or `max_wait_ms`, and sizes the answer as Kafka does (KIP-74, `protocol::fetch_sizing`): at
//! most `max_bytes` in all and `partition_max_bytes` per partition, filled in request order, with
//! the first batch of the first partition that returns records sent whole even when it is larger.
//! No fetch sessions: the answer's session id is 0, which tells clients to keep sending full
//! fetches.
//!
//! Each owning shard reads its partitions in parallel with the others, sized as if they were the
//! whole answer; the handler then settles each partition in request order with the bytes really
//! left, keeping a prefix of what was read (a file range or bytes) and reading again the rare
//! partition whose read came out shorter than its exact share. Per-partition traffic counters are
//! told what was returned once the answer is final.
//!
//! Records are located in the segment on the owning shard and framed by hand
//! (`protocol::fetch_frame`): large record sets travel back as file ranges the connection's writer
//! sends from the page cache with sendfile (`storage::payload`), small ones as bytes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{join_all, select_all, FutureExt};
use kafka_protocol::messages::FetchRequest;

use super::coordinator::Client;
use super::leader_hints::LeaderHints;
use crate::error::ErrorCode;
use crate::limits;
use crate::metrics;
use crate::protocol::fetch_frame::{PartitionAnswer, TopicAnswer};
use crate::protocol::fetch_sizing::{self, Budget, Settled};
use crate::shard::{FetchItem, FetchResult, Shard, ShardRequest, ShardResponse};
use crate::storage::payload::Payload;
use crate::types::{Offset, ShardId, TopicPartition};

pub const VERSIONS: (i16, i16) = (4, 12);

/// The first version whose partitions tell a refused client where the leader is (`CurrentLeader`).
const LEADER_HINT_VERSION: i16 = 12;

/// One requested partition, in request order.
struct Wanted {
    topic_index: usize,
    partition: i32,
    item: Option<FetchItem>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: FetchRequest,
    version: i16,
    client: &Client,
) -> Vec<TopicAnswer> {
    let wanted = resolve(shard, &request);
    let max_wait =
        Duration::from_millis((request.max_wait_ms.max(0) as u64).min(limits::FETCH_MAX_WAIT_MS));
    let deadline = Instant::now() + max_wait;
    let budget = Budget::new(request.max_bytes);
    let min_bytes = fetch_sizing::min_bytes(request.min_bytes, &budget);
    loop {
        let read = read_all(shard, &wanted, budget).await;
        let results = settle(shard, &wanted, read, budget).await;
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let errored = results.iter().any(|r| r.error != ErrorCode::None);
        let now = Instant::now();
        if bytes >= min_bytes
            || errored
            || now >= deadline
            || wanted.iter().all(|w| w.item.is_none())
        {
            served(shard, &wanted, &results);
            let hints = LeaderHints::new(shard, client, version >= LEADER_HINT_VERSION);
            return build_response(&request, wanted, results, hints);
        }
        wait_for_data(shard, &wanted, &results, deadline - now).await;
    }
}

/// Kafka's isolation levels: 0 read_uncommitted, 1 read_committed.
const READ_COMMITTED: i8 = 1;

fn resolve(shard: &Shard, request: &FetchRequest) -> Vec<Wanted> {
    let image = shard.image();
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut wanted = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let name = topic.topic.0.as_str();
        let meta = image.topic(name);
        for p in &topic.partitions {
            let known = meta.is_some_and(|m| p.partition >= 0 && p.partition < m.partitions);
            let item = known.then(|| FetchItem {
                tp: TopicPartition::new(name, p.partition),
                offset: Offset(p.fetch_offset),
                partition_max_bytes: fetch_sizing::partition_max_bytes(p.partition_max_bytes),
                read_committed,
                current_leader_epoch: p.current_leader_epoch,
            });
            wanted.push(Wanted {
                topic_index,
                partition: p.partition,
                item,
            });
        }
    }
    wanted
}

/// Reads every known partition (one call per owning shard, all at once, each shard sizing its
/// partitions from the whole `budget`), in request order.
async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted], budget: Budget) -> Vec<FetchResult> {
    let mut routed: HashMap<ShardId, Vec<(usize, FetchItem)>> = HashMap::new();
    for (i, w) in wanted.iter().enumerate() {
        if let Some(item) = &w.item {
            routed
                .entry(shard.owner_of(&item.tp))
                .or_default()
                .push((i, item.clone()));
        }
    }
    let calls = routed.into_iter().map(|(owner, items)| async move {
        let slots: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
        let items = items.into_iter().map(|(_, item)| item).collect();
        let response = shard
            .call(owner, ShardRequest::Fetch { items, budget })
            .await;
        (slots, response)
    });
    let mut results = vec![failed(ErrorCode::UnknownTopicOrPartition); wanted.len()];
    for (slots, response) in join_all(calls).await {
        match response {
            ShardResponse::Fetch(fetched) => {
                for (slot, result) in slots.into_iter().zip(fetched) {
                    results[slot] = result;
                }
            }
            _ => {
                for slot in slots {
                    results[slot].error = ErrorCode::NotLeaderOrFollower;
                }
            }
        }
    }
    results
}

fn failed(error: ErrorCode) -> FetchResult {
    FetchResult {
        error,
        offsets: None,
        records: Payload::default(),
        span: None,
        aborted: Vec::new(),
    }
}

/// The exact answer, partition by partition in request order: each keeps what its limit allows
/// of what its shard read (`fetch_sizing::settle`), and one whose read was too short is read
/// again under its exact limit.
async fn settle(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    read: Vec<FetchResult>,
    mut budget: Budget,
) -> Vec<FetchResult> {
    let mut settled = Vec::with_capacity(read.len());
    for (w, mut result) in wanted.iter().zip(read) {
        if let (Some(item), Some(span)) = (&w.item, result.span) {
            let limit = budget.limit(item.partition_max_bytes);
            match fetch_sizing::settle(limit, &span, result.records.len()) {
                Settled::Keep(len) => result.records.truncate(len),
                Settled::ReadAgain => result = read_again(shard, item, budget).await,
            }
        }
        budget.take(result.records.len());
        settled.push(result);
    }
    settled
}

/// One partition read under the exact budget left at its place in the answer.
async fn read_again(shard: &Rc<Shard>, item: &FetchItem, budget: Budget) -> FetchResult {
    let request = ShardRequest::Fetch {
        items: vec![item.clone()],
        budget,
    };
    match shard.call(shard.owner_of(&item.tp), request).await {
        ShardResponse::Fetch(mut fetched) if fetched.len() == 1 => {
            let result = fetched.remove(0);
            let limit = budget.limit(item.partition_max_bytes);
            debug_assert!(result.span.is_none_or(|span| {
                let len = result.records.len();
                fetch_sizing::settle(limit, &span, len) == Settled::Keep(len)
            }));
            result
        }
        _ => failed(ErrorCode::NotLeaderOrFollower),
    }
}

/// Counts what the answer returns: record bytes per partition on the owning shards (sent on
/// without waiting), and bytes read into memory on this shard (file ranges are counted as the
/// writer sends them).
fn served(shard: &Rc<Shard>, wanted: &[Wanted], results: &[FetchResult]) {
    let mut routed: HashMap<ShardId, Vec<(TopicPartition, usize)>> = HashMap::new();
    for (w, r) in wanted.iter().zip(results) {
        let (Some(item), false) = (&w.item, r.records.is_empty()) else {
            continue;
        };
        if let Payload::Bytes(bytes) = &r.records {
            metrics::with(|m| m.fetch_sent(0, bytes.len()));
        }
        routed
            .entry(shard.owner_of(&item.tp))
            .or_default()
            .push((item.tp.clone(), r.records.len()));
    }
    for (owner, items) in routed {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            shard.call(owner, ShardRequest::FetchServed { items }).await;
        })
        .detach();
    }
}

/// Parks until any polled partition gets data past its fetch position, or `timeout`.
async fn wait_for_data(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    results: &[FetchResult],
    timeout: Duration,
) {
    let mut routed: HashMap<ShardId, Vec<(TopicPartition, Offset)>> = HashMap::new();
    for (w, r) in wanted.iter().zip(results) {
        if let Some(item) = &w.item {
            // Wait for data past what this round already returned.
            let seen = r
                .offsets
                .map(|o| o.high_watermark)
                .unwrap_or(item.offset)
                .max(item.offset);
            routed
                .entry(shard.owner_of(&item.tp))
                .or_default()
                .push((item.tp.clone(), seen));
        }
    }
    if routed.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    let waits = routed.into_iter().map(|(owner, items)| {
        shard
            .call(
                owner,
                ShardRequest::WaitForData {
                    items,
                    max_wait: timeout,
                },
            )
            .boxed_local()
    });
    select_all(waits).await;
}

/// Assembles the answer in request order (the records are already sized).
fn build_response(
    request: &FetchRequest,
    wanted: Vec<Wanted>,
    results: Vec<FetchResult>,
    mut hints: LeaderHints,
) -> Vec<TopicAnswer> {
    let mut topics: Vec<TopicAnswer> = request
        .topics
        .iter()
        .map(|t| TopicAnswer {
            name: t.topic.0.to_string(),
            partitions: Vec::new(),
        })
        .collect();
    for (w, r) in wanted.into_iter().zip(results) {
        let offsets = r.offsets;
        let current_leader = hints
            .hint(&topics[w.topic_index].name, w.partition, r.error)
            .map(|hint| (hint.leader.0, hint.epoch));
        topics[w.topic_index].partitions.push(PartitionAnswer {
            current_leader,
            partition: w.partition,
            error_code: r.error.code(),
            high_watermark: offsets.map(|o| o.high_watermark.0).unwrap_or(-1),
            last_stable_offset: offsets.map(|o| o.last_stable.0).unwrap_or(-1),
            log_start_offset: offsets.map(|o| o.log_start.0).unwrap_or(-1),
            aborted: r
                .aborted
                .iter()
                .map(|a| (a.producer_id.0, a.first_offset.0))
                .collect(),
            records: r.records,
        });
    }
    topics
}
