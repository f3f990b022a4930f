//! The network and quorum keys, with Kafka's names and rules: `process.roles`, `listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`, `inter.broker.listener.name`,
//! `controller.listener.names`, `controller.quorum.voters` and
//! `controller.quorum.bootstrap.servers` (and Sluice's older `listen`, one PLAINTEXT listener).
//!
//! Parsed once at start on the main thread as part of `Config`; the shards read the result.
//! Where Kafka requires a quorum (it has no single-node mode), Sluice lets a node configure none:
//! a broker that is the whole cluster needs no controller listener and no voters.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

/// `listeners` when neither it nor `listen` is set: loopback only (Kafka listens on every
/// interface by default; a broker installed from a package should not be reachable until told).
pub const LISTENERS_DEFAULT: &str = "PLAINTEXT://127.0.0.1:9092";
/// Kafka's default `listener.security.protocol.map`: each protocol's own name maps to it.
pub const SECURITY_PROTOCOL_MAP_DEFAULT: &str =
    "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT";
/// `process.roles` when unset: one node that is both, the whole cluster.
pub const PROCESS_ROLES_DEFAULT: &str = "broker,controller";
/// `inter.broker.listener.name` when unset: Kafka's, from `security.inter.broker.protocol`.
pub const INTER_BROKER_LISTENER_DEFAULT: &str = "PLAINTEXT";

/// `process.roles`: what this node is in a KRaft cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    pub broker: bool,
    pub controller: bool,
}

impl fmt::Display for ProcessRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.broker, self.controller) {
            (true, true) => f.write_str("broker,controller"),
            (true, false) => f.write_str("broker"),
            (false, true) => f.write_str("controller"),
            (false, false) => unreachable!("process.roles is never empty"),
        }
    }
}

