//! Cross-shard calls: a full mesh of bounded glommio channels (`CROSS_SHARD_QUEUE_DEPTH` deep in
//! each direction) carrying requests and their answers, matched by id. Lives on every shard.
//!
//! Every envelope carries its send time, so each shard measures the one-way hop latency (send to
//! the receiving executor picking it up: the cost of waking a parked core) and the round trip of
//! cross-shard produces, and logs both when it stops.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use hdrhistogram::Histogram;

use super::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

/// What travels between shards.
#[derive(Debug)]
pub enum Envelope {
    Request {
        from: usize,
        id: u64,
        sent: Instant,
        request: ShardRequest,
    },
    Response {
        id: u64,
        sent: Instant,
        response: ShardResponse,
    },
}

/// Latencies above this are recorded as this (an hour, in microseconds).
const HOP_STATS_MAX_US: u64 = 3_600_000_000;

/// Latency samples of this shard's cross-shard traffic, in microseconds.
struct HopStats {
    hop_us: Histogram<u64>,
    produce_round_trip_us: Histogram<u64>,
}

impl HopStats {
    fn new() -> HopStats {
        let histogram =
            || Histogram::new_with_bounds(1, HOP_STATS_MAX_US, 2).expect("valid histogram bounds");
        HopStats {
            hop_us: histogram(),
            produce_round_trip_us: histogram(),
        }
    }
}

fn record(histogram: &mut Histogram<u64>, since: Instant) {
    let us = (since.elapsed().as_micros() as u64).clamp(1, HOP_STATS_MAX_US);
    histogram.record(us).expect("clamped into bounds");
}

fn summary(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "n={} p50={}us p99={}us p99.9={}us max={}us",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

/// This shard's end of the mesh: senders to every other shard and the calls awaiting answers.
pub struct Router {
    senders: Option<Senders<Envelope>>,
    awaiting: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    next_id: Cell<u64>,
    stats: RefCell<HopStats>,
}

impl Router {
    /// A router for a single-shard broker: every call is local.
    pub fn single() -> Router {
        Router::with_senders(None)
    }

    pub fn new(senders: Senders<Envelope>) -> Router {
        Router::with_senders(Some(senders))
    }

    fn with_senders(senders: Option<Senders<Envelope>>) -> Router {
        Router {
            senders,
            awaiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            stats: RefCell::new(HopStats::new()),
        }
    }

    /// Envelopes (requests and answers) this shard received from other shards.
    pub fn messages_received(&self) -> u64 {
        self.stats.borrow().hop_us.len()
    }

    /// One line on what cross-shard traffic cost on this shard (`None` for a single shard).
    pub fn stats_summary(&self) -> Option<String> {
        self.senders.as_ref()?;
        let stats = self.stats.borrow();
        Some(format!(
            "cross-shard hop: {}; cross-shard produce round trip: {}",
            summary(&stats.hop_us),
            summary(&stats.produce_round_trip_us)
        ))
    }

    pub async fn call(&self, to: ShardId, request: ShardRequest) -> ShardResponse {
        let senders = self.senders.as_ref().expect("a remote call needs the mesh");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.awaiting.borrow_mut().insert(id, tx);
        let is_produce = matches!(request, ShardRequest::Produce { .. });
        let started = Instant::now();
        let envelope = Envelope::Request {
            from: senders.peer_id(),
            id,
            sent: started,
            request,
        };
        if senders.send_to(to.0, envelope).await.is_err() {
            // Only at shutdown: the other shard has stopped.
            self.awaiting.borrow_mut().remove(&id);
            return ShardResponse::Unavailable;
        }
        let response = rx.await.unwrap_or(ShardResponse::Unavailable);
        if is_produce {
            record(&mut self.stats.borrow_mut().produce_round_trip_us, started);
        }
        response
    }

    fn deliver(&self, id: u64, response: ShardResponse) {
        match self.awaiting.borrow_mut().remove(&id) {
            Some(tx) => {
                let _ = tx.send(response);
            }
            None => tracing::error!("answer {id} from another shard matches no call"),
        }
    }

    async fn answer(&self, to: usize, id: u64, response: ShardResponse) {
        let senders = self.senders.as_ref().expect("mesh");
        if senders
            .send_to(
                to,
                Envelope::Response {
                    id,
                    sent: Instant::now(),
                    response,
                },
            )
            .await
            .is_err()
        {
            tracing::warn!("shard {to} went away before its answer {id}");
        }
    }
}

/// Spawns one task per peer that serves incoming requests (each in its own task, so a slow
/// request never blocks the channel) and delivers incoming answers.
pub fn serve(shard: &Rc<Shard>, mut receivers: Receivers<Envelope>) {
    for (_peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                match envelope {
                    Envelope::Request {
                        from,
                        id,
                        sent,
                        request,
                    } => {
                        record(&mut shard.router.stats.borrow_mut().hop_us, sent);
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let response = shard.clone().handle(request).await;
                            shard.router.answer(from, id, response).await;
                        })
                        .detach();
                    }
                    Envelope::Response { id, sent, response } => {
                        record(&mut shard.router.stats.borrow_mut().hop_us, sent);
                        shard.router.deliver(id, response)
                    }
                }
            }
        })
        .detach();
    }
}
