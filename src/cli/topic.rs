//! `sluice topic create | list | describe | delete | add-partitions | alter-config` (and
//! `reassign`, in `reassign.rs`).

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsRequest, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::describe_log_dirs_request::{
    DescribableLogDirTopic, DescribeLogDirsRequest,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::client::{check, Client, Node, EARLIEST, LATEST};
use super::limits::ADMIN_TIMEOUT_MS;
use super::output::{report_deleted, Json, Table};
use super::{key_value, ClientFlags};

/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    flags: ClientFlags,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic
    Create(Create),
    /// List topics
    List {
        /// Include internal topics (__consumer_offsets, __transaction_state)
        #[arg(long)]
        internal: bool,
    },
    /// Describe topics: partitions, leaders, offsets, record counts, sizes and configs
    Describe {
        /// Topics to describe
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Delete topics
    Delete {
        /// Topics to delete
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Raise a topic's partition count
    AddPartitions {
        /// The topic
        name: String,
        /// The new total number of partitions
        #[arg(long, value_name = "N")]
        count: i32,
        /// The replicas of each new partition only, as kafka-topics.sh writes them:
        /// partitions separated by commas, a partition's broker ids by colons (e.g. 1,1)
        #[arg(long, value_name = "ASSIGNMENT", value_parser = replica_assignment)]
        replica_assignment: Option<ReplicaAssignment>,
    },
    /// Set or delete a topic's configs
    AlterConfig(AlterConfig),
    /// Move partitions to other brokers, cancel the moves, or list those under way
    Reassign(super::reassign::Reassign),
}

#[derive(Args, Debug)]
struct Create {
    /// The topic's name
    name: String,
    /// Partitions [default: the broker's num.partitions]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    partitions: Option<i32>,
    /// Replicas of each partition [default: the broker's default.replication.factor]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    replication_factor: Option<i16>,
    /// Each partition's replicas, as kafka-topics.sh writes them: partitions separated by
    /// commas, a partition's broker ids by colons, preferred leader first (e.g. 1,1,1 for three
    /// partitions on broker 1); sets the partition count and replication factor
    #[arg(long, value_name = "ASSIGNMENT", value_parser = replica_assignment,
          conflicts_with_all = ["partitions", "replication_factor"])]
    replica_assignment: Option<ReplicaAssignment>,
    /// A topic config, e.g. retention.ms=86400000 (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
    configs: Vec<(String, String)>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["set", "delete"])))]
struct AlterConfig {
    /// The topic
    name: String,
    /// Set a config (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    set: Vec<(String, String)>,
    /// Remove a config, back to the broker's default (repeatable)
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
}

pub fn run(args: &TopicArgs) -> Result<()> {
    let flags = &args.flags;
    match &args.command {
        TopicCommand::Create(create_args) => create(flags, create_args),
        TopicCommand::List { internal } => list(flags, *internal),
        TopicCommand::Describe { names } => describe(flags, names),
        TopicCommand::Delete { names } => delete(flags, names),
        TopicCommand::AddPartitions {
            name,
            count,
            replica_assignment,
        } => add_partitions(flags, name, *count, replica_assignment.as_ref()),
        TopicCommand::AlterConfig(alter) => alter_config(flags, alter),
        TopicCommand::Reassign(reassign) => super::reassign::run(flags, reassign),
    }
}

