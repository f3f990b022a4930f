//! The broker's connection limits, `max.connections` and `max.connections.per.ip` (with
//! `max.connections.per.ip.overrides`), counted across every shard, and the rate at which new
//! connections are taken in, `max.connection.creation.rate` (KIP-612).
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
//!
//! Over `max.connection.creation.rate` a shard waits before it takes in the connection it just
//! accepted, and accepts nothing meanwhile (the kernel keeps new ones in the listen backlog), as
//! Kafka's acceptor is throttled. The rate is a token bucket shared by the shards, holding at
//! most one second's worth of connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// `max.connection.creation.rate`, when set.
    creation_rate: Option<CreationRate>,
}

/// New connections per second, as a token bucket.
struct CreationRate {
    per_second: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Connections that may be taken in now without waiting.
    tokens: f64,
    filled_at: Instant,
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
            creation_rate: None,
        }
    }

    /// Takes in at most `per_second` new connections per second (`max.connection.creation.rate`).
    pub fn with_creation_rate(mut self, per_second: u32) -> ConnectionLimits {
        assert!(per_second > 0, "a rate of zero would take in nothing");
        self.creation_rate = Some(CreationRate {
            per_second: per_second as f64,
            bucket: Mutex::new(Bucket {
                tokens: per_second as f64,
                filled_at: Instant::now(),
            }),
        });
        self
    }

    /// Takes a new connection in at `now`: how long to wait first, zero while new connections
    /// come within `max.connection.creation.rate`. The connection is counted either way, so
    /// waiters take turns.
    pub fn creation_delay(&self, now: Instant) -> Duration {
        let Some(rate) = &self.creation_rate else {
            return Duration::ZERO;
        };
        let mut bucket = rate.bucket.lock().expect("no panic holds this lock");
        let elapsed = now.saturating_duration_since(bucket.filled_at);
        bucket.tokens =
            (bucket.tokens + elapsed.as_secs_f64() * rate.per_second).min(rate.per_second);
        bucket.filled_at = bucket.filled_at.max(now);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate.per_second)
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
    fn new_connections_beyond_the_creation_rate_wait_their_turn() {
        let limits = ConnectionLimits::new(100, 100, HashMap::new()).with_creation_rate(10);
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                limits.creation_delay(start),
                Duration::ZERO,
                "a second's burst"
            );
        }
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(limits.creation_delay(start)), 100);
        assert_eq!(
            ms(limits.creation_delay(start)),
            200,
            "the next waits behind it"
        );
        let later = start + Duration::from_secs(10);
        assert_eq!(ms(limits.creation_delay(later)), 0, "refilled");
        let unlimited = ConnectionLimits::new(100, 100, HashMap::new());
        assert!((0..1000).all(|_| unlimited.creation_delay(start).is_zero()));
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
