//! Where the shards' threads run (`cpuset`): by default shard i on the i-th CPU the process may
//! run on; with a CPU list, on those CPUs; `unpinned`, wherever the kernel puts them. Several
//! brokers on one host (a test cluster) need the last two: pinned by index, every broker's shard
//! 0 would share the first CPU. Read back from the kernel: each thread's allowed CPUs.

mod common;

use common::Broker;

/// The CPUs each shard's threads may run on (`Cpus_allowed_list`), in shard order. glommio
/// names a shard's threads (its executor and its helper for blocking calls) after the executor,
/// `sluice-shard-N-ID`, which Linux cuts to 15 bytes.
fn shard_cpus(broker: &Broker, shards: usize) -> Vec<String> {
    let pid = broker.pid().expect("the broker runs");
    let mut found = std::collections::BTreeMap::<usize, Vec<String>>::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended
        };
        let Some(rest) = name.trim().strip_prefix("sluice-shard-") else {
            continue;
        };
        let shard: usize = rest.split('-').next().unwrap().parse().unwrap();
        found
            .entry(shard)
            .or_default()
            .push(allowed_cpus(&dir.join("status")));
    }
    assert_eq!(found.len(), shards, "threads of every shard: {found:?}");
    found
        .into_values()
        .map(|mut lists| {
            lists.dedup();
            assert_eq!(
                lists.len(),
                1,
                "a shard's threads run on the same CPUs: {lists:?}"
            );
            lists.pop().unwrap()
        })
        .collect()
}

fn allowed_cpus(status: &std::path::Path) -> String {
    let status = std::fs::read_to_string(status).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line");
    line.trim().to_string()
}

/// The CPUs this test process may run on, one by one.
fn this_process_cpus() -> Vec<String> {
    let list = allowed_cpus(std::path::Path::new("/proc/self/status"));
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
        cpus.extend((first..=last).map(|cpu| cpu.to_string()));
    }
    cpus
}

#[test]
fn shards_run_on_the_cpus_the_cpuset_names() {
    let allowed = this_process_cpus();
    let shards = 3;

    let broker = Broker::start("cpuset-default", shards, &[]);
    let expected: Vec<String> = (0..shards)
        .map(|shard| allowed[shard % allowed.len()].clone())
        .collect();
    assert_eq!(
        shard_cpus(&broker, shards),
        expected,
        "by default, the process's CPUs in order"
    );
    drop(broker);

    let last = allowed.last().unwrap().clone();
    let broker = Broker::start("cpuset-one", shards, &[&format!("cpuset={last}")]);
    assert_eq!(
        shard_cpus(&broker, shards),
        vec![last; shards],
        "every shard on the one CPU named"
    );
    drop(broker);

    let broker = Broker::start("cpuset-unpinned", shards, &["cpuset=unpinned"]);
    let whole = allowed_cpus(std::path::Path::new("/proc/self/status"));
    assert_eq!(
        shard_cpus(&broker, shards),
        vec![whole; shards],
        "unpinned: any CPU the process may use"
    );
}
