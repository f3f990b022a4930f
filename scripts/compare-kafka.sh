#!/usr/bin/env bash
# Sluice vs Apache Kafka 4.1 (single node, KRaft, loopback), side by side: the same load generator
# (`sluice bench`, librdkafka) against each broker in turn, fresh data dirs every round, a warm-up
# before the measured runs, several rounds; prints medians, min-max and ratios.
#
#   scripts/compare-kafka.sh [--workloads P1,P2,P3,P4] [--rounds N] [--records N]
#                            [--p3-duration SECS] [--backlog-mb MB]
#
# Workloads (1 KiB records, acks=all; Sluice fsyncs before every acknowledgement):
#   P1  produce to 16 partitions as fast as possible, --records records (default 200000);
#       Kafka with its defaults (no fsync: page cache only). Target: Sluice >= 1.5x msgs/s.
#   P2  the same against Kafka with log.flush.interval.messages=1 (durability parity); Sluice's
#       figure is P1's run. Target: >= 5x.
#   P3  end-to-end latency at 5,000 records/s, 1 partition, for --p3-duration seconds (default
#       60), linger.ms=0, after a 15 s warm-up run of the same workload (a fresh JVM needs about
#       10 s of it: Kafka's first e2e seconds run at p50 300 ms, then 0.3 ms) and 2 s of warm-up
#       inside the measured run. Target: p99 <= 0.5x Kafka's, p99.99 <= 0.2x.
#   P4  catch-up consume of a --backlog-mb MB backlog (default 1000) in 16 partitions, written
#       just before (so in the page cache, for both brokers). Target: >= 1.2x Kafka's MB/s and
#       >= 0.7x what one loopback TCP connection carries (`sluice bench loopback`, same bytes).
#
# Environment: SLUICE_CORES (Sluice's shards, default all cores), GENERATOR_CPUS (pin the load
# generator, e.g. 4-7: keep it off the shards' cores 0..N-1 when the machine has spare cores).
# Needs Java 17+, python3 and Maven (Kafka comes from Maven Central into scripts/kafka/target).
set -euo pipefail
cd "$(dirname "$0")/.."

workloads=P1,P2,P3,P4
rounds=3
records=200000
p3_duration=60
p3_warmup=15
backlog_mb=1000
while [ $# -gt 0 ]; do
    case $1 in
        --workloads) workloads=$2 ;;
        --rounds) rounds=$2 ;;
        --records) records=$2 ;;
        --p3-duration) p3_duration=$2 ;;
        --backlog-mb) backlog_mb=$2 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift 2
done
selected() { [[ ",$workloads," == *",$1,"* ]]; }
cores=${SLUICE_CORES:-$(nproc)}
backlog_records=$((backlog_mb * 1000000 / 1024))

cargo build -q --release
sluice=target/release/sluice
generator=()
[ -n "${GENERATOR_CPUS:-}" ] && generator=(--cpus "$GENERATOR_CPUS")
source scripts/kafka/kafka.sh
fetch_kafka
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
bench() { "$sluice" bench "$@" "${generator[@]}" --json; } # prints one JSON object
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
add() { echo "$3" >> "$results/$1.$2"; } # broker, metric, value

# Runs the selected workloads against the broker at $1, recording under the name $2; $3 lists
# the workloads this broker takes part in.
run_workloads() {
    local bootstrap=$1 name=$2 mine=$3 json
    bench produce --bootstrap "$bootstrap" --records 20000 --size 1024 --partitions 16 >/dev/null
    if [[ $mine == *P1* ]]; then
        json=$(bench produce --bootstrap "$bootstrap" --records "$records" --size 1024 --partitions 16 --acks all)
        add "$name" P1 "$(field msgs_per_sec <<<"$json")"
    fi
    if [[ $mine == *P3* ]]; then
        bench e2e --bootstrap "$bootstrap" --rate 5000 --size 1024 --partitions 1 --acks all \
            --duration "$p3_warmup" --linger-ms 0 >/dev/null
        json=$(bench e2e --bootstrap "$bootstrap" --rate 5000 --size 1024 --partitions 1 --acks all \
            --duration "$p3_duration" --warmup 2 --linger-ms 0)
        add "$name" P3_p99 "$(field p99_ms <<<"$json")"
        add "$name" P3_p9999 "$(field p9999_ms <<<"$json")"
    fi
    if [[ $mine == *P4* ]]; then
        json=$(bench consume --bootstrap "$bootstrap" --records "$backlog_records" --size 1024 --partitions 16)
        add "$name" P4 "$(field mb_per_sec <<<"$json")"
    fi
}

