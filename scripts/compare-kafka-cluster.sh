#!/usr/bin/env bash
# Three Sluice brokers against three Apache Kafka 4.4 brokers (KRaft, every node a broker and a
# controller voter, all on this machine's loopback), side by side under the same client load:
# a topic of --partitions partitions (default 16), replication factor 3, min.insync.replicas=2,
# created with Kafka's own TopicCommand against each cluster; 1 KiB records, acks=all.
#
#   scripts/compare-kafka-cluster.sh [--partitions N] [--duration SECS] [--warmup SECS]
#                                    [--rounds N] [--producers N] [--rate N] [--kills N]
#                                    [--heap SIZE] [--perf-props "K=V K=V"]
#
# The clusters, each started fresh (new data dirs, the disk synced first) every round:
#   sluice       three `sluice serve --cores 1` (cpuset=unpinned: three brokers share the cores);
#                an acks=all write is acknowledged once every in-sync replica fsynced it
#   kafka        three Kafka nodes with its defaults (-Xms/-Xmx --heap, default 1G): no fsync,
#                followers acknowledge what is in their page cache
#   kafka_flush  the same with log.flush.interval.messages=1 (a flush per message: durability
#                parity with Sluice)
# Each round, against each cluster, two load generators, each after a warm-up run of --warmup
# seconds (default 5) of its own on its own topic:
#   sluice bench produce   librdkafka, --producers clients (default 1), --duration seconds
#                          (default 30), as fast as they go or at --rate records/s; delivery
#                          latency (intended send to acknowledgement) p50/p99/p99.99
#   kafka-producer-perf-test  Kafka's own (org.apache.kafka.tools.ProducerPerformance), one Java
#                          producer with acks=all and --perf-props (default "linger.ms=5
#                          batch.size=1000000", the batching `sluice bench` gives librdkafka;
#                          "" for the Java client's own defaults, 16 KiB batches); it sends a
#                          fixed number of records, so its measured run gets what its warm-up
#                          reached per second times --duration (or --rate times --duration) and
#                          lasts about as long. It reports whole-ms p50/p99/p99.9 (no p99.99).
# Without --rate both run as fast as they can, so their latencies are mostly the client's own
# queue under a saturated cluster; with --rate they are what a fixed load sees.
#
# Then failover, once, for sluice and kafka (defaults), if --kills N > 0 (default 3): a fresh
# cluster and topic; an idempotent acks=all Java producer (scripts/kafka/ClusterBench.java) sends
# 1 KiB to partition 0 every millisecond; after 5 s it kills -9 the broker leading partition 0 and
# measures the time from the kill to the first acknowledgement of a record sent after it. The
# killed broker is restarted and the topic back fully in sync before the next kill. Both
# clusters keep their defaults for failure detection (broker.session.timeout.ms 9000,
# broker.heartbeat.interval.ms 2000 in each), which bound the figure; a kill that took the
# metadata quorum's leader too also waits for a new quorum leader (counted in the table).
#
# Prints a markdown table: median (min-max) over the rounds (the kills for failover) and the
# ratios Sluice / Kafka defaults and Sluice / Kafka flushing every message, with the command,
# date and commit. Only ratios from the same run compare.
#
# Environment: SLUICE_BIN (use this sluice binary, built with --features bench, instead of
# building one), GENERATOR_CPUS (pin `sluice bench`). Needs Java 17+ (java and javac), python3
# and Maven (Kafka comes from Maven Central into scripts/kafka/target).
set -euo pipefail
cd "$(dirname "$0")/.."
command_line=scripts/compare-kafka-cluster.sh
if [ $# -gt 0 ]; then command_line+=$(printf ' %q' "$@"); fi

partitions=16
duration=30
warmup=5
rounds=3
producers=1
rate=""
kills=3
heap=1G
perf_props="linger.ms=5 batch.size=1000000" # what `sluice bench` gives librdkafka
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || set -- --help
    case $1 in
        --partitions) partitions=$2 ;;
        --duration) duration=$2 ;;
        --warmup) warmup=$2 ;;
        --rounds) rounds=$2 ;;
        --producers) producers=$2 ;;
        --rate) rate=$2 ;;
        --kills) kills=$2 ;;
        --heap) heap=$2 ;;
        --perf-props) perf_props=$2 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift 2
