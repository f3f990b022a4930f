//! Broker configuration: Kafka's property names, Kafka-style `key=value` files, and validation.
//!
//! Built once at start on the main thread, then shared read-only (`Arc<Config>`) by every shard.
//! An invalid value fails the start with a message naming the key; an unknown key is logged and
//! ignored, as Kafka does.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cpuset::CpuPlacement;
use crate::limits;

mod listeners;

pub use listeners::{Listener, ProcessRoles, QuorumVoter};

/// Whether produce acknowledgements wait for fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `log.flush.interval.messages=1` (Sluice's default): every acknowledged batch is on disk.
    Durable,
    /// Kafka's default behaviour: acknowledge once written to the page cache; fsync after this many
    /// messages (or on segment roll and shutdown).
    EveryMessages(u64),
}

/// How a partition's batches are timestamped (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-topic settings, defaulted from the broker's and overridable by CreateTopics configs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// Delete whole segments whose newest record is older than this (-1: keep forever).
    pub retention_ms: i64,
    /// Delete the oldest whole segments while the log is larger than this (-1: no limit).
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    /// `cleanup.policy` includes `delete`: retention by time and size applies. A compact-only
    /// topic (such as `__consumer_offsets`) is never trimmed by retention.
    pub cleanup_delete: bool,
    /// `cleanup.policy` includes `compact`: the shard's cleaner keeps the latest record per key.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone outlives the cleaning that first saw it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean once this share of the cleanable bytes is uncleaned.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: uncleaned records older than this force a cleaning, whatever
    /// the dirty ratio.
    pub max_compaction_lag_ms: i64,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms` (KIP-937): with CreateTime, a record stamped more than
    /// this before the broker's clock is refused (INVALID_TIMESTAMP).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms` (KIP-937): with CreateTime, a record stamped more than
    /// this after the broker's clock is refused.
    pub timestamp_after_max_ms: i64,
    pub flush: FlushPolicy,
    /// `min.insync.replicas`: the fewest in-sync replicas an acks=all produce needs (Kafka's
    /// effective value is the smaller of this and the partition's replica count).
    pub min_insync_replicas: MinInsyncReplicas,
    /// `unclean.leader.election.enable`: whether a partition with no live in-sync replica may be
    /// led by a live replica outside the ISR (losing what only the ISR had).
    pub unclean_leader_election: bool,
}

/// `min.insync.replicas`: at least 1, as Kafka validates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinInsyncReplicas(i32);

impl MinInsyncReplicas {
    pub fn parse(key: &str, value: &str) -> Result<MinInsyncReplicas> {
        Ok(MinInsyncReplicas(
            parse_in_range(key, value, 1, i32::MAX as i64)? as i32,
        ))
    }

    /// The value as configured.
    pub fn get(self) -> i32 {
        self.0
    }

    /// What a partition with `replicas` replicas requires: never more than it has.
    pub fn effective(self, replicas: usize) -> usize {
        (self.0 as usize).min(replicas)
    }
}

