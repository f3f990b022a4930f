//! ApiVersions (key 18): the version ranges this broker speaks. A request newer than v4 gets the
//! v0-format answer with UNSUPPORTED_VERSION and the ranges, so the client can retry lower.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use crate::error::ErrorCode;
use crate::protocol::supported_apis;

pub const VERSIONS: (i16, i16) = (0, 4);

fn ranges() -> Vec<ApiVersion> {
    supported_apis()
        .into_iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

pub fn handle(_version: i16) -> ApiVersionsResponse {
    // Fields left at their defaults (features, epoch) are omitted from the flexible encoding,
    // as Kafka does; librdkafka < 2.2 misreads them otherwise.
    ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(ranges())
}

pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ErrorCode::UnsupportedVersion.code())
        .with_api_keys(ranges())
}