/// One entry of `listeners` or `advertised.listeners`: `NAME://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Upper-case, as Kafka normalises listener names.
    pub name: String,
    /// An address or a name, without IPv6 brackets; empty for every interface.
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// The address to bind: an empty host is every interface, a name is resolved (its first
    /// address).
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        if self.host.is_empty() {
            return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), self.port));
        }
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", self.host),
                )
            })
    }

    /// Whether the host means every interface (empty, `0.0.0.0` or `::`).
    fn is_wildcard(&self) -> bool {
        self.host.is_empty()
            || self
                .host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

/// One entry of `controller.quorum.voters`: `ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumVoter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// The parsed network and quorum keys, moved into `Config`.
#[derive(Debug, Clone)]
pub(super) struct Network {
    pub process_roles: ProcessRoles,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub controller_listener_names: Vec<String>,
    pub inter_broker_listener_name: String,
    pub quorum_voters: Vec<QuorumVoter>,
    pub quorum_bootstrap_servers: Vec<(String, u16)>,
}

/// Parses and checks the keys together, as Kafka's broker config validation does; every error
/// names the key at fault.
pub(super) fn parse(props: &BTreeMap<String, String>, node_id: i32) -> Result<Network> {
    let get = |key: &str| props.get(key).map(|v| v.trim());
    let process_roles = parse_process_roles(get("process.roles").unwrap_or(PROCESS_ROLES_DEFAULT))?;
    let listeners = match (get("listen"), get("listeners")) {
        (Some(_), Some(_)) => bail!(
            "listen and listeners are both set: listen=HOST:PORT is the older spelling of \
             listeners=PLAINTEXT://HOST:PORT; keep one"
        ),
        (Some(listen), None) => {
            let addr: SocketAddr = listen.parse().with_context(|| {
                format!("listen: {listen:?} is not HOST:PORT (an IP address and port)")
            })?;
            vec![Listener {
                name: "PLAINTEXT".to_string(),
                host: addr.ip().to_string(),
                port: addr.port(),
            }]
        }
        (None, listeners) => parse_listeners("listeners", listeners.unwrap_or(LISTENERS_DEFAULT))?,
    };
    if listeners.is_empty() {
        bail!("listeners: at least one listener is needed");
    }
    check_distinct_names("listeners", &listeners)?;
    check_distinct_ports(&listeners)?;
    for listener in &listeners {
        if listener.port == 0 {
            bail!(
                "listeners: {listener} has port 0; every shard binds the listener's port, so it \
                 must be a fixed one"
            );
        }
        listener
            .socket_addr()
            .with_context(|| format!("listeners: cannot resolve the host of {listener}"))?;
    }

    let controller_listener_names: Vec<String> = get("controller.listener.names")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let is_controller_listener = |l: &Listener| controller_listener_names.contains(&l.name);

    let advertised_listeners = match get("advertised.listeners") {
        Some(value) => {
            let advertised = parse_listeners("advertised.listeners", value)?;
            check_distinct_names("advertised.listeners", &advertised)?;
            advertised
        }
        // Kafka's default: what the node listens on, less the controller listeners.
        None => listeners
            .iter()
            .filter(|l| !is_controller_listener(l))
            .map(|l| Listener {
                // A wildcard cannot be connected to; loopback at least works on this host.
                host: if l.is_wildcard() {
                    Ipv4Addr::LOCALHOST.to_string()
                } else {
                    l.host.clone()
                },
                ..l.clone()
            })
            .collect(),
    };
    for listener in &advertised_listeners {
        if listener.is_wildcard() && !listener.host.is_empty() {
            bail!(
                "advertised.listeners: {listener} uses the non-routable meta-address {}; \
                 advertise an address or name clients can reach",
                listener.host
            );
        }
        if listener.host.is_empty() {
            bail!("advertised.listeners: {listener} has no host; advertise an address or name clients can reach");
        }
        if listener.port == 0 {
            bail!("advertised.listeners: {listener} has port 0");
        }
    }

    let protocols = parse_security_protocol_map(
        get("listener.security.protocol.map"),
        &controller_listener_names,
    )?;
    for listener in listeners.iter().chain(&advertised_listeners) {
        let Some(protocol) = protocols.get(&listener.name) else {
            bail!(
                "listener.security.protocol.map: no security protocol for listener {}",
                listener.name
            );
        };
        if protocol != "PLAINTEXT" {
            bail!(
                "listeners: listener {} uses {protocol}; security is not yet supported, only \
                 PLAINTEXT listeners",
                listener.name
            );
        }
    }

    let inter_broker_listener_name = get("inter.broker.listener.name")
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| INTER_BROKER_LISTENER_DEFAULT.to_string());
    let quorum_voters = parse_voters(get("controller.quorum.voters").unwrap_or(""))?;
    let quorum_bootstrap_servers =
        parse_bootstrap_servers(get("controller.quorum.bootstrap.servers").unwrap_or(""))?;

    let network = Network {
        process_roles,
        listeners,
        advertised_listeners,
        controller_listener_names,
        inter_broker_listener_name,
        quorum_voters,
        quorum_bootstrap_servers,
    };
    network.check_roles(node_id)?;
    Ok(network)
}

