//! `sluice topic reassign`: moves a topic's partitions to other brokers, cancels the moves, or
//! lists those under way (what `kafka-reassign-partitions.sh --execute`, `--cancel` and
//! `--list` do, through AlterPartitionReassignments and ListPartitionReassignments).

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::client::{check, Client, Node};
use super::limits::{
    ADMIN_TIMEOUT_MS, CONTROLLER_RETRIES, CONTROLLER_RETRY_BACKOFF, REASSIGNMENT_POLL_INTERVAL,
    REASSIGNMENT_WAIT,
};
use super::output::{Json, Table};
use super::topic::{broker_ids, name, replica_assignment, ReplicaAssignment};
use super::ClientFlags;

/// Kafka's NOT_CONTROLLER: retriable.
const NOT_CONTROLLER: i16 = 41;

#[derive(Args, Debug)]
pub struct Reassign {
    /// The topic
    name: String,
    /// Move partitions 0, 1, ... to these replicas, preferred leader first: partitions
    /// separated by commas, a partition's broker ids by colons (e.g. 2:3,3:1)
    #[arg(long, value_name = "ASSIGNMENT", value_parser = replica_assignment, conflicts_with = "cancel")]
    replica_assignment: Option<ReplicaAssignment>,
    /// Cancel the topic's moves under way
    #[arg(long)]
    cancel: bool,
    /// Wait until the topic has no move under way
    #[arg(long)]
    wait: bool,
}

/// Starts (or cancels) the moves, waits for them with `--wait`, and prints the moves under way.
pub fn run(flags: &ClientFlags, args: &Reassign) -> Result<()> {
    let mut client = flags.client()?;
    let targets: Vec<(i32, Option<Vec<i32>>)> = if args.cancel {
        ongoing(&mut client, &args.name)?
            .iter()
            .map(|p| (p.partition_index, None))
            .collect()
    } else if let Some(ReplicaAssignment(partitions)) = &args.replica_assignment {
        (0..).zip(partitions.iter().cloned().map(Some)).collect()
    } else {
        Vec::new()
    };
    if !targets.is_empty() {
        alter(&mut client, &args.name, targets)?;
    }
    if args.wait {
        let started = Instant::now();
        while !ongoing(&mut client, &args.name)?.is_empty() {
            if started.elapsed() > REASSIGNMENT_WAIT {
                bail!(
                    "{}: moves still under way after {} s",
                    args.name,
                    REASSIGNMENT_WAIT.as_secs()
                );
            }
            std::thread::sleep(REASSIGNMENT_POLL_INTERVAL);
        }
    }
    print_ongoing(&args.name, &ongoing(&mut client, &args.name)?, flags.json);
    Ok(())
}

/// Sends AlterPartitionReassignments for `targets` (`None`: cancel); fails with every
/// partition's refusal. Partitions refused with NOT_CONTROLLER (the quorum is electing a leader)
/// are sent again after a pause, as Kafka's admin client retries them.
fn alter(client: &mut Client, topic: &str, targets: Vec<(i32, Option<Vec<i32>>)>) -> Result<()> {
    let mut pending = targets;
    let mut failures = Vec::new();
    for attempt in 0..=CONTROLLER_RETRIES {
        let last = attempt == CONTROLLER_RETRIES;
        let mut retry = Vec::new();
        for (index, code, message) in alter_once(client, topic, &pending)? {
            if code == NOT_CONTROLLER && !last {
                retry.extend(pending.iter().find(|(i, _)| *i == index).cloned());
            } else if let Err(err) = check(
                code,
                message.as_ref(),
                format!("reassigning {topic}-{index}"),
            ) {
                failures.push(format!("{err:#}"));
            }
        }
        if retry.is_empty() {
            break;
        }
        pending = retry;
        std::thread::sleep(CONTROLLER_RETRY_BACKOFF);
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// One AlterPartitionReassignments: each partition's error code and message.
fn alter_once(
    client: &mut Client,
    topic: &str,
    targets: &[(i32, Option<Vec<i32>>)],
) -> Result<Vec<(i32, i16, Option<StrBytes>)>> {
    let partitions = targets
        .iter()
        .map(|(index, replicas)| {
            ReassignablePartition::default()
                .with_partition_index(*index)
                .with_replicas(replicas.as_deref().map(broker_ids))
        })
        .collect();
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_allow_replication_factor_change(true)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(partitions)]);
    let response = client.send(Node::Any, &request)?;
    check(
        response.error_code,
        response.error_message.as_ref(),
        format!("reassigning {topic}"),
    )?;
    Ok(response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .map(|p| (p.partition_index, p.error_code, p.error_message))
        .collect())
}

/// The topic's moves under way.
fn ongoing(client: &mut Client, topic: &str) -> Result<Vec<OngoingPartitionReassignment>> {
    let partitions = client
        .metadata(Some(&[topic.to_string()]))?
        .topics
        .first()
        .map_or(0, |t| t.partitions.len() as i32);
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
            .with_name(name(topic))
            .with_partition_indexes((0..partitions).collect())]));
    let response = client.send(Node::Any, &request)?;
    check(
        response.error_code,
        response.error_message.as_ref(),
        format!("listing the moves of {topic}"),
    )?;
    let mut moving: Vec<OngoingPartitionReassignment> = response
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .collect();
    moving.sort_by_key(|p| p.partition_index);
    Ok(moving)
}

fn print_ongoing(topic: &str, moving: &[OngoingPartitionReassignment], json: bool) {
    let ids = |brokers: &[BrokerId]| brokers.iter().map(|b| b.0).collect::<Vec<i32>>();
    if json {
        let list = |brokers: &[BrokerId]| {
            Json::Array(
                ids(brokers)
                    .into_iter()
                    .map(|id| Json::Int(id.into()))
                    .collect(),
            )
        };
        let items = moving
            .iter()
            .map(|p| {
                Json::object([
                    ("topic", Json::str(topic)),
                    ("partition", Json::Int(p.partition_index.into())),
                    ("replicas", list(&p.replicas)),
                    ("adding", list(&p.adding_replicas)),
                    ("removing", list(&p.removing_replicas)),
                ])
            })
            .collect();
        println!("{}", Json::Array(items));
    } else if moving.is_empty() {
        println!("no move of {topic} under way");
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"]);
        for p in moving {
            table.row(vec![
                topic.to_string(),
                p.partition_index.to_string(),
                format!("{:?}", ids(&p.replicas)),
                format!("{:?}", ids(&p.adding_replicas)),
                format!("{:?}", ids(&p.removing_replicas)),
            ]);
        }
        print!("{table}");
    }
}
