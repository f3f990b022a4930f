//! Produce (key 0): validates each partition's batches, routes them to the owning shards, and
//! answers once they are durable (acks=1 and acks=all; one broker means the two are the same).
//! acks=0 gets no response at all. Advertised from v0 for old librdkafka's feature checks;
//! versions below 3 (message formats 0 and 1) are refused.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::ProduceRequest;

use super::scatter::{known, scatter, Slot};
use crate::error::ErrorCode;
use crate::metadata::is_internal_topic;
use crate::partition::ProduceOutcome;
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::TopicPartition;

pub const VERSIONS: (i16, i16) = (3, 11);

pub async fn handle(
    shard: &Rc<Shard>,
    request: ProduceRequest,
    _version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let image = shard.image();
    let mut results: HashMap<Slot, Result<ProduceOutcome, ErrorCode>> = HashMap::new();
    let mut items = Vec::new();
    for (ti, topic) in request.topic_data.iter().enumerate() {
        let name = topic.name.0.as_str();
        for (pi, data) in topic.partition_data.iter().enumerate() {
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
                Some(code) => drop(results.insert((ti, pi), Err(code))),
                None => items.push((
                    (ti, pi),
                    TopicPartition::new(name, data.index),
                    data.records.clone().unwrap_or_default(),
                )),
            }
        }
    }
    let request_for = |items| ShardRequest::Produce { acks, items };
    let answers_of = |response| match response {
        ShardResponse::Produce(outcomes) => Some(outcomes),
        _ => None,
    };
    results.extend(scatter(shard, items, request_for, answers_of).await);
    if acks == 0 {
        return None;
    }
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
                        .unwrap_or(Err(ErrorCode::UnknownServerError))
                    {
                        Ok(o) => response
                            .with_base_offset(o.base_offset.0)
                            .with_log_append_time_ms(o.log_append_time),
                        Err(code) => response
                            .with_error_code(code.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}