/// Everything `sluice serve` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// `process.roles`: whether this node is a broker, a controller, or both.
    pub process_roles: ProcessRoles,
    /// `listeners` (or the older `listen`, one PLAINTEXT listener): what the node binds.
    pub listeners: Vec<Listener>,
    /// `advertised.listeners`: what clients are told to connect to; by default `listeners`
    /// less the controller listeners.
    pub advertised_listeners: Vec<Listener>,
    /// `controller.listener.names`: the listeners the quorum talks on.
    pub controller_listener_names: Vec<String>,
    /// `inter.broker.listener.name`: the listener other brokers reach this one on.
    pub inter_broker_listener_name: String,
    /// `controller.quorum.voters`: the quorum's members, when fixed by configuration.
    pub quorum_voters: Vec<QuorumVoter>,
    /// `controller.quorum.bootstrap.servers`: controllers to learn the quorum from.
    pub quorum_bootstrap_servers: Vec<(String, u16)>,
    /// `broker.heartbeat.interval.ms`: how often a broker in a cluster tells the quorum's leader
    /// it is alive.
    pub broker_heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`: a broker the leader has not heard from this long is fenced.
    pub broker_session_timeout: Duration,
    pub data_dir: PathBuf,
    pub cores: usize,
    /// `cpuset`: the CPUs the shards are pinned to, or none.
    pub placement: CpuPlacement,
    pub node_id: i32,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub socket_request_max_bytes: usize,
    /// `socket.send.buffer.bytes` / `socket.receive.buffer.bytes`: SO_SNDBUF and SO_RCVBUF of
    /// every accepted connection; `None` (-1) leaves the kernel's autotuning.
    pub socket_send_buffer_bytes: Option<usize>,
    pub socket_receive_buffer_bytes: Option<usize>,
    /// Request bytes one shard holds in memory at once (read but not yet answered), across all
    /// its connections; reading pauses above it.
    pub queued_max_request_bytes: usize,
    /// `max.connections`: connections open at once, all shards together.
    pub max_connections: usize,
    /// `max.connections.per.ip`: connections open at once from one address...
    pub max_connections_per_ip: usize,
    /// ...unless `max.connections.per.ip.overrides` (`host:count,...`) names the address.
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    /// `max.connection.creation.rate`: new connections taken in per second, all shards together;
    /// `None` (Kafka's default, 2147483647) for no limit.
    pub max_connection_creation_rate: Option<u32>,
    /// `connections.max.idle.ms`: a connection that reads and writes nothing this long is closed.
    pub connections_max_idle: Duration,
    /// `sluice.request.receive.timeout.ms`: a request frame must arrive whole within this of its
    /// first byte, or its connection is closed.
    pub request_receive_timeout: Duration,
    pub log: LogConfig,
    /// How long an idle shard spins before parking its thread (microseconds): trades CPU for
    /// cross-shard wake-up latency.
    pub spin_before_park_us: u64,
    /// `sluice.memory.release.interval.ms`: how often the memory thread looks for freed memory
    /// to hand back to the system (see `memory`); `None` (0) never.
    pub memory_release_interval: Option<std::time::Duration>,
    /// `sluice.fetch.zero.copy`: whether fetched record sets go from the page cache to the socket
    /// with sendfile (see `storage::payload`); off, they are read into memory and written.
    pub fetch_zero_copy: bool,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval_ms: u64,
    /// `sluice.log.scrub.bytes.per.sec`: how fast, for the whole broker, the background scrub
    /// reads the sealed segments a start did not read, checking every batch's CRC (see
    /// `storage::segment_check`); 0 turns it off (reads still check each segment once).
    pub scrub_bytes_per_sec: u64,
    /// `log.cleaner.enable`: whether compacted topics are cleaned.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: how long a shard's cleaner sleeps when nothing was due.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the key map of one cleaning, per shard.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// `sluice.admin.listen`: the admin HTTP endpoint (metrics, health); `None` when "none".
    pub admin_listen: Option<SocketAddr>,
    /// Consumer group settings (`group.*`).
    pub group: crate::group::state::GroupConfig,
    /// `offsets.retention.minutes`, in ms: how long an empty group's offsets are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.topic.replication.factor`: replicas of each `__consumer_offsets` partition when
    /// it is created, capped at the live brokers then (Kafka refuses to create it instead).
    pub offsets_topic_replication_factor: i16,
    /// `offset.metadata.max.bytes`: the longest metadata string an offset commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `replica.*`: how followers fetch, and how long one may lag before it leaves the ISR.
    pub replica: crate::replication::ReplicaConfig,
    /// `auto.leader.rebalance.enable`: whether the quorum's leader gives partitions back to their
    /// preferred replicas, every `leader.imbalance.check.interval.seconds`, for brokers whose
    /// share of preferred partitions led elsewhere is above
    /// `leader.imbalance.per.broker.percentage`.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval: Duration,
    pub leader_imbalance_per_broker_percentage: u32,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub transaction_state_partitions: i32,
    /// `transaction.state.log.segment.bytes`.
    pub transaction_state_segment_bytes: u64,
    /// `transaction.state.log.replication.factor`: replicas of each `__transaction_state`
    /// partition, capped as `offsets_topic_replication_factor` is.
    pub transaction_state_replication_factor: i16,
    /// `transaction.state.log.min.isr`: the `min.insync.replicas` of `__transaction_state`.
    pub transaction_state_min_isr: MinInsyncReplicas,
    /// Every key that was set, as given, for DescribeConfigs.
    pub overrides: BTreeMap<String, String>,
}

/// Default of `socket.send.buffer.bytes` and `socket.receive.buffer.bytes`.
const SOCKET_BUFFER_DEFAULT: &str = "-1";

