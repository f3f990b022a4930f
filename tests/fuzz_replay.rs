//! The fuzz targets (fuzz/src/lib.rs) on stable, in every test run: each target over its seeds,
//! over every input a fuzzer once broke it with (fuzz/regressions/<target>/), and over
//! deterministic mutations of the seeds (bit flips, boundary values where lengths and counts
//! live, cuts, insertions, splices). libFuzzer explores much further (`scripts/fuzz.sh`); this
//! keeps every target building, its fixed bugs fixed, and both its paths (accept, refuse)
//! exercised. With `SLUICE_FUZZ_SEEDS=DIR` it also writes each target's seeds to DIR/<target>/,
//! the starting corpus `scripts/fuzz.sh` hands libFuzzer.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

use targets::mutations::{mutate, Rng};

/// Mutants per seed: enough to reach every length and count field of the seeds a few times.
const MUTANTS_PER_SEED: usize = 400;
/// Segment recovery builds and reopens a whole partition per input: fewer of those.
const RECOVERY_MUTANTS_PER_SEED: usize = 150;

/// Every file under fuzz/regressions/<target>/: inputs that once failed.
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.expect("a readable entry").path()).expect("a readable input"))
        .collect()
}

fn write_seeds(dir: &Path, seeds: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).expect("a seed directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).expect("a seed written");
    }
}

/// `target(input)`; a failure first prints the input, to keep under fuzz/regressions/<name>/.
fn run(name: &str, target: fn(&[u8]) -> bool, input: &[u8]) -> bool {
    let result = std::panic::catch_unwind(|| target(input));
    result.unwrap_or_else(|panic| {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("{name} failed on input {hex}");
        std::panic::resume_unwind(panic)
    })
}

/// Runs `target` over its regressions, its seeds (all of which it must accept) and `mutants`
/// mutants of each, some of which it must accept and some refuse.
fn replay(name: &str, target: fn(&[u8]) -> bool, seeds: Vec<Vec<u8>>, mutants: usize) {
    for input in regressions(name) {
        run(name, target, &input);
    }
    for (i, seed) in seeds.iter().enumerate() {
        assert!(
            run(name, target, seed),
            "{name}: seed {i} is valid and must be accepted"
        );
    }
    if let Some(dir) = std::env::var_os("SLUICE_FUZZ_SEEDS") {
        write_seeds(&Path::new(&dir).join(name), &seeds);
    }
    let (mut accepted, mut refused) = (0, 0);
    let mut rng = Rng(0x5eed_0000 + name.len() as u64);
    for seed in &seeds {
        for _ in 0..mutants {
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(seed, other, &mut rng);
            if run(name, target, &input) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{name}: mutants should land on both sides ({accepted} accepted, {refused} refused)"
    );
}

#[test]
fn request_frames() {
    let seeds: Vec<Vec<u8>> = targets::seeds::request_frames()
        .into_iter()
        .filter(|frame| targets::request_frame(frame))
        .collect();
    assert!(
        seeds.len() >= 150,
        "a default request of every supported API and version parses ({} did)",
        seeds.len()
    );
    replay(
        "request_frame",
        targets::request_frame,
        seeds,
        MUTANTS_PER_SEED,
    );
}

#[test]
fn record_batches() {
    replay(
        "record_batches",
        targets::record_batches,
        targets::seeds::record_batches(),
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn record_walk() {
    replay(
        "record_walk",
        targets::record_walk,
        targets::seeds::record_walk(),
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn cleaner() {
    replay(
        "cleaner",
        targets::cleaner,
        targets::seeds::cleaner(),
        RECOVERY_MUTANTS_PER_SEED,
    );
}

#[test]
fn index_files() {
    replay(
        "index_files",
        targets::index_files,
        targets::seeds::index_files(),
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn segment_recovery() {
    replay(
        "segment_recovery",
        targets::segment_recovery,
        targets::seeds::segment_recovery(),
        RECOVERY_MUTANTS_PER_SEED,
    );
}

#[test]
fn state_files() {
    replay(
        "state_files",
        targets::state_files,
        targets::seeds::state_files(),
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn metadata_records() {
    replay(
        "metadata_records",
        targets::metadata_records,
        targets::seeds::metadata_records(),
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn quorum_messages() {
    let seeds = targets::seeds::quorum_messages();
    assert!(
        seeds.iter().all(|seed| targets::quorum_messages(seed)),
        "every seed is a valid quorum message"
    );
    replay(
        "quorum_messages",
        targets::quorum_messages,
        seeds,
        MUTANTS_PER_SEED * 10,
    );
}

#[test]
fn peer_answers() {
    replay(
        "peer_answers",
        targets::peer_answers,
        targets::seeds::peer_answers(),
        MUTANTS_PER_SEED * 10,
    );
}
