//! One blocking connection to a broker over `frame`: a request out, its response back, one at a
//! time. The admin CLI builds its cluster client on it; tests use it to send hand-made requests.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::frame::{self, FrameError, RequestId, SIZE_PREFIX_BYTES};

/// A TCP connection with its next correlation id and a bound on the responses it reads.
pub struct Connection {
    stream: TcpStream,
    client_id: String,
    correlation_id: i32,
    response_max_bytes: usize,
}

impl Connection {
    /// Wraps a connected stream; responses above `response_max_bytes` are refused unread.
    pub fn new(stream: TcpStream, client_id: &str, response_max_bytes: usize) -> Connection {
        Connection {
            stream,
            client_id: client_id.to_string(),
            correlation_id: 0,
            response_max_bytes,
        }
    }

    /// The socket, for timeouts and raw writes.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends `body` as `version` of `api` and waits for its decoded response.
    pub fn call<R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> Result<R, FrameError> {
        let sent = self.send(api, version, body)?;
        let response = self.read_frame()?;
        frame::decode_response(api, version, sent, response)
    }

    /// Sends one request and returns its correlation id, without waiting for the answer.
    pub fn send(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> Result<i32, FrameError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let id = RequestId {
            correlation_id: self.correlation_id,
            client_id: &self.client_id,
        };
        // One write: a separate size write would meet Nagle and delayed ACKs (40 ms a call).
        let request = frame::encode_request(api, version, id, body)?;
        self.stream.write_all(&request)?;
        Ok(self.correlation_id)
    }

    /// Reads the next response frame whole (the bytes after its size prefix).
    pub fn read_frame(&mut self) -> Result<Bytes, FrameError> {
        read_frame(&mut self.stream, self.response_max_bytes)
    }
}

/// Reads one frame whole from `stream` (the bytes after its size prefix), refusing one whose
/// size is above `max_bytes` before allocating for it.
pub fn read_frame(stream: &mut impl Read, max_bytes: usize) -> Result<Bytes, FrameError> {
    let mut prefix = [0u8; SIZE_PREFIX_BYTES];
    stream.read_exact(&mut prefix)?;
    let len = frame::frame_len(prefix, max_bytes)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(Bytes::from(body))
}
