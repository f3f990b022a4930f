#!/usr/bin/env bash
# Sluice vs Apache Kafka 4.4 (single node, KRaft, loopback), side by side: the same load generator
# (`sluice bench`, librdkafka) against each broker in turn, fresh data dirs every round, a warm-up
# before the measured runs, several rounds; prints medians, min-max and ratios.
#
#   scripts/compare-kafka.sh [--workloads P1,P2,P3,P4,P5,P7] [--rounds N] [--records N]
#                            [--p3-duration SECS] [--backlog-mb MB] [--p4-consumers N]
#                            [--p5-partitions N]
#                            [--p5-duration SECS] [--p5-heap SIZE] [--p7-duration SECS]
#                            [--p7-rate N]
#
# Workloads (1 KiB records, acks=all; Sluice fsyncs before every acknowledgement):
#   P1  produce to 16 partitions as fast as possible, --records records (default 1000000);
#       Kafka with its defaults (no fsync: page cache only). Target: Sluice >= 1.5x msgs/s.
#       Also reported: each broker's CPU seconds per GB produced, and how busy the machine's
#       cores were during the run (where the generator shares them, 100% means the two
#       together, not the broker, set the rate), and what the disk under the data dirs wrote
#       and how busy it was meanwhile, beside the disk's own rates once a round (`dd`: one
#       stream of 1 MiB direct writes, and 16 writers appending 1 MiB with O_DSYNC, P1's
#       pattern): Sluice acknowledges only records on disk, so the disk bounds its P1. Like
#       "machine busy", the disk rows count the generator's whole command. Sluice's group
#       commit is reported from its /metrics: fdatasyncs per second (over the same command) and
#       KB per fdatasync.
#   P2  the same against Kafka with log.flush.interval.messages=1 (durability parity); Sluice's
#       figure is P1's run. Target: >= 5x.
#   P3  end-to-end latency at 5,000 records/s, 1 partition, for --p3-duration seconds (default
#       60), linger.ms=0, after a 15 s warm-up run of the same workload (a fresh JVM needs about
#       10 s of it: Kafka's first e2e seconds run at p50 300 ms, then 0.3 ms) and 2 s of warm-up
#       inside the measured run. Target: p99 <= 0.5x Kafka's, p99.99 <= 0.2x. Also reported:
#       the broker's CPU in cores during the measured run.
#   P4  catch-up consume of a --backlog-mb MB backlog (default 10000) in 16 partitions by
#       --p4-consumers consumers (default 1), written and read once just before (so in the page
#       cache, for both brokers). Target: >= 1.2x Kafka's MB/s and >= 0.7x what one loopback TCP
#       connection carries (`sluice bench loopback`, same bytes). Also reported: the broker's
#       CPU seconds per GB read, and the same backlog read by plain Fetch requests that step
#       through batches by their headers (`--reader fetch`): what each broker serves when the
#       client costs little (its MB/s counts whole batches, about 1% more than the payload).
#   P5  memory, each broker freshly started on its own: idle RSS (VmRSS of the broker process,
#       Kafka's java, after 10 s of settling), then a topic of --p5-partitions partitions
#       (default 10000; the time until every partition answers is reported) written with 100 B
#       round-robin keyed records at one record/s per partition for --p5-duration seconds
#       (default 30) and the RSS in the last second of that load. Kafka runs with
#       -Xms/-Xmx --p5-heap (default 1G). Targets: idle RSS <= 0.1x Kafka's; per partition
#       ((loaded - idle) / partitions) <= 20 KiB.
#   P7  many producers: 50 producer connections, random keys over 100 partitions, 1 KiB, acks=all,
#       for --p7-duration seconds (default 30), as fast as they go or at --p7-rate records/s in
#       all; msgs/s and p99 delivery latency.
#
# A long run crossing retention (segments rolled and deleted while latency is measured) is
# scripts/soak.sh.
#
# Environment: SLUICE_CORES (Sluice's shards, default all cores), GENERATOR_CPUS (pin the load
# generator, e.g. 4-7: keep it off the shards' cores 0..N-1 when the machine has spare cores),
# SLUICE_BIN (use this sluice binary instead of building one; the build honours CARGO_TARGET_DIR).
# Needs Java 17+, python3 and Maven (Kafka comes from Maven Central into scripts/kafka/target).
set -euo pipefail
cd "$(dirname "$0")/.."

