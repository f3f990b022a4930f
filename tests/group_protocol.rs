//! The group APIs over a raw socket against the real broker: every advertised version gets a
//! well-formed answer, bad input gets Kafka's error codes, and committed offsets and group
//! metadata survive kill -9.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{call, connect, create_topic, earliest_offset, Broker, SHARD_COUNTS};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const GROUP_MAX_SIZE_REACHED: i16 = 81;
const FENCED_INSTANCE_ID: i16 = 82;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group_id(s: &str) -> GroupId {
    GroupId(text(s))
}

fn find_coordinator(s: &mut TcpStream, group: &str) {
    let r: FindCoordinatorResponse = call(
        s,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(text(group)),
    );
    assert_eq!(r.error_code, NONE);
}

fn join_request(
    group: &str,
    member: &str,
    instance: Option<&str>,
    metadata: Bytes,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member))
        .with_group_instance_id(instance.map(text))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(metadata)])
}

/// Joins a one-member group at `version` (through MEMBER_ID_REQUIRED where the version has it)
/// and syncs it at SyncGroup v3; returns (member id, generation).
fn join_alone(s: &mut TcpStream, group: &str, version: i16) -> (String, i32) {
    let mut member = String::new();
    if version >= 4 {
        let r: JoinGroupResponse = call(
            s,
            ApiKey::JoinGroup,
            version,
            &join_request(group, "", None, Bytes::from_static(b"m")),
        );
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED, "JoinGroup v{version}");
        member = r.member_id.to_string();
        assert!(!member.is_empty());
    }
    let r: JoinGroupResponse = call(
        s,
        ApiKey::JoinGroup,
        version,
        &join_request(group, &member, None, Bytes::from_static(b"m")),
    );
    assert_eq!(r.error_code, NONE, "JoinGroup v{version}");
    assert_eq!(r.leader, r.member_id, "a lone member leads");
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"m"));
    (r.member_id.to_string(), r.generation_id)
}

fn sync(
    s: &mut TcpStream,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
) -> SyncGroupResponse {
    let mut request = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(text(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(member))
            .with_assignment(Bytes::from_static(b"assignment"))]);
    if version >= 5 {
        request = request
            .with_protocol_type(Some(text("consumer")))
            .with_protocol_name(Some(text("range")));
    }
    call(s, ApiKey::SyncGroup, version, &request)
}

fn heartbeat(
    s: &mut TcpStream,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> i16 {
    let r: HeartbeatResponse = call(
        s,
        ApiKey::Heartbeat,
        3,
        &HeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id(generation)
            .with_member_id(text(member))
            .with_group_instance_id(instance.map(text)),
    );
    r.error_code
}

#[allow(clippy::too_many_arguments)]
fn commit(
    s: &mut TcpStream,
    version: i16,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    let r: OffsetCommitResponse = call(
        s,
        ApiKey::OffsetCommit,
        version,
        &OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)
                    .with_committed_metadata(Some(text("meta")))])]),
    );
    r.topics[0].partitions[0].error_code
}

fn fetch_offset(s: &mut TcpStream, version: i16, group: &str, topic: &str, partition: i32) -> i64 {
    if version >= 8 {
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(text(topic)))
                    .with_partition_indexes(vec![partition])]))]);
        let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, version, &request);
        assert_eq!(r.groups[0].error_code, NONE);
        return r.groups[0].topics[0].partitions[0].committed_offset;
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partition_indexes(vec![partition])]));
    let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, version, &request);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.topics[0].partitions[0].error_code, NONE);
    r.topics[0].partitions[0].committed_offset
}

fn describe(
    s: &mut TcpStream,
    version: i16,
    group: &str,
) -> describe_groups_response::DescribedGroup {
    let r: DescribeGroupsResponse = call(
        s,
        ApiKey::DescribeGroups,
        version,
        &DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
    );
    r.groups.into_iter().next().unwrap()
}

