//! The classic group state machine driven by a fake clock: joins, generations, timeouts,
//! static membership and the offset-commit rules.

use bytes::Bytes;

use super::state::*;
use crate::error::ErrorCode;

fn config() -> GroupConfig {
    GroupConfig {
        min_session_timeout_ms: 6_000,
        max_session_timeout_ms: 1_800_000,
        initial_rebalance_delay_ms: 0,
        max_size: 10,
    }
}

fn request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(String::from),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

fn now<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(t) => t,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(reply: Reply<T>) -> futures::channel::oneshot::Receiver<T> {
    match reply {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected a parked answer"),
    }
}

fn ready<T>(rx: &mut futures::channel::oneshot::Receiver<T>) -> T {
    rx.try_recv()
        .expect("sender alive")
        .expect("answer is ready")
}

fn pending<T>(rx: &mut futures::channel::oneshot::Receiver<T>) -> bool {
    matches!(rx.try_recv(), Ok(None))
}

/// Joins a new dynamic member through the MEMBER_ID_REQUIRED round; returns its id and the
/// parked join.
fn join_new(
    group: &mut Group,
    t: i64,
) -> (String, futures::channel::oneshot::Receiver<JoinResponse>) {
    let first = now(group.join(request("", None, &["range"]), &config(), t));
    assert_eq!(first.error, ErrorCode::MemberIdRequired);
    let id = first.member_id.clone();
    let rx = later(group.join(request(&id, None, &["range"]), &config(), t));
    (id, rx)
}

/// Runs SyncGroup for every member (leader last) and returns the assignments they got.
fn sync_all(group: &mut Group, generation: i32, leader: &str, others: &[&str]) -> Vec<Bytes> {
    let mut rxs = Vec::new();
    for id in others {
        let step = group.sync(generation, id, None, None, None, vec![]);
        rxs.push(later(step.reply));
    }
    let assignments: Vec<(String, Bytes)> = std::iter::once(leader)
        .chain(others.iter().copied())
        .map(|id| (id.to_string(), Bytes::from(format!("assign-{id}"))))
        .collect();
    let step = group.sync(generation, leader, None, None, None, assignments);
    assert_eq!(step.persist_generation, Some(generation));
    let mut leader_rx = later(step.reply);
    group.assignment_persisted(generation, true, &config(), 0);
    assert_eq!(group.state(), GroupState::Stable);
    let mut out = vec![ready(&mut leader_rx).assignment];
    for mut rx in rxs {
        out.push(ready(&mut rx).assignment);
    }
    out
}

/// A Stable group at generation 2 with leader `a` and follower `b`, both synced.
fn stable_pair() -> (Group, String, String) {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    sync_all(&mut group, 1, &a, &[]);
    let (b, mut rx_b) = join_new(&mut group, 0);
    let mut rx_a = later(group.join(request(&a, None, &["range"]), &config(), 0));
    ready(&mut rx_a);
    ready(&mut rx_b);
    sync_all(&mut group, 2, &a, &[&b]);
    (group, a, b)
}

