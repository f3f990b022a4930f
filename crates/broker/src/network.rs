//! Connections: accepted on every shard (SO_REUSEPORT) within `max.connections` and
//! `max.connections.per.ip` (`connection_limits`), read as length-prefixed frames bounded by
//! `socket.request.max.bytes`, served concurrently, answered strictly in request order.
//!
//! No connection can hold what the others need: a frame's bytes are charged to the shard's
//! `queued.max.request.bytes` as they arrive (`request_memory`) into a buffer that grows with them
//! (`frame_pool`), a frame must arrive within `sluice.request.receive.timeout.ms` of its first
//! byte, and a connection that neither sends nor is sent anything for `connections.max.idle.ms`
//! is closed.
//!
//! Each connection has a reader (frames → decoded requests → one task each) and a writer that
//! awaits those tasks in order, so a slow produce never reorders answers while later requests
//! still make progress. At most `CONNECTION_IN_FLIGHT_REQUESTS_MAX` requests are in flight.
//!
//! The writer sends fetched file ranges with sendfile, straight from the page cache. The socket
//! is made non-blocking for that: a full socket then answers EAGAIN instead of stalling the
//! shard's thread, and the writer sends the next piece through glommio's write, which waits for
//! room on io_uring. glommio's own reads and writes are unaffected: they always pass
//! MSG_DONTWAIT and wait for readiness with io_uring polls.

use std::cell::Cell;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{select, Either};
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::sendfile::sendfile64;
use nix::sys::socket::{setsockopt, sockopt};

use crate::config::Config;
use crate::limits;
use crate::metrics;
use crate::protocol;
use crate::shard::Shard;
use crate::storage::payload::{FileRange, Payload};
pub use connection_limits::{Admitted, ConnectionLimits};
use frame_pool::{FrameBuffer, Lent};
pub use request_memory::{FrameCharge, RequestMemory};

/// A listener that one process alone owns: unlike `glommio::net::TcpListener::bind`, which sets
/// SO_REUSEPORT (right for the client listener every shard shares), a second broker on the same
/// host and port fails here with "address in use" instead of silently taking half the
/// connections. For the listeners one shard serves: the admin endpoint and the quorum's.
pub fn bind_exclusive(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: `into_raw_fd` hands over the only owner of a listening socket's descriptor.
    Ok(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
}

mod connection_limits;
mod frame_pool;
pub mod peers;
pub mod request_memory;

/// Accepts connections on one of the shard's listeners (`name`, a key of `listeners`), until
/// the shard stops.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, name: Rc<str>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let delay = shard.connection_limits.creation_delay(Instant::now());
                if !delay.is_zero() {
                    // Over `max.connection.creation.rate`: accept nothing more meanwhile.
                    glommio::timer::sleep(delay).await;
                }
                let Some(admitted) = admit(&shard, &stream) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                if let Err(err) = set_buffer_sizes(&stream, &shard.config) {
                    tracing::warn!(
                        "shard {}: could not size a socket's buffers: {err}",
                        shard.id.0
                    );
                }
                if let Err(err) = set_nonblocking(&stream) {
                    tracing::warn!(
                        "shard {}: could not make a socket non-blocking: {err}",
                        shard.id.0
                    );
                    continue;
                }
                glommio::spawn_local(serve_connection(
                    shard.clone(),
                    stream,
                    admitted,
                    name.clone(),
                ))
                .detach();
            }
            Err(err) => {
                tracing::warn!("shard {}: accept failed: {err}", shard.id.0);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a new connection against `max.connections` and `max.connections.per.ip`; `None` (the
/// stream is then dropped, which closes it) when it is over either.
fn admit(shard: &Shard, stream: &TcpStream) -> Option<Admitted> {
    let peer = stream.peer_addr().ok()?;
    match shard.connection_limits.admit(peer.ip()) {
        Ok(admitted) => Some(admitted),
        Err(refusal) => {
            tracing::info!("refused a connection from {peer}: {refusal}");
            metrics::with(|m| m.connections_refused.set(m.connections_refused.get() + 1));
            None
        }
    }
}

/// Counts a connection as open while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        metrics::with(|m| {
            m.connections_open.set(m.connections_open.get() + 1);
            m.connections_total.set(m.connections_total.get() + 1);
        });
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::with(|m| m.connections_open.set(m.connections_open.get() - 1));
    }
}

/// What a connection's reader and writer share to tell idling from waiting on the broker.
#[derive(Default)]
struct Activity {
    /// Requests read whose answer the broker has not made yet: while there are any, the
    /// connection is waiting on the broker, not idle. (An answer made but not yet written to a
    /// client that reads nothing does not count: that client is idle.)
    in_flight: Cell<usize>,
    /// When a request was last read or an answer last written.
    last: Cell<Option<Instant>>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Some(Instant::now()));
    }
}

