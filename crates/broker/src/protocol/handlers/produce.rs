//! Produce (key 0): validates each partition's batches, routes them to the owning shards, and
//! answers acks=1 once they are on the leader's disk (its durable end) and acks=all once they are
//! committed (the high watermark); on one broker the two coincide. acks=0 gets no response at
//! all. Advertised from v0 for old librdkafka's feature checks;
//! versions below 3 (message formats 0 and 1) are refused.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;

use super::coordinator::Client;
use super::leader_hints::LeaderHints;
use super::scatter::{known, scatter, Slot};
use crate::error::{ErrorCode, ProduceError};
use crate::metadata::{is_internal_topic, MetadataImage};
use crate::network::request_memory::FrameCharge;
use crate::partition::ProduceOutcome;
use crate::shard::{Shard, ShardRequest, ShardResponse, ACKS_ALL};
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (3, 11);

/// The first version whose response carries `record_errors` and `error_message` (KIP-467).
const RECORD_ERRORS_VERSION: i16 = 8;

/// The first version whose response tells a client where a partition's leader went (KIP-951).
const LEADER_HINT_VERSION: i16 = 10;

/// `charge` holds the request's bytes in the shard's request memory. An acks=all produce to
/// replicated partitions gives them back once every owning shard has appended its records:
/// waiting for the followers holds none of the memory their fetches need to be read.
pub async fn handle(
    shard: &Rc<Shard>,
    mut request: ProduceRequest,
    version: i16,
    client: &Client,
    charge: FrameCharge,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let image = shard.image();
    let mut results: HashMap<Slot, Result<ProduceOutcome, ProduceError>> = HashMap::new();
    let mut items = Vec::new();
    let mut replicated = false;
    for (ti, topic) in request.topic_data.iter_mut().enumerate() {
        let name = topic.name.0.as_str();
        for (pi, data) in topic.partition_data.iter_mut().enumerate() {
            let refused = if !matches!(acks, -1..=1) {
                Some(ErrorCode::InvalidRequiredAcks)
            } else if !known(&image, name, data.index) {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else if is_internal_topic(name) {
                // Only the broker writes its internal topics.
                Some(ErrorCode::InvalidTopicException)
            } else if data.records.as_ref().is_none_or(|r| r.is_empty()) {
                Some(ErrorCode::CorruptMessage)
            } else {
                None
            };
            match refused {
                Some(code) => drop(results.insert((ti, pi), Err(code.into()))),
                None => {
                    replicated |= has_followers(&image, name, data.index);
                    // Taken, not copied: once the shards let go of them, nothing holds them.
                    items.push((
                        (ti, pi),
                        TopicPartition::new(name, data.index),
                        data.records.take().unwrap_or_default(),
                    ))
                }
            }
        }
    }
    let (release, _held_until_answered) = if acks == ACKS_ALL && replicated {
        (Some(charge.until_signalled()), None)
    } else {
        (None, Some(charge))
    };
    let transactional_id: Option<Arc<str>> = request
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().into());
    // scatter builds every shard's request before it first waits, as `until_signalled` needs.
    let request_for = |items| ShardRequest::Produce {
        acks,
        transactional_id: transactional_id.clone(),
        items,
        appended: release.as_ref().map(|release| release.signal()),
    };
    // A shard's answer per partition is itself a result (a refusal may explain its records);
    // the outer one is the shard's, when it could not answer.
    let answers_of = |response| match response {
        ShardResponse::Produce(outcomes) => Some(outcomes.into_iter().map(Ok).collect()),
        _ => None,
    };
    let answers = scatter(shard, items, request_for, answers_of).await;
    results.extend(
        answers
            .into_iter()
            .map(|(slot, answer)| (slot, answer.map_err(ProduceError::from).and_then(|a| a))),
    );
    if acks == 0 {
        return None;
    }
    let mut hints = LeaderHints::new(shard, client, version >= LEADER_HINT_VERSION);
    let responses = request
        .topic_data
        .iter()
        .enumerate()
        .map(|(ti, topic)| {
            let partitions = topic
                .partition_data
                .iter()
                .enumerate()
                .map(|(pi, data)| {
                    let response = PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_log_start_offset(-1);
                    match results
                        .remove(&(ti, pi))
                        .unwrap_or(Err(ErrorCode::UnknownServerError.into()))
                    {
                        Ok(o) => response
                            .with_base_offset(o.base_offset.0)
                            .with_log_append_time_ms(o.log_append_time),
                        Err(refused) => {
                            let hint = hints.for_refusal(&topic.name.0, data.index, refused.code);
                            refusal(response, refused, version).with_current_leader(hint)
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(hints.endpoints()),
    )
}

/// Whether `partition` of `topic` has replicas besides its leader (its acks=all produces wait
/// for followers).
fn has_followers(image: &MetadataImage, topic: &str, partition: i32) -> bool {
    image
        .topic(topic)
        .and_then(|meta| meta.partition_states.get(usize::try_from(partition).ok()?))
        .is_some_and(|state| state.replicas.len() > 1)
}

/// A refused partition's response: its code and, from v8, which records were refused and why.
fn refusal(
    response: PartitionProduceResponse,
    refused: ProduceError,
    version: i16,
) -> PartitionProduceResponse {
    let response = response
        .with_error_code(refused.code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1);
    match refused.records {
        Some(records) if version >= RECORD_ERRORS_VERSION => {
            let errors = records
                .errors
                .into_iter()
                .map(|e| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(e.batch_index)
                        .with_batch_index_error_message(Some(StrBytes::from_string(e.message)))
                })
                .collect();
            response
                .with_record_errors(errors)
                .with_error_message(Some(StrBytes::from_string(records.message)))
        }
        _ => response,
    }
}
