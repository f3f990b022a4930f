//! A small synchronous Kafka client for the admin CLI: plain `TcpStream`s, one connection per
//! broker node, an ApiVersions handshake on each to pick request versions, correlation ids
//! checked, response frames bounded.
//!
//! Requests go where Kafka wants them: the partition leader for ListOffsets, Produce and Fetch
//! (see [`Client::leaders`]), the group coordinator for group APIs ([`Client::coordinator`]), any
//! broker for topic and config administration ([`Node::Any`]). Nothing here is specific to Sluice.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::limits::{
    CONNECT_TIMEOUT, RESPONSE_FRAME_MAX_BYTES, SOCKET_TIMEOUT, TOPIC_CREATION_RETRIES,
    TOPIC_CREATION_RETRY_BACKOFF,
};

/// Sent as the client id of every request.
const CLIENT_ID: &str = "sluice-cli";

/// Newest versions this client sends of APIs whose later versions address topics by id only.
const PRODUCE_VERSION_MAX: i16 = 12;
const FETCH_VERSION_MAX: i16 = 12;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Any broker (the bootstrap connection).
    Any,
    /// The broker with this node id, as listed in metadata.
    Id(i32),
}

/// A Kafka error code from a response, shown as Kafka's name for it (e.g. `TOPIC_ALREADY_EXISTS`).
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE_{code}"),
        Some(err) => {
            // The enum's variants are Kafka's names in camel case.
            let mut name = String::new();
            for (i, c) in err.to_string().chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// Fails with the error's Kafka name, its code and the broker's message when `code` is not 0.
pub fn check(code: i16, message: Option<&StrBytes>, what: impl std::fmt::Display) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let detail = message
        .map(|m| format!(": {}", m.as_str()))
        .unwrap_or_default();
    Err(anyhow::Error::new(KafkaError {
        code,
        text: format!("{what}: {} ({code}){detail}", error_name(code)),
    }))
}