#[test]
fn two_members_join_sync_and_become_stable() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    // A lone member completes the join at once (no initial delay configured).
    let joined = ready(&mut rx_a);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, a);
    assert_eq!(joined.members.len(), 1);
    sync_all(&mut group, 1, &a, &[]);

    // A second member triggers a rebalance; the first learns it from its heartbeat.
    let (b, mut rx_b) = join_new(&mut group, 100);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert!(pending(&mut rx_b));
    assert_eq!(
        group.heartbeat(1, &a, None, 200),
        ErrorCode::RebalanceInProgress
    );
    let mut rx_a = later(group.join(request(&a, None, &["range"]), &config(), 300));
    let (ja, jb) = (ready(&mut rx_a), ready(&mut rx_b));
    assert_eq!((ja.generation, jb.generation), (2, 2));
    assert_eq!(ja.leader, a, "the leader keeps its place");
    assert_eq!(ja.members.len(), 2, "the leader sees every member");
    assert!(jb.members.is_empty(), "followers see none");
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let got = sync_all(&mut group, 2, &a, &[&b]);
    assert_eq!(
        got,
        vec![
            Bytes::from(format!("assign-{a}")),
            Bytes::from(format!("assign-{b}"))
        ]
    );
    assert_eq!(group.heartbeat(2, &b, None, 400), ErrorCode::None);
    assert_eq!(
        group.heartbeat(1, &b, None, 400),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        group.heartbeat(2, "stranger", None, 400),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn an_expired_session_removes_the_member_and_rebalances() {
    let (mut group, a, b) = stable_pair();

    // b stops heartbeating; a keeps going.
    for t in (1_000..=10_000).step_by(1_000) {
        assert_eq!(group.heartbeat(2, &a, None, t), ErrorCode::None);
        group.tick(&config(), t);
    }
    group.tick(&config(), 10_001);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(2, &b, None, 10_002),
        ErrorCode::UnknownMemberId
    );
    let mut rx_a = later(group.join(request(&a, None, &["range"]), &config(), 10_003));
    let joined = ready(&mut rx_a);
    assert_eq!(joined.generation, 3);
    assert_eq!(joined.members.len(), 1);
}

#[test]
fn members_that_miss_the_rebalance_timeout_are_dropped() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    sync_all(&mut group, 1, &a, &[]);
    let (b, mut rx_b) = join_new(&mut group, 1_000);
    // a keeps heartbeating (so its session lives) but never rejoins.
    for t in (2_000..31_000).step_by(2_000) {
        group.heartbeat(1, &a, None, t);
        group.tick(&config(), t);
        assert!(pending(&mut rx_b), "still waiting for a at {t}");
    }
    group.heartbeat(1, &a, None, 31_000);
    group.tick(&config(), 31_000);
    let joined = ready(&mut rx_b);
    assert_eq!(joined.generation, 2);
    assert_eq!(joined.leader, b, "the only member left leads");
    assert_eq!(
        group.heartbeat(1, &a, None, 31_001),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn the_initial_delay_waits_for_more_members_then_completes() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..config()
    };
    let mut group = Group::new("g", 0);
    let first = now(group.join(request("", None, &["range"]), &config, 0));
    let a = first.member_id;
    let mut rx_a = later(group.join(request(&a, None, &["range"]), &config, 0));
    group.tick(&config, 2_000);
    assert!(pending(&mut rx_a));
    let first = now(group.join(request("", None, &["range"]), &config, 2_500));
    let b = first.member_id;
    let mut rx_b = later(group.join(request(&b, None, &["range"]), &config, 2_500));
    group.tick(&config, 3_000);
    assert!(
        pending(&mut rx_a),
        "a member arrived during the delay: it is extended"
    );
    group.tick(&config, 6_000);
    assert_eq!(ready(&mut rx_a).generation, 1);
    assert_eq!(ready(&mut rx_b).members.len(), 0);
    assert_eq!(group.state(), GroupState::CompletingRebalance);
}

#[test]
fn a_member_leaving_during_the_initial_delay_leaves_the_group_empty() {
    let config = GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..config()
    };
    let mut group = Group::new("g", 0);
    let a = now(group.join(request("", None, &["range"]), &config, 0)).member_id;
    let mut rx = later(group.join(request(&a, None, &["range"]), &config, 0));
    assert_eq!(group.leave(&a, None, &config, 100), ErrorCode::None);
    assert_eq!(ready(&mut rx).error, ErrorCode::UnknownMemberId);
    group.tick(&config, 3_100);
    assert_eq!(group.state(), GroupState::Empty);
}

