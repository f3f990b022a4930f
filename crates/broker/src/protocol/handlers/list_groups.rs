//! ListGroups (key 16): every group on every shard, filtered by state (v4+) and type (v5+; all
//! of Sluice's groups are "classic").

use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub const VERSIONS: (i16, i16) = (0, 5);

const GROUP_TYPE: &str = "classic";

pub async fn handle(
    shard: &Rc<Shard>,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let calls =
        (0..shard.count).map(|to| shard.call(ShardId(to), ShardRequest::Group(GroupOp::List)));
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let mut error = ErrorCode::None;
    let mut groups = Vec::new();
    for answer in join_all(calls).await {
        let listed = match answer {
            ShardResponse::Group(GroupAnswer::List(Ok(listed))) => listed,
            ShardResponse::Group(GroupAnswer::List(Err(code))) => {
                error = code;
                continue;
            }
            _ => {
                error = ErrorCode::CoordinatorNotAvailable;
                continue;
            }
        };
        for (id, protocol_type, state) in listed {
            if !wanted(&request.states_filter, state.name())
                || !wanted(&request.types_filter, GROUP_TYPE)
            {
                continue;
            }
            let group = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            let group = if version >= 4 {
                group.with_group_state(StrBytes::from_string(state.name().to_string()))
            } else {
                group
            };
            groups.push(if version >= 5 {
                group.with_group_type(StrBytes::from_static_str(GROUP_TYPE))
            } else {
                group
            });
        }
    }
    ListGroupsResponse::default()
        .with_error_code(error.code())
        .with_groups(groups)
}
