//! `sluice group list | describe | reset-offsets | delete`, and the committed-offset helpers
//! `sluice consume --group` shares.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use bytes::Buf;
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestGroup};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::client::{check, Client, Node, EARLIEST, LATEST};
use super::output::{report_deleted, Json, Table};
use super::ClientFlags;

/// What a coordinator answers a commit outside any generation while the group has members.
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;

/// A partition of a topic.
pub type TopicPartition = (String, i32);

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    flags: ClientFlags,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List the groups every broker coordinates
    List,
    /// Describe groups: members, assignments, committed offsets, log ends and lag
    Describe {
        /// Groups to describe
        #[arg(value_name = "GROUP", required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (only while the group has no members)
    ResetOffsets(ResetOffsets),
    /// Delete groups (only groups without members)
    Delete {
        /// Groups to delete
        #[arg(value_name = "GROUP", required = true)]
        groups: Vec<String>,
    },
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("topics").required(true).args(["topic", "all_topics"])))]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])
))]
struct ResetOffsets {
    /// The group whose offsets move
    group: String,
    /// A topic whose partitions move (repeatable)
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    /// Every topic the group has committed offsets for
    #[arg(long)]
    all_topics: bool,
    /// To each partition's first offset
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end
    #[arg(long)]
    to_latest: bool,
    /// To offset N (clamped to each partition's log)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    to_offset: Option<i64>,
    /// To the first offset at or after this time (milliseconds since the epoch)
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    to_timestamp: Option<i64>,
    /// Show the new offsets without committing them
    #[arg(long)]
    dry_run: bool,
}

impl ResetOffsets {
    /// Where the partitions move: exactly one of the four flags is given (clap's "target"
    /// group).
    fn target(&self) -> Target {
        match (self.to_offset, self.to_timestamp) {
            (Some(offset), _) => Target::Offset(offset),
            (_, Some(ms)) => Target::Timestamp(ms),
            _ if self.to_latest => Target::Latest,
            _ => Target::Earliest,
        }
    }
}

pub fn run(args: &GroupArgs) -> Result<()> {
    super::while_coordinator_moves(|| run_once(args))
}

fn run_once(args: &GroupArgs) -> Result<()> {
    let flags = &args.flags;
    match &args.command {
        GroupCommand::List => list(flags),
        GroupCommand::Describe { groups } => describe(flags, groups),
        GroupCommand::ResetOffsets(reset) => reset_offsets(flags, reset),
        GroupCommand::Delete { groups } => delete(flags, groups),
    }
}

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

/// Offsets `group` has committed (all topics).
pub fn committed_offsets(
    client: &mut Client,
    group: &str,
) -> Result<BTreeMap<TopicPartition, i64>> {
    super::while_coordinator_moves(|| committed_offsets_once(client, group))
}

fn committed_offsets_once(
    client: &mut Client,
    group: &str,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let coordinator = client.coordinator(group)?;
    let version = client.version::<OffsetFetchRequest>(coordinator)?;
    let request = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_topics(None)])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None)
    };
    let response = client.send(coordinator, &request)?;
    let what = format!("committed offsets of group {group}");
    let mut offsets = BTreeMap::new();
    let mut add = |topic: &TopicName, partition: i32, offset: i64, code: i16| -> Result<()> {
        check(code, None, format!("{what} ({}/{partition})", topic.0))?;
        if offset >= 0 {
            offsets.insert((topic.0.to_string(), partition), offset);
        }
        Ok(())
    };
    if version >= 8 {
        let g = response
            .groups
            .first()
            .context("empty OffsetFetch response")?;
        check(g.error_code, None, &what)?;
        for t in &g.topics {
            for p in &t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    } else {
        check(response.error_code, None, &what)?;
        for t in &response.topics {
            for p in &t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    }
    Ok(offsets)
}

/// Commits `offsets` for `group` outside any generation (generation -1, no member id), as
/// Kafka's tools do: the coordinator accepts it only while the group has no members.
pub fn commit_offsets(
    client: &mut Client,
    group: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let coordinator = client.coordinator(group)?;
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), &offset) in offsets {
        topics.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response = client.send(coordinator, &request)?;
    for t in &response.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                None,
                format!(
                    "committing offsets of group {group} ({}/{})",
                    t.name.0, p.partition_index
                ),
            )
            .context(
                if p.error_code == UNKNOWN_MEMBER_ID || p.error_code == ILLEGAL_GENERATION {
                    "the group has active members: stop its consumers first"
                } else {
                    "the offsets were not committed"
                },
            )?;
        }
    }
    Ok(())
}

