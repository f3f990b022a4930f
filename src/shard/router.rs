//! Cross-shard calls: a full mesh of bounded glommio channels (`CROSS_SHARD_QUEUE_DEPTH` deep in
//! each direction) carrying requests and their answers, matched by id. Lives on every shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};

use super::{Shard, ShardRequest, ShardResponse};
use crate::types::ShardId;

/// What travels between shards.
#[derive(Debug)]
pub enum Envelope {
    Request {
        from: usize,
        id: u64,
        request: ShardRequest,
    },
    Response {
        id: u64,
        response: ShardResponse,
    },
}

/// This shard's end of the mesh: senders to every other shard and the calls awaiting answers.
pub struct Router {
    senders: Option<Senders<Envelope>>,
    awaiting: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    next_id: Cell<u64>,
}

impl Router {
    /// A router for a single-shard broker: every call is local.
    pub fn single() -> Router {
        Router {
            senders: None,
            awaiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    pub fn new(senders: Senders<Envelope>) -> Router {
        Router {
            senders: Some(senders),
            awaiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        }
    }

    pub async fn call(&self, to: ShardId, request: ShardRequest) -> ShardResponse {
        let senders = self.senders.as_ref().expect("a remote call needs the mesh");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.awaiting.borrow_mut().insert(id, tx);
        let envelope = Envelope::Request {
            from: senders.peer_id(),
            id,
            request,
        };
        if senders.send_to(to.0, envelope).await.is_err() {
            // Only at shutdown: the other shard has stopped.
            self.awaiting.borrow_mut().remove(&id);
            return ShardResponse::Unavailable;
        }
        rx.await.unwrap_or(ShardResponse::Unavailable)
    }

    fn deliver(&self, id: u64, response: ShardResponse) {
        match self.awaiting.borrow_mut().remove(&id) {
            Some(tx) => {
                let _ = tx.send(response);
            }
            None => log::error!("answer {id} from another shard matches no call"),
        }
    }

    async fn answer(&self, to: usize, id: u64, response: ShardResponse) {
        let senders = self.senders.as_ref().expect("mesh");
        if senders
            .send_to(to, Envelope::Response { id, response })
            .await
            .is_err()
        {
            log::warn!("shard {to} went away before its answer {id}");
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
                    Envelope::Request { from, id, request } => {
                        let shard = shard.clone();
                        glommio::spawn_local(async move {
                            let response = shard.clone().handle(request).await;
                            shard.router.answer(from, id, response).await;
                        })
                        .detach();
                    }
                    Envelope::Response { id, response } => shard.router.deliver(id, response),
                }
            }
        })
        .detach();
    }
}
