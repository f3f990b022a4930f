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
//!
//! Versions: up to v12 topics are named, from v13 they are addressed by id (an id the metadata
//! does not know gets UNKNOWN_TOPIC_ID). A fetch from a replica (a follower: `ReplicaId` >= 0 up
//! to v14, the tagged `ReplicaState` from v15) reads up to the log end whatever its isolation
//! level, and only from a leader that has it in the partition's assignment (`shard::fetch_one`).
//! Read and ignored: `ClusterId`, `RackId` (no follower fetching for consumers), the
//! per-partition `LogStartOffset` (until followers are tracked), `ReplicaDirectoryId` (v17,
//! one log directory per broker) and `HighWatermark` (v18, KIP-1166: lets a leader answer a
//! parked follower fetch when the follower's high watermark is stale).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, select_all, FutureExt};
use kafka_protocol::messages::FetchRequest;

use super::coordinator::Client;
use super::leader_hints::LeaderHints;
use crate::error::ErrorCode;
use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId};
use crate::metadata::{MetadataImage, TopicMeta};
use crate::metrics;
use crate::protocol::fetch_frame::{FetchAnswer, PartitionAnswer, TopicAnswer, TOPIC_ID_VERSION};
use crate::protocol::fetch_sizing::{self, Budget, Settled};
use crate::shard::{FetchItem, FetchResult, Shard, ShardRequest, ShardResponse};
use crate::storage::payload::Payload;
use crate::types::{Offset, ShardId, TopicPartition};

pub const VERSIONS: (i16, i16) = (4, 18);

/// The first version whose partitions tell a refused client where the leader is (`CurrentLeader`).
const LEADER_HINT_VERSION: i16 = 12;

/// One requested partition, in request order: what to read, or why nothing is.
struct Wanted {
    topic_index: usize,
    partition: i32,
    item: Result<FetchItem, ErrorCode>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: FetchRequest,
    version: i16,
    client: &Client,
) -> FetchAnswer {
    let topics = resolve_topics(&shard.image(), &request, version);
    let wanted = resolve(&request, version, &topics);
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
            || wanted.iter().all(|w| w.item.is_err())
        {
            served(shard, &wanted, &results);
            let hints = LeaderHints::new(shard, client, version >= LEADER_HINT_VERSION);
            return build_response(topics, wanted, results, hints);
        }
        wait_for_data(shard, &wanted, &results, deadline - now).await;
    }
}

/// Kafka's isolation levels: 0 read_uncommitted, 1 read_committed.
const READ_COMMITTED: i8 = 1;

/// The replica a fetch comes from (Kafka's `FetchRequest.replicaId`): `ReplicaId` up to v14,
/// the tagged `ReplicaState` from v15, where `ReplicaId` is off the wire and reads as -1.
/// Consumers send a negative id (-1; -2 for Kafka's debugging consumer) and get `None`.
fn fetching_replica(request: &FetchRequest) -> Option<(BrokerId, BrokerEpoch)> {
    let (id, epoch) = if request.replica_id.0 != -1 {
        (request.replica_id.0, -1)
    } else {
        let state = &request.replica_state;
        (state.replica_id.0, state.replica_epoch)
    };
    (id >= 0).then_some((BrokerId(id), BrokerEpoch(epoch)))
}

/// Each requested topic as the metadata image knows it (by name up to v12, by id from v13),
/// with the name and id its answer carries.
fn resolve_topics(
    image: &MetadataImage,
    request: &FetchRequest,
    version: i16,
) -> Vec<(TopicAnswer, Option<Arc<TopicMeta>>)> {
    request
        .topics
        .iter()
        .map(|topic| {
            let meta = if version >= TOPIC_ID_VERSION {
                image.topic_by_id(topic.topic_id)
            } else {
                image.topic(&topic.topic.0)
            };
            let answer = TopicAnswer {
                name: meta.map_or_else(|| topic.topic.0.to_string(), |m| m.name.clone()),
                topic_id: meta.map_or(topic.topic_id, |m| m.id),
                partitions: Vec::new(),
            };
            (answer, meta.cloned())
        })
        .collect()
}

