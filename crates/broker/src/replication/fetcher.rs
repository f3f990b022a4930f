//! The follower side of replication: one task per (shard, leader broker) that pulls every
//! partition the pair shares with one Fetch v17 at a time, as a Kafka follower does (replica id
//! and broker epoch in `ReplicaState`), appends what comes back exactly as the leader wrote it,
//! and asks again only once those appends are on this broker's disk. So the offset each fetch
//! carries is this replica's durable end, and the leader's high watermark, a minimum over those
//! offsets, counts only fsynced copies (Sluice's stricter rule; Kafka followers report what they
//! have written).
//!
//! A leader that answers with a `DivergingEpoch` has a different history above some offset: the
//! follower truncates to where the two agree (Kafka's KIP-101/KIP-320 rules, see
//! `truncation_offset`) and fetches again; the leader checks again, so a few round trips settle
//! any divergence. A partition refused for leadership reasons waits for the next metadata image
//! or `replica.fetch.backoff.ms`, whichever comes first (the leader's image may be the one
//! behind); a failed exchange is retried after the same backoff.
//!
//! The task ends when its leader leads none of this shard's replicas any more; the shard starts
//! one whenever an image names a leader it has none for (`Shard::start_fetchers`).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, FetchResponse};
use uuid::Uuid;

use crate::error::ErrorCode;
use crate::metadata::records::{BrokerId, LeaderEpoch};
use crate::network::peers::Peers;
use crate::partition::{self, PartitionRef};
use crate::shard::Shard;
use crate::storage::batch::BatchHeader;
use crate::storage::fs::UringStorage;
use crate::storage::Clock;
use crate::types::{Offset, TopicPartition};

/// The Fetch version followers send (Kafka 4.x followers send 17 too).
pub const FETCH_VERSION: i16 = 17;

/// A partition this shard follows from one leader, as the current image places it.
pub struct Followed {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    /// The leader's epoch in the image: sent as `CurrentLeaderEpoch`, so a leader on another
    /// term refuses the fetch instead of serving a history this replica should not take.
    pub leader_epoch: LeaderEpoch,
    pub partition: PartitionRef<UringStorage>,
}

/// Pulls from `leader` until it leads nothing this shard holds.
pub async fn run(shard: Rc<Shard>, leader: BrokerId) {
    let me = BrokerId(shard.config.node_id);
    let config = shard.config.replica.clone();
    let peer = Peers::for_replication(&shard.config.inter_broker_listener_name, me.0);
    // Partitions refused at a leader epoch, or whose answer failed to apply: skipped until the
    // image moves them on, or for `replica.fetch.backoff.ms` (the leader's own image may merely
    // be behind this one's; a disk may have room again).
    let mut stalled: HashMap<TopicPartition, (LeaderEpoch, Instant)> = HashMap::new();
    tracing::info!("shard {} follows broker {}", shard.id.0, leader.0);
    while !shard.is_stopping() {
        let all = shard.followed_from(leader);
        if all.is_empty() {
            break;
        }
        let now = Instant::now();
        stalled.retain(|tp, (epoch, until)| {
            *until > now && all.iter().any(|f| &f.tp == tp && f.leader_epoch == *epoch)
        });
        let followed: Vec<Followed> = all
            .into_iter()
            .filter(|f| !stalled.contains_key(&f.tp))
            .collect();
        let image = shard.image();
        let my_epoch = image.brokers.get(&me).map(|b| b.epoch.0);
        let (Some(my_epoch), false) = (my_epoch, followed.is_empty()) else {
            glommio::timer::sleep(config.fetch_backoff).await;
            continue;
        };
        let request = fetch_request(me, my_epoch, &config, &followed);
        let answer = peer.call(&image, leader, FETCH_VERSION, &request).await;
        let backoff = match answer {
            Ok(response) if response.error_code == 0 => {
                apply(&shard, &followed, response, &mut stalled).await
            }
            Ok(response) => {
                tracing::warn!(
                    "fetch from broker {}: error {}",
                    leader.0,
                    response.error_code
                );
                true
            }
            Err(err) => {
                tracing::debug!("fetch from broker {}: {err}", leader.0);
                true
            }
        };
        if backoff {
            glommio::timer::sleep(config.fetch_backoff).await;
        }
    }
    shard.fetcher_stopped(leader);
    tracing::info!("shard {} stops following broker {}", shard.id.0, leader.0);
}