pub(super) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Parses kafka-topics.sh's `--replica-assignment`: `1:2,2:3` is partition 0 on brokers 1 and 2,
/// partition 1 on brokers 2 and 3.
pub(super) fn replica_assignment(text: &str) -> Result<ReplicaAssignment, String> {
    let partitions = text
        .split(',')
        .map(|partition| {
            partition
                .split(':')
                .map(|id| {
                    id.trim()
                        .parse::<i32>()
                        .map_err(|_| format!("{id:?} is not a broker id (expected e.g. 1:2,2:3)"))
                })
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok(ReplicaAssignment(partitions))
}

/// Each partition's replicas, in partition order (a type of its own: clap would read a plain
/// nested `Vec` as a repeated flag).
#[derive(Clone, Debug)]
pub(super) struct ReplicaAssignment(pub(super) Vec<Vec<i32>>);

pub(super) fn broker_ids(replicas: &[i32]) -> Vec<BrokerId> {
    replicas.iter().copied().map(BrokerId).collect()
}

/// CreateTopics' assignments: partition i gets the i-th replica list.
fn creatable_assignments(
    assignment: Option<&ReplicaAssignment>,
) -> Vec<CreatableReplicaAssignment> {
    let partitions = assignment.map(|a| a.0.as_slice()).unwrap_or_default();
    partitions
        .iter()
        .zip(0..)
        .map(|(replicas, index)| {
            CreatableReplicaAssignment::default()
                .with_partition_index(index)
                .with_broker_ids(broker_ids(replicas))
        })
        .collect()
}

fn create(flags: &ClientFlags, args: &Create) -> Result<()> {
    let topic = args.name.as_str();
    // -1 asks the broker for its default.
    let partitions = args.partitions.unwrap_or(-1);
    let replication = args.replication_factor.unwrap_or(-1);
    let configs = args
        .configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    let mut client = flags.client()?;
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
            .with_assignments(creatable_assignments(args.replica_assignment.as_ref()))
            .with_configs(configs)])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let response = client.send(Node::Any, &request)?;
    let result = response
        .topics
        .first()
        .context("empty CreateTopics response")?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        format!("creating topic {topic}"),
    )?;
    // Before v5 the response does not say how many partitions were made: ask.
    let count = if result.num_partitions > 0 {
        result.num_partitions
    } else {
        client.leaders(topic)?.len() as i32
    };
    if flags.json {
        println!(
            "{}",
            Json::object([
                ("topic", Json::str(topic)),
                ("partitions", Json::Int(count.into())),
            ])
        );
    } else {
        println!("created topic {topic} with {count} partitions");
    }
    Ok(())
}

fn list(flags: &ClientFlags, internal: bool) -> Result<()> {
    let mut client = flags.client()?;
    let metadata = client.metadata(None)?;
    let mut topics: Vec<_> = metadata
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let name_of = |t: &&kafka_protocol::messages::metadata_response::MetadataResponseTopic| {
        t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default()
    };
    if flags.json {
        let items = topics
            .iter()
            .map(|t| {
                Json::object([
                    ("topic", Json::str(name_of(t))),
                    ("id", Json::str(t.topic_id.to_string())),
                    ("partitions", Json::Int(t.partitions.len() as i64)),
                    ("internal", Json::Bool(t.is_internal)),
                ])
            })
            .collect();
        println!("{}", Json::Array(items));
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITIONS", "ID"]);
        for t in &topics {
            table.row(vec![
                name_of(t),
                t.partitions.len().to_string(),
                t.topic_id.to_string(),
            ]);
        }
        print!("{table}");
    }
    Ok(())
}

/// Kafka's name for a DescribeConfigs config source.
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        _ => "UNKNOWN",
    }
}

fn describe(flags: &ClientFlags, topics: &[String]) -> Result<()> {
    let mut client = flags.client()?;
    let mut described = Vec::new();
    for topic in topics {
        described.push(describe_one(&mut client, topic, flags.json)?);
    }
    if flags.json {
        println!("{}", Json::Array(described));
    }
    Ok(())
}

