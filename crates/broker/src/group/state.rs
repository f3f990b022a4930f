//! The classic group state machine (Kafka's `ClassicGroup`), pure and clock-free: every call takes
//! `now_ms`, so tests drive timeouts, rejoins and generations with a fake clock.
//!
//! Lives on the group's coordinator shard, one `Group` per group id. Replies that must wait for a
//! rebalance are handed out as `oneshot` receivers and completed by a later call (another
//! member's join, the leader's assignment, or `tick`).
//!
//! States: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and back to
//! PreparingRebalance whenever membership or subscriptions change. Dead is a group being deleted.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use futures::channel::oneshot;

use crate::error::ErrorCode;

/// The group settings the broker enforces (Kafka's `group.*` configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i32,
    /// Members plus members still answering MEMBER_ID_REQUIRED (`group.max.size`).
    pub max_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, version differences already resolved.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an unknown member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining may skip the assignment.
    pub supports_skip_assignment: bool,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResponse {
        JoinResponse {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: ErrorCode) -> SyncResponse {
        SyncResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer available now, or one a later event completes.
#[derive(Debug)]
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// What SyncGroup needs from the coordinator shell.
#[derive(Debug)]
pub struct SyncStep {
    pub reply: Reply<SyncResponse>,
    /// The leader sent the assignment: persist the group, then call `assignment_persisted`.
    pub persist_generation: Option<i32>,
}

/// A member as the group metadata record stores it (and DescribeGroups shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// The durable part of a group (Kafka's GroupMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberRecord>,
}

/// DescribeGroups' view of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberRecord>,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResponse>>,
    sync_waiter: Option<oneshot::Sender<SyncResponse>>,
    heartbeat_deadline_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn update(&mut self, req: &JoinRequest) {
        self.client_id = req.client_id.clone();
        self.client_host = req.client_host.clone();
        self.session_timeout_ms = req.session_timeout_ms;
        self.rebalance_timeout_ms = req.rebalance_timeout_ms;
        self.protocol_type = req.protocol_type.clone();
        self.protocols = req.protocols.clone();
    }

    fn answer_join(&mut self, response: JoinResponse) {
        if let Some(tx) = self.join_waiter.take() {
            let _ = tx.send(response);
        }
    }

    fn answer_sync(&mut self, response: SyncResponse) {
        if let Some(tx) = self.sync_waiter.take() {
            let _ = tx.send(response);
        }
    }
}

/// The initial rebalance of an empty group waits this long for more members to arrive.
struct InitialDelay {
    deadline_ms: i64,
    step_ms: i64,
    remaining_ms: i64,
    members_arrived: bool,
}

