//! DeleteGroups (key 42): removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`). A group with members gets NON_EMPTY_GROUP.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 2);

pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in request.groups_names {
        let code = if group_id.is_empty() {
            ErrorCode::InvalidGroupId
        } else {
            let op = GroupOp::Delete {
                group: group_id.to_string(),
            };
            match coordinator::call(shard, op).await {
                GroupAnswer::Code(code) => code,
                _ => ErrorCode::CoordinatorNotAvailable,
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