fn leave(s: &mut TcpStream, version: i16, group: &str, member: &str) -> i16 {
    let mut request = LeaveGroupRequest::default().with_group_id(group_id(group));
    request = if version >= 3 {
        request.with_members(vec![MemberIdentity::default().with_member_id(text(member))])
    } else {
        request.with_member_id(text(member))
    };
    let r: LeaveGroupResponse = call(s, ApiKey::LeaveGroup, version, &request);
    if version >= 3 {
        assert_eq!(r.error_code, NONE);
        r.members[0].error_code
    } else {
        r.error_code
    }
}

fn delete_group(s: &mut TcpStream, version: i16, group: &str) -> i16 {
    let r: DeleteGroupsResponse = call(
        s,
        ApiKey::DeleteGroups,
        version,
        &DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]),
    );
    r.results[0].error_code
}

#[test]
fn every_group_api_version_is_answered() {
    let broker = Broker::start("group-versions", 2, &["group.initial.rebalance.delay.ms=0"]);
    let mut s = connect(&broker);
    create_topic(&mut s, "gv", 3);
    for v in 0..=4 {
        let mut request = FindCoordinatorRequest::default();
        if v >= 4 {
            request = request.with_coordinator_keys(vec![text("a"), text("b")]);
        } else {
            request = request.with_key(text("a"));
        }
        let r: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, v, &request);
        if v >= 4 {
            assert_eq!(r.coordinators.len(), 2);
            assert!(r
                .coordinators
                .iter()
                .all(|c| c.error_code == NONE && c.port == broker.port as i32));
        } else {
            assert_eq!((r.error_code, r.port), (NONE, broker.port as i32), "v{v}");
        }
    }
    for v in 0..=9i16 {
        let group = format!("join-v{v}");
        let (member, generation) = join_alone(&mut s, &group, v);
        let synced = sync(&mut s, (v % 6).max(0), &group, &member, generation);
        assert_eq!(synced.error_code, NONE, "SyncGroup v{}", v % 6);
        assert_eq!(synced.assignment, Bytes::from_static(b"assignment"));
        let hb: HeartbeatResponse = call(
            &mut s,
            ApiKey::Heartbeat,
            v % 5,
            &HeartbeatRequest::default()
                .with_group_id(group_id(&group))
                .with_generation_id(generation)
                .with_member_id(text(&member)),
        );
        assert_eq!(hb.error_code, NONE, "Heartbeat v{}", v % 5);
    }
    let (member, generation) = join_alone(&mut s, "offsets", 5);
    assert_eq!(
        sync(&mut s, 3, "offsets", &member, generation).error_code,
        NONE
    );
    for v in 2..=9 {
        assert_eq!(
            commit(
                &mut s,
                v,
                "offsets",
                &member,
                generation,
                "gv",
                1,
                100 + v as i64
            ),
            NONE,
            "OffsetCommit v{v}"
        );
    }
    for v in 1..=9 {
        assert_eq!(
            fetch_offset(&mut s, v, "offsets", "gv", 1),
            109,
            "OffsetFetch v{v}"
        );
        assert_eq!(
            fetch_offset(&mut s, v, "offsets", "gv", 2),
            -1,
            "nothing committed"
        );
    }
    for v in 0..=5 {
        let d = describe(&mut s, v, "offsets");
        assert_eq!(d.group_state.as_str(), "Stable", "DescribeGroups v{v}");
        assert_eq!(d.protocol_data.as_str(), "range");
        assert_eq!(d.members.len(), 1);
        assert_eq!(
            d.members[0].member_assignment,
            Bytes::from_static(b"assignment")
        );
        assert_eq!(d.members[0].client_id.as_str(), "every-version");
        assert_eq!(
            describe(&mut s, v, "no-such-group").group_state.as_str(),
            "Dead"
        );
    }
    for v in 0..=5 {
        let r: ListGroupsResponse =
            call(&mut s, ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert_eq!(r.error_code, NONE);
        assert!(
            r.groups.iter().any(|g| g.group_id.as_str() == "offsets"),
            "ListGroups v{v}"
        );
        assert_eq!(r.groups.len(), 11);
        if v >= 4 {
            let stable: ListGroupsResponse = call(
                &mut s,
                ApiKey::ListGroups,
                v,
                &ListGroupsRequest::default().with_states_filter(vec![text("Empty")]),
            );
            assert!(stable.groups.is_empty(), "no group is empty yet");
        }
    }
    assert_eq!(delete_group(&mut s, 0, "offsets"), NON_EMPTY_GROUP);
    for v in 0..=5 {
        let group = format!("join-v{v}");
        // join-v* groups are Stable with one member each: leave them at every version.
        let member = describe(&mut s, 5, &group).members[0].member_id.to_string();
        assert_eq!(leave(&mut s, v, &group, &member), NONE, "LeaveGroup v{v}");
        assert_eq!(describe(&mut s, 5, &group).group_state.as_str(), "Empty");
    }
    for v in 0..=2 {
        let group = format!("join-v{v}");
        assert_eq!(delete_group(&mut s, v, &group), NONE, "DeleteGroups v{v}");
        assert_eq!(delete_group(&mut s, v, &group), GROUP_ID_NOT_FOUND);
    }
    let deleted: OffsetDeleteResponse = call(
        &mut s,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(group_id("offsets"))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(text("gv")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(1)
                ])]),
    );
    assert_eq!(deleted.error_code, NONE);
    assert_eq!(
        deleted.topics[0].partitions[0].error_code, NONE,
        "a member subscribed to nothing decodable"
    );
    assert_eq!(fetch_offset(&mut s, 5, "offsets", "gv", 1), -1);
}

