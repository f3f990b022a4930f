//! This broker as a member of the metadata quorum (`process.roles` with `controller`, and
//! `controller.quorum.voters` set): it runs the Raft core, serves the controller listener, and
//! commits the metadata records its controller decides, forwarding them to the leader when it is
//! not the leader itself. Lives on shard 0, beside the controller.
//!
//! A new quorum names its cluster once: its first leader commits a command with a fresh cluster
//! id and no records; members propose nothing before they know it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use openraft_rt::WatchReceiver;
use uuid::Uuid;

use super::codec::BrokerHeartbeat;
use super::heartbeats::Heartbeats;
use super::log_store::MetadataLogStore;
use super::network::{self, PeerConnection, QuorumNetwork};
use super::state_machine::{bootstrap_command, command, MetadataMachine, Publish};
use super::types::{Command, QuorumTypes as Q};
use crate::config::Config;
use crate::limits;
use crate::metadata::records::{BrokerId, MetadataRecord};
use crate::metadata::MetadataImage;
use crate::storage::fs::UringStorage;
use crate::storage::SystemClock;

pub type MetadataRaft = openraft::Raft<Q, MetadataMachine<UringStorage>>;

/// Why records were not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// No leader is known or reachable yet, or the cluster is not named yet: retriable.
    Unavailable(String),
    /// Committed, but the records did not apply (decided on an image that has moved since).
    Refused(String),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::Unavailable(why) => write!(f, "metadata quorum unavailable: {why}"),
            ProposeError::Refused(why) => write!(f, "metadata change refused: {why}"),
        }
    }
}

pub struct QuorumMember {
    /// This member's `node.id`.
    node: u64,
    raft: MetadataRaft,
    machine: MetadataMachine<UringStorage>,
    /// Every voter's controller address, by node id.
    voters: BTreeMap<u64, BasicNode>,
    /// The brokers' heartbeats, while this member leads.
    heartbeats: Rc<RefCell<Heartbeats>>,
}

/// Raft's timing: heartbeats well inside the election timeout even on a loaded machine.
fn raft_config() -> Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: "sluice-metadata".into(),
        heartbeat_interval: limits::QUORUM_HEARTBEAT_INTERVAL_MS,
        election_timeout_min: limits::QUORUM_ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: limits::QUORUM_ELECTION_TIMEOUT_MAX_MS,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(config.validate().context("quorum timing")?))
}

impl QuorumMember {
    /// Opens the metadata log and state machine, starts the Raft core and the controller
    /// listener, and forms the quorum from `controller.quorum.voters` if this member's log is new.
    pub async fn start(config: &Config, publish: Publish) -> Result<Rc<QuorumMember>> {
        let node = config.node_id as u64;
        let voters: BTreeMap<u64, BasicNode> = config
            .quorum_voters
            .iter()
            .map(|v| {
                (
                    v.id as u64,
                    BasicNode::new(format!("{}:{}", v.host, v.port)),
                )
            })
            .collect();
        let listener = config
            .controller_listener()
            .context("a quorum member needs a controller listener")?;
        let socket = crate::network::bind_exclusive(listener.socket_addr()?)
            .map_err(|e| anyhow::anyhow!("listening on {listener}: {e}"))?;
        let log = MetadataLogStore::open(UringStorage, SystemClock, &config.data_dir)
            .await
            .context("opening the metadata log")?;
        let empty = MetadataImage::new(String::new(), config.log.clone());
        let machine = MetadataMachine::open(
            UringStorage,
            &config.data_dir,
            BrokerId(config.node_id),
            empty,
            publish,
        )
        .await
        .context("opening the metadata snapshot")?;
        let heartbeats = Rc::new(RefCell::new(Heartbeats::default()));
        let transport = QuorumNetwork {
            heartbeats: heartbeats.clone(),
        };
        let raft = MetadataRaft::new(node, raft_config()?, transport, log, machine.clone())
            .await
            .context("starting the metadata quorum")?;
        let images: network::ImageSource = {
            let machine = machine.clone();
            Rc::new(move || machine.applied())
        };
        glommio::spawn_local(network::serve(
            socket,
            raft.clone(),
            heartbeats.clone(),
            images,
        ))
        .detach();
        if !raft.is_initialized().await? {
            // Every voter forms the quorum with the same voters: safe, one leader wins.
            if let Err(err) = raft.initialize(voters.clone()).await {
                tracing::info!("quorum already formed: {err}");
            }
        }
        tracing::info!("metadata quorum member {node} of {:?}", voters.keys());
        let member = Rc::new(QuorumMember {
            node,
            raft,
            machine,
            voters,
            heartbeats,
        });
        glommio::spawn_local(member.clone().name_the_cluster()).detach();
        glommio::spawn_local(member.clone().log_leader_changes()).detach();
        Ok(member)
    }

