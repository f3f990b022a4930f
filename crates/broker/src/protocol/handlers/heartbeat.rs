//! Heartbeat (key 12): keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS).

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 4);

pub async fn handle(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.to_string();
    let code = if group.is_empty() {
        ErrorCode::InvalidGroupId
    } else {
        let op = GroupOp::Heartbeat {
            group,
            generation: request.generation_id,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|s| s.to_string()),
        };
        match coordinator::call(shard, op).await {
            GroupAnswer::Code(code) => code,
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    };
    HeartbeatResponse::default().with_error_code(code.code())
}