workloads=P1,P2,P3,P4
rounds=3
records=1000000
p3_duration=60
p3_warmup=15
backlog_mb=10000
p4_consumers=1
p5_partitions=10000
p5_duration=30
p5_heap=1G
p5_settle=10
p7_duration=30
p7_rate=""
while [ $# -gt 0 ]; do
    case $1 in
        --workloads) workloads=$2 ;;
        --rounds) rounds=$2 ;;
        --records) records=$2 ;;
        --p3-duration) p3_duration=$2 ;;
        --backlog-mb) backlog_mb=$2 ;;
        --p4-consumers) p4_consumers=$2 ;;
        --p5-partitions) p5_partitions=$2 ;;
        --p5-duration) p5_duration=$2 ;;
        --p5-heap) p5_heap=$2 ;;
        --p7-duration) p7_duration=$2 ;;
        --p7-rate) p7_rate=$2 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift 2
done
selected() { [[ ",$workloads," == *",$1,"* ]]; }
cores=${SLUICE_CORES:-$(nproc)}
backlog_records=$((backlog_mb * 1000000 / 1024))

source scripts/lib/bench.sh
source scripts/kafka/kafka.sh
fetch_kafka
results=$(mktemp -d)
sluice_pid="" sluice_dir=""
# Whatever a failed or interrupted run leaves: a broker still running, its data dir.
cleanup() {
    if [ -n "$sluice_pid" ]; then kill "$sluice_pid" 2>/dev/null || true; wait "$sluice_pid" 2>/dev/null || true; fi
    [ -n "$sluice_dir" ] && rm -rf "$sluice_dir"
    stop_kafka
    rm -rf "$results"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
add() { echo "$3" >> "$results/$1.$2"; } # broker, metric, value
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; } # resident set of a process, KiB
clock_ticks=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$clock_ticks" '{ print ($14 + $15) * 1000 / hz }' "/proc/$1/stat"; } # user+system
# The whole machine's CPU time so far, in clock ticks: "busy:total" (busy: not idle or iowait).
machine_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6 ":" t }' /proc/stat; }
# Share of all cores busy between two machine_ticks snapshots $1 and $2, in percent.
busy_percent() {
    python3 -c 'import sys; (b0, t0), (b1, t1) = (map(int, a.split(":")) for a in sys.argv[1:]); print(100 * (b1 - b0) / (t1 - t0))' "$1" "$2"
}
# The block device holding the brokers' data dirs (mktemp's), as /proc/diskstats names it
# (/dev/mapper names resolve to their dm-N); empty where there is none (tmpfs, overlay), and then
# the disk rows stay empty.
disk=$(basename "$(readlink -f "$(df --output=source "${TMPDIR:-/tmp}" | tail -1)")")
awk -v d="$disk" '$3 == d { found = 1 } END { exit !found }' /proc/diskstats || disk=""
# That device's "sectors written:milliseconds busy:now in ns" so far.
disk_ticks() { awk -v d="$disk" -v now="$(date +%s%N)" '$3 == d { print $10 ":" $13 ":" now }' /proc/diskstats; }
# MB/s written to the disk, and its % busy, between two disk_ticks snapshots $1 and $2.
disk_rate() {
    python3 -c 'import sys; (s0, b0, n0), (s1, b1, n1) = (map(int, a.split(":")) for a in sys.argv[1:]); secs = (n1 - n0) / 1e9; print((s1 - s0) * 512 / 1e6 / secs, 100 * (b1 - b0) / 1e3 / secs)' "$1" "$2"
}
# The disk's sequential write rate in MB/s: 1 GB of 1 MiB direct writes (no page cache) and an
# fdatasync, into a file beside the brokers' data dirs. What a broker that acknowledges only
# durable records can produce at most.
disk_write_mb_per_sec() {
    local probe started
    probe=$(mktemp)
    started=$(date +%s%N)
    dd if=/dev/zero of="$probe" bs=1M count=954 oflag=direct conv=fdatasync status=none
    python3 -c 'import sys; print(954 * 1048576 / 1e6 / ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$started" "$(date +%s%N)"
    rm -f "$probe"
}
# The disk's rate for P1's own pattern, in MB/s: 16 writers (one per partition) each appending
# 60 MiB in 1 MiB writes with O_DSYNC (each write durable before the next, as a group commit
# round is), into files beside the brokers' data dirs.
disk_append_sync_mb_per_sec() {
    local dir started i
    dir=$(mktemp -d)
    started=$(date +%s%N)
    for i in $(seq 16); do
        dd if=/dev/zero of="$dir/writer-$i" bs=1M count=60 oflag=dsync status=none &
    done
    wait
    python3 -c 'import sys; print(16 * 60 * 1048576 / 1e6 / ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$started" "$(date +%s%N)"
    rm -rf "$dir"
}
# Sluice's flush counters at admin port $1: "flushes:bytes flushed:now in ns", summed over its
# shards (`sluice_flush_bytes` at /metrics; each flush job is one fdatasync per file it wrote).
flush_ticks() {
    python3 - "$1" <<'PY'
import sys, time, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
count = total = 0.0
for line in text.splitlines():
    if line.startswith("sluice_flush_bytes_count{"):
        count += float(line.split()[-1])
    elif line.startswith("sluice_flush_bytes_sum{"):
        total += float(line.split()[-1])
print(f"{count:.0f}:{total:.0f}:{time.time_ns()}")
PY
}
# fdatasyncs per second and KB per fdatasync between two flush_ticks snapshots $1 and $2.
flush_rate() {
    python3 -c 'import sys; (c0, b0, n0), (c1, b1, n1) = (map(int, a.split(":")) for a in sys.argv[1:]); n = max(c1 - c0, 1); print(n / ((n1 - n0) / 1e9), (b1 - b0) / n / 1e3)' "$1" "$2"
}
# CPU seconds process $1 used per GB, from its cpu_ms before ($2) and after ($3) moving $4 bytes.
cpu_s_per_gb() {
    python3 -c 'import sys; print((float(sys.argv[3]) - float(sys.argv[2])) / 1000 / (float(sys.argv[4]) / 1e9))' "$@"
}