fn list(flags: &ClientFlags) -> Result<()> {
    let mut client = flags.client()?;
    // Each broker lists only the groups it coordinates.
    let mut groups = BTreeMap::new();
    for id in client.broker_ids() {
        let response = client.send(Node::Id(id), &ListGroupsRequest::default())?;
        check(
            response.error_code,
            None,
            format!("listing groups on broker {id}"),
        )?;
        for g in response.groups {
            groups.insert(g.group_id.0.to_string(), g);
        }
    }
    if flags.json {
        let items = groups
            .iter()
            .map(|(id, g)| {
                Json::object([
                    ("group", Json::str(id)),
                    ("state", Json::str(g.group_state.as_str())),
                    ("protocol_type", Json::str(g.protocol_type.as_str())),
                ])
            })
            .collect();
        println!("{}", Json::Array(items));
    } else {
        let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
        for (id, g) in &groups {
            table.row(vec![
                id.clone(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            ]);
        }
        print!("{table}");
    }
    Ok(())
}

/// A member's assigned partitions, decoded when the group uses the consumer protocol.
fn assignment(protocol_type: &str, bytes: &bytes::Bytes) -> Vec<TopicPartition> {
    if protocol_type != "consumer" || bytes.len() < 2 {
        return Vec::new();
    }
    let mut buf = bytes.clone();
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn describe(flags: &ClientFlags, groups: &[String]) -> Result<()> {
    let mut client = flags.client()?;
    let mut described = Vec::new();
    for group in groups {
        described.push(describe_one(&mut client, group, flags.json)?);
    }
    if flags.json {
        println!("{}", Json::Array(described));
    }
    Ok(())
}

fn describe_one(client: &mut Client, group: &str, json: bool) -> Result<Json> {
    let coordinator = client.coordinator(group)?;
    let response = client.send(
        coordinator,
        &DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
    )?;
    let g = response
        .groups
        .first()
        .context("empty DescribeGroups response")?;
    check(
        g.error_code,
        g.error_message.as_ref(),
        format!("describing group {group}"),
    )?;
    let members: Vec<_> = g
        .members
        .iter()
        .map(|m| (m, assignment(&g.protocol_type, &m.member_assignment)))
        .collect();
    let committed = committed_offsets(client, group)?;

    // Every partition committed or assigned, with its owner and its log end offset.
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    for (m, parts) in &members {
        for tp in parts {
            owner.insert(tp.clone(), m.member_id.to_string());
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let topics: BTreeSet<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    for topic in topics {
        let parts: Vec<i32> = partitions
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|&(_, p)| p)
            .collect();
        // A deleted topic's offsets can outlive it: its end is unknown, not an error.
        if let Ok(offsets) = client.list_offsets(topic, &parts, LATEST) {
            ends.extend(
                offsets
                    .into_iter()
                    .map(|(p, o)| ((topic.to_string(), p), o)),
            );
        }
    }
    let lag = |tp: &TopicPartition| Some(ends.get(tp)? - committed.get(tp)?);

    if !json {
        println!(
            "group {group}  state {}  protocol {} ({})  members {}",
            g.group_state,
            if g.protocol_data.is_empty() {
                "-"
            } else {
                g.protocol_data.as_str()
            },
            if g.protocol_type.is_empty() {
                "-"
            } else {
                g.protocol_type.as_str()
            },
            members.len()
        );
        let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let mut table = Table::new(&[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
        ]);
        for tp in &partitions {
            table.row(vec![
                tp.0.clone(),
                tp.1.to_string(),
                dash(committed.get(tp).copied()),
                dash(ends.get(tp).copied()),
                dash(lag(tp)),
                owner.get(tp).cloned().unwrap_or_else(|| "-".to_string()),
            ]);
        }
        print!("{table}");
        if !members.is_empty() {
            let mut table = Table::new(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
            for (m, parts) in &members {
                let assigned: Vec<String> = parts.iter().map(|(t, p)| format!("{t}/{p}")).collect();
                table.row(vec![
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                    assigned.join(","),
                ]);
            }
            println!();
            print!("{table}");
        }
        println!();
    }
    let opt = |v: Option<i64>| v.map_or(Json::Null, Json::Int);
    Ok(Json::object([
        ("group", Json::str(group)),
        ("state", Json::str(g.group_state.as_str())),
        ("protocol_type", Json::str(g.protocol_type.as_str())),
        ("protocol", Json::str(g.protocol_data.as_str())),
        (
            "members",
            Json::Array(
                members
                    .iter()
                    .map(|(m, parts)| {
                        Json::object([
                            ("member_id", Json::str(m.member_id.as_str())),
                            (
                                "instance_id",
                                Json::opt_str(m.group_instance_id.as_ref().map(|s| s.to_string())),
                            ),
                            ("client_id", Json::str(m.client_id.as_str())),
                            ("host", Json::str(m.client_host.as_str())),
                            (
                                "assignment",
                                Json::Array(
                                    parts
                                        .iter()
                                        .map(|(t, p)| {
                                            Json::object([
                                                ("topic", Json::str(t)),
                                                ("partition", Json::Int((*p).into())),
                                            ])
                                        })
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "offsets",
            Json::Array(
                partitions
                    .iter()
                    .map(|tp| {
                        Json::object([
                            ("topic", Json::str(&tp.0)),
                            ("partition", Json::Int(tp.1.into())),
                            ("committed", opt(committed.get(tp).copied())),
                            ("log_end", opt(ends.get(tp).copied())),
                            ("lag", opt(lag(tp))),
                            ("member_id", Json::opt_str(owner.get(tp).cloned())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]))
}

/// Where `reset-offsets` moves each partition.
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

fn reset_offsets(flags: &ClientFlags, args: &ResetOffsets) -> Result<()> {
    let group = args.group.as_str();
    let target = args.target();
    let mut client = flags.client()?;
    let committed = committed_offsets(&mut client, group)?;
    let topics: BTreeSet<String> = if args.all_topics {
        committed.keys().map(|(t, _)| t.clone()).collect()
    } else {
        args.topic.iter().cloned().collect()
    };
    if topics.is_empty() {
        bail!("group {group} has no committed offsets: name its topics with --topic");
    }
    let mut plan: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for topic in &topics {
        let partitions: Vec<i32> = client.leaders(topic)?.into_keys().collect();
        let starts = client.list_offsets(topic, &partitions, EARLIEST)?;
        let ends = client.list_offsets(topic, &partitions, LATEST)?;
        let chosen = match target {
            Target::Earliest => starts.clone(),
            Target::Latest => ends.clone(),
            // Out-of-range offsets are clamped to the log, as Kafka's tool does.
            Target::Offset(n) => partitions
                .iter()
                .map(|p| (*p, n.clamp(starts[p], ends[p])))
                .collect(),
            Target::Timestamp(ms) => client.list_offsets(topic, &partitions, ms)?,
        };
        for (p, offset) in chosen {
            plan.insert((topic.clone(), p), offset);
        }
    }
    let dry_run = args.dry_run;
    if !dry_run {
        commit_offsets(&mut client, group, &plan)?;
    }
    let dash = |v: Option<&i64>| v.map_or("-".to_string(), |v| v.to_string());
    if flags.json {
        let items = plan
            .iter()
            .map(|(tp, new)| {
                Json::object([
                    ("topic", Json::str(&tp.0)),
                    ("partition", Json::Int(tp.1.into())),
                    (
                        "current",
                        committed.get(tp).map_or(Json::Null, |o| Json::Int(*o)),
                    ),
                    ("new", Json::Int(*new)),
                ])
            })
            .collect();
        println!(
            "{}",
            Json::object([
                ("group", Json::str(group)),
                ("dry_run", Json::Bool(dry_run)),
                ("offsets", Json::Array(items)),
            ])
        );
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]);
        for (tp, new) in &plan {
            table.row(vec![
                tp.0.clone(),
                tp.1.to_string(),
                dash(committed.get(tp)),
                new.to_string(),
            ]);
        }
        print!("{table}");
        if dry_run {
            println!("dry run: nothing committed");
        } else {
            println!("committed new offsets for group {group}");
        }
    }
    Ok(())
}

fn delete(flags: &ClientFlags, groups: &[String]) -> Result<()> {
    let mut client = flags.client()?;
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for group in groups {
        let coordinator = client.coordinator(group)?;
        let response = client.send(
            coordinator,
            &DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]),
        )?;
        for r in &response.results {
            match check(
                r.error_code,
                None,
                format!("deleting group {}", r.group_id.0),
            ) {
                Ok(()) => deleted.push(r.group_id.0.to_string()),
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    report_deleted("group", &deleted, &failures, flags.json)
}
