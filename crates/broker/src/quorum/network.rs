//! The controllers' transport: Raft messages between quorum members over TCP, on each member's
//! controller listener.
//!
//! A frame is a 4-byte big-endian length and a `codec` message. A connection carries one request
//! at a time and its answer; openraft opens separate connections for heartbeats and snapshots,
//! so a snapshot never holds up a heartbeat. Bounds: a frame is at most `QUORUM_FRAME_MAX_BYTES`
//! and its buffer grows only as its bytes arrive; once a frame has begun it must arrive within
//! `QUORUM_FRAME_RECEIVE_TIMEOUT_MS`; a member accepts at most `QUORUM_PEER_CONNECTIONS_MAX`
//! connections. A peer that sends a bad frame is logged and disconnected, never answered with a
//! guess. Runs on the shard that runs the Raft core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{AsyncRuntime, BasicNode, Raft, RaftNetworkFactory, RaftNetworkV2};

use super::codec::{self, BrokerHeartbeat, DecodeError, QuorumMessage};
use super::heartbeats::Heartbeats;
use super::runtime::GlommioRuntime;
use super::types::QuorumTypes as Q;
use crate::limits;
use crate::metadata::records::BrokerId;
use crate::metadata::{self, MetadataImage};

/// Connects to the members at the addresses their membership entries name, and tells the
/// leader's `Heartbeats` of each connection a member refuses (its process is gone).
#[derive(Debug, Clone)]
pub struct QuorumNetwork {
    pub heartbeats: Rc<RefCell<Heartbeats>>,
}

impl RaftNetworkFactory<Q> for QuorumNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            stream: None,
            refusals: Some(self.heartbeats.clone()),
        }
    }
}

/// One connection to one member, opened on first use and again after any failure.
pub struct PeerConnection {
    target: u64,
    addr: String,
    stream: Option<TcpStream>,
    /// Where a refused connection is noted (the Raft core's connections to its peers).
    refusals: Option<Rc<RefCell<Heartbeats>>>,
}

fn invalid(err: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    if payload.len() > limits::QUORUM_FRAME_MAX_BYTES {
        return Err(invalid(format!(
            "a quorum message of {} bytes, over {}",
            payload.len(),
            limits::QUORUM_FRAME_MAX_BYTES
        )));
    }
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(payload).await?;
    stream.flush().await
}

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
async fn read_frame(stream: &mut TcpStream) -> io::Result<Option<Bytes>> {
    let mut size = [0u8; 4];
    if stream.read(&mut size[..1]).await? == 0 {
        return Ok(None);
    }
    let rest = async {
        stream.read_exact(&mut size[1..]).await?;
        let len = u32::from_be_bytes(size) as usize;
        if len > limits::QUORUM_FRAME_MAX_BYTES {
            return Err(invalid(format!(
                "a quorum frame of {len} bytes, over {}",
                limits::QUORUM_FRAME_MAX_BYTES
            )));
        }
        // Grows with the bytes received: a peer that announces a large frame and stalls holds
        // only what it sent.
        let mut body = Vec::new();
        (&mut *stream)
            .take(len as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "frame cut short",
            ));
        }
        Ok(Bytes::from(body))
    };
    let deadline = Duration::from_millis(limits::QUORUM_FRAME_RECEIVE_TIMEOUT_MS);
    match GlommioRuntime::timeout(deadline, rest).await {
        Ok(frame) => frame.map(Some),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "frame not received in time",
        )),
    }
}

impl PeerConnection {
    /// Sends `request` and reads the answer within `ttl`; any failure drops the connection.
    async fn call(&mut self, request: QuorumMessage, ttl: Duration) -> io::Result<QuorumMessage> {
        let bytes = codec::encode(&request);
        let addr = self.addr.clone();
        let (target, refusals) = (self.target, &self.refusals);
        let stream = &mut self.stream;
        let exchange = async move {
            if stream.is_none() {
                let connected = TcpStream::connect(addr.as_str());
                let connected = connected
                    .await
                    .map_err(io::Error::from)
                    .inspect_err(|err| {
                        if err.kind() == io::ErrorKind::ConnectionRefused {
                            if let Some(heartbeats) = refusals {
                                let broker = BrokerId(target as i32);
                                heartbeats.borrow_mut().refused(broker, Instant::now());
                            }
                        }
                    })?;
                connected.set_nodelay(true)?;
                *stream = Some(connected);
            }
            let connection = stream.as_mut().expect("connected above");
            write_frame(connection, &bytes).await?;
            let answer = read_frame(connection)
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))?;
            codec::decode(&answer).map_err(invalid)
        };
        let result = match GlommioRuntime::timeout(ttl, exchange).await {
            Ok(answered) => answered,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn unreachable(&self, err: io::Error) -> Unreachable<Q> {
        Unreachable::new(&io::Error::new(
            err.kind(),
            format!("quorum member {} at {}: {err}", self.target, self.addr),
        ))
    }
}

