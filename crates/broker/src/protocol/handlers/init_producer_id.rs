//! InitProducerId (key 22): hands idempotent producers a fresh producer id at epoch 0. Ids come
//! from the controller on shard 0, which reserves them in blocks in the metadata file so they stay
//! unique across restarts. With a transactional id, the transaction coordinator answers: the id's
//! producer id with a bumped epoch (fencing older instances, aborting their open transaction).

use std::rc::Rc;

use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};

use super::coordinator;
use crate::error::ErrorCode;
use crate::shard::Shard;
use crate::txn::{TxnAnswer, TxnOp};
use crate::types::{ProducerEpoch, ProducerId as TxnProducerId};

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(txn_id) = request.transactional_id {
        let presented = (request.producer_id.0 >= 0).then_some((
            TxnProducerId(request.producer_id.0),
            ProducerEpoch(request.producer_epoch),
        ));
        let op = TxnOp::InitProducerId {
            txn_id: txn_id.to_string(),
            timeout_ms: request.transaction_timeout_ms,
            presented,
        };
        return match coordinator::call_txn(shard, op).await {
            TxnAnswer::Producer(Ok((id, epoch))) => response
                .with_producer_id(ProducerId(id.0))
                .with_producer_epoch(epoch.0),
            TxnAnswer::Producer(Err(code)) | TxnAnswer::Code(code) => {
                response.with_error_code(code.code())
            }
            TxnAnswer::Verified(_) => {
                response.with_error_code(ErrorCode::UnknownServerError.code())
            }
        };
    }
    // Without a transactional id Kafka always hands out a fresh producer id at epoch 0, even
    // when the client presents its old one (KIP-360): the new id starts with no sequence history.
    match shard.allocate_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id.0))
            .with_producer_epoch(0),
        Err(code) => response.with_error_code(code.code()),
    }
}