#[test]
fn bad_group_requests_get_kafka_error_codes() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("group-bad", cores, &["group.initial.rebalance.delay.ms=0"]);
        let mut s = connect(&broker);
        create_topic(&mut s, "t", 2);
        find_coordinator(&mut s, "g");
        assert_eq!(heartbeat(&mut s, "nobody", "m", 1, None), UNKNOWN_MEMBER_ID);
        let (member, generation) = join_alone(&mut s, "g", 5);
        assert_eq!(
            sync(&mut s, 3, "g", &member, generation + 1).error_code,
            ILLEGAL_GENERATION
        );
        assert_eq!(
            sync(&mut s, 3, "g", "stranger", generation).error_code,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(sync(&mut s, 3, "g", &member, generation).error_code, NONE);
        assert_eq!(
            heartbeat(&mut s, "g", &member, generation + 5, None),
            ILLEGAL_GENERATION
        );
        assert_eq!(
            heartbeat(&mut s, "g", "stranger", generation, None),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            commit(&mut s, 8, "g", &member, generation - 1, "t", 0, 5),
            ILLEGAL_GENERATION
        );
        assert_eq!(
            commit(&mut s, 8, "g", "", -1, "t", 0, 5),
            UNKNOWN_MEMBER_ID,
            "outsider commit to a live group"
        );
        assert_eq!(
            commit(&mut s, 8, "g", &member, generation, "t", 7, 5),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            commit(&mut s, 8, "g", &member, generation, "nope", 0, 5),
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(commit(&mut s, 8, "", "", -1, "t", 0, 5), INVALID_GROUP_ID);
        assert_eq!(
            commit(&mut s, 8, "unknown-group", "m", 3, "t", 0, 5),
            ILLEGAL_GENERATION
        );

        let short =
            join_request("g2", "", None, Bytes::from_static(b"m")).with_session_timeout_ms(10);
        let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 5, &short);
        assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);
        let r: JoinGroupResponse = call(
            &mut s,
            ApiKey::JoinGroup,
            5,
            &join_request("", "", None, Bytes::new()),
        );
        assert_eq!(r.error_code, INVALID_GROUP_ID);
        let huge = Bytes::from(vec![7u8; 2 * 1024 * 1024]);
        let r: JoinGroupResponse = call(
            &mut s,
            ApiKey::JoinGroup,
            5,
            &join_request("g2", "", None, huge),
        );
        assert_eq!(r.error_code, INVALID_REQUEST, "oversized member metadata");

        // A join flood: member ids are handed out only up to group.max.size (1000 by default).
        let mut codes = Vec::new();
        for _ in 0..1_100 {
            let r: JoinGroupResponse = call(
                &mut s,
                ApiKey::JoinGroup,
                5,
                &join_request("flood", "", None, Bytes::from_static(b"m")),
            );
            codes.push(r.error_code);
        }
        assert_eq!(
            codes.iter().filter(|c| **c == MEMBER_ID_REQUIRED).count(),
            1_000
        );
        assert_eq!(
            codes
                .iter()
                .filter(|c| **c == GROUP_MAX_SIZE_REACHED)
                .count(),
            100
        );

        assert_eq!(leave(&mut s, 3, "g", "stranger"), UNKNOWN_MEMBER_ID);
        let delete = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(TopicName(text("__consumer_offsets")))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(-1),
                ])]);
        let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &delete);
        assert_eq!(
            r.topics[0].partitions[0].error_code, 17,
            "internal logs keep their records"
        );
        assert!(broker.log().contains("listening on"));
        assert_eq!(
            heartbeat(&mut s, "g", &member, generation, None),
            NONE,
            "the broker still serves"
        );
    }
}