/// An error a broker answered with (its Kafka error code), as `check` reports it.
#[derive(Debug)]
pub struct KafkaError {
    pub code: i16,
    text: String,
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for KafkaError {}

/// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: the group's
/// coordinator is moving or starting; asking again shortly works.
pub fn is_coordinator_moving(err: &anyhow::Error) -> bool {
    err.downcast_ref::<KafkaError>()
        .is_some_and(|e| matches!(e.code, 14..=16))
}

/// One broker connection and the versions it supports.
struct Connection {
    connection: sluice_client::Connection,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    fn open(address: &str) -> Result<Connection> {
        let addr = address
            .to_socket_addrs()
            .with_context(|| format!("resolving {address}"))?
            .next()
            .with_context(|| format!("{address} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
        stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
        let mut conn = Connection {
            connection: sluice_client::Connection::new(stream, CLIENT_ID, RESPONSE_FRAME_MAX_BYTES),
            versions: HashMap::new(),
        };
        // v0 is understood by every broker; its answer lists the versions of everything else.
        let response: ApiVersionsResponse = conn
            .exchange(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
            .with_context(|| format!("ApiVersions to {address}"))?;
        check(
            response.error_code,
            None,
            format!("ApiVersions to {address}"),
        )?;
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The newest version of `R` both sides support.
    fn version<R: Request>(&self) -> Result<i16> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        let cap = match api {
            ApiKey::Produce => PRODUCE_VERSION_MAX,
            ApiKey::Fetch => FETCH_VERSION_MAX,
            _ => R::VERSIONS.max,
        };
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .with_context(|| format!("the broker does not support {api:?}"))?;
        let version = max.min(cap);
        if version < min.max(R::VERSIONS.min) {
            bail!("no version of {api:?} supported by both the broker ({min}-{max}) and this tool");
        }
        Ok(version)
    }

    fn exchange<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp> {
        self.connection
            .call(api, version, body)
            .with_context(|| format!("{api:?} v{version}"))
    }
}

/// Connections to a cluster, opened on demand, and what metadata said about its brokers.
pub struct Client {
    bootstrap: String,
    bootstrap_conn: Connection,
    nodes: BTreeMap<i32, Connection>,
    brokers: BTreeMap<i32, String>,
}

impl Client {
    /// Connects to the bootstrap broker and learns the cluster's brokers.
    pub fn connect(bootstrap: &str) -> Result<Client> {
        let mut client = Client {
            bootstrap: bootstrap.to_string(),
            bootstrap_conn: Connection::open(bootstrap)?,
            nodes: BTreeMap::new(),
            brokers: BTreeMap::new(),
        };
        client.metadata(Some(&[]))?;
        Ok(client)
    }

    /// The version `R` would be sent with to `node`.
    pub fn version<R: Request>(&mut self, node: Node) -> Result<i16> {
        self.connection(node)?.version::<R>()
    }

    /// Sends one request to `node` at the newest common version and returns its response.
    pub fn send<R: Request>(&mut self, node: Node, request: &R) -> Result<R::Response> {
        let conn = self.connection(node)?;
        let version = conn.version::<R>()?;
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        conn.exchange(api, version, request)
    }

    fn connection(&mut self, node: Node) -> Result<&mut Connection> {
        let id = match node {
            Node::Any => return Ok(&mut self.bootstrap_conn),
            Node::Id(id) => id,
        };
        if !self.nodes.contains_key(&id) {
            let address = self.brokers.get(&id).with_context(|| {
                format!("broker {id} is not in the metadata of {}", self.bootstrap)
            })?;
            let conn = Connection::open(address)?;
            self.nodes.insert(id, conn);
        }
        Ok(self.nodes.get_mut(&id).expect("just inserted"))
    }

    /// Node ids of every broker in the cluster.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }

    /// Metadata for `topics` (None: all topics, empty: brokers only); never creates topics.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        self.metadata_creating(topics, false)
    }

    /// Metadata, letting a broker with `auto.create.topics.enable` create missing topics.
    fn metadata_creating(
        &mut self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let response = self.send(Node::Any, &request)?;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        Ok(response)
    }

    /// Partition leaders of one topic, by partition index; fails on a topic-level error.
    pub fn leaders(&mut self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        self.leaders_creating(topic, false)
    }

    /// Like `leaders`, but asks the broker to create the topic if it may (as a console producer
    /// does), waiting while the new topic gets its leaders.
    pub fn leaders_auto_created(&mut self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        let mut tries = 0;
        loop {
            match self.leaders_creating(topic, true) {
                Err(err)
                    if tries < TOPIC_CREATION_RETRIES
                        && err
                            .downcast_ref::<KafkaError>()
                            .is_some_and(|e| matches!(e.code, 3 | 5)) =>
                {
                    tries += 1;
                    std::thread::sleep(TOPIC_CREATION_RETRY_BACKOFF);
                }
                result => return result,
            }
        }
    }

    fn leaders_creating(&mut self, topic: &str, auto_create: bool) -> Result<BTreeMap<i32, i32>> {
        let response = self.metadata_creating(Some(&[topic.to_string()]), auto_create)?;
        let t = response
            .topics
            .first()
            .with_context(|| format!("no metadata for topic {topic}"))?;
        check(t.error_code, None, format!("topic {topic}"))?;
        Ok(t.partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect())
    }

    /// The node coordinating `group`.
    pub fn coordinator(&mut self, group: &str) -> Result<Node> {
        let version = self.version::<FindCoordinatorRequest>(Node::Any)?;
        let key = StrBytes::from_string(group.to_string());
        let request = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        };
        let response = self.send(Node::Any, &request)?;
        let (node, host, port) = match response.coordinators.first() {
            Some(c) => {
                check(
                    c.error_code,
                    c.error_message.as_ref(),
                    format!("finding the coordinator of group {group}"),
                )?;
                (c.node_id, c.host.clone(), c.port)
            }
            None => {
                check(
                    response.error_code,
                    response.error_message.as_ref(),
                    format!("finding the coordinator of group {group}"),
                )?;
                (response.node_id, response.host, response.port)
            }
        };
        let BrokerId(id) = node;
        self.brokers
            .insert(id, format!("{}:{}", host.as_str(), port));
        Ok(Node::Id(id))
    }
}

/// ListOffsets timestamp asking for the log end offset.
pub const LATEST: i64 = -1;
/// ListOffsets timestamp asking for the log start offset.
pub const EARLIEST: i64 = -2;

impl Client {
    /// The offset for `timestamp` (or [`LATEST`] / [`EARLIEST`]) of each partition of `topic`,
    /// asked of each partition's leader. A timestamp after the last record gives the log end.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
        };
        let leaders = self.leaders(topic)?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            let leader = leaders
                .get(&p)
                .with_context(|| format!("topic {topic} has no partition {p}"))?;
            by_leader.entry(*leader).or_default().push(p);
        }
        let mut offsets = BTreeMap::new();
        for (leader, parts) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response = self.send(Node::Id(leader), &request)?;
            for t in &response.topics {
                for p in &t.partitions {
                    check(
                        p.error_code,
                        None,
                        format!("offsets of {topic}/{}", p.partition_index),
                    )?;
                    offsets.insert(p.partition_index, p.offset);
                }
            }
        }
        if timestamp >= 0 {
            // No record at or after the timestamp: Kafka answers -1; the position is the end.
            let missing: Vec<i32> = offsets
                .iter()
                .filter(|(_, &o)| o < 0)
                .map(|(&p, _)| p)
                .collect();
            if !missing.is_empty() {
                let ends = self.list_offsets(topic, &missing, LATEST)?;
                offsets.extend(ends);
            }
        }
        Ok(offsets)
    }
}