# Reads the P4 backlog at $1 with `--reader $5`, recording MB/s under the name $2 and metric $4,
# and the broker's (process $3) CPU seconds per GB sent under $4_cpu: what the broker itself
# costs, whichever side of the connection limits the rate.
p4_read() {
    local bootstrap=$1 name=$2 pid=$3 metric=$4 reader=$5 json cpu_before
    cpu_before=$(cpu_ms "$pid")
    json=$(bench consume --bootstrap "$bootstrap" --topic p4 --size 1024 --partitions 16 \
        --consumers "$p4_consumers" --reader "$reader")
    add "$name" "$metric" "$(field mb_per_sec <<<"$json")"
    add "$name" "${metric}_cpu" "$(cpu_s_per_gb "$pid" "$cpu_before" "$(cpu_ms "$pid")" "$(field bytes <<<"$json")")"
}

# Runs the selected workloads against the broker at $1, recording under the name $2; $3 lists
# the workloads this broker takes part in, $4 is the broker's process.
run_workloads() {
    local bootstrap=$1 name=$2 mine=$3 pid=$4 json cpu_before ticks_before started
    bench produce --bootstrap "$bootstrap" --records 20000 --size 1024 --partitions 16 >/dev/null
    if [[ $mine == *P1* ]]; then
        cpu_before=$(cpu_ms "$pid") ticks_before=$(machine_ticks) disk_before=$(disk_ticks)
        if [ "$name" = sluice ]; then flush_before=$(flush_ticks "$sluice_admin_port"); fi
        json=$(bench produce --bootstrap "$bootstrap" --records "$records" --size 1024 --partitions 16 --acks all)
        add "$name" P1 "$(field msgs_per_sec <<<"$json")"
        add "$name" P1_mbps "$(field mb_per_sec <<<"$json")"
        # Sluice's group commit: how often it fsyncs, and how much each fdatasync covers.
        if [ "$name" = sluice ]; then
            read -r fsyncs_per_sec kb_per_fsync <<<"$(flush_rate "$flush_before" "$(flush_ticks "$sluice_admin_port")")"
            add "$name" P1_fsyncs "$fsyncs_per_sec"
            add "$name" P1_fsync_kb "$kb_per_fsync"
        fi
        # How much the disk wrote meanwhile, and how busy it was: a broker that acknowledges
        # only what is on disk cannot produce faster than the disk writes.
        if [ -n "$disk" ]; then
            read -r disk_mbps disk_busy <<<"$(disk_rate "$disk_before" "$(disk_ticks)")"
            add "$name" P1_disk "$disk_mbps"
            add "$name" P1_disk_busy "$disk_busy"
        fi
        # What the broker itself costs, and whether the machine had any CPU left: where the
        # load generator and the broker share the cores, a busy machine means the rate is
        # theirs together, not the broker's.
        add "$name" P1_cpu "$(cpu_s_per_gb "$pid" "$cpu_before" "$(cpu_ms "$pid")" "$(field bytes <<<"$json")")"
        add "$name" P1_busy "$(busy_percent "$ticks_before" "$(machine_ticks)")"
    fi
    if [[ $mine == *P3* ]]; then
        bench e2e --bootstrap "$bootstrap" --rate 5000 --size 1024 --partitions 1 --acks all \
            --duration "$p3_warmup" --linger-ms 0 >/dev/null
        cpu_before=$(cpu_ms "$pid") started=$(date +%s%N)
        json=$(bench e2e --bootstrap "$bootstrap" --rate 5000 --size 1024 --partitions 1 --acks all \
            --duration "$p3_duration" --warmup 2 --linger-ms 0)
        add "$name" P3_p99 "$(field p99_ms <<<"$json")"
        add "$name" P3_p9999 "$(field p9999_ms <<<"$json")"
        # The broker's CPU at this fixed rate, in cores: its cost per record, whatever the tail.
        add "$name" P3_cores "$(python3 -c 'import sys; print((float(sys.argv[2]) - float(sys.argv[1])) / 1000 / ((int(sys.argv[4]) - int(sys.argv[3])) / 1e9))' \
            "$cpu_before" "$(cpu_ms "$pid")" "$started" "$(date +%s%N)")"
    fi
    if [[ $mine == *P4* ]]; then
        # The first run fills the topic and reads it once (not measured), warming the page cache
        # and the broker; the second reads it again and is the measurement.
        bench consume --bootstrap "$bootstrap" --topic p4 --records "$backlog_records" --size 1024 \
            --partitions 16 --consumers "$p4_consumers" >/dev/null
        p4_read "$bootstrap" "$name" "$pid" P4 librdkafka
        p4_read "$bootstrap" "$name" "$pid" P4_fetch fetch
    fi
    if [[ $mine == *P7* ]]; then
        json=$(bench produce --bootstrap "$bootstrap" --producers 50 --keys random --partitions 100 \
            --size 1024 --acks all --duration "$p7_duration" ${p7_rate:+--rate "$p7_rate"})
        add "$name" P7 "$(field msgs_per_sec <<<"$json")"
        add "$name" P7_p99 "$(field p99_ms <<<"$json")"
    fi
}