#[test]
fn static_members_are_fenced_by_their_successor() {
    let broker = Broker::start("group-static", 2, &["group.initial.rebalance.delay.ms=0"]);
    let mut s = connect(&broker);
    find_coordinator(&mut s, "s");
    let r: JoinGroupResponse = call(
        &mut s,
        ApiKey::JoinGroup,
        5,
        &join_request("s", "", Some("i-1"), Bytes::from_static(b"m")),
    );
    assert_eq!(r.error_code, NONE, "static members skip MEMBER_ID_REQUIRED");
    let (old, generation) = (r.member_id.to_string(), r.generation_id);
    assert_eq!(sync(&mut s, 3, "s", &old, generation).error_code, NONE);
    // The static leader restarts; v9 tells it to skip the assignment (before v9 it is shown the
    // old leader id, see the state machine's tests): no rebalance either way.
    let r: JoinGroupResponse = call(
        &mut s,
        ApiKey::JoinGroup,
        9,
        &join_request("s", "", Some("i-1"), Bytes::from_static(b"m")),
    );
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, generation, "no rebalance");
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_ne!(r.member_id.to_string(), old);
    assert_eq!(
        heartbeat(&mut s, "s", &old, generation, Some("i-1")),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        heartbeat(&mut s, "s", &r.member_id, generation, Some("i-1")),
        NONE
    );
    // A dynamic member joining makes the group rebalance; the static member learns it from its
    // heartbeat, rejoins, and both get the new generation.
    let r2: JoinGroupResponse = call(
        &mut s,
        ApiKey::JoinGroup,
        5,
        &join_request("s", "", None, Bytes::from_static(b"m")),
    );
    assert_eq!(r2.error_code, MEMBER_ID_REQUIRED);
    let mut other = connect(&broker);
    let joiner = std::thread::spawn(move || {
        let r: JoinGroupResponse = call(
            &mut other,
            ApiKey::JoinGroup,
            5,
            &join_request("s", &r2.member_id, None, Bytes::from_static(b"m")),
        );
        r
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while heartbeat(&mut s, "s", &r.member_id, generation, Some("i-1")) != REBALANCE_IN_PROGRESS {
        assert!(std::time::Instant::now() < deadline, "no rebalance started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rejoined: JoinGroupResponse = call(
        &mut s,
        ApiKey::JoinGroup,
        5,
        &join_request("s", &r.member_id, Some("i-1"), Bytes::from_static(b"m")),
    );
    let joined = joiner.join().unwrap();
    assert_eq!((rejoined.error_code, joined.error_code), (NONE, NONE));
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(joined.generation_id, generation + 1);
    assert_eq!(
        rejoined.leader, r.member_id,
        "the static leader keeps leading"
    );
    assert_eq!(rejoined.members.len(), 2);
}

#[test]
fn committed_offsets_and_groups_survive_kill_9() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start(
            "group-kill9",
            cores,
            &["group.initial.rebalance.delay.ms=0"],
        );
        let mut s = connect(&broker);
        create_topic(&mut s, "k", 4);
        find_coordinator(&mut s, "durable");
        let (member, generation) = join_alone(&mut s, "durable", 5);
        assert_eq!(
            sync(&mut s, 3, "durable", &member, generation).error_code,
            NONE
        );
        for p in 0..4 {
            assert_eq!(
                commit(
                    &mut s,
                    8,
                    "durable",
                    &member,
                    generation,
                    "k",
                    p,
                    10 * p as i64 + 1
                ),
                NONE
            );
        }
        // Later commits win over earlier ones after replay.
        assert_eq!(
            commit(&mut s, 8, "durable", &member, generation, "k", 0, 77),
            NONE
        );
        assert_eq!(commit(&mut s, 8, "standalone", "", -1, "k", 3, 5), NONE);
        drop(s);
        broker.kill9();
        broker.restart();
        let mut s = connect(&broker);
        find_coordinator(&mut s, "durable");
        assert_eq!(
            fetch_offset(&mut s, 5, "durable", "k", 0),
            77,
            "{cores} shards"
        );
        for p in 1..4 {
            assert_eq!(
                fetch_offset(&mut s, 5, "durable", "k", p),
                10 * p as i64 + 1
            );
        }
        assert_eq!(fetch_offset(&mut s, 5, "standalone", "k", 3), 5);
        // Commits after the restart replace the replayed ones.
        assert_eq!(commit(&mut s, 8, "standalone", "", -1, "k", 3, 6), NONE);
        assert_eq!(fetch_offset(&mut s, 5, "standalone", "k", 3), 6);
        // The group itself came back Stable: its member heartbeats on.
        assert_eq!(
            heartbeat(&mut s, "durable", &member, generation, None),
            NONE
        );
        assert_eq!(
            describe(&mut s, 5, "durable").group_state.as_str(),
            "Stable"
        );
        // Deleting the emptied group removes its offsets for good, across another restart.
        assert_eq!(leave(&mut s, 3, "durable", &member), NONE);
        assert_eq!(delete_group(&mut s, 2, "durable"), NONE);
        drop(s);
        broker.kill9();
        broker.restart();
        let mut s = connect(&broker);
        assert_eq!(fetch_offset(&mut s, 5, "durable", "k", 0), -1);
        assert_eq!(describe(&mut s, 5, "durable").group_state.as_str(), "Dead");
        assert_eq!(fetch_offset(&mut s, 5, "standalone", "k", 3), 6);
    }
}

