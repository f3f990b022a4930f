//! Shared by the group APIs: sending a group operation to the shard that coordinates the group.

use std::rc::Rc;

use crate::error::ErrorCode;
use crate::group::records::OFFSETS_TOPIC;
use crate::group::{coordinator_of, GroupAnswer, GroupCoordinator, GroupOp};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::txn::state::TXN_TOPIC;
use crate::txn::{TxnAnswer, TxnOp};

/// Who sent a request: what JoinGroup records as the member's client id and host, and the
/// listener it came in on.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub client_id: String,
    /// As Kafka shows it: `/` and the peer's IP address.
    pub host: String,
    /// The listener the request came in on (a name from `listeners`).
    pub listener: Rc<str>,
}

/// Runs `op` on the group's coordinator shard (here or across the mesh).
pub async fn call(shard: &Rc<Shard>, op: GroupOp) -> GroupAnswer {
    let group = op.group().expect("a group operation").to_string();
    let owner = match coordinator_of(shard, &group)
        .and_then(|(owner, p)| leads(shard, OFFSETS_TOPIC, p).map(|()| owner))
    {
        Ok(owner) => owner,
        Err(code) => return GroupCoordinator::failed(&op, code),
    };
    let fallback = GroupCoordinator::failed(&op, ErrorCode::CoordinatorNotAvailable);
    match shard.call(owner, ShardRequest::Group(op)).await {
        ShardResponse::Group(answer) => answer,
        _ => fallback,
    }
}

/// Runs `op` on the transactional id's coordinator shard.
pub async fn call_txn(shard: &Rc<Shard>, op: TxnOp) -> TxnAnswer {
    let failed = |code| match op {
        TxnOp::InitProducerId { .. } => TxnAnswer::Producer(Err(code)),
        _ => TxnAnswer::Code(code),
    };
    let owner = match crate::txn::coordinator_of(shard, op.txn_id())
        .and_then(|(owner, p)| leads(shard, TXN_TOPIC, p).map(|()| owner))
    {
        Ok(owner) => owner,
        Err(code) => return failed(code),
    };
    let fallback = failed(ErrorCode::CoordinatorNotAvailable);
    match shard.call(owner, ShardRequest::Txn(op)).await {
        ShardResponse::Txn(answer) => answer,
        _ => fallback,
    }
}

/// A coordinator runs on the broker leading its internal partition (FindCoordinator names it):
/// elsewhere the request gets NOT_COORDINATOR, and the client finds the coordinator again.
fn leads(shard: &Shard, topic: &str, partition: i32) -> Result<(), ErrorCode> {
    let image = shard.image();
    let leader = image
        .topic(topic)
        .and_then(|t| t.partition_states.get(partition as usize))
        .map(|state| state.leader.0);
    match leader {
        Some(id) if id == shard.config.node_id => Ok(()),
        _ => Err(ErrorCode::NotCoordinator),
    }
}