# P5 against the freshly started broker process $1 listening at $2, recorded under the name $3.
p5() {
    local pid=$1 bootstrap=$2 name=$3 idle loaded=0 start count json bench_pid
    sleep "$p5_settle"
    idle=$(rss_kib "$pid")
    # Kafka's controller refuses an operation of more than 10,000 metadata records (a topic of
    # 10,000 partitions is 10,001), so the topic grows by at most 5,000 partitions a request, the
    # same for both brokers. Kafka also answers before its partitions exist (the broker creates
    # them as it replays the metadata log): ready is when describe finds a leader and offsets
    # for every partition.
    start=$(date +%s.%N)
    count=$((p5_partitions < 5000 ? p5_partitions : 5000))
    "$sluice" topic create p5 --partitions "$count" --bootstrap "$bootstrap" >/dev/null
    while [ "$count" -lt "$p5_partitions" ]; do
        count=$((count + 5000 < p5_partitions ? count + 5000 : p5_partitions))
        "$sluice" topic add-partitions p5 --count "$count" --bootstrap "$bootstrap" >/dev/null
    done
    local deadline=$((SECONDS + 900))
    until "$sluice" topic describe p5 --bootstrap "$bootstrap" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "P5 on $name: partitions not ready in 900 s" >&2; return 1; }
        sleep 0.5
    done
    add "$name" P5_create "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")"
    # One record/s per partition; the RSS is sampled every second while the load runs and the
    # last sample kept.
    bench produce --bootstrap "$bootstrap" --topic p5 --partitions "$p5_partitions" \
        --rate "$p5_partitions" --duration "$p5_duration" --size 100 --keys round-robin \
        > "$results/p5.json" &
    bench_pid=$!
    while kill -0 "$bench_pid" 2>/dev/null; do loaded=$(rss_kib "$pid"); sleep 1; done
    wait "$bench_pid" || echo "P5 on $name: some records failed (the RSS still counts)" >&2
    json=$(cat "$results/p5.json")
    add "$name" P5_idle "$(python3 -c "import sys; print(int(sys.argv[1]) / 1024)" "$idle")"
    add "$name" P5_loaded "$(python3 -c "import sys; print(int(sys.argv[1]) / 1024)" "$loaded")"
    add "$name" P5_per_partition "$(python3 -c "import sys; print((int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]))" "$idle" "$loaded" "$p5_partitions")"
    add "$name" P5_msgs "$(field msgs_per_sec <<<"$json")"
    add "$name" P5_p99 "$(field p99_ms <<<"$json")"
}

