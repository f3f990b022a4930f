#!/usr/bin/env bash
# Runs Sluice's fuzz targets (fuzz/: cargo-fuzz, libFuzzer) for a while each: the request frame
# decoder, Produce record batch validation and the record walker, compaction over accepted records,
# index files and segment recovery read back from a damaged disk, the broker's own state
# files and internal-topic records, the binary metadata file's records, and the metadata quorum's
# messages and log entries. The test suite replays the same targets on stable over seeds and
# mutations (tests/fuzz_replay.rs); this explores much further and belongs outside it.
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]     # default: 300 s for each of the nine targets
#
# Needs the nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if
# missing. Each target starts from its seeds (written by the replay test) plus whatever corpus
# earlier runs left in fuzz/corpus/<target>/ (ignored by git). Built with debug assertions and
# overflow checks, without a sanitizer: the targets run safe Rust, where the failures that
# matter are panics, overflows and unbounded allocations (libFuzzer's -rss_limit_mb and
# -malloc_limit_mb catch the last).
#
# A failing input lands in fuzz/artifacts/<target>/. Fix the bug, then add the input to
# fuzz/regressions/<target>/ so that every test run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=300
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(request_frame record_batches record_walk cleaner index_files segment_recovery state_files metadata_records quorum_messages peer_answers)

command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
SLUICE_FUZZ_SEEDS="$PWD/fuzz/corpus" cargo test -q --test fuzz_replay >/dev/null
for target in "${targets[@]}"; do
    echo "fuzzing $target for $seconds s" >&2
    (cd fuzz && cargo +nightly fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1)
done
