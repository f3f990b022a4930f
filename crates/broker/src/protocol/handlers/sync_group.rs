//! SyncGroup (key 14): the leader hands in the assignment it computed (the broker never decodes
//! it, so every assignor works); every member gets its own part once the group is persisted.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::state::SyncResponse;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(
    shard: &Rc<Shard>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = request.group_id.to_string();
    let answer = if group.is_empty() {
        SyncResponse::error(ErrorCode::InvalidGroupId)
    } else {
        let op = GroupOp::Sync {
            group,
            generation: request.generation_id,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|s| s.to_string()),
            protocol_type: request.protocol_type.map(|s| s.to_string()),
            protocol_name: request.protocol_name.map(|s| s.to_string()),
            assignments: request
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), a.assignment))
                .collect(),
        };
        match coordinator::call(shard, op).await {
            GroupAnswer::Sync(r) => r,
            _ => SyncResponse::error(ErrorCode::CoordinatorNotAvailable),
        }
    };
    let response = SyncGroupResponse::default()
        .with_error_code(answer.error.code())
        .with_assignment(answer.assignment);
    if version >= 5 {
        response
            .with_protocol_type(answer.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(answer.protocol_name.map(StrBytes::from_string))
    } else {
        response
    }
}
