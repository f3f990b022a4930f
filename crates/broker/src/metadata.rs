//! Cluster metadata: topics (names, ids, partition counts, configs), the cluster id, the producer
//! id allocator, and the deterministic map from partition to shard.
//!
//! Shard 0 (the controller) owns the authoritative copy and persists it; every shard holds an
//! immutable snapshot (`Arc<MetadataImage>`) that the controller replaces by message after each
//! change. Nothing here is mutated in place once shared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::config::{Config, LogConfig};
use crate::limits;
use crate::types::{ShardId, TopicPartition};

/// The metadata file, under the data dir.
pub const METADATA_FILE: &str = "__sluice_metadata";
const HEADER: &str = "sluice-metadata v1";

/// One topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level overrides, as given at creation.
    pub configs: BTreeMap<String, String>,
    /// The effective log settings: broker defaults with the overrides applied.
    pub log_config: LogConfig,
}

/// An immutable snapshot of all metadata.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// Producer ids below this are reserved (persisted before any is handed out).
    pub producer_ids_reserved_to: i64,
    /// Broker configs changed at run time (AlterConfigs on the broker), by broker key: the
    /// defaults of every topic that does not override them.
    pub broker_configs: BTreeMap<String, String>,
}

/// The broker configs that may change at run time, each with the topic config it is the
/// default of (Kafka's cluster-wide dynamic log configs).
pub const DYNAMIC_BROKER_CONFIGS: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
    ),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
];

/// The topic config a dynamic broker config is the default of.
pub fn topic_synonym(broker_key: &str) -> Option<&'static str> {
    DYNAMIC_BROKER_CONFIGS
        .iter()
        .find(|(b, _)| *b == broker_key)
        .map(|(_, t)| *t)
}

/// The broker config whose value a topic config defaults to, when it can change at run time.
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    DYNAMIC_BROKER_CONFIGS
        .iter()
        .find(|(_, t)| *t == topic_key)
        .map(|(b, _)| *b)
}

/// Topic defaults: the broker's log settings from its config file, with the run-time broker
/// configs applied; an error names a key that is not dynamic or a bad value.
pub fn broker_log_defaults(
    static_defaults: &LogConfig,
    dynamic: &BTreeMap<String, String>,
) -> Result<LogConfig> {
    let mut config = static_defaults.clone();
    for (key, value) in dynamic {
        let topic_key = topic_synonym(key).with_context(|| {
            format!("{key} cannot be changed at run time (restart with it set)")
        })?;
        config
            .apply_topic_config(topic_key, value)
            .with_context(|| format!("{key}: invalid value {value:?}"))?;
    }
    Ok(config)
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| t.id == id)
    }

    /// Topic defaults under this image's run-time broker configs.
    pub fn log_defaults(&self, static_defaults: &LogConfig) -> Result<LogConfig> {
        broker_log_defaults(static_defaults, &self.broker_configs)
    }

    /// Serializes the image: a header line, then `key value` lines; config values escaped.
    pub fn encode(&self) -> String {
        let mut out = format!(
            "{HEADER}\ncluster.id {}\nproducer.ids.reserved.to {}\n",
            self.cluster_id, self.producer_ids_reserved_to
        );
        for (k, v) in &self.broker_configs {
            out.push_str(&format!("broker.config {}={}\n", escape(k), escape(v)));
        }
        for topic in self.topics.values() {
            out.push_str(&format!(
                "topic {} {} {}",
                topic.name, topic.id, topic.partitions
            ));
            for (k, v) in &topic.configs {
                out.push_str(&format!(" {}={}", escape(k), escape(v)));
            }
            out.push('\n');
        }
        out
    }

    /// Parses a metadata file, re-deriving each topic's log config from the broker's.
    pub fn decode(text: &str, broker: &LogConfig) -> Result<MetadataImage> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            bail!("not a sluice metadata file (expected first line {HEADER:?})");
        }
        let mut image = MetadataImage::default();
        let mut topics = Vec::new();
        for line in lines {
            let mut words = line.split(' ');
            match words.next() {
                Some("cluster.id") => {
                    let id = words.next().context("cluster.id without value")?;
                    // What `new_cluster_id` makes is printable ASCII; anything else is damage
                    // (a control character would not even survive the file's next rewrite).
                    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                        bail!("cluster.id {id:?} is not printable ASCII");
                    }
                    image.cluster_id = id.to_string()
                }
                Some("producer.ids.reserved.to") => {
                    image.producer_ids_reserved_to = words
                        .next()
                        .context("missing value")?
                        .parse()
                        .context("producer ids")?
                }
                Some("broker.config") => {
                    let pair = words.next().context("broker.config without value")?;
                    let (k, v) = pair.split_once('=').context("config without '='")?;
                    image.broker_configs.insert(unescape(k)?, unescape(v)?);
                }
                Some("topic") => {
                    let name = words.next().context("topic without name")?.to_string();
                    let id = Uuid::parse_str(words.next().context("topic without id")?)
                        .context("topic id")?;
                    let partitions: i32 = words
                        .next()
                        .context("topic without partitions")?
                        .parse()
                        .context("partition count")?;
                    // A damaged file must not name directories outside the data dir, nor make
                    // the broker open more partitions than a topic can have.
                    if !is_valid_topic_name(&name) {
                        bail!("topic name {name:?} breaks Kafka's naming rules");
                    }
                    if !(1..=limits::TOPIC_PARTITIONS_MAX).contains(&partitions) {
                        bail!(
                            "topic {name}: {partitions} partitions, outside 1..={}",
                            limits::TOPIC_PARTITIONS_MAX
                        );
                    }
                    let mut configs = BTreeMap::new();
                    for pair in words {
                        let (k, v) = pair.split_once('=').context("config without '='")?;
                        configs.insert(unescape(k)?, unescape(v)?);
                    }
                    topics.push((name, id, partitions, configs));
                }
                Some("") | None => {}
                Some(other) => bail!("unknown metadata line kind {other:?}"),
            }
        }
        if image.cluster_id.is_empty() {
            bail!("no cluster.id line");
        }
        let defaults = image.log_defaults(broker)?;
        for (name, id, partitions, configs) in topics {
            let log_config =
                topic_log_config(&defaults, &configs).with_context(|| format!("topic {name}"))?;
            image.topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id,
                    partitions,
                    configs,
                    log_config,
                }),
            );
        }
        Ok(image)
    }
}

