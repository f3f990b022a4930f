//! Start-up of brokers with more shards than cores. glommio can miss the wake-up one executor
//! sends another that is going to sleep; before the shards woke periodically to re-check their
//! channels, such a broker hung now and then inside the cross-shard mesh join (about 1 start in
//! 10 with 6 shards and four brokers starting side by side on a 2-core machine: every shard
//! parked, none listening). Later, under heavier load, about 1 start in 1,200 (eight such brokers
//! side by side) hung with one shard's executor parked before it had run its first task: glommio
//! parked with runnable tasks when preempted before running any (fixed in third_party/glommio).

mod common;

use common::Broker;

/// More shards than this machine's cores (shards share cores round robin).
const SHARDS: usize = 6;
/// Brokers starting at the same time: the contention that made the missed wake-up likely.
const SIDE_BY_SIDE: usize = 4;
/// Starts per thread: enough that the old hang showed up in nearly every run.
const STARTS: usize = 6;

#[test]
fn brokers_with_more_shards_than_cores_start_every_time() {
    let threads: Vec<_> = (0..SIDE_BY_SIDE)
        .map(|thread| {
            std::thread::spawn(move || {
                for start in 0..STARTS {
                    // Broker::start fails unless every shard listens within its deadline.
                    let name = format!("shard-startup-{thread}-{start}");
                    let mut broker = Broker::start(&name, SHARDS, &[]);
                    assert!(
                        broker.terminate(),
                        "{name}: the broker did not stop cleanly"
                    );
                }
            })
        })
        .collect();
    // Every thread is joined before failing, so no broker outlives the test.
    let failed = threads
        .into_iter()
        .map(|thread| thread.join())
        .filter(Result::is_err)
        .count();
    assert_eq!(
        failed, 0,
        "{failed} of {SIDE_BY_SIDE} threads saw a broker not start or stop"
    );
}
