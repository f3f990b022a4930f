#!/usr/bin/env bash
# Zero-copy fetch against the copying path, on the same backlog: one Sluice data dir, filled
# once, then catch-up consumes with `sluice.fetch.zero.copy=true` and `=false` alternately (the
# broker restarted between them, the backlog in the page cache for both), several rounds;
# prints the median (min-max) MB/s of each and their ratio, and the broker's CPU seconds per
# GB sent (from /proc/PID/stat), since the load generator may be what limits MB/s.
#
#   scripts/zero-copy.sh [--rounds N] [--backlog-mb MB] [--partitions N] [--cores N]
#
# Environment: GENERATOR_CPUS pins the load generator (e.g. 1, or 4-7 on a larger machine);
# SLUICE_BIN uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
backlog_mb=1000
partitions=16
cores=1
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2 ;;
        --backlog-mb) backlog_mb=$2 ;;
        --partitions) partitions=$2 ;;
        --cores) cores=$2 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift 2
done
records=$((backlog_mb * 1000000 / 1024))

source scripts/lib/bench.sh
dir=$(mktemp -d)
results=$(mktemp -d)
pid=""
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop; rm -rf "$dir" "$results"' EXIT

port=$(free_port)
start() { # $1: true or false
    "$sluice" serve --listen "127.0.0.1:$port" --data-dir "$dir" --cores "$cores" \
        --set sluice.admin.listen=none --set "sluice.fetch.zero.copy=$1" 2>/dev/null &
    pid=$!
    wait_port "$port" || { echo "sluice did not start" >&2; exit 1; }
}
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$pid/stat"; }
consume() { bench consume --bootstrap "127.0.0.1:$port" --topic backlog \
    --partitions "$partitions" --records "$records" --size 1024; }

start true
consume >/dev/null # fills the empty topic with the backlog, then reads it once (warm-up)
stop
for ((r = 1; r <= rounds; r++)); do
    for zero_copy in true false; do
        start "$zero_copy"
        before=$(cpu_seconds)
        mb_per_sec=$(consume | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_sec"])')
        after=$(cpu_seconds)
        echo "$mb_per_sec" >> "$results/$zero_copy.mbps"
        python3 -c "print(($after - $before) / ($records * 1024 / 1e9))" >> "$results/$zero_copy.cpu"
        echo "round $r/$rounds zero_copy=$zero_copy: $mb_per_sec MB/s" >&2
        stop
    done
done

python3 - "$results" "$rounds" "$backlog_mb" "$partitions" "$cores" <<'PY'
import statistics, sys
results, rounds, backlog, partitions, cores = sys.argv[1:]
def values(name):
    return [float(v) for v in open(f"{results}/{name}").read().split()]
def cell(v, fmt):
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"
print(f"Catch-up consume of {backlog} MB in {partitions} partitions, Sluice {cores} shard(s), {rounds} rounds, median (min-max):\n")
print("| fetch path | MB/s | broker CPU s per GB sent |")
print("|---|---|---|")
for zero_copy, name in (("true", "sendfile (sluice.fetch.zero.copy=true)"), ("false", "read and copy (=false)")):
    print(f"| {name} | {cell(values(zero_copy + '.mbps'), '{:,.0f}')} | {cell(values(zero_copy + '.cpu'), '{:.2f}')} |")
ratio = statistics.median(values("true.mbps")) / statistics.median(values("false.mbps"))
cpu = statistics.median(values("false.cpu")) / statistics.median(values("true.cpu"))
print(f"\nzero-copy / copy: {ratio:.2f}x the MB/s, {cpu:.2f}x less broker CPU per byte")
PY
