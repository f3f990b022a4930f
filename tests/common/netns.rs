//! Network namespaces for tests that cut brokers off the network. Each member (a broker) gets a
//! namespace of its own, joined to the test's namespace by a veth pair on one bridge, with an
//! address on a subnet of its own: the test's clients and the other brokers reach it only over
//! that link. So taking the link down partitions a broker from everyone, both directions at once,
//! and an nftables rule in its namespace drops one direction only (a half-open partition: its
//! packets go out and nothing comes back, or the other way round), or only what it sends to one
//! peer's port (replication cut while the metadata quorum still talks).
//!
//! Needs root, iproute2's `ip` and nftables' `nft`; `Network::create` says what is missing. Each
//! test process names its namespaces and bridge after its process id, and removes them when the
//! `Network` drops (also what an earlier run with the same id left, and what runs killed before
//! their `Network` dropped left: any whose process is gone).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// One direction of a member's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// What the member sends.
    Outbound,
    /// What reaches it.
    Inbound,
}

pub struct Network {
    /// Unique among the test processes running at once: the process id.
    id: u32,
    members: usize,
}

/// The nftables table a one-way cut lives in, inside the member's namespace.
const CUT_TABLE: &str = "sluice_cut";

impl Network {
    /// A bridge and `members` namespaces on it, or why they cannot be made here.
    pub fn create(members: usize) -> Result<Network, String> {
        assert!((1..=200).contains(&members));
        // /proc/self belongs to the process's effective user.
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid());
        if uid.ok() != Some(0) {
            return Err("network namespaces need root".into());
        }
        for tool in ["ip", "nft"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("`{tool}` is not installed (iproute2, nftables)"));
            }
        }
        let network = Network {
            id: std::process::id(),
            members,
        };
        remove_orphans();
        network.remove();
        network.build()?;
        Ok(network)
    }

    /// Member `member`'s address, reachable from the test's namespace and every member's.
    pub fn address(&self, member: usize) -> String {
        format!("{}.{}", self.subnet(), member + 1)
    }

    /// The test's own address on the bridge: what listens here is reachable from every member.
    pub fn gateway(&self) -> String {
        format!("{}.254", self.subnet())
    }

    /// The namespace member `member` runs in (`ip netns exec` it).
    pub fn namespace(&self, member: usize) -> String {
        format!("sluice{}-{member}", self.id)
    }

    /// Takes the member's link down: nothing reaches it or leaves it.
    pub fn isolate(&self, member: usize) {
        ip(&["-n", &self.namespace(member), "link", "set", "eth0", "down"]).unwrap();
    }

    /// Drops the member's traffic in one direction; the other still flows.
    pub fn cut(&self, member: usize, direction: Direction) {
        match direction {
            Direction::Outbound => self.drop_where(member, "output", &["oifname", "eth0"]),
            Direction::Inbound => self.drop_where(member, "input", &["iifname", "eth0"]),
        }
    }

    /// Drops what the member sends to `host:port` over TCP, and only that: its other
    /// connections (to another listener of the same peer, say) still flow.
    pub fn block(&self, member: usize, host: &str, port: u16) {
        let port = port.to_string();
        let matching = ["ip", "daddr", host, "tcp", "dport", &port];
        self.drop_where(member, "output", &matching);
    }

    /// Adds a rule to the member's namespace that drops the packets `matching` selects at
    /// netfilter hook `hook` (its chain is named after the hook).
    fn drop_where(&self, member: usize, hook: &str, matching: &[&str]) {
        let ns = self.namespace(member);
        nft(&ns, &["add", "table", "inet", CUT_TABLE]).unwrap();
        let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
        nft(&ns, &["add", "chain", "inet", CUT_TABLE, hook, &spec]).unwrap();
        let mut rule = vec!["add", "rule", "inet", CUT_TABLE, hook];
        rule.extend(matching);
        rule.push("drop");
        nft(&ns, &rule).unwrap();
    }

    /// Undoes `isolate`, `cut` and `block`: the member's link is up and nothing is dropped.
    pub fn heal(&self, member: usize) {
        let ns = self.namespace(member);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap();
        // Absent when only `isolate` ran.
        let _ = nft(&ns, &["delete", "table", "inet", CUT_TABLE]);
    }

    /// 10.x.y: distinct for process ids that differ below 64,000.
    fn subnet(&self) -> String {
        let n = self.id % 64_000;
        format!("10.{}.{}", 1 + n / 250, n % 250)
    }

    fn bridge(&self) -> String {
        format!("slbr{}", self.id)
    }

    /// The member's end of its veth pair in the test's namespace (at most 15 characters).
    fn host_end(&self, member: usize) -> String {
        format!("slv{}-{member}", self.id % 10_000_000)
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", self.subnet()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for member in 0..self.members {
            let (ns, host_end) = (self.namespace(member), self.host_end(member));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.address(member));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Deletes the namespaces (their veth pairs go with them) and the bridge, if they exist.
    fn remove(&self) {
        for member in 0..self.members {
            let _ = ip(&["netns", "del", &self.namespace(member)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes the namespaces and bridges of test processes that are gone (a run killed before its
/// `Network` dropped): their names carry the process id.
fn remove_orphans() {
    let gone = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    let listing = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    // `ip netns list`: "sluice<pid>-<member> (id: N)".
    for line in listing(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name
            .strip_prefix("sluice")
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(gone) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    // `ip -o link show type bridge`: "N: slbr<pid>: <...> ...".
    for line in listing(&["-o", "link", "show", "type", "bridge"]).lines() {
        let name = line.split(": ").nth(1).unwrap_or_default();
        if name.strip_prefix("slbr").is_some_and(gone) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

/// `nft` inside namespace `ns`.
fn nft(ns: &str, args: &[&str]) -> Result<(), String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
