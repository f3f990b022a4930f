#!/usr/bin/env bash
# The README's Performance table, in one command: every workload of the performance issue with
# the parameters the published figures used, one after the other (never in parallel: they would
# measure each other). About 25 minutes on a 2-core machine; run it on a quiet one.
#
#   scripts/performance.sh [OUT_DIR]        (default target/performance)
#
#   P1, P2, P4, P7  scripts/compare-kafka.sh, 3 rounds each
#   P3              scripts/compare-kafka.sh, 2 rounds of 60 s
#   P5              scripts/compare-kafka.sh, 1 round (10,000 partitions: Kafka takes minutes)
#   P6              scripts/p6-restart.sh (10,000 partitions x 10 segments, restart after kill -9)
#   zero-copy       scripts/zero-copy.sh, 5 rounds of a 1000 MB backlog
#
# Each step's table goes to OUT_DIR/<step>.md as well as to the terminal. The soak that crosses
# retention (scripts/soak.sh) is longer and runs on its own.
#
# Environment: as for the scripts it runs (SLUICE_CORES, GENERATOR_CPUS, CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/performance}
mkdir -p "$out"
cargo build -q --release --features bench
export SLUICE_BIN=${SLUICE_BIN:-$(realpath "${CARGO_TARGET_DIR:-target}/release/sluice")}

step() { # NAME COMMAND...
    local name=$1
    shift
    echo "== $name: $*" >&2
    "$@" | tee "$out/$name.md"
}

step throughput scripts/compare-kafka.sh --workloads P1,P2,P4,P7 --rounds 3
step latency scripts/compare-kafka.sh --workloads P3 --rounds 2 --p3-duration 60
step memory scripts/compare-kafka.sh --workloads P5 --rounds 1
SLUICE=$SLUICE_BIN step restart scripts/p6-restart.sh
step zero-copy scripts/zero-copy.sh --rounds 5 --backlog-mb 1000
