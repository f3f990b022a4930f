#!/usr/bin/env bash
# Side-by-side produce throughput: Sluice vs Apache Kafka 4.1 (single node, KRaft, loopback), the
# same librdkafka load generator (benches/produce.rs) against each, alternating, fresh data dirs,
# a warm-up run before every measured run, several rounds; prints medians, min-max and ratios.
#
#   scripts/compare-kafka.sh [ROUNDS] [RECORDS]       (defaults: 3 rounds, 200000 records)
#
# Workloads (1 KiB records, 16 partitions, acks=all):
#   P1  Sluice (fsync before every ack) vs Kafka defaults (no fsync: page cache only)
#   P2  Sluice vs Kafka with log.flush.interval.messages=1 (durability parity)
# Needs Java 17+ and Maven (Apache Kafka comes from Maven Central into scripts/kafka/target).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
records=${2:-200000}
cores=${SLUICE_CORES:-$(nproc)}
workload=(--records "$records" --size 1024 --partitions 16 --acks all)
warmup=(--records 20000 --size 1024 --partitions 16 --acks all)

cargo bench -q --bench produce --no-run >/dev/null 2>&1
bench() { cargo bench -q --bench produce -- --bootstrap "$1" "${@:2}" | grep -oE '[0-9]+ msgs/s' | grep -oE '^[0-9]+'; }
mvn -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=target/lib
kafka_cp="scripts/kafka/target/lib/*"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

run_kafka() { # $1: extra server.properties line; prints msgs/s of the measured run
    local dir port cport pid
    dir=$(mktemp -d); port=$(free_port); cport=$(free_port)
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
$1
PROPS
    java -cp "$kafka_cp" kafka.tools.StorageTool format -t "$(python3 -c 'import uuid,base64;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')" -c "$dir/server.properties" >/dev/null 2>&1
    java -Xms1G -Xmx1G -cp "$kafka_cp" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
    pid=$!
    wait_port "$port"
    bench "127.0.0.1:$port" "${warmup[@]}" >/dev/null
    bench "127.0.0.1:$port" "${workload[@]}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

run_sluice() {
    local dir port pid
    dir=$(mktemp -d); port=$(free_port)
    target/release/sluice serve --listen "127.0.0.1:$port" --data-dir "$dir" --cores "$cores" 2>/dev/null &
    pid=$!
    wait_port "$port"
    sleep 0.2
    bench "127.0.0.1:$port" "${warmup[@]}" >/dev/null
    bench "127.0.0.1:$port" "${workload[@]}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

stats() { sort -n | awk '{a[NR]=$1} END {printf "%d (%d-%d)", a[int((NR+1)/2)], a[1], a[NR]}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A results
for ((r = 1; r <= rounds; r++)); do
    echo "round $r/$rounds" >&2
    results[sluice]+="$(run_sluice) "
    results[kafka_p1]+="$(run_kafka '') "
    results[kafka_p2]+="$(run_kafka 'log.flush.interval.messages=1') "
done

s=$(tr ' ' '\n' <<<"${results[sluice]}" | grep . | median)
k1=$(tr ' ' '\n' <<<"${results[kafka_p1]}" | grep . | median)
k2=$(tr ' ' '\n' <<<"${results[kafka_p2]}" | grep . | median)
echo
echo "produce 1 KiB x $records, 16 partitions, acks=all, librdkafka; Sluice $cores shards; median (min-max) msgs/s over $rounds rounds"
echo "| workload | Sluice | Apache Kafka 4.1.1 | Sluice / Kafka |"
echo "|---|---|---|---|"
echo "| P1 Kafka defaults (no fsync) | $(tr ' ' '\n' <<<"${results[sluice]}" | grep . | stats) | $(tr ' ' '\n' <<<"${results[kafka_p1]}" | grep . | stats) | $(awk "BEGIN{printf \"%.2fx\", $s/$k1}") |"
echo "| P2 Kafka flush.messages=1 | $(tr ' ' '\n' <<<"${results[sluice]}" | grep . | stats) | $(tr ' ' '\n' <<<"${results[kafka_p2]}" | grep . | stats) | $(awk "BEGIN{printf \"%.2fx\", $s/$k2}") |"
