//! A TCP proxy that delays what it forwards, for tests of slow links: each broker of a cluster
//! advertises its proxy's address (`advertised.listeners`), so clients and the other brokers
//! (replica fetches, transaction markers) reach it only through the proxy, and `set_delay` makes
//! that link slow, both ways, from the next chunk on.
//!
//! Each direction of a connection is a reader thread, which stamps every chunk with the instant
//! it may go out, and a writer thread, which sends it then: the delay adds latency without
//! capping throughput. A connection whose either end closes or fails is closed on both sides.
//!
//! The proxy listens only while its broker accepts connections (`follow_target`), so that a
//! broker that is down looks down through its proxy too: connections are refused.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read from one end before they are queued for the other.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often the accept loop looks at the stop flag, and probes a target it has seen refuse.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// How often a listening proxy probes whether its target still accepts.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a probe of the target may take to connect.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct DelayProxy {
    address: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    /// Set by `target_going_down`: the acceptor stops listening at once.
    going_down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on a free port of `host` and forwards each connection to `target`.
    pub fn start(host: &str, target: SocketAddr) -> DelayProxy {
        let listener = TcpListener::bind((host, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let going_down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let shared = Shared {
                target,
                delay_ms: delay_ms.clone(),
                going_down: going_down.clone(),
                stop: stop.clone(),
            };
            std::thread::spawn(move || follow_target(listener, shared))
        };
        DelayProxy {
            address,
            delay_ms,
            going_down,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Holds back every chunk forwarded from now on by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The target is about to be killed: stops listening before this returns, so that no client
    /// connects in the moment between the kill and the next probe; listens again once the target
    /// has refused and accepts again (restarted).
    pub fn target_going_down(&self) {
        self.going_down.store(true, Ordering::SeqCst);
        while self.going_down.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// What the acceptor shares with the proxy's owner.
struct Shared {
    target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    going_down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Where the acceptor stands with its target.
enum Listening {
    /// Forwarding what it accepts.
    Yes(TcpListener),
    /// Not listening until the target refuses (it is being taken down), then accepts.
    UntilRefusedAndBack,
    /// Not listening until the target accepts.
    UntilBack,
}

/// Listens while the target accepts, and not while it refuses: a broker that is down refuses
/// connections, and so must its proxy. A proxy that accepted a client and then closed it would
/// show the client a broker that hangs up mid-handshake, which librdkafka takes for a broker too
/// old for ApiVersions (it then falls back to `broker.version.fallback` and its idempotent
/// producer stops for good).
fn follow_target(listener: TcpListener, shared: Shared) {
    let address = listener.local_addr().unwrap();
    let mut state = Listening::Yes(listener);
    let mut last_probe = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.going_down.load(Ordering::SeqCst) {
            state = Listening::UntilRefusedAndBack;
            shared.going_down.store(false, Ordering::SeqCst);
        }
        state = match state {
            Listening::Yes(listener) => {
                let probe_due = last_probe.elapsed() >= PROBE_INTERVAL;
                if probe_due {
                    last_probe = Instant::now();
                }
                if probe_due && !target_accepts(shared.target) {
                    Listening::UntilBack
                } else {
                    accept_one(listener, &shared)
                }
            }
            Listening::UntilRefusedAndBack => {
                std::thread::sleep(Duration::from_millis(10));
                if target_accepts(shared.target) {
                    Listening::UntilRefusedAndBack
                } else {
                    Listening::UntilBack
                }
            }
            Listening::UntilBack => {
                std::thread::sleep(ACCEPT_POLL);
                match target_accepts(shared.target).then(|| TcpListener::bind(address)) {
                    Some(Ok(listener)) => {
                        listener.set_nonblocking(true).unwrap();
                        Listening::Yes(listener)
                    }
                    _ => Listening::UntilBack,
                }
            }
        };
    }
}

/// Accepts and forwards one waiting client, if any.
fn accept_one(listener: TcpListener, shared: &Shared) -> Listening {
    match listener.accept() {
        Ok((client, _)) => {
            if forward(client, shared) {
                Listening::Yes(listener)
            } else {
                Listening::UntilBack
            }
        }
        Err(_) => {
            std::thread::sleep(ACCEPT_POLL);
            Listening::Yes(listener)
        }
    }
}

fn target_accepts(target: SocketAddr) -> bool {
    TcpStream::connect_timeout(&target, PROBE_TIMEOUT).is_ok()
}

/// Connects `client` to the target and starts its two pumps; false, `client` closed, when the
/// target refuses.
fn forward(client: TcpStream, shared: &Shared) -> bool {
    let Ok(server) = TcpStream::connect_timeout(&shared.target, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = client.set_nonblocking(false);
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
        let (delay_ms, stop) = (shared.delay_ms.clone(), shared.stop.clone());
        std::thread::spawn(move || pump(from, to, delay_ms, stop));
    }
    true
}

/// Forwards what `from` sends to `to`, each chunk held back by the delay in force when it was
/// read; closes both when either end is done.
fn pump(mut from: TcpStream, to: TcpStream, delay_ms: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let (queue, queued) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let mut to = to.try_clone().unwrap();
        std::thread::spawn(move || {
            for (due, chunk) in queued {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut buffer = vec![0; CHUNK_BYTES];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                if queue
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(queue);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