pub struct Group {
    pub id: String,
    state: GroupState,
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> the member id that currently holds it.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED -> when they lapse if the member never rejoins.
    pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    /// Members that have not sent SyncGroup since the last join completed, and until when they may.
    awaiting_sync: HashSet<String>,
    sync_deadline_ms: i64,
    /// The leader's assignment while it is being persisted.
    pending_assignment: Option<(i32, BTreeMap<String, Bytes>)>,
    /// The durable view changed without a SyncGroup: the shell persists it.
    dirty: bool,
}

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay: None,
            awaiting_sync: HashSet::new(),
            sync_deadline_ms: 0,
            pending_assignment: None,
            dirty: false,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// When the group entered its current state (offsets of an empty group expire from here).
    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// No members and no member ids handed out that may still be used.
    pub fn is_quiet(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    /// Empty, with nobody about to join, and never persisted: forgetting it loses nothing.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.generation == 0
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether the durable view changed since the last call (the shell then persists it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Marks the group deleted: every waiting member is told the coordinator moved.
    pub fn mark_dead(&mut self, now_ms: i64) {
        for member in self.members.values_mut() {
            member.answer_join(JoinResponse::error(
                ErrorCode::CoordinatorNotAvailable,
                &member.id,
            ));
            member.answer_sync(SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
        }
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.transition(GroupState::Dead, now_ms);
    }

    // ---- JoinGroup ----

    pub fn join(
        &mut self,
        req: JoinRequest,
        config: &GroupConfig,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let fail = |code| Reply::Now(JoinResponse::error(code, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable);
        }
        if req.session_timeout_ms < config.min_session_timeout_ms
            || req.session_timeout_ms > config.max_session_timeout_ms
        {
            return fail(ErrorCode::InvalidSessionTimeout);
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(req, config, now_ms)
        } else {
            self.join_known_member(req, config, now_ms)
        }
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    fn is_full(&self, config: &GroupConfig) -> bool {
        self.members.len() + self.pending_members.len() >= config.max_size
    }

    fn join_unknown_member(
        &mut self,
        req: JoinRequest,
        config: &GroupConfig,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        if let Some(instance) = &req.instance_id {
            if let Some(old_id) = self.static_members.get(instance).cloned() {
                return self.rejoin_static_member(old_id, req, config, now_ms);
            }
        }
        if self.is_full(config) {
            return Reply::Now(JoinResponse::error(ErrorCode::GroupMaxSizeReached, ""));
        }
        let member_id = new_member_id(&req.client_id);
        if req.require_known_member_id && req.instance_id.is_none() {
            self.pending_members
                .insert(member_id.clone(), now_ms + req.session_timeout_ms as i64);
            return Reply::Now(JoinResponse::error(ErrorCode::MemberIdRequired, &member_id));
        }
        self.add_member(member_id, req, config, now_ms)
    }

    fn join_known_member(
        &mut self,
        req: JoinRequest,
        config: &GroupConfig,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        if self.pending_members.remove(&req.member_id).is_some() {
            let member_id = req.member_id.clone();
            return self.add_member(member_id, req, config, now_ms);
        }
        if let Err(code) = self.validate_member(&req.member_id, req.instance_id.as_deref()) {
            return Reply::Now(JoinResponse::error(code, &req.member_id));
        }
        let id = req.member_id.clone();
        match self.state {
            GroupState::PreparingRebalance => {
                let rx = self.await_join(&id, &req, now_ms);
                self.maybe_complete_join(now_ms);
                Reply::Later(rx)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = self.members[&id].protocols == req.protocols;
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                if unchanged && (self.state == GroupState::CompletingRebalance || !is_leader) {
                    // Nothing changed: repeat the current generation's answer.
                    self.members
                        .get_mut(&id)
                        .expect("validated")
                        .heartbeat_deadline_ms = now_ms + req.session_timeout_ms as i64;
                    Reply::Now(self.current_join_response(&id, is_leader, false))
                } else {
                    let rx = self.await_join(&id, &req, now_ms);
                    self.prepare_rebalance(config, now_ms);
                    Reply::Later(rx)
                }
            }
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResponse::error(ErrorCode::UnknownMemberId, &id))
            }
        }
    }

    /// Updates a member from its join and parks the join until the rebalance completes.
    fn await_join(
        &mut self,
        id: &str,
        req: &JoinRequest,
        now_ms: i64,
    ) -> oneshot::Receiver<JoinResponse> {
        let member = self.members.get_mut(id).expect("member exists");
        member.update(req);
        member.heartbeat_deadline_ms = now_ms + req.session_timeout_ms as i64;
        let (tx, rx) = oneshot::channel();
        if let Some(old) = member.join_waiter.replace(tx) {
            // A second join from the same member supersedes the first.
            let _ = old.send(JoinResponse::error(ErrorCode::RebalanceInProgress, id));
        }
        rx
    }

    fn add_member(
        &mut self,
        member_id: String,
        req: JoinRequest,
        config: &GroupConfig,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(instance) = &req.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            // As in Kafka, the first member to join leads.
            self.leader = Some(member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                heartbeat_deadline_ms: now_ms + req.session_timeout_ms as i64,
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(delay) = &mut self.initial_delay {
                    delay.members_arrived = true;
                }
                self.maybe_complete_join(now_ms);
            }
            _ => self.prepare_rebalance(config, now_ms),
        }
        Reply::Later(rx)
    }

    /// A known group.instance.id joined without a member id: it takes its old place under a new
    /// member id, and the old id is fenced.
    fn rejoin_static_member(
        &mut self,
        old_id: String,
        req: JoinRequest,
        config: &GroupConfig,
        now_ms: i64,
    ) -> Reply<JoinResponse> {
        let new_id = new_member_id(&req.client_id);
        let mut member = self
            .members
            .remove(&old_id)
            .expect("static members are members");
        member.answer_join(JoinResponse::error(ErrorCode::FencedInstanceId, &old_id));
        member.answer_sync(SyncResponse::error(ErrorCode::FencedInstanceId));
        let unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.update(&req);
        member.heartbeat_deadline_ms = now_ms + req.session_timeout_ms as i64;
        self.members.insert(new_id.clone(), member);
        let instance = req.instance_id.clone().expect("static member");
        self.static_members.insert(instance, new_id.clone());
        if self.awaiting_sync.remove(&old_id) {
            self.awaiting_sync.insert(new_id.clone());
        }
        let is_leader = self.leader.as_deref() == Some(old_id.as_str());
        if is_leader {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged => {
                // No rebalance. A leader that can skip the assignment (v9+) is told it leads;
                // an older one is shown the old leader id, as Kafka does, so it acts as a
                // follower and simply fetches its assignment.
                self.dirty = true;
                let skip = is_leader && req.supports_skip_assignment;
                let mut response = self.current_join_response(&new_id, skip, skip);
                if is_leader && !skip {
                    response.leader = old_id;
                }
                Reply::Now(response)
            }
            GroupState::PreparingRebalance => {
                let rx = self.await_join(&new_id, &req, now_ms);
                self.maybe_complete_join(now_ms);
                Reply::Later(rx)
            }
            _ => {
                let rx = self.await_join(&new_id, &req, now_ms);
                self.prepare_rebalance(config, now_ms);
                Reply::Later(rx)
            }
        }
    }

    fn current_join_response(
        &self,
        member_id: &str,
        with_members: bool,
        skip: bool,
    ) -> JoinResponse {
        JoinResponse {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: skip,
            member_id: member_id.to_string(),
            members: if with_members {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    /// Starts a rebalance: members must rejoin (they learn it from heartbeats).
    fn prepare_rebalance(&mut self, config: &GroupConfig, now_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.answer_sync(SyncResponse::error(ErrorCode::RebalanceInProgress));
            }
        }
        self.pending_assignment = None;
        self.awaiting_sync.clear();
        let timeout = self.max_rebalance_timeout_ms();
        let delay = (config.initial_rebalance_delay_ms as i64).min(timeout);
        if self.state == GroupState::Empty && delay > 0 {
            self.initial_delay = Some(InitialDelay {
                deadline_ms: now_ms + delay,
                step_ms: delay,
                remaining_ms: (timeout - delay).max(0),
                members_arrived: false,
            });
        }
        self.rebalance_deadline_ms = now_ms + timeout;
        self.transition(GroupState::PreparingRebalance, now_ms);
        self.maybe_complete_join(now_ms);
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_members_joined()
        {
            self.complete_join(now_ms);
        }
    }

    /// Ends the join phase: members that did not rejoin leave, the generation advances, a
    /// protocol is chosen and every waiting member gets its JoinGroup answer.
    fn complete_join(&mut self, now_ms: i64) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        self.initial_delay = None;
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.awaiting_sync = self.members.keys().cloned().collect();
        self.sync_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        let leader = self.leader.clone().expect("a non-empty group has a leader");
        let members = self.joined_members();
        let template = self.current_join_response("", false, false);
        for member in self.members.values_mut() {
            member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
            member.assignment = Bytes::new();
            let mut response = template.clone();
            response.member_id = member.id.clone();
            if member.id == leader {
                response.members = members.clone();
            }
            member.answer_join(response);
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n));
            if let Some((name, _)) = choice {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == name) {
                    v.0 += 1;
                }
            }
        }
        // Most votes wins; ties go to the first member's preference.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, name)| name.clone())
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ----

    /// FENCED_INSTANCE_ID when the instance id belongs to another member; UNKNOWN_MEMBER_ID when
    /// the member is not in the group.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            if let Some(holder) = self.static_members.get(instance) {
                if holder != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncStep {
        let now = |reply| SyncStep {
            reply: Reply::Now(reply),
            persist_generation: None,
        };
        if self.state == GroupState::Dead {
            return now(SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            return now(SyncResponse::error(code));
        }
        if generation != self.generation {
            return now(SyncResponse::error(ErrorCode::IllegalGeneration));
        }
        let mismatched = |asked: Option<&str>, have: &Option<String>| {
            asked.is_some_and(|a| have.as_deref() != Some(a))
        };
        if mismatched(protocol_type, &self.protocol_type)
            || mismatched(protocol_name, &self.protocol_name)
        {
            return now(SyncResponse::error(ErrorCode::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::PreparingRebalance => {
                now(SyncResponse::error(ErrorCode::RebalanceInProgress))
            }
            GroupState::Stable => {
                self.awaiting_sync.remove(member_id);
                now(self.sync_response(self.members[member_id].assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                self.awaiting_sync.remove(member_id);
                let (tx, rx) = oneshot::channel();
                let member = self.members.get_mut(member_id).expect("validated");
                member.answer_sync(SyncResponse::error(ErrorCode::RebalanceInProgress));
                member.sync_waiter = Some(tx);
                let is_leader = self.leader.as_deref() == Some(member_id);
                let mut persist_generation = None;
                if is_leader && self.pending_assignment.is_none() {
                    let mut assignment: BTreeMap<String, Bytes> = self
                        .members
                        .keys()
                        .map(|id| (id.clone(), Bytes::new()))
                        .collect();
                    for (id, bytes) in assignments {
                        if let Some(slot) = assignment.get_mut(&id) {
                            *slot = bytes;
                        }
                    }
                    self.pending_assignment = Some((self.generation, assignment));
                    persist_generation = Some(self.generation);
                }
                SyncStep {
                    reply: Reply::Later(rx),
                    persist_generation,
                }
            }
            GroupState::Empty | GroupState::Dead => {
                now(SyncResponse::error(ErrorCode::UnknownMemberId))
            }
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: ErrorCode::None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// The record the shell persists: the group as it stands, with the leader's assignment if
    /// one is being persisted.
    pub fn record(&self) -> GroupRecord {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        let pending = self.pending_assignment.as_ref().map(|(_, a)| a);
        GroupRecord {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(protocol),
                    assignment: pending
                        .and_then(|a| a.get(&m.id).cloned())
                        .unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        }
    }

    /// The leader's assignment for `generation` was persisted (or failed to be): on success the
    /// group becomes Stable and every waiting member gets its assignment.
    pub fn assignment_persisted(
        &mut self,
        generation: i32,
        ok: bool,
        config: &GroupConfig,
        now_ms: i64,
    ) {
        let current = self.state == GroupState::CompletingRebalance
            && self
                .pending_assignment
                .as_ref()
                .is_some_and(|(g, _)| *g == generation);
        if !current {
            return;
        }
        let (_, assignment) = self.pending_assignment.take().expect("checked");
        if !ok {
            for member in self.members.values_mut() {
                member.answer_sync(SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
            }
            self.prepare_rebalance(config, now_ms);
            return;
        }
        self.transition(GroupState::Stable, now_ms);
        for (id, bytes) in assignment {
            if let Some(member) = self.members.get_mut(&id) {
                member.assignment = bytes;
            }
        }
        let template = self.sync_response(Bytes::new());
        for member in self.members.values_mut() {
            let mut response = template.clone();
            response.assignment = member.assignment.clone();
            member.answer_sync(response);
        }
    }

    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now_ms: i64,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            return code;
        }
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        let member = self.members.get_mut(member_id).expect("validated");
        member.heartbeat_deadline_ms = now_ms + member.session_timeout_ms as i64;
        match self.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty => ErrorCode::UnknownMemberId,
            _ => ErrorCode::None,
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        config: &GroupConfig,
        now_ms: i64,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return ErrorCode::UnknownMemberId,
                Some(holder) if !member_id.is_empty() && holder != member_id => {
                    return ErrorCode::FencedInstanceId
                }
                Some(holder) => holder.clone(),
            },
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    self.maybe_complete_join(now_ms);
                    return ErrorCode::None;
                }
                if !self.members.contains_key(member_id) {
                    return ErrorCode::UnknownMemberId;
                }
                member_id.to_string()
            }
        };
        self.remove_member(&id, config, now_ms);
        ErrorCode::None
    }

    fn remove_member(&mut self, id: &str, config: &GroupConfig, now_ms: i64) {
        let Some(mut member) = self.members.remove(id) else {
            return;
        };
        member.answer_join(JoinResponse::error(ErrorCode::UnknownMemberId, id));
        member.answer_sync(SyncResponse::error(ErrorCode::UnknownMemberId));
        if let Some(instance) = &member.instance_id {
            self.static_members.remove(instance);
        }
        self.awaiting_sync.remove(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(config, now_ms)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- timers ----

    /// Applies every deadline that has passed: lapsed member ids, expired sessions, the end of
    /// the initial delay, the rebalance timeout and the sync timeout.
    pub fn tick(&mut self, config: &GroupConfig, now_ms: i64) {
        if self.state == GroupState::Empty && self.pending_members.is_empty() {
            // Most groups on a busy broker: offsets only, no deadlines.
            return;
        }
        let lapsed: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            self.pending_members.remove(&id);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.heartbeat_deadline_ms <= now_ms
                    && m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!("group {}: member {id} session expired", self.id);
            self.remove_member(&id, config, now_ms);
        }
        if self.state == GroupState::PreparingRebalance {
            self.tick_join(now_ms);
        }
        let sync_overdue = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.pending_assignment.is_none()
            && !self.awaiting_sync.is_empty()
            && self.sync_deadline_ms <= now_ms;
        if sync_overdue {
            let late: Vec<String> = self.awaiting_sync.drain().collect();
            for id in late {
                tracing::info!("group {}: member {id} did not sync in time", self.id);
                self.remove_member(&id, config, now_ms);
            }
        }
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms);
        }
    }

    fn tick_join(&mut self, now_ms: i64) {
        match &mut self.initial_delay {
            Some(delay) if delay.deadline_ms <= now_ms => {
                if delay.members_arrived && delay.remaining_ms > 0 {
                    let extra = delay.remaining_ms.min(delay.step_ms);
                    delay.deadline_ms = now_ms + extra;
                    delay.remaining_ms -= extra;
                    delay.members_arrived = false;
                } else {
                    self.initial_delay = None;
                    self.complete_join(now_ms);
                }
            }
            Some(_) => {}
            None if self.rebalance_deadline_ms <= now_ms => self.complete_join(now_ms),
            None => {}
        }
    }

    // ---- offsets, describe, load ----

    /// Kafka's rules for who may commit offsets to a classic group.
    pub fn validate_offset_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            // A commit from outside the group is accepted only while nobody is in it.
            return Err(ErrorCode::UnknownMemberId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        Ok(())
    }

    pub fn summary(&self) -> GroupSummary {
        let stable = self.state == GroupState::Stable;
        let record = self.record();
        GroupSummary {
            state: self.state,
            protocol_type: record.protocol_type.clone(),
            protocol_name: if stable {
                record.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: record
                .members
                .into_iter()
                .map(|mut m| {
                    if !stable {
                        m.subscription = Bytes::new();
                        m.assignment = Bytes::new();
                    }
                    m
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its latest persisted record: Stable with its members (their session
    /// timers restarted) or Empty.
    pub fn from_record(id: &str, record: GroupRecord, now_ms: i64) -> Group {
        let mut group = Group::new(id, record.state_timestamp_ms);
        group.generation = record.generation;
        group.protocol_type = (!record.protocol_type.is_empty()).then_some(record.protocol_type);
        group.protocol_name = record.protocol_name.clone();
        group.leader = record.leader;
        for m in record.members {
            if let Some(instance) = &m.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocols = vec![(
                record.protocol_name.clone().unwrap_or_default(),
                m.subscription,
            )];
            group.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocols,
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    heartbeat_deadline_ms: now_ms + m.session_timeout_ms as i64,
                },
            );
        }
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
        }
        group
    }
}
