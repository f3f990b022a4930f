//! Connections: accepted on every shard (SO_REUSEPORT), read as length-prefixed frames bounded by
//! `socket.request.max.bytes`, served concurrently, answered strictly in request order.
//!
//! Each connection has a reader (frames → decoded requests → one task each) and a writer that
//! awaits those tasks in order, so a slow produce never reorders answers while later requests
//! still make progress. At most `CONNECTION_IN_FLIGHT_REQUESTS_MAX` requests are in flight.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};

use crate::limits;
use crate::metrics;
use crate::protocol;
use crate::shard::Shard;

pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(serve_connection(shard.clone(), stream)).detach();
            }
            Err(err) => {
                tracing::warn!("shard {}: accept failed: {err}", shard.id.0);
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
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

async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) {
    let _open = OpenConnection::new();
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".into());
    let peer_ip: Rc<str> = peer_addr
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
        .into();
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(limits::CONNECTION_READ_BUFFER_BYTES, reader);
    let (tx, rx) = local_channel::new_bounded::<glommio::Task<Option<Vec<Bytes>>>>(
        limits::CONNECTION_IN_FLIGHT_REQUESTS_MAX,
    );
    let writer_task = glommio::spawn_local(async move {
        while let Some(pending) = rx.recv().await {
            let Some(chunks) = pending.await else {
                continue;
            };
            if write_chunks(&mut writer, &chunks).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let max_bytes = shard.config.socket_request_max_bytes;
    loop {
        let size = match read_size(&mut reader, max_bytes).await {
            Ok(Some(size)) => size,
            Ok(None) => break,
            Err(reason) => {
                tracing::warn!("closing connection from {peer}: {reason}");
                break;
            }
        };
        // Held until the request is answered: bounds the request bytes a shard holds in memory
        // (`queued.max.request.bytes`) however many connections send at once.
        let Ok(permit) = shard
            .request_memory
            .acquire_static_permit(size as u64)
            .await
        else {
            break;
        };
        let mut frame = BytesMut::zeroed(size);
        if let Err(err) = reader.read_exact(&mut frame).await {
            tracing::warn!("closing connection from {peer}: truncated frame: {err}");
            break;
        }
        let incoming = match protocol::parse_request(frame.freeze()) {
            Ok(incoming) => incoming,
            Err(err) => {
                tracing::warn!("closing connection from {peer}: {}", err.0);
                metrics::with(|m| m.frames_refused.set(m.frames_refused.get() + 1));
                break;
            }
        };
        let shard = shard.clone();
        let peer_ip = peer_ip.clone();
        let task = glommio::spawn_local(async move {
            let _permit = permit;
            protocol::serve(shard, incoming, &peer_ip).await
        });
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}

async fn write_chunks<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    for chunk in chunks {
        writer.write_all(chunk).await?;
    }
    Ok(())
}

/// Reads a frame's size. `Ok(None)` on a clean end of stream; `Err` for an impossible size.
async fn read_size<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<usize>, String> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
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
