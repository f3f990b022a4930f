//! How this broker takes part in the metadata quorum: as a voter (a member running the Raft
//! core) or as an observer (a broker-only node following the voters). The controller, the
//! broker's registration and heartbeats, and its controlled shutdown see only this. Lives on
//! shard 0.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::codec::BrokerHeartbeat;
use super::member::{ProposeError, QuorumMember};
use super::observer::QuorumObserver;
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataImage;

pub enum QuorumLink {
    Voter(Rc<QuorumMember>),
    Observer(Rc<QuorumObserver>),
}

impl QuorumLink {
    /// The committed image as this broker has it.
    pub fn image(&self) -> Arc<MetadataImage> {
        match self {
            QuorumLink::Voter(member) => member.image(),
            QuorumLink::Observer(observer) => observer.image(),
        }
    }

    /// Commits `records` (through the leader) and waits for the answer.
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<(), ProposeError> {
        match self {
            QuorumLink::Voter(member) => member.propose(records).await,
            QuorumLink::Observer(observer) => observer.propose(records).await,
        }
    }

    /// Hands `beat` to the quorum's leader within `ttl`.
    pub async fn heartbeat(&self, beat: BrokerHeartbeat, ttl: Duration) -> Result<(), String> {
        match self {
            QuorumLink::Voter(member) => member.heartbeat(beat, ttl).await,
            QuorumLink::Observer(observer) => observer.heartbeat(beat, ttl).await,
        }
    }

    /// Why this broker's part in the quorum stopped for good, if it did (a voter's Raft core
    /// died); an observer only ever retries.
    pub fn fatal(&self) -> Option<String> {
        match self {
            QuorumLink::Voter(member) => member.fatal(),
            QuorumLink::Observer(_) => None,
        }
    }
}
