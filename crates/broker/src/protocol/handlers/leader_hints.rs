//! Where a partition's leader is now, for a client this broker refused with NOT_LEADER_OR_FOLLOWER
//! or FENCED_LEADER_EPOCH: Produce (v10+) and Fetch (v12+) answers carry the leader and its epoch
//! per partition and the leaders' addresses once per response (KIP-951), so that the client goes
//! straight to the new leader instead of refreshing its metadata first.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
use kafka_protocol::messages::BrokerId as WireBrokerId;
use kafka_protocol::protocol::StrBytes;

use super::advertised;
use super::coordinator::Client;
use crate::error::ErrorCode;
use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;
use crate::shard::Shard;

/// A partition's leader as the image has it: its broker and leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader: BrokerId,
    pub epoch: i32,
}

/// A leader's address on the client's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEndpoint {
    pub id: BrokerId,
    pub host: StrBytes,
    pub port: i32,
}

/// Collects hints over one response.
pub struct LeaderHints<'a> {
    shard: &'a Shard,
    client: &'a Client,
    image: Arc<MetadataImage>,
    /// False for versions that cannot carry hints: nothing is collected.
    enabled: bool,
    leaders: BTreeSet<BrokerId>,
}

impl<'a> LeaderHints<'a> {
    pub fn new(shard: &'a Shard, client: &'a Client, enabled: bool) -> LeaderHints<'a> {
        LeaderHints {
            image: shard.image(),
            shard,
            client,
            enabled,
            leaders: BTreeSet::new(),
        }
    }

    /// The leader to point a client at after refusing it `code` for `topic`/`partition`, if
    /// the partition has a live leader; remembered for `endpoints`.
    pub fn hint(&mut self, topic: &str, partition: i32, code: ErrorCode) -> Option<LeaderHint> {
        let redirected = matches!(
            code,
            ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch
        );
        if !self.enabled || !redirected {
            return None;
        }
        let state = self
            .image
            .topic(topic)?
            .partition_states
            .get(usize::try_from(partition).ok()?)?;
        if !self.image.is_live(state.leader) {
            return None;
        }
        self.leaders.insert(state.leader);
        Some(LeaderHint {
            leader: state.leader,
            epoch: state.leader_epoch.0,
        })
    }

    /// `hint` as Produce's field (-1, -1 when there is none).
    pub fn for_refusal(
        &mut self,
        topic: &str,
        partition: i32,
        code: ErrorCode,
    ) -> LeaderIdAndEpoch {
        match self.hint(topic, partition, code) {
            Some(hint) => LeaderIdAndEpoch::default()
                .with_leader_id(WireBrokerId(hint.leader.0))
                .with_leader_epoch(hint.epoch),
            None => LeaderIdAndEpoch::default()
                .with_leader_id(WireBrokerId(-1))
                .with_leader_epoch(-1),
        }
    }

    /// The addresses of every leader hinted at, on the client's listener.
    pub fn leader_endpoints(&self) -> Vec<LeaderEndpoint> {
        let me = BrokerId(self.shard.config.node_id);
        self.leaders
            .iter()
            .filter_map(|&id| {
                if id == me {
                    let (host, port) = advertised(self.shard, self.client);
                    return Some(LeaderEndpoint { id, host, port });
                }
                let endpoint = self
                    .image
                    .brokers
                    .get(&id)?
                    .endpoints
                    .iter()
                    .find(|e| *e.name == *self.client.listener)?;
                Some(LeaderEndpoint {
                    id,
                    host: StrBytes::from_string(endpoint.host.clone()),
                    port: i32::from(endpoint.port),
                })
            })
            .collect()
    }

    /// `leader_endpoints` as Produce's field.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        self.leader_endpoints()
            .into_iter()
            .map(|e| {
                NodeEndpoint::default()
                    .with_node_id(WireBrokerId(e.id.0))
                    .with_host(e.host)
                    .with_port(e.port)
            })
            .collect()
    }
}