    /// The image as of the last command this member applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.machine.image()
    }

    /// Why this member's Raft core stopped for good (its metadata log failed a write, say), if
    /// it did: the member then neither votes nor applies, and its broker must not go on.
    pub fn fatal(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let state = metrics.borrow_watched();
        state.running_state.as_ref().err().map(|e| e.to_string())
    }

    /// The current leader's node id, if one is known.
    pub async fn leader(&self) -> Option<u64> {
        self.raft.current_leader().await
    }

    /// Logs each new quorum leader as this member learns of it.
    async fn log_leader_changes(self: Rc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut known = None;
        loop {
            let (leader, term) = {
                let now = metrics.borrow_watched();
                (now.current_leader, now.current_term)
            };
            if leader.is_some() && leader != known {
                tracing::info!(
                    "metadata quorum leader is now {} (term {term})",
                    leader.unwrap_or_default()
                );
            }
            if leader == Some(self.node) {
                self.heartbeats.borrow_mut().lead(std::time::Instant::now());
            } else {
                self.heartbeats.borrow_mut().follow();
            }
            known = leader;
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The brokers' heartbeats as this member has heard them (none while it follows).
    pub fn heartbeats(&self) -> &RefCell<Heartbeats> {
        &self.heartbeats
    }

    /// Hands `beat` to the quorum's leader (this member or another) within `ttl`.
    pub async fn heartbeat(&self, beat: BrokerHeartbeat, ttl: Duration) -> Result<(), String> {
        let leader = self.raft.current_leader().await;
        if leader == Some(self.node) {
            return network::take_heartbeat(&self.heartbeats, beat);
        }
        let Some(node) = leader.and_then(|id| self.voters.get(&id)) else {
            return Err("no quorum leader elected yet".into());
        };
        match PeerConnection::heartbeat(&node.addr, beat, ttl).await {
            Ok(outcome) => outcome,
            Err(err) => Err(format!("leader at {}: {err}", node.addr)),
        }
    }

    /// While the cluster has no name: if this member leads, commits one.
    async fn name_the_cluster(self: Rc<Self>) {
        while self.image().cluster_id.is_empty() {
            if self.raft.current_leader().await == Some(self.node) {
                let id = Uuid::new_v4().simple().to_string()[..22].to_string();
                match self.raft.client_write(bootstrap_command(&id)).await {
                    Ok(_) => tracing::info!("named the cluster {}", self.image().cluster_id),
                    Err(err) => tracing::info!("naming the cluster: {err}"),
                }
            }
            glommio::timer::sleep(Duration::from_millis(limits::QUORUM_RETRY_INTERVAL_MS)).await;
        }
    }

    /// Commits `records` through the leader (this member or another) and waits for the answer.
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<(), ProposeError> {
        let cluster_id = self.image().cluster_id.clone();
        if cluster_id.is_empty() {
            return Err(ProposeError::Unavailable(
                "the cluster is not named yet".into(),
            ));
        }
        let proposal = command(&cluster_id, records);
        match self.raft.client_write(proposal.clone()).await {
            Ok(written) => written.data.map_err(ProposeError::Refused),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                self.forward(to.leader_id, proposal).await
            }
            Err(err) => Err(ProposeError::Unavailable(err.to_string())),
        }
    }

    async fn forward(&self, leader: Option<u64>, proposal: Command) -> Result<(), ProposeError> {
        let Some(node) = leader.and_then(|id| self.voters.get(&id)) else {
            return Err(ProposeError::Unavailable("no leader elected yet".into()));
        };
        let ttl = Duration::from_millis(limits::QUORUM_PROPOSE_TIMEOUT_MS);
        match PeerConnection::forward(&node.addr, proposal, ttl).await {
            Ok(outcome) => outcome.map_err(ProposeError::Refused),
            Err(err) => Err(ProposeError::Unavailable(format!(
                "leader at {}: {err}",
                node.addr
            ))),
        }
    }
}
