//! EndTxn (key 26): commits or aborts the producer's transaction. Answered once the markers are
//! committed (below the high watermark) on every partition of the transaction.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::coordinator;
use crate::error::ErrorCode;
use crate::shard::Shard;
use crate::txn::{TxnAnswer, TxnOp};
use crate::types::{ProducerEpoch, ProducerId};

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, request: EndTxnRequest) -> EndTxnResponse {
    let op = TxnOp::EndTxn {
        txn_id: request.transactional_id.to_string(),
        producer: ProducerId(request.producer_id.0),
        epoch: ProducerEpoch(request.producer_epoch),
        commit: request.committed,
    };
    let code = match coordinator::call_txn(shard, op).await {
        TxnAnswer::Code(code) => code,
        TxnAnswer::Producer(_) | TxnAnswer::Verified(_) => ErrorCode::UnknownServerError,
    };
    EndTxnResponse::default().with_error_code(code.code())
}