fn wrong_answer(answer: QuorumMessage) -> NetworkError<Q> {
    NetworkError::new(&DecodeError(format!("unexpected answer {answer:?}")))
}

impl RaftNetworkV2<Q> for PeerConnection {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Q>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Q>, RPCError<Q>> {
        match self
            .call(QuorumMessage::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(QuorumMessage::AppendEntriesAnswer(answer)) => Ok(answer),
            Ok(other) => Err(RPCError::Network(wrong_answer(other))),
            Err(err) => Err(RPCError::Unreachable(self.unreachable(err))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Q>,
        option: RPCOption,
    ) -> Result<VoteResponse<Q>, RPCError<Q>> {
        self.ask_vote(QuorumMessage::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<Q>,
        option: RPCOption,
    ) -> Result<VoteResponse<Q>, RPCError<Q>> {
        self.ask_vote(QuorumMessage::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<Q>,
        snapshot: SnapshotOf<Q, Bytes>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<Q>, StreamingError<Q>> {
        let request = QuorumMessage::InstallSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self.call(request, option.hard_ttl()).await {
            Ok(QuorumMessage::SnapshotAnswer(answer)) => Ok(answer),
            Ok(other) => Err(StreamingError::Network(wrong_answer(other))),
            Err(err) => Err(StreamingError::Unreachable(self.unreachable(err))),
        }
    }
}

impl PeerConnection {
    /// Asks the member at `addr` (the leader) to commit `command`.
    pub async fn forward(
        addr: &str,
        command: super::types::Command,
        ttl: Duration,
    ) -> io::Result<super::types::CommandOutcome> {
        let mut connection = PeerConnection {
            target: 0,
            addr: addr.to_string(),
            stream: None,
            refusals: None,
        };
        match connection
            .call(QuorumMessage::Propose(command), ttl)
            .await?
        {
            QuorumMessage::ProposeAnswer(outcome) => Ok(outcome),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Asks the member at `addr` for its image if applied past log index `known`, waiting at most
    /// `wait_ms` for one: (the leader it knows, the index it stands at, the image's encoding).
    pub async fn fetch_image(
        addr: &str,
        known: u64,
        wait_ms: u32,
        ttl: Duration,
    ) -> io::Result<(Option<u64>, u64, Option<Bytes>)> {
        let mut connection = PeerConnection {
            target: 0,
            addr: addr.to_string(),
            stream: None,
            refusals: None,
        };
        match connection
            .call(QuorumMessage::FetchImage { known, wait_ms }, ttl)
            .await?
        {
            QuorumMessage::ImageAnswer {
                leader,
                applied,
                image,
            } => Ok((leader, applied, image)),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Tells the member at `addr` (the leader) that this broker is alive (or shutting down).
    pub async fn heartbeat(
        addr: &str,
        beat: BrokerHeartbeat,
        ttl: Duration,
    ) -> io::Result<Result<(), String>> {
        let mut connection = PeerConnection {
            target: 0,
            addr: addr.to_string(),
            stream: None,
            refusals: None,
        };
        match connection.call(QuorumMessage::Heartbeat(beat), ttl).await? {
            QuorumMessage::HeartbeatAnswer(outcome) => Ok(outcome),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    async fn ask_vote(
        &mut self,
        request: QuorumMessage,
        option: RPCOption,
    ) -> Result<VoteResponse<Q>, RPCError<Q>> {
        match self.call(request, option.hard_ttl()).await {
            Ok(QuorumMessage::VoteAnswer(answer)) => Ok(answer),
            Ok(other) => Err(RPCError::Network(wrong_answer(other))),
            Err(err) => Err(RPCError::Unreachable(self.unreachable(err))),
        }
    }
}

/// This member's applied image and the log index it was applied at, for observers.
pub type ImageSource = Rc<dyn Fn() -> (u64, Arc<MetadataImage>)>;

/// Accepts members' connections on the controller listener and answers their messages with
/// `raft` (broker heartbeats go to `heartbeats`, observers' image fetches to `images`), until
/// the listener fails.
pub async fn serve<SM>(
    listener: TcpListener,
    raft: Raft<Q, SM>,
    heartbeats: Rc<RefCell<Heartbeats>>,
    images: ImageSource,
) where
    SM: RaftStateMachine<Q, SnapshotData = Bytes>,
{
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::error!(%err, "controller listener failed");
                return;
            }
        };
        let peer = stream.peer_addr().ok();
        if open.get() >= limits::QUORUM_PEER_CONNECTIONS_MAX {
            tracing::warn!(?peer, "quorum connection refused: too many open");
            continue;
        }
        open.set(open.get() + 1);
        let raft = raft.clone();
        let open = open.clone();
        let heartbeats = heartbeats.clone();
        let images = images.clone();
        glommio::spawn_local(async move {
            if let Err(err) = serve_peer(stream, &raft, &heartbeats, &images).await {
                tracing::warn!(?peer, %err, "quorum connection closed");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn serve_peer<SM>(
    mut stream: TcpStream,
    raft: &Raft<Q, SM>,
    heartbeats: &RefCell<Heartbeats>,
    images: &ImageSource,
) -> io::Result<()>
where
    SM: RaftStateMachine<Q, SnapshotData = Bytes>,
{
    stream.set_nodelay(true)?;
    while let Some(frame) = read_frame(&mut stream).await? {
        let request = codec::decode(&frame).map_err(invalid)?;
        let answer = match request {
            QuorumMessage::Heartbeat(beat) => {
                QuorumMessage::HeartbeatAnswer(take_heartbeat(heartbeats, beat))
            }
            QuorumMessage::FetchImage { known, wait_ms } => {
                let (applied, image) = image_newer_than(images, known, wait_ms).await;
                QuorumMessage::ImageAnswer {
                    leader: raft.current_leader().await,
                    applied,
                    image,
                }
            }
            request => answer(raft, request).await?,
        };
        write_frame(&mut stream, &codec::encode(&answer)).await?;
    }
    Ok(())
}

/// Waits (at most `wait_ms`, capped at `QUORUM_IMAGE_WAIT_MAX_MS`) until this member's image
/// was applied past log index `known`; the index it stands at, and the image's encoding if it
/// is past `known`. An image of a cluster not yet named is not sent: it cannot be read back.
async fn image_newer_than(images: &ImageSource, known: u64, wait_ms: u32) -> (u64, Option<Bytes>) {
    let wait = Duration::from_millis(u64::from(wait_ms).min(limits::QUORUM_IMAGE_WAIT_MAX_MS));
    let deadline = Instant::now() + wait;
    loop {
        let (applied, image) = images();
        let newer = applied > known && !image.cluster_id.is_empty();
        if newer {
            return (applied, Some(Bytes::from(metadata::encode(&image))));
        }
        if Instant::now() >= deadline {
            return (applied, None);
        }
        glommio::timer::sleep(Duration::from_millis(limits::IMAGE_POLL_INTERVAL_MS)).await;
    }
}

/// Records `beat` if this member leads (the one place brokers' liveness is judged).
pub fn take_heartbeat(
    heartbeats: &RefCell<Heartbeats>,
    beat: BrokerHeartbeat,
) -> Result<(), String> {
    let mut heartbeats = heartbeats.borrow_mut();
    if !heartbeats.is_leading() {
        return Err("this controller is not the quorum's leader".into());
    }
    let now = std::time::Instant::now();
    if !heartbeats.record(beat.broker, beat.epoch, beat.shutting_down, now) {
        return Err(format!(
            "heartbeats from more than {} brokers",
            limits::CLUSTER_BROKERS_MAX
        ));
    }
    Ok(())
}

async fn answer<SM>(raft: &Raft<Q, SM>, request: QuorumMessage) -> io::Result<QuorumMessage>
where
    SM: RaftStateMachine<Q, SnapshotData = Bytes>,
{
    // The Raft refuses only when it is shutting down: the connection closes.
    let stopped = |err: &dyn std::fmt::Display| io::Error::other(format!("raft: {err}"));
    Ok(match request {
        QuorumMessage::AppendEntries(rpc) => QuorumMessage::AppendEntriesAnswer(
            raft.append_entries(rpc).await.map_err(|e| stopped(&e))?,
        ),
        QuorumMessage::Vote(rpc) => {
            QuorumMessage::VoteAnswer(raft.vote(rpc).await.map_err(|e| stopped(&e))?)
        }
        QuorumMessage::PreVote(rpc) => {
            QuorumMessage::VoteAnswer(raft.pre_vote(rpc).await.map_err(|e| stopped(&e))?)
        }
        QuorumMessage::InstallSnapshot { vote, meta, data } => {
            let snapshot = SnapshotOf::<Q, Bytes> {
                meta,
                snapshot: data,
            };
            QuorumMessage::SnapshotAnswer(
                raft.install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| stopped(&e))?,
            )
        }
        QuorumMessage::Propose(command) => {
            QuorumMessage::ProposeAnswer(match raft.client_write(command).await {
                Ok(written) => written.data,
                Err(err) => Err(format!("not committed here: {err}")),
            })
        }
        answer => {
            return Err(invalid(format!(
                "an answer where a request belongs: {answer:?}"
            )))
        }
    })
}
