//! The broker's connection limits, `max.connections` and `max.connections.per.ip` (with
//! `max.connections.per.ip.overrides`), counted across every shard.
//!
//! The kernel spreads accepted connections across the shards' listeners (SO_REUSEPORT), so a
//! limit per shard would depend on how the hash fell: the counts are shared by all shards, an
//! atomic for the broker-wide one and a map under a lock for the per-address ones (touched once
//! per accept and once per close, never per request).
//!
//! A connection over either limit is closed as soon as it is accepted. Kafka does so for the
//! per-address limit; for `max.connections` its acceptor stops accepting until a connection
//! closes, leaving new ones in the listen backlog. A shard here cannot wait for a close on
//! another shard without a cross-thread wake-up, and a connection left in the backlog looks open
//! to its client while nothing answers it; closed at once, the client sees the refusal and
//! retries after its reconnect backoff.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections` connections are open already.
    Broker { max: usize },
    /// This address has its `max.connections.per.ip` (or override) open already.
    Address { max: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Broker { max } => write!(f, "max.connections ({max}) are open"),
            Refusal::Address { max } => write!(
                f,
                "the address has its maximum of {max} connections open (max.connections.per.ip)"
            ),
        }
    }
}

/// The limits and the connections counted against them.
pub struct ConnectionLimits {
    max_connections: usize,
    per_ip_max: usize,
    per_ip_overrides: HashMap<IpAddr, usize>,
    open: AtomicUsize,
    /// Open connections per address, kept only when some per-address limit is set.
    per_ip_open: Option<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection, counted until dropped.
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(
        max_connections: usize,
        per_ip_max: usize,
        per_ip_overrides: HashMap<IpAddr, usize>,
    ) -> ConnectionLimits {
        let unlimited = crate::limits::CONNECTIONS_MAX_DEFAULT as usize;
        let per_ip_counted = per_ip_max < unlimited || !per_ip_overrides.is_empty();
        ConnectionLimits {
            max_connections,
            per_ip_max,
            per_ip_overrides,
            open: AtomicUsize::new(0),
            per_ip_open: per_ip_counted.then(|| Mutex::new(HashMap::new())),
        }
    }

    /// Counts a new connection from `ip`, or says which limit it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        if let Some(per_ip_open) = &self.per_ip_open {
            let max = self
                .per_ip_overrides
                .get(&ip)
                .copied()
                .unwrap_or(self.per_ip_max);
            let mut per_ip_open = per_ip_open.lock().expect("no panic holds this lock");
            let open = per_ip_open.entry(ip).or_insert(0);
            if *open >= max {
                if *open == 0 {
                    per_ip_open.remove(&ip);
                }
                return Err(Refusal::Address { max });
            }
            *open += 1;
        }
        let admitted = Admitted {
            limits: self.clone(),
            ip,
        };
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_connections {
            // Dropping `admitted` gives back both counts.
            return Err(Refusal::Broker {
                max: self.max_connections,
            });
        }
        Ok(admitted)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.limits.open.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "every close follows its admission");
        if let Some(per_ip_open) = &self.limits.per_ip_open {
            let mut per_ip_open = per_ip_open.lock().expect("no panic holds this lock");
            let open = per_ip_open
                .get_mut(&self.ip)
                .expect("an admitted address is counted");
            *open -= 1;
            if *open == 0 {
                per_ip_open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_broker_wide_limit_counts_every_address() {
        let limits = Arc::new(ConnectionLimits::new(2, i32::MAX as usize, HashMap::new()));
        let a = limits.admit(ip(1)).unwrap();
        let _b = limits.admit(ip(2)).unwrap();
        assert_eq!(limits.admit(ip(3)).err(), Some(Refusal::Broker { max: 2 }));
        assert_eq!(limits.open(), 2, "a refusal is not counted");
        drop(a);
        assert!(limits.admit(ip(3)).is_ok());
    }

    #[test]
    fn an_address_is_held_to_its_override_or_the_default() {
        let overrides = HashMap::from([(ip(9), 3), (ip(8), 0)]);
        let limits = Arc::new(ConnectionLimits::new(100, 1, overrides));
        let first = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(1)).err(), Some(Refusal::Address { max: 1 }));
        let _other = limits.admit(ip(2)).unwrap();
        let nine: Vec<_> = (0..3).map(|_| limits.admit(ip(9)).unwrap()).collect();
        assert_eq!(limits.admit(ip(9)).err(), Some(Refusal::Address { max: 3 }));
        assert_eq!(limits.admit(ip(8)).err(), Some(Refusal::Address { max: 0 }));
        drop(first);
        drop(nine);
        assert!(limits.admit(ip(1)).is_ok());
        assert_eq!(
            limits.open(),
            1,
            "dropped admissions gave their counts back"
        );
    }

    #[test]
    fn a_refusal_by_the_broker_limit_gives_back_the_address_count() {
        let limits = Arc::new(ConnectionLimits::new(1, 1, HashMap::new()));
        let _held = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(2)).err(), Some(Refusal::Broker { max: 1 }));
        let per_ip = limits.per_ip_open.as_ref().unwrap().lock().unwrap();
        assert_eq!(per_ip.get(&ip(2)), None);
    }
}