#[test]
fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let mut group = Group::new("g", 0);
    let mut rx_a = later(group.join(request("", Some("i-a"), &["range"]), &config(), 0));
    let a = ready(&mut rx_a).member_id;
    sync_all(&mut group, 1, &a, &[]);
    let mut rx_b = later(group.join(request("", Some("i-b"), &["range"]), &config(), 0));
    let mut rx_a = later(group.join(request(&a, Some("i-a"), &["range"]), &config(), 0));
    ready(&mut rx_a);
    let b = ready(&mut rx_b).member_id;
    sync_all(&mut group, 2, &a, &[&b]);

    // b restarts: same instance id, no member id. No rebalance; same generation.
    let rejoined = now(group.join(request("", Some("i-b"), &["range"]), &config(), 5_000));
    assert_eq!(rejoined.error, ErrorCode::None);
    assert_eq!(rejoined.generation, 2);
    assert_ne!(rejoined.member_id, b);
    assert_eq!(group.state(), GroupState::Stable);
    assert!(group.take_dirty(), "the new member id must be persisted");
    let step = group.sync(2, &rejoined.member_id, Some("i-b"), None, None, vec![]);
    assert_eq!(
        now(step.reply).assignment,
        Bytes::from(format!("assign-{b}"))
    );
    assert_eq!(
        group.heartbeat(2, &b, Some("i-b"), 5_001),
        ErrorCode::FencedInstanceId
    );
    assert_eq!(group.heartbeat(2, &a, Some("i-a"), 5_001), ErrorCode::None);
}

#[test]
fn a_static_leader_rejoining_before_v9_is_shown_the_old_leader_and_nothing_rebalances() {
    let mut group = Group::new("g", 0);
    let mut rx_a = later(group.join(request("", Some("i-a"), &["range"]), &config(), 0));
    let a = ready(&mut rx_a).member_id;
    sync_all(&mut group, 1, &a, &[]);
    let rejoined = now(group.join(request("", Some("i-a"), &["range"]), &config(), 10));
    assert_eq!(rejoined.error, ErrorCode::None);
    assert_eq!(rejoined.generation, 1, "no rebalance");
    assert_eq!(
        rejoined.leader, a,
        "the old leader id: the client acts as a follower"
    );
    assert!(rejoined.members.is_empty() && !rejoined.skip_assignment);
    assert_eq!(group.state(), GroupState::Stable);
    let step = group.sync(1, &rejoined.member_id, Some("i-a"), None, None, vec![]);
    assert_eq!(
        now(step.reply).assignment,
        Bytes::from(format!("assign-{a}"))
    );
}

#[test]
fn leaving_rebalances_and_the_last_member_leaves_the_group_empty() {
    let (mut group, a, b) = stable_pair();

    assert_eq!(group.leave(&a, None, &config(), 10), ErrorCode::None);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.leave(&a, None, &config(), 11),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(group.leave(&b, None, &config(), 12), ErrorCode::None);
    assert_eq!(group.state(), GroupState::Empty);
    assert!(!group.has_members());
    assert_eq!(group.generation(), 3);
}