#[test]
fn the_offsets_log_is_compacted_and_stays_correct_across_kill_9() {
    let mut broker = Broker::start(
        "group-compact",
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.num.partitions=1",
            "offsets.topic.segment.bytes=16384",
        ],
    );
    let mut s = connect(&broker);
    create_topic(&mut s, "c", 4);
    find_coordinator(&mut s, "busy");
    let (member, generation) = join_alone(&mut s, "busy", 5);
    assert_eq!(
        sync(&mut s, 3, "busy", &member, generation).error_code,
        NONE
    );
    // ~2,000 commits of ~130 bytes: a dozen 16 KiB segments of mostly superseded offsets.
    for i in 0..2_000 {
        assert_eq!(
            commit(&mut s, 8, "busy", &member, generation, "c", i % 4, i as i64),
            NONE
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while earliest_offset(&mut s, "__consumer_offsets", 0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never compacted:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whole segments below the new start go at once, or at the next check if a flush was
    // sealing them.
    let segments = || {
        std::fs::read_dir(broker.data_dir.join("__consumer_offsets-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    while segments() > 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} segments left after compaction",
            segments()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in 0..4 {
        assert_eq!(fetch_offset(&mut s, 5, "busy", "c", p), 1_996 + p as i64);
    }
    drop(s);
    broker.kill9();
    broker.restart();
    let mut s = connect(&broker);
    for p in 0..4 {
        assert_eq!(
            fetch_offset(&mut s, 5, "busy", "c", p),
            1_996 + p as i64,
            "after kill -9"
        );
    }
    assert_eq!(
        heartbeat(&mut s, "busy", &member, generation, None),
        NONE,
        "the group survived compaction"
    );
}