# The previous broker's data dir was just deleted, and Kafka leaves gigabytes unsynced: flush
# whatever is still on its way to the disk, so that no broker's fsyncs queue behind another's
# writeback.
settle_disk() { sync; }

run_kafka() { # $1: name, $2: workloads, $3: extra server.properties line
    settle_disk
    start_kafka 1G ${3:+"$3"}
    run_workloads "127.0.0.1:$kafka_port" "$1" "$2" "$kafka_pid"
    stop_kafka
}

start_sluice() { # sets $sluice_dir, $sluice_port, $sluice_admin_port, $sluice_pid
    settle_disk
    sluice_dir=$(mktemp -d); sluice_port=$(free_port); sluice_admin_port=$(free_port)
    "$sluice" serve --listen "127.0.0.1:$sluice_port" --data-dir "$sluice_dir" --cores "$cores" \
        --set "sluice.admin.listen=127.0.0.1:$sluice_admin_port" 2>/dev/null &
    sluice_pid=$!
    wait_port "$sluice_port"
    wait_port "$sluice_admin_port"
    sleep 0.2
}

stop_sluice() {
    kill "$sluice_pid"; wait "$sluice_pid" 2>/dev/null || true
    rm -rf "$sluice_dir"
    sluice_pid="" sluice_dir=""
}

run_sluice() { # $1: workloads
    start_sluice
    run_workloads "127.0.0.1:$sluice_port" sluice "$1" "$sluice_pid"
    stop_sluice
}