#[test]
fn a_commit_from_outside_a_non_empty_group_is_refused() {
    let mut group = Group::new("g", 0);
    assert_eq!(group.validate_offset_commit(-1, "", None), Ok(()));
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    assert_eq!(
        group.validate_offset_commit(1, &a, None),
        Err(ErrorCode::RebalanceInProgress),
        "joined but not yet synced"
    );
    sync_all(&mut group, 1, &a, &[]);
    assert_eq!(group.validate_offset_commit(1, &a, None), Ok(()));
    assert_eq!(
        group.validate_offset_commit(0, &a, None),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        group.validate_offset_commit(1, "x", None),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        group.validate_offset_commit(-1, "", None),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn protocols_are_negotiated_and_inconsistent_ones_refused() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    sync_all(&mut group, 1, &a, &[]);
    let bad = now(group.join(request("", None, &["sticky"]), &config(), 1));
    assert_eq!(bad.error, ErrorCode::InconsistentGroupProtocol);
    let mut wrong_type = request("", None, &["range"]);
    wrong_type.protocol_type = "connect".to_string();
    assert_eq!(
        now(group.join(wrong_type, &config(), 1)).error,
        ErrorCode::InconsistentGroupProtocol
    );
    let bad_timeout = JoinRequest {
        session_timeout_ms: 10,
        ..request("", None, &["range"])
    };
    assert_eq!(
        now(group.join(bad_timeout, &config(), 1)).error,
        ErrorCode::InvalidSessionTimeout
    );
}

#[test]
fn the_most_preferred_common_protocol_wins() {
    let mut group = Group::new("g", 0);
    let first = now(group.join(
        request("", None, &["cooperative-sticky", "range"]),
        &config(),
        0,
    ));
    let mut rx = later(group.join(
        request(&first.member_id, None, &["cooperative-sticky", "range"]),
        &config(),
        0,
    ));
    assert_eq!(
        ready(&mut rx).protocol_name.as_deref(),
        Some("cooperative-sticky")
    );
}

#[test]
fn a_join_flood_is_bounded_by_the_group_size() {
    let mut group = Group::new("g", 0);
    for _ in 0..config().max_size {
        let r = now(group.join(request("", None, &["range"]), &config(), 0));
        assert_eq!(r.error, ErrorCode::MemberIdRequired);
    }
    let r = now(group.join(request("", None, &["range"]), &config(), 0));
    assert_eq!(r.error, ErrorCode::GroupMaxSizeReached);
    // Ids that are never used lapse after the session timeout, freeing the room.
    group.tick(&config(), 10_000);
    let r = now(group.join(request("", None, &["range"]), &config(), 10_001));
    assert_eq!(r.error, ErrorCode::MemberIdRequired);
}

#[test]
fn a_member_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    sync_all(&mut group, 1, &a, &[]);
    let (b, mut rx_b) = join_new(&mut group, 0);
    let mut rx_a = later(group.join(request(&a, None, &["range"]), &config(), 0));
    ready(&mut rx_a);
    ready(&mut rx_b);
    // Only the leader syncs; b keeps heartbeating but never sends SyncGroup.
    let step = group.sync(2, &a, None, None, None, vec![]);
    group.assignment_persisted(step.persist_generation.unwrap(), true, &config(), 0);
    for t in (5_000..=30_000).step_by(5_000) {
        group.heartbeat(2, &a, None, t);
        group.heartbeat(2, &b, None, t);
        group.tick(&config(), t);
    }
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(2, &b, None, 30_001),
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn a_failed_persist_restarts_the_rebalance() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    let step = group.sync(1, &a, None, None, None, vec![]);
    let mut rx = later(step.reply);
    group.assignment_persisted(1, false, &config(), 0);
    assert_eq!(ready(&mut rx).error, ErrorCode::CoordinatorNotAvailable);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_group_rebuilt_from_its_record_keeps_members_and_generation() {
    let mut group = Group::new("g", 0);
    let (a, mut rx_a) = join_new(&mut group, 0);
    ready(&mut rx_a);
    sync_all(&mut group, 1, &a, &[]);
    let record = group.record();
    let mut loaded = Group::from_record("g", record, 50_000);
    assert_eq!(loaded.state(), GroupState::Stable);
    assert_eq!(loaded.generation(), 1);
    assert_eq!(loaded.heartbeat(1, &a, None, 50_001), ErrorCode::None);
    let step = loaded.sync(1, &a, None, None, None, vec![]);
    assert_eq!(
        now(step.reply).assignment,
        Bytes::from(format!("assign-{a}"))
    );
}

/// One step of a random client population against one group.
#[derive(Debug, Clone)]
enum Step {
    /// A new dynamic member (through MEMBER_ID_REQUIRED), or a static one with this instance.
    Join {
        instance: Option<u8>,
    },
    /// A known member rejoins (index into the members seen so far).
    Rejoin(usize),
    Sync(usize),
    Heartbeat(usize),
    Leave(usize),
    /// Time passes (ms).
    Tick(u16),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        prop::option::of(0u8..3).prop_map(|instance| Step::Join { instance }),
        (0usize..8).prop_map(Step::Rejoin),
        (0usize..8).prop_map(Step::Sync),
        (0usize..8).prop_map(Step::Heartbeat),
        (0usize..8).prop_map(Step::Leave),
        (0u16..15_000).prop_map(Step::Tick),
    ]
}

