//! This broker as an observer of the metadata quorum (`process.roles=broker` with
//! `controller.quorum.voters` set: a broker-only node, as Kafka calls it). It holds no vote and
//! runs no Raft core. It follows the committed metadata by asking the voters, on their
//! controller listeners, for the image newer than the one it has (long-polled: a voter holds the
//! question until it applies something newer, for up to `OBSERVER_FETCH_WAIT_MS`), and installs
//! each on its shards. What its controller decides, its registration and its heartbeats go to
//! the quorum's leader, which it learns from the voters' answers. Lives on shard 0.
//!
//! Deviation from Kafka, whose observers fetch the metadata log itself: an observer here
//! fetches whole images (the metadata file's encoding, bounded by `QUORUM_FRAME_MAX_BYTES`),
//! which keeps observers out of the Raft log's compaction and snapshots. Images only move
//! forward: an answer from a voter behind the one asked before (a lower log index) is ignored.
//! An observer has no controller listener, so the quorum learns it is gone only when its session
//! times out (a voter's death is noticed at once, through its refused Raft connections).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::codec::BrokerHeartbeat;
use super::member::ProposeError;
use super::network::PeerConnection;
use super::state_machine::{command, Publish};
use crate::config::{Config, LogConfig};
use crate::limits;
use crate::metadata::records::{BrokerId, MetadataRecord};
use crate::metadata::{self, MetadataImage};

pub struct QuorumObserver {
    node: BrokerId,
    /// The voters' controller listeners, by node id.
    voters: BTreeMap<u64, String>,
    static_log: LogConfig,
    /// The image installed last, and the log index it was applied at (0: none yet).
    image: RefCell<(u64, Arc<MetadataImage>)>,
    /// The quorum leader the voters last named.
    leader: Cell<Option<u64>>,
}

impl QuorumObserver {
    /// Starts following the quorum of `controller.quorum.voters`; each newer image is handed to
    /// `publish`.
    pub fn start(config: &Config, publish: Publish) -> Rc<QuorumObserver> {
        let voters = config
            .quorum_voters
            .iter()
            .map(|v| (v.id as u64, format!("{}:{}", v.host, v.port)))
            .collect();
        let empty = MetadataImage::new(String::new(), config.log.clone());
        let observer = Rc::new(QuorumObserver {
            node: BrokerId(config.node_id),
            voters,
            static_log: config.log.clone(),
            image: RefCell::new((0, Arc::new(empty))),
            leader: Cell::new(None),
        });
        tracing::info!(
            "observing the metadata quorum of {:?} (a broker-only node)",
            observer.voters.keys()
        );
        glommio::spawn_local(observer.clone().follow(publish)).detach();
        observer
    }

    /// The image as of the last one installed.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().1.clone()
    }

    /// Asks the voters, the leader first, for newer images, forever.
    async fn follow(self: Rc<Self>, publish: Publish) {
        let ids: Vec<u64> = self.voters.keys().copied().collect();
        let retry = Duration::from_millis(limits::QUORUM_RETRY_INTERVAL_MS);
        let ttl = Duration::from_millis(limits::OBSERVER_FETCH_TIMEOUT_MS);
        let mut turn = 0usize;
        let mut failing = false;
        loop {
            let asked = self
                .leader
                .get()
                .filter(|id| self.voters.contains_key(id))
                .unwrap_or(ids[turn % ids.len()]);
            let known = self.image.borrow().0;
            let answer = PeerConnection::fetch_image(
                &self.voters[&asked],
                known,
                limits::OBSERVER_FETCH_WAIT_MS,
                ttl,
            )
            .await;
            let outcome = match answer {
                Ok((leader, applied, image)) => {
                    self.leader.set(leader);
                    match image.filter(|_| applied > known) {
                        Some(bytes) => self.install(applied, &bytes, &publish).await,
                        None => Ok(()),
                    }
                }
                Err(err) => Err(format!("voter {asked}: {err}")),
            };
            match outcome {
                Ok(()) if failing => {
                    tracing::info!("following the metadata quorum again");
                    failing = false;
                }
                Ok(()) => {}
                Err(why) => {
                    if !failing {
                        tracing::warn!("cannot follow the metadata quorum: {why}");
                    }
                    failing = true;
                    self.leader.set(None);
                    turn += 1;
                    glommio::timer::sleep(retry).await;
                }
            }
        }
    }

    /// Decodes an image applied at log index `applied` and installs it.
    async fn install(&self, applied: u64, bytes: &[u8], publish: &Publish) -> Result<(), String> {
        let image = metadata::decode(bytes, self.node, &self.static_log)
            .map_err(|err| format!("an image that does not read back: {err:#}"))?;
        let image = Arc::new(image);
        *self.image.borrow_mut() = (applied, image.clone());
        publish(image).await;
        Ok(())
    }

    /// The leader's controller listener, if the voters named one.
    fn leader_address(&self) -> Option<&str> {
        let leader = self.leader.get()?;
        self.voters.get(&leader).map(String::as_str)
    }

    /// Commits `records` through the quorum's leader and waits for the answer.
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<(), ProposeError> {
        let cluster_id = self.image().cluster_id.clone();
        if cluster_id.is_empty() {
            return Err(ProposeError::Unavailable(
                "no metadata image from the quorum yet".into(),
            ));
        }
        let Some(leader) = self.leader_address() else {
            return Err(ProposeError::Unavailable("no quorum leader known".into()));
        };
        let ttl = Duration::from_millis(limits::QUORUM_PROPOSE_TIMEOUT_MS);
        match PeerConnection::forward(leader, command(&cluster_id, records), ttl).await {
            Ok(outcome) => outcome.map_err(ProposeError::Refused),
            Err(err) => Err(ProposeError::Unavailable(format!(
                "leader at {leader}: {err}"
            ))),
        }
    }

    /// Hands `beat` to the quorum's leader within `ttl`.
    pub async fn heartbeat(&self, beat: BrokerHeartbeat, ttl: Duration) -> Result<(), String> {
        let Some(leader) = self.leader_address() else {
            return Err("no quorum leader known".into());
        };
        match PeerConnection::heartbeat(leader, beat, ttl).await {
            Ok(outcome) => outcome,
            Err(err) => Err(format!("leader at {leader}: {err}")),
        }
    }
}