done
failover_warmup=5 # seconds of acknowledged records before each kill
failover_timeout=120 # seconds a kill may take to fail over before the run gives up

source scripts/lib/bench.sh
source scripts/kafka/kafka.sh
fetch_kafka
work=$(mktemp -d) # results, the compiled helper; the clusters' dirs are their own mktemp dirs
sluice_cluster_dir="" sluice_pids=() sluice_ports=()
# Whatever a finished, failed or interrupted run leaves: brokers still running, their dirs.
cleanup() {
    stop_sluice_cluster
    stop_kafka_cluster
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

javac -cp "$kafka_cp" -d "$work/classes" scripts/kafka/ClusterBench.java
# The kafka-clients jar's SLF4J finds no binding and says so on every start: those lines are dropped.
helper() { java -cp "$work/classes:$kafka_cp" ClusterBench "$@" 2> >(grep -v '^SLF4J:' >&2 || true); }
field() { python3 -c 'import json,sys; v = json.load(sys.stdin)[sys.argv[1]]; print("" if v is None else v)' "$1"; }
add() { echo "$3" >> "$work/$1.$2"; } # cluster, metric, value
# The whole machine's CPU time so far in clock ticks, "busy:total"; and the share of all cores
# busy between two such snapshots, in percent.
machine_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6 ":" t }' /proc/stat; }
busy_percent() {
    python3 -c 'import sys; (b0, t0), (b1, t1) = (map(int, a.split(":")) for a in sys.argv[1:]); print(100 * (b1 - b0) / (t1 - t0))' "$1" "$2"
}

# --- Sluice's three brokers, as tests/common/cluster.rs starts them ---
# Node N's files are in $sluice_cluster_dir/node-N (data/, broker.log), its process id in
# $sluice_cluster_dir/node-N.pid.
start_sluice_cluster() {
    local i voters="" cports=()
    sluice_cluster_dir=$(mktemp -d)
    sluice_bootstrap=""
    for i in 1 2 3; do
        sluice_ports[i]=$(free_port); cports[i]=$(free_port)
        voters+="${voters:+,}$i@127.0.0.1:${cports[i]}"
        sluice_bootstrap+="${sluice_bootstrap:+,}127.0.0.1:${sluice_ports[i]}"
    done
    for i in 1 2 3; do
        mkdir -p "$sluice_cluster_dir/node-$i"
        # The arguments each start (and restart) of node N gets.
        printf '%s\n' "node.id=$i" \
            "listeners=PLAINTEXT://127.0.0.1:${sluice_ports[i]},CONTROLLER://127.0.0.1:${cports[i]}" \
            controller.listener.names=CONTROLLER "controller.quorum.voters=$voters" cpuset=unpinned \
            > "$sluice_cluster_dir/node-$i/settings"
        start_sluice_node "$i" nowait
    done
    for i in 1 2 3; do sluice_wait_node "$i" || return 1; done
}

# Starts node $1 (its data dir kept); waits until it listens unless $2 is "nowait".
start_sluice_node() {
    local i=$1 node="$sluice_cluster_dir/node-$1" settings=() s
    while read -r s; do settings+=(--set "$s"); done < "$node/settings"
    echo "--- start $(date -Is)" >> "$node/broker.log"
    "$sluice" serve --data-dir "$node/data" --cores 1 --set sluice.admin.listen=127.0.0.1:0 \
        "${settings[@]}" > /dev/null 2>> "$node/broker.log" &
    sluice_pids[i]=$!
    echo "${sluice_pids[i]}" > "$sluice_cluster_dir/node-$i.pid"
    [ "${2:-}" = nowait ] || sluice_wait_node "$i"
}

sluice_wait_node() {
    wait_listening "${sluice_ports[$1]}" "${sluice_pids[$1]}" 60 "Sluice node $1" \
        "$sluice_cluster_dir/node-$1/broker.log"
}