impl Network {
    /// Kafka's rules tying the roles, listeners and quorum together.
    fn check_roles(&self, node_id: i32) -> Result<()> {
        let names = &self.controller_listener_names;
        let listener_names: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
        let has_quorum =
            !self.quorum_voters.is_empty() || !self.quorum_bootstrap_servers.is_empty();
        if has_quorum && names.is_empty() {
            bail!(
                "controller.listener.names: must name at least one listener when \
                 controller.quorum.voters or controller.quorum.bootstrap.servers is set"
            );
        }
        if names.contains(&self.inter_broker_listener_name) {
            bail!(
                "controller.listener.names: must not contain the inter-broker listener name {}",
                self.inter_broker_listener_name
            );
        }
        if self.process_roles.controller {
            if let Some(missing) = names.iter().find(|n| !listener_names.contains(&n.as_str())) {
                bail!(
                    "controller.listener.names: {missing} is not in listeners; a node with the \
                     controller role must listen on each of its controller listeners"
                );
            }
        } else if let Some(found) = names.iter().find(|n| listener_names.contains(&n.as_str())) {
            bail!(
                "controller.listener.names: {found} is in listeners; a broker-only node must \
                 not listen on a controller listener"
            );
        }
        if self.process_roles.controller && !self.process_roles.broker {
            if let Some(other) = self.listeners.iter().find(|l| !names.contains(&l.name)) {
                bail!(
                    "listeners: {other} is not a controller listener; with process.roles=controller \
                     every listener must be named in controller.listener.names"
                );
            }
        }
        if self.process_roles.broker {
            if let Some(controller) = self
                .advertised_listeners
                .iter()
                .find(|l| names.contains(&l.name))
            {
                bail!(
                    "advertised.listeners: {controller} is a controller listener; clients only \
                     talk to brokers, so a broker must not advertise it"
                );
            }
            if !self
                .advertised_listeners
                .iter()
                .any(|l| l.name == self.inter_broker_listener_name)
            {
                bail!(
                    "inter.broker.listener.name: {} must be a listener name in \
                     advertised.listeners (set inter.broker.listener.name to one of them)",
                    self.inter_broker_listener_name
                );
            }
            for advertised in &self.advertised_listeners {
                if !listener_names.contains(&advertised.name.as_str()) {
                    bail!(
                        "advertised.listeners: {advertised} names no listener in listeners; each \
                         advertised listener is a name the broker listens on"
                    );
                }
            }
        }
        if !self.quorum_voters.is_empty() {
            let voter = self.quorum_voters.iter().any(|v| v.id == node_id);
            if self.process_roles.controller && !voter {
                bail!(
                    "controller.quorum.voters: node.id {node_id} must be among the voters when \
                     process.roles contains controller"
                );
            }
            if !self.process_roles.controller && voter {
                bail!(
                    "controller.quorum.voters: node.id {node_id} must not be among the voters \
                     when process.roles is broker only"
                );
            }
        }
        Ok(())
    }
}

fn parse_process_roles(value: &str) -> Result<ProcessRoles> {
    let mut roles = ProcessRoles {
        broker: false,
        controller: false,
    };
    for role in value.split(',').map(str::trim) {
        let seen = match role {
            "broker" => std::mem::replace(&mut roles.broker, true),
            "controller" => std::mem::replace(&mut roles.controller, true),
            other => bail!("process.roles: {other:?} is not broker or controller"),
        };
        if seen {
            bail!("process.roles: {role} is given twice");
        }
    }
    Ok(roles)
}

/// A comma-separated list of `NAME://HOST:PORT`; `HOST` may be empty, or `[v6-address]`.
fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, address)) = entry.split_once("://") else {
            bail!("{key}: {entry:?} is not NAME://HOST:PORT");
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("{key}: {entry:?} has no valid listener name (letters, digits, _ and -)");
        }
        let (host, port) = split_host_port(address)
            .with_context(|| format!("{key}: {entry:?} is not NAME://HOST:PORT"))?;
        listeners.push(Listener {
            name: name.to_ascii_uppercase(),
            host,
            port,
        });
    }
    Ok(listeners)
}

/// `HOST:PORT`, the host maybe empty or a bracketed IPv6 address.
fn split_host_port(address: &str) -> Result<(String, u16)> {
    let Some((host, port)) = address.rsplit_once(':') else {
        bail!("{address:?} has no port");
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .with_context(|| format!("{host:?} has an unclosed '['"))?,
        None if host.contains(':') => bail!("{host:?}: put an IPv6 address in brackets"),
        None => host,
    };
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:%".contains(c))
    {
        bail!("{host:?} is not a host name or address");
    }
    let port: u16 = port
        .parse()
        .with_context(|| format!("{port:?} is not a port (0..=65535)"))?;
    Ok((host.to_string(), port))
}

fn check_distinct_names(key: &str, listeners: &[Listener]) -> Result<()> {
    let mut seen = HashSet::new();
    for listener in listeners {
        if !seen.insert(&listener.name) {
            bail!(
                "{key}: the listener name {} is used twice; each listener needs its own name",
                listener.name
            );
        }
    }
    Ok(())
}

