//! Kafka request and response frames, without I/O: a caller encodes a request into bytes it
//! sends however it likes, and hands back the bytes of a response frame to decode.
//!
//! A frame is a 4-byte big-endian size, then the header, then the body. Requests carry the API
//! key, version, correlation id and client id in their header; a response carries only the
//! correlation id, so the caller must remember which API and version it asked with.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Bytes of the size prefix in front of every frame.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Why a frame could not be built or read.
#[derive(Debug)]
pub enum FrameError {
    /// The request's fields do not fit the version asked for (kafka-protocol refused them).
    Encode(String),
    /// The request is larger than a frame's i32 size can say.
    TooLarge(usize),
    /// A response's size prefix is negative or above the caller's bound.
    SizeOutOfBounds { size: i32, max_bytes: usize },
    /// The response answers another request.
    CorrelationMismatch { sent: i32, received: i32 },
    /// The response does not decode as the API and version asked for.
    Decode(String),
    /// The response decoded with bytes left over: it was not the answer expected.
    TrailingBytes(usize),
    /// The connection failed or closed.
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Encode(why) => write!(f, "encoding a request: {why}"),
            FrameError::TooLarge(len) => write!(f, "a request of {len} bytes is too large"),
            FrameError::SizeOutOfBounds { size, max_bytes } => {
                write!(f, "a response frame of {size} bytes (at most {max_bytes})")
            }
            FrameError::CorrelationMismatch { sent, received } => {
                write!(
                    f,
                    "response correlation id {received} does not match request {sent}"
                )
            }
            FrameError::Decode(why) => write!(f, "decoding a response: {why}"),
            FrameError::TrailingBytes(left) => write!(f, "{left} bytes left after a response"),
            FrameError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(err: std::io::Error) -> FrameError {
        FrameError::Io(err)
    }
}

/// Who a request says it is from, and which request of the connection it is.
#[derive(Debug, Clone, Copy)]
pub struct RequestId<'a> {
    pub correlation_id: i32,
    pub client_id: &'a str,
}

/// A whole request frame (size prefix included) for `body` at `version` of `api`.
pub fn encode_request(
    api: ApiKey,
    version: i16,
    id: RequestId<'_>,
    body: &impl Encodable,
) -> Result<BytesMut, FrameError> {
    let mut frame = BytesMut::from(&[0u8; SIZE_PREFIX_BYTES][..]);
    encode_request_header(api, version, id, &mut frame)?;
    body.encode(&mut frame, version)
        .map_err(|e| FrameError::Encode(format!("{api:?} v{version}: {e}")))?;
    let len = frame.len() - SIZE_PREFIX_BYTES;
    let size = i32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    frame[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Appends the header of a request for `version` of `api` to `buf` (for callers that build a
/// frame's body themselves, such as the fuzz targets' seeds).
pub fn encode_request_header(
    api: ApiKey,
    version: i16,
    id: RequestId<'_>,
    buf: &mut BytesMut,
) -> Result<(), FrameError> {
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(id.correlation_id)
        .with_client_id(Some(StrBytes::from_string(id.client_id.to_string())))
        .encode(buf, api.request_header_version(version))
        .map_err(|e| FrameError::Encode(e.to_string()))
}

/// The length of the frame a size prefix announces, refused when negative or above `max_bytes`.
pub fn frame_len(prefix: [u8; SIZE_PREFIX_BYTES], max_bytes: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    usize::try_from(size)
        .ok()
        .filter(|len| *len <= max_bytes)
        .ok_or(FrameError::SizeOutOfBounds { size, max_bytes })
}

/// Decodes a response frame (the bytes after its size prefix) to the request `sent` with
/// `version` of `api`: the correlation id must match and no bytes may be left over.
pub fn decode_response<R: Decodable>(
    api: ApiKey,
    version: i16,
    sent: i32,
    mut frame: Bytes,
) -> Result<R, FrameError> {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| FrameError::Decode(format!("{api:?} v{version} header: {e}")))?;
    if header.correlation_id != sent {
        return Err(FrameError::CorrelationMismatch {
            sent,
            received: header.correlation_id,
        });
    }
    let body = R::decode(&mut frame, version)
        .map_err(|e| FrameError::Decode(format!("{api:?} v{version}: {e}")))?;
    if frame.has_remaining() {
        return Err(FrameError::TrailingBytes(frame.remaining()));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

    #[test]
    fn a_request_frame_announces_its_own_length() {
        let id = RequestId {
            correlation_id: 7,
            client_id: "t",
        };
        let frame =
            encode_request(ApiKey::ApiVersions, 3, id, &ApiVersionsRequest::default()).unwrap();
        let prefix: [u8; 4] = frame[..4].try_into().unwrap();
        assert_eq!(frame_len(prefix, usize::MAX).unwrap(), frame.len() - 4);
        assert_eq!(&frame[4..6], &(ApiKey::ApiVersions as i16).to_be_bytes());
        assert_eq!(&frame[6..8], &3i16.to_be_bytes());
        assert_eq!(&frame[8..12], &7i32.to_be_bytes());
    }

    #[test]
    fn sizes_out_of_bounds_are_refused() {
        assert!(frame_len((-1i32).to_be_bytes(), 100).is_err());
        assert!(frame_len(101i32.to_be_bytes(), 100).is_err());
        assert_eq!(frame_len(100i32.to_be_bytes(), 100).unwrap(), 100);
    }

    fn api_versions_response(correlation_id: i32, extra: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, 0)
            .unwrap();
        ApiVersionsResponse::default().encode(&mut buf, 0).unwrap();
        buf.extend_from_slice(extra);
        buf.freeze()
    }

    #[test]
    fn a_response_to_another_request_or_with_bytes_left_is_refused() {
        let ok = api_versions_response(5, &[]);
        decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, 0, 5, ok).unwrap();
        let other = api_versions_response(6, &[]);
        assert!(matches!(
            decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, 0, 5, other),
            Err(FrameError::CorrelationMismatch { .. })
        ));
        let long = api_versions_response(5, &[1, 2]);
        assert!(matches!(
            decode_response::<ApiVersionsResponse>(ApiKey::ApiVersions, 0, 5, long),
            Err(FrameError::TrailingBytes(2))
        ));
    }
}