/// Serves one connection that came in on the listener named `listener`.
async fn serve_connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    _admitted: Admitted,
    listener: Rc<str>,
) {
    let _open = OpenConnection::new();
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let peer_ip: Rc<str> = peer_addr
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
        .into();
    let socket = stream.as_raw_fd();
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(limits::CONNECTION_READ_BUFFER_BYTES, reader);
    let (tx, rx) = local_channel::new_bounded::<glommio::Task<Option<Vec<Payload>>>>(
        limits::CONNECTION_IN_FLIGHT_REQUESTS_MAX,
    );
    let activity = Rc::new(Activity::default());
    activity.touch();
    let writer_task = glommio::spawn_local({
        let activity = activity.clone();
        async move {
            while let Some(pending) = rx.recv().await {
                let Some(chunks) = pending.await else {
                    continue;
                };
                if write_chunks(&mut writer, socket, chunks).await.is_err() {
                    break;
                }
                activity.touch();
            }
            let _ = writer.close().await;
        }
    });
    let mut timed_out = false;
    loop {
        let (frame, charge, lent) = match read_frame(&shard, &mut reader, &activity).await {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(FrameError::TimedOut(reason)) => {
                timed_out = true;
                tracing::info!("closing connection from {peer}: {reason}");
                metrics::with(|m| {
                    m.connections_timed_out
                        .set(m.connections_timed_out.get() + 1)
                });
                break;
            }
            Err(FrameError::Broken(reason)) => {
                tracing::warn!("closing connection from {peer}: {reason}");
                break;
            }
        };
        let incoming = match protocol::parse_request(frame) {
            Ok(incoming) => incoming,
            Err(err) => {
                tracing::warn!("closing connection from {peer}: {}", err.0);
                metrics::with(|m| m.frames_refused.set(m.frames_refused.get() + 1));
                break;
            }
        };
        let shard = shard.clone();
        let peer_ip = peer_ip.clone();
        let listener = listener.clone();
        let activity = activity.clone();
        activity.in_flight.set(activity.in_flight.get() + 1);
        let task = glommio::spawn_local(async move {
            // Held until the request is answered, or only waits (`request_memory`): bounds the
            // request bytes a shard holds in memory (`queued.max.request.bytes`) however many
            // connections send at once.
            let response = protocol::serve(shard, incoming, charge, &peer_ip, listener).await;
            lent.give_back();
            activity.in_flight.set(activity.in_flight.get() - 1);
            activity.touch();
            response
        });
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    // The writer sends the answers already in flight, but a client that reads none of them keeps
    // it waiting on a full socket: it gets `connections.max.idle.ms` for them, and nothing after
    // a timeout (the connection is closed for not keeping up).
    let linger = if timed_out {
        Duration::ZERO
    } else {
        shard.config.connections_max_idle
    };
    let mut writer_task = writer_task;
    if within(Instant::now() + linger, &mut writer_task)
        .await
        .is_none()
    {
        writer_task.cancel().await;
    }
}

/// Why a connection stops reading.
enum FrameError {
    /// Idle past `connections.max.idle.ms`, or a frame slower than
    /// `sluice.request.receive.timeout.ms`.
    TimedOut(String),
    /// An impossible size, a failed read, a frame cut short.
    Broken(String),
}

/// Reads the next request frame, charging its bytes to the shard's request memory as they
/// arrive. `Ok(None)` when the client closed the connection between requests.
async fn read_frame<R: AsyncRead + Unpin>(
    shard: &Shard,
    reader: &mut BufReader<R>,
    activity: &Activity,
) -> Result<Option<(Bytes, FrameCharge, Lent)>, FrameError> {
    if !wait_for_frame(reader, shard.config.connections_max_idle, activity).await? {
        return Ok(None);
    }
    let timeout = shard.config.request_receive_timeout;
    let mut deadline = Instant::now() + timeout;
    let too_slow = |what: &str| {
        FrameError::TimedOut(format!(
            "{what} did not arrive within sluice.request.receive.timeout.ms ({} ms)",
            timeout.as_millis()
        ))
    };
    let size = match within(
        deadline,
        read_size(reader, shard.config.socket_request_max_bytes),
    )
    .await
    {
        None => return Err(too_slow("a request's size")),
        Some(Ok(Some(size))) => size,
        Some(Ok(None)) => return Ok(None),
        Some(Err(reason)) => return Err(FrameError::Broken(reason)),
    };
    let mut charge = shard.request_memory.frame();
    let mut buffer = FrameBuffer::take(size);
    while !buffer.is_full() {
        let read = match within(deadline, reader.read(buffer.unfilled())).await {
            None => return Err(too_slow(&format!("a request of {size} bytes"))),
            Some(Ok(0)) => Err("the connection closed".to_string()),
            Some(Ok(read)) => Ok(read),
            Some(Err(err)) => Err(err.to_string()),
        }
        .map_err(|err| FrameError::Broken(format!("truncated frame: {err}")))?;
        buffer.advance(read);
        // Waiting for room is the broker's doing, not the client's: it does not count
        // against the client's time.
        let waiting_since = Instant::now();
        charge.add(read as u64).await;
        deadline += waiting_since.elapsed();
    }
    activity.touch();
    let (frame, lent) = buffer.freeze();
    Ok(Some((frame, charge, lent)))
}

/// Waits for the first byte of the next frame: `Ok(false)` when the client closed the
/// connection (or reset it: many clients close so, and nothing was lost), an error when it
/// sent nothing and was sent nothing for `idle`.
async fn wait_for_frame<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    idle: Duration,
    activity: &Activity,
) -> Result<bool, FrameError> {
    loop {
        let last = activity.last.get().unwrap_or_else(Instant::now);
        // `fill_buf` consumes nothing, so giving up on it loses no bytes.
        match within(last + idle, reader.fill_buf()).await {
            Some(Ok(bytes)) => return Ok(!bytes.is_empty()),
            Some(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(false)
            }
            Some(Err(err)) => return Err(FrameError::Broken(format!("read failed: {err}"))),
            None if activity.in_flight.get() > 0 => activity.touch(),
            None if activity.last.get() == Some(last) => {
                return Err(FrameError::TimedOut(format!(
                    "idle for connections.max.idle.ms ({} ms)",
                    idle.as_millis()
                )))
            }
            // An answer was written meanwhile.
            None => {}
        }
    }
}

