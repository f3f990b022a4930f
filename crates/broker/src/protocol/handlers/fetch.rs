//! Fetch (key 1): reads from the owning shards, long-polls (woken by appends) until `min_bytes`
//! or `max_wait_ms`, and respects `max_bytes` and per-partition limits (the first batch is always
//! returned whole, as Kafka does). No fetch sessions: the answer's session id is 0, which tells
//! clients to keep sending full fetches.
//!
//! Records are located in the segment on the owning shard and framed by hand
//! (`protocol::fetch_frame`): large record sets travel back as file ranges the connection's writer
//! sends from the page cache with sendfile (`storage::payload`), small ones as bytes.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{join_all, select_all, FutureExt};
use kafka_protocol::messages::FetchRequest;

use crate::error::ErrorCode;
use crate::limits;
use crate::protocol::fetch_frame::{PartitionAnswer, TopicAnswer};
use crate::shard::{FetchItem, FetchResult, Shard, ShardRequest, ShardResponse};
use crate::storage::payload::Payload;
use crate::types::{Offset, ShardId, TopicPartition};

pub const VERSIONS: (i16, i16) = (4, 12);

/// One requested partition, in request order.
struct Wanted {
    topic_index: usize,
    partition: i32,
    item: Option<FetchItem>,
}

pub async fn handle(shard: &Rc<Shard>, request: FetchRequest, _version: i16) -> Vec<TopicAnswer> {
    let wanted = resolve(shard, &request);
    let max_wait =
        Duration::from_millis((request.max_wait_ms.max(0) as u64).min(limits::FETCH_MAX_WAIT_MS));
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = (request.max_bytes.max(0) as usize).min(limits::FETCH_RESPONSE_MAX_BYTES);
    let mut results = read_all(shard, &wanted).await;
    loop {
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let errored = results.iter().any(|r| r.error != ErrorCode::None);
        let now = Instant::now();
        if bytes >= min_bytes
            || errored
            || now >= deadline
            || wanted.iter().all(|w| w.item.is_none())
        {
            break;
        }
        wait_for_data(shard, &wanted, &results, deadline - now).await;
        results = read_all(shard, &wanted).await;
    }
    build_response(&request, wanted, results, max_bytes)
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
                max_bytes: (p.partition_max_bytes.max(0) as usize)
                    .min(limits::FETCH_RESPONSE_MAX_BYTES),
                read_committed,
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

/// Reads every known partition (one call per owning shard, all at once), in request order.
async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<FetchResult> {
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
        let response = shard
            .call(
                owner,
                ShardRequest::Fetch {
                    items: items.into_iter().map(|(_, item)| item).collect(),
                },
            )
            .await;
        (slots, response)
    });
    let unknown = FetchResult {
        error: ErrorCode::UnknownTopicOrPartition,
        offsets: None,
        records: Payload::default(),
        aborted: Vec::new(),
    };
    let mut results = vec![unknown; wanted.len()];
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

/// Assembles the answer in request order, keeping the total under `max_bytes` (the first
/// non-empty partition always goes out whole, as Kafka does, so a large batch cannot stall).
fn build_response(
    request: &FetchRequest,
    wanted: Vec<Wanted>,
    results: Vec<FetchResult>,
    max_bytes: usize,
) -> Vec<TopicAnswer> {
    let mut used = 0usize;
    let mut topics: Vec<TopicAnswer> = request
        .topics
        .iter()
        .map(|t| TopicAnswer {
            name: t.topic.0.to_string(),
            partitions: Vec::new(),
        })
        .collect();
    for (w, r) in wanted.into_iter().zip(results) {
        let mut records = r.records;
        if !records.is_empty() && used > 0 && used + records.len() > max_bytes {
            records = Payload::default();
        }
        used += records.len();
        let offsets = r.offsets;
        topics[w.topic_index].partitions.push(PartitionAnswer {
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
            records,
        });
    }
    topics
}
