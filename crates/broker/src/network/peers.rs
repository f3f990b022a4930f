//! Requests this broker sends other brokers: transaction markers to a partition's leader
//! (WriteTxnMarkers), transaction verification to a transactional id's coordinator
//! (AddPartitionsToTxn v4, KIP-890), ISR changes to the controller (AlterPartition) and, on a
//! replica fetcher's own `Peers`, follower fetches, in Kafka's own protocol over the peer's
//! `inter.broker.listener.name` listener.
//!
//! Each shard keeps its own connections (one per peer broker, opened on first use) and sends one
//! request at a time on each: the control requests are a few per transaction or ISR change, and
//! each replica fetcher has connections of its own (`Peers::for_replication`). A
//! request is bounded in time (`PEER_REQUEST_TIMEOUT_MS`, connecting included) and its answer in
//! size (`PEER_RESPONSE_MAX_BYTES`); any failure drops the connection, and the next request
//! connects again, to wherever the image then says the peer listens.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Request;
use sluice_client::frame::{self, FrameError, RequestId, SIZE_PREFIX_BYTES};

use crate::limits;
use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;

/// Why a request to a peer got no answer.
#[derive(Debug)]
pub enum PeerError {
    /// The image has no live broker with that id listening on the inter-broker listener.
    Unavailable,
    /// Connecting, sending or reading failed, took too long, or the answer did not decode.
    Failed(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Unavailable => f.write_str("no live broker with an inter-broker listener"),
            PeerError::Failed(why) => f.write_str(why),
        }
    }
}

/// One shard's connections to the other brokers.
pub struct Peers {
    /// `inter.broker.listener.name`: which of a peer's registered endpoints to connect to.
    listener: String,
    /// The client id these requests carry: `broker-N`.
    client_id: String,
    connections: RefCell<HashMap<BrokerId, Rc<PeerConnection>>>,
    next_correlation_id: Cell<i32>,
    /// The largest answer read: `PEER_RESPONSE_MAX_BYTES` for the control requests, the fetch
    /// answer's bound for a replica fetcher's own connections.
    response_max_bytes: usize,
}

struct PeerConnection {
    /// One request at a time; waiters queue in order.
    turn: Semaphore,
    /// The open stream and the address it was opened to.
    stream: RefCell<Option<(String, TcpStream)>>,
}

impl Peers {
    pub fn new(listener: &str, node_id: i32) -> Peers {
        Peers::with_response_max(listener, node_id, limits::PEER_RESPONSE_MAX_BYTES)
    }

    /// Connections of their own for a replica fetcher: its fetches wait at the leader for data,
    /// and must not hold up the markers and verifications on the shard's shared connections.
    /// Its answers carry records, up to the bound of any fetch answer.
    pub fn for_replication(listener: &str, node_id: i32) -> Peers {
        Peers::with_response_max(listener, node_id, limits::REPLICA_FETCH_ANSWER_MAX_BYTES)
    }

    fn with_response_max(listener: &str, node_id: i32, response_max_bytes: usize) -> Peers {
        Peers {
            listener: listener.to_string(),
            client_id: format!("broker-{node_id}"),
            connections: RefCell::new(HashMap::new()),
            next_correlation_id: Cell::new(0),
            response_max_bytes,
        }
    }

    /// Sends `body` at `version` to broker `to` and decodes its answer.
    pub async fn call<R: Request>(
        &self,
        image: &MetadataImage,
        to: BrokerId,
        version: i16,
        body: &R,
    ) -> Result<R::Response, PeerError> {
        let api = ApiKey::try_from(R::KEY).expect("every request type has a known API key");
        let address = self.address_of(image, to)?;
        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id
            .set(correlation_id.wrapping_add(1) & i32::MAX);
        let id = RequestId {
            correlation_id,
            client_id: &self.client_id,
        };
        let request = frame::encode_request(api, version, id, body).map_err(failed)?;
        let connection = self.connection(to);
        let _turn = connection
            .turn
            .acquire_permit(1)
            .await
            .map_err(|_| PeerError::Failed("closed".into()))?;
        let taken = connection.stream.borrow_mut().take();
        let open = taken.filter(|(opened_to, _)| *opened_to == address);
        let deadline = Duration::from_millis(limits::PEER_REQUEST_TIMEOUT_MS);
        let exchange = exchange(open, &address, &request, self.response_max_bytes);
        let answered = match glommio::timer::timeout(deadline, async { Ok(exchange.await) }).await {
            Ok(answered) => answered,
            Err(_) => Err(PeerError::Failed(format!(
                "no answer from broker {} at {address} within {deadline:?}",
                to.0
            ))),
        };
        let (stream, frame) = answered?;
        let response =
            frame::decode_response(api, version, correlation_id, frame).map_err(failed)?;
        *connection.stream.borrow_mut() = Some((address, stream));
        Ok(response)
    }

    fn address_of(&self, image: &MetadataImage, to: BrokerId) -> Result<String, PeerError> {
        image
            .brokers
            .get(&to)
            .filter(|broker| !broker.fenced)
            .and_then(|broker| broker.endpoints.iter().find(|e| e.name == self.listener))
            .map(|e| format!("{}:{}", e.host, e.port))
            .ok_or(PeerError::Unavailable)
    }

    fn connection(&self, to: BrokerId) -> Rc<PeerConnection> {
        self.connections
            .borrow_mut()
            .entry(to)
            .or_insert_with(|| {
                Rc::new(PeerConnection {
                    turn: Semaphore::new(1),
                    stream: RefCell::new(None),
                })
            })
            .clone()
    }
}

/// Connects unless `open`, sends `request` and reads one answer frame. The stream comes back
/// only with an answer: a failed exchange leaves nothing to reuse.
async fn exchange(
    open: Option<(String, TcpStream)>,
    address: &str,
    request: &BytesMut,
    response_max_bytes: usize,
) -> Result<(TcpStream, Bytes), PeerError> {
    let mut stream = match open {
        Some((_, stream)) => stream,
        None => {
            let stream = TcpStream::connect(address)
                .await
                .map_err(|e| PeerError::Failed(format!("connecting to {address}: {e}")))?;
            stream.set_nodelay(true).map_err(|e| io_failed(e.into()))?;
            stream
        }
    };
    stream.write_all(request).await.map_err(io_failed)?;
    let mut prefix = [0u8; SIZE_PREFIX_BYTES];
    stream.read_exact(&mut prefix).await.map_err(io_failed)?;
    let len = frame::frame_len(prefix, response_max_bytes).map_err(failed)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(io_failed)?;
    Ok((stream, Bytes::from(body)))
}

fn failed(err: FrameError) -> PeerError {
    PeerError::Failed(err.to_string())
}

fn io_failed(err: std::io::Error) -> PeerError {
    PeerError::Failed(err.to_string())
}
