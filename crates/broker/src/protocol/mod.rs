//! The Kafka wire protocol: frames, request headers, the table of supported API versions, and
//! dispatch to one handler per API (`handlers/`, each declaring its version range beside it).
//!
//! Runs on the shard that owns the connection. Decoding is done with the kafka-protocol crate
//! after the frame size has been bounded by `socket.request.max.bytes`; record batches inside
//! Produce and Fetch stay as raw bytes.

pub mod fetch_frame;
pub mod fetch_sizing;
pub mod handlers;

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::network::request_memory::FrameCharge;
use crate::shard::Shard;
use crate::storage::payload::Payload;

/// One supported API: key, lowest and highest version advertised.
#[derive(Debug, Clone, Copy)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    /// The lowest version actually decoded (old librdkafka needs v0 *advertised*; older
    /// requests than this close the connection).
    pub decodable_from: i16,
}

/// Every API Sluice answers, with the versions it advertises.
pub fn supported_apis() -> Vec<ApiRange> {
    use handlers::*;
    let range = |key, (min, max): (i16, i16)| ApiRange {
        key,
        min,
        max,
        decodable_from: min,
    };
    vec![
        ApiRange {
            key: ApiKey::Produce,
            min: 0,
            max: produce::VERSIONS.1,
            decodable_from: produce::VERSIONS.0,
        },
        range(ApiKey::Fetch, fetch::VERSIONS),
        range(ApiKey::ListOffsets, list_offsets::VERSIONS),
        range(ApiKey::Metadata, metadata::VERSIONS),
        range(
            ApiKey::OffsetForLeaderEpoch,
            offset_for_leader_epoch::VERSIONS,
        ),
        range(ApiKey::ApiVersions, api_versions::VERSIONS),
        range(ApiKey::CreateTopics, create_topics::VERSIONS),
        range(ApiKey::DeleteTopics, delete_topics::VERSIONS),
        range(ApiKey::InitProducerId, init_producer_id::VERSIONS),
        range(ApiKey::DescribeConfigs, describe_configs::VERSIONS),
        range(ApiKey::CreatePartitions, create_partitions::VERSIONS),
        range(ApiKey::DescribeCluster, describe_cluster::VERSIONS),
        range(ApiKey::AlterConfigs, alter_configs::ALTER_VERSIONS),
        range(ApiKey::DeleteRecords, delete_records::VERSIONS),
        range(
            ApiKey::IncrementalAlterConfigs,
            alter_configs::INCREMENTAL_VERSIONS,
        ),
        range(ApiKey::FindCoordinator, find_coordinator::VERSIONS),
        range(ApiKey::JoinGroup, join_group::VERSIONS),
        range(ApiKey::SyncGroup, sync_group::VERSIONS),
        range(ApiKey::Heartbeat, heartbeat::VERSIONS),
        range(ApiKey::LeaveGroup, leave_group::VERSIONS),
        range(ApiKey::OffsetCommit, offset_commit::VERSIONS),
        range(ApiKey::OffsetFetch, offset_fetch::VERSIONS),
        range(ApiKey::DescribeGroups, describe_groups::VERSIONS),
        range(ApiKey::ListGroups, list_groups::VERSIONS),
        range(ApiKey::DeleteGroups, delete_groups::VERSIONS),
        range(ApiKey::OffsetDelete, offset_delete::VERSIONS),
        range(ApiKey::AddPartitionsToTxn, add_partitions_to_txn::VERSIONS),
        range(ApiKey::AddOffsetsToTxn, add_offsets_to_txn::VERSIONS),
        range(ApiKey::EndTxn, end_txn::VERSIONS),
        range(ApiKey::TxnOffsetCommit, txn_offset_commit::VERSIONS),
        range(ApiKey::WriteTxnMarkers, write_txn_markers::VERSIONS),
        range(ApiKey::DescribeLogDirs, describe_log_dirs::VERSIONS),
        range(
            ApiKey::DescribeTopicPartitions,
            describe_topic_partitions::VERSIONS,
        ),
        range(ApiKey::ElectLeaders, elect_leaders::VERSIONS),
        range(ApiKey::AlterPartition, alter_partition::VERSIONS),
        range(
            ApiKey::AlterPartitionReassignments,
            alter_partition_reassignments::VERSIONS,
        ),
        range(
            ApiKey::ListPartitionReassignments,
            list_partition_reassignments::VERSIONS,
        ),
        range(ApiKey::DescribeAcls, describe_acls::VERSIONS),
        range(ApiKey::CreateAcls, create_acls::VERSIONS),
        range(ApiKey::DeleteAcls, delete_acls::VERSIONS),
    ]
}

/// A request read off a connection.
#[derive(Debug)]
pub enum Incoming {
    /// A request this broker can answer.
    Request {
        header: RequestHeader,
        body: Box<RequestKind>,
    },
    /// ApiVersions at a version newer than supported: answered in v0 format with UNSUPPORTED_VERSION.
    ApiVersionsTooNew { correlation_id: i32 },
}

/// Why a frame cannot be served; the connection is closed and the reason logged.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError(pub String);