/// The broker's log config with a topic's overrides applied; an error names the bad key.
pub fn topic_log_config(
    broker: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig> {
    let mut config = broker.clone();
    for (k, v) in configs {
        config.apply_topic_config(k, v)?;
    }
    Ok(config)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' | '%' | '=' | '\n' | '\r' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            out.push(u8::from_str_radix(&hex, 16).context("bad escape")? as char);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Topics the broker creates and manages itself (clients may read them, not create, delete,
/// grow or produce to them).
pub fn is_internal_topic(name: &str) -> bool {
    name == crate::group::records::OFFSETS_TOPIC || name == crate::txn::state::TXN_TOPIC
}

/// Kafka's rule for topic names: 1-249 of [a-zA-Z0-9._-], not "." or "..".
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::TOPIC_NAME_MAX_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The shard that owns a partition: partitions of one topic are spread round-robin from a
/// starting shard chosen by a hash of the topic name (FNV-1a), the same on every shard and run.
pub fn shard_of(tp: &TopicPartition, shards: usize) -> ShardId {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in tp.topic.bytes() {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    ShardId(((hash % shards as u64) as usize + tp.partition.0 as usize) % shards)
}

/// Where a partition's files live.
pub fn partition_dir(data_dir: &Path, tp: &TopicPartition) -> PathBuf {
    data_dir.join(tp.dir_name())
}

/// Loads the metadata file, or makes a fresh image (new cluster id) when there is none.
/// Runs once at start, before the shards, with plain blocking I/O.
pub fn load_or_init(config: &Config) -> Result<MetadataImage> {
    let path = config.data_dir.join(METADATA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => MetadataImage::decode(&text, &config.log)
            .with_context(|| format!("reading {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(MetadataImage {
            cluster_id: new_cluster_id(),
            ..MetadataImage::default()
        }),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Kafka's cluster ids are 22-character URL-safe base64 of a UUID; a simple hex form is used here.
fn new_cluster_id() -> String {
    Uuid::new_v4().simple().to_string()[..22].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips_with_odd_config_values() {
        let broker = Config::default().log;
        let mut configs = BTreeMap::new();
        configs.insert(
            "compression.type".to_string(),
            "delete compact=%".to_string(),
        );
        configs.insert("segment.bytes".to_string(), "1048576".to_string());
        let log_config = topic_log_config(&broker, &configs).unwrap();
        let mut image = MetadataImage {
            cluster_id: "abc".into(),
            producer_ids_reserved_to: 2000,
            ..Default::default()
        };
        image.topics.insert(
            "t.1_x-y".into(),
            Arc::new(TopicMeta {
                name: "t.1_x-y".into(),
                id: Uuid::new_v4(),
                partitions: 3,
                configs,
                log_config,
            }),
        );
        image
            .broker_configs
            .insert("log.retention.ms".into(), "5000".into());
        let decoded = MetadataImage::decode(&image.encode(), &broker).unwrap();
        assert_eq!(decoded.broker_configs, image.broker_configs);
        assert_eq!(decoded.topics["t.1_x-y"].log_config.retention_ms, 5000);
        image.broker_configs.clear();
        let decoded = MetadataImage::decode(&image.encode(), &broker).unwrap();
        assert_eq!(decoded.topics, image.topics);
        assert_eq!(decoded.producer_ids_reserved_to, 2000);
        assert_eq!(decoded.topics["t.1_x-y"].log_config.segment_bytes, 1048576);
    }

    #[test]
    fn a_damaged_file_cannot_name_paths_huge_topics_or_unprintable_cluster_ids() {
        let broker = Config::default().log;
        let id = Uuid::new_v4();
        for topic in [
            format!("../../etc {id} 1"),
            format!("a/b {id} 1"),
            format!("t {id} 0"),
            format!("t {id} -3"),
            format!("t {id} 2147483647"),
        ] {
            let text = format!("{HEADER}\ncluster.id c\ntopic {topic}\n");
            assert!(MetadataImage::decode(&text, &broker).is_err(), "{topic}");
        }
        for damaged in [
            "cluster.id c\r\0",
            "cluster.id ",
            "producer.ids.reserved.to 5",
        ] {
            let text = format!("{HEADER}\n{damaged}\n");
            assert!(
                MetadataImage::decode(&text, &broker).is_err(),
                "{damaged:?}"
            );
        }
        let text = format!("{HEADER}\ncluster.id c\ntopic t {id} 10000\n");
        assert_eq!(
            MetadataImage::decode(&text, &broker).unwrap().topics["t"].partitions,
            10_000
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(is_valid_topic_name("orders.v1_x-2"));
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(!is_valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn shard_map_is_deterministic_and_spreads_partitions() {
        let owners: Vec<usize> = (0..4)
            .map(|p| shard_of(&TopicPartition::new("t", p), 2).0)
            .collect();
        assert_eq!(
            owners,
            (0..4)
                .map(|p| shard_of(&TopicPartition::new("t", p), 2).0)
                .collect::<Vec<_>>()
        );
        assert!(owners.contains(&0) && owners.contains(&1));
    }
}
