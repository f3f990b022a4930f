//! InitProducerId (key 22): hands idempotent producers a fresh producer id (epoch 0), or bumps
//! the epoch of an id the producer already holds (KIP-360). Ids come from the controller on
//! shard 0, which reserves them in blocks in the metadata file so they stay unique across restarts.

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
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
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
