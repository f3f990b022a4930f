#!/usr/bin/env bash
# Soak crossing retention, Sluice and Apache Kafka 4.4 (single node, KRaft, loopback) one after
# the other: a topic whose segments roll every few seconds and are deleted by retention after
# --retention-ms, written and read at a fixed rate (`sluice bench e2e`, open loop, acks=all,
# linger.ms=0) for --duration seconds, measured in consecutive runs of --interval seconds.
# After each interval the topic's segments and bytes on disk are counted, so one can see whether
# latency degrades once retention starts deleting (it does for some brokers) and whether the
# disk use levels off. Prints one table: per interval, p50/p99/p99.9 end-to-end latency, the
# segment count and the log bytes of each broker.
#
#   scripts/soak.sh [--brokers sluice,kafka] [--duration SECS] [--interval SECS] [--rate N]
#                   [--size BYTES] [--partitions N] [--retention-ms MS] [--segment-bytes BYTES]
#                   [--segment-ms MS] [--check-ms MS] [--warmup SECS] [--heap SIZE]
#
# Defaults: both brokers, 600 s in 60 s intervals, 5,000 records/s of 1 KiB (5 MB/s) to one
# partition, retention.ms=60000, segment.bytes=16777216 (16 MiB, a roll every ~3 s at 5 MB/s;
# Kafka's minimum is 1 MiB), segment.ms=10000, log.retention.check.interval.ms=10000 on both
# brokers (--check-ms; the default of both is 300000), a 15 s warm-up run on another topic first
# (a fresh JVM needs it), Kafka with a 1G heap. Both get file.delete.delay.ms=1000 on the topic
# (Kafka keeps a deleted segment as *.deleted for 60 s by default).
#
# Each interval is its own `sluice bench e2e` run (new clients, consumers starting at the end of
# the log), so there is a gap of well under a second without load between intervals.
#
# Environment: SLUICE_CORES (Sluice's shards, default all cores), GENERATOR_CPUS (pin the load
# generator), SLUICE_BIN (use this sluice binary instead of building one). Needs Java 17+,
# python3 and Maven (Kafka comes from Maven Central into scripts/kafka/target).
set -euo pipefail
cd "$(dirname "$0")/.."

brokers=sluice,kafka
duration=600
interval=60
rate=5000
size=1024
partitions=1
retention_ms=60000
segment_bytes=16777216
segment_ms=10000
check_ms=10000
warmup=15
heap=1G
while [ $# -gt 0 ]; do
    case $1 in
        --brokers) brokers=$2 ;;
        --duration) duration=$2 ;;
        --interval) interval=$2 ;;
        --rate) rate=$2 ;;
        --size) size=$2 ;;
        --partitions) partitions=$2 ;;
        --retention-ms) retention_ms=$2 ;;
        --segment-bytes) segment_bytes=$2 ;;
        --segment-ms) segment_ms=$2 ;;
        --check-ms) check_ms=$2 ;;
        --warmup) warmup=$2 ;;
        --heap) heap=$2 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift 2
done
cores=${SLUICE_CORES:-$(nproc)}
intervals=$(((duration + interval - 1) / interval))

