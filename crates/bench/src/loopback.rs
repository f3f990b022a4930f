//! `sluice bench loopback`: the baseline for catch-up reads, with no broker. One writer thread
//! pushes `LOOPBACK_CHUNK_BYTES` writes through one loopback TCP connection to a reader thread:
//! `--records` x `--size` bytes (the same bytes a consume run reads), or for `--duration`.
//! MB/s is what one connection carries on this machine; msgs/s counts whole `--size` records.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::limits::LOOPBACK_CHUNK_BYTES;
use super::progress::{self, Goal};
use super::recorder::Recorder;
use super::report::{Measured, Report};
use super::schedule::Limit;
use super::Options;

pub fn run(opts: &Options) -> Result<Report> {
    let listener = TcpListener::bind("127.0.0.1:0").context("listening on loopback")?;
    let address = listener.local_addr()?;
    let recorder = Mutex::new(Recorder::new(Instant::now()));
    std::thread::scope(|scope| -> Result<()> {
        let writer = scope.spawn(|| write(address, opts.limit, opts.size));
        let (stream, _) = listener
            .accept()
            .context("accepting the loopback connection")?;
        recorder.lock().unwrap().origin = Instant::now();
        progress::show(
            opts.progress,
            Goal::of(opts.limit, Duration::ZERO),
            &recorder,
            || read(stream, opts.size, &recorder),
        )?;
        writer.join().expect("the loopback writer panicked")
    })?;
    let recorder = recorder.into_inner().unwrap();
    Ok(Report::new(opts, None, Measured::Throughput, &recorder))
}

/// Writes until the limit, then closes the connection.
fn write(address: SocketAddr, limit: Limit, size: usize) -> Result<()> {
    let mut stream = TcpStream::connect(address).context("connecting over loopback")?;
    let chunk = vec![b'x'; LOOPBACK_CHUNK_BYTES];
    match limit {
        Limit::Records(records) => {
            let mut left = records as usize * size;
            while left > 0 {
                let n = left.min(chunk.len());
                stream.write_all(&chunk[..n])?;
                left -= n;
            }
        }
        Limit::Duration(duration) => {
            let end = Instant::now() + duration;
            while Instant::now() < end {
                stream.write_all(&chunk)?;
            }
        }
    }
    Ok(())
}

/// Reads until the writer closes, counting whole records of `size` bytes.
fn read(mut stream: TcpStream, size: usize, recorder: &Mutex<Recorder>) -> Result<()> {
    let mut buffer = vec![0u8; LOOPBACK_CHUNK_BYTES];
    let mut partial = 0;
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        partial += n;
        let records = partial / size;
        partial %= size;
        let bytes = (records * size) as u64;
        recorder.lock().unwrap().arrived(now, records as u64, bytes);
    }
}