/// Kafka refuses two listeners on one port, unless one is on an IPv4 address and the other on
/// an IPv6 one.
fn check_distinct_ports(listeners: &[Listener]) -> Result<()> {
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            if a.port != b.port {
                continue;
            }
            let families = (a.host.parse::<IpAddr>(), b.host.parse::<IpAddr>());
            let split_by_family = matches!(families, (Ok(x), Ok(y)) if x.is_ipv4() != y.is_ipv4());
            if !split_by_family {
                bail!(
                    "listeners: {a} and {b} share port {}; each listener needs its own port",
                    a.port
                );
            }
        }
    }
    Ok(())
}

/// `listener.security.protocol.map`: `NAME:PROTOCOL` pairs. Unset, it is Kafka's default, to
/// which (as in Kafka) each controller listener not in it is added as PLAINTEXT.
fn parse_security_protocol_map(
    value: Option<&str>,
    controller_listener_names: &[String],
) -> Result<BTreeMap<String, String>> {
    const KEY: &str = "listener.security.protocol.map";
    let mut map = BTreeMap::new();
    for pair in value
        .unwrap_or(SECURITY_PROTOCOL_MAP_DEFAULT)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((name, protocol)) = pair.split_once(':') else {
            bail!("{KEY}: {pair:?} is not LISTENER_NAME:SECURITY_PROTOCOL");
        };
        let protocol = protocol.trim().to_ascii_uppercase();
        if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&protocol.as_str()) {
            bail!("{KEY}: {protocol:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL");
        }
        let name = name.trim().to_ascii_uppercase();
        if map.insert(name.clone(), protocol).is_some() {
            bail!("{KEY}: listener {name} is mapped twice");
        }
    }
    if value.is_none() {
        for name in controller_listener_names {
            map.entry(name.clone())
                .or_insert_with(|| "PLAINTEXT".to_string());
        }
    }
    Ok(map)
}

/// `controller.quorum.voters`: `ID@HOST:PORT` entries, each id once.
fn parse_voters(value: &str) -> Result<Vec<QuorumVoter>> {
    const KEY: &str = "controller.quorum.voters";
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, address)) = entry.split_once('@') else {
            bail!("{KEY}: {entry:?} is not ID@HOST:PORT");
        };
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .with_context(|| format!("{KEY}: {entry:?} has no node id (a non-negative integer)"))?;
        let (host, port) = split_host_port(address)
            .with_context(|| format!("{KEY}: {entry:?} is not ID@HOST:PORT"))?;
        if host.is_empty() || port == 0 {
            bail!("{KEY}: {entry:?} needs a host and a non-zero port");
        }
        if voters.iter().any(|v| v.id == id) {
            bail!("{KEY}: node id {id} is given twice");
        }
        voters.push(QuorumVoter { id, host, port });
    }
    Ok(voters)
}

/// `controller.quorum.bootstrap.servers`: `HOST:PORT` entries.
fn parse_bootstrap_servers(value: &str) -> Result<Vec<(String, u16)>> {
    const KEY: &str = "controller.quorum.bootstrap.servers";
    let mut servers = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, port) =
            split_host_port(entry).with_context(|| format!("{KEY}: {entry:?} is not HOST:PORT"))?;
        if host.is_empty() || port == 0 {
            bail!("{KEY}: {entry:?} needs a host and a non-zero port");
        }
        servers.push((host, port));
    }
    Ok(servers)
}

/// Renders listeners as the keys are written (`NAME://HOST:PORT,...`).
pub fn render_listeners(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(Listener::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders voters as `controller.quorum.voters` is written.
pub fn render_voters(voters: &[QuorumVoter]) -> String {
    voters
        .iter()
        .map(|v| {
            if v.host.contains(':') {
                format!("{}@[{}]:{}", v.id, v.host, v.port)
            } else {
                format!("{}@{}:{}", v.id, v.host, v.port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests;