# Which workloads each broker setting runs: Sluice's P1 run serves P2 too.
on_sluice="" on_kafka=""
for w in P1 P3 P4 P7; do selected "$w" && on_kafka+="$w "; done
selected P1 || selected P2 && on_sluice+="P1 "
selected P3 && on_sluice+="P3 "
selected P4 && on_sluice+="P4 "
selected P7 && on_sluice+="P7 "

for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    [ -n "$on_sluice" ] && run_sluice "$on_sluice"
    [ -n "$on_kafka" ] && run_kafka kafka "$on_kafka" ''
    selected P2 && run_kafka kafka_flush P1 'log.flush.interval.messages=1'
    if [ -n "$disk" ] && { selected P1 || selected P2; }; then
        settle_disk
        add disk P1_mbps "$(disk_write_mb_per_sec)"
        settle_disk
        add disk_16 P1_mbps "$(disk_append_sync_mb_per_sec)"
    fi
    if selected P4; then
        add loopback P4 "$(bench loopback --records "$backlog_records" --size 1024 | field mb_per_sec)"
    fi
    if selected P5; then # each broker on its own, freshly started
        start_sluice
        p5 "$sluice_pid" "127.0.0.1:$sluice_port" sluice
        stop_sluice
        settle_disk
        start_kafka "$p5_heap"
        p5 "$kafka_pid" "127.0.0.1:$kafka_port" kafka
        stop_kafka
    fi
done

# The table: medians (min-max) of each metric's rounds, and the ratio of the medians.
python3 - "$results" "$workloads" "$rounds" "$records" "$p3_duration" "$backlog_mb" "$cores" \
    "$p5_partitions" "$p5_duration" "$p5_heap" "$p7_duration" "$p7_rate" <<'PY'
import os, statistics, sys
results, workloads, rounds, records, p3, backlog, cores, p5n, p5d, p5heap, p7d, p7rate = sys.argv[1:]
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
def row(workload, metric, sluice, other, other_label, digits, target, compare=True):
    s, o = values(sluice), values(other)
    r = ratio(s, o) if compare else "-"
    rows.append(f"| {workload} | {metric} | {cell(s, digits)} | {other_label}{cell(o, digits)} | {r} | {target} |")

if "P1" in workloads:
    row("P1 produce 1 KiB, 16 partitions, acks=all; Kafka defaults (no fsync)", "msgs/s", "sluice.P1", "kafka.P1", "", 0, ">= 1.5x")
    row("P1 broker CPU (same runs)", "CPU s per GB", "sluice.P1_cpu", "kafka.P1_cpu", "", 2, "")
    row("P1 machine busy, all cores (same runs)", "%", "sluice.P1_busy", "kafka.P1_busy", "", 0, "")
    row("P1 disk written while producing (same runs)", "MB/s", "sluice.P1_disk", "kafka.P1_disk", "", 0, "", compare=False)
    row("P1 disk busy (same runs)", "%", "sluice.P1_disk_busy", "kafka.P1_disk_busy", "", 0, "", compare=False)
    row("P1 Sluice vs the disk's sequential write rate (dd, 1 MiB direct writes)", "MB/s", "sluice.P1_mbps", "disk.P1_mbps", "dd ", 0, "")
    row("P1 Sluice vs 16 writers appending 1 MiB with O_DSYNC (dd)", "MB/s", "sluice.P1_mbps", "disk_16.P1_mbps", "dd x16 ", 0, "")
    row("P1 Sluice's group commit: fdatasyncs (same runs)", "per s", "sluice.P1_fsyncs", "-", "", 0, "", compare=False)
    row("P1 Sluice's group commit: bytes per fdatasync (same runs)", "KB", "sluice.P1_fsync_kb", "-", "", 0, "", compare=False)
