//! Which CPUs the shards run on (`cpuset`). By default each shard is pinned to one of the CPUs
//! the process may run on, in order (so `taskset -c 2,3 sluice serve` pins its shards to 2 and
//! 3); a CPU list pins them to those CPUs instead, shard i to the i-th CPU (wrapping when there are
//! more shards than CPUs); `unpinned` leaves them to the kernel's scheduler. Several brokers on
//! one host, as in a test cluster or containers sharing cores, need one of the last two: pinned
//! by index, every broker's shard 0 would share CPU 0. Read once at start, on the main thread.

use anyhow::{bail, Context, Result};
use nix::sched::{sched_getaffinity, CpuSet};
use nix::unistd::Pid;

/// Where the shards' threads run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPlacement {
    /// Shard i on `cpus[i % cpus.len()]`; never empty.
    Pinned(Vec<usize>),
    /// No pinning: the kernel moves the threads as it likes.
    Unpinned,
}

impl CpuPlacement {
    /// The placement `cpuset` asks for (`None`: the default), checked against the CPUs this
    /// process may run on.
    pub fn from_setting(value: Option<&str>) -> Result<CpuPlacement> {
        let allowed = allowed_cpus()?;
        let Some(value) = value.map(str::trim) else {
            return Ok(CpuPlacement::Pinned(allowed));
        };
        if value == "unpinned" {
            return Ok(CpuPlacement::Unpinned);
        }
        let cpus = parse_cpu_list(value)?;
        if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
            bail!(
                "cpuset: CPU {cpu} is not one this process may run on ({})",
                format_cpu_list(&allowed)
            );
        }
        Ok(CpuPlacement::Pinned(cpus))
    }

    /// The CPU shard `shard` is pinned to, if any.
    pub fn cpu_of(&self, shard: usize) -> Option<usize> {
        match self {
            CpuPlacement::Pinned(cpus) => Some(cpus[shard % cpus.len()]),
            CpuPlacement::Unpinned => None,
        }
    }

    /// How many shards to run when `cores` is not set: one per CPU the placement names (the
    /// CPUs the process may use when unpinned).
    pub fn default_shards(&self) -> Result<usize> {
        Ok(match self {
            CpuPlacement::Pinned(cpus) => cpus.len(),
            CpuPlacement::Unpinned => allowed_cpus()?.len(),
        })
    }
}

/// The CPUs the process may run on (its affinity mask, which `taskset` and cgroups' cpusets set).
fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("reading the process's CPU affinity")?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect();
    if cpus.is_empty() {
        bail!("the process's CPU affinity names no CPU");
    }
    Ok(cpus)
}

/// A Linux CPU list, as `taskset -c` and `/sys/devices/system/cpu/online` write it: `0-3,8,10-11`.
/// Each CPU once, in the order given.
pub fn parse_cpu_list(value: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in value.split(',').map(str::trim) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (parse_cpu(first)?, parse_cpu(last)?),
            None => (parse_cpu(part)?, parse_cpu(part)?),
        };
        if first > last {
            bail!("cpuset: {part:?} is not a range from low to high");
        }
        for cpu in first..=last {
            if cpus.contains(&cpu) {
                bail!("cpuset: CPU {cpu} is named twice");
            }
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

fn parse_cpu(text: &str) -> Result<usize> {
    let cpu: usize = text.trim().parse().with_context(|| {
        format!("cpuset: {text:?} is not a CPU number (expected a list such as 0-3,8, or unpinned)")
    })?;
    if cpu >= CpuSet::count() {
        bail!(
            "cpuset: CPU {cpu} is beyond the {} CPUs Linux can name",
            CpuSet::count()
        );
    }
    Ok(cpu)
}

/// `cpus` as a CPU list (ranges of consecutive CPUs joined).
fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_taskset_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("1").unwrap(), [1]);
        assert_eq!(parse_cpu_list(" 2, 0 ").unwrap(), [2, 0]);
        for bad in ["", "a", "3-1", "0,0", "0-2,1", "-1", "1-", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    }

    #[test]
    fn shards_wrap_around_the_cpus_named() {
        let placement = CpuPlacement::Pinned(vec![4, 6]);
        let cpus: Vec<_> = (0..5).map(|shard| placement.cpu_of(shard)).collect();
        assert_eq!(cpus, [Some(4), Some(6), Some(4), Some(6), Some(4)]);
        assert_eq!(CpuPlacement::Unpinned.cpu_of(0), None);
    }

    #[test]
    fn the_default_is_the_process_affinity_and_other_cpus_are_refused() {
        let allowed = allowed_cpus().unwrap();
        assert_eq!(
            CpuPlacement::from_setting(None).unwrap(),
            CpuPlacement::Pinned(allowed.clone())
        );
        assert_eq!(
            CpuPlacement::from_setting(Some("unpinned")).unwrap(),
            CpuPlacement::Unpinned
        );
        let outside = (0..CpuSet::count()).find(|c| !allowed.contains(c)).unwrap();
        let err = CpuPlacement::from_setting(Some(&outside.to_string())).unwrap_err();
        assert!(
            err.to_string().contains("not one this process may run on"),
            "{err}"
        );
    }
}