/// The broker keys Sluice understands, with their defaults, as DescribeConfigs reports them.
pub const BROKER_KEYS: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("process.roles", listeners::PROCESS_ROLES_DEFAULT),
    ("listeners", listeners::LISTENERS_DEFAULT),
    ("advertised.listeners", ""),
    (
        "listener.security.protocol.map",
        listeners::SECURITY_PROTOCOL_MAP_DEFAULT,
    ),
    (
        "inter.broker.listener.name",
        listeners::INTER_BROKER_LISTENER_DEFAULT,
    ),
    ("controller.listener.names", ""),
    ("controller.quorum.voters", ""),
    ("controller.quorum.bootstrap.servers", ""),
    ("broker.heartbeat.interval.ms", "2000"),
    ("broker.session.timeout.ms", "9000"),
    ("num.partitions", "1"),
    ("auto.create.topics.enable", "true"),
    ("default.replication.factor", "1"),
    ("socket.request.max.bytes", "104857600"),
    ("socket.send.buffer.bytes", SOCKET_BUFFER_DEFAULT),
    ("socket.receive.buffer.bytes", SOCKET_BUFFER_DEFAULT),
    ("queued.max.request.bytes", "104857600"),
    ("max.connections", "2147483647"),
    ("max.connections.per.ip", "2147483647"),
    ("max.connections.per.ip.overrides", ""),
    ("max.connection.creation.rate", "2147483647"),
    ("connections.max.idle.ms", "600000"),
    ("sluice.request.receive.timeout.ms", "30000"),
    ("message.max.bytes", "1048588"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", "604800000"),
    ("log.retention.ms", "604800000"),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.index.interval.bytes", "4096"),
    ("log.flush.interval.messages", "1"),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "3600000"),
    ("min.insync.replicas", "1"),
    ("unclean.leader.election.enable", "false"),
    ("sluice.spin.before.park.us", "0"),
    ("sluice.memory.release.interval.ms", "10000"),
    ("sluice.fetch.zero.copy", "true"),
    ("sluice.log.scrub.bytes.per.sec", "4194304"),
    ("sluice.admin.listen", "127.0.0.1:9644"),
    ("sluice.log.level", "info"),
    ("sluice.log.format", "text"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.max.size", "1000"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.topic.replication.factor", "3"),
    ("offset.metadata.max.bytes", "4096"),
    ("transaction.max.timeout.ms", "900000"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("leader.imbalance.per.broker.percentage", "10"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.backoff.ms", "1000"),
    ("replica.lag.time.max.ms", "30000"),
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.state.log.segment.bytes", "104857600"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
];

/// The `replica.*` settings, bounded as Kafka bounds them (the wait below the peer request
/// timeout, so a fetch held at the leader is never taken for a dead connection).
fn replica_config(
    get: &dyn Fn(&str) -> String,
    millis: &dyn Fn(&str) -> Result<Duration>,
) -> Result<crate::replication::ReplicaConfig> {
    let bytes = |key: &str, min: i64| -> Result<i32> {
        Ok(parse_in_range(key, &get(key), min, i32::MAX as i64)? as i32)
    };
    let fetch_wait_max = millis("replica.fetch.wait.max.ms")?;
    if fetch_wait_max.as_millis() as u64 >= limits::PEER_REQUEST_TIMEOUT_MS {
        bail!(
            "replica.fetch.wait.max.ms must be below {} ms",
            limits::PEER_REQUEST_TIMEOUT_MS
        );
    }
    let lag_time_max = millis("replica.lag.time.max.ms")?;
    if fetch_wait_max > lag_time_max {
        // Kafka's rule: a follower held this long at the leader would look stuck.
        bail!("replica.fetch.wait.max.ms must not exceed replica.lag.time.max.ms");
    }
    Ok(crate::replication::ReplicaConfig {
        fetch_max_bytes: bytes("replica.fetch.max.bytes", 0)?,
        fetch_response_max_bytes: parse_in_range(
            "replica.fetch.response.max.bytes",
            &get("replica.fetch.response.max.bytes"),
            0,
            limits::FETCH_RESPONSE_MAX_BYTES as i64,
        )? as i32,
        fetch_wait_max,
        fetch_min_bytes: bytes("replica.fetch.min.bytes", 1)?,
        fetch_backoff: millis("replica.fetch.backoff.ms")?,
        lag_time_max,
    })
}

impl Default for Config {
    fn default() -> Self {
        Config::from_properties(&BTreeMap::new()).expect("defaults are valid")
    }
}

impl Config {
    /// Builds a config from `key=value` pairs (file contents and `--set` flags merged by the caller).
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Config> {
        for key in props.keys() {
            let known = BROKER_KEYS.iter().any(|(k, _)| k == key)
                || ["listen", "data.dir", "log.dirs", "cores", "cpuset"].contains(&key.as_str());
            if !known {
                tracing::warn!("config key {key} is not known to sluice; ignored");
            }
        }
        let get = |key: &str| -> String {
            props
                .get(key)
                .cloned()
                .unwrap_or_else(|| default_of(key).to_string())
        };
        let data_dir = props
            .get("data.dir")
            .or_else(|| props.get("log.dirs"))
            .cloned()
            .unwrap_or_else(|| "./sluice-data".to_string());
        let placement = CpuPlacement::from_setting(props.get("cpuset").map(String::as_str))?;
        let cores = match props.get("cores") {
            Some(v) => parse_in_range("cores", v, 1, 1024)? as usize,
            None => placement.default_shards()?,
        };
        let log = LogConfig {
            segment_bytes: parse_in_range(
                "log.segment.bytes",
                &get("log.segment.bytes"),
                14,
                1 << 31,
            )? as u64,
            segment_ms: parse_in_range("log.roll.ms", &get("log.roll.ms"), 1, i64::MAX)?,
            retention_ms: parse_retention("log.retention.ms", &get("log.retention.ms"))?,
            retention_bytes: parse_retention("log.retention.bytes", &get("log.retention.bytes"))?,
            index_interval_bytes: parse_in_range(
                "log.index.interval.bytes",
                &get("log.index.interval.bytes"),
                0,
                i32::MAX as i64,
            )? as u32,
            cleanup_delete: parse_cleanup_policy(&get("log.cleanup.policy"))?.0,
            cleanup_compact: parse_cleanup_policy(&get("log.cleanup.policy"))?.1,
            delete_retention_ms: parse_in_range(
                "log.cleaner.delete.retention.ms",
                &get("log.cleaner.delete.retention.ms"),
                0,
                i64::MAX,
            )?,
            min_cleanable_dirty_ratio: parse_ratio(
                "log.cleaner.min.cleanable.ratio",
                &get("log.cleaner.min.cleanable.ratio"),
            )?,
            min_compaction_lag_ms: parse_in_range(
                "log.cleaner.min.compaction.lag.ms",
                &get("log.cleaner.min.compaction.lag.ms"),
                0,
                i64::MAX,
            )?,
            max_compaction_lag_ms: parse_in_range(
                "log.cleaner.max.compaction.lag.ms",
                &get("log.cleaner.max.compaction.lag.ms"),
                1,
                i64::MAX,
            )?,
            max_message_bytes: parse_in_range(
                "message.max.bytes",
                &get("message.max.bytes"),
                0,
                i32::MAX as i64,
            )? as usize,
            timestamp_type: parse_timestamp_type(&get("log.message.timestamp.type"))?,
            timestamp_before_max_ms: parse_in_range(
                "log.message.timestamp.before.max.ms",
                &get("log.message.timestamp.before.max.ms"),
                0,
                i64::MAX,
            )?,
            timestamp_after_max_ms: parse_in_range(
                "log.message.timestamp.after.max.ms",
                &get("log.message.timestamp.after.max.ms"),
                0,
                i64::MAX,
            )?,
            flush: parse_flush_policy(&get("log.flush.interval.messages"))?,
            min_insync_replicas: MinInsyncReplicas::parse(
                "min.insync.replicas",
                &get("min.insync.replicas"),
            )?,
            unclean_leader_election: parse_bool(
                "unclean.leader.election.enable",
                &get("unclean.leader.election.enable"),
            )?,
        };
        let node_id = parse_in_range("node.id", &get("node.id"), 0, i32::MAX as i64)? as i32;
        let millis = |key: &str| -> Result<Duration> {
            let ms = parse_in_range(key, &get(key), 1, i32::MAX as i64)?;
            Ok(Duration::from_millis(ms as u64))
        };
        let broker_heartbeat_interval = millis("broker.heartbeat.interval.ms")?;
        let broker_session_timeout = millis("broker.session.timeout.ms")?;
        if broker_session_timeout <= broker_heartbeat_interval {
            bail!("broker.session.timeout.ms must be longer than broker.heartbeat.interval.ms");
        }
        let replica = replica_config(&get, &millis)?;
        let network = listeners::parse(props, node_id)?;
        let mut overrides = props.clone();
        if overrides.remove("listen").is_some() {
            // DescribeConfigs reports the key Kafka knows, as set (through `listen`).
            overrides.insert(
                "listeners".to_string(),
                listeners::render_listeners(&network.listeners),
            );
        }
        let config = Config {
            process_roles: network.process_roles,
            listeners: network.listeners,
            advertised_listeners: network.advertised_listeners,
            controller_listener_names: network.controller_listener_names,
            inter_broker_listener_name: network.inter_broker_listener_name,
            quorum_voters: network.quorum_voters,
            quorum_bootstrap_servers: network.quorum_bootstrap_servers,
            broker_heartbeat_interval,
            broker_session_timeout,
            replica,
            auto_leader_rebalance: parse_bool(
                "auto.leader.rebalance.enable",
                &get("auto.leader.rebalance.enable"),
            )?,
            leader_imbalance_check_interval: Duration::from_secs(parse_in_range(
                "leader.imbalance.check.interval.seconds",
                &get("leader.imbalance.check.interval.seconds"),
                1,
                i32::MAX as i64,
            )? as u64),
            leader_imbalance_per_broker_percentage: parse_in_range(
                "leader.imbalance.per.broker.percentage",
                &get("leader.imbalance.per.broker.percentage"),
                0,
                100,
            )? as u32,
            data_dir: PathBuf::from(data_dir),
            cores,
            placement,
            node_id,
            num_partitions: parse_in_range(
                "num.partitions",
                &get("num.partitions"),
                1,
                limits::TOPIC_PARTITIONS_MAX as i64,
            )? as i32,
            auto_create_topics: parse_bool(
                "auto.create.topics.enable",
                &get("auto.create.topics.enable"),
            )?,
            socket_request_max_bytes: parse_in_range(
                "socket.request.max.bytes",
                &get("socket.request.max.bytes"),
                1024,
                i32::MAX as i64,
            )? as usize,
            socket_send_buffer_bytes: parse_socket_buffer(
                "socket.send.buffer.bytes",
                &get("socket.send.buffer.bytes"),
            )?,
            socket_receive_buffer_bytes: parse_socket_buffer(
                "socket.receive.buffer.bytes",
                &get("socket.receive.buffer.bytes"),
            )?,
            queued_max_request_bytes: parse_in_range(
                "queued.max.request.bytes",
                &get("queued.max.request.bytes"),
                1024,
                i64::MAX,
            )? as usize,
            max_connections: parse_in_range(
                "max.connections",
                &get("max.connections"),
                0,
                limits::CONNECTIONS_MAX_DEFAULT,
            )? as usize,
            max_connections_per_ip: parse_in_range(
                "max.connections.per.ip",
                &get("max.connections.per.ip"),
                0,
                limits::CONNECTIONS_MAX_DEFAULT,
            )? as usize,
            max_connections_per_ip_overrides: parse_connection_overrides(&get(
                "max.connections.per.ip.overrides",
            ))?,
            max_connection_creation_rate: match parse_in_range(
                "max.connection.creation.rate",
                &get("max.connection.creation.rate"),
                1,
                limits::CONNECTIONS_MAX_DEFAULT,
            )? {
                limits::CONNECTIONS_MAX_DEFAULT => None,
                rate => Some(rate as u32),
            },
            connections_max_idle: Duration::from_millis(parse_in_range(
                "connections.max.idle.ms",
                &get("connections.max.idle.ms"),
                1,
                i64::MAX,
            )? as u64),
            request_receive_timeout: Duration::from_millis(parse_in_range(
                "sluice.request.receive.timeout.ms",
                &get("sluice.request.receive.timeout.ms"),
                1,
                i64::MAX,
            )? as u64),
            log,
            retention_check_interval_ms: parse_in_range(
                "log.retention.check.interval.ms",
                &get("log.retention.check.interval.ms"),
                1,
                i64::MAX,
            )? as u64,
            scrub_bytes_per_sec: parse_in_range(
                "sluice.log.scrub.bytes.per.sec",
                &get("sluice.log.scrub.bytes.per.sec"),
                0,
                limits::SCRUB_BYTES_PER_SEC_MAX as i64,
            )? as u64,
            cleaner_enable: parse_bool("log.cleaner.enable", &get("log.cleaner.enable"))?,
            cleaner_backoff_ms: parse_in_range(
                "log.cleaner.backoff.ms",
                &get("log.cleaner.backoff.ms"),
                1,
                i64::MAX,
            )? as u64,
            cleaner_dedupe_buffer_bytes: parse_in_range(
                "log.cleaner.dedupe.buffer.size",
                &get("log.cleaner.dedupe.buffer.size"),
                limits::CLEANER_DEDUPE_BUFFER_MIN_BYTES as i64,
                i64::MAX,
            )? as usize,
            spin_before_park_us: parse_in_range(
                "sluice.spin.before.park.us",
                &get("sluice.spin.before.park.us"),
                0,
                1_000_000,
            )? as u64,
            memory_release_interval: match parse_in_range(
                "sluice.memory.release.interval.ms",
                &get("sluice.memory.release.interval.ms"),
                0,
                i64::MAX,
            )? {
                0 => None,
                ms => Some(std::time::Duration::from_millis(ms as u64)),
            },
            fetch_zero_copy: parse_bool("sluice.fetch.zero.copy", &get("sluice.fetch.zero.copy"))?,
            admin_listen: match get("sluice.admin.listen").trim() {
                "none" => None,
                addr => Some(addr.parse().with_context(|| {
                    format!("sluice.admin.listen: {addr:?} is not HOST:PORT or none")
                })?),
            },
            group: crate::group::state::GroupConfig {
                min_session_timeout_ms: parse_in_range(
                    "group.min.session.timeout.ms",
                    &get("group.min.session.timeout.ms"),
                    1,
                    i32::MAX as i64,
                )? as i32,
                max_session_timeout_ms: parse_in_range(
                    "group.max.session.timeout.ms",
                    &get("group.max.session.timeout.ms"),
                    1,
                    i32::MAX as i64,
                )? as i32,
                initial_rebalance_delay_ms: parse_in_range(
                    "group.initial.rebalance.delay.ms",
                    &get("group.initial.rebalance.delay.ms"),
                    0,
                    i32::MAX as i64,
                )? as i32,
                max_size: parse_in_range(
                    "group.max.size",
                    &get("group.max.size"),
                    1,
                    limits::GROUP_MAX_SIZE_DEFAULT * 100,
                )? as usize,
            },
            offsets_retention_ms: parse_in_range(
                "offsets.retention.minutes",
                &get("offsets.retention.minutes"),
                1,
                i64::MAX / 60_000,
            )? * 60_000,
            offsets_retention_check_interval_ms: parse_in_range(
                "offsets.retention.check.interval.ms",
                &get("offsets.retention.check.interval.ms"),
                1,
                i64::MAX,
            )? as u64,
            offsets_topic_num_partitions: parse_in_range(
                "offsets.topic.num.partitions",
                &get("offsets.topic.num.partitions"),
                1,
                limits::TOPIC_PARTITIONS_MAX as i64,
            )? as i32,
            offsets_topic_segment_bytes: parse_in_range(
                "offsets.topic.segment.bytes",
                &get("offsets.topic.segment.bytes"),
                14,
                1 << 31,
            )? as u64,
            offsets_topic_replication_factor: parse_in_range(
                "offsets.topic.replication.factor",
                &get("offsets.topic.replication.factor"),
                1,
                i16::MAX as i64,
            )? as i16,
            offset_metadata_max_bytes: parse_in_range(
                "offset.metadata.max.bytes",
                &get("offset.metadata.max.bytes"),
                0,
                i32::MAX as i64,
            )? as usize,
            transaction_max_timeout_ms: parse_in_range(
                "transaction.max.timeout.ms",
                &get("transaction.max.timeout.ms"),
                1,
                i32::MAX as i64,
            )? as i32,
            transaction_state_partitions: parse_in_range(
                "transaction.state.log.num.partitions",
                &get("transaction.state.log.num.partitions"),
                1,
                limits::TOPIC_PARTITIONS_MAX as i64,
            )? as i32,
            transaction_state_segment_bytes: parse_in_range(
                "transaction.state.log.segment.bytes",
                &get("transaction.state.log.segment.bytes"),
                14,
                1 << 31,
            )? as u64,
            transaction_state_replication_factor: parse_in_range(
                "transaction.state.log.replication.factor",
                &get("transaction.state.log.replication.factor"),
                1,
                i16::MAX as i64,
            )? as i16,
            transaction_state_min_isr: MinInsyncReplicas::parse(
                "transaction.state.log.min.isr",
                &get("transaction.state.log.min.isr"),
            )?,
            overrides,
        };
        if config.group.min_session_timeout_ms > config.group.max_session_timeout_ms {
            bail!("group.min.session.timeout.ms must not exceed group.max.session.timeout.ms");
        }
        if config.max_connections_per_ip == 0 && config.max_connections_per_ip_overrides.is_empty()
        {
            bail!("max.connections.per.ip can be 0 only where max.connections.per.ip.overrides lets some address in");
        }
        if config.queued_max_request_bytes < config.socket_request_max_bytes {
            bail!("queued.max.request.bytes must be at least socket.request.max.bytes");
        }
        if parse_in_range(
            "default.replication.factor",
            &get("default.replication.factor"),
            1,
            1,
        )? != 1
        {
            bail!("default.replication.factor must be 1 on a single broker");
        }
        Ok(config)
    }

    /// The listener clients and other brokers connect to: the inter-broker listener, or (on a
    /// controller-only node, which has none) the first listener that is not a controller's.
    pub fn client_listener(&self) -> &Listener {
        let not_controller = |l: &&Listener| !self.controller_listener_names.contains(&l.name);
        self.listeners
            .iter()
            .find(|l| l.name == self.inter_broker_listener_name)
            .or_else(|| self.listeners.iter().find(not_controller))
            .or(self.listeners.first())
            .expect("listeners is never empty")
    }

    /// Whether this broker's metadata is a quorum's (`controller.quorum.voters` is set), not
    /// the local file's: as a voter, or as an observer (a broker-only node).
    pub fn in_quorum(&self) -> bool {
        !self.quorum_voters.is_empty()
    }

    /// Whether this node is a voter of the metadata quorum (a controller with
    /// `controller.quorum.voters`).
    pub fn is_quorum_voter(&self) -> bool {
        self.process_roles.controller && self.in_quorum()
    }

    /// The listener the quorum talks on (the first of `controller.listener.names` this node
    /// listens on), if any.
    pub fn controller_listener(&self) -> Option<&Listener> {
        self.controller_listener_names
            .iter()
            .find_map(|name| self.listeners.iter().find(|l| &l.name == name))
    }

    /// The listeners clients connect to: every one but the controllers'.
    pub fn broker_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|l| !self.controller_listener_names.contains(&l.name))
    }

    /// The advertised address for the listener named `name`, else the client listener's.
    pub fn advertised_for(&self, name: &str) -> &Listener {
        let client = &self.client_listener().name;
        self.advertised_listeners
            .iter()
            .find(|l| l.name == name)
            .or_else(|| self.advertised_listeners.iter().find(|l| &l.name == client))
            .expect("a broker advertises its inter-broker listener")
    }

    /// The effective value of a broker key, for DescribeConfigs.
    pub fn value_of(&self, key: &str) -> Option<String> {
        match key {
            "process.roles" => return Some(self.process_roles.to_string()),
            "listeners" => return Some(listeners::render_listeners(&self.listeners)),
            "advertised.listeners" => {
                return Some(listeners::render_listeners(&self.advertised_listeners))
            }
            "controller.listener.names" => return Some(self.controller_listener_names.join(",")),
            "inter.broker.listener.name" => return Some(self.inter_broker_listener_name.clone()),
            "controller.quorum.voters" => {
                return Some(listeners::render_voters(&self.quorum_voters))
            }
            "node.id" => return Some(self.node_id.to_string()),
            _ => {}
        }
        self.overrides.get(key).cloned().or_else(|| {
            BROKER_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }
}

/// Parses a Kafka-style properties file: `key=value` lines, `#` and `!` comments, blank lines.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>> {
    let mut props = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = split_assignment(line)
            .with_context(|| format!("line {}: expected key=value, got {line:?}", number + 1))?;
        props.insert(key, value);
    }
    Ok(props)
}