/// `future`'s output, or `None` if `deadline` passes first.
async fn within<F: std::future::Future>(deadline: Instant, future: F) -> Option<F::Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(glommio::timer::sleep(left));
    match select(future, timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Writes a response's chunks in order. `socket` is the descriptor `writer` writes to; the
/// connection keeps it open for as long as the writer lives.
async fn write_chunks<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    socket: RawFd,
    chunks: Vec<Payload>,
) -> std::io::Result<()> {
    for chunk in chunks {
        match chunk {
            Payload::Bytes(bytes) => writer.write_all(&bytes).await?,
            Payload::File(range) => send_range(writer, socket, range).await?,
        }
    }
    Ok(())
}

/// Sends a file range with sendfile while the socket has room; when it is full, sends the next
/// `SOCKET_FULL_COPY_BYTES` through `writer`, which waits for room without blocking the shard.
async fn send_range<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    socket: RawFd,
    mut range: FileRange,
) -> std::io::Result<()> {
    // SAFETY: the connection's stream owns `socket` and outlives this call.
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    while range.len > 0 {
        let mut offset = range.offset as nix::libc::off64_t;
        match sendfile64(socket, range.file.as_ref(), Some(&mut offset), range.len) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment file shorter than the range being sent",
                ))
            }
            Ok(sent) => {
                range.advance(sent);
                metrics::with(|m| m.fetch_sent(sent, 0));
            }
            Err(Errno::EAGAIN) => {
                let piece = range.read_head(limits::SOCKET_FULL_COPY_BYTES)?;
                writer.write_all(&piece).await?;
                range.advance(piece.len());
                metrics::with(|m| m.fetch_sent(0, piece.len()));
            }
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Applies `socket.send.buffer.bytes` and `socket.receive.buffer.bytes` (unset: the kernel
/// autotunes both). Set after the handshake, the receive buffer cannot outgrow the window scale
/// the connection agreed on; Linux bases that on the largest buffer autotuning could reach, so
/// any size up to `net.core.rmem_max` takes effect.
fn set_buffer_sizes(stream: &TcpStream, config: &Config) -> nix::Result<()> {
    // SAFETY: `stream` owns the descriptor and outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    if let Some(bytes) = config.socket_send_buffer_bytes {
        setsockopt(&fd, sockopt::SndBuf, &bytes)?;
    }
    if let Some(bytes) = config.socket_receive_buffer_bytes {
        setsockopt(&fd, sockopt::RcvBuf, &bytes)?;
    }
    Ok(())
}

