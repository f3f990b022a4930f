//! The admin HTTP endpoint (its own port, `sluice.admin.listen`, on shard 0): `/metrics` in
//! Prometheus text format, `/health` (the process serves) and `/ready` (every shard answers).
//! A scrape asks every shard for its samples over the mesh. Deliberately tiny: GET only, one
//! request per connection, bounded request size.

use std::rc::Rc;

use futures::future::join_all;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::limits;
use crate::metrics::{self, Sample};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(answer(shard.clone(), stream)).detach();
            }
            Err(err) => {
                tracing::warn!("admin endpoint: accept failed: {err}");
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(shard: Rc<Shard>, mut stream: TcpStream) {
    let Some(path) = read_request_path(&mut stream).await else {
        let _ = respond(&mut stream, "400 Bad Request", "bad request\n").await;
        return;
    };
    let (status, body) = match path.as_str() {
        "/metrics" => (
            "200 OK",
            metrics::render(&collect(&shard).await.unwrap_or_default()),
        ),
        "/health" => ("200 OK", "ok\n".to_string()),
        "/ready" => match collect(&shard).await {
            Some(_) if !shard.is_stopping() => ("200 OK", "ready\n".to_string()),
            _ => ("503 Service Unavailable", "not ready\n".to_string()),
        },
        _ => (
            "404 Not Found",
            "try /metrics, /health or /ready\n".to_string(),
        ),
    };
    let _ = respond(&mut stream, status, &body).await;
}

/// Reads the request head (bounded) and returns the path of a GET.
async fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > limits::ADMIN_REQUEST_MAX_BYTES {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = std::str::from_utf8(&head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    if parts.next()? != "GET" {
        return None;
    }
    Some(parts.next()?.split('?').next()?.to_string())
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.close().await
}

/// Every shard's samples; `None` if a shard did not answer.
async fn collect(shard: &Rc<Shard>) -> Option<Vec<Sample>> {
    let calls = (0..shard.count).map(|to| shard.call(ShardId(to), ShardRequest::CollectMetrics));
    let mut samples = Vec::new();
    for response in join_all(calls).await {
        match response {
            ShardResponse::Metrics(mut s) => samples.append(&mut s),
            _ => return None,
        }
    }
    metrics::add_consumer_lag(&mut samples);
    Some(samples)
}