/// Splits `key=value` (or `key:value`, as Java properties allow).
pub fn split_assignment(text: &str) -> Result<(String, String)> {
    let Some(at) = text.find(['=', ':']) else {
        bail!("{text:?} has no '='")
    };
    let key = text[..at].trim();
    if key.is_empty() {
        bail!("{text:?} has an empty key");
    }
    Ok((key.to_string(), text[at + 1..].trim().to_string()))
}

/// A broker key's default, as `BROKER_KEYS` lists it ("" for a key it does not list).
pub fn default_of(key: &str) -> &'static str {
    BROKER_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or("")
}

fn parse_in_range(key: &str, value: &str, min: i64, max: i64) -> Result<i64> {
    let parsed: i64 = value
        .trim()
        .parse()
        .with_context(|| format!("{key}: {value:?} is not an integer"))?;
    if parsed < min || parsed > max {
        bail!("{key}: {parsed} is outside the allowed range {min}..={max}");
    }
    Ok(parsed)
}

/// `max.connections.per.ip.overrides`: `host:count` pairs separated by commas, a host being an
/// address or a name (resolved at start, every address it has getting the count).
fn parse_connection_overrides(value: &str) -> Result<HashMap<IpAddr, usize>> {
    const KEY: &str = "max.connections.per.ip.overrides";
    let mut overrides = HashMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((host, count)) = pair.rsplit_once(':') else {
            bail!("{KEY}: {pair:?} is not host:count");
        };
        let count = parse_in_range(KEY, count, 0, limits::CONNECTIONS_MAX_DEFAULT)? as usize;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .with_context(|| format!("{KEY}: cannot resolve {host:?}"))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addresses {
            overrides.insert(ip, count);
        }
    }
    Ok(overrides)
}