proptest::proptest! {
    /// Whatever clients do, the generation never goes back, an empty group has no members and
    /// a rebalancing or stable one has some, and no JoinGroup or SyncGroup waits forever: once
    /// every deadline has passed, each parked answer has been given.
    #[test]
    fn random_clients_never_break_the_group_or_leave_a_request_hanging(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let config = GroupConfig { initial_rebalance_delay_ms: 1_000, ..config() };
        let mut group = Group::new("g", 0);
        let mut now = 0i64;
        let mut members: Vec<(String, Option<String>)> = Vec::new();
        let mut generation_seen = 0;
        let mut parked_joins = Vec::new();
        let mut parked_syncs = Vec::new();
        for step in steps {
            match step {
                Step::Join { instance } => {
                    let instance = instance.map(|i| format!("i-{i}"));
                    let req = request("", instance.as_deref(), &["range"]);
                    match group.join(req, &config, now) {
                        Reply::Now(r) if r.error == ErrorCode::MemberIdRequired => {
                            let again = request(&r.member_id, None, &["range"]);
                            members.push((r.member_id.clone(), None));
                            if let Reply::Later(rx) = group.join(again, &config, now) {
                                parked_joins.push(rx);
                            }
                        }
                        Reply::Now(r) => {
                            if r.error == ErrorCode::None {
                                members.push((r.member_id, instance));
                            }
                        }
                        Reply::Later(rx) => parked_joins.push(rx),
                    }
                }
                Step::Rejoin(i) => {
                    if let Some((id, instance)) = members.get(i) {
                        let req = request(id, instance.as_deref(), &["range"]);
                        if let Reply::Later(rx) = group.join(req, &config, now) {
                            parked_joins.push(rx);
                        }
                    }
                }
                Step::Sync(i) => {
                    if let Some((id, instance)) = members.get(i) {
                        let assignments = members
                            .iter()
                            .map(|(m, _)| (m.clone(), Bytes::from_static(b"a")))
                            .collect();
                        let step = group.sync(group.generation(), id, instance.as_deref(), None, None, assignments);
                        if let Some(generation) = step.persist_generation {
                            group.assignment_persisted(generation, true, &config, now);
                        }
                        if let Reply::Later(rx) = step.reply {
                            parked_syncs.push(rx);
                        }
                    }
                }
                Step::Heartbeat(i) => {
                    if let Some((id, instance)) = members.get(i) {
                        group.heartbeat(group.generation(), id, instance.as_deref(), now);
                    }
                }
                Step::Leave(i) => {
                    if let Some((id, instance)) = members.get(i) {
                        group.leave(id, instance.as_deref(), &config, now);
                    }
                }
                Step::Tick(ms) => {
                    now += ms as i64;
                    group.tick(&config, now);
                }
            }
            proptest::prop_assert!(group.generation() >= generation_seen);
            generation_seen = group.generation();
            match group.state() {
                GroupState::Empty => proptest::prop_assert!(!group.has_members()),
                GroupState::Stable | GroupState::CompletingRebalance => {
                    proptest::prop_assert!(group.has_members())
                }
                _ => {}
            }
        }
        // Every deadline passes (sessions 10 s, rebalance and sync 30 s).
        for _ in 0..4 {
            now += 31_000;
            group.tick(&config, now);
        }
        for mut rx in parked_joins {
            proptest::prop_assert!(!matches!(rx.try_recv(), Ok(None)), "a JoinGroup still waits");
        }
        for mut rx in parked_syncs {
            proptest::prop_assert!(!matches!(rx.try_recv(), Ok(None)), "a SyncGroup still waits");
        }
        proptest::prop_assert_eq!(group.state(), GroupState::Empty, "everyone's session expired");
    }
}
