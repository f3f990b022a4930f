//! Per-partition work spread over the owning shards: one cross-shard call per shard, all in
//! flight at once, answers keyed by the partition's place in the request.

use std::collections::HashMap;
use std::rc::Rc;

use futures::future::join_all;

use crate::error::ErrorCode;
use crate::metadata::MetadataImage;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::{ShardId, TopicPartition};

/// A partition's place in a request: (topic index, partition index within the topic).
pub type Slot = (usize, usize);

/// Whether `partition` exists in `topic`.
pub fn known(image: &MetadataImage, topic: &str, partition: i32) -> bool {
    image
        .topic(topic)
        .is_some_and(|m| partition >= 0 && partition < m.partitions)
}

/// Every partition's answer in the request's order: `answers[t][p]`.
pub type Answers<R> = Vec<Vec<Result<R, ErrorCode>>>;

/// Answers a request's partitions, `topics[t] = (name, [(partition, item)])`, from their owning
/// shards: `route` answers what is refused or unknown, `scatter` asks the owners the rest
/// (`request` and `answers` as there). The answers come in the request's order, so a handler
/// builds its response by zipping them with the request's own topics and partitions.
pub async fn ask_owners<'a, T, R>(
    shard: &Rc<Shard>,
    topics: impl IntoIterator<Item = (&'a str, Vec<(i32, T)>)>,
    refuse: impl Fn(&str) -> Option<ErrorCode>,
    request: impl Fn(Vec<(TopicPartition, T)>) -> ShardRequest,
    answers: impl Fn(ShardResponse) -> Option<Vec<Result<R, ErrorCode>>>,
) -> Answers<R> {
    let topics: Vec<_> = topics.into_iter().collect();
    let counts: Vec<usize> = topics
        .iter()
        .map(|(_, partitions)| partitions.len())
        .collect();
    let (items, mut answered) = route(&shard.image(), topics, refuse);
    answered.extend(scatter(shard, items, request, answers).await);
    in_request_order(&counts, answered)
}

/// `answered` laid out as the request's topics (`counts[t]` partitions each). A slot without an
/// answer (a shard that answered fewer items than it was sent) gets UNKNOWN_SERVER_ERROR.
fn in_request_order<R>(
    counts: &[usize],
    mut answered: HashMap<Slot, Result<R, ErrorCode>>,
) -> Answers<R> {
    let mut take = |slot| {
        answered
            .remove(&slot)
            .unwrap_or(Err(ErrorCode::UnknownServerError))
    };
    counts
        .iter()
        .enumerate()
        .map(|(ti, &count)| (0..count).map(|pi| take((ti, pi))).collect())
        .collect()
}

/// Work for the owning shards, and the answers known before any shard is asked.
type Routed<T, R> = (
    Vec<(Slot, TopicPartition, T)>,
    HashMap<Slot, Result<R, ErrorCode>>,
);

/// Splits a request's partitions into work for the owning shards and early answers: `refuse` may
/// turn a whole topic away, and partitions that do not exist get UNKNOWN_TOPIC_OR_PARTITION.
fn route<T, R>(
    image: &MetadataImage,
    topics: Vec<(&str, Vec<(i32, T)>)>,
    refuse: impl Fn(&str) -> Option<ErrorCode>,
) -> Routed<T, R> {
    let mut items = Vec::new();
    let mut answers = HashMap::new();
    for (ti, (name, partitions)) in topics.into_iter().enumerate() {
        for (pi, (partition, item)) in partitions.into_iter().enumerate() {
            if let Some(code) = refuse(name) {
                answers.insert((ti, pi), Err(code));
            } else if known(image, name, partition) {
                items.push(((ti, pi), TopicPartition::new(name, partition), item));
            } else {
                answers.insert((ti, pi), Err(ErrorCode::UnknownTopicOrPartition));
            }
        }
    }
    (items, answers)
}

/// Sends each item to the shard owning its partition and collects the answers. `request` builds
/// one shard's request from its items; `answers` takes the per-item results out of the response
/// (a shard that is gone answers NOT_LEADER_OR_FOLLOWER for all of its items, and so does an
/// owner that does not know a partition `route` found).
pub async fn scatter<T, R>(
    shard: &Rc<Shard>,
    items: Vec<(Slot, TopicPartition, T)>,
    request: impl Fn(Vec<(TopicPartition, T)>) -> ShardRequest,
    answers: impl Fn(ShardResponse) -> Option<Vec<Result<R, ErrorCode>>>,
) -> HashMap<Slot, Result<R, ErrorCode>> {
    let mut routed: HashMap<ShardId, Vec<(Slot, TopicPartition, T)>> = HashMap::new();
    for (slot, tp, item) in items {
        routed
            .entry(shard.owner_of(&tp))
            .or_default()
            .push((slot, tp, item));
    }
    let calls = routed.into_iter().map(|(owner, items)| {
        let slots: Vec<Slot> = items.iter().map(|(slot, _, _)| *slot).collect();
        let request = request(items.into_iter().map(|(_, tp, item)| (tp, item)).collect());
        async move { (slots, shard.call(owner, request).await) }
    });
    let mut collected = HashMap::new();
    for (slots, response) in join_all(calls).await {
        match answers(response) {
            Some(results) => collected.extend(slots.into_iter().zip(results.into_iter().map(
                // `route` found the partition in this shard's metadata: an owner that does not
                // know it yet has not applied that metadata, and a retry will find it.
                |result| match result {
                    Err(ErrorCode::UnknownTopicOrPartition) => Err(ErrorCode::NotLeaderOrFollower),
                    other => other,
                },
            ))),
            None => collected.extend(
                slots
                    .into_iter()
                    .map(|slot| (slot, Err(ErrorCode::NotLeaderOrFollower))),
            ),
        }
    }
    collected
}
