//! A TCP proxy that delays what it forwards, for tests of slow links: each broker of a cluster
//! advertises its proxy's address (`advertised.listeners`), so clients and the other brokers
//! (replica fetches, transaction markers) reach it only through the proxy, and `set_delay` makes
//! that link slow, both ways, from the next chunk on.
//!
//! Each direction of a connection is a reader thread, which stamps every chunk with the instant
//! it may go out, and a writer thread, which sends it then: the delay adds latency without
//! capping throughput. A connection whose either end closes or fails is closed on both sides.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read from one end before they are queued for the other.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

pub struct DelayProxy {
    address: SocketAddr,
    delay_ms: Arc<AtomicU64>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (delay_ms, stop) = (delay_ms.clone(), stop.clone());
            std::thread::spawn(move || accept(listener, target, delay_ms, stop))
        };
        DelayProxy {
            address,
            delay_ms,
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
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(
    listener: TcpListener,
    target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                // A target that is down (a killed broker) refuses: the client sees it close.
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (delay_ms, stop) = (delay_ms.clone(), stop.clone());
                    std::thread::spawn(move || pump(from, to, delay_ms, stop));
                }
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
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