fn set_nonblocking(stream: &TcpStream) -> nix::Result<()> {
    let fd = stream.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Reads a frame's size. `Ok(None)` when the client closed or reset the connection between
/// requests (many clients close with a reset: nothing was lost, so no warning); `Err` for an
/// impossible size or a failed read.
async fn read_size<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<usize>, String> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None)
        }
        Err(err) => return Err(format!("read failed: {err}")),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_bytes {
        return Err(format!(
            "frame of {size} bytes is over socket.request.max.bytes ({max_bytes})"
        ));
    }
    Ok(Some(size as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;
    use std::time::Duration;

    use glommio::LocalExecutorBuilder;
    use nix::sys::socket::getsockopt;

    const FILE_BYTES: usize = 4 * 1024 * 1024;

    fn pattern(i: usize) -> u8 {
        (i * 7 + i / 4096) as u8
    }

    /// A file of `FILE_BYTES` patterned bytes, already unlinked (the descriptor keeps it).
    fn patterned_file() -> FileRange {
        let path = std::env::temp_dir().join(format!("sluice-sendfile-{}", std::process::id()));
        let bytes: Vec<u8> = (0..FILE_BYTES).map(pattern).collect();
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        FileRange {
            file: Arc::new(file.into()),
            offset: 100,
            len: FILE_BYTES - 200,
        }
    }

    /// A reader whose every read fails with `kind`.
    struct Failing(std::io::ErrorKind);

    impl futures::io::AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(self.0.into()))
        }
    }

    #[test]
    fn a_reset_between_requests_is_a_close_and_other_read_errors_are_not() {
        use futures::executor::block_on;
        use std::io::ErrorKind;
        let mut empty: &[u8] = &[];
        assert_eq!(block_on(read_size(&mut empty, 100)), Ok(None));
        let mut reset = Failing(ErrorKind::ConnectionReset);
        assert_eq!(block_on(read_size(&mut reset, 100)), Ok(None));
        let mut broken = Failing(ErrorKind::TimedOut);
        assert!(block_on(read_size(&mut broken, 100)).is_err());
        let mut frame: &[u8] = &[0, 0, 0, 42];
        assert_eq!(block_on(read_size(&mut frame, 100)), Ok(Some(42)));
    }

    #[test]
    fn configured_buffer_sizes_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            socket_send_buffer_bytes: Some(64 * 1024),
            socket_receive_buffer_bytes: Some(96 * 1024),
            ..Config::default()
        };
        let (send, receive) = LocalExecutorBuilder::default()
            .spawn(move || async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                set_buffer_sizes(&stream, &config).unwrap();
                // SAFETY: `stream` owns the descriptor and outlives this borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
                (
                    getsockopt(&fd, sockopt::SndBuf).unwrap(),
                    getsockopt(&fd, sockopt::RcvBuf).unwrap(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        // Linux doubles what it is given, for its own bookkeeping.
        assert_eq!((send, receive), (128 * 1024, 192 * 1024));
    }

    /// A client that reads slowly, so the broker's socket fills up again and again.
    fn slow_reader(
        listener: std::net::TcpListener,
        want: usize,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let (mut client, _) = listener.accept().unwrap();
            let mut got = Vec::with_capacity(want);
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < want {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "connection closed early");
                got.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_millis(2));
            }
            got
        })
    }

    #[test]
    fn a_full_socket_neither_blocks_the_shard_nor_loses_bytes() {
        let range = patterned_file();
        let want = range.len;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = slow_reader(listener, want);
        let (ticks, sent_by_sendfile, copied) = LocalExecutorBuilder::default()
            .spawn(move || async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                set_nonblocking(&stream).unwrap();
                let socket = stream.as_raw_fd();
                // SAFETY: `stream` owns the descriptor and outlives this borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(socket) };
                setsockopt(&fd, sockopt::SndBuf, &(32 * 1024)).unwrap();
                let (_reader, mut writer) = stream.split();
                // Runs only while the shard's thread is free: sendfile must never hold it.
                let ticks = Rc::new(std::cell::Cell::new(0u32));
                let ticker = glommio::spawn_local({
                    let ticks = ticks.clone();
                    async move {
                        loop {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                            ticks.set(ticks.get() + 1);
                        }
                    }
                });
                send_range(&mut writer, socket, range).await.unwrap();
                drop(ticker);
                let (sent, copied) =
                    metrics::with(|m| (m.fetch_sendfile_bytes.get(), m.fetch_copied_bytes.get()));
                (ticks.get(), sent, copied)
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want);
        assert!(
            got.iter().enumerate().all(|(i, b)| *b == pattern(i + 100)),
            "the bytes arrive as the file holds them, in order"
        );
        assert_eq!(sent_by_sendfile + copied, want as u64);
        assert!(sent_by_sendfile > 0, "sendfile carried part of it");
        assert!(copied > 0, "a full socket made the writer wait on io_uring");
        assert!(
            ticks > 10,
            "the shard ran other tasks meanwhile ({ticks} ticks)"
        );
    }
}