/// A socket buffer size: -1 (the kernel's autotuning) or a size in bytes.
fn parse_socket_buffer(key: &str, value: &str) -> Result<Option<usize>> {
    match parse_in_range(key, value, -1, i32::MAX as i64)? {
        -1 => Ok(None),
        0 => bail!("{key}: 0 is no buffer; use -1 for the kernel's default or a size in bytes"),
        bytes => Ok(Some(bytes as usize)),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => bail!("{key}: {other:?} is not true or false"),
    }
}

/// `retention.ms` / `retention.bytes`: -1 (keep forever) or a positive limit.
fn parse_retention(key: &str, value: &str) -> Result<i64> {
    let parsed = parse_in_range(key, value, -1, i64::MAX)?;
    if parsed == 0 {
        bail!("{key}: 0 would delete everything as soon as it is written; use -1 for no limit or a positive value");
    }
    Ok(parsed)
}

/// `cleanup.policy` / `log.cleanup.policy`: a list of `delete` and `compact`; returns whether
/// each is in it.
fn parse_cleanup_policy(value: &str) -> Result<(bool, bool)> {
    let (mut delete, mut compact) = (false, false);
    for policy in value.split(',').map(str::trim) {
        match policy {
            "delete" => delete = true,
            "compact" => compact = true,
            other => bail!("cleanup.policy: {other:?} is not delete or compact"),
        }
    }
    Ok((delete, compact))
}

