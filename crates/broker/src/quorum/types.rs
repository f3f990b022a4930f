//! The metadata quorum's Raft types: what a log entry carries and how nodes and leaders are named.
//!
//! A term has at most one leader (standard Raft, as KRaft's epochs), so a log id is (term, index):
//! stored as a Kafka batch, the term is its partition leader epoch and the index its offset.

use std::fmt;

use bytes::Bytes;

use super::runtime::GlommioRuntime;

/// One proposal, opaque to the consensus: encoded metadata records that the state machine
/// applies together (KRaft's atomic batch).
#[derive(Clone, PartialEq, Eq)]
pub struct Command(pub Bytes);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying a command came to. A command whose records do not all apply (decided on an image
/// that has moved since) changes nothing, on every member alike.
pub type CommandOutcome = Result<(), String>;

openraft::declare_raft_types!(
    /// Node ids are Kafka's `node.id`; a node's address is its controller listener, host:port.
    pub QuorumTypes:
        D = Command,
        R = CommandOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = GlommioRuntime,
);
