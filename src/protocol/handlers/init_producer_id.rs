//! InitProducerId (key 22): hands idempotent producers a fresh producer id at epoch 0. Ids come
//! from the controller on shard 0, which reserves them in blocks in the metadata file so they stay
//! unique across restarts.

use std::rc::Rc;

use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};

use crate::error::ErrorCode;
use crate::shard::controller::{ControllerRequest, ControllerResponse};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        log::warn!("InitProducerId with a transactional.id: transactions are not supported yet");
        return response.with_error_code(ErrorCode::InvalidRequest.code());
    }
    // Without a transactional id Kafka always hands out a fresh producer id at epoch 0, even
    // when the client presents its old one (KIP-360): the new id starts with no sequence history.
    let answer = shard
        .call(
            ShardId(0),
            ShardRequest::Controller(ControllerRequest::AllocateProducerId),
        )
        .await;
    match answer {
        ShardResponse::Controller(ControllerResponse::ProducerId(Ok(id))) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        ShardResponse::Controller(ControllerResponse::ProducerId(Err(code))) => {
            response.with_error_code(code.code())
        }
        _ => response.with_error_code(ErrorCode::NotLeaderOrFollower.code()),
    }
}
