//! DescribeGroups (key 15): state, protocol, members (and, when Stable, their metadata and
//! assignments). An unknown group is reported as Dead, as Kafka does before v6.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::coordinator;
use crate::error::ErrorCode;
use crate::group::{GroupAnswer, GroupOp};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 5);

pub async fn handle(
    shard: &Rc<Shard>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let text = StrBytes::from_string;
    let mut groups = Vec::new();
    for group_id in request.groups {
        let described = DescribedGroup::default().with_group_id(group_id.clone());
        let op = GroupOp::Describe {
            group: group_id.to_string(),
        };
        let summary = match coordinator::call(shard, op).await {
            GroupAnswer::Describe(summary) => summary,
            _ => {
                groups.push(described.with_error_code(ErrorCode::CoordinatorNotAvailable.code()));
                continue;
            }
        };
        let members = summary
            .members
            .into_iter()
            .map(|m| {
                let member = DescribedGroupMember::default()
                    .with_member_id(text(m.member_id))
                    .with_client_id(text(m.client_id))
                    .with_client_host(text(m.client_host))
                    .with_member_metadata(m.subscription)
                    .with_member_assignment(m.assignment);
                if version >= 4 {
                    member.with_group_instance_id(m.instance_id.map(text))
                } else {
                    member
                }
            })
            .collect();
        groups.push(
            described
                .with_group_state(text(summary.state.name().to_string()))
                .with_protocol_type(text(summary.protocol_type))
                .with_protocol_data(text(summary.protocol_name))
                .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