/// `min.cleanable.dirty.ratio` / `log.cleaner.min.cleanable.ratio`: a fraction in [0, 1].
fn parse_ratio(key: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => bail!("{key}: {value:?} is not a number between 0 and 1"),
    }
}

/// `message.timestamp.type` / `log.message.timestamp.type`.
pub fn parse_timestamp_type(value: &str) -> Result<TimestampType> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        other => bail!("message timestamp type {other:?} is not CreateTime or LogAppendTime"),
    }
}

/// `log.flush.interval.messages` / `flush.messages`: 1 means fsync before every acknowledgement.
pub fn parse_flush_policy(value: &str) -> Result<FlushPolicy> {
    let n = parse_in_range("log.flush.interval.messages", value, 1, i64::MAX)?;
    Ok(if n == 1 {
        FlushPolicy::Durable
    } else {
        FlushPolicy::EveryMessages(n as u64)
    })
}

impl LogConfig {
    /// Applies a topic-level config (CreateTopics) over the broker defaults; Kafka's topic key names.
    pub fn apply_topic_config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "segment.bytes" => self.segment_bytes = parse_in_range(key, value, 14, 1 << 31)? as u64,
            "segment.ms" => self.segment_ms = parse_in_range(key, value, 1, i64::MAX)?,
            "retention.ms" => self.retention_ms = parse_retention(key, value)?,
            "retention.bytes" => self.retention_bytes = parse_retention(key, value)?,
            "index.interval.bytes" => {
                self.index_interval_bytes = parse_in_range(key, value, 0, i32::MAX as i64)? as u32
            }
            "max.message.bytes" => {
                self.max_message_bytes = parse_in_range(key, value, 0, i32::MAX as i64)? as usize
            }
            "message.timestamp.type" => self.timestamp_type = parse_timestamp_type(value)?,
            "message.timestamp.before.max.ms" => {
                self.timestamp_before_max_ms = parse_in_range(key, value, 0, i64::MAX)?
            }
            "message.timestamp.after.max.ms" => {
                self.timestamp_after_max_ms = parse_in_range(key, value, 0, i64::MAX)?
            }
            "flush.messages" => self.flush = parse_flush_policy(value)?,
            "cleanup.policy" => {
                (self.cleanup_delete, self.cleanup_compact) = parse_cleanup_policy(value)?
            }
            "delete.retention.ms" => {
                self.delete_retention_ms = parse_in_range(key, value, 0, i64::MAX)?
            }
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = parse_ratio(key, value)?
            }
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = parse_in_range(key, value, 0, i64::MAX)?
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = parse_in_range(key, value, 1, i64::MAX)?
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = MinInsyncReplicas::parse(key, value)?
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = parse_bool(key, value)?
            }
            // Accepted and reported back; not interpreted by a single broker.
            "segment.index.bytes"
            | "compression.type"
            | "message.downconversion.enable"
            | "file.delete.delay.ms"
            | "flush.ms"
            | "preallocate"
            | "message.timestamp.difference.max.ms"
            | "segment.jitter.ms"
            | "local.retention.ms"
            | "local.retention.bytes"
            | "remote.storage.enable" => {
                if value.trim().is_empty() {
                    bail!("{key}: empty value");
                }
            }
            other => bail!("unknown topic config {other:?}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafka_like_and_durable() {
        let c = Config::default();
        assert_eq!(
            c.client_listener().socket_addr().unwrap().to_string(),
            "127.0.0.1:9092"
        );
        assert_eq!(c.controller_listener(), None);
        assert_eq!(c.log.flush, FlushPolicy::Durable);
        assert_eq!(c.log.segment_bytes, 1 << 30);
        assert!(c.auto_create_topics);
    }

    #[test]
    fn memory_is_bounded_and_released_by_default_and_zero_keeps_it() {
        let c = Config::default();
        assert_eq!(c.queued_max_request_bytes, c.socket_request_max_bytes);
        assert_eq!(
            c.memory_release_interval,
            Some(std::time::Duration::from_secs(10))
        );
        let mut p = BTreeMap::new();
        p.insert(
            "sluice.memory.release.interval.ms".to_string(),
            "0".to_string(),
        );
        assert_eq!(
            Config::from_properties(&p).unwrap().memory_release_interval,
            None
        );
    }

    #[test]
    fn connection_limits_take_kafkas_names_and_defaults() {
        let c = Config::default();
        assert_eq!(c.max_connections, i32::MAX as usize);
        assert_eq!(c.max_connections_per_ip, i32::MAX as usize);
        assert!(c.max_connections_per_ip_overrides.is_empty());
        assert_eq!(c.max_connection_creation_rate, None);
        assert_eq!(c.connections_max_idle, Duration::from_secs(600));
        assert_eq!(c.request_receive_timeout, Duration::from_secs(30));
        let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let c = Config::from_properties(&props(&[
            ("max.connections.per.ip", "0"),
            ("max.connections.per.ip.overrides", "127.0.0.1:5, [::1]:7"),
            ("max.connection.creation.rate", "50"),
        ]))
        .unwrap();
        assert_eq!(c.max_connection_creation_rate, Some(50));
        let overrides = &c.max_connections_per_ip_overrides;
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(overrides[&"::1".parse::<IpAddr>().unwrap()], 7);
        assert_eq!(overrides[&localhost], 5);
        let named = Config::from_properties(&props(&[(
            "max.connections.per.ip.overrides",
            "localhost:3",
        )]))
        .unwrap();
        assert_eq!(named.max_connections_per_ip_overrides[&localhost], 3);
        let zero = Config::from_properties(&props(&[("max.connections.per.ip", "0")]));
        assert!(zero
            .unwrap_err()
            .to_string()
            .contains("max.connections.per.ip"));
        let bad = Config::from_properties(&props(&[("max.connections.per.ip.overrides", "a")]));
        assert!(bad.unwrap_err().to_string().contains("host:count"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut p = BTreeMap::new();
        p.insert("log.segment.bytes".to_string(), "ten".to_string());
        let err = Config::from_properties(&p).unwrap_err().to_string();
        assert!(err.contains("log.segment.bytes"), "{err}");
        p.insert("log.segment.bytes".to_string(), "1".to_string());
        assert!(Config::from_properties(&p).is_err());
    }

    #[test]
    fn properties_file_parses_comments_and_colons() {
        let props = parse_properties("# c\n\nnum.partitions = 3\nlog.roll.ms:1000\n").unwrap();
        assert_eq!(props["num.partitions"], "3");
        assert_eq!(props["log.roll.ms"], "1000");
        assert!(parse_properties("novalue").is_err());
    }

    #[test]
    fn socket_buffers_take_a_size_or_minus_one() {
        assert_eq!(parse_socket_buffer("k", "-1").unwrap(), None);
        assert_eq!(parse_socket_buffer("k", "102400").unwrap(), Some(102_400));
        assert!(parse_socket_buffer("k", "0").is_err());
        assert!(parse_socket_buffer("k", "-2").is_err());
        let mut p = BTreeMap::new();
        p.insert("socket.send.buffer.bytes".to_string(), "65536".to_string());
        let c = Config::from_properties(&p).unwrap();
        assert_eq!(c.socket_send_buffer_bytes, Some(65_536));
        assert_eq!(c.socket_receive_buffer_bytes, None);
    }

    #[test]
    fn flush_policy_maps_kafka_names() {
        assert_eq!(parse_flush_policy("1").unwrap(), FlushPolicy::Durable);
        assert_eq!(
            parse_flush_policy("9223372036854775807").unwrap(),
            FlushPolicy::EveryMessages(i64::MAX as u64)
        );
        assert!(parse_flush_policy("0").is_err());
    }
}