/// Parses one request frame (the bytes after the 4-byte size).
pub fn parse_request(mut frame: Bytes) -> Result<Incoming, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError(format!(
            "request of {} bytes is too short for a header",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| FrameError(format!("unknown API key {key}")))?;
    let Some(range) = supported_apis().into_iter().find(|r| r.key == api) else {
        return Err(FrameError(format!("unsupported API {api:?} (key {key})")));
    };
    if api == ApiKey::ApiVersions && version > range.max {
        return Ok(Incoming::ApiVersionsTooNew { correlation_id });
    }
    if version < range.decodable_from || version > range.max {
        return Err(FrameError(format!(
            "{api:?} v{version} is outside the supported {}..={}",
            range.decodable_from, range.max
        )));
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| FrameError(format!("{api:?} v{version}: bad request header: {e}")))?;
    let body = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| FrameError(format!("{api:?} v{version}: bad body: {e}")))?;
    Ok(Incoming::Request {
        header,
        body: Box::new(body),
    })
}

/// Serves one request, returning the response frame as chunks to write in order; `None` when no
/// response is due (Produce with acks=0). `listener` names the listener the connection came in on.
pub async fn serve(
    shard: Rc<Shard>,
    incoming: Incoming,
    charge: FrameCharge,
    peer_ip: &str,
    listener: Rc<str>,
) -> Option<Vec<Payload>> {
    match incoming {
        Incoming::ApiVersionsTooNew { correlation_id } => {
            let body =
                ResponseKind::ApiVersions(handlers::api_versions::unsupported_version_response());
            Some(frame(
                correlation_id,
                ApiKey::ApiVersions,
                0,
                handlers::Reply::Message(Box::new(body)),
            ))
        }
        Incoming::Request { header, body } => {
            let version = header.request_api_version;
            let api = ApiKey::try_from(header.request_api_key).ok()?;
            let client = handlers::coordinator::Client {
                client_id: header
                    .client_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                host: format!("/{peer_ip}"),
                listener,
            };
            let started = std::time::Instant::now();
            let reply = handlers::dispatch(&shard, *body, version, &client, charge).await;
            crate::metrics::with(|m| m.request_served(api as i16, started.elapsed()));
            Some(frame(header.correlation_id, api, version, reply?))
        }
    }
}

/// Frames a response: size, header (v0 or v1 by API and version), then the body.
fn frame(correlation_id: i32, api: ApiKey, version: i16, reply: handlers::Reply) -> Vec<Payload> {
    let mut head = BytesMut::with_capacity(256);
    head.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    if let Err(err) = header.encode(&mut head, api.response_header_version(version)) {
        tracing::error!("encoding a {api:?} response header failed: {err}");
        return Vec::new();
    }
    let mut chunks = match reply {
        handlers::Reply::Message(body) => {
            if let Err(err) = body.encode(&mut head, version) {
                // Only reachable through a bug in a handler (a field this version cannot carry).
                tracing::error!("encoding {api:?} v{version} response failed: {err}");
                return Vec::new();
            }
            Vec::new()
        }
        handlers::Reply::Chunks(chunks) => chunks,
    };
    let size = head.len() - 4 + chunks.iter().map(Payload::len).sum::<usize>();
    head[0..4].copy_from_slice(&(size as i32).to_be_bytes());
    chunks.insert(0, Payload::Bytes(head.freeze()));
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    fn frame(api: ApiKey, version: i16, body: impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn well_formed_requests_parse() {
        let parsed =
            parse_request(frame(ApiKey::ApiVersions, 3, ApiVersionsRequest::default())).unwrap();
        assert!(matches!(
            parsed,
            Incoming::Request { ref body, .. } if matches!(**body, RequestKind::ApiVersions(_))
        ));
        let parsed =
            parse_request(frame(ApiKey::Metadata, 12, MetadataRequest::default())).unwrap();
        assert!(matches!(
            parsed,
            Incoming::Request { ref body, .. } if matches!(**body, RequestKind::Metadata(_))
        ));
    }

    #[test]
    fn unknown_or_unsupported_requests_are_refused() {
        assert!(parse_request(Bytes::from_static(&[0, 0])).is_err());
        assert!(
            parse_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])).is_err(),
            "unknown key"
        );
        assert!(
            parse_request(Bytes::from_static(&[0, 50, 0, 0, 0, 0, 0, 1])).is_err(),
            "DescribeUserScramCredentials is not served"
        );
        let too_new = parse_request(Bytes::from_static(&[0, 18, 0, 99, 0, 0, 0, 5])).unwrap();
        assert!(matches!(
            too_new,
            Incoming::ApiVersionsTooNew { correlation_id: 5 }
        ));
    }

    #[test]
    fn truncated_bodies_are_refused_not_panicking() {
        let full = frame(ApiKey::Metadata, 12, MetadataRequest::default());
        for cut in 8..full.len() {
            let _ = parse_request(full.slice(..cut));
        }
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics_on_garbage(key in 0i16..70, version in 0i16..14, body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&key.to_be_bytes());
            bytes.extend_from_slice(&version.to_be_bytes());
            bytes.extend_from_slice(&1i32.to_be_bytes());
            bytes.extend_from_slice(&body);
            let _ = parse_request(Bytes::from(bytes));
        }
    }
}
