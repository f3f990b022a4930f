//! JoinGroup (key 11): a member joins (or rejoins) a classic group and waits for the rebalance
//! to complete. v4+ hands unknown members their id first (MEMBER_ID_REQUIRED); v5+ carries the
//! static group.instance.id; v9 lets a static leader skip the assignment.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::{self, Client};
use crate::error::ErrorCode;
use crate::group::state::{JoinRequest, JoinResponse};
use crate::group::{GroupAnswer, GroupOp};
use crate::limits;
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 9);

pub async fn handle(
    shard: &Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> JoinGroupResponse {
    let group = request.group_id.to_string();
    let member_id = request.member_id.to_string();
    let metadata_bytes: usize = request.protocols.iter().map(|p| p.metadata.len()).sum();
    let answer = if group.is_empty() {
        JoinResponse::error(ErrorCode::InvalidGroupId, &member_id)
    } else if metadata_bytes > limits::GROUP_MEMBER_METADATA_MAX_BYTES {
        tracing::warn!(
            "JoinGroup {group}: {metadata_bytes} bytes of protocol metadata is over the {} limit",
            limits::GROUP_MEMBER_METADATA_MAX_BYTES
        );
        JoinResponse::error(ErrorCode::InvalidRequest, &member_id)
    } else {
        let join = JoinRequest {
            member_id: member_id.clone(),
            instance_id: request.group_instance_id.map(|s| s.to_string()),
            client_id: client.client_id.clone(),
            client_host: client.host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 {
                request.rebalance_timeout_ms
            } else {
                request.session_timeout_ms
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
        };
        match coordinator::call(
            shard,
            GroupOp::Join {
                group,
                request: join,
            },
        )
        .await
        {
            GroupAnswer::Join(r) => r,
            _ => JoinResponse::error(ErrorCode::CoordinatorNotAvailable, &member_id),
        }
    };
    encode(answer, version)
}

fn encode(answer: JoinResponse, version: i16) -> JoinGroupResponse {
    let text = |s: String| StrBytes::from_string(s);
    let members = answer
        .members
        .into_iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(text(m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                member.with_group_instance_id(m.instance_id.map(text))
            } else {
                member
            }
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(answer.error.code())
        .with_generation_id(answer.generation)
        .with_leader(text(answer.leader))
        .with_member_id(text(answer.member_id))
        .with_members(members);
    if version >= 7 {
        response
            .with_protocol_type(answer.protocol_type.map(text))
            .with_protocol_name(answer.protocol_name.map(text))
            .with_skip_assignment(version >= 9 && answer.skip_assignment)
    } else {
        // Before v7 the protocol name is not nullable.
        response.with_protocol_name(Some(text(answer.protocol_name.unwrap_or_default())))
    }
}