stop_sluice_cluster() {
    [ -n "$sluice_cluster_dir" ] || return 0
    stop_processes "${sluice_pids[1]:-}" "${sluice_pids[2]:-}" "${sluice_pids[3]:-}"
    rm -rf "$sluice_cluster_dir"
    sluice_cluster_dir="" sluice_pids=() sluice_ports=()
}

# --- either cluster, by name: sluice, kafka or kafka_flush ---
start_cluster() { # sets $bootstrap, $cluster_dir
    sync # the previous cluster's writeback must not queue before this one's fsyncs
    case $1 in
        sluice) start_sluice_cluster; bootstrap=$sluice_bootstrap cluster_dir=$sluice_cluster_dir ;;
        kafka) start_kafka_cluster "$heap"; bootstrap=$kafka_bootstrap cluster_dir=$kafka_cluster_dir ;;
        kafka_flush) start_kafka_cluster "$heap" log.flush.interval.messages=1
            bootstrap=$kafka_bootstrap cluster_dir=$kafka_cluster_dir ;;
    esac
    helper wait-cluster "$bootstrap" 3 120
}
stop_cluster() { if [ "$1" = sluice ]; then stop_sluice_cluster; else stop_kafka_cluster; fi; }
restart_node() { # $1 cluster, $2 node id: after a kill -9, reaped and started again
    if [ "$1" = sluice ]; then
        wait "${sluice_pids[$2]}" 2>/dev/null || true
        start_sluice_node "$2"
    else
        wait "${kafka_pids[$2]}" 2>/dev/null || true
        start_kafka_node "$2"
    fi
}

# A topic of $1 with replication factor 3 and min.insync.replicas=2, through Kafka's own admin
# tool (asked again while a new cluster settles), then waited for until every partition has a
# leader and three in-sync replicas.
create_topic() {
    local topic=$1 try
    for try in 1 2 3 4 5; do
        java -cp "$kafka_cp" org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
            --create --topic "$topic" --partitions "$partitions" --replication-factor 3 \
            --config min.insync.replicas=2 > "$work/topic.log" 2>&1 && break
        [ "$try" = 5 ] && { echo "creating $topic failed:"; cat "$work/topic.log"; return 1; } >&2
        sleep 2
    done
    helper wait-isr "$bootstrap" "$topic" 3 120
}

