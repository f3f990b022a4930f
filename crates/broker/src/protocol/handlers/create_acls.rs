//! CreateAcls (key 30): without an authorizer every creation fails with SECURITY_DISABLED, one
//! result per requested ACL, as Kafka does.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;

use super::describe_acls::NO_AUTHORIZER;
use crate::error::ErrorCode;

pub const VERSIONS: (i16, i16) = (1, 3);

pub fn handle(request: CreateAclsRequest) -> CreateAclsResponse {
    let refused = AclCreationResult::default()
        .with_error_code(ErrorCode::SecurityDisabled.code())
        .with_error_message(Some(StrBytes::from_static_str(NO_AUTHORIZER)));
    CreateAclsResponse::default().with_results(vec![refused; request.creations.len()])
}
