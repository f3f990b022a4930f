//! DescribeAcls (key 29): Sluice has no authorizer, so like a Kafka broker without
//! `authorizer.class.name` it answers SECURITY_DISABLED. Clients treat that as "no ACLs to manage":
//! MirrorMaker 2 stops syncing topic ACLs, `kafka-acls --list` reports the cause.

use kafka_protocol::messages::DescribeAclsResponse;
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;

pub const VERSIONS: (i16, i16) = (1, 3);

/// The message Kafka gives with SECURITY_DISABLED for every ACL API.
pub const NO_AUTHORIZER: &str = "No Authorizer is configured.";

pub fn handle() -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(ErrorCode::SecurityDisabled.code())
        .with_error_message(Some(StrBytes::from_static_str(NO_AUTHORIZER)))
}
