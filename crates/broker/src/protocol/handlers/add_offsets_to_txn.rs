//! AddOffsetsToTxn (key 25): adds the group's `__consumer_offsets` partition to the producer's
//! transaction, so TxnOffsetCommit may write there and the transaction's marker settles it.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::coordinator;
use super::find_coordinator::ensure_internal_topic;
use crate::error::ErrorCode;
use crate::group::records::OFFSETS_TOPIC;
use crate::shard::Shard;
use crate::txn::{TxnAnswer, TxnOp};
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let response = AddOffsetsToTxnResponse::default();
    if request.group_id.is_empty() {
        return response.with_error_code(ErrorCode::InvalidGroupId.code());
    }
    let ensured = ensure_internal_topic(shard, OFFSETS_TOPIC).await;
    if ensured != ErrorCode::None {
        return response.with_error_code(ensured.code());
    }
    let code = match crate::group::coordinator_of(shard, &request.group_id) {
        Err(code) => code,
        Ok((_, partition)) => {
            let op = TxnOp::AddPartitions {
                txn_id: request.transactional_id.to_string(),
                producer: ProducerId(request.producer_id.0),
                epoch: ProducerEpoch(request.producer_epoch),
                partitions: vec![TopicPartition::new(OFFSETS_TOPIC, partition)],
            };
            match coordinator::call_txn(shard, op).await {
                TxnAnswer::Code(code) => code,
                TxnAnswer::Producer(_) | TxnAnswer::Verified(_) => ErrorCode::UnknownServerError,
            }
        }
    };
    response.with_error_code(code.code())
}