# The metadata quorum's leader: DescribeQuorum where the broker answers it (Kafka), otherwise
# the latest "metadata quorum leader is now N (term T)" any Sluice broker logged (highest term).
quorum_leader() {
    local leader
    leader=$(helper quorum-leader "$bootstrap")
    if [ "$leader" -lt 0 ] && [ "$1" = sluice ]; then
        leader=$(cat "$sluice_cluster_dir"/node-*/broker.log | python3 -c '
import re, sys
best = (-1, -1)
for line in sys.stdin:
    m = re.search(r"metadata quorum leader is now (\d+) \(term (\d+)\)", line)
    if m: best = max(best, (int(m.group(2)), int(m.group(1))))
print(best[1])')
    fi
    echo "$leader"
}

# sluice bench produce against the cluster $1, on topic rdkafka.
run_sluice_bench() {
    local name=$1 json ticks_before
    bench produce --bootstrap "$bootstrap" --topic rdkafka --size 1024 --acks all \
        --producers "$producers" --duration "$warmup" ${rate:+--rate "$rate"} > /dev/null
    ticks_before=$(machine_ticks)
    json=$(bench produce --bootstrap "$bootstrap" --topic rdkafka --size 1024 --acks all \
        --producers "$producers" --duration "$duration" ${rate:+--rate "$rate"})
    add "$name" rd_busy "$(busy_percent "$ticks_before" "$(machine_ticks)")"
    add "$name" rd_msgs "$(field msgs_per_sec <<<"$json")"
    add "$name" rd_mbps "$(field mb_per_sec <<<"$json")"
    add "$name" rd_p50 "$(field p50_ms <<<"$json")"
    add "$name" rd_p99 "$(field p99_ms <<<"$json")"
    add "$name" rd_p9999 "$(field p9999_ms <<<"$json")"
    rd_rate=$(field msgs_per_sec <<<"$json")
}

# Kafka's ProducerPerformance against the cluster $1, on topic perf: $2 records, as fast as it
# goes or at --rate. Prints its summary line.
perf_test() {
    local records=$2 props
    read -r -a props <<<"bootstrap.servers=$bootstrap acks=all $perf_props"
    # --foreground: an interrupt from the terminal reaches the JVM (and this script's trap) at once.
    timeout --foreground $((duration * 10 + 120)) \
        java -Xms512m -Xmx512m -cp "$kafka_cp" org.apache.kafka.tools.ProducerPerformance \
        --topic perf --num-records "$records" --record-size 1024 --throughput "${rate:--1}" \
        --producer-props "${props[@]}" > "$work/perf.log" 2>&1 \
        || { echo "kafka-producer-perf-test failed against $1:" >&2; tail -20 "$work/perf.log" >&2; return 1; }
    grep 'records sent' "$work/perf.log" | tail -1
}

run_perf_test() {
    local name=$1 line warm
    # It sends a fixed number of records: the warm-up gets what `sluice bench` reached on this
    # cluster times --warmup, the measured run what the warm-up reached times --duration (or --rate
    # times each), so the measured run lasts about --duration.
    line=$(perf_test "$name" "$(python3 -c 'import sys; print(max(1000, round(float(sys.argv[1]) * int(sys.argv[2]))))' "${rate:-$rd_rate}" "$warmup")")
    warm=$(python3 -c 'import re, sys; print(re.search(r"([\d.]+) records/sec", sys.argv[1]).group(1))' "$line")
    line=$(perf_test "$name" "$(python3 -c 'import sys; print(max(10000, round(float(sys.argv[1]) * int(sys.argv[2]))))' "${rate:-$warm}" "$duration")")
    # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P50 ms 50th,
    # P95 ms 95th, P99 ms 99th, P999 ms 99.9th."; its MB are MiB: MB/s is recomputed as 10^6 bytes.
    python3 - "$line" "$work" "$name" <<'PY'
import re, sys
line, work, name = sys.argv[1:]
m = re.search(r"([\d.]+) records/sec .* (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th", line)
if not m:
    sys.exit(f"unexpected kafka-producer-perf-test output: {line}")
rate, p50, p95, p99, p999 = (float(g) for g in m.groups())
for metric, value in [("pt_msgs", rate), ("pt_mbps", rate * 1024 / 1e6), ("pt_p50", p50), ("pt_p99", p99), ("pt_p999", p999)]:
    with open(f"{work}/{name}.{metric}", "a") as f:
        print(value, file=f)
PY
}

failover() { # $1: cluster
    local name=$1 k json node quorum
    start_cluster "$name"
    create_topic failover
    for ((k = 1; k <= kills; k++)); do
        echo "  failover $name: kill $k/$kills" >&2
        quorum=$(quorum_leader "$name")
        json=$(helper failover "$bootstrap" failover 0 "$cluster_dir" "$failover_warmup" "$failover_timeout") \
            || { echo "failover on $name: no acknowledgement after the kill: $json" >&2; return 1; }
        node=$(field node <<<"$json")
        if [ "$(field errors <<<"$json")" != 0 ]; then
            echo "  failover $name: $(field errors <<<"$json") records failed; the first: $(field first_error <<<"$json")" >&2
        fi
        add "$name" failover "$(field failover_ms <<<"$json")"
        add "$name" failover_errors "$(field errors <<<"$json")"
        add "$name" failover_quorum "$([ "$node" = "$quorum" ] && echo 1 || echo 0)"
        restart_node "$name" "$node"
        helper wait-cluster "$bootstrap" 3 120
        helper wait-isr "$bootstrap" failover 3 180
    done
    stop_cluster "$name"
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
for ((r = 1; r <= rounds; r++)); do
    for name in sluice kafka kafka_flush; do
        echo "round $r/$rounds: $name" >&2
        start_cluster "$name"
        create_topic rdkafka
        create_topic perf
        run_sluice_bench "$name"
        run_perf_test "$name"
        stop_cluster "$name"
    done
done
if [ "$kills" -gt 0 ]; then
    # Bash reports each broker the helper killed ("line N: PID Killed ..."): expected, dropped.
    for name in sluice kafka; do
        failover "$name" 2> >(grep -Ev ': line [0-9]+: +[0-9]+ Killed ' >&2 || true)
    done
fi

# The table: medians (min-max) and the ratios of the medians.
python3 - "$work" "$command_line" "$started" "$(git rev-parse --short HEAD)" "$rounds" "$kills" \
    "$partitions" "$duration" "$producers" "$rate" "$heap" "$perf_props" "$(nproc)" <<'PY'
import os, statistics, sys
work, command, started, head, rounds, kills, partitions, duration, producers, rate, heap, perf_props, cpus = sys.argv[1:]

def values(name):
    path = os.path.join(work, name)
    return [float(v) for v in open(path).read().split() if v] if os.path.exists(path) else []

def cell(vs, digits):
    if not vs:
        return "-"
    f = lambda v: f"{v:,.{digits}f}"
    med = f(statistics.median(vs))
    return med if len(vs) == 1 else f"{med} ({f(min(vs))}-{f(max(vs))})"

def ratio(a, b):
    a, b = values(a), values(b)
    if not (a and b and statistics.median(b)):
        return "-"
    r = statistics.median(a) / statistics.median(b)
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"

rows = []
def row(label, metric, digits, flush=True):
    s, k, kf = (f"{c}.{metric}" for c in ("sluice", "kafka", "kafka_flush"))
    rows.append(f"| {label} | {cell(values(s), digits)} | {cell(values(k), digits)} | "
                f"{cell(values(kf), digits) if flush else '-'} | {ratio(s, k)} | {ratio(s, kf) if flush else '-'} |")

load = f"{int(rate):,} records/s" if rate else "as fast as possible"
gen = f"`sluice bench produce` (librdkafka, {producers} producer{'s' if producers != '1' else ''}, {load})"
row(f"{gen}: records/s", "rd_msgs", 0)
row("(same runs) MB/s", "rd_mbps", 1)
row("(same runs) delivery latency p50, ms", "rd_p50", 2)
row("(same runs) p99, ms", "rd_p99", 2)
row("(same runs) p99.99, ms", "rd_p9999", 2)
row(f"(same runs) machine busy, all {cpus} cores, %", "rd_busy", 0)
perf = "`kafka-producer-perf-test` (1 Java producer, acks=all" + (f" {perf_props}" if perf_props else "") + f", {load})"
row(f"{perf}: records/s", "pt_msgs", 0)
row("(same runs) MB/s", "pt_mbps", 1)
row("(same runs) latency p50, ms (whole ms)", "pt_p50", 0)
row("(same runs) p99, ms", "pt_p99", 0)
row("(same runs) p99.9, ms (it reports no p99.99)", "pt_p999", 0)
if int(kills) > 0:
    row(f"failover: kill -9 of partition 0's leader to the first acknowledgement of a record sent after it, ms ({kills} kills)", "failover", 0, flush=False)
    q = lambda c: f"{int(sum(values(f'{c}.failover_quorum')))} of {len(values(f'{c}.failover_quorum'))}"
    row("(same kills) records that failed after the producer's retries", "failover_errors", 0, flush=False)
    rows.append(f"| (same kills) that took the metadata quorum's leader too | {q('sluice')} | {q('kafka')} | - | - | - |")

print(f"\nThree Sluice brokers vs three Apache Kafka 4.4.0 brokers on one machine ({cpus} cores, loopback); "
      f"topic of {partitions} partitions, replication factor 3, min.insync.replicas=2, 1 KiB records, acks=all; "
      f"{duration} s measured per generator; median (min-max) over {rounds} round{'s' if rounds != '1' else ''}"
      f"{f' (failover: over {kills} kills)' if int(kills) > 0 else ''}. Kafka nodes: -Xmx{heap}.")
print(f"\n`{command}`, {started}, commit {head}\n")
print("| measurement | Sluice (fsync on every replica) | Kafka defaults (no fsync) | Kafka log.flush.interval.messages=1 | Sluice / Kafka defaults | Sluice / Kafka flush=1 |")
print("|---|---|---|---|---|---|")
print("\n".join(rows))
PY