source scripts/lib/bench.sh
source scripts/kafka/kafka.sh
[[ ,$brokers, == *,kafka,* ]] && fetch_kafka
results=$(mktemp -d)
sluice_pid="" sluice_dir=""
cleanup() {
    if [ -n "$sluice_pid" ]; then kill "$sluice_pid" 2>/dev/null || true; wait "$sluice_pid" 2>/dev/null || true; fi
    [ -n "$sluice_dir" ] && rm -rf "$sluice_dir"
    stop_kafka
    rm -rf "$results"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Fields of a JSON object on stdin, tab-separated.
fields() { python3 -c 'import json,sys; o=json.load(sys.stdin); print("\t".join(str(o[k]) for k in sys.argv[1:]))' "$@"; }

# Segment count, log bytes (the *.log files: what retention deletes) and disk use in KiB (indexes
# and segments waiting for deletion included) of the partitions of topic "soak" under $1.
disk_use() {
    local dir=$1
    python3 - "$dir" <<'PY'
import glob, os, sys
parts = glob.glob(os.path.join(sys.argv[1], "soak-*"))
logs = [f for p in parts for f in glob.glob(os.path.join(p, "*.log"))]
sizes = [os.path.getsize(f) for f in logs if os.path.exists(f)]
disk = sum(os.stat(os.path.join(p, f)).st_blocks * 512 for p in parts for f in os.listdir(p)
           if os.path.exists(os.path.join(p, f)))
print(f"{len(sizes)}\t{sum(sizes)}\t{disk // 1024}")
PY
}

# The soak against the broker at $1 whose data dir is $2, recorded under the name $3: one line
# per interval in $results/$3 (interval, seconds since the start, p50, p99, p99.9, msgs/s,
# errors, segments, log bytes, disk KiB).
soak() {
    local bootstrap=$1 dir=$2 name=$3 start json i
    "$sluice" topic create soak --partitions "$partitions" --bootstrap "$bootstrap" \
        --config "retention.ms=$retention_ms" --config "segment.bytes=$segment_bytes" \
        --config "segment.ms=$segment_ms" --config file.delete.delay.ms=1000 >/dev/null
    if [ "$warmup" -gt 0 ]; then
        bench e2e --bootstrap "$bootstrap" --topic warmup --partitions "$partitions" --rate "$rate" \
            --size "$size" --acks all --linger-ms 0 --duration "$warmup" >/dev/null
    fi
    start=$(date +%s)
    for ((i = 1; i <= intervals; i++)); do
        # A failed record makes the bench exit 1; its JSON still counts them under errors.
        json=$(bench e2e --bootstrap "$bootstrap" --topic soak --partitions "$partitions" \
            --rate "$rate" --size "$size" --acks all --linger-ms 0 --duration "$interval") || true
        printf '%s\t%s\t%s\t%s\n' "$i" "$(($(date +%s) - start))" \
            "$(fields p50_ms p99_ms p999_ms msgs_per_sec errors <<<"$json")" "$(disk_use "$dir")" \
            | tee -a "$results/$name" | sed "s/^/$name interval /" >&2
    done
}

if [[ ,$brokers, == *,sluice,* ]]; then
    echo "Sluice ($cores shards): $intervals intervals of $interval s" >&2
    sluice_dir=$(mktemp -d); port=$(free_port)
    "$sluice" serve --listen "127.0.0.1:$port" --data-dir "$sluice_dir" --cores "$cores" \
        --set sluice.admin.listen=127.0.0.1:0 --set "log.retention.check.interval.ms=$check_ms" \
        2>/dev/null &
    sluice_pid=$!
    wait_port "$port"
    sleep 0.2
    soak "127.0.0.1:$port" "$sluice_dir" sluice
    kill "$sluice_pid"; wait "$sluice_pid" 2>/dev/null || true
    rm -rf "$sluice_dir"
    sluice_pid="" sluice_dir=""
fi
if [[ ,$brokers, == *,kafka,* ]]; then
    echo "Apache Kafka (-Xmx$heap): $intervals intervals of $interval s" >&2
    start_kafka "$heap" "log.retention.check.interval.ms=$check_ms"
    soak "127.0.0.1:$kafka_port" "$kafka_dir/data" kafka
    stop_kafka
fi

python3 - "$results" "$rate" "$size" "$partitions" "$retention_ms" "$segment_bytes" "$segment_ms" \
    "$check_ms" "$interval" "$cores" "$heap" <<'PY'
import os, sys
results, rate, size, partitions, retention, seg_bytes, seg_ms, check, interval, cores, heap = sys.argv[1:]

def rows(name):
    path = os.path.join(results, name)
    return [line.split("\t") for line in open(path).read().splitlines()] if os.path.exists(path) else []

sluice, kafka = rows("sluice"), rows("kafka")

def cells(r):
    if r is None:
        return ["-"] * 3
    _, _, p50, p99, p999, _, errors, segments, log_bytes, _ = r
    latency = f"{float(p50):.2f} / {float(p99):.2f} / {float(p999):.2f}"
    if int(errors):
        latency += f" ({errors} errors)"
    return [latency, segments, f"{int(log_bytes) / 1e6:,.0f}"]

print(f"\nSoak: {int(rate):,} records/s of {size} B, {partitions} partition(s), acks=all, linger.ms=0; "
      f"retention.ms={retention}, segment.bytes={seg_bytes}, segment.ms={seg_ms}, "
      f"log.retention.check.interval.ms={check}; Sluice {cores} shards, Kafka 4.4.0 -Xmx{heap}")
print("End-to-end latency p50 / p99 / p99.9 in ms per interval; segments and log MB (10^6 bytes) "
      "of the topic at its end")
print("| interval | end s | Sluice p50 / p99 / p99.9 | segments | MB | Kafka p50 / p99 / p99.9 | segments | MB |")
print("|---|---|---|---|---|---|---|---|")
for i in range(max(len(sluice), len(kafka))):
    s = sluice[i] if i < len(sluice) else None
    k = kafka[i] if i < len(kafka) else None
    end = "/".join(dict.fromkeys(r[1] for r in (s, k) if r))
    print(f"| {i + 1} | {end} | " + " | ".join(cells(s) + cells(k)) + " |")
PY
