//! AddPartitionsToTxn (key 24, the client versions 0-3): adds partitions to the producer's open
//! transaction (starting it if needed) and lets the producer write transactional batches there.
//! v4+ is broker-to-broker and not advertised.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::coordinator;
use super::scatter::known;
use crate::error::ErrorCode;
use crate::metadata::is_internal_topic;
use crate::shard::Shard;
use crate::txn::{TxnAnswer, TxnOp};
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

pub const VERSIONS: (i16, i16) = (0, 3);

pub async fn handle(
    shard: &Rc<Shard>,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
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
            TxnAnswer::Producer(_) => ErrorCode::UnknownServerError,
        }
    };
    let results = topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = if any_unknown && unknown(&t.name, *p) {
                                ErrorCode::UnknownTopicOrPartition
                            } else {
                                code
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