fn fetch_request(
    me: BrokerId,
    my_epoch: i64,
    config: &crate::replication::ReplicaConfig,
    followed: &[Followed],
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in followed {
        let p = f.partition.borrow();
        let offsets = p.offsets();
        let partition = FetchPartition::default()
            .with_partition(f.tp.partition.0)
            .with_current_leader_epoch(f.leader_epoch.0)
            .with_fetch_offset(offsets.log_end.0)
            .with_last_fetched_epoch(p.latest_epoch().map_or(-1, |e| e.0))
            .with_log_start_offset(offsets.log_start.0)
            .with_partition_max_bytes(config.fetch_max_bytes);
        match topics.iter_mut().find(|t| t.topic_id == f.topic_id) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(f.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(WireBrokerId(-1))
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(WireBrokerId(me.0))
                .with_replica_epoch(my_epoch),
        )
        .with_max_wait_ms(config.fetch_wait_max.as_millis() as i32)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Applies one answer: appends, truncations and refusals, then waits until every append is
/// durable and moves each replica's high watermark. Returns whether to back off before the next
/// fetch (every partition failed).
async fn apply(
    shard: &Rc<Shard>,
    followed: &[Followed],
    response: FetchResponse,
    stalled: &mut HashMap<TopicPartition, (LeaderEpoch, Instant)>,
) -> bool {
    let retry_at = Instant::now() + shard.config.replica.fetch_backoff;
    let now_ms = shard.clock.now_ms();
    let mut appended = Vec::new();
    let mut failed = 0usize;
    for topic in response.responses {
        for data in topic.partitions {
            let Some(f) = followed
                .iter()
                .find(|f| f.topic_id == topic.topic_id && f.tp.partition.0 == data.partition_index)
            else {
                continue;
            };
            match take_partition(f, data, now_ms).await {
                Taken::Appended(leader) => appended.push((f, leader)),
                Taken::Truncated | Taken::Moved => {}
                Taken::Stalled(why) => {
                    tracing::info!("{}: following waits for new metadata: {why}", f.tp);
                    stalled.insert(f.tp.clone(), (f.leader_epoch, retry_at));
                    failed += 1;
                }
                Taken::Failed(why) => {
                    // Backed off alone: the other partitions of the fetch go on, and a failure
                    // that repeats (a full disk) is not retried, and logged, in a busy loop.
                    tracing::warn!("{}: replica fetch failed: {why}", f.tp);
                    stalled.insert(f.tp.clone(), (f.leader_epoch, retry_at));
                    failed += 1;
                }
            }
        }
    }
    // The next fetch reports these ends to the leader: they must be on disk first.
    let durable = appended.iter().map(|(f, _)| {
        let end = f.partition.borrow().offsets().log_end;
        partition::wait_durable(&f.partition, end)
    });
    let results = join_all(durable).await;
    for ((f, leader), result) in appended.iter().zip(results) {
        if let Err(code) = result {
            tracing::error!("{}: replica append not durable: {code:?}", f.tp);
            continue;
        }
        f.partition
            .borrow_mut()
            .follow_high_watermark(leader.high_watermark);
        if let Err(code) = partition::follow_log_start(&f.partition, leader.log_start).await {
            tracing::error!("{}: following the leader's log start: {code:?}", f.tp);
        }
    }
    failed > 0 && appended.is_empty()
}

/// Refusals only a new image can lift: the leader moved, or the partition is not (yet) known
/// there. OFFSET_OUT_OF_RANGE too, unless this replica's end is below the leader's log start
/// (it then starts over there): the leader knows no end for this replica's latest epoch, and a
/// new leader or new records may.
const WAIT_FOR_METADATA: [ErrorCode; 6] = [
    ErrorCode::NotLeaderOrFollower,
    ErrorCode::FencedLeaderEpoch,
    ErrorCode::UnknownLeaderEpoch,
    ErrorCode::UnknownTopicOrPartition,
    ErrorCode::UnknownTopicId,
    ErrorCode::OffsetOutOfRange,
];

/// The leader's offsets an answer carried beside a partition's records.
struct LeaderOffsets {
    high_watermark: Offset,
    log_start: Offset,
}

/// What became of one partition's part of an answer.
enum Taken {
    /// Its records (if any) appended; the leader's offsets beside them.
    Appended(LeaderOffsets),
    /// Truncated to where the leader's history and this one agree, or started over at the
    /// leader's log start: fetched again at once.
    Truncated,
    /// The image moved the partition while the fetch was out: its answer is dropped.
    Moved,
    /// Refused for a reason new metadata changes, here or at the leader.
    Stalled(String),
    /// Anything else: fetched again after the backoff.
    Failed(String),
}

async fn take_partition(f: &Followed, data: PartitionData, now_ms: i64) -> Taken {
    // The image may have moved while the fetch was out: an answer from a leader this replica no
    // longer follows at that epoch must not touch its log.
    let moved = {
        let p = f.partition.borrow();
        p.is_leading() || p.leader_epoch() != f.leader_epoch
    };
    if moved {
        return Taken::Moved;
    }
    let leader_start = Offset(data.log_start_offset);
    if data.error_code == ErrorCode::OffsetOutOfRange.code() && below_log_start(f, leader_start) {
        return restart_at(f, leader_start, now_ms).await;
    }
    if data.error_code != ErrorCode::None.code() {
        let code = data.error_code;
        return if WAIT_FOR_METADATA.iter().any(|c| c.code() == code) {
            Taken::Stalled(format!("error {code}"))
        } else {
            Taken::Failed(format!("error {code}"))
        };
    }
    let diverging = &data.diverging_epoch;
    if diverging.epoch >= 0 && diverging.end_offset >= 0 {
        let leader = (LeaderEpoch(diverging.epoch), Offset(diverging.end_offset));
        return truncate(f, leader).await;
    }
    let records: Bytes = data.records.unwrap_or_default();
    if let Some(base) = first_batch_before_empty_log(f, &records) {
        // The leader's log start falls inside its first batch (DeleteRecords moved it there):
        // this replica holds nothing yet, so it starts at that batch, and follows the leader's
        // log start back up once its high watermark allows (Kafka does the same).
        if let Err(err) = partition::restart_at(&f.partition, base, now_ms).await {
            return Taken::Failed(format!("starting over at {base}: {err}"));
        }
    }
    if !records.is_empty() {
        let appended = f.partition.borrow_mut().append_replicated(&records, now_ms);
        if let Err(code) = appended {
            return Taken::Failed(format!("append: {code:?}"));
        }
        partition::schedule_flush(&f.partition);
    }
    Taken::Appended(LeaderOffsets {
        high_watermark: Offset(data.high_watermark),
        log_start: leader_start,
    })
}

/// Whether this replica's log ends below the leader's log start: the records it would fetch
/// next are gone there (deleted, or past retention while it was away).
fn below_log_start(f: &Followed, leader_start: Offset) -> bool {
    f.partition.borrow().offsets().log_end < leader_start
}

/// The base offset of the first batch in `records` when it begins below this replica's log end
/// and this replica holds no record: the batch reaches past the end, which an append refuses.
fn first_batch_before_empty_log(f: &Followed, records: &Bytes) -> Option<Offset> {
    let header = BatchHeader::parse(records)?;
    let offsets = f.partition.borrow().offsets();
    let empty = offsets.log_start == offsets.log_end;
    let straddles = header.base_offset < offsets.log_end && header.last_offset() >= offsets.log_end;
    (empty && straddles).then_some(header.base_offset)
}

/// Empties this replica's log and starts it at the leader's log start.
async fn restart_at(f: &Followed, leader_start: Offset, now_ms: i64) -> Taken {
    let end = f.partition.borrow().offsets().log_end;
    tracing::info!(
        "{}: its log ends at {end}, below the leader's log start {leader_start}: starting over there",
        f.tp
    );
    match partition::restart_at(&f.partition, leader_start, now_ms).await {
        Ok(()) => Taken::Truncated,
        Err(err) => Taken::Failed(format!("starting over at {leader_start}: {err}")),
    }
}

/// Truncates to where this replica's history and the leader's agree.
async fn truncate(f: &Followed, leader: (LeaderEpoch, Offset)) -> Taken {
    let (own, end) = {
        let p = f.partition.borrow();
        (p.end_offset_for_epoch(leader.0), p.offsets().log_end)
    };
    let to = truncation_offset(leader, own, end);
    tracing::info!(
        "{}: diverged from the leader at epoch {} (its end {}); truncating from {end} to {to}",
        f.tp,
        leader.0 .0,
        leader.1
    );
    match partition::truncate_to(&f.partition, to).await {
        Ok(()) => Taken::Truncated,
        Err(err) => Taken::Failed(format!("truncating to {to}: {err}")),
    }
}

/// Where a follower truncates when the leader says its history ends epoch `E` at offset `O`,
/// given what the follower itself holds for `E` (`own`, from its epoch cache) and its log end:
/// - the follower had `E` too: up to the smaller of the two ends of `E`;
/// - it had only an earlier epoch: to the end of that one, and the next fetch (naming this
///   earlier epoch) finds the agreement point further down;
/// - it knows no epoch at or below `E`: to `O`.
///
/// Never above its own log end.
pub fn truncation_offset(
    leader: (LeaderEpoch, Offset),
    own: Option<(LeaderEpoch, Offset)>,
    log_end: Offset,
) -> Offset {
    let (epoch, end) = leader;
    let to = match own {
        Some((own_epoch, own_end)) if own_epoch == epoch => end.min(own_end),
        Some((_, own_end)) => own_end,
        None => end,
    };
    to.min(log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: i32, offset: i64) -> (LeaderEpoch, Offset) {
        (LeaderEpoch(epoch), Offset(offset))
    }

    #[test]
    fn a_shared_epoch_truncates_to_the_shorter_of_its_two_ends() {
        assert_eq!(
            truncation_offset(at(3, 100), Some(at(3, 120)), Offset(130)),
            Offset(100)
        );
        assert_eq!(
            truncation_offset(at(3, 100), Some(at(3, 90)), Offset(130)),
            Offset(90)
        );
    }

    #[test]
    fn an_epoch_the_follower_never_had_truncates_to_its_own_earlier_epoch_end() {
        assert_eq!(
            truncation_offset(at(5, 100), Some(at(4, 80)), Offset(130)),
            Offset(80)
        );
    }

    #[test]
    fn no_known_epoch_truncates_to_the_leaders_end_and_never_grows_the_log() {
        assert_eq!(truncation_offset(at(2, 50), None, Offset(130)), Offset(50));
        assert_eq!(
            truncation_offset(at(2, 150), None, Offset(130)),
            Offset(130)
        );
    }
}