if "P2" in workloads:
    row("P2 produce 1 KiB, 16 partitions, acks=all; Kafka log.flush.interval.messages=1", "msgs/s", "sluice.P1", "kafka_flush.P1", "", 0, ">= 5x")
    row("P2 broker CPU (same runs)", "CPU s per GB", "sluice.P1_cpu", "kafka_flush.P1_cpu", "", 2, "")
    row("P2 machine busy, all cores (same runs)", "%", "sluice.P1_busy", "kafka_flush.P1_busy", "", 0, "")
    row("P2 disk written while producing (same runs)", "MB/s", "sluice.P1_disk", "kafka_flush.P1_disk", "", 0, "", compare=False)
    row("P2 disk busy (same runs)", "%", "sluice.P1_disk_busy", "kafka_flush.P1_disk_busy", "", 0, "", compare=False)
if "P3" in workloads:
    row(f"P3 end to end, 5,000/s of 1 KiB, 1 partition, acks=all, {p3} s", "p99 ms", "sluice.P3_p99", "kafka.P3_p99", "", 2, "<= 0.5x")
    row(f"P3 (same runs)", "p99.99 ms", "sluice.P3_p9999", "kafka.P3_p9999", "", 2, "<= 0.2x")
    row(f"P3 broker CPU (same runs)", "cores", "sluice.P3_cores", "kafka.P3_cores", "", 2, "")
if "P4" in workloads:
    row(f"P4 catch-up consume of {backlog} MB, 16 partitions", "MB/s", "sluice.P4", "kafka.P4", "", 0, ">= 1.2x")
    row(f"P4 vs one loopback TCP connection", "MB/s", "sluice.P4", "loopback.P4", "loopback ", 0, ">= 0.7x")
    row(f"P4 broker CPU while reading (same runs)", "CPU s per GB", "sluice.P4_cpu", "kafka.P4_cpu", "", 2, "")
    row(f"P4 read by plain Fetch requests, batch headers only (`--reader fetch`)", "MB/s", "sluice.P4_fetch", "kafka.P4_fetch", "", 0, "")
    row(f"P4 plain Fetch vs one loopback TCP connection", "MB/s", "sluice.P4_fetch", "loopback.P4", "loopback ", 0, "")
    row(f"P4 broker CPU while read by plain Fetch (same runs)", "CPU s per GB", "sluice.P4_fetch_cpu", "kafka.P4_fetch_cpu", "", 2, "")
if "P5" in workloads:
    n = int(p5n)
    row(f"P5 idle RSS (Kafka -Xms{p5heap} -Xmx{p5heap})", "MiB", "sluice.P5_idle", "kafka.P5_idle", "", 1, "<= 0.1x")
    row(f"P5 RSS, {n:,} partitions at {n:,} records/s of 100 B in all, {p5d} s", "MiB", "sluice.P5_loaded", "kafka.P5_loaded", "", 1, "")
    row(f"P5 (RSS loaded - idle) / {n:,} partitions", "KiB", "sluice.P5_per_partition", "kafka.P5_per_partition", "", 1, "Sluice <= 20 KiB")
    row(f"P5 topic create until every partition answers", "s", "sluice.P5_create", "kafka.P5_create", "", 1, "")
    row(f"P5 load achieved (same runs)", "msgs/s", "sluice.P5_msgs", "kafka.P5_msgs", "", 0, "")
    row(f"P5 delivery latency (same runs)", "p99 ms", "sluice.P5_p99", "kafka.P5_p99", "", 1, "")
if "P7" in workloads:
    load = f"{int(p7rate):,} records/s" if p7rate else "as fast as possible"
    row(f"P7 50 producers, random keys, 100 partitions, 1 KiB, acks=all, {load}, {p7d} s", "msgs/s", "sluice.P7", "kafka.P7", "", 0, "")
    row(f"P7 (same runs)", "p99 ms", "sluice.P7_p99", "kafka.P7_p99", "", 2, "")

print(f"\nSluice ({cores} shards) vs Apache Kafka 4.4.0, `sluice bench` (librdkafka); median (min-max) over {rounds} rounds")
print("| workload | metric | Sluice | Apache Kafka 4.4.0 | Sluice / Kafka | target |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
PY