fn resolve(
    request: &FetchRequest,
    version: i16,
    topics: &[(TopicAnswer, Option<Arc<TopicMeta>>)],
) -> Vec<Wanted> {
    let replica = fetching_replica(request);
    // A follower reads up to the log end whatever it asks (Kafka's LOG_END isolation).
    let read_committed = replica.is_none() && request.isolation_level == READ_COMMITTED;
    let unknown_topic = if version >= TOPIC_ID_VERSION {
        ErrorCode::UnknownTopicId
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    let mut wanted = Vec::new();
    for (topic_index, (topic, (answer, meta))) in request.topics.iter().zip(topics).enumerate() {
        for p in &topic.partitions {
            let item = match meta {
                None => Err(unknown_topic),
                Some(m) if p.partition < 0 || p.partition >= m.partitions => {
                    Err(ErrorCode::UnknownTopicOrPartition)
                }
                Some(_) => Ok(FetchItem {
                    tp: TopicPartition::new(&answer.name, p.partition),
                    offset: Offset(p.fetch_offset),
                    partition_max_bytes: fetch_sizing::partition_max_bytes(p.partition_max_bytes),
                    read_committed,
                    current_leader_epoch: p.current_leader_epoch,
                    replica,
                    // v12+; decoded as its default, -1, before.
                    last_fetched_epoch: p.last_fetched_epoch,
                }),
            };
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
        if let Ok(item) = &w.item {
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
    let mut results: Vec<FetchResult> = wanted
        .iter()
        .map(|w| {
            FetchResult::failed(
                w.item
                    .as_ref()
                    .err()
                    .copied()
                    .unwrap_or(ErrorCode::UnknownTopicOrPartition),
                None,
            )
        })
        .collect();
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
        if let (Ok(item), Some(span)) = (&w.item, result.span) {
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
        _ => FetchResult::failed(ErrorCode::NotLeaderOrFollower, None),
    }
}

/// Counts what the answer returns: record bytes per partition on the owning shards (sent on
/// without waiting), and bytes read into memory on this shard (file ranges are counted as the
/// writer sends them).
fn served(shard: &Rc<Shard>, wanted: &[Wanted], results: &[FetchResult]) {
    let mut routed: HashMap<ShardId, Vec<(TopicPartition, usize)>> = HashMap::new();
    for (w, r) in wanted.iter().zip(results) {
        let (Ok(item), false) = (&w.item, r.records.is_empty()) else {
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
    let mut follower = false;
    for (w, r) in wanted.iter().zip(results) {
        if let Ok(item) = &w.item {
            follower = item.replica.is_some();
            // Wait for data past what this round already returned: a consumer's reads stop at
            // the high watermark, a follower's at the durable end, past its fetch offset.
            let seen = match follower {
                true => item.offset,
                false => r
                    .offsets
                    .map(|o| o.high_watermark)
                    .unwrap_or(item.offset)
                    .max(item.offset),
            };
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
                    follower,
                    max_wait: timeout,
                },
            )
            .boxed_local()
    });
    select_all(waits).await;
}

/// Assembles the answer in request order (the records are already sized).
fn build_response(
    topics: Vec<(TopicAnswer, Option<Arc<TopicMeta>>)>,
    wanted: Vec<Wanted>,
    results: Vec<FetchResult>,
    mut hints: LeaderHints,
) -> FetchAnswer {
    let mut topics: Vec<TopicAnswer> = topics.into_iter().map(|(answer, _)| answer).collect();
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
            diverging_epoch: r.diverging_epoch.map(|(epoch, end)| (epoch.0, end.0)),
        });
    }
    FetchAnswer {
        topics,
        node_endpoints: hints.leader_endpoints(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metadata::records::{MetadataRecord, PartitionState};
    use crate::types::PartitionId;
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
    use kafka_protocol::messages::{BrokerId as WireBrokerId, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use uuid::Uuid;

    /// `request` as a broker receives it at `version`: encoded and decoded again.
    fn on_the_wire(request: &FetchRequest, version: i16) -> FetchRequest {
        let mut buf = BytesMut::new();
        request.encode(&mut buf, version).unwrap();
        FetchRequest::decode(&mut buf.freeze(), version).unwrap()
    }

    #[test]
    fn the_replica_comes_from_replica_id_then_replica_state() {
        let follower = (BrokerId(3), BrokerEpoch(42));
        for version in VERSIONS.0..=VERSIONS.1 {
            let request = if version < 15 {
                FetchRequest::default().with_replica_id(WireBrokerId(3))
            } else {
                FetchRequest::default().with_replica_state(
                    ReplicaState::default()
                        .with_replica_id(WireBrokerId(3))
                        .with_replica_epoch(42),
                )
            };
            let want = if version < 15 {
                (BrokerId(3), BrokerEpoch(-1))
            } else {
                follower
            };
            let got = fetching_replica(&on_the_wire(&request, version));
            assert_eq!(got, Some(want), "v{version}");
            let consumer = FetchRequest::default().with_replica_id(WireBrokerId(-1));
            assert_eq!(fetching_replica(&on_the_wire(&consumer, version)), None);
            let debugging = FetchRequest::default().with_replica_id(WireBrokerId(-2));
            if version < 15 {
                assert_eq!(fetching_replica(&on_the_wire(&debugging, version)), None);
            }
        }
    }

    #[test]
    fn topics_by_name_then_by_id() {
        let mut image = MetadataImage::new("c".into(), Config::default().log);
        let id = Uuid::new_v4();
        image
            .apply(&MetadataRecord::Topic {
                name: "t".into(),
                id,
            })
            .unwrap();
        let state = PartitionState::online(vec![BrokerId(1), BrokerId(2)]);
        image
            .apply(&MetadataRecord::Partition {
                topic_id: id,
                partition: PartitionId(0),
                state,
            })
            .unwrap();
        let partitions = |indexes: &[i32]| {
            indexes
                .iter()
                .map(|&i| {
                    FetchPartition::default()
                        .with_partition(i)
                        .with_fetch_offset(5)
                        .with_last_fetched_epoch(2)
                })
                .collect::<Vec<_>>()
        };
        let name = |s: &str| TopicName(StrBytes::from_string(s.into()));
        let request = FetchRequest::default()
            .with_isolation_level(READ_COMMITTED)
            .with_replica_state(ReplicaState::default().with_replica_id(WireBrokerId(2)))
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name("t"))
                    .with_topic_id(id)
                    .with_partitions(partitions(&[0, 1])),
                FetchTopic::default()
                    .with_topic(name("gone"))
                    .with_topic_id(Uuid::new_v4())
                    .with_partitions(partitions(&[0])),
            ]);
        for version in [12, 13, VERSIONS.1] {
            let request = on_the_wire(&request, version);
            let topics = resolve_topics(&image, &request, version);
            assert_eq!((topics[0].0.name.as_str(), topics[0].0.topic_id), ("t", id));
            let wanted = resolve(&request, version, &topics);
            let item = wanted[0].item.as_ref().unwrap();
            assert_eq!(item.tp, TopicPartition::new("t", 0));
            assert_eq!(item.offset, Offset(5));
            assert_eq!(item.last_fetched_epoch, 2);
            assert_eq!(
                wanted[1].item.as_ref().err(),
                Some(&ErrorCode::UnknownTopicOrPartition)
            );
            let unknown = if version >= TOPIC_ID_VERSION {
                ErrorCode::UnknownTopicId
            } else {
                ErrorCode::UnknownTopicOrPartition
            };
            assert_eq!(wanted[2].item.as_ref().err(), Some(&unknown), "v{version}");
            if version >= 15 {
                assert_eq!(item.replica, Some((BrokerId(2), BrokerEpoch(-1))));
                assert!(!item.read_committed, "a follower reads to the log end");
            } else {
                assert_eq!(item.replica, None);
                assert!(item.read_committed);
            }
        }
    }
}
