//! AddPartitionsToTxn (key 24): v0-3, from clients, add partitions to the producer's open
//! transaction (starting it if needed). v4+ (KIP-890) is what brokers send one another, several
//! transactions a request: a partition leader asks with `verify_only` whether a transaction
//! includes its partition before letting it start there (`txn::verify`).

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::coordinator;
use super::scatter::known;
use crate::error::ErrorCode;
use crate::metadata::is_internal_topic;
use crate::shard::Shard;
use crate::txn::{TxnAnswer, TxnOp};
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

pub const VERSIONS: (i16, i16) = (0, 5);

/// The first version with several transactions a request, sent by brokers.
const BROKER_VERSION: i16 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version >= BROKER_VERSION {
        return handle_from_broker(shard, request).await;
    }
    let image = shard.image();
    let topics = &request.v3_and_below_topics;
    let unknown = |name: &str, p: i32| !known(&image, name, p) || is_internal_topic(name);
    let any_unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| unknown(&t.name, *p)));
    let code = if any_unknown {
        // Kafka adds nothing when any partition is unknown.
        ErrorCode::OperationNotAttempted
    } else {
        let op = TxnOp::AddPartitions {
            txn_id: request.v3_and_below_transactional_id.to_string(),
            producer: ProducerId(request.v3_and_below_producer_id.0),
            epoch: ProducerEpoch(request.v3_and_below_producer_epoch),
            partitions: topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| TopicPartition::new(t.name.to_string(), *p))
                })
                .collect(),
        };
        match coordinator::call_txn(shard, op).await {
            TxnAnswer::Code(code) => code,
            TxnAnswer::Producer(_) | TxnAnswer::Verified(_) => ErrorCode::UnknownServerError,
        }
    };
    let results = topic_results(topics, |name, p| {
        if any_unknown && unknown(name, p) {
            ErrorCode::UnknownTopicOrPartition
        } else {
            code
        }
    });
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// Each topic's partitions with the code `code_of(topic, partition)` gives, in request order.
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    mut code_of: impl FnMut(&str, i32) -> ErrorCode,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code_of(&t.name, *p).code())
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect()
}

/// v4+: each transaction verified (`verify_only`) or added, with a code per partition.
async fn handle_from_broker(
    shard: &Rc<Shard>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in request.transactions {
        let partitions: Vec<TopicPartition> = transaction
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| TopicPartition::new(t.name.to_string(), *p))
            })
            .collect();
        let txn_id = transaction.transactional_id.to_string();
        let producer = ProducerId(transaction.producer_id.0);
        let epoch = ProducerEpoch(transaction.producer_epoch);
        let codes = if transaction.verify_only {
            let op = TxnOp::Verify {
                txn_id,
                producer,
                epoch,
                partitions: partitions.clone(),
            };
            match coordinator::call_txn(shard, op).await {
                TxnAnswer::Verified(codes) => codes,
                TxnAnswer::Code(code) => vec![code; partitions.len()],
                TxnAnswer::Producer(_) => vec![ErrorCode::UnknownServerError; partitions.len()],
            }
        } else {
            let op = TxnOp::AddPartitions {
                txn_id,
                producer,
                epoch,
                partitions: partitions.clone(),
            };
            let code = match coordinator::call_txn(shard, op).await {
                TxnAnswer::Code(code) => code,
                _ => ErrorCode::UnknownServerError,
            };
            vec![code; partitions.len()]
        };
        let mut codes = codes.into_iter();
        let topics = topic_results(&transaction.topics, |_, _| {
            codes.next().unwrap_or(ErrorCode::UnknownServerError)
        });
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transaction.transactional_id)
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}