/// Prints one topic's table (unless `json`) and returns its JSON.
/// Each partition's bytes on its leader's disk (DescribeLogDirs); partitions whose leader does
/// not answer it are left out.
fn partition_sizes(
    client: &mut Client,
    topic: &str,
    leaders: &[(i32, i32)],
) -> std::collections::BTreeMap<i32, i64> {
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for (partition, leader) in leaders {
        by_leader.entry(*leader).or_default().push(*partition);
    }
    let mut sizes = std::collections::BTreeMap::new();
    for (leader, partitions) in by_leader {
        let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions),
        ]));
        let Ok(response) = client.send(Node::Id(leader), &request) else {
            continue;
        };
        for dir in response.results.iter().filter(|d| d.error_code == 0) {
            for t in dir.topics.iter().filter(|t| t.name.as_str() == topic) {
                for p in &t.partitions {
                    if !p.is_future_key {
                        sizes.insert(p.partition_index, p.partition_size);
                    }
                }
            }
        }
    }
    sizes
}

fn describe_one(client: &mut Client, topic: &str, json: bool) -> Result<Json> {
    let metadata = client.metadata(Some(&[topic.to_string()]))?;
    let t = metadata.topics.first().context("empty Metadata response")?;
    check(t.error_code, None, format!("topic {topic}"))?;
    let mut partitions: Vec<_> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let indexes: Vec<i32> = partitions.iter().map(|p| p.partition_index).collect();
    let starts = client.list_offsets(topic, &indexes, EARLIEST)?;
    let ends = client.list_offsets(topic, &indexes, LATEST)?;
    let leaders: Vec<(i32, i32)> = partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let sizes = partition_sizes(client, topic, &leaders);

    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
    let response = client.send(Node::Any, &request)?;
    let result = response
        .results
        .first()
        .context("empty DescribeConfigs response")?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        format!("configs of {topic}"),
    )?;
    let mut configs: Vec<_> = result.configs.iter().collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));

    let ids = |v: &[kafka_protocol::messages::BrokerId]| {
        v.iter()
            .map(|b| b.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let offset =
        |m: &std::collections::BTreeMap<i32, i64>, p: i32| m.get(&p).copied().unwrap_or(-1);
    if !json {
        println!(
            "topic {topic}  id {}  partitions {}",
            t.topic_id,
            partitions.len()
        );
        let mut table = Table::new(&[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "START-OFFSET",
            "END-OFFSET",
            "MESSAGES",
            "SIZE",
        ]);
        for p in &partitions {
            let (start, end) = (
                offset(&starts, p.partition_index),
                offset(&ends, p.partition_index),
            );
            table.row(vec![
                p.partition_index.to_string(),
                p.leader_id.0.to_string(),
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                start.to_string(),
                end.to_string(),
                (end - start).to_string(),
                sizes
                    .get(&p.partition_index)
                    .map_or("-".to_string(), |s| s.to_string()),
            ]);
        }
        print!("{table}");
        let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
        for c in &configs {
            table.row(vec![
                c.name.to_string(),
                c.value
                    .as_ref()
                    .map_or("(sensitive)".to_string(), |v| v.to_string()),
                config_source(c.config_source).to_string(),
            ]);
        }
        println!();
        print!("{table}");
        println!();
    }
    Ok(Json::object([
        ("topic", Json::str(topic)),
        ("id", Json::str(t.topic_id.to_string())),
        (
            "partitions",
            Json::Array(
                partitions
                    .iter()
                    .map(|p| {
                        let (start, end) = (
                            offset(&starts, p.partition_index),
                            offset(&ends, p.partition_index),
                        );
                        Json::object([
                            ("partition", Json::Int(p.partition_index.into())),
                            ("leader", Json::Int(p.leader_id.0.into())),
                            (
                                "replicas",
                                Json::Array(
                                    p.replica_nodes
                                        .iter()
                                        .map(|b| Json::Int(b.0.into()))
                                        .collect(),
                                ),
                            ),
                            (
                                "isr",
                                Json::Array(
                                    p.isr_nodes.iter().map(|b| Json::Int(b.0.into())).collect(),
                                ),
                            ),
                            ("start_offset", Json::Int(start)),
                            ("end_offset", Json::Int(end)),
                            ("messages", Json::Int(end - start)),
                            (
                                "size_bytes",
                                Json::Int(sizes.get(&p.partition_index).copied().unwrap_or(-1)),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "configs",
            Json::Object(
                configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            Json::object([
                                (
                                    "value",
                                    Json::opt_str(c.value.as_ref().map(|v| v.to_string())),
                                ),
                                ("source", Json::str(config_source(c.config_source))),
                            ]),
                        )
                    })
                    .collect(),
            ),
        ),
    ]))
}

fn delete(flags: &ClientFlags, topics: &[String]) -> Result<()> {
    let mut client = flags.client()?;
    let version = client.version::<DeleteTopicsRequest>(Node::Any)?;
    let request = if version >= 6 {
        DeleteTopicsRequest::default().with_topics(
            topics
                .iter()
                .map(|t| DeleteTopicState::default().with_name(Some(name(t))))
                .collect(),
        )
    } else {
        DeleteTopicsRequest::default().with_topic_names(topics.iter().map(|t| name(t)).collect())
    }
    .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let mut response = client.send(Node::Any, &request)?;
    // Report in the order the user named them (brokers answer in any order).
    let position = |r: &DeletableTopicResult| {
        let topic = r.name.as_ref().map(|n| n.0.as_str()).unwrap_or_default();
        topics.iter().position(|t| t == topic)
    };
    response.responses.sort_by_key(position);
    let mut failures = Vec::new();
    let mut deleted = Vec::new();
    for r in &response.responses {
        let topic = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        match check(
            r.error_code,
            r.error_message.as_ref(),
            format!("deleting topic {topic}"),
        ) {
            Ok(()) => deleted.push(topic),
            Err(e) => failures.push(format!("{e}")),
        }
    }
    report_deleted("topic", &deleted, &failures, flags.json)
}

fn add_partitions(
    flags: &ClientFlags,
    topic: &str,
    count: i32,
    assignment: Option<&ReplicaAssignment>,
) -> Result<()> {
    let mut client = flags.client()?;
    let assignments = assignment.map(|ReplicaAssignment(partitions)| {
        partitions
            .iter()
            .map(|replicas| {
                CreatePartitionsAssignment::default().with_broker_ids(broker_ids(replicas))
            })
            .collect()
    });
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(count)
            .with_assignments(assignments)])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let response = client.send(Node::Any, &request)?;
    let result = response
        .results
        .first()
        .context("empty CreatePartitions response")?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        format!("adding partitions to {topic}"),
    )?;
    if flags.json {
        println!(
            "{}",
            Json::object([
                ("topic", Json::str(topic)),
                ("partitions", Json::Int(count.into()))
            ])
        );
    } else {
        println!("topic {topic} now has {count} partitions");
    }
    Ok(())
}

fn alter_config(flags: &ClientFlags, args: &AlterConfig) -> Result<()> {
    let topic = args.name.as_str();
    let set = args.set.iter().map(|(k, v)| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(k.clone()))
            .with_config_operation(OP_SET)
            .with_value(Some(StrBytes::from_string(v.clone())))
    });
    let deleted = args.delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(k.clone()))
            .with_config_operation(OP_DELETE)
    });
    let changes = set.chain(deleted).collect();
    let mut client = flags.client()?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(changes),
    ]);
    let response = client.send(Node::Any, &request)?;
    let result = response
        .responses
        .first()
        .context("empty IncrementalAlterConfigs response")?;
    check(
        result.error_code,
        result.error_message.as_ref(),
        format!("altering configs of {topic}"),
    )?;
    if flags.json {
        let set = args.set.iter().map(|(k, v)| Json::str(format!("{k}={v}")));
        let deleted = args.delete.iter().map(Json::str);
        println!(
            "{}",
            Json::object([
                ("topic", Json::str(topic)),
                ("set", Json::Array(set.collect())),
                ("deleted", Json::Array(deleted.collect())),
            ])
        );
    } else {
        println!(
            "altered topic {topic}: {} set, {} deleted",
            args.set.len(),
            args.delete.len()
        );
    }
    Ok(())
}
