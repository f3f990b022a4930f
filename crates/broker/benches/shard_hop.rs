//! The cross-shard hop: a request and its answer between two pinned glommio executors, over a
//! channel mesh built as the broker builds its own (`CROSS_SHARD_QUEUE_DEPTH` deep), with the
//! executors spinning `SPIN` before they park, as `sluice.spin.before.park.us=200` makes shards do
//! (the default, 0, parks at once: every hop is then a `parked` one).
//!
//! - `awake`: round trips back to back, so the peer is still spinning when the next one arrives.
//! - `parked`: a pause before each round trip, longer than the spin, so the peer's thread sleeps
//!   and every request pays the cross-core wake-up the broker pays when a shard is idle.
//!
//! cargo bench --bench shard_hop

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement};
use sluice_broker::limits;

/// What the benchmark asks the calling shard to do: this many round trips, each after a pause.
struct Run {
    round_trips: u64,
    pause: Duration,
}

/// The calling shard: serves `Run`s from the benchmark thread, answering with the time the round
/// trips took (pauses excluded).
fn caller(
    mesh: MeshBuilder<u64, Full>,
    runs: mpsc::Receiver<Run>,
    took: mpsc::Sender<Duration>,
    spin: Duration,
) {
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .spin_before_park(spin)
        .spawn(move || async move {
            let (senders, mut receivers) = mesh.join().await.unwrap();
            let peer = 1 - senders.peer_id();
            let answers = receivers.streams().pop().unwrap().1;
            // Between runs this thread blocks on the benchmark: nothing else runs on it.
            while let Ok(run) = runs.recv() {
                let mut total = Duration::ZERO;
                for i in 0..run.round_trips {
                    if !run.pause.is_zero() {
                        std::thread::sleep(run.pause);
                    }
                    let started = Instant::now();
                    senders.send_to(peer, i).await.unwrap();
                    let answer = answers.recv().await.unwrap();
                    total += started.elapsed();
                    assert_eq!(answer, i);
                }
                took.send(total).unwrap();
            }
        })
        .unwrap();
}

/// The other shard: answers every request with the same number.
fn echo(mesh: MeshBuilder<u64, Full>, spin: Duration) {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    LocalExecutorBuilder::new(Placement::Fixed(1 % online))
        .spin_before_park(spin)
        .spawn(move || async move {
            let (senders, mut receivers) = mesh.join().await.unwrap();
            let peer = 1 - senders.peer_id();
            let requests = receivers.streams().pop().unwrap().1;
            while let Some(request) = requests.recv().await {
                if senders.send_to(peer, request).await.is_err() {
                    break;
                }
            }
        })
        .unwrap();
}

/// How long the executors spin before parking, so that `awake` finds its peer spinning.
const SPIN: Duration = Duration::from_micros(200);

fn hop(c: &mut Criterion) {
    let mesh = MeshBuilder::<u64, _>::full(2, limits::CROSS_SHARD_QUEUE_DEPTH);
    let (runs, runs_rx) = mpsc::channel();
    let (took_tx, took) = mpsc::channel();
    echo(mesh.clone(), SPIN);
    caller(mesh, runs_rx, took_tx, SPIN);
    let mut group = c.benchmark_group("cross-shard round trip");
    for (name, pause) in [
        ("awake", Duration::ZERO),
        ("parked", SPIN * 5 + Duration::from_micros(500)),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|round_trips| {
                runs.send(Run { round_trips, pause }).unwrap();
                took.recv().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hop);
criterion_main!(benches);
