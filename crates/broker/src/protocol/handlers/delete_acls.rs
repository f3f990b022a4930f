//! DeleteAcls (key 31): without an authorizer every filter fails with SECURITY_DISABLED, one
//! result per filter, as Kafka does.

use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_acls::NO_AUTHORIZER;
use crate::error::ErrorCode;

pub const VERSIONS: (i16, i16) = (1, 3);

pub fn handle(request: DeleteAclsRequest) -> DeleteAclsResponse {
    let refused = DeleteAclsFilterResult::default()
        .with_error_code(ErrorCode::SecurityDisabled.code())
        .with_error_message(Some(StrBytes::from_static_str(NO_AUTHORIZER)));
    DeleteAclsResponse::default().with_filter_results(vec![refused; request.filters.len()])
}
