//! Cluster metadata: the records every change is made of (`records`), the image they add up to
//! (`image`: brokers, topics with their partitions and configs, producer-id blocks), the file
//! that persists them, and the deterministic map from partition to shard.
//!
//! Shard 0 (the controller) decides records, persists them and applies them; every shard holds
//! an immutable snapshot (`Arc<MetadataImage>`) that the controller replaces by message after
//! each change. Nothing here is mutated in place once shared.

pub mod codec;
mod image;
pub mod records;
mod text;

pub use image::{ApplyError, MetadataImage};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::config::{Config, LogConfig};
use crate::limits;
use crate::types::{ShardId, TopicPartition};
use records::{
    BrokerEpoch, BrokerId, BrokerRegistration, Endpoint, MetadataRecord, PartitionState,
};

/// The metadata file, under the data dir.
pub const METADATA_FILE: &str = "__sluice_metadata";

/// One topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// The partition count: always `partition_states.len()`.
    pub partitions: i32,
    /// Each partition's replication state, by index.
    pub partition_states: Vec<PartitionState>,
    /// Topic-level overrides, as given at creation.
    pub configs: BTreeMap<String, String>,
    /// The effective log settings: broker defaults with the overrides applied.
    pub log_config: LogConfig,
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
    ("min.insync.replicas", "min.insync.replicas"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
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

/// Loads the metadata file, or makes a fresh image (new cluster id) when there is none, then
/// registers this broker in it (a new incarnation with a larger epoch) and writes the file
/// back: that persists the registration, and turns a text file of an earlier version into
/// records (a failed write is logged, not fatal). Runs once at start, before the shards, with plain blocking I/O.
/// `incarnation` names this process's run of the broker.
pub fn load_or_init(config: &Config, incarnation: Uuid) -> Result<MetadataImage> {
    let path = config.data_dir.join(METADATA_FILE);
    let node = BrokerId(config.node_id);
    let mut image = match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, node, &config.log)
            .with_context(|| format!("reading {}", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            MetadataImage::new(new_cluster_id(), config.log.clone())
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    // A single broker has no quorum to unfence it: it registers unfenced.
    image.apply(&MetadataRecord::RegisterBroker(registration(
        config,
        &image,
        false,
        incarnation,
    )))?;
    // A full disk must not stop the broker from starting to serve reads: the registration is
    // then kept in memory until the next commit writes the file (every commit writes it whole).
    if let Err(err) = write_blocking(&path, &encode(&image)) {
        tracing::warn!(
            "writing {}: {err}; the broker runs, and the next metadata change writes it",
            path.display()
        );
    }
    Ok(image)
}

/// Replaces `path` with `contents` as `write_atomically` does (temp file, fsync, rename,
/// fsync dir), blocking: for the start, before any executor runs.
fn write_blocking(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension("tmp");
    let written = std::fs::File::create(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(err) = written {
        // Leave no partial file behind to take the space a later write needs.
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    std::fs::rename(&temp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// A new name for a run of this broker: one per process start.
pub fn new_incarnation() -> Uuid {
    Uuid::new_v4()
}

/// This broker's registration: every advertised listener, at the epoch after its last, as
/// incarnation `incarnation` (one per process start, as Kafka's); fenced or not as the caller
/// says.
pub fn registration(
    config: &Config,
    image: &MetadataImage,
    fenced: bool,
    incarnation: Uuid,
) -> BrokerRegistration {
    let id = BrokerId(config.node_id);
    let epoch = image
        .brokers
        .get(&id)
        .map_or(BrokerEpoch(0), |had| BrokerEpoch(had.epoch.0 + 1));
    BrokerRegistration {
        id,
        incarnation_id: incarnation,
        epoch,
        endpoints: config
            .advertised_listeners
            .iter()
            .map(|l| Endpoint {
                name: l.name.clone(),
                host: l.host.clone(),
                port: l.port,
            })
            .collect(),
        fenced,
    }
}

/// The metadata file's contents for `image`: the records that rebuild it (the whole file,
/// replaced atomically).
pub fn encode(image: &MetadataImage) -> Vec<u8> {
    codec::encode(&image.cluster_id, &image.to_records())
}

/// Reads a metadata file: the records `encode` writes, or the text file of earlier versions,
/// whose partitions all have `node` (this broker) as their one replica. `static_log` is this
/// broker's configured log settings.
pub fn decode(bytes: &[u8], node: BrokerId, static_log: &LogConfig) -> Result<MetadataImage> {
    if !bytes.starts_with(codec::MAGIC) && bytes.starts_with(text::HEADER.as_bytes()) {
        let text = std::str::from_utf8(bytes).context("the metadata file is not UTF-8")?;
        return text::decode_image(text, node, static_log);
    }
    let (cluster_id, records) = codec::decode(bytes)?;
    if cluster_id.is_empty() || !cluster_id.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("cluster id {cluster_id:?} is not printable ASCII");
    }
    let mut image = MetadataImage::new(cluster_id, static_log.clone());
    for (i, record) in records.iter().enumerate() {
        image
            .apply(record)
            .with_context(|| format!("metadata record {i} does not apply"))?;
    }
    Ok(image)
}

/// Kafka's cluster ids are 22-character URL-safe base64 of a UUID; a simple hex form is used here.
fn new_cluster_id() -> String {
    Uuid::new_v4().simple().to_string()[..22].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProducerId;

    #[test]
    fn the_registration_carries_every_advertised_listener() {
        let props = [
            (
                "listeners",
                "PLAINTEXT://:9092,INTERNAL://10.0.0.1:9094,CONTROLLER://10.0.0.1:9093",
            ),
            (
                "advertised.listeners",
                "PLAINTEXT://kafka-1.example:9092,INTERNAL://10.0.0.1:9094",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("controller.listener.names", "CONTROLLER"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = Config::from_properties(&props).unwrap();
        let image = MetadataImage::new("c".to_string(), config.log.clone());
        let endpoint = |name: &str, host: &str, port| Endpoint {
            name: name.to_string(),
            host: host.to_string(),
            port,
        };
        assert_eq!(
            registration(&config, &image, false, Uuid::new_v4()).endpoints,
            vec![
                endpoint("PLAINTEXT", "kafka-1.example", 9092),
                endpoint("INTERNAL", "10.0.0.1", 9094),
            ]
        );
    }

    #[test]
    fn a_text_file_is_upgraded_to_records_in_place() {
        let dir = std::env::temp_dir().join(format!("sluice-meta-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let id = Uuid::new_v4();
        let old = format!(
            "sluice-metadata v1\ncluster.id abc\nproducer.ids.reserved.to 3000\n\
             topic orders {id} 3 cleanup.policy=compact\n"
        );
        std::fs::write(dir.join(METADATA_FILE), old).unwrap();
        let first = load_or_init(&config, Uuid::new_v4()).unwrap();
        let bytes = std::fs::read(dir.join(METADATA_FILE)).unwrap();
        assert!(bytes.starts_with(codec::MAGIC), "rewritten as records");
        let second = load_or_init(&config, Uuid::new_v4()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for image in [&first, &second] {
            assert_eq!(image.cluster_id, "abc");
            assert_eq!(image.topics["orders"].id, id);
            assert_eq!(image.topics["orders"].partitions, 3);
            assert_eq!(image.topics["orders"].configs["cleanup.policy"], "compact");
            assert_eq!(image.next_producer_id, ProducerId(3000));
        }
        let node = BrokerId(config.node_id);
        assert_eq!(first.brokers[&node].epoch, BrokerEpoch(0));
        assert_eq!(second.brokers[&node].epoch, BrokerEpoch(1));
        assert_ne!(
            first.brokers[&node].incarnation_id,
            second.brokers[&node].incarnation_id
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