run_kafka() { # $1: name, $2: workloads, $3: extra server.properties line
    start_kafka 1G ${3:+"$3"}
    run_workloads "127.0.0.1:$kafka_port" "$1" "$2"
    stop_kafka
}

run_sluice() { # $1: workloads
    local dir port pid
    dir=$(mktemp -d); port=$(free_port)
    "$sluice" serve --listen "127.0.0.1:$port" --data-dir "$dir" --cores "$cores" \
        --set sluice.admin.listen=127.0.0.1:0 2>/dev/null &
    pid=$!
    wait_port "$port"
    sleep 0.2
    run_workloads "127.0.0.1:$port" sluice "$1"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

# Which workloads each broker setting runs: Sluice's P1 run serves P2 too.
on_sluice="" on_kafka=""
for w in P1 P3 P4; do selected "$w" && on_kafka+="$w "; done
selected P1 || selected P2 && on_sluice+="P1 "
selected P3 && on_sluice+="P3 "
selected P4 && on_sluice+="P4 "

for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    run_sluice "$on_sluice"
    [ -n "$on_kafka" ] && run_kafka kafka "$on_kafka" ''
    selected P2 && run_kafka kafka_flush P1 'log.flush.interval.messages=1'
    if selected P4; then
        add loopback P4 "$(bench loopback --records "$backlog_records" --size 1024 | field mb_per_sec)"
    fi
done

# The table: medians (min-max) of each metric's rounds, and the ratio of the medians.
python3 - "$results" "$workloads" "$rounds" "$records" "$p3_duration" "$backlog_mb" "$cores" <<'PY'
import os, statistics, sys
results, workloads, rounds, records, p3, backlog, cores = sys.argv[1:]
workloads = workloads.split(",")

def values(name):
    path = os.path.join(results, name)
    return [float(v) for v in open(path).read().split()] if os.path.exists(path) else []

def cell(vs, digits):
    if not vs:
        return "-"
    f = lambda v: f"{v:,.{digits}f}"
    return f"{f(statistics.median(vs))} ({f(min(vs))}-{f(max(vs))})"

def ratio(a, b):
    return f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"

rows = []
def row(workload, metric, sluice, other, other_label, digits, target):
    s, o = values(sluice), values(other)
    rows.append(f"| {workload} | {metric} | {cell(s, digits)} | {other_label}{cell(o, digits)} | {ratio(s, o)} | {target} |")

if "P1" in workloads:
    row("P1 produce 1 KiB, 16 partitions, acks=all; Kafka defaults (no fsync)", "msgs/s", "sluice.P1", "kafka.P1", "", 0, ">= 1.5x")
if "P2" in workloads:
    row("P2 produce 1 KiB, 16 partitions, acks=all; Kafka log.flush.interval.messages=1", "msgs/s", "sluice.P1", "kafka_flush.P1", "", 0, ">= 5x")
if "P3" in workloads:
    row(f"P3 end to end, 5,000/s of 1 KiB, 1 partition, acks=all, {p3} s", "p99 ms", "sluice.P3_p99", "kafka.P3_p99", "", 2, "<= 0.5x")
    row(f"P3 (same runs)", "p99.99 ms", "sluice.P3_p9999", "kafka.P3_p9999", "", 2, "<= 0.2x")
if "P4" in workloads:
    row(f"P4 catch-up consume of {backlog} MB, 16 partitions", "MB/s", "sluice.P4", "kafka.P4", "", 0, ">= 1.2x")
    row(f"P4 vs one loopback TCP connection", "MB/s", "sluice.P4", "loopback.P4", "loopback ", 0, ">= 0.7x")

print(f"\nSluice ({cores} shards) vs Apache Kafka 4.1.1, `sluice bench` (librdkafka); median (min-max) over {rounds} rounds")
print("| workload | metric | Sluice | Apache Kafka 4.1.1 | Sluice / Kafka | target |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
PY
