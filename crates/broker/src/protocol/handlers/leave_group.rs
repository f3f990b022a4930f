//! LeaveGroup (key 13): members leave at once instead of waiting for their session to expire.
//! v0-2 name one member; v3+ a batch, by member id or static instance id.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(
    shard: &Rc<Shard>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = request.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let codes = if group.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else {
        match coordinator::call(
            shard,
            GroupOp::Leave {
                group,
                members: members.clone(),
            },
        )
        .await
        {
            GroupAnswer::Codes(codes) => codes,
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    };
    let response = LeaveGroupResponse::default();
    match (codes, version >= 3) {
        (Err(code), _) => response.with_error_code(code.code()),
        (Ok(codes), false) => {
            response.with_error_code(codes.first().copied().unwrap_or(ErrorCode::None).code())
        }
        (Ok(codes), true) => response.with_members(
            members
                .into_iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(instance.map(StrBytes::from_string))
                        .with_error_code(code.code())
                })
                .collect(),
        ),
    }
}
